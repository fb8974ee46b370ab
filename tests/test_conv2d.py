"""conv2d / conv1d against the independent NumPy reference (tests/reference.py)."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

import fastconv
from fastconv import _plan
from cases import DTYPES, METHODS, conv_cases, random_arrays, small_tiles
from reference import assert_close, conv1d_reference, conv2d_reference


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d_matches_reference(case):
    x, w, b = random_arrays(case)
    with small_tiles(case["tile_bytes"]):
        out = fastconv.conv2d(x, w, b, stride=case["stride"], padding=case["padding"],
                              dilation=case["dilation"], groups=case["groups"],
                              flip=case["flip"], method=case["method"],
                              num_threads=case["threads"])
    expected = conv2d_reference(x, w, b, stride=case["stride"], padding=case["padding"],
                                dilation=case["dilation"], groups=case["groups"], flip=case["flip"])
    assert out.dtype == case["dtype"]
    assert out.flags.c_contiguous
    assert_close(out, expected, case["dtype"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mapped_tiles_cross_output_rows(method, dtype):
    # 17 x 19 outputs in tiles of a few columns: tiles start and end mid-row
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 19, 21)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    with small_tiles(7 * 27 * np.dtype(dtype).itemsize):
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, padding=((1, 0), (0, 1)),
                                    method=method)
        out = plan.execute(x, w)
    if method == "mapped":
        assert plan.blocking.tile_cols < plan.geometry.Wo
    assert_close(out, conv2d_reference(x, w, padding=((1, 0), (0, 1))), dtype)


@pytest.mark.parametrize("padding, pairs", [
    (0, ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    ((1, 2), ((1, 1), (2, 2))),
    (((0, 3), (2, 1)), ((0, 3), (2, 1))),
    ([[1, 0], [0, 2]], ((1, 0), (0, 2))),
    ("valid", ((0, 0), (0, 0))),
])
@pytest.mark.parametrize("method", METHODS)
def test_padding_forms(padding, pairs, method):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 7, 8))
    w = rng.standard_normal((3, 2, 3, 2))
    out = fastconv.conv2d(x, w, padding=padding, method=method)
    assert_close(out, conv2d_reference(x, w, padding=pairs), np.float64)


@pytest.mark.parametrize("R, S, dilation", [(3, 3, 1), (4, 2, 1), (3, 4, 2), (1, 5, (1, 3))])
@pytest.mark.parametrize("method", METHODS)
def test_same_and_full_padding(R, S, dilation, method):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 9, 10))
    w = rng.standard_normal((2, 2, R, S))
    dh, dw = (dilation, dilation) if np.ndim(dilation) == 0 else dilation
    span_h, span_w = dh * (R - 1), dw * (S - 1)
    same = fastconv.conv2d(x, w, padding="same", dilation=dilation, method=method)
    assert same.shape[2:] == x.shape[2:]
    # PyTorch's rule: the odd element goes to the bottom / right
    same_pads = ((span_h // 2, span_h - span_h // 2), (span_w // 2, span_w - span_w // 2))
    assert_close(same, conv2d_reference(x, w, padding=same_pads, dilation=(dh, dw)), np.float64)
    full = fastconv.conv2d(x, w, padding="full", dilation=dilation, method=method)
    full_pads = ((span_h, span_h), (span_w, span_w))
    assert_close(full, conv2d_reference(x, w, padding=full_pads, dilation=(dh, dw)), np.float64)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_single_channel_matches_scipy_signal(mode, flip, method):
    from scipy import signal
    rng = np.random.default_rng(3)
    image = rng.standard_normal((11, 9))
    kernel = rng.standard_normal((4, 3))
    out = fastconv.conv2d(image[None, None], kernel[None, None], padding=mode, flip=flip,
                          method=method)[0, 0]
    scipy_fn = signal.convolve2d if flip else signal.correlate2d
    if mode == "same":
        # an even kernel's extra padding goes bottom/right without flip (PyTorch,
        # correlate2d) and top/left with flip (convolve2d): both are scipy's 'same'
        expected = scipy_fn(image, kernel, mode="same")
    else:
        expected = scipy_fn(image, kernel, mode=mode)
    assert_close(out, expected, np.float64)


def test_same_padding_odd_kernel_matches_scipy_exactly():
    from scipy import signal
    rng = np.random.default_rng(4)
    image, kernel = rng.standard_normal((10, 12)), rng.standard_normal((3, 5))
    for flip, fn in ((False, signal.correlate2d), (True, signal.convolve2d)):
        out = fastconv.conv2d(image[None, None], kernel[None, None], padding="same", flip=flip)
        assert_close(out[0, 0], fn(image, kernel, mode="same"), np.float64)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("method", METHODS + ["gemm1x1"])
@pytest.mark.parametrize("N", [1, 2, 5])
def test_thread_counts(threads, method, N):
    rng = np.random.default_rng(5)
    R = 1 if method == "gemm1x1" else 3
    x = rng.standard_normal((N, 6, 10, 12)).astype(np.float32)
    w = rng.standard_normal((8, 3, R, R)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    out = fastconv.conv2d(x, w, b, groups=2, method=method, num_threads=threads)
    assert_close(out, conv2d_reference(x, w, b, groups=2), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 4])
def test_pointwise_uses_direct_gemm(dtype, groups):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8, 5, 7)).astype(dtype)
    w = rng.standard_normal((12, 8 // groups, 1, 1)).astype(dtype)
    plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, groups=groups)
    assert plan.method == "gemm1x1"
    assert_close(plan.execute(x, w), conv2d_reference(x, w, groups=groups), dtype)
    # the same layer with stride 2 or padding needs a real lowering
    assert fastconv.plan_conv2d(x.shape, w.shape, dtype, stride=2, groups=groups).method != "gemm1x1"
    assert fastconv.plan_conv2d(x.shape, w.shape, dtype, padding=1, groups=groups).method != "gemm1x1"


# ---------------------------------------------------------------------------
# conv1d

@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(1, 20),
       st.integers(1, 5), st.integers(1, 3), st.integers(1, 3),
       st.tuples(st.integers(0, 3), st.integers(0, 3)), st.booleans(),
       st.sampled_from(DTYPES), st.sampled_from(METHODS), st.integers(0, 2**31))
def test_conv1d_matches_reference(N, groups, cg, L, S, stride, dilation, pads, flip,
                                  dtype, method, seed):
    span = dilation * (S - 1) + 1
    L = max(L, span - sum(pads))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, groups * cg, L)).astype(dtype)
    w = rng.standard_normal((2 * groups, cg, S)).astype(dtype)
    b = rng.standard_normal(2 * groups).astype(dtype)
    out = fastconv.conv1d(x, w, b, stride=stride, padding=pads, dilation=dilation,
                          groups=groups, flip=flip, method=method)
    expected = conv1d_reference(x, w, b, stride=stride, padding=pads, dilation=dilation,
                                groups=groups, flip=flip)
    assert out.shape == expected.shape
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("padding, pair", [(2, (2, 2)), ((3,), (3, 3)), ((1, 2), (1, 2)),
                                           (((0, 4),), (0, 4)), ("valid", (0, 0)),
                                           ("full", (3, 3))])
def test_conv1d_padding_forms(padding, pair):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 1, 9)), rng.standard_normal((2, 1, 4))
    assert_close(fastconv.conv1d(x, w, padding=padding),
                 conv1d_reference(x, w, padding=pair), np.float64)
    same = fastconv.conv1d(x, w, padding="same")
    assert_close(same, conv1d_reference(x, w, padding=(1, 2)), np.float64)


def test_conv1d_matches_numpy_correlate():
    rng = np.random.default_rng(8)
    signal, kernel = rng.standard_normal(50), rng.standard_normal(7)
    for mode in ("valid", "same", "full"):
        out = fastconv.conv1d(signal[None, None], kernel[None, None], padding=mode)[0, 0]
        assert_close(out, np.correlate(signal, kernel, mode=mode), np.float64)
        out = fastconv.conv1d(signal[None, None], kernel[None, None], padding=mode, flip=True)[0, 0]
        assert_close(out, np.convolve(signal, kernel, mode=mode), np.float64)


@pytest.mark.parametrize("N, threads", [(2, 1), (5, 2), (7, 3), (9, 2)])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_images_share_a_gemm(N, threads, groups, dtype):
    # 6x5 outputs: several images per GEMM, an uneven last batch, every group
    rng = np.random.default_rng(N)
    x = rng.standard_normal((N, 6, 8, 7)).astype(dtype)[:, :, ::-1]
    w = rng.standard_normal((9, 6 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, padding=((1, 0), (0, 1)), groups=groups,
                                num_threads=threads, flip=True)
    assert plan.method == "stretch" and plan.blocking.images > 1
    out = plan.execute(x, w, b)
    expected = conv2d_reference(x, w, b, padding=((1, 0), (0, 1)), groups=groups, flip=True)
    assert_close(out, expected, dtype)
