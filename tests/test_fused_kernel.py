"""The fused lowering's kernel (fastconv._kernels.fused), called directly,
against the independent NumPy reference (tests/reference.py), on every
instruction set this machine runs: geometries whose sizes are not multiples
of the register tile, the vector width or the blocks; every padding form;
odd input strides and views; 1 and 2 threads; tiny blocks."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
import fastconv
from fastconv import _tuning

from reference import assert_close, conv2d_reference, conv2d_weight_grad_reference

fused = pytest.importorskip("fastconv._kernels.fused")

ISAS = fused.supported_isas()
DTYPES = [np.float32, np.float64]


def out_size(size, pad, dil, k, stride):
    return (size + sum(pad) - dil * (k - 1) - 1) // stride + 1


def run_fused(x, w, b, *, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
              flip=False, isa="generic", threads=1, kc=None, nc=None, mc=None, out_fill=np.nan,
              panel_packers=True, weights_in_place=False, b_in_place=False, buffers=None):
    """conv2d_fused on NCHW x and (K, C/groups, R, S) w, with buffers sized by
    buffer_sizes; returns out as (N, K, Ho, Wo) (and puts the workspace in
    the dict `buffers`, if given)."""
    dtype = x.dtype
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Ho = out_size(H, padding[0], dilation[0], R, stride[0])
    Wo = out_size(W, padding[1], dilation[1], S, stride[1])
    blk = fused.blocking(dtype, isa)
    kc, nc, mc = kc or blk["KC"], nc or blk["NC"], mc or blk["MC"]
    rows = Cg * R * S
    n_packed, per_thread = fused.buffer_sizes(K, rows, groups, kc, nc, dtype, isa,
                                              weights_in_place)
    # NaN-filled buffers and output: every element the kernel reads must have
    # been written by it
    packed = np.full(n_packed, np.nan, dtype)
    workspace = np.full((threads, per_thread), np.nan, dtype)
    out = np.full((N, K, Ho * Wo), out_fill, dtype)
    bias = np.zeros(0, dtype) if b is None else b
    fused.conv2d_fused(x, np.ascontiguousarray(w.reshape(K, rows)), bias, out, packed, workspace,
                       R, S, Wo, stride[0], stride[1], padding[0][0], padding[1][0],
                       dilation[0], dilation[1], groups, flip, kc, nc, mc, isa, threads,
                       panel_packers=panel_packers, weights_in_place=weights_in_place,
                       b_in_place=b_in_place)
    if buffers is not None:
        buffers["workspace"] = workspace
    return out.reshape(N, K, Ho, Wo)


def make_view(base, view):
    """x of the same logical shape as base, laid out in memory as `view` says."""
    if view == "contiguous":
        return base
    if view == "reversed_w":          # negative stride along W
        return np.ascontiguousarray(base[..., ::-1])[..., ::-1]
    if view == "reversed_all":        # negative strides everywhere
        return np.ascontiguousarray(base[::-1, ::-1, ::-1, ::-1])[::-1, ::-1, ::-1, ::-1]
    if view == "transposed_planes":   # W is the slow axis of each plane
        return np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    if view == "nhwc":                # channels last
        return np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if view == "strided":             # every other element of a larger array, odd offsets
        N, C, H, W = base.shape
        big = np.zeros((N, 2 * C + 1, 2 * H + 3, 3 * W + 2), base.dtype)
        big[:, 1::2, 3::2, 2::3] = base
        return big[:, 1::2, 3::2, 2::3]
    if view == "broadcast_n":         # zero stride along N (every image the same)
        return np.broadcast_to(base[:1], base.shape)
    raise ValueError(view)


VIEWS = ["contiguous", "reversed_w", "reversed_all", "transposed_planes", "nhwc", "strided",
         "broadcast_n"]


@st.composite
def fused_cases(draw):
    groups = draw(st.integers(1, 3))
    c_group = draw(st.integers(1, 5))
    # filters per group: around and past the register tiles' MR (4, 6, 8)
    k_group = draw(st.sampled_from([1, 2, 3, 5, 7, 9, 13, 17]))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(tuple(draw(st.integers(0, 3)) for _ in range(2)) for _ in range(2))
    span_h, span_w = dh * (R - 1) + 1, dw * (S - 1) + 1
    H = draw(st.integers(max(1, span_h - sum(pads[0])), 15))
    W = draw(st.integers(max(1, span_w - sum(pads[1])), 23))
    return dict(
        N=draw(st.integers(1, 3)), C=groups * c_group, K=groups * k_group, H=H, W=W, R=R, S=S,
        groups=groups, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=pads, dilation=(dh, dw), bias=draw(st.booleans()), flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)), view=draw(st.sampled_from(VIEWS)),
        threads=draw(st.sampled_from([1, 2])),
        kc=draw(st.sampled_from([None, 1, 3, 7])), nc=draw(st.sampled_from([None, 1, 3, 7])),
        mc=draw(st.sampled_from([None, 1, 3, 7])), seed=draw(st.integers(0, 2**32 - 1)),
        weights_in_place=draw(st.booleans()))


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fused_cases())
def test_fused_matches_reference(isa, case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    base = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    x = make_view(base, case["view"])
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], case["R"], case["S"]))
    w = w.astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])
    out = run_fused(x, w, b, isa=isa, threads=case["threads"], kc=case["kc"], nc=case["nc"],
                    mc=case["mc"], weights_in_place=case["weights_in_place"], **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)
    # the weights packed or read in place: the same sums in the same order
    other = run_fused(x, w, b, isa=isa, threads=case["threads"], kc=case["kc"], nc=case["nc"],
                      mc=case["mc"], weights_in_place=not case["weights_in_place"], **conv)
    np.testing.assert_array_equal(other, out)


@st.composite
def linear_cases(draw):
    """Stride 1, the columns the linear packer takes: with the output as wide
    as the input ("same" padding, split unevenly between the sides) a
    segment is an image's columns, otherwise (any other padding, "valid"
    included) one output row's; tiny maps put more images or rows in one
    micro-panel and kernels up to 6x6 have more taps than its masks hold
    (both fall back to the segment packer)."""
    R, S = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    top, left = draw(st.integers(0, dh * (R - 1))), draw(st.integers(0, dw * (S - 1)))
    bottom, right = dh * (R - 1) - top, dw * (S - 1) - left
    H, W = draw(st.integers(1, 13)), draw(st.integers(1, 21))
    if draw(st.booleans()):  # other padding: rows of x more than Wo apart
        bottom = draw(st.integers(0, dh * (R - 1)))
        right = draw(st.integers(0, dw * (S - 1)))
        H = max(H, dh * (R - 1) + 1 - top - bottom)
        W = max(W, dw * (S - 1) + 1 - left - right)
    groups = draw(st.integers(1, 2))
    return dict(
        N=draw(st.integers(1, 6)), C=groups * draw(st.integers(1, 4)),
        K=groups * draw(st.sampled_from([1, 3, 8, 9, 17])),
        H=H, W=W, R=R, S=S, groups=groups,
        padding=((top, bottom), (left, right)), dilation=(dh, dw),
        bias=draw(st.booleans()), flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        view=draw(st.sampled_from(["contiguous", "contiguous", "strided", "broadcast_n"])),
        threads=draw(st.sampled_from([1, 2])), kc=draw(st.sampled_from([None, 1, 5, 13])),
        nc=draw(st.sampled_from([None, 1, 50])), seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=linear_cases())
def test_linear_packing_matches_segments_and_reference(isa, case):
    # the same panels whichever packer fills them: the same bits
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    base = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    x = make_view(base, case["view"])
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], case["R"], case["S"]))
    w = w.astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    conv = dict(padding=case["padding"], dilation=case["dilation"], groups=case["groups"],
                flip=case["flip"])
    runs = [run_fused(x, w, b, isa=isa, threads=case["threads"], kc=case["kc"], nc=case["nc"],
                      panel_packers=linear, **conv) for linear in (True, False)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert_close(runs[0], conv2d_reference(x, w, b, **conv), dtype)


@st.composite
def step2_cases(draw):
    """Column stride 2 on rows of unit step, which the stride-2 packer takes
    (AVX-512): maps from 1 to ~70 output columns (one micro-panel holding
    many output rows, or an output row spanning panels and vectors), kernels
    up to 11 wide (masks per kernel column), padding on either side, depth
    blocks that start inside a kernel row (kc 1, 5, 13)."""
    R, S = draw(st.integers(1, 5)), draw(st.integers(1, 11))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(tuple(draw(st.integers(0, 4)) for _ in range(2)) for _ in range(2))
    span_h, span_w = dh * (R - 1) + 1, dw * (S - 1) + 1
    groups = draw(st.integers(1, 2))
    return dict(
        N=draw(st.integers(1, 4)), C=groups * draw(st.integers(1, 3)),
        K=groups * draw(st.sampled_from([1, 3, 8, 9, 17])),
        H=draw(st.integers(max(1, span_h - sum(pads[0])), 12)),
        W=draw(st.integers(max(1, span_w - sum(pads[1])), 150)), R=R, S=S, groups=groups,
        stride=(draw(st.integers(1, 3)), 2), padding=pads, dilation=(dh, dw),
        bias=draw(st.booleans()), flip=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        view=draw(st.sampled_from(["contiguous", "contiguous", "broadcast_n", "transposed_planes"])),
        threads=draw(st.sampled_from([1, 2])), kc=draw(st.sampled_from([None, 1, 5, 13])),
        nc=draw(st.sampled_from([None, 1, 50])), seed=draw(st.integers(0, 2**32 - 1)))


def _packers_agree(isa, case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    base = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    x = make_view(base, case["view"])
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], case["R"], case["S"]))
    w = w.astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])
    runs = [run_fused(x, w, b, isa=isa, threads=case["threads"], kc=case["kc"], nc=case["nc"],
                      panel_packers=special, **conv) for special in (True, False)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert_close(runs[0], conv2d_reference(x, w, b, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=step2_cases())
def test_stride2_packing_matches_segments_and_reference(isa, case):
    # the same panels whichever packer fills them: the same bits
    _packers_agree(isa, case)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_stride2_packing_past_its_mask_stack(isa, dtype):
    # one output column per row and a 15-wide kernel: a micro-panel of 48
    # float32 (24 float64) columns holds 48 (24) segments, 48 x 15 x 3 (24 x
    # 15 x 3) masks, more than the packer's stack holds; it declines and the
    # segment packer fills the panel
    case = dict(N=3, C=2, K=9, H=40, W=16, R=2, S=15, groups=1, stride=(1, 2),
                padding=((0, 1), (0, 0)), dilation=(1, 1), bias=True, flip=False, dtype=dtype,
                view="contiguous", threads=2, kc=None, nc=None, seed=5)
    _packers_agree(isa, case)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(R=st.integers(1, 7), S=st.integers(1, 9), pad=st.integers(0, 4), W=st.integers(1, 60),
       k0=st.integers(0, 20), kcb=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_stride2_packer_fills_the_panels_it_takes(isa, dtype, R, S, pad, W, k0, kcb, seed):
    # B's micro-panels packed directly: the stride-2 packer (AVX-512) takes
    # every micro-panel whose masks fit its stack, and fills them as the
    # segment packer does, NaN-filled buffer and all
    N, C, H = 2, 2, 9
    Ho, Wo = (H + 2 * pad - R) // 2 + 1, (W + 2 * pad - S) // 2 + 1
    assume(Ho >= 1 and Wo >= 1 and k0 < C * R * S)
    kcb = min(kcb, C * R * S - k0)
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
    width = N * Ho * Wo
    runs = [fused.pack_b_panels(x, R, S, 2, 2, pad, pad, Ho, Wo, k0, kcb, 0, width, isa,
                                panel_packers=special) for special in (True, False)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[1][1] == 0
    if isa != "avx512":
        assert runs[0][1] == 0   # (the segment packer: no stride-2 one)
        return
    nr = fused.blocking(dtype, isa)["NR"]
    vectors = nr // (64 // np.dtype(dtype).itemsize)
    # segments of a micro-panel at most: one per output row it touches
    if all(min(nr, width - q) // Wo + 2 <= 1024 // (S * vectors) for q in range(0, width, nr)):
        assert runs[0][1] == -(-width // nr)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_stride2_packer_declines_past_its_mask_stack(isa, dtype):
    # one output column per row and a 15-wide kernel: a micro-panel of 48
    # float32 (24 float64) columns is as many segments, 48 x 15 x 3 (24 x 15
    # x 3) masks, more than the packer's stack holds: it takes none, and the
    # segment packer fills them the same
    x = np.random.default_rng(3).standard_normal((3, 2, 40, 16)).astype(dtype)
    nr = fused.blocking(dtype, isa)["NR"]
    runs = [fused.pack_b_panels(x, 2, 15, 1, 2, 0, 0, 39, 1, 0, 30, 0, 2 * nr, isa,
                                panel_packers=special) for special in (True, False)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert not np.isnan(runs[0][0]).any()
    assert runs[0][1] == 0 and runs[1][1] == 0


def pointwise_view(base, view):
    """x for the pointwise tests: make_view's layouts, and two whose rows are
    still contiguous (read in place) with other channel steps."""
    if view == "reversed_c":          # negative channel step
        return np.ascontiguousarray(base[:, ::-1])[:, ::-1]
    if view == "every_other_channel":  # channel planes 2 H W apart
        N, C, H, W = base.shape
        big = np.zeros((N, 2 * C, H, W), base.dtype)
        big[:, ::2] = base
        return big[:, ::2]
    if view == "cropped_w":           # rows further apart than W: packed
        return np.pad(base, ((0, 0), (0, 0), (0, 0), (0, 3)))[..., :base.shape[3]]
    return make_view(base, view)


@st.composite
def pointwise_cases(draw):
    """1x1, stride 1, no padding: B is x itself. Maps that are not multiples
    of NR put micro-panels across images (packed) beside whole ones (read in
    place); depth blocks of 1, 5, 13 rows; views whose rows are contiguous
    (in place) and others (packed)."""
    groups = draw(st.integers(1, 2))
    return dict(
        N=draw(st.integers(1, 5)), C=groups * draw(st.integers(1, 9)),
        K=groups * draw(st.sampled_from([1, 3, 8, 9, 17])),
        H=draw(st.integers(1, 9)), W=draw(st.integers(1, 70)), groups=groups,
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        bias=draw(st.booleans()), flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        view=draw(st.sampled_from(["contiguous", "contiguous", "reversed_c",
                                   "every_other_channel", "broadcast_n", "cropped_w",
                                   "strided"])),
        threads=draw(st.sampled_from([1, 2])), kc=draw(st.sampled_from([None, 1, 5, 13])),
        nc=draw(st.sampled_from([None, 1, 50])), mc=draw(st.sampled_from([None, 1, 9])),
        weights_in_place=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pointwise_cases())
def test_x_read_in_place_matches_packed_and_reference(isa, case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    shape = (case["N"], case["C"], case["H"], case["W"])
    x = pointwise_view(rng.standard_normal(shape).astype(dtype), case["view"])
    # contiguous rows; a one-row map's rows may lie anywhere; one pixel, anything
    contiguous_rows = (case["view"] in ("contiguous", "reversed_c", "every_other_channel",
                                        "broadcast_n")
                       or case["view"] == "cropped_w" and case["H"] == 1
                       or case["H"] == case["W"] == 1)
    assert fused.reads_x_in_place(x, 1, 1, case["H"], case["W"], 1, 1, 0, 0) == contiguous_rows
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], 1, 1)).astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    conv = dict(dilation=case["dilation"], groups=case["groups"], flip=case["flip"])
    runs = [run_fused(x, w, b, isa=isa, threads=case["threads"], kc=case["kc"], nc=case["nc"],
                      mc=case["mc"], weights_in_place=case["weights_in_place"],
                      b_in_place=in_place, **conv) for in_place in (True, False)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert_close(runs[0], conv2d_reference(x, w, b, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_in_place", [False, True])
def test_whole_panels_read_in_place_are_not_packed(isa, dtype, weights_in_place):
    # each image's columns are whole micro-panels: read in place, the
    # NaN-filled workspace is never written; packed, it is
    nr = fused.blocking(dtype, isa)["NR"]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 2, nr)).astype(dtype)
    w = rng.standard_normal((11, 7, 1, 1)).astype(dtype)
    expected = conv2d_reference(x, w, None)
    for in_place in (True, False):
        buffers = {}
        out = run_fused(x, w, None, isa=isa, threads=2, nc=nr, kc=3, b_in_place=in_place,
                        weights_in_place=weights_in_place, buffers=buffers)
        assert_close(out, expected, dtype)
        assert np.isnan(buffers["workspace"]).all() == in_place


def test_x_is_read_in_place_only_where_it_is_the_stretched_matrix():
    x = np.zeros((2, 3, 5, 7), np.float32)
    assert fused.reads_x_in_place(x, 1, 1, 5, 7, 1, 1, 0, 0)
    for R, S, Ho, Wo, sh, sw, top, left in [(3, 1, 3, 7, 1, 1, 0, 0), (1, 3, 5, 5, 1, 1, 0, 0),
                                            (1, 1, 3, 7, 2, 1, 0, 0), (1, 1, 5, 4, 1, 2, 0, 0),
                                            (1, 1, 6, 7, 1, 1, 1, 0), (1, 1, 5, 8, 1, 1, 0, 1)]:
        assert not fused.reads_x_in_place(x, R, S, Ho, Wo, sh, sw, top, left)
    assert not fused.reads_x_in_place(x[..., ::-1], 1, 1, 5, 7, 1, 1, 0, 0)
    assert not fused.reads_x_in_place(x.transpose(0, 1, 3, 2), 1, 1, 7, 5, 1, 1, 0, 0)
    assert not fused.reads_x_in_place(x[..., ::2], 1, 1, 5, 4, 1, 1, 0, 0)
    # rows of a one-row map, or a one-column map's pixels, may be anywhere
    assert fused.reads_x_in_place(x[:, :, :1, :], 1, 1, 1, 7, 1, 1, 0, 0)
    assert fused.reads_x_in_place(x[:, :, :1, ::-1][..., :1], 1, 1, 1, 1, 1, 1, 0, 0)
    assert not fused.reads_x_in_place(x[..., :1], 1, 1, 5, 1, 1, 1, 0, 0)
    # padding at the bottom or right only: the output is larger than the input
    assert not fused.reads_x_in_place(x, 1, 1, 6, 7, 1, 1, 0, 0)
    assert not fused.reads_x_in_place(x, 1, 1, 5, 8, 1, 1, 0, 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("blocks", [(None, None, None), (1, 1, 1), (3, 7, 3), (7, 3, 7),
                                    (100, 1000, 20)])
def test_layer_sized(isa, dtype, threads, blocks):
    # many filters (not a multiple of any MR), small maps whose columns cross
    # images inside a micro-tile (7x7 = 49), depth past one KC block
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 24, 7, 7)).astype(dtype)
    w = rng.standard_normal((70, 12, 3, 3)).astype(dtype)
    b = rng.standard_normal(70).astype(dtype)
    kc, nc, mc = blocks
    out = run_fused(x, w, b, padding=((1, 1), (1, 1)), groups=2, isa=isa, threads=threads,
                    kc=kc, nc=nc, mc=mc)
    assert_close(out, conv2d_reference(x, w, b, padding=((1, 1), (1, 1)), groups=2), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_rows_and_deep(isa, dtype):
    # output rows wider than NC and a depth of several default KC blocks
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 67, 5, 601)).astype(dtype)
    w = rng.standard_normal((19, 67, 2, 3)).astype(dtype)
    out = run_fused(x, w, None, padding=((0, 1), (2, 0)), isa=isa, threads=2)
    assert_close(out, conv2d_reference(x, w, padding=((0, 1), (2, 0))), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_threads_and_blocks(isa, dtype):
    # for a given ISA and kc, the sum over the depth runs in one order whatever
    # the threads, nc, mc, or which tiles take the edge path
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 10, 9, 13)).astype(dtype)
    w = rng.standard_normal((21, 10, 3, 3)).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    runs = [run_fused(x, w, b, padding=((1, 1), (1, 1)), isa=isa, threads=t, kc=40, nc=nc, mc=mc)
            for t, nc, mc in [(1, None, None), (2, None, None), (2, 1, 1), (1, 7, 3), (2, 100, 9)]]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_many_equal_items_run_guided(isa, dtype):
    # at least 64 column blocks a thread: equal items (nc columns x every
    # filter), scheduled guided rather than dynamic; the same bits as one
    # thread, and the reference's values, with uneven last blocks and groups
    rng = np.random.default_rng(31)
    x = rng.standard_normal((9, 4, 33, 30)).astype(dtype)
    w = rng.standard_normal((10, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    nr = fused.blocking(dtype, isa)["NR"]
    conv = dict(padding=((1, 0), (0, 2)), groups=2)
    threads = 3
    split = fused._work_split(9 * 31 * 29, 5, 2, 18, fused.blocking(dtype, isa)["MR"], nr, 1,
                              fused.blocking(dtype, isa)["MC"], threads)
    assert split[1] * 2 >= 64 * threads and split[3] == 1   # the guided case
    out = run_fused(x, w, b, isa=isa, threads=threads, nc=1, **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), dtype)
    np.testing.assert_array_equal(out, run_fused(x, w, b, isa=isa, threads=1, nc=1, **conv))


def test_work_split_is_searched_once_per_geometry():
    # the search runs at Python speed (0.44 ms a call for float64 ResNet-50
    # 2a_1x1): a loop calling the same layer must not pay it again
    from fastconv._kernels import fused

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 8, 11, 13))
    w = rng.standard_normal((16, 8, 3, 3))
    first = run_fused(x, w, None, padding=((1, 1), (1, 1)), threads=2)
    fused._work_split.cache_clear()
    run_fused(x, w, None, padding=((1, 1), (1, 1)), threads=2)
    misses = fused._work_split.cache_info().misses
    again = run_fused(x, w, None, padding=((1, 1), (1, 1)), threads=2)
    info = fused._work_split.cache_info()
    assert misses >= 1 and info.misses == misses and info.hits >= 1
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_agrees_with_generic(isa):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 12, 12))
    w = rng.standard_normal((32, 16, 3, 3))
    ours = run_fused(x, w, None, padding=((1, 1), (1, 1)), isa=isa, threads=2)
    generic = run_fused(x, w, None, padding=((1, 1), (1, 1)), isa="generic", threads=2)
    np.testing.assert_allclose(ours, generic, rtol=1e-12, atol=1e-12)


def test_supported_isas_and_codes():
    assert ISAS[-1] == "generic"
    order = ["avx512", "avx2", "generic"]
    assert list(ISAS) == [name for name in order if name in ISAS]
    for code, name in enumerate(fused.ISA_NAMES):
        if name in ISAS:
            assert fused.isa_code(name) == code == fused.isa_code(code)
    assert fused.isa_code(None) == fused.isa_code("auto") == fused.isa_code(ISAS[0])
    with pytest.raises(ValueError):
        fused.isa_code("sse9")
    with pytest.raises(ValueError):
        fused.isa_code(7)
    with pytest.raises(TypeError):
        fused.isa_code(1.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_depth_blocks_deepen_only_for_large_images(dtype):
    """KC doubles where each image still has G_IN_PLACE_MIN_BLOCKS blocks of
    the deeper size (so the output gradient stays read in place), and the
    planner passes the layer's columns per image."""
    base = fused.weight_grad_blocking(dtype)["KC"]
    assert fused.weight_grad_blocking(dtype, cols=None)["KC"] == base
    deep = fused.G_IN_PLACE_MIN_BLOCKS * 2 * base
    assert fused.weight_grad_blocking(dtype, cols=deep)["KC"] == 2 * base
    assert fused.weight_grad_blocking(dtype, cols=deep - 1)["KC"] == base
    # (deep columns are 4 KiB rows, which the aliasing rule packs)
    assert fused.weight_grad_reads_grad_in_place(deep + 8, 8 * deep, 2 * base, dtype)
    stem = fastconv.plan_conv2d((8, 3, 224, 224), (64, 3, 7, 7), dtype, stride=2, padding=3,
                                kind="weight_grad", method="fused")
    small = fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 3, 3), dtype, padding=1,
                                 kind="weight_grad", method="fused")
    assert (stem.blocking.kc, small.blocking.kc) == (2 * base, base)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocking_and_buffer_sizes(isa, dtype):
    blk = fused.blocking(dtype, isa)
    assert set(blk) == {"MR", "NR", "KC", "NC", "MC"}
    assert all(isinstance(v, int) and v >= 1 for v in blk.values())
    mr, nr = blk["MR"], blk["NR"]
    assert blk["NC"] % nr == 0 and blk["MC"] % mr == 0
    slack = 64 // np.dtype(dtype).itemsize
    K, rows, groups, kc, nc = 70, 300, 2, 128, 100
    packed, per_thread = fused.buffer_sizes(K, rows, groups, kc, nc, dtype, isa)
    assert packed == groups * (-(-(K // groups) // mr) * mr) * rows + slack
    assert per_thread == min(kc, rows) * (-(-nc // nr) * nr) + slack
    with pytest.raises(ValueError):
        fused.buffer_sizes(70, 300, 3, kc, nc, dtype, isa)  # groups must divide K
    with pytest.raises(TypeError):
        fused.blocking(np.int32, isa)


def test_row_table_is_a_counted_buffer():
    # the fused plan counts the index map's row table in its workspace and
    # hands it to the kernel, which refuses one too small
    import fastconv
    from fastconv import _lowerings
    plan = fastconv.plan_conv2d((2, 64, 14, 14), (32, 64, 3, 3), method="fused", padding=1)
    table = _lowerings.buffer_bytes({"table": (_lowerings.row_table_shape(plan.geometry),
                                               np.intp)})
    fields = _lowerings.row_table_shape(plan.geometry)[1]
    assert table == 64 * 9 * fields * np.dtype(np.intp).itemsize
    entry = next(e for e in _lowerings.TABLE["forward"] if e.name == "fused")
    without = {k: v for k, v in entry.buffers(plan.geometry, np.float32, plan.blocking,
                                              plan.kernel_threads).items() if k != "table"}
    assert plan.workspace_bytes == _lowerings.buffer_bytes(without) + table
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2 * 9))
    packed, per_thread = fused.buffer_sizes(3, 18, 1, 8, 8, np.float64)
    with pytest.raises(ValueError, match="row_table"):
        fused.conv2d_fused(x, w, np.zeros(0), np.empty((1, 3, 9)), np.empty(packed),
                           np.empty((1, per_thread)), 3, 3, 3, 1, 1, 0, 0, 1, 1, 1, False,
                           8, 8, 8, None, 1, row_table=np.empty((17, fields), np.intp))


def test_rejects_small_buffers_and_bad_arguments():
    x = np.ones((1, 2, 5, 5))
    w = np.ones((3, 18))
    out = np.zeros((1, 3, 9))
    packed, per_thread = fused.buffer_sizes(3, 18, 1, 8, 8, np.float64, "generic")
    args = (3, 3, 3, 1, 1, 0, 0, 1, 1, 1, False, 8, 8, 8, "generic")
    fused.conv2d_fused(x, w, np.zeros(0), out, np.empty(packed), np.empty((2, per_thread)),
                       *args, 2)
    assert_close(out.reshape(1, 3, 3, 3), conv2d_reference(x, w.reshape(3, 2, 3, 3)), np.float64)
    with pytest.raises(ValueError, match="packed_weight"):
        fused.conv2d_fused(x, w, np.zeros(0), out, np.empty(packed - 1),
                           np.empty((2, per_thread)), *args, 2)
    with pytest.raises(ValueError, match="workspace"):
        fused.conv2d_fused(x, w, np.zeros(0), out, np.empty(packed),
                           np.empty((2, per_thread - 1)), *args, 2)
    with pytest.raises(ValueError, match="workspace"):
        fused.conv2d_fused(x, w, np.zeros(0), out, np.empty(packed),
                           np.empty((1, per_thread)), *args, 2)
    with pytest.raises(ValueError, match="weight"):
        fused.conv2d_fused(x, np.ones((3, 17)), np.zeros(0), out, np.empty(packed),
                           np.empty((2, per_thread)), *args, 2)
    with pytest.raises(ValueError, match="bias"):
        fused.conv2d_fused(x, w, np.zeros(2), out, np.empty(packed),
                           np.empty((2, per_thread)), *args, 2)
    with pytest.raises(ValueError):
        fused.conv2d_fused(x, w, np.zeros(0), out, np.empty(packed), np.empty((2, per_thread)),
                           *args[:-4], 0, 8, 8, "generic", 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_and_bias_only(dtype):
    isa = ISAS[0]
    x = np.ones((0, 2, 5, 5), dtype)
    out = run_fused(x, np.ones((3, 2, 3, 3), dtype), None, isa=isa)
    assert out.shape == (0, 3, 3, 3)
    # zero input channels: the output is the bias
    x = np.ones((2, 0, 4, 4), dtype)
    b = np.arange(3, dtype=dtype)
    out = run_fused(x, np.ones((3, 0, 3, 3), dtype), b, isa=isa)
    np.testing.assert_array_equal(out, np.broadcast_to(b[None, :, None, None], out.shape))


# ---------------------------------------------------------------- weight gradient

def run_fused_weight_grad(x, weight_shape, grad, *, stride=(1, 1), padding=((0, 0), (0, 0)),
                          dilation=(1, 1), groups=1, flip=False, isa="generic", threads=1,
                          kc=None, nc=None, mc=None, initial=None, g_in_place=None):
    """conv2d_fused_weight_grad with a workspace sized by
    weight_grad_buffer_sizes; initial: accumulate onto it (else overwrite a
    NaN-filled grad_w); g_in_place: read the output gradient in place or
    pack it (None: the kernel's rule)."""
    dtype = x.dtype
    N, K, Ho, Wo = grad.shape
    _, Cg, R, S = weight_shape
    rows = Cg * R * S
    blk = fused.weight_grad_blocking(dtype, isa)
    kc, nc, mc = kc or blk["KC"], nc or blk["NC"], mc or blk["MC"]
    per_thread = fused.weight_grad_buffer_sizes(K, rows, groups, kc, nc, mc, dtype, isa)
    workspace = np.full((threads, per_thread), np.nan, dtype)
    grad_w = np.full((K, rows), np.nan, dtype) if initial is None else initial.reshape(K, rows).copy()
    fused.conv2d_fused_weight_grad(x, np.ascontiguousarray(grad.reshape(N, K, Ho * Wo)), grad_w,
                                   workspace, R, S, Wo, stride[0], stride[1], padding[0][0],
                                   padding[1][0], dilation[0], dilation[1], groups, flip,
                                   kc, nc, mc, isa, threads, initial is not None,
                                   g_in_place=g_in_place)
    return grad_w.reshape(weight_shape)


@pytest.mark.parametrize("g_in_place", [True, False])
@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fused_cases())
def test_fused_weight_grad_matches_reference(isa, g_in_place, case):
    # g_in_place: the output gradient's rows read in place (depth blocks end
    # with each image, a partial panel of filters packed) or packed
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = make_view(rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype),
                  case["view"])
    wshape = (case["K"], case["C"] // case["groups"], case["R"], case["S"])
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])
    Ho = out_size(case["H"], case["padding"][0], case["dilation"][0], case["R"], case["stride"][0])
    Wo = out_size(case["W"], case["padding"][1], case["dilation"][1], case["S"], case["stride"][1])
    grad = rng.standard_normal((case["N"], case["K"], Ho, Wo)).astype(dtype)
    initial = rng.standard_normal(wshape).astype(dtype) if case["bias"] else None
    out = run_fused_weight_grad(x, wshape, grad, isa=isa, threads=case["threads"], kc=case["kc"],
                                nc=case["nc"], mc=case["mc"], initial=initial,
                                g_in_place=g_in_place, **conv)
    expected = conv2d_weight_grad_reference(x, wshape, grad, **conv)
    if initial is not None:
        expected = expected + initial
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_weight_grad_same_bits_for_any_threads(isa, dtype):
    # work is split by rows and filters of grad_w, never by images: each
    # element is one sum over the whole depth, in one order
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 12, 9, 8)).astype(dtype)
    grad = rng.standard_normal((3, 21, 9, 8)).astype(dtype)
    runs = [run_fused_weight_grad(x, (21, 12, 3, 3), grad, padding=((1, 1), (1, 1)), isa=isa,
                                  threads=t, kc=50, nc=nc, mc=mc)
            for t, nc, mc in [(1, None, None), (2, None, None), (2, 1, 1), (1, 7, 3), (2, 100, 9)]]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])
    assert_close(runs[0], conv2d_weight_grad_reference(x, (21, 12, 3, 3), grad,
                                                       padding=((1, 1), (1, 1))), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("W", [16, 17, 33, 50])
def test_fused_weight_grad_wide_output_rows(isa, dtype, W):
    # output rows of 14 to 52 columns: the transposing pack's register
    # blocks (16 or 8 columns) full, partial and several per row, each
    # table row with its own padding; 45 or 20 rows: partial row blocks
    # (stride 2 along W: the even-element loads; 2W columns wide)
    rng = np.random.default_rng(W)
    for C, R, S, padding, dilation, stride in [(5, 3, 3, ((1, 1), (1, 1)), (1, 1), (1, 1)),
                                               (4, 1, 5, ((0, 0), (3, 1)), (1, 2), (1, 1)),
                                               (3, 3, 7, ((1, 2), (3, 2)), (1, 1), (2, 2))]:
        Wx = W * stride[1]
        x = rng.standard_normal((2, C, 6, Wx)).astype(dtype)
        conv = dict(padding=padding, dilation=dilation, stride=stride)
        Ho = out_size(6, padding[0], dilation[0], R, stride[0])
        Wo = out_size(Wx, padding[1], dilation[1], S, stride[1])
        grad = rng.standard_normal((2, 11, Ho, Wo)).astype(dtype)
        out = run_fused_weight_grad(x, (11, C, R, S), grad, isa=isa, **conv)
        assert_close(out, conv2d_weight_grad_reference(x, (11, C, R, S), grad, **conv), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dbl", [False, True])
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 3000), Kg=st.integers(1, 600), groups=st.integers(1, 4),
       nc=st.integers(1, 1500), mc=st.integers(1, 600), threads=st.integers(1, 5))
