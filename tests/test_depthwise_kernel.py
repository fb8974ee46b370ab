"""The direct depthwise kernels (fastconv._kernels.depthwise), called directly,
against the independent NumPy reference: forward, input gradient and weight
gradient over random geometries (depthwise, and grouped with a few channels
per group), input layouts, thread counts and every instruction set this CPU
runs."""
import contextlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from fastconv._params import conv_geometry
from cases import DTYPES
from reference import (assert_close, conv2d_input_grad_reference, conv2d_reference,
                       conv2d_weight_grad_reference)

dw = pytest.importorskip("fastconv._kernels.depthwise")

ISAS = dw.available_isas()
# how x is laid out: the kernels read any strides in place
LAYOUTS = ["contiguous", "reversed_w", "reversed_h", "every_other_w", "every_other_c",
           "cropped_w", "transposed_hw", "broadcast_n", "broadcast_h", "broadcast_w"]


@contextlib.contextmanager
def isa(name):
    previous = dw.set_isa(name)
    try:
        yield
    finally:
        dw.set_isa(previous)


def expected_forward_path(name, R, stride, dilation):
    """The kernel a depthwise plane's forward pass should run (see
    fwd_path in _depthwise_impl.h) on ISA `name`, a kernel of R x R taps,
    stride and dilation (rows, columns), contiguous rows of a plane no
    wider than the zero row."""
    if name == "avx512" and stride == (2, 2) and dilation == (1, 1):
        return "tiles_s2"
    tiles = name == "avx512" or (name == "avx2" and R >= 5)
    return "tiles" if tiles and stride[1] == 1 and stride[0] == dilation[0] else "other"


def make_input(rng, shape, dtype, layout):
    """An (N, C, H, W) array with the values of a fresh standard normal draw,
    laid out as `layout` says (a view; never a copy)."""
    N, C, H, W = shape
    def draw(*s):
        return rng.standard_normal(s).astype(dtype)
    if layout == "contiguous":
        x = draw(N, C, H, W)
    elif layout == "reversed_w":
        x = draw(N, C, H, W)[..., ::-1]
    elif layout == "reversed_h":
        x = draw(N, C, H, W)[:, :, ::-1]
    elif layout == "every_other_w":
        x = draw(N, C, H, 2 * W)[..., ::2]
    elif layout == "every_other_c":
        x = draw(N, 2 * C, H, W)[:, ::2]
    elif layout == "cropped_w":   # rows further apart than their length
        x = draw(N, C, H, W + 5)[..., 2:W + 2]
    elif layout == "transposed_hw":
        x = draw(N, C, W, H).swapaxes(2, 3)
    elif layout == "broadcast_n":
        x = np.broadcast_to(draw(1, C, H, W), shape)
    elif layout == "broadcast_h":
        x = np.broadcast_to(draw(N, C, 1, W), shape)
    elif layout == "broadcast_w":
        x = np.broadcast_to(draw(N, C, H, 1), shape)
    assert x.shape == shape
    return x


@st.composite
def depthwise_cases(draw):
    # square 3x3 and 5x5 kernels often: they have fixed-size kernels
    R = draw(st.integers(1, 5))
    S = draw(st.one_of(st.just(R), st.integers(1, 5)))
    dh, dw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # pads up to 3, and now and then wider than the kernel's span
    pad = st.one_of(st.integers(0, 3), st.integers(4, 8))
    pads = ((draw(pad), draw(pad)), (draw(pad), draw(pad)))
    span_h, span_w = dh * (R - 1) + 1, dw_ * (S - 1) + 1
    H = draw(st.integers(max(1, span_h - sum(pads[0])), max(1, span_h - sum(pads[0])) + 10))
    # wide enough rows to reach the 2-vector blocks of float32 (32 columns)
    W = draw(st.integers(max(1, span_w - sum(pads[1])), 45))
    return dict(
        # C: groups. multipliers (filters per group): one plane at a time
        # (1), the fixed-size kernels' blocks of 4 and 2 planes with one left
        # over (5 = 4 + 1), and the gathered taps' blocks of 8, 2 and 1 (11).
        # cg: channels per group, 1 (depthwise) most often
        N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)),
        mult=draw(st.sampled_from([1, 1, 2, 3, 4, 5, 8, 11])),
        cg=draw(st.sampled_from([1, 1, 1, 2, 3, 5])),
        H=H, W=W, R=R, S=S, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=pads, dilation=(dh, dw_), flip=draw(st.booleans()), bias=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(LAYOUTS)),
        threads=draw(st.sampled_from([1, 2])), isa=draw(st.sampled_from(ISAS)),
        seed=draw(st.integers(0, 2**32 - 1)))


def _arrays(case):
    """x (N, C*cg, H, W), weights (C*mult, cg, R, S), bias: case["C"] groups"""
    rng = np.random.default_rng(case["seed"])
    dtype, cg, K = case["dtype"], case["cg"], case["C"] * case["mult"]
    x = make_input(rng, (case["N"], case["C"] * cg, case["H"], case["W"]), dtype,
                   case["layout"])
    w = rng.standard_normal((K, cg, case["R"], case["S"])).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if case["bias"] else None
    return x, w, b


def _conv(case):
    """case["C"]: the number of groups (the channels where cg == 1)"""
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["C"], flip=case["flip"])


def _kernel_args(x_shape, w_shape, case):
    geometry = conv_geometry(x_shape, w_shape, stride=case["stride"], padding=case["padding"],
                             dilation=case["dilation"], groups=x_shape[1] // w_shape[1])
    return geometry, geometry.kernel_args


def run_all(x, w, b, grad, case, threads):
    """(out, grad_x, grad_w) from the three kernels, outputs pre-filled with
    NaN so that anything left unwritten shows."""
    N, C = x.shape[:2]
    K, dtype = w.shape[0], x.dtype
    geometry, args = _kernel_args(x.shape, w.shape, case)
    w2 = np.ascontiguousarray(w.reshape(K, -1))
    bias = np.empty(0, dtype) if b is None else b
    out = np.full((N, K, geometry.Ho * geometry.Wo), np.nan, dtype)
    grad_x = np.full(x.shape, np.nan, dtype)
    grad_w = np.full(w2.shape, np.nan, dtype)
    g3 = np.ascontiguousarray(grad.reshape(N, K, -1))
    dw.conv2d_depthwise(x, w2, bias, out, *args, case["flip"], threads)
    dw.conv2d_depthwise_input_grad(g3, w2, grad_x, *args, case["flip"], threads)
    dw.conv2d_depthwise_weight_grad(x, g3, grad_w, *args, case["flip"], threads)
    return out.reshape(grad.shape), grad_x, grad_w.reshape(w.shape)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depthwise_cases())
def test_depthwise_matches_reference(case):
    x, w, b = _arrays(case)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = np.random.default_rng(case["seed"] + 1).standard_normal(expected.shape)
    grad = grad.astype(case["dtype"])
    with isa(case["isa"]):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, case["threads"])
    assert_close(out, expected, case["dtype"])
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)),
                 case["dtype"])
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)),
                 case["dtype"])


