"""The direct convolution's kernel (fastconv._kernels.direct), called
directly, against the independent NumPy reference (tests/reference.py), on
every instruction set this machine runs: pixel counts that leave partial
tiles, filter counts around and past NR, every padding form (including
outputs that read only padding), stride, dilation, groups, flip, odd input
strides and views, 1 to 3 threads, channel blocks of any size. Its weight
gradient likewise: kernel rows of 1 to 14 taps (tiles full, partial, split
evenly), chunks and passes of any size."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastconv
from fastconv import _tuning
from reference import (assert_close, conv2d_input_grad_reference, conv2d_reference,
                       conv2d_weight_grad_reference)
from test_fused_kernel import VIEWS, make_view, out_size

direct = pytest.importorskip("fastconv._kernels.direct")
fused = pytest.importorskip("fastconv._kernels.fused")

ISAS = fused.supported_isas()
DTYPES = [np.float32, np.float64]


def run_direct(x, w, b, *, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
               flip=False, isa="generic", threads=1, channel_block_size=0, pack_in_items=None):
    """conv2d_direct on NCHW x and (K, C/groups, R, S) w, with NaN-filled
    buffers sized by buffer_sizes (every element the kernel reads must have
    been written by it); returns out as (N, K, Ho, Wo)."""
    dtype = x.dtype
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Ho = out_size(H, padding[0], dilation[0], R, stride[0])
    Wo = out_size(W, padding[1], dilation[1], S, stride[1])
    n_packed, n_tables, per_thread = direct.buffer_sizes(
        N, K, C, H, W, Ho, Wo, R, S, groups, *stride, padding[0][0], padding[1][0], *dilation,
        dtype, isa, channel_block_size, pack_in_items)
    packed = np.full(n_packed, np.nan, dtype)
    tables = np.full(n_tables, -(2**40), np.intp)
    workspace = np.full((threads, per_thread), np.nan, dtype)
    out = np.full((N, K, Ho * Wo), np.nan, dtype)
    bias = np.zeros(0, dtype) if b is None else b
    direct.conv2d_direct(x, np.ascontiguousarray(w.reshape(K, Cg * R * S)), bias, out, packed,
                         tables, workspace, R, S, Wo, *stride, padding[0][0], padding[1][0],
                         *dilation, groups, flip, isa, threads,
                         channel_block_size=channel_block_size, pack_in_items=pack_in_items)
    return out.reshape(N, K, Ho, Wo)


@st.composite
def direct_cases(draw):
    groups = draw(st.integers(1, 3))
    c_group = draw(st.integers(1, 6))
    # filters per group: around and past NR (8/16 generic, 8/16 avx2, 32/64 avx512)
    k_group = draw(st.sampled_from([1, 3, 8, 9, 16, 17, 33, 65]))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(tuple(draw(st.integers(0, 4)) for _ in range(2)) for _ in range(2))
    span_h, span_w = dh * (R - 1) + 1, dw * (S - 1) + 1
    H = draw(st.integers(max(1, span_h - sum(pads[0])), 13))
    W = draw(st.integers(max(1, span_w - sum(pads[1])), 17))
    return dict(
        N=draw(st.integers(1, 3)), C=groups * c_group, K=groups * k_group, H=H, W=W, R=R, S=S,
        groups=groups, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=pads, dilation=(dh, dw), bias=draw(st.booleans()), flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)), view=draw(st.sampled_from(VIEWS)),
        threads=draw(st.sampled_from([1, 2, 3])),
        channel_block_size=draw(st.sampled_from([0, 1, 2, 5])),
        pack_in_items=draw(st.sampled_from([None, True, False])),
        seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=direct_cases())
def test_direct_matches_reference(isa, case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    base = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    x = make_view(base, case["view"])
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], case["R"], case["S"]))
    w = w.astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])
    out = run_direct(x, w, b, isa=isa, threads=case["threads"],
                     channel_block_size=case["channel_block_size"],
                     pack_in_items=case["pack_in_items"], **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("adjoint", [False, True])
def test_tables_ready_reads_the_tables_without_writing_them(isa, adjoint):
    # a second call with tables_ready=True on new data (same shapes and
    # strides) reads the first call's tables and leaves them as they were;
    # the padding's classes (edges, corners) and partial tiles included
    rng = np.random.default_rng(11)
    N, C, H, W, K, R, S = 3, 5, 9, 11, 17, 3, 4
    pad, Wo = 2, 11 + 4 - 4 + 1
    Ho = H + 2 * pad - R + 1
    x = make_view(rng.standard_normal((N, C, H, W)).astype(np.float32), "strided")
    sizes = direct.buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, 1, 1, 1, pad, pad, 1, 1,
                                np.float32, isa)
    tables = np.full(sizes[1], -(2**40), np.intp)
    for call in range(2):
        w = rng.standard_normal((C, K * R * S) if adjoint else (K, C * R * S)).astype(np.float32)
        out = np.full((N, K, Ho * Wo), np.nan, np.float32)
        before = tables.copy()
        direct.conv2d_direct(x, w, np.zeros(0, np.float32), out, np.full(sizes[0], np.nan, np.float32),
                             tables, np.full((2, sizes[2]), np.nan, np.float32), R, S, Wo, 1, 1,
                             pad, pad, 1, 1, 1, False, isa, 2, adjoint=adjoint,
                             tables_ready=call == 1)
        if call == 1:
            np.testing.assert_array_equal(tables, before)
        # the adjoint's weights are (C, K*R*S): as a forward pass, its filters
        # are their transposes, the kernel reversed
        w4 = (w.reshape(C, K, R, S).transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if adjoint
              else w.reshape(K, C, R, S))
        assert_close(out.reshape(N, K, Ho, Wo),
                     conv2d_reference(x, w4, padding=((pad, pad), (pad, pad))), np.float32)
        x = make_view(rng.standard_normal((N, C, H, W)).astype(np.float32), "strided")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channel_block_size", [0, 1, 7, 50])
@pytest.mark.parametrize("pack_in_items", [True, False])
@pytest.mark.parametrize("blocks_inner", [False, True])
def test_layer_sized(isa, dtype, threads, channel_block_size, pack_in_items, blocks_inner,
                     monkeypatch):
    # ResNet-50 5b's shape, scaled down: 7x7 maps (9 pixel classes, tiles
    # that end mid-class), filters past one NR block and not a multiple of
    # it, channels in several blocks, groups; and the items in the order
    # of an input too large to sweep once per filter block
    if blocks_inner:
        monkeypatch.setattr(direct, "INPUT_SWEEP_MAX_BYTES", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 150, 7, 7)).astype(dtype)
    w = rng.standard_normal((140, 75, 3, 3)).astype(dtype)
    b = rng.standard_normal(140).astype(dtype)
    conv = dict(padding=((1, 1), (1, 1)), groups=2)
    out = run_direct(x, w, b, isa=isa, threads=threads, channel_block_size=channel_block_size,
                     pack_in_items=pack_in_items, **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_threads(isa, dtype, monkeypatch):
    # each output element is summed by one tile in one order, whatever the
    # threads or how the tiles are dealt out (filter blocks outer or inner)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 10, 9, 13)).astype(dtype)
    w = rng.standard_normal((141, 10, 3, 3)).astype(dtype)
    runs = []
    for sweep in (direct.INPUT_SWEEP_MAX_BYTES, 0):
        monkeypatch.setattr(direct, "INPUT_SWEEP_MAX_BYTES", sweep)
        runs += [run_direct(x, w, None, padding=((1, 1), (1, 1)), isa=isa, threads=t, flip=True,
                            pack_in_items=shared)
                 for t in (1, 2, 3) for shared in (True, False)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("K", [5, 13, 64])
@pytest.mark.parametrize("N, W", [(1, 11), (1, 13), (2, 6), (2, 40)])
def test_tile_stores(isa, K, N, W):
    # float32 tiles whose pixels are consecutive in the output go through the
    # ISA's transposing store (8 filters at a time, then the rest), the others
    # (across images, border classes) element by element. A class's pixels
    # are dealt out 6 at a time over the batch: without padding, one image of
    # 7 x 9 or 7 x 11 outputs ends on a tile of 3 or 5 pixels. Every output
    # written once, with its bias
    rng = np.random.default_rng(K * W)
    x = rng.standard_normal((N, 3, 9, W)).astype(np.float32)
    w = rng.standard_normal((K, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    for padding in (((0, 0), (0, 0)), ((1, 1), (2, 1))):
        out = run_direct(x, w, b, padding=padding, isa=isa, threads=2)
        assert_close(out, conv2d_reference(x, w, b, padding=padding), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_by_filter_count(dtype):
    # AVX-512 runs groups of at most 32 float32 (16 float64) filters in
    # tiles of 14 pixels x 2 vectors, counts that 3-vector blocks pad less
    # (33-48, 65-96) in 8 x 3 vectors, the rest in 6 x 4 vectors; the weight
    # gradient keeps the wide tile there; the other ISAs have one tile. At
    # and past each boundary, with tiles that end mid-class and float32
    # stores of 8 + 6 consecutive pixels, the forward pass and the input
    # gradient (its panel packed from the forward weights) agree with the
    # reference and with the generic kernel
    lanes = 16 if dtype == np.float32 else 8
    for isa in ISAS:
        assert direct.narrow_tiles(2 * lanes, dtype, isa) == (isa == "avx512")
        assert not direct.narrow_tiles(2 * lanes + 1, dtype, isa)
        assert not direct.narrow_tiles(None, dtype, isa)
        kinds = [direct.tile_kind(f, dtype, isa) for f in (2 * lanes + 1, 3 * lanes,
                                                           4 * lanes, 6 * lanes, 8 * lanes)]
        assert kinds == ([2, 2, 0, 2, 0] if isa == "avx512" else [0] * 5)
        assert direct.tile_kind(3 * lanes, dtype, isa, medium=False) == 0
    if "avx512" not in ISAS:
        pytest.skip("this CPU has no AVX-512")
    assert direct.blocking(dtype, "avx512", 2 * lanes) == {"MR": 14, "NR": 2 * lanes}
    assert direct.blocking(dtype, "avx512", 2 * lanes + 1) == {"MR": 8, "NR": 3 * lanes}
    assert direct.blocking(dtype, "avx512", 4 * lanes) == {"MR": 6, "NR": 4 * lanes}
    assert direct.blocking(dtype, "avx512", 3 * lanes, medium=False) == {"MR": 6, "NR": 4 * lanes}
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 5, 9, 23)).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for K in (1, 2 * lanes - 3, 2 * lanes, 2 * lanes + 1, 3 * lanes, 3 * lanes + 1, 4 * lanes,
              5 * lanes + 3, 6 * lanes):
        w = rng.standard_normal((K, 5, 3, 3)).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        for conv in (dict(padding=((1, 1), (1, 1))), dict(stride=(2, 2), padding=((2, 0), (1, 3)))):
            out = run_direct(x, w, b, isa="avx512", threads=2, **conv)
            assert_close(out, conv2d_reference(x, w, b, **conv), dtype)
            np.testing.assert_allclose(out, run_direct(x, w, b, isa="generic", **conv), **tol)
        # the input gradient of K channels: a forward pass of K filters
        wt = rng.standard_normal((7, K, 3, 3)).astype(dtype)
        g = rng.standard_normal((2, 7, 9, 23)).astype(dtype)
        with _tuning.tuned(isa="avx512"):
            plan = fastconv.plan_conv2d((2, K, 9, 23), wt.shape, dtype, padding=1,
                                        kind="input_grad", method="direct", num_threads=2)
        assert plan.method == "direct"
        assert_close(plan.execute(wt, g),
                     conv2d_input_grad_reference((2, K, 9, 23), wt, g, padding=((1, 1), (1, 1))),
                     dtype)


# A full tile whose pixels are evenly spaced in x, 1, 2 or 4 elements apart
# (one output row at stride 1, 2, 4, or an every-other-column view), runs a
# loop that reads them from one pointer at fixed offsets; other tiles
# (crossing a row's end, partial, other spacings) read each pixel through
# its own. Rows of 40 outputs hold full tiles of either width (2 of the
# narrow tile's 14 pixels, 6 of the wide tile's 6) and a partial one; the
# filter counts take the narrow and the wide AVX-512 tiles.
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, view", [(1, "contiguous"), (2, "contiguous"),
                                          (4, "contiguous"), (1, "every_other_w"),
                                          (2, "every_other_w"), (3, "contiguous"),
                                          (1, "strided")])
@pytest.mark.parametrize("K", [20, 70])
def test_evenly_spaced_tiles(isa, dtype, stride, view, K):
    rng = np.random.default_rng(21)
    base = rng.standard_normal((2, 3, 2 * stride + 3, 40 * stride + 1)).astype(dtype)
    if view == "every_other_w":
        x = np.zeros(base.shape[:3] + (2 * base.shape[3],), dtype)[..., ::2]
        x[...] = base
    else:
        x = make_view(base, view)
    w = rng.standard_normal((K, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    conv = dict(stride=(stride, stride), padding=((1, 0), (0, 1)))
    out = run_direct(x, w, b, isa=isa, threads=2, **conv)
    assert out.shape[3] == 40
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_agrees_with_generic(isa):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 12, 12))
    w = rng.standard_normal((70, 16, 3, 3))
    ours = run_direct(x, w, None, padding=((1, 1), (1, 1)), isa=isa, threads=2)
    generic = run_direct(x, w, None, padding=((1, 1), (1, 1)), isa="generic", threads=2)
    np.testing.assert_allclose(ours, generic, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_only_outputs_are_the_bias(dtype):
    # a 2x2 image padded by 3: the corner outputs read no input at all (a
    # pixel class with no taps)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    conv = dict(padding=((3, 3), (3, 3)))
    out = run_direct(x, w, b, **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)
    np.testing.assert_array_equal(out[:, :, 0, 0], np.broadcast_to(b, (2, 5)))


def test_pixel_classes_skip_the_padding():
    # 3x3 "same" on 7x7: 3 row classes x 3 column classes; the kernel's work
    # is the taps inside the image, 82 % of a GEMM's
    from fastconv._lowerings import valid_tap_fraction
    from fastconv._params import conv_geometry
    ids, ranges = direct.pixel_classes(7, 7, 3, 1, 1, 1)
    # valid taps [lo, hi) of the first row, the middle rows, the last row
    assert ranges.tolist() == [[1, 3], [0, 3], [0, 2]]
    assert ids.tolist() == [0, 1, 1, 1, 1, 1, 2]
    # stride 2, dilation 2, padding 3 on 9 positions: ranges only fall
    ids, ranges = direct.pixel_classes(5, 9, 4, 2, 3, 2)
    assert ranges.tolist() == [[2, 4], [1, 4], [0, 4], [0, 3], [0, 2]]
    assert ids.tolist() == [0, 1, 2, 3, 4]
    g = conv_geometry((8, 512, 7, 7), (512, 512, 3, 3), stride=1, padding=1, dilation=1,
                      groups=1)
    assert valid_tap_fraction(g) == pytest.approx((19 / 21) ** 2)


def test_rejects_small_buffers_and_bad_arguments():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2 * 9), np.float32)
    out = np.empty((1, 3, 25), np.float32)
    sizes = direct.buffer_sizes(1, 3, 2, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, np.float32,
                                "generic")
    packed, tables = np.empty(sizes[0], np.float32), np.empty(sizes[1], np.intp)
    ws = np.empty((1, sizes[2]), np.float32)
    args = (3, 3, 5, 1, 1, 1, 1, 1, 1, 1, False, "generic")
    direct.conv2d_direct(x, w, np.zeros(0, np.float32), out, packed, tables, ws, *args, 1)
    with pytest.raises(ValueError, match="buffers"):
        direct.conv2d_direct(x, w, np.zeros(0, np.float32), out, packed[:-30], tables, ws,
                             *args, 1)
    with pytest.raises(ValueError, match="buffers"):
        direct.conv2d_direct(x, w, np.zeros(0, np.float32), out, packed, tables, ws, *args, 2)
    with pytest.raises(ValueError, match="num_threads"):
        direct.conv2d_direct(x, w, np.zeros(0, np.float32), out, packed, tables, ws, *args, 0)
    with pytest.raises(ValueError, match="bias"):
        direct.conv2d_direct(x, w, np.zeros(2, np.float32), out, packed, tables, ws, *args, 1)


@pytest.mark.parametrize("isa", ISAS)
def test_front_end_runs_it_on_every_isa(isa):
    # method="direct" through the planner and executor, on a forced ISA
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 7, 7)).astype(np.float32)
    w = rng.standard_normal((20, 6, 3, 3)).astype(np.float32)
    with _tuning.tuned(isa=isa):
        plan = fastconv.plan_conv2d(x.shape, w.shape, np.float32, padding=1, method="direct")
    assert plan.method == "direct" and plan.blocking.isa == isa and isa in repr(plan)
    assert_close(plan.execute(x, w), conv2d_reference(x, w, padding=((1, 1), (1, 1))),
                 np.float32)


def run_direct_weight_grad(x, weight_shape, grad, *, stride=(1, 1), padding=((0, 0), (0, 0)),
                           dilation=(1, 1), groups=1, flip=False, isa="generic", threads=1,
                           **blocks):
    """conv2d_direct_weight_grad with a NaN-filled workspace sized by
    weight_grad_buffer_sizes and a NaN-filled grad_w (every element must be
    written); returns grad_w as weight_shape. The workspace rows are 16
    elements longer than asked for and followed by one more row, all those
    holding a guard value the kernel must not touch."""
    dtype = x.dtype
    N, C, H, W = x.shape
    K, Cg, R, S = weight_shape
    Ho, Wo = grad.shape[2:]
    per_thread = direct.weight_grad_buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, groups, *stride,
                                                 *dilation, dtype, isa, **blocks)
    guarded = np.full((threads + 1, per_thread + 16), 12345.0, dtype)
    guarded[:threads, :per_thread] = np.nan
    grad_w = np.full((K, Cg * R * S), np.nan, dtype)
    direct.conv2d_direct_weight_grad(x, np.ascontiguousarray(grad.reshape(N, K, Ho * Wo)), grad_w,
                                     guarded[:threads], R, S, Wo, *stride,
                                     padding[0][0], padding[1][0], *dilation, groups, flip, isa,
                                     threads, **blocks)
    assert (guarded[:, per_thread:] == 12345.0).all() and (guarded[threads] == 12345.0).all()
    return grad_w.reshape(weight_shape)


@st.composite
def weight_grad_cases(draw):
    case = draw(direct_cases())
    # kernel rows of up to 14 taps: one tile, a partial one, several split evenly
    S = draw(st.integers(1, 14))
    dw = draw(st.integers(1, 2))
    W = draw(st.integers(max(1, dw * (S - 1) + 1 - sum(case["padding"][1])), 30))
    blocks = draw(st.sampled_from([{}, dict(chunk_rows=1, chunk_cols=1),
                                   dict(chunk_rows=2, chunk_cols=5, pass_tiles=1),
                                   dict(chunk_rows=3, pass_tiles=3)]))
    # tiles of a kernel row's taps, or of a channel's across kernel rows;
    # at stride_w 1 the panel kernel or the lanes kernel (whose rows of
    # pixels end in a masked partial vector at most widths)
    blocks = dict(blocks, flat=draw(st.sampled_from([None, False, True])))
    if case["stride"][1] == 1:
        blocks["lanes"] = draw(st.booleans())
    case.update(S=S, W=W, dilation=(case["dilation"][0], dw), blocks=blocks)
    return case


def weight_grad_inputs(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    base = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    x = make_view(base, case["view"])
    weight_shape = (case["K"], case["C"] // case["groups"], case["R"], case["S"])
    Ho = out_size(case["H"], case["padding"][0], case["dilation"][0], case["R"], case["stride"][0])
    Wo = out_size(case["W"], case["padding"][1], case["dilation"][1], case["S"], case["stride"][1])
    grad = rng.standard_normal((case["N"], case["K"], Ho, Wo)).astype(dtype)
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])
    return x, weight_shape, grad, conv


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=weight_grad_cases())
def test_weight_grad_matches_reference(isa, case):
    x, weight_shape, grad, conv = weight_grad_inputs(case)
    out = run_direct_weight_grad(x, weight_shape, grad, isa=isa, threads=case["threads"],
                                 **case["blocks"], **conv)
    assert_close(out, conv2d_weight_grad_reference(x, weight_shape, grad, **conv), case["dtype"])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S, stride, K", [(11, 2, 32), (7, 2, 64), (11, 4, 64), (5, 1, 70)])
def test_weight_grad_layer_sized(isa, dtype, S, stride, K):
    # DeepSpeech2's, the stem's, AlexNet's and Inception's kernel rows,
    # scaled down: rows whose input is padding at both ends, filters past
    # one NR block, several chunks of rows and passes
    rng = np.random.default_rng(S * K)
    x = rng.standard_normal((2, 3, 23, 5 * S)).astype(dtype)
    conv = dict(stride=(stride, stride), padding=((S // 2, S // 2), (S // 2, S // 2)))
    Ho = out_size(23, conv["padding"][0], 1, S, stride)
    Wo = out_size(5 * S, conv["padding"][1], 1, S, stride)
    grad = rng.standard_normal((2, K, Ho, Wo)).astype(dtype)
    lanes = [dict(lanes=True), dict(lanes=True, chunk_rows=2, pass_tiles=2)] if stride == 1 else []
    for blocks in ({}, dict(chunk_rows=2, pass_tiles=2), dict(flat=True), dict(flat=False),
                   *lanes):
        out = run_direct_weight_grad(x, (K, 3, S, S), grad, isa=isa, threads=2, **blocks, **conv)
        assert_close(out, conv2d_weight_grad_reference(x, (K, 3, S, S), grad, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, C, H, W, K, R, S, pad", [(5, 1, 28, 28, 32, 3, 3, 0),
                                                      (4, 1, 28, 28, 20, 5, 5, 0),
                                                      (3, 3, 17, 33, 37, 3, 3, 1),
                                                      (2, 8, 9, 47, 16, 3, 3, 1)])
def test_weight_grad_lanes_kernel(isa, dtype, N, C, H, W, K, R, S, pad):
    # the layers the lanes kernel is taken for (paper_mnist, LeNet, few
    # channels, half a tile of filters), scaled: rows of 26, 24, 33 and 47
    # pixels (whole vectors and a masked rest), filters past one block of
    # NF and one of NR, split by units and by images, one thread and two;
    # the same result as the reference, and as the panel kernel's
    rng = np.random.default_rng(K * S + C)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    conv = dict(padding=((pad, pad), (pad, pad)))
    grad = rng.standard_normal((N, K, H + 2 * pad - R + 1, W + 2 * pad - S + 1)).astype(dtype)
    expected = conv2d_weight_grad_reference(x, (K, C, R, S), grad, **conv)
    for threads, blocks in ((1, {}), (2, {}), (2, dict(pass_tiles=1)), (2, dict(chunk_rows=3))):
        out = run_direct_weight_grad(x, (K, C, R, S), grad, isa=isa, threads=threads, lanes=True,
                                     **blocks, **conv)
        assert_close(out, expected, dtype)
    with pytest.raises(ValueError, match="stride_w == 1"):
        run_direct_weight_grad(x[..., ::2], (K, C, R, S), grad[..., ::2], isa=isa, lanes=True,
                               stride=(1, 2), **conv)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_bits_by_units_and_by_images(isa, dtype):
    # split by units (more units than a pass holds): each grad_w element is
    # one tile's sum over the batch, in one order, whichever thread owns the
    # tile and however many passes it takes, so any thread count gives the
    # same bits; split by images (every unit in one pass, an image per
    # thread): each thread's tiles over its images, added in thread order,
    # so a given thread count gives the same bits
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 11, 19)).astype(dtype)
    grad = rng.standard_normal((3, 40, 11, 19)).astype(dtype)
    conv = dict(padding=((2, 2), (3, 3)), flip=True)
    expected = conv2d_weight_grad_reference(x, (40, 4, 5, 7), grad, **conv)
    for flat in (False, True):
        units = direct.weight_grad_units(40, 4, 5, 7, 1, dtype, isa, flat)[0]
        passes = direct.weight_grad_blocking(dtype, isa, 40, 11, 19, chunk_rows=4)["pass"]
        assert passes >= units > 5

        def run(threads, pass_tiles):
            return run_direct_weight_grad(x, (40, 4, 5, 7), grad, isa=isa, threads=threads,
                                          chunk_rows=4, pass_tiles=pass_tiles, flat=flat, **conv)

        by_units = [run(t, p) for t in (1, 2, 3) for p in (0, 1, 5)
                    if t == 1 or not direct.weight_grad_by_images(3, units, p or passes, t)]
        assert len(by_units) == 7
        for other in by_units[1:]:
            np.testing.assert_array_equal(other, by_units[0])
        assert_close(by_units[0], expected, dtype)
        for t in (2, 3):   # 3 images: 1 + 2, or one each
            assert direct.weight_grad_by_images(3, units, passes, t)
            first = run(t, 0)
            np.testing.assert_array_equal(run(t, 0), first)
            assert_close(first, expected, dtype)
            # each item's tiles are a one-thread run over its images, added
            # in item order
            parts = [run_direct_weight_grad(x[i * 3 // t:(i + 1) * 3 // t], (40, 4, 5, 7),
                                            grad[i * 3 // t:(i + 1) * 3 // t], isa=isa,
                                            threads=1, chunk_rows=4, flat=flat, **conv)
                     for i in range(t)]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            np.testing.assert_array_equal(first, total)
        assert not direct.weight_grad_by_images(3, units, passes, 4)   # fewer images than threads


@pytest.mark.parametrize("isa", ISAS)
def test_weight_grad_more_threads_than_tiles(isa):
    # one channel, one filter block, a 1x5 kernel: one unit (or two), four
    # threads, the others idle; and a batch of one 1x1 output
    rng = np.random.default_rng(12)
    for shape, wshape, conv in [((2, 1, 6, 9), (3, 1, 1, 5), dict(padding=((0, 0), (2, 2)))),
                                ((1, 2, 3, 3), (5, 2, 3, 3), {})]:
        x = rng.standard_normal(shape)
        Ho = out_size(shape[2], conv.get("padding", ((0, 0),) * 2)[0], 1, wshape[2], 1)
        Wo = out_size(shape[3], conv.get("padding", ((0, 0),) * 2)[1], 1, wshape[3], 1)
        grad = rng.standard_normal((shape[0], wshape[0], Ho, Wo))
        out = run_direct_weight_grad(x, wshape, grad, isa=isa, threads=4, **conv)
        assert_close(out, conv2d_weight_grad_reference(x, wshape, grad, **conv), np.float64)


def test_weight_grad_chunks_fit_the_image():
    # a chunk never has more output rows than the image (the workspace of
    # a small layer is not sized for 64 of them)
    small = direct.weight_grad_buffer_sizes(1, 4, 1, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1,
                                            np.float32, "generic")
    one_row = direct.weight_grad_buffer_sizes(1, 4, 1, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1,
                                              np.float32, "generic", chunk_rows=1)
    assert direct.weight_grad_blocking(np.float32, "generic", 4, 5, 5)["rows"] == 5
    # 4 more output rows of the panel (5 columns x NR 16), and the input
    # rows under them: 5 (the image's), not 3, of 7 columns (5 + 2 padding)
    assert small - one_row == 4 * 5 * 16 + 2 * 7


def test_weight_grad_plan_fits_a_tight_limit():
    # under a limit its default chunks exceed, the plan takes chunks of one
    # row and one tile a pass (then one thread), and is still right
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 30, 30)).astype(np.float32)
    grad = rng.standard_normal((2, 64, 15, 15)).astype(np.float32)
    conv = dict(stride=2, padding=3)
    roomy = fastconv.plan_conv2d(x.shape, (64, 3, 7, 7), np.float32, kind="weight_grad",
                                 method="direct", num_threads=2, **conv)
    limit = roomy.workspace_bytes // 3
    tight = fastconv.plan_conv2d(x.shape, (64, 3, 7, 7), np.float32, kind="weight_grad",
                                 method="direct", num_threads=2, memory_limit=limit, **conv)
    assert tight.blocking.chunk_rows == 1 and tight.workspace_bytes <= limit, (roomy, tight)
    assert_close(tight.execute(x, grad),
                 conv2d_weight_grad_reference(x, (64, 3, 7, 7), grad, stride=(2, 2),
                                              padding=((3, 3), (3, 3))), np.float32)


def test_weight_grad_tiles_span_kernel_rows_where_that_fills_them():
    # the stem's 7x7 in the wide tile (MR 6): 49 taps in 9 tiles of 5-6,
    # not each row's 7 as 4 + 3; a 3x3 in the narrow tile (MR 14): 9 taps
    # in one tile, not 3 of 14 per row; DeepSpeech2's 41x11 fills its rows
    # (11 of 12 or 14); tiles of more than 14 taps stay in rows; a 1-row
    # kernel has nothing to span
    assert direct.weight_grad_flat(7, 7, 6) and direct.weight_grad_flat(3, 3, 6)
    assert direct.weight_grad_flat(3, 3, 14) and not direct.weight_grad_flat(3, 3, 16)
    assert not direct.weight_grad_flat(41, 11, 12) and not direct.weight_grad_flat(41, 11, 14)
    assert not direct.weight_grad_flat(11, 11, 6) and not direct.weight_grad_flat(1, 33, 6)
    if "avx512" in ISAS:
        units, tiles, flat = direct.weight_grad_units(64, 3, 7, 7, 1, np.float32, "avx512")
        assert flat and tiles == 9 and units == 3 * 9
        # paper_mnist's 32 filters: the narrow tile, one flat tile of 9 taps
        assert direct.weight_grad_units(32, 1, 3, 3, 1, np.float32, "avx512") == (1, 1, True)


@pytest.mark.parametrize("isa", ISAS)
def test_weight_grad_every_isa_agrees_with_generic(isa):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 5, 14, 30))
    grad = rng.standard_normal((2, 70, 14, 15))
    conv = dict(stride=(1, 2), padding=((3, 3), (5, 5)))
    ours = run_direct_weight_grad(x, (70, 5, 7, 11), grad, isa=isa, threads=2, **conv)
    generic = run_direct_weight_grad(x, (70, 5, 7, 11), grad, isa="generic", threads=2, **conv)
    np.testing.assert_allclose(ours, generic, rtol=1e-12, atol=1e-12)


def test_weight_grad_rejects_small_workspace_and_bad_arguments():
    x = np.ones((1, 2, 5, 5), np.float32)
    grad = np.ones((1, 3, 25), np.float32)
    grad_w = np.empty((3, 2 * 9), np.float32)
    need = direct.weight_grad_buffer_sizes(1, 3, 2, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, np.float32,
                                           "generic")
    args = (3, 3, 5, 1, 1, 1, 1, 1, 1, 1, False, "generic")
    direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need), np.float32), *args, 1)
    np.testing.assert_allclose(
        grad_w.reshape(3, 2, 3, 3),
        conv2d_weight_grad_reference(x, (3, 2, 3, 3), grad.reshape(1, 3, 5, 5),
                                     padding=((1, 1), (1, 1))), rtol=1e-6)
    with pytest.raises(ValueError, match="workspace"):
        direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need - 1), np.float32),
                                         *args, 1)
    with pytest.raises(ValueError, match="workspace"):
        direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need), np.float32),
                                         *args, 2)
    with pytest.raises(ValueError, match="num_threads"):
        direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need), np.float32),
                                         *args, 0)
    with pytest.raises(ValueError, match="grad_w has"):
        direct.conv2d_direct_weight_grad(x, grad, np.empty((3, 17), np.float32),
                                         np.empty((1, need), np.float32), *args, 1)
    with pytest.raises(ValueError, match="chunk_rows"):
        direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need), np.float32),
                                         *args, 1, chunk_rows=-1)
    with pytest.raises(ValueError, match="strides"):
        direct.conv2d_direct_weight_grad(x, grad, grad_w, np.empty((1, need), np.float32),
                                         3, 3, 5, 0, 1, 1, 1, 1, 1, 1, False, "generic", 1)


@pytest.mark.parametrize("isa", ISAS)
def test_front_end_runs_the_weight_gradient_on_every_isa(isa):
    # method="direct" for the weight gradient through the planner and
    # executor (which does not clear grad_w first: the kernel writes it all)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)
    grad = rng.standard_normal((2, 40, 8, 8)).astype(np.float32)
    conv = dict(stride=2, padding=1)
    with _tuning.tuned(isa=isa):
        plan = fastconv.plan_conv2d(x.shape, (40, 3, 7, 7), np.float32, kind="weight_grad",
                                    method="direct", **conv)
    assert plan.method == "direct" and plan.blocking.isa == isa and "taps x" in repr(plan)
    out = np.full((40, 3, 7, 7), np.nan, np.float32)
    plan.execute(x, grad, out=out)
    assert_close(out, conv2d_weight_grad_reference(x, (40, 3, 7, 7), grad,
                                                   stride=(2, 2), padding=((1, 1), (1, 1))),
                 np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_plan_takes_the_lanes_kernel_where_it_measured_faster(isa, dtype):
    """The planner's weight gradient: the lanes kernel on AVX-512 at
    stride_w 1 for few taps per filter block (paper_mnist: 1 channel, 3x3)
    or a half-empty tile (float32's 32 filters, 16 given), the panel kernel
    otherwise, on the other ISAs and for groups of fewer filters than the
    lanes tile's 4 (depthwise); under a limit the lanes tiles do not fit,
    the panel kernel. Every plan gives the reference's result."""
    rng = np.random.default_rng(3)
    cases = [((4, 1, 28, 28), (32, 1, 3, 3), dict(), True),
             ((2, 8, 12, 21), (16, 8, 3, 3), dict(padding=1), dtype == np.float32),
             ((2, 16, 12, 21), (32, 16, 3, 3), dict(padding=1), False),   # 144 taps
             ((4, 1, 28, 28), (32, 1, 3, 3), dict(stride=(1, 2)), False),
             ((2, 8, 14, 18), (8, 1, 3, 3), dict(groups=8, padding=1), False),
             ((2, 8, 14, 18), (24, 1, 3, 3), dict(groups=8, padding=1), False),  # 3 a group
             ((2, 8, 14, 18), (32, 2, 3, 3), dict(groups=4, padding=1), True),   # 8 a group
             # 1-D depthwise (one row): float64, and float32 with >= 5 taps
             # over >= 128 output columns
             ((2, 8, 1, 140), (8, 1, 1, 5), dict(groups=8, padding=((0, 0), (2, 2))), True),
             ((2, 8, 1, 140), (8, 1, 1, 3), dict(groups=8, padding=((0, 0), (1, 1))),
              dtype == np.float64),
             ((2, 8, 1, 100), (8, 1, 1, 7), dict(groups=8), dtype == np.float64)]
    for x_shape, w_shape, conv, lanes in cases:
        with _tuning.tuned(isa=isa):
            plan = fastconv.plan_conv2d(x_shape, w_shape, dtype, method="direct",
                                        kind="weight_grad", **conv)
        assert plan.blocking.lanes == (lanes and isa == "avx512"), plan
        assert ("lanes kernel" in repr(plan)) == plan.blocking.lanes
        x = rng.standard_normal(x_shape).astype(dtype)
        grad = rng.standard_normal(fastconv.plan_conv2d(x_shape, w_shape, dtype, **conv)
                                   .output_shape).astype(dtype)
        stride = conv.get("stride", (1, 1))
        pad = conv.get("padding", 0)
        pads = pad if isinstance(pad, tuple) else ((pad, pad), (pad, pad))
        expected = conv2d_weight_grad_reference(x, w_shape, grad, stride=stride,
                                                padding=pads,
                                                groups=conv.get("groups", 1))
        assert_close(plan.execute(x, grad), expected, dtype)
        tight, refused = plan, False
        while tight.blocking.lanes:
            # tighter limits: chunks of one row first, then the panel kernel
            # (grouped layers: whose chunks, of whole filter blocks, can
            # outgrow the lanes kernel's; then the lanes kernel on one thread)
            try:
                with _tuning.tuned(isa=isa):
                    tight = fastconv.plan_conv2d(x_shape, w_shape, dtype, method="direct",
                                                 kind="weight_grad",
                                                 memory_limit=tight.workspace_bytes - 1, **conv)
            except fastconv.WorkspaceLimitError:
                refused = True
                break
            assert_close(tight.execute(x, grad), expected, dtype)
        if refused:
            assert "groups" in conv and tight.kernel_threads == 1, tight
        elif plan.blocking.lanes:
            assert "the panel kernel, whose tiles are smaller" in tight.reason, tight
            if "groups" not in conv:
                assert tight.kernel_threads == plan.kernel_threads, tight