def test_weight_grad_split_covers_rows_evenly_within_the_workspace(isa, dbl, rows, Kg, groups,
                                                                  nc, mc, threads):
    blk = fused.blocking(np.float64 if dbl else np.float32, isa)
    mr, nr = blk["MR"], blk["NR"]
    granule = fused._narrow_lanes(fused.isa_code(isa), dbl) or nr
    width, n_rb, height, n_mb = fused.weight_grad_split(rows, Kg, groups, nc, mc, isa, dbl,
                                                        threads)
    # blocks only shrink from the nominal ones the workspace was sized for
    assert width <= -(-min(nc, rows) // nr) * nr and width % granule == 0
    assert height <= -(-min(mc, Kg) // mr) * mr and height % mr == 0
    # every row and filter in exactly one block, none empty
    assert (n_rb - 1) * width < rows <= n_rb * width
    assert (n_mb - 1) * height < Kg <= n_mb * height
    # shared out evenly: the last block short by less than a vector per block
    assert rows - (n_rb - 1) * width > width - n_rb * granule
    # a thread per item at least, where there are rows and filters for it
    if groups * n_rb * n_mb < threads:
        assert width == granule or n_rb == -(-rows // granule)
        assert height == mr


@pytest.mark.parametrize("rows, blocks", [(1536, [768, 768]), (1200, [600, 600]),
                                          (7392, [928] * 7 + [896])])
def test_weight_grad_split_gives_two_threads_equal_items(rows, blocks):
    # TDNN / wav2vec 2.0 conv1, Inception-v3 5x5 and DeepSpeech2 conv2: NC
    # 1152 split them 1152 + 384, 1152 + 48, 6 x 1152 + 480 (one of two
    # threads idle for a third to half of the time); in whole 8-row panels
    # of the generic kernel, which every CPU runs
    width, n_rb, _, n_mb = fused.weight_grad_split(rows, 64, 1, 1152, 512, "generic", False, 2)
    assert [min(width, rows - b * width) for b in range(n_rb)] == blocks and n_mb == 1


def test_fused_weight_grad_rejects_small_workspace():
    x = np.ones((1, 2, 5, 5))
    grad = np.ones((1, 3, 9))
    grad_w = np.zeros((3, 18))
    need = fused.weight_grad_buffer_sizes(3, 18, 1, 8, 8, 8, np.float64, "generic")
    args = (3, 3, 3, 1, 1, 0, 0, 1, 1, 1, False, 8, 8, 8, "generic", 1)
    fused.conv2d_fused_weight_grad(x, grad, grad_w, np.empty((1, need)), *args)
    np.testing.assert_allclose(grad_w, 9.0)
    with pytest.raises(ValueError, match="workspace"):
        fused.conv2d_fused_weight_grad(x, grad, grad_w, np.empty((1, need - 1)), *args)


# --------------------------------------------------------------------------
# through the public functions: the table entry, every ISA, the limit

@pytest.mark.parametrize("isa", fused.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lowering_through_the_api_on_every_isa(isa, dtype):
    import fastconv
    from fastconv import _tuning
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 6, 17, 13)).astype(dtype)[:, :, ::-1]
    w = rng.standard_normal((10, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    conv = dict(stride=(2, 1), padding=((2, 1), (0, 1)), dilation=(1, 2), groups=2, flip=True)
    with _tuning.tuned(isa=isa):
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method="fused", **conv)
        assert plan.blocking.isa == isa and isa in repr(plan)
        y = fastconv.conv2d(x, w, b, method="fused", **conv)
        # a tight limit (the row table counted too): narrower and shallower
        # panels, still the same result
        tight = fastconv.conv2d(x, w, b, method="fused", memory_limit="8KiB", num_threads=2,
                                **conv)
    expected = conv2d_reference(x, w, b, stride=(2, 1), padding=((2, 1), (0, 1)),
                                dilation=(1, 2), groups=2, flip=True)
    assert_close(y, expected, dtype)
    assert_close(tight, expected, dtype)


def test_fused_is_chosen_on_deep_3x3_layers_and_isa_forced_by_environment(tmp_path):
    import subprocess
    import sys
    import fastconv
    # (3x3 stride 1 runs Winograd, whose F(4x4, 3x3) has no 5x5 form)
    plan = fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 5, 5), padding=2)
    assert plan.method == "fused", plan
    assert fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1).method == "winograd"
    assert fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 3, 3)).method != "fused"
    with pytest.raises(fastconv.WorkspaceLimitError, match="fused"):
        fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1, method="fused",
                             memory_limit=1000)
    code = ("import fastconv; print(fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 3, 3), "
            "padding=1, method='fused').blocking.isa)")
    for isa in fused.supported_isas():
        env = dict(__import__("os").environ, FASTCONV_ISA=isa)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, cwd=tmp_path, timeout=120)
        assert out.stdout.strip() == isa, out.stderr