@settings(max_examples=60, deadline=None)
@given(depthwise_cases())
def test_same_bits_for_any_thread_count(case):
    x, w, b = _arrays(case)
    grad = np.random.default_rng(case["seed"] + 1).standard_normal(
        conv2d_reference(x, w, b, **_conv(case)).shape).astype(case["dtype"])
    with isa(case["isa"]):
        one = run_all(x, w, b, grad, case, 1)
        two = run_all(x, w, b, grad, case, 2)
        three = run_all(x, w, b, grad, case, 3)
    for a, b_, c in zip(one, two, three):
        assert np.array_equal(a, b_) and np.array_equal(a, c)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv", [
    # mobilenet's layer, scaled down in channels
    ((2, 3, 56, 56, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    # rows narrower than one vector: the 32- and 16-byte blocks
    ((2, 4, 7, 7, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    ((2, 4, 14, 14, 5, 5), dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))),
    ((1, 2, 5, 3, 1, 1), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    # downsampling
    ((2, 3, 28, 28, 3, 3), dict(stride=(2, 2), padding=((0, 1), (0, 1)), dilation=(1, 1))),
    # a kernel wider than the column intervals cached per call (32)
    ((1, 2, 3, 80, 1, 35), dict(stride=(1, 2), padding=((0, 0), (3, 5)), dilation=(1, 1))),
    ((1, 2, 3, 80, 2, 35), dict(stride=(1, 1), padding=((1, 0), (3, 5)), dilation=(1, 1))),
    # 7x7 with rows of one to two vectors, dilated 5x5 on a wide row
    ((1, 2, 21, 19, 7, 7), dict(stride=(1, 1), padding=((3, 3), (3, 3)), dilation=(1, 1))),
    ((1, 1, 12, 70, 5, 5), dict(stride=(2, 1), padding=((1, 4), (0, 2)), dilation=(1, 2))),
    # a first layer: one channel, no padding (paper_mnist's shape, fewer images)
    ((2, 1, 28, 28, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    # no column padding: compact rows (vectors across row ends) with a row
    # stride, dilation, rows one column past a vector, padded rows above and
    # below (done apart), and a 7x7 kernel
    ((1, 2, 30, 37, 5, 5), dict(stride=(2, 1), padding=((0, 0), (0, 0)), dilation=(2, 1))),
    ((2, 1, 9, 19, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((1, 2, 20, 40, 7, 7), dict(stride=(1, 1), padding=((3, 2), (0, 0)), dilation=(1, 1))),
    ((1, 2, 12, 40, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 2))),
])
@pytest.mark.parametrize("layout", ["contiguous", "reversed_w", "cropped_w"])
# 2 filters per channel: the forward's 2-plane blocks; 15 = 8 + 4 + 2 + 1
@pytest.mark.parametrize("multiplier", [2, 15])
def test_fixed_shapes(name, dtype, shape, conv, layout, multiplier):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=False, C=C, dtype=dtype)
    rng = np.random.default_rng(3)
    x = make_input(rng, (N, C, H, W), dtype, layout)
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    b = rng.standard_normal(multiplier * C).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# One filter per channel on the fixed-size kernels (3x3, 5x5, 7x7): blocks
# of 4, 2 and 1 output rows sharing their input rows where the stride equals
# the dilation (1 or 2), single rows where it does not, with masked edge
# blocks at both ends of rows longer than a vector (37 columns: the last
# block overlaps) and interior row counts that leave every remainder. With
# masked loads the kernels take the whole plane: the padded rows above and
# below (masked by rows), rows narrower than a vector (11 and 5 columns,
# stored masked) and padding past the kernel (rows and columns that read
# nothing at all); rows of two vectors (23 columns in float32 on AVX-512,
# 11 in float64 and on AVX2); a kernel wider than the input with rows of 16
# outputs (10 columns, padding 3 past the kernel's half). Where the tiles
# run (stride = dilation) they take these planes; unequal stride and
# dilation keep the row blocks.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 5, 7])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 2), (2, 1), (1, 2)])
@pytest.mark.parametrize("interior_rows", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("W, extra_pad, layout, flip", [
    (37, 0, "contiguous", False), (37, 0, "cropped_w", True), (11, 0, "reversed_h", False),
    (23, 0, "contiguous", True), (5, 4, "contiguous", True), (10, 3, "every_other_c", False)])
def test_fixed_size_row_blocks(name, dtype, R, stride, dilation, interior_rows, W, extra_pad,
                               layout, flip):
    span = dilation * (R - 1) + 1
    pad = (span - 1) // 2 + extra_pad
    # interior rows plus padded ones above and below
    H = interior_rows * stride + span - 1
    conv = dict(stride=(stride, 1), padding=((pad, pad), (pad, pad)), dilation=(dilation, dilation))
    case = dict(conv, flip=flip, C=3, dtype=dtype)
    rng = np.random.default_rng(interior_rows + 10 * R)
    x = make_input(rng, (2, 3, H, W), dtype, layout)
    w = rng.standard_normal((3, 1, R, R)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# The fixed-size kernels' tiles (fwd_tiles: AVX-512, and AVX2's 5x5 and
# 7x7): tiles of 14, 7 and 4 rows of one vector and of 7, 4 and 2 rows of
# two (8/4/2 and 4/2/1 on AVX2), the last tile overlapping the one before
# where Ho is not a multiple of its rows, or running past Ho (zero rows)
# where Ho is smaller; rows narrower than a vector, of exactly one, and of
# an odd count of vectors (the last pair overlaps); stride = dilation 1 and
# 2; symmetric and one-sided padding (a whole side of zero rows); input rows
# wider than the zero row (the row blocks instead: 2100 columns).
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 5, 7])
@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("H", [1, 4, 13, 15, 17, 30])
@pytest.mark.parametrize("W, one_sided", [(4, False), (5, False), (16, True), (37, False),
                                          (80, True)])
def test_fixed_size_tiles(name, dtype, R, step, H, W, one_sided):
    half = step * (R - 1) // 2
    pad = ((0, 2 * half), (2 * half, 0)) if one_sided else ((half, half), (half, half))
    conv = dict(stride=(step, 1), padding=pad, dilation=(step, step))
    case = dict(conv, flip=one_sided, C=3, dtype=dtype)
    rng = np.random.default_rng(H + 100 * W + R)
    x = make_input(rng, (2, 3, H, W), dtype, "contiguous")
    w = rng.standard_normal((3, 1, R, R)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
        path = dw.forward_path(H, W, *expected.shape[2:], R, R, step, 1, pad[0][0],
                               pad[1][0], step, step, np.dtype(dtype).itemsize)
    assert path == expected_forward_path(name, R, (step, 1), (step, step))
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Stride 2 in both directions, dilation 1 (fwd_tiles_s2 on AVX-512: tiles
# of 8, 7, 4 and 2 rows, one vector of columns, its input vector the even
# lanes of two masked loads): heights leaving every tile size and a last
# tile that overlaps or runs past the plane; rows narrower than a vector, of
# exactly one, of several with a partial last; symmetric, one-sided and no
# padding; flip.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 5, 7])
@pytest.mark.parametrize("H", [1, 5, 14, 17, 30, 57])
@pytest.mark.parametrize("W, pad", [(9, "same"), (32, "one_sided"), (57, "same"), (40, "none")])
def test_fixed_size_stride2_tiles(name, dtype, R, H, W, pad):
    half = (R - 1) // 2
    padding = {"same": ((half, half), (half, half)), "one_sided": ((0, R - 1), (R - 1, 0)),
               "none": ((0, 0), (0, 0))}[pad]
    if pad == "none" and min(H, W) < R:
        pytest.skip("no output without padding")
    conv = dict(stride=(2, 2), padding=padding, dilation=(1, 1))
    case = dict(conv, flip=pad == "one_sided", C=3, dtype=dtype)
    rng = np.random.default_rng(H + 100 * W + R)
    x = make_input(rng, (2, 3, H, W), dtype, "contiguous")
    w = rng.standard_normal((3, 1, R, R)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
        path = dw.forward_path(H, W, *expected.shape[2:], R, R, 2, 2, padding[0][0],
                               padding[1][0], 1, 1, np.dtype(dtype).itemsize)
    assert path == expected_forward_path(name, R, (2, 2), (1, 1))
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Column padding wider than a vector: blocks between the row's first and
# last that meet the padding (masked, their masks made per block), in the
# forward tiles and the weight gradient's row blocks of 4, 2 and 1.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 5])
@pytest.mark.parametrize("H", [6, 7])
def test_fixed_size_wide_column_padding(name, dtype, R, H):
    conv = dict(stride=(1, 1), padding=((1, R - 2), (21, 19)), dilation=(1, 1))
    case = dict(conv, flip=False, C=2, dtype=dtype)
    rng = np.random.default_rng(H * R)
    x = make_input(rng, (2, 2, H, 37), dtype, "contiguous")
    w = rng.standard_normal((2, 1, R, R)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Rows at the zero row's width (8192 bytes: the tiles and whole-row weight
# gradients read it for padded rows) and one past it (the row blocks), and
# far past it, stride 1 and 2.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 7])
@pytest.mark.parametrize("past", [0, 1, 100])
@pytest.mark.parametrize("stride", [1, 2])
def test_fixed_size_wider_than_zero_row(name, dtype, R, past, stride):
    W = 8192 // np.dtype(dtype).itemsize + past
    conv = dict(stride=(stride, stride), padding=((R // 2, R // 2), (R // 2, R // 2)),
                dilation=(1, 1))
    case = dict(conv, flip=False, C=2, dtype=dtype)
    rng = np.random.default_rng(R + past)
    x = make_input(rng, (1, 2, 9, W), dtype, "contiguous")
    w = rng.standard_normal((2, 1, R, R)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
        path = dw.forward_path(9, W, *expected.shape[2:], R, R, stride, stride, R // 2,
                               R // 2, 1, 1, np.dtype(dtype).itemsize)
    assert path == (expected_forward_path(name, R, (stride, stride), (1, 1)) if past == 0
                    else "other")
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Grouped convolutions with a few channels per group (cg): the fixed-size
# kernels' blocks of 4 and 2 planes summed over the group's cg input planes
# (forward: filters; input gradient at stride 1: input channels, from the
# group's gradient planes), with masked border columns (rows of at least a
# vector), columns [A, B) only (the portable build), compact rows (no
# column padding); strides, kernels without a fixed size, narrow rows and 17
# channels per group (past DW_GROUP_MAX_PLANES) take blocks of 8, 4, 2 and 1
# filters over padded bands (fwd_band_multi).
# Filters per group: 1 (plane by plane), 4, 5 (4 + 1), 6 (4 + 2), 9 (a block
# of 8 and one).
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv", [
    # ResNeXt's 3x3 (4 channels per group), scaled down
    ((2, 3, 20, 37, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    # no column padding (compact rows), dilated rows
    ((1, 2, 14, 40, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(2, 1))),
    # 5x5 and 7x7, rows narrower than a vector of float32
    ((1, 2, 12, 12, 5, 5), dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))),
    ((1, 2, 21, 19, 7, 7), dict(stride=(1, 1), padding=((3, 2), (3, 3)), dilation=(1, 1))),
    # strides (the input gradient scatters), a kernel without fixed size
    ((2, 2, 17, 33, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    ((1, 2, 15, 41, 5, 5), dict(stride=(2, 2), padding=((2, 2), (2, 2)), dilation=(1, 1))),
    ((1, 2, 16, 71, 7, 7), dict(stride=(2, 2), padding=((3, 3), (3, 3)), dilation=(1, 1))),
    ((1, 2, 9, 30, 2, 3), dict(stride=(1, 1), padding=((1, 0), (1, 1)), dilation=(1, 1))),
])
@pytest.mark.parametrize("layout", ["contiguous", "reversed_w", "cropped_w", "every_other_c"])
@pytest.mark.parametrize("cg, filters", [(2, 4), (3, 5), (4, 6), (5, 9), (16, 4), (17, 2),
                                         (4, 1)])
def test_grouped_shapes(name, dtype, shape, conv, layout, cg, filters):
    N, groups, H, W, R, S = shape
    case = dict(conv, flip=filters == 6, C=groups, dtype=dtype)
    rng = np.random.default_rng(7)
    x = make_input(rng, (N, groups * cg, H, W), dtype, layout)
    w = rng.standard_normal((filters * groups, cg, R, S)).astype(dtype)
    b = rng.standard_normal(filters * groups).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# With at least BAND_WHOLE_GROUP_ITEMS (image, group) items over padded
# bands, an item takes all of a group's filters (here 11: blocks of 8, 2
# and 1 in one call), not blocks of FORWARD_BLOCK_MAX.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, conv", [
    ((3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))),  # column stride
    ((3, 2), dict(stride=(1, 1), padding=((1, 1), (1, 0)), dilation=(1, 1))),  # no fixed size
])
def test_grouped_bands_take_whole_groups(name, dtype, kernel, conv):
    groups, cg, filters = 32, 2, 11
    N = -(-dw.BAND_WHOLE_GROUP_ITEMS // groups)
    case = dict(conv, flip=False, C=groups, dtype=dtype)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, groups * cg, 9, 7)).astype(dtype)
    w = rng.standard_normal((filters * groups, cg) + kernel).astype(dtype)
    b = rng.standard_normal(filters * groups).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    with isa(name):
        Ho, Wo = expected.shape[2:]
        assert dw.grouped_path(9, 7, Ho, *kernel, Wo, *conv["stride"], conv["padding"][0][0],
                               conv["padding"][1][0], 1, 1, False, cg,
                               np.dtype(dtype).itemsize) == "bands"
        assert dw.forward_items(N, groups * cg, filters * groups, 0, groups, True) == N * groups
        out = run_all(x, w, b, rng.standard_normal(expected.shape).astype(dtype), case, 2)[0]
    assert_close(out, expected, dtype)


def test_grouped_path_says_where_each_kernel_runs():
    """The planner's view (grouped_path) against the kernels' rules: blocks
    of planes by the fixed-size kernels for 3x3, 5x5, 7x7 at column stride
    1 with interior rows and rows of a vector (or an interior of one, where
    masked loads do not exist); blocks of filters over padded bands for the
    other grouped forward passes whose rows fit the band buffer, and the
    stride-1 input gradient; plane by plane for the strided input gradient,
    one input plane per output plane (M = 1) or rows too wide for a band."""
    for name in ISAS:
        with isa(name):
            lanes = {"generic": 4, "avx2": 8, "avx512": 16}[name]
            # H, W, Ho, R, S, Wo, sh, sw, pt, pl, dh, dw
            wide = (20, lanes + 2, 20, 3, 3, lanes + 2, 1, 1, 1, 1, 1, 1)
            assert dw.grouped_path(*wide, False, 4, 4) == "blocks"
            assert dw.grouped_path(*wide, True, 4, 4) == "blocks"
            assert dw.grouped_path(*wide, False, dw.GROUP_MAX_CHANNELS + 1, 4) == "bands"
            assert dw.grouped_path(20, 2 * lanes, 20, 3, 4, 2 * lanes - 1,
                                   1, 1, 1, 1, 1, 1, False, 4, 4) == "bands"
            assert dw.grouped_path(40, 4 * lanes, 20, 3, 3, 2 * lanes,
                                   2, 2, 1, 1, 1, 1, True, 4, 4) == "planes"
            strided = (40, 4 * lanes, 40, 3, 3, 2 * lanes, 1, 2, 1, 1, 1, 1)
            assert dw.grouped_path(*strided, False, 4, 8) == "bands"
            assert dw.grouped_path(*strided, False, 1, 8) == "planes"
            # a row of 6000 columns in 16 planes does not fit the 32 KiB buffer
            assert dw.grouped_path(3, 6000, 3, 3, 3, 6000, 1, 2, 1, 1, 1, 1,
                                   False, 16, 4) == "planes"
            # rows narrower than a vector: only the 16-byte portable vectors
            # (4 floats) still make blocks of 6 columns
            narrow = (8, 6, 8, 3, 3, 6, 1, 1, 1, 1, 1, 1)
            assert dw.grouped_path(*narrow, False, 4, 4) == ("blocks" if name == "generic"
                                                            else "bands")


# Padded bands (fwd_band): a column stride, a column step (reversed_w,
# cropped_w layouts) or border columns outweighing the interior take the
# buffered rows; a band too large for the buffer (a 6000-column row with a
# column stride) or a kernel wider than it takes (130 taps) falls back to
# fwd_rows. The input gradients of stride-1 layers run the same forward
# kernel over the gradient with the kernel's full padding (border-heavy),
# with M = multiplier planes at once.
# The weight gradient where a tap reads x at a stride (a column stride, or
# rows not contiguous): each input row split into its phases (wgrad_phased),
# a vector dot product per tap; an odd row with stride 2 (the last element
# in the first phase), stride 3 (the general split), reversed or every
# other column at stride 1, dilated columns; and what it does not take, run
# by the scalar loop: more than 64 taps (5 x 13), a row longer than its
# buffer (9000 columns at stride 2).
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv, layout", [
    ((2, 3, 31, 31, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1)),
     "contiguous"),
    ((2, 2, 23, 41, 5, 5), dict(stride=(2, 3), padding=((2, 2), (2, 1)), dilation=(1, 2)),
     "contiguous"),
    ((1, 2, 12, 50, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)),
     "reversed_w"),
    ((1, 2, 12, 50, 3, 5), dict(stride=(2, 2), padding=((0, 0), (4, 0)), dilation=(1, 1)),
     "every_other_w"),
    ((1, 2, 9, 40, 5, 13), dict(stride=(2, 2), padding=((2, 2), (6, 6)), dilation=(1, 1)),
     "contiguous"),
    ((1, 1, 3, 9000, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1)),
     "contiguous"),
])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_strided_weight_gradient(name, dtype, shape, conv, layout, multiplier):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=multiplier == 2, C=C, dtype=dtype)
    rng = np.random.default_rng(11)
    x = make_input(rng, (N, C, H, W), dtype, layout)
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    grad = rng.standard_normal(conv2d_reference(x, w, None, **_conv(case)).shape).astype(dtype)
    geometry, args = _kernel_args(x.shape, w.shape, case)
    grad_w = np.full((w.shape[0], R * S), np.nan, dtype)
    with isa(name):
        dw.conv2d_depthwise_weight_grad(x, np.ascontiguousarray(grad.reshape(N, w.shape[0], -1)),
                                        grad_w, *args, case["flip"], 2)
    assert_close(grad_w.reshape(w.shape),
                 conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv", [
    # EfficientNet's 5x5/2 depthwise, scaled down in channels; 3x3/2 and
    # 7x7/2 (column stride 2: taps as shifts of a phase's vectors) on odd
    # rows of several vectors of output columns (2, 3 and 5 of float32 with
    # AVX-512)
    ((2, 3, 30, 30, 5, 5), dict(stride=(2, 2), padding=((2, 2), (2, 2)), dilation=(1, 1))),
    ((1, 2, 9, 67, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    ((1, 2, 15, 163, 7, 7), dict(stride=(2, 2), padding=((3, 3), (3, 2)), dilation=(1, 1))),
    # 1-D layers of speech models: 33 taps with half padding, 31 without
    ((2, 2, 1, 90, 1, 33), dict(stride=(1, 1), padding=((0, 0), (16, 16)), dilation=(1, 1))),
    ((2, 2, 1, 70, 1, 31), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    # MobileFaceNet's global depthwise 7x7: one output per plane
    ((2, 4, 7, 7, 7, 7), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    # a tall plane: several bands; dilated columns with a stride of 3
    ((1, 2, 300, 40, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    ((1, 2, 20, 61, 3, 4), dict(stride=(1, 3), padding=((1, 0), (2, 5)), dilation=(2, 2))),
    # what the buffer does not take: a 6000-column row, 130 taps
    ((1, 1, 5, 6000, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))),
    ((1, 2, 2, 400, 1, 130), dict(stride=(1, 2), padding=((0, 0), (3, 3)), dilation=(1, 1))),
])
@pytest.mark.parametrize("layout", ["contiguous", "reversed_w", "cropped_w"])
@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_padded_bands(name, dtype, shape, conv, layout, multiplier, flip):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=flip, C=C, dtype=dtype)
    rng = np.random.default_rng(5)
    x = make_input(rng, (N, C, H, W), dtype, layout)
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    b = rng.standard_normal(multiplier * C).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Kernel rows longer than a vector (S > VL, unit column stride and
# dilation): blocks of four vectors slide a window of loaded vectors over
# the taps, forward (in place, or through the padded band) and in the input
# gradient's band (taps reversed). Rows of 200 columns hold several such
# blocks and the narrower ones after them on every ISA and dtype; 9 and 17
# taps sit just above a vector of AVX2 and AVX-512 float32.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H, R, S", [(1, 1, 33), (1, 1, 17), (1, 1, 9), (3, 2, 21)])
@pytest.mark.parametrize("pad", ["valid", "half", "full"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_long_kernel_rows(name, dtype, H, R, S, pad, flip, multiplier):
    pw = {"valid": 0, "half": S // 2, "full": S - 1}[pad]
    case = dict(stride=(1, 1), padding=((0, 0), (pw, pw)), dilation=(1, 1), flip=flip, C=3,
                dtype=dtype)
    rng = np.random.default_rng(S)
    x = make_input(rng, (2, 3, H, 200), dtype, "contiguous")
    w = rng.standard_normal((3 * multiplier, 1, R, S)).astype(dtype)
    b = rng.standard_normal(3 * multiplier).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# 1x1 input planes: each output is the bias plus the input times the one tap
# that reaches it. Forward passes on 1x1 inputs with padding (strides and
# dilations find the tap by division), and the input gradient of global
# layers (MobileFaceNet's 7x7 GDC), a forward pass on the 1x1 gradient.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv", [
    ((2, 3, 7, 7, 7, 7), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((2, 3, 5, 3, 5, 3), dict(stride=(2, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((2, 3, 1, 1, 3, 3), dict(stride=(1, 1), padding=((2, 1), (2, 0)), dilation=(1, 1))),
    ((2, 3, 1, 1, 3, 3), dict(stride=(2, 3), padding=((2, 2), (2, 3)), dilation=(1, 1))),
    ((2, 3, 1, 1, 3, 2), dict(stride=(1, 2), padding=((4, 3), (2, 2)), dilation=(2, 2))),
])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("multiplier", [1, 3])
def test_point_planes(name, dtype, shape, conv, flip, multiplier):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=flip, C=C, dtype=dtype)
    rng = np.random.default_rng(11)
    x = make_input(rng, (N, C, H, W), dtype, "contiguous")
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    b = rng.standard_normal(multiplier * C).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# Narrow planes. A kernel covering the whole (contiguous) plane, one output
# (global depthwise: 1-D over 33 taps, 5 x 20 = 100 elements: full vectors,
# pairs of them and a masked tail, a single element) is one dot product a
# plane; output rows narrower than the narrowest vector take vector columns
# (a masked product per kernel row, 37 taps: full vectors then the tail),
# border columns of a padded narrow plane too. Reversed or cropped rows,
# flipped kernels and the input gradient's several planes take the scalar
# columns.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv", [
    ((2, 3, 1, 33, 1, 33), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((1, 2, 5, 20, 5, 20), dict(stride=(2, 3), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((1, 2, 1, 1, 1, 1), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((2, 3, 7, 9, 7, 7), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))),
    ((1, 2, 6, 39, 3, 37), dict(stride=(1, 1), padding=((1, 0), (0, 0)), dilation=(1, 1))),
    ((1, 2, 4, 4, 3, 3), dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))),
])
@pytest.mark.parametrize("layout", ["contiguous", "reversed_w", "cropped_w"])
@pytest.mark.parametrize("multiplier, flip", [(1, False), (2, False), (1, True)])
def test_narrow_planes(name, dtype, shape, conv, layout, multiplier, flip):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=flip, C=C, dtype=dtype)
    rng = np.random.default_rng(13)
    x = make_input(rng, (N, C, H, W), dtype, layout)
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    b = rng.standard_normal(multiplier * C).astype(dtype)
    expected = conv2d_reference(x, w, b, **_conv(case))
    grad = rng.standard_normal(expected.shape).astype(dtype)
    with isa(name):
        out, grad_x, grad_w = run_all(x, w, b, grad, case, 2)
    assert_close(out, expected, dtype)
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), dtype)
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), dtype)


# A channel multiplier of at least PANEL_MIN_MULT (of 2 where the fixed-size
# kernels do not run) runs over gathered taps in chunks of positions
# (fwd_panels): a copy of the rows per kernel column where the row stride is
# 1, a copy of every tap's run otherwise. Planes of several chunks, a last
# chunk shorter than a vector (it takes positions from the one before),
# padding wider than the kernel, and what stays with the other kernels: a
# kernel of more taps than the gather holds, a small multiplier on 3x3.
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, conv, multiplier, min_chunks", [
    # columns, one chunk (paper_mnist), then several; 11 = a block of 8, 2, 1
    ((2, 1, 28, 28, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)), 11, 1),
    ((1, 2, 66, 66, 3, 3), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)), 11, 2),
    ((1, 1, 40, 50, 5, 3), dict(stride=(1, 2), padding=((4, 1), (0, 6)), dilation=(2, 1)), 11, 1),
    # taps, with the last chunk shorter than a vector of float32 and float64
    ((1, 1, 7, 303, 3, 3), dict(stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1)), 11, 2),
    ((1, 2, 40, 41, 3, 4), dict(stride=(3, 1), padding=((2, 5), (1, 0)), dilation=(1, 2)), 11, 1),
    # small multipliers where the fixed-size kernels do not run: a column
    # stride, a 3x4 kernel
    ((2, 3, 28, 29, 3, 3), dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1)), 2, 1),
    ((1, 2, 20, 33, 3, 4), dict(stride=(1, 1), padding=((1, 2), (0, 0)), dilation=(1, 1)), 5, 1),
    # 3x3 with column padding and a multiplier of 4
    ((1, 2, 20, 24, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)), 4, 1),
    # left padding wider than the kernel, per-tap gather: a row's run inside
    # the input starts past the end of a chunk (the gather once wrote zeros
    # past its buffer there)
    ((1, 1, 60, 12, 2, 2), dict(stride=(2, 1), padding=((20, 20), (20, 20)), dilation=(1, 1)), 3, 1),
    ((1, 1, 80, 29, 4, 1), dict(stride=(2, 1), padding=((2, 2), (2, 2)), dilation=(1, 1)), 2, 1),
    # 11 x 12 taps: more than the gather holds; 3x3 without column padding
    # and a multiplier of 4, with padding and 2
    ((1, 1, 20, 24, 11, 12), dict(stride=(1, 1), padding=((5, 5), (0, 0)), dilation=(1, 1)), 11, 0),
    ((1, 2, 20, 24, 3, 3), dict(stride=(1, 1), padding=((1, 1), (0, 0)), dilation=(1, 1)), 4, 0),
    ((1, 2, 20, 24, 3, 3), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)), 2, 0),
])
@pytest.mark.parametrize("layout", ["contiguous", "reversed_h", "every_other_w"])
@pytest.mark.parametrize("flip", [False, True])
def test_gathered_taps(name, dtype, shape, conv, multiplier, min_chunks, layout, flip):
    N, C, H, W, R, S = shape
    case = dict(conv, flip=flip, C=C, dtype=dtype)
    rng = np.random.default_rng(7)
    x = make_input(rng, (N, C, H, W), dtype, layout)
    w = rng.standard_normal((multiplier * C, 1, R, S)).astype(dtype)
    b = rng.standard_normal(multiplier * C).astype(dtype)
    geometry, args = _kernel_args(x.shape, w.shape, case)
    with isa(name):
        chunks = dw.forward_panel_chunks(H, W, geometry.Ho, *args, multiplier,
                                         np.dtype(dtype).itemsize)
        # (every_other_w: columns not contiguous, never the fixed-size
        # kernels, so the small multipliers take the panels there too)
        if layout != "every_other_w":
            assert (chunks >= min_chunks) if min_chunks else chunks == 0
        out = np.full((N, multiplier * C, geometry.Ho * geometry.Wo), np.nan, dtype)
        dw.conv2d_depthwise(x, np.ascontiguousarray(w.reshape(len(w), -1)), b, out, *args,
                            flip, 2)
    expected = conv2d_reference(x, w, b, **_conv(case))
    assert_close(out.reshape(expected.shape), expected, dtype)


