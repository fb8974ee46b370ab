"""The Winograd lowering (fastconv._kernels.winograd, F(4x4, 3x3)), its
kernel called directly and through the front end, against the independent
NumPy reference (tests/reference.py), on every instruction set this machine
runs: tile counts that leave partial micro-panels and images that end
mid-tile, filter counts around MR and past a block of M, several chunks of
filters, every zero-padding form up to 2 a side (and outputs that read only
padding), groups, flip, bias, odd input strides and views, 1 to 3 threads;
the input gradient (its adjoint's forward pass) and the weight gradient
(F(3x3, 4x4)); dilation (one undilated convolution per phase); both
orders of the work (weights kept, input kept) and the input gradient's
weights read in place; what it refuses."""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastconv
from fastconv import _tuning
from reference import (assert_close, conv2d_input_grad_reference, conv2d_reference,
                       conv2d_weight_grad_reference)
from test_fused_kernel import VIEWS, make_view, out_size

winograd = pytest.importorskip("fastconv._kernels.winograd")
fused = pytest.importorskip("fastconv._kernels.fused")

ISAS = fused.supported_isas()
DTYPES = [np.float32, np.float64]


def run_winograd(x, w, b, *, padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, flip=False,
                 isa="generic", threads=1, keep_input=False, adjoint=False, block=0):
    """conv2d_winograd on NCHW x and (K, C/groups, 3, 3) w, with NaN-filled
    buffers and output (every element the kernel reads or returns must have
    been written by it), in either order (keep_input; block: its filters per
    item, 0 for filter_block's); adjoint: w handed
    over as the weights of the layer whose input gradient this is (C,
    K/groups*9), as the input gradient reads them. Returns out as (N, K,
    Ho, Wo)."""
    dtype = x.dtype
    N, C, H, W = x.shape
    K = w.shape[0]
    Ho, Wo = out_size(H, padding[0], dilation[0], 3, 1), out_size(W, padding[1], dilation[1], 3, 1)
    block = block or winograd.filter_block(K // groups, C // groups, groups, dtype, isa, threads)
    n_kept, per_thread = winograd.buffer_sizes(
        K, C, groups, dtype, isa, winograd.kept_tiles(N, Ho, Wo, *dilation) if keep_input else None,
        block if keep_input else None)
    kept = np.full(n_kept, np.nan, dtype)
    workspace = np.full((threads, per_thread), np.nan, dtype)
    out = np.full((N, K, Ho, Wo), np.nan, dtype)
    bias = np.zeros(0, dtype) if b is None else b
    weight = np.ascontiguousarray(w.reshape(K, -1))
    if adjoint:
        weight = np.ascontiguousarray(w.reshape(groups, K // groups, C // groups, 9)
                                      .transpose(0, 2, 1, 3).reshape(C, K // groups * 9))
    winograd.conv2d_winograd(x, weight, bias, out, kept, workspace, padding[0][0],
                             padding[1][0], *dilation, groups, flip, isa, threads,
                             keep_input=keep_input, adjoint=adjoint, block=block)
    return out


@st.composite
def winograd_cases(draw):
    groups = draw(st.integers(1, 3))
    c_group = draw(st.integers(1, 9))
    # filters per group: around MR (4 generic and avx2, 8 avx512) and past it
    k_group = draw(st.sampled_from([1, 3, 4, 8, 9, 17, 33]))
    # dilation: one undilated convolution per phase, some of them empty
    # where the map is smaller than the dilation; padding up to the span
    dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    pads = tuple(tuple(draw(st.integers(0, 2 * d)) for _ in range(2)) for d in dilation)
    H = draw(st.integers(max(1, 2 * dilation[0] + 1 - sum(pads[0])), 19))
    W = draw(st.integers(max(1, 2 * dilation[1] + 1 - sum(pads[1])), 23))
    return dict(N=draw(st.integers(1, 3)), C=groups * c_group, K=groups * k_group, H=H, W=W,
                groups=groups, padding=pads, dilation=dilation, bias=draw(st.booleans()),
                flip=draw(st.booleans()), keep_input=draw(st.booleans()),
                adjoint=draw(st.booleans()),
                dtype=draw(st.sampled_from(DTYPES)), view=draw(st.sampled_from(VIEWS)),
                threads=draw(st.sampled_from([1, 2, 3])), seed=draw(st.integers(0, 2**32 - 1)))


def _arrays(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = make_view(rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype),
                  case["view"])
    w = rng.standard_normal((case["K"], case["C"] // case["groups"], 3, 3)).astype(dtype)
    b = rng.standard_normal(case["K"]).astype(dtype) if case["bias"] else None
    return x, w, b


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_cases())
def test_winograd_matches_reference(isa, case):
    x, w, b = _arrays(case)
    conv = dict(padding=case["padding"], dilation=case["dilation"], groups=case["groups"],
                flip=case["flip"])
    out = run_winograd(x, w, b, isa=isa, threads=case["threads"], keep_input=case["keep_input"],
                       adjoint=case["adjoint"], **conv)
    assert_close(out, conv2d_reference(x, w, b, **conv), case["dtype"])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("keep_input", [False, True])
def test_layer_sized(isa, dtype, threads, keep_input):
    # ResNet-50 5b's and 4b's shapes, scaled down: 7x7 and 14x14 maps (4x4
    # tiles, the last ones cut), more filters than one block of M and not a
    # multiple of MR, two groups; first so few tiles that the filters are
    # split into chunks (the weights-kept order) and blocks (the
    # input-kept), then many (several micro-panels, the last partial); the
    # weights read as the input gradient reads them, too
    sizes = winograd.blocking(dtype, isa)
    rng = np.random.default_rng(3)
    few = 2 * (sizes["KB"] + sizes["MR"] + 3)
    # the input-kept order's blocks: the planned ones, and MR (several
    # blocks, the last partial, against several panels)
    blocks = (0, sizes["MR"]) if keep_input else (0,)
    for n, size, k in ((1, 7, few), (7, 14, 2 * (sizes["MR"] + 1)), (7, 14, few)):
        x = rng.standard_normal((n, 2 * 37, size, size)).astype(dtype)
        w = rng.standard_normal((k, 37, 3, 3)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        conv = dict(padding=((1, 1), (1, 1)), groups=2)
        for adjoint in (False, True):
            for block in blocks:
                assert_close(run_winograd(x, w, b, isa=isa, threads=threads,
                                          keep_input=keep_input, adjoint=adjoint, block=block,
                                          **conv),
                             conv2d_reference(x, w, b, **conv), dtype)
    # the first shape really is split: fewer items than 4 a thread
    panels = -(-int(np.prod(winograd.tiles(7, 7))) // sizes["NR"])
    assert winograd.chunk_count(2 * panels, -(-(few // 2) // sizes["MR"]), threads) > 1
    # and the last has several panels of tiles (7 images of 16) for blocks of MR
    assert 7 * 16 > sizes["NR"] and few // 2 > sizes["MR"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_threads(isa, dtype):
    # each output is transformed from one GEMM per point, summed in one
    # order, whatever the threads, how the items are dealt out or which
    # operand is kept
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 10, 9, 13)).astype(dtype)
    w = rng.standard_normal((21, 10, 3, 3)).astype(dtype)
    runs = [run_winograd(x, w, None, padding=((1, 1), (1, 1)), isa=isa, threads=t, flip=True,
                         keep_input=keep_input)
            for t in (1, 2, 3) for keep_input in (False, True)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_that_are_mostly_padding(dtype):
    # 1x1 and 1x2 images padded by 2 (the most the lowering takes: every
    # output then reads one pixel): a 6x6 tile of which 1 or 2 values are
    # inside the image
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 1, 1)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    conv = dict(padding=((2, 2), (2, 2)))
    for image in (x, np.concatenate([x, -x], axis=3)):
        for keep_input in (False, True):
            assert_close(run_winograd(image, w, b, keep_input=keep_input, **conv),
                         conv2d_reference(image, w, b, **conv), dtype)


def test_rejects_small_buffers_and_bad_arguments():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2 * 9), np.float32)
    out = np.empty((1, 3, 3, 3), np.float32)
    n_packed, per_thread = winograd.buffer_sizes(3, 2, 1, np.float32, "generic")
    packed, ws = np.empty(n_packed, np.float32), np.empty((1, per_thread), np.float32)
    none = np.zeros(0, np.float32)
    winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 1, 1, 1, False, "generic", 1)
    assert_close(out, conv2d_reference(x, w.reshape(3, 2, 3, 3)), np.float32)
    with pytest.raises(ValueError, match="buffers"):
        winograd.conv2d_winograd(x, w, none, out, packed[:-30], ws, 0, 0, 1, 1, 1, False,
                                 "generic", 1)
    with pytest.raises(ValueError, match="buffers"):
        winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 1, 1, 1, False, "generic", 2)
    with pytest.raises(ValueError, match="num_threads"):
        winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 1, 1, 1, False, "generic", 0)
    with pytest.raises(ValueError, match="bias"):
        winograd.conv2d_winograd(x, w, np.zeros(2, np.float32), out, packed, ws, 0, 0, 1, 1, 1,
                                 False, "generic", 1)
    with pytest.raises(ValueError, match="C/groups\\*9"):
        winograd.conv2d_winograd(x, np.ones((3, 9), np.float32), none, out, packed, ws, 0, 0, 1,
                                 1, 1, False, "generic", 1)
    with pytest.raises(ValueError, match="dilation"):
        winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 0, 1, 1, False, "generic", 1)
    # the input-kept order keeps 36 x C x NR-wide panels: more than these
    kept_input, per_thread_input = winograd.buffer_sizes(3, 2, 1, np.float32, "generic",
                                                         tiles=1, block=4)
    assert kept_input > n_packed
    with pytest.raises(ValueError, match="buffers"):
        winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 1, 1, 1, False, "generic", 1,
                                 keep_input=True, block=4)
    # ... and its workspace holds a block's transformed weights
    big = np.empty(kept_input, np.float32)
    with pytest.raises(ValueError, match="buffers"):
        winograd.conv2d_winograd(x, w, none, out, big, np.empty((1, per_thread_input - 1),
                                 np.float32), 0, 0, 1, 1, 1, False, "generic", 1,
                                 keep_input=True, block=4)
    winograd.conv2d_winograd(x, w, none, out, big, np.empty((1, per_thread_input), np.float32),
                             0, 0, 1, 1, 1, False, "generic", 1, keep_input=True, block=4)
    assert_close(out, conv2d_reference(x, w.reshape(3, 2, 3, 3)), np.float32)
    with pytest.raises(ValueError, match="multiple of MR"):
        winograd.buffer_sizes(3, 2, 1, np.float32, "generic", tiles=1, block=6)
    # the input gradient's weights: (C, K/groups*9) = (2, 27), not (3, 18)
    with pytest.raises(ValueError, match="C, K/groups\\*9"):
        winograd.conv2d_winograd(x, w, none, out, packed, ws, 0, 0, 1, 1, 1, False, "generic", 1,
                                 adjoint=True)


@pytest.mark.parametrize("isa", ISAS)
def test_front_end_runs_it_on_every_isa(isa):
    # method="winograd" through the planner and executor, on a forced ISA:
    # the forward pass and the input gradient (the adjoint's forward pass)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 7, 9)).astype(np.float32)
    w = rng.standard_normal((20, 6, 3, 3)).astype(np.float32)
    with _tuning.tuned(isa=isa):
        plan = fastconv.plan_conv2d(x.shape, w.shape, np.float32, padding=1, method="winograd")
        assert plan.method == "winograd" and plan.blocking.isa == isa and isa in repr(plan)
        assert_close(plan.execute(x, w), conv2d_reference(x, w, padding=((1, 1), (1, 1))),
                     np.float32)
        grad = rng.standard_normal(plan.output_shape).astype(np.float32)
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, padding=1, method="winograd")
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, padding=((1, 1), (1, 1))),
                 np.float32)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_cases(), isa=st.sampled_from(ISAS),
       limit=st.sampled_from([None, 60_000, 10**6]))
