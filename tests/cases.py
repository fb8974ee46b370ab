"""Random convolution cases shared by the kernel tests (hypothesis strategies)."""
import contextlib

import numpy as np
from hypothesis import strategies as st

from fastconv import _tuning
from fastconv._lowerings import general_methods

# Read from the table of lowerings, so a new lowering is tested without
# editing this list; special-purpose ones (1x1, depthwise) have tests of
# their own.
METHODS = list(general_methods())
# the lowerings that compute both gradients of any convolution
GRADIENT_METHODS = [m for m in general_methods("input_grad") if m in general_methods("weight_grad")]
# every lowering of the weight gradient alone (fused computes no input gradient)
WEIGHT_GRAD_METHODS = list(general_methods("weight_grad"))
# every lowering of the input gradient of any convolution (phased: no weight gradient)
INPUT_GRAD_METHODS = list(general_methods("input_grad"))
DTYPES = [np.float32, np.float64]


@st.composite
def conv_cases(draw, methods=None):
    """A random convolution; its method is drawn from `methods` (default:
    the general forward lowerings) or "auto"."""
    groups = draw(st.integers(1, 3))
    c_group = draw(st.integers(1, 3))
    k_group = draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(tuple(draw(st.integers(0, 3)) for _ in range(2)) for _ in range(2))
    span_h, span_w = dh * (R - 1) + 1, dw * (S - 1) + 1
    H = draw(st.integers(max(1, span_h - sum(pads[0])), 13))
    W = draw(st.integers(max(1, span_w - sum(pads[1])), 13))
    return dict(
        N=draw(st.integers(1, 3)), C=groups * c_group, K=groups * k_group, H=H, W=W,
        R=R, S=S, groups=groups, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=pads, dilation=(dh, dw), bias=draw(st.booleans()), flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)), method=draw(st.sampled_from((methods or METHODS) + ["auto"])),
        threads=draw(st.sampled_from([1, 2, 3])),
        # tiny tiles make the mapped lowering cut rows of the output anywhere
        tile_bytes=draw(st.sampled_from([None, 1, 64, 300])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def random_arrays(case):
    """x, weight and (if the case has one) bias of a case, in its dtype."""
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], case["R"], case["S"])).astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    return x, w, b


def blas_rules():
    """Plan as if the fused and direct lowerings were not in the table: the
    rules among the BLAS lowerings (1x1, stretch, mapped), which they
    otherwise outbid on deep layers."""
    return _tuning.tuned(fused_rate=1e-9, fused_shallow_rate=1e-9, fused_pointwise_rate=1e-9,
                         direct_conv_rate=1e-9)


def small_tiles(tile_bytes):
    """Plan tiles of about tile_bytes (None: unchanged)."""
    if tile_bytes is None:
        return contextlib.nullcontext()
    return _tuning.tuned(tile_target_bytes=tile_bytes, tile_min_cols=1)