def test_gathered_taps_with_wide_left_padding_do_not_crash(tmp_path):
    """The review's reproducer, through the public API in a child: padding
    wider than a 2x2 kernel with a row stride made the gather write zeros
    past its stack buffer (a crash, or a silent overflow elsewhere)."""
    child = textwrap.dedent("""
        import numpy as np, fastconv
        from fastconv._kernels import depthwise as dw
        x = np.random.default_rng(0).standard_normal((60, 12))
        xp = np.pad(x, 20)
        # 2x2 ones at stride (2, 1): the sum of the window, zeros outside
        ref = sum(xp[r:r + 2 * 50:2, c:c + 51] for r in (0, 1) for c in (0, 1))
        for isa in dw.available_isas():
            dw.set_isa(isa)
            for dtype in (np.float32, np.float64):
                y = fastconv.conv2d(x[None, None].astype(dtype), np.ones((3, 1, 2, 2), dtype),
                                    stride=(2, 1), padding=20, method="depthwise")
                assert y.shape == (1, 3, 50, 51), y.shape
                tol = 1e-5 if dtype == np.float32 else 1e-12
                assert np.abs(y[0] - ref).max() < tol, (isa, dtype)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit {result.returncode}: {result.stderr[-2000:]}")


def test_gathered_taps_chunking():
    """The geometries above reach what they are there for, on this CPU's
    widest instruction set: several chunks, and a last one made up to a
    vector (453 positions: 448 + 5 in float32, 224 + 224 + 5 in float64)."""
    def chunks(H, W, Ho, Wo, R, S, stride, itemsize):
        return dw.forward_panel_chunks(H, W, Ho, R, S, Wo, stride, stride, 0, 0, 1, 1, 11,
                                       itemsize)
    assert chunks(66, 66, 64, 64, 3, 3, 1, 4) >= 2
    if dw.get_isa() == "avx512":
        assert chunks(7, 303, 3, 151, 3, 3, 2, 4) == 2
        assert chunks(7, 303, 3, 151, 3, 3, 2, 8) == 3
    assert chunks(30, 31, 20, 20, 11, 12, 1, 4) == 0


# A child process places inputs at the very end of a page followed by an
# inaccessible one: a read past the input's last element crashes the child
# rather than passing unseen. Input rows W apart (contiguous) and rows that
# overlap (a sliding-window view, row pitch 1), with a channel multiplier and
# no padding, the forward's compact rows where they apply, and its gathered
# taps (8 filters; a row stride: every tap's run).
_GUARDED_CHILD = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view
    from fastconv._kernels import depthwise as dw
    libc = ctypes.CDLL(None)
    page = mmap.PAGESIZE
    for isa in dw.available_isas():
        dw.set_isa(isa)
        for dtype in (np.float32, np.float64):
            for layout in ("rows", "overlapping"):
                for K in (2, 8):
                    region = mmap.mmap(-1, 2 * page)
                    start = ctypes.addressof(ctypes.c_char.from_buffer(region))
                    assert libc.mprotect(ctypes.c_void_p(start + page), page, 0) == 0
                    W, H = 28, 16   # float64 rows fill 3.5 KiB of the page
                    n = H * W if layout == "rows" else H + W - 1
                    itemsize = np.dtype(dtype).itemsize
                    buf = np.frombuffer(region, np.uint8, page)[page - n * itemsize:].view(dtype)
                    buf[:] = np.random.default_rng(K).standard_normal(n)
                    x = (buf.reshape(H, W) if layout == "rows"
                         else sliding_window_view(buf, W))[None, None]
                    w = np.random.default_rng(1).standard_normal((K, 9)).astype(dtype)
                    # row stride 2: with K = 8, the gathered taps' per-tap copies
                    for sh in (1, 2):
                        Ho, Wo = (H - 3) // sh + 1, W - 2
                        out = np.empty((1, K, Ho * Wo), dtype)
                        dw.conv2d_depthwise(x, w, np.zeros(0, dtype), out, 3, 3, Wo, sh, 1,
                                            0, 0, 1, 1, False, 1)
                        xx = np.asarray(x[0, 0], np.float64)
                        ref = np.zeros((K, Ho, Wo))
                        for k in range(K):
                            for r in range(3):
                                for c in range(3):
                                    ref[k] += w[k, 3 * r + c] * xx[r:r + sh * Ho:sh, c:c + Wo]
                        err = np.abs(out.reshape(K, Ho, Wo) - ref).max() / np.abs(ref).max()
                        assert err < (1e-5 if dtype == np.float32 else 1e-12), (isa, layout, sh, err)
    print("ok")
""")