def test_input_grad_matches_reference(case, isa, limit):
    """The input gradient as the adjoint's forward pass, through the front
    end: uneven padding up to the span (the adjoint pads the span less),
    dilation, groups, flip,
    both dtypes, threads, tight limits; it writes every element."""
    x, w, _ = _arrays(case)
    conv = dict(padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    rng = np.random.default_rng(case["seed"] + 1)
    grad = rng.standard_normal(conv2d_reference(x, w, **conv).shape).astype(case["dtype"])
    kw = dict(conv, method="winograd", num_threads=case["threads"], memory_limit=limit)
    with _tuning.tuned(isa=isa):
        try:
            fastconv.plan_conv2d(x.shape, w.shape, case["dtype"], kind="input_grad", **kw)
        except fastconv.WorkspaceLimitError as exc:
            assert limit is not None and "needs" in str(exc)
            return
        out = np.full(x.shape, np.nan, case["dtype"])
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, out=out, flip=case["flip"], **kw)
    assert grad_x is out
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, flip=case["flip"], **conv),
                 case["dtype"])


def run_weight_grad(x, grad, *, padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                    flip=False, isa="generic", threads=1):
    """conv2d_winograd_weight_grad with a NaN-filled workspace and result;
    returns grad_w as (K, C/groups, 3, 3)."""
    dtype = x.dtype
    K, C = grad.shape[1], x.shape[1]
    workspace = np.full((threads, winograd.weight_grad_buffer_size(C, groups, dtype, isa)),
                        np.nan, dtype)
    out = np.full((K, C // groups * 9), np.nan, dtype)
    winograd.conv2d_winograd_weight_grad(x, grad, out, workspace, padding[0][0], padding[1][0],
                                         *dilation, groups, flip, isa, threads)
    return out.reshape(K, C // groups, 3, 3)


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_cases(), grad_view=st.sampled_from(VIEWS))
def test_weight_grad_matches_reference(isa, case, grad_view):
    """The weight gradient's kernel: tiles cut at the edges, filters around
    and past NR (partial micro-panels of B), channels past a block, dilation
    (the phases summed), groups, flip, views of x and of the output
    gradient, threads; it writes every element."""
    x, w, _ = _arrays(case)
    conv = dict(padding=case["padding"], dilation=case["dilation"], groups=case["groups"],
                flip=case["flip"])
    rng = np.random.default_rng(case["seed"] + 2)
    shape = conv2d_reference(x, w, **conv).shape
    grad = make_view(rng.standard_normal(shape).astype(case["dtype"]), grad_view)
    got = run_weight_grad(x, grad, isa=isa, threads=case["threads"], **conv)
    assert_close(got, conv2d_weight_grad_reference(x, w.shape, grad, **conv), case["dtype"])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_layer_sized(isa, dtype):
    # channels over two blocks (the last partial, not a multiple of MR),
    # filters over two micro-panels, tiles over several panels of the depth
    # (the last partial), 1 and 2 threads alike
    # (two blocks of filters: the items in channel-major order; one block:
    # filter-major, weight_grad_channel_major)
    sizes = winograd.weight_grad_blocking(dtype, isa)
    rng = np.random.default_rng(9)
    C = sizes["CB"] + sizes["MR"] + 3
    orders = set()
    for K in (sizes["NR"] + 5, sizes["NR"] - 3):
        orders.add(winograd.weight_grad_channel_major(K, C, 17, 15, 17, 15, 1, dtype, isa))
        x = rng.standard_normal((5, C, 17, 15)).astype(dtype)
        grad = rng.standard_normal((5, K, 17, 15)).astype(dtype)
        conv = dict(padding=((1, 1), (1, 1)))
        expected = conv2d_weight_grad_reference(x, (K, C, 3, 3), grad, **conv)
        assert 5 * np.prod(winograd.tiles(17, 15)) > sizes["TB"]
        one = run_weight_grad(x, grad, isa=isa, threads=1, **conv)
        assert_close(one, expected, dtype)
        np.testing.assert_array_equal(run_weight_grad(x, grad, isa=isa, threads=2, **conv), one)
    assert orders == {True, False}


def test_weight_grad_front_end_and_bad_arguments():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 6, 9, 8))
    w = rng.standard_normal((10, 3, 3, 3))
    conv = dict(padding=((2, 0), (1, 1)), dilation=(1, 2), groups=2)
    grad = rng.standard_normal(conv2d_reference(x, w, **conv).shape)
    plan = fastconv.plan_conv2d(x.shape, w.shape, "float64", kind="weight_grad",
                                method="winograd", **conv)
    assert plan.method == "winograd" and "F(3x3, 4x4)" in repr(plan)
    out = np.full(w.shape, np.nan)
    assert fastconv.conv2d_weight_grad(x, w.shape, grad, out=out, method="winograd",
                                       **conv) is out
    assert_close(out, conv2d_weight_grad_reference(x, w.shape, grad, **conv), np.float64)
    ws = np.empty((1, winograd.weight_grad_buffer_size(6, 2, np.float64, "generic")))
    g4, dw = grad.reshape(2, 10, *grad.shape[2:]), np.empty((10, 27))
    with pytest.raises(ValueError, match="workspace"):
        winograd.conv2d_winograd_weight_grad(x, g4, dw, ws[:, :-40], 2, 1, 1, 2, 2, False,
                                             "generic", 1)
    with pytest.raises(ValueError, match="do not match"):
        winograd.conv2d_winograd_weight_grad(x, g4, np.empty((10, 18)), ws, 2, 1, 1, 2, 2, False,
                                             "generic", 1)
    with pytest.raises(ValueError, match="dilation"):
        winograd.conv2d_winograd_weight_grad(x, g4, dw, ws, 2, 1, 0, 2, 2, False, "generic", 1)