def test_weights_read_in_place_for_few_columns():
    """The planner reads the weights in place where the batch has few columns
    to amortise packing them (no packed copy in the workspace), packs them
    otherwise; both give the same bits through the public function."""
    deep = fastconv.plan_conv2d((2, 64, 7, 7), (96, 64, 3, 3), padding=1, method="fused")
    wide = fastconv.plan_conv2d((2, 64, 56, 56), (96, 64, 3, 3), padding=1, method="fused")
    assert deep.blocking.weights_in_place and "weights in place" in repr(deep)
    assert not wide.blocking.weights_in_place
    packed_bytes = 96 * 64 * 9 * 4
    with _tuning.tuned(fused_in_place_max_cols=0):
        packed = fastconv.plan_conv2d((2, 64, 7, 7), (96, 64, 3, 3), padding=1, method="fused")
    assert not packed.blocking.weights_in_place
    assert packed.workspace_bytes - deep.workspace_bytes >= packed_bytes
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 64, 7, 7)).astype(np.float32)
    w = rng.standard_normal((92, 64, 3, 3)).astype(np.float32)   # 92: an edge panel
    b = rng.standard_normal(92).astype(np.float32)
    in_place = fastconv.conv2d(x, w, b, padding=1, method="fused")
    with _tuning.tuned(fused_in_place_max_cols=0):
        packed_out = fastconv.conv2d(x, w, b, padding=1, method="fused")
    np.testing.assert_array_equal(in_place, packed_out)
    assert_close(in_place, conv2d_reference(x, w, b, padding=((1, 1), (1, 1))), np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kc", [1, 2, 3, 7])
def test_fused_weight_grad_writes_nothing_past_its_panels(isa, kc):
    """Wide padding and shallow depth blocks put a tap's valid columns past
    the end of a column segment: the transposing pack must still write only
    inside its panels (a guard after the workspace stays untouched)."""
    rng = np.random.default_rng(kc)
    x = rng.standard_normal((2, 3, 4, 5))
    wshape = (5, 3, 3, 7)
    pads = ((2, 2), (6, 6))
    Ho, Wo = 4 + 4 - 3 + 1, 5 + 12 - 7 + 1
    grad = rng.standard_normal((2, 5, Ho, Wo))
    rows = 3 * 3 * 7
    blk = fused.weight_grad_blocking(np.float64, isa)
    need = fused.weight_grad_buffer_sizes(5, rows, 1, kc, blk["NC"], blk["MC"], np.float64, isa)
    guard = 4096
    workspace = np.full((1, need + guard), 7.0)
    grad_w = np.full((5, rows), np.nan)
    fused.conv2d_fused_weight_grad(x, np.ascontiguousarray(grad.reshape(2, 5, Ho * Wo)), grad_w,
                                   workspace[:, :need], 3, 7, Wo, 1, 1, 2, 6, 1, 1, 1, False,
                                   kc, blk["NC"], blk["MC"], isa, 1)
    assert (workspace[0, need:] == 7.0).all()
    assert_close(grad_w.reshape(wshape), conv2d_weight_grad_reference(x, wshape, grad, padding=pads),
                 np.float64)


@pytest.mark.parametrize("isa", fused.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_columns_narrows_only_the_last_panel(isa, dtype):
    blk = fused.blocking(dtype, isa)
    nr = blk["NR"]
    lanes = {"avx512": 64, "avx2": 32}.get(isa, 0) // np.dtype(dtype).itemsize
    for columns in (0, 1, nr - 1, nr, nr + 1, 392, 8 * nr + 8, 1000):
        full, rest = divmod(columns, nr)
        last = 0 if rest == 0 else (-(-rest // lanes) * lanes if lanes else nr)
        assert fused.padded_columns(columns, dtype, isa) == full * nr + last
    with pytest.raises(ValueError):
        fused.padded_columns(-1, dtype, isa)


@settings(max_examples=80, deadline=None)
@given(kg=st.integers(1, 40), cg=st.integers(1, 40), groups=st.integers(1, 3),
       taps=st.sampled_from([1, 2, 9, 25]), threads=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_adjoint_filters_transposes_each_group(kg, cg, groups, taps, threads, dtype, seed):
    # the input gradient's weights: each group's (filters x channels) swapped,
    # the taps of each pair kept in order; tiles of 16 must not drop the edges
    w = np.random.default_rng(seed).standard_normal((groups * kg, cg * taps)).astype(dtype)
    out = np.full((groups * cg, kg * taps), np.nan, dtype)
    fused.adjoint_filters(w, out, groups, taps, threads)
    want = w.reshape(groups, kg, cg, taps).transpose(0, 2, 1, 3).reshape(groups * cg, kg * taps)
    np.testing.assert_array_equal(out, want)


def test_adjoint_filters_rejects_mismatched_shapes():
    w = np.zeros((4, 6 * 9), np.float32)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        fused.adjoint_filters(w, np.zeros((6, 9), np.float32), 4, 9, 1)
    with pytest.raises(ValueError, match="do not match"):
        fused.adjoint_filters(w, np.zeros((6, 5 * 9), np.float32), 1, 9, 1)