# The masked loads of a global plane's dot product and of narrow planes'
# columns start before the run they read (the last vector ends at its end):
# planes placed right after an inaccessible page crash the child if a
# masked-off lane is read.
_GUARDED_BEFORE_CHILD = textwrap.dedent("""
    import ctypes, mmap
    import numpy as np
    from fastconv._kernels import depthwise as dw
    libc = ctypes.CDLL(None)
    page = mmap.PAGESIZE
    for isa in dw.available_isas():
        dw.set_isa(isa)
        for dtype in (np.float32, np.float64):
            for H, W, R, S in ((7, 7, 7, 7), (1, 5, 1, 5), (3, 3, 3, 1)):
                region = mmap.mmap(-1, 2 * page)
                start = ctypes.addressof(ctypes.c_char.from_buffer(region))
                assert libc.mprotect(ctypes.c_void_p(start), page, 0) == 0
                x = np.frombuffer(region, dtype, H * W, page).reshape(1, 1, H, W)
                w = np.random.default_rng(2).standard_normal((1, R * S)).astype(dtype)
                x[...] = np.random.default_rng(3).standard_normal(x.shape)
                Ho, Wo = H - R + 1, W - S + 1
                out = np.empty((1, 1, Ho * Wo), dtype)
                dw.conv2d_depthwise(x, w, np.zeros(0, dtype), out, R, S, Wo, 1, 1,
                                    0, 0, 1, 1, False, 1)
                xx, ww = np.asarray(x[0, 0], np.float64), w.reshape(R, S).astype(np.float64)
                ref = np.array([[(xx[i:i + R, j:j + S] * ww).sum() for j in range(Wo)]
                                for i in range(Ho)])
                err = np.abs(out.reshape(Ho, Wo) - ref).max() / np.abs(ref).max()
                assert err < (1e-5 if dtype == np.float32 else 1e-12), (isa, H, W, err)
    print("ok")
""")