def test_what_it_refuses():
    x = np.ones((1, 2, 9, 9))
    for kw, message in ((dict(weight=(2, 2, 5, 5)), "3x3 kernels only"),
                        (dict(stride=2), "stride-1 convolutions only"),
                        (dict(stride=(1, 2), dilation=2), "stride-1 convolutions only"),
                        (dict(padding=3, kind="input_grad"), "exceeds the kernel's span"),
                        (dict(padding=1, padding_mode="reflect"), "pads with zeros only")):
        kw = dict(kw)
        weight = kw.pop("weight", (2, 2, 3, 3))
        with pytest.raises(ValueError, match=message):
            fastconv.plan_conv2d(x.shape, weight, method="winograd", **kw)
    with pytest.raises(ValueError, match="3x3 kernels only"):
        fastconv.conv1d(np.ones((1, 2, 9)), np.ones((2, 2, 3)), method="winograd")


@pytest.mark.parametrize("keep_input", [False, True])
@pytest.mark.parametrize("kind", ["forward", "input_grad"])
def test_both_orders_through_the_front_end(keep_input, kind):
    # a plan of each order (as the planner would make it: its blocking,
    # buffers sized over the dilation phases) run by the front end, groups,
    # dilation, flip and a strided view, against the reference
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 12, 15, 13))[:, :, ::-1, :]
    w = rng.standard_normal((21, 4, 3, 3))
    conv = dict(padding=((2, 1), (1, 2)), dilation=(2, 1), groups=3, flip=True)
    plan = fastconv.plan_conv2d(x.shape, w.shape, np.float64, method="winograd", kind=kind,
                                **conv)
    if plan.blocking.keep_input != keep_input:
        sizes = winograd.blocking(np.float64, plan.blocking.isa)
        blocking = dataclasses.replace(plan.blocking,
                                       filter_block=sizes["MR"] if keep_input else 0)
        plan = dataclasses.replace(plan, blocking=blocking)
    y = conv2d_reference(x, w, **conv)
    if kind == "forward":
        assert_close(plan.execute(x, w), y, np.float64)
    else:
        g = rng.standard_normal(y.shape)
        assert_close(plan.execute(w, g), conv2d_input_grad_reference(x.shape, w, g, **conv),
                     np.float64)