# Column stride 2 through the padded band: each input row is split into its
# two phases by vectors of pairs (then half and quarter vectors, then single
# pairs), and each output row ends in a part of a vector, stored through a
# mask (3, 5 and 7 taps: as shifts of a phase's vectors; 4: the general
# block). Widths whose pairs leave every such tail; the input ends at an
# inaccessible page (a vector of pairs reading past its row would crash the
# child) and so does the output (a part stored as a whole vector would).
_GUARDED_PAIRS_CHILD = textwrap.dedent("""
    import ctypes, mmap
    import numpy as np
    from fastconv._kernels import depthwise as dw
    libc = ctypes.CDLL(None)
    page = mmap.PAGESIZE

    def at_page_end(count, dtype):
        region = mmap.mmap(-1, 2 * page)
        start = ctypes.addressof(ctypes.c_char.from_buffer(region))
        assert libc.mprotect(ctypes.c_void_p(start + page), page, 0) == 0
        itemsize = np.dtype(dtype).itemsize
        return region, np.frombuffer(region, np.uint8, page)[page - count * itemsize:].view(dtype)

    for isa in dw.available_isas():
        dw.set_isa(isa)
        for dtype in (np.float32, np.float64):
            for W, R, flip in ((9, 5, False), (28, 5, True), (31, 3, False), (56, 5, False),
                               (57, 7, True), (61, 4, False), (75, 3, True), (40, 4, True)):
                for pad in (1, 2):
                    H = 6
                    keep_x, flat = at_page_end(H * W, dtype)
                    flat[:] = np.random.default_rng(W).standard_normal(H * W)
                    x = flat.reshape(1, 1, H, W)
                    Ho, Wo = (H + 2 * pad - R) // 2 + 1, (W + 2 * pad - R) // 2 + 1
                    keep_out, out = at_page_end(Ho * Wo, dtype)
                    out = out.reshape(1, 1, Ho * Wo)
                    w = np.random.default_rng(1).standard_normal((1, R * R)).astype(dtype)
                    dw.conv2d_depthwise(x, w, np.zeros(0, dtype), out, R, R, Wo, 2, 2,
                                        pad, pad, 1, 1, flip, 1)
                    xp = np.pad(np.asarray(x[0, 0], np.float64), pad)
                    ww = w.reshape(R, R).astype(np.float64)
                    ww = ww[::-1, ::-1] if flip else ww
                    ref = np.array([[(xp[2 * i:2 * i + R, 2 * j:2 * j + R] * ww).sum()
                                     for j in range(Wo)] for i in range(Ho)])
                    err = np.abs(out.reshape(Ho, Wo) - ref).max() / np.abs(ref).max()
                    assert err < (1e-5 if dtype == np.float32 else 1e-12), (isa, W, R, pad, err)
    print("ok")
""")


# The tiles (forward, stride 1 and 2; the path each ISA takes asserted) and
# the weight gradient's row blocks with padding: padded rows read the
# kernel's zero row, padded columns are masked lanes. The input, then the output gradient, ends at an inaccessible
# page, then starts right after one: a masked-off lane or a padded row read
# from the array rather than the zero row crashes the child.
_GUARDED_PADDED_CHILD = textwrap.dedent("""
    import ctypes, mmap
    import numpy as np
    from fastconv._kernels import depthwise as dw
    libc = ctypes.CDLL(None)
    page = mmap.PAGESIZE
    keep = []

    def guarded(count, dtype, after):
        region = mmap.mmap(-1, 2 * page)
        keep.append(region)
        start = ctypes.addressof(ctypes.c_char.from_buffer(region))
        itemsize = np.dtype(dtype).itemsize
        if after:
            assert libc.mprotect(ctypes.c_void_p(start + page), page, 0) == 0
            return np.frombuffer(region, np.uint8, page)[page - count * itemsize:].view(dtype)
        assert libc.mprotect(ctypes.c_void_p(start), page, 0) == 0
        return np.frombuffer(region, dtype, count, page)

    def check(err, dtype, what):
        assert err < (1e-5 if dtype == np.float32 else 1e-12), what

    def expected_path(isa, R, stride):
        # (as expected_forward_path in the test module)
        if isa == "avx512":
            return "tiles" if stride == 1 else "tiles_s2"
        return "tiles" if isa == "avx2" and R >= 5 and stride == 1 else "other"

    rng = np.random.default_rng(0)
    for isa in dw.available_isas():
        dw.set_isa(isa)
        for dtype in (np.float32, np.float64):
            for H, W in ((9, 16), (9, 37), (12, 5), (4, 20)):
                for R in (3, 5, 7):
                    for stride in (1, 2):
                        # (top, bottom, left, right): symmetric, one-sided both
                        # ways, and rows past the kernel's reach (all padding)
                        for pads in ((R // 2,) * 4, (R - 1, 0, 0, R - 1), (0, R - 1, R - 1, 0),
                                     (R + 2, 0, 1, 0)):
                            pad_top, pad_bottom, pad_left, pad_right = pads
                            Ho = (H + pad_top + pad_bottom - R) // stride + 1
                            Wo = (W + pad_left + pad_right - R) // stride + 1
                            if Ho < 1 or Wo < 1:
                                continue
                            what = (isa, dtype.__name__, H, W, R, stride, pads)
                            itemsize = np.dtype(dtype).itemsize
                            path = dw.forward_path(H, W, Ho, Wo, R, R, stride, stride, pad_top,
                                                   pad_left, 1, 1, itemsize)
                            assert path == expected_path(isa, R, stride), (path,) + what
                            w = rng.standard_normal((1, R * R)).astype(dtype)
                            ww = w.reshape(R, R).astype(np.float64)
                            for guard in ("x", "grad"):
                                for after in (True, False):
                                    x = (guarded(H * W, dtype, after) if guard == "x"
                                         else np.empty(H * W, dtype)).reshape(1, 1, H, W)
                                    x[...] = rng.standard_normal(x.shape)
                                    grad = (guarded(Ho * Wo, dtype, after) if guard == "grad"
                                            else np.empty(Ho * Wo, dtype)).reshape(1, 1, Ho * Wo)
                                    grad[...] = rng.standard_normal(grad.shape)
                                    xp = np.pad(np.asarray(x[0, 0], np.float64),
                                                ((pad_top, pad_bottom), (pad_left, pad_right)))
                                    windows = np.lib.stride_tricks.sliding_window_view(
                                        xp, (R, R))[::stride, ::stride][:Ho, :Wo]
                                    out = np.empty((1, 1, Ho * Wo), dtype)
                                    dw.conv2d_depthwise(x, w, np.zeros(0, dtype), out, R, R, Wo,
                                                        stride, stride, pad_top, pad_left, 1, 1,
                                                        False, 1)
                                    ref = np.einsum("ijrs,rs->ij", windows, ww)
                                    check(np.abs(out.reshape(Ho, Wo) - ref).max()
                                          / np.abs(ref).max(), dtype, ("forward",) + what)
                                    gw = np.empty((1, R * R), dtype)
                                    dw.conv2d_depthwise_weight_grad(x, grad, gw, R, R, Wo, stride,
                                                                    stride, pad_top, pad_left,
                                                                    1, 1, False, 1)
                                    ref = np.einsum("ijrs,ij->rs", windows,
                                                    grad.reshape(Ho, Wo).astype(np.float64))
                                    check(np.abs(gw.reshape(R, R) - ref).max()
                                          / np.abs(ref).max(), dtype, ("weight_grad",) + what)
    print("ok")
""")