def test_planner_weighs_it():
    # deep 3x3 stride-1 layers (ResNet-50 2a, 3b, VGG-16 conv3_2, 4b, 5b):
    # Winograd; the weights-kept order where the tiles are many, the
    # input-kept order where they are few against the weights (4b's 128
    # tiles, 5b's 32 against 2.4 M weights); one input channel
    # (paper_mnist): not Winograd; nor where it does not apply
    for shape, filters, keep_input in (((8, 64, 56, 56), 64, False),
                                       ((8, 128, 28, 28), 128, False),
                                       ((2, 256, 56, 56), 256, False),
                                       ((8, 256, 14, 14), 256, True),
                                       ((8, 512, 7, 7), 512, True)):
        for kind in ("forward", "input_grad", "weight_grad"):
            plan = fastconv.plan_conv2d(shape, (filters, shape[1], 3, 3), padding=1, kind=kind)
            assert plan.method == "winograd", (shape, kind, plan)
            if kind != "weight_grad":
                assert plan.blocking.keep_input == keep_input, (shape, kind, plan)
                assert ("input transformed once" in repr(plan)) == keep_input
    assert fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 3, 3)).method != "winograd"
    # but not the weight gradient of one 7x7 image of 5b: its 512 x 512
    # pairs' sums cost as much as for 8 images (Tuning.winograd_grad_output),
    # for 4 tiles; fused took 0.28-0.33x Winograd's time (Zen 5)
    one = fastconv.plan_conv2d((1, 512, 7, 7), (512, 512, 3, 3), padding=1, kind="weight_grad")
    assert one.method == "fused", one
    # ... nor of one 14x14 image of 4b, where the direct kernel's per-weight
    # cost (Tuning.direct_weight_grad_weights) keeps it from direct too:
    # fused 0.78x Winograd's time, 0.84x direct's in float64
    for dtype in ("float32", "float64"):
        one = fastconv.plan_conv2d((1, 256, 14, 14), (256, 256, 3, 3), dtype, padding=1,
                                   kind="weight_grad")
        assert one.method == "fused", one
    # few images of deep layers: the forward pass and the input gradient on
    # Winograd's input-kept order (the refitted transform costs), where the
    # old model took the direct kernel at 1.05-1.7x Winograd's time (one
    # 14x14 image of 4b, one 13x13 YOLO image, four 7x7 images of 5b); but
    # not one or two 7x7 images of 5b (4 tiles an image: the direct kernel
    # and fused took 0.45-0.85x Winograd's time, Zen 5)
    for shape, filters in (((1, 256, 14, 14), 256), ((1, 512, 13, 13), 1024),
                           ((4, 512, 7, 7), 512)):
        for dtype in ("float32", "float64"):
            for kind in ("forward", "input_grad"):
                plan = fastconv.plan_conv2d(shape, (filters, shape[1], 3, 3), dtype, padding=1,
                                            kind=kind, num_threads=2)
                assert plan.method == "winograd" and plan.blocking.keep_input, plan
    for n in (1, 2):
        for kind in ("forward", "input_grad"):
            plan = fastconv.plan_conv2d((n, 512, 7, 7), (512, 512, 3, 3), padding=1, kind=kind,
                                        num_threads=2)
            assert plan.method != "winograd", plan
    # groups of 4 channels (ResNeXt): 36 GEMMs 4 deep, at fused's shallow
    # rate; the input gradient measured fused 5.1-5.3 ms against Winograd's
    # 6.3-7.2 (2 threads)
    grouped = fastconv.plan_conv2d((8, 128, 56, 56), (128, 4, 3, 3), padding=1, groups=32,
                                   kind="input_grad", num_threads=2)
    assert grouped.method != "winograd", grouped
    # a dilated layer: one undilated convolution per phase (4 of 32x32 here)
    dilated = fastconv.plan_conv2d((4, 128, 64, 64), (128, 128, 3, 3), padding=2, dilation=2)
    assert dilated.method == "winograd" and "4 undilated convolutions" in repr(dilated)