def test_padded_tiles_stay_inside(tmp_path):
    result = subprocess.run([sys.executable, "-c", _GUARDED_PADDED_CHILD], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit {result.returncode}: {result.stderr[-2000:]}")


def test_stride_two_rows_stay_inside(tmp_path):
    result = subprocess.run([sys.executable, "-c", _GUARDED_PAIRS_CHILD], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit {result.returncode}: {result.stderr[-2000:]}")


def test_no_read_before_the_input(tmp_path):
    result = subprocess.run([sys.executable, "-c", _GUARDED_BEFORE_CHILD], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit {result.returncode}: {result.stderr[-2000:]}")


def test_no_read_past_the_input(tmp_path):
    # cwd: the installed package, not a source tree's (its kernels unbuilt)
    result = subprocess.run([sys.executable, "-c", _GUARDED_CHILD], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit {result.returncode}: {result.stderr[-2000:]}")


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_infinity_stays_infinite(name, dtype):
    """The weight gradient's vector tails re-read columns already counted and
    mask them off; an infinity there must give inf, not NaN (0 * inf)."""
    rng = np.random.default_rng(5)
    for column in range(40):
        x = rng.uniform(1, 2, (1, 1, 6, 40)).astype(dtype)
        x[0, 0, 3, column] = np.inf
        w = rng.uniform(1, 2, (1, 1, 3, 3)).astype(dtype)
        case = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), C=1, flip=False)
        grad = rng.uniform(1, 2, (1, 1, 6, 40)).astype(dtype)
        with isa(name):
            out, grad_x, grad_w = run_all(x, w, None, grad, case, 1)
        # every tap meets the infinity unless it sits on a border column the
        # tap never reaches
        expected = conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case))
        assert not np.isnan(grad_w).any()
        assert np.array_equal(np.isinf(grad_w), np.isinf(expected))


def test_rejects_inconsistent_arrays():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((4, 9), np.float32)
    out = np.zeros((1, 4, 25), np.float32)
    none = np.empty(0, np.float32)
    args = (3, 3, 5, 1, 1, 1, 1, 1, 1, False, 1)
    with pytest.raises(ValueError, match="R\\*S"):
        dw.conv2d_depthwise(x, np.zeros((4, 8), np.float32), none, out, *args)
    with pytest.raises(ValueError, match="multiple of groups = 2"):
        dw.conv2d_depthwise(x, np.zeros((3, 9), np.float32), none, out[:, :3], *args)
    with pytest.raises(ValueError, match="C = 2 channels is not a multiple of C/groups = 3"):
        dw.conv2d_depthwise(x, np.zeros((4, 27), np.float32), none, out, *args)
    with pytest.raises(ValueError, match="out must be"):
        dw.conv2d_depthwise(x, w, none, np.zeros((1, 2, 25), np.float32), *args)
    with pytest.raises(ValueError, match="bias"):
        dw.conv2d_depthwise(x, w, np.zeros(3, np.float32), out, *args)
    with pytest.raises(ValueError, match="Wo"):
        dw.conv2d_depthwise(x, w, none, np.zeros((1, 4, 24), np.float32), *args)
    with pytest.raises(ValueError, match="grad must be"):
        dw.conv2d_depthwise_input_grad(out[:, :2], w, x, *args)
    with pytest.raises(ValueError, match=">= 1"):
        dw.conv2d_depthwise_weight_grad(x, out, w, 3, 3, 5, 0, 1, 1, 1, 1, 1, False, 1)


def test_isa_selection():
    assert dw.get_isa() in ISAS and ISAS[0] == "generic"
    with pytest.raises(ValueError, match="not available"):
        dw.set_isa("sse9")


# --------------------------------------------------------------------------
# through the public functions: the table entry, its choice and its errors

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_lowering_through_the_api(dtype, multiplier):
    import fastconv
    from reference import (conv2d_input_grad_reference, conv2d_reference,
                           conv2d_weight_grad_reference)
    rng = np.random.default_rng(multiplier)
    C = 5
    x = rng.standard_normal((3, C, 13, 11)).astype(dtype)
    w = rng.standard_normal((C * multiplier, 1, 3, 4)).astype(dtype)
    b = rng.standard_normal(C * multiplier).astype(dtype)
    conv = dict(stride=(1, 2), padding=((1, 2), (2, 1)), dilation=(2, 1), groups=C)
    ref = dict(stride=(1, 2), padding=((1, 2), (2, 1)), dilation=(2, 1), groups=C)
    plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, **conv)
    assert plan.method == "depthwise" and plan.workspace_bytes == 0, plan
    y = fastconv.conv2d(x, w, b, **conv)
    assert_close(y, conv2d_reference(x, w, b, **ref), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    for kind in ("input_grad", "weight_grad"):
        assert fastconv.plan_conv2d(x.shape, w.shape, dtype, kind=kind, **conv).method == "depthwise"
    assert_close(fastconv.conv2d_input_grad(x.shape, w, g, method="depthwise", **conv),
                 conv2d_input_grad_reference(x.shape, w, g, **ref), dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, g, method="depthwise", **conv),
                 conv2d_weight_grad_reference(x, w.shape, g, **ref), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_layer_through_the_api(dtype):
    # auto runs a ResNeXt-like grouped layer (4 channels per group) on the
    # depthwise kernel; forward and both gradients against the reference
    import fastconv
    from reference import (conv2d_input_grad_reference, conv2d_reference,
                           conv2d_weight_grad_reference)
    rng = np.random.default_rng(7)
    groups, cg, kg = 6, 4, 3
    x = rng.standard_normal((2, groups * cg, 40, 37)).astype(dtype)[:, :, 1:, ::-1]
    w = rng.standard_normal((groups * kg, cg, 3, 3)).astype(dtype)
    b = rng.standard_normal(groups * kg).astype(dtype)
    conv = dict(padding=((1, 1), (1, 1)), groups=groups)
    for kind in ("forward", "input_grad"):
        assert fastconv.plan_conv2d(x.shape, w.shape, dtype, kind=kind,
                                    **conv).method == "depthwise"
    y = fastconv.conv2d(x, w, b, **conv)
    assert_close(y, conv2d_reference(x, w, b, **conv), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, g, **conv),
                 conv2d_input_grad_reference(x.shape, w, g, **conv), dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, g, method="depthwise", **conv),
                 conv2d_weight_grad_reference(x, w.shape, g, **conv), dtype)


def test_depthwise_lowering_refuses_many_channels_per_group():
    import fastconv
    from fastconv._lowerings import Depthwise
    assert Depthwise.group_max_channels == dw.GROUP_MAX_CHANNELS
    many = dw.GROUP_MAX_CHANNELS + 1
    with pytest.raises(ValueError, match=f"method='depthwise' needs groups == C .* or at most "
                                         f"{dw.GROUP_MAX_CHANNELS} channels per group"):
        fastconv.conv2d(np.ones((1, 2 * many, 5, 5)), np.ones((4, many, 3, 3)), groups=2,
                        method="depthwise")
