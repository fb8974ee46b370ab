"""padding_mode ("reflect", "replicate", "circular", "symmetric"): done by the
index map while gathering (and, in the input gradient, while scattering back),
checked against np.pad + the NumPy reference, SciPy's boundary modes and
PyTorch's padding_mode."""
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

import fastconv
from fastconv._lowerings import general_methods
from cases import conv_cases, random_arrays, small_tiles
from reference import (assert_close, conv1d_reference, conv2d_input_grad_reference,
                       conv2d_reference, conv2d_weight_grad_reference, im2col_reference,
                       pad_reference)

MODES = ["reflect", "replicate", "circular", "symmetric"]


def _methods(kind, mode):
    """The lowerings that compute any convolution of `kind` with `mode` padding."""
    return list(general_methods(kind, padding_mode=mode))


def _conv(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"], padding_mode=case["padding_mode"])


@st.composite
def mode_cases(draw):
    """A random convolution (any stride, dilation, groups, flip, tiles,
    threads) with a padding mode, padding up to twice the input's size so
    that reflections fold more than once, and a method that supports it."""
    case = draw(conv_cases())
    mode = draw(st.sampled_from(MODES))
    pads = tuple(tuple(draw(st.integers(0, 2 * size)) for _ in range(2))
                 for size in (case["H"], case["W"]))
    span_h = case["dilation"][0] * (case["R"] - 1) + 1
    span_w = case["dilation"][1] * (case["S"] - 1) + 1
    if case["H"] + sum(pads[0]) < span_h or case["W"] + sum(pads[1]) < span_w:
        pads = case["padding"]  # conv_cases' padding always leaves a window
    methods = sorted(set(_methods("forward", mode)) & set(_methods("input_grad", mode))
                     & set(_methods("weight_grad", mode)))
    return dict(case, padding=pads, padding_mode=mode,
                method=draw(st.sampled_from(methods + ["auto"])),
                layout=draw(st.sampled_from(["contiguous", "transposed", "strided"])))


def _laid_out(x, layout):
    """x with the same values in another memory layout."""
    if layout == "transposed":
        return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    if layout == "strided":
        big = np.zeros(x.shape[:2] + (2 * x.shape[2], 3 * x.shape[3]), x.dtype)
        big[:, :, ::2, ::3] = x
        return big[:, :, ::2, ::3]
    return x


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode_cases())
def test_forward_and_gradients_match_reference(case):
    x, w, b = random_arrays(case)
    x = _laid_out(x, case["layout"])
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"])
    with small_tiles(case["tile_bytes"]):
        y = fastconv.conv2d(x, w, b, **kw)
        grad = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape).astype(case["dtype"])
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, **kw)
        grad_w = fastconv.conv2d_weight_grad(x, w.shape, grad, **kw)
    assert y.dtype == grad_x.dtype == grad_w.dtype == case["dtype"]
    assert_close(y, conv2d_reference(x, w, b, **_conv(case)), case["dtype"])
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)),
                 case["dtype"])
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)),
                 case["dtype"])


@settings(max_examples=100, deadline=None)
@given(mode_cases())
def test_adjointness(case):
    """<conv2d(x, w), g> == <x, input_grad(g)> == <w, weight_grad(x, g)>: the
    scatter of the input gradient is the exact transpose of the folded gather."""
    case = dict(case, dtype=np.float64)
    x, w, _ = random_arrays(case)
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"])
    y = fastconv.conv2d(x, w, **kw)
    g = np.random.default_rng(case["seed"] + 2).standard_normal(y.shape)
    lhs = np.vdot(y, g)
    tol = 1e-10 * max(1.0, abs(lhs))
    assert abs(lhs - np.vdot(x, fastconv.conv2d_input_grad(x.shape, w, g, **kw))) <= tol
    assert abs(lhs - np.vdot(w, fastconv.conv2d_weight_grad(x, w.shape, g, **kw))) <= tol


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("threads", [1, 2])
def test_same_result_for_every_lowering_and_thread_count(mode, threads):
    """Batches of 1 (channel blocks split the input gradient between
    threads) and of several images (several images per GEMM)."""
    rng = np.random.default_rng(3)
    for N, H, W in ((1, 9, 7), (5, 6, 6)):
        x = rng.standard_normal((N, 6, H, W))
        w = rng.standard_normal((4, 6, 3, 5))
        g = rng.standard_normal((N, 4, H, W))
        conv = dict(padding=((1, 1), (2, 2)), padding_mode=mode, num_threads=threads)
        ref = conv2d_reference(x, w, padding=((1, 1), (2, 2)), padding_mode=mode)
        ref_x = conv2d_input_grad_reference(x.shape, w, g, padding=((1, 1), (2, 2)),
                                            padding_mode=mode)
        for method in _methods("forward", mode):
            assert_close(fastconv.conv2d(x, w, method=method, **conv), ref, np.float64)
        for method in _methods("input_grad", mode):
            assert_close(fastconv.conv2d_input_grad(x.shape, w, g, method=method, **conv), ref_x,
                         np.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_and_its_gradients(mode, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 11)).astype(dtype)
    w = rng.standard_normal((6, 2, 4)).astype(dtype)
    conv = dict(stride=2, padding=(3, 13), dilation=2, groups=2, padding_mode=mode)
    y = fastconv.conv1d(x, w, **conv)
    assert_close(y, conv1d_reference(x, w, **conv), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    conv2 = dict(stride=(1, 2), padding=((0, 0), (3, 13)), dilation=(1, 2), groups=2,
                 padding_mode=mode)
    assert_close(fastconv.conv1d_input_grad(x.shape, w, g, **conv),
                 conv2d_input_grad_reference(x[:, :, None].shape, w[:, :, None], g[:, :, None],
                                             **conv2)[:, :, 0], dtype)
    assert_close(fastconv.conv1d_weight_grad(x, w.shape, g, **conv),
                 conv2d_weight_grad_reference(x[:, :, None], w[:, :, None].shape, g[:, :, None],
                                              **conv2)[:, :, 0], dtype)


def test_issue_examples_by_hand():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    pick = np.array([[[0.0, 1.0, 0.0]]])  # reads the padded signal back
    expected = {"reflect": [3, 2, 1, 2, 3, 4, 3, 2], "replicate": [1, 1, 1, 2, 3, 4, 4, 4],
                "circular": [3, 4, 1, 2, 3, 4, 1, 2], "symmetric": [2, 1, 1, 2, 3, 4, 4, 3],
                "zeros": [0, 0, 1, 2, 3, 4, 0, 0]}
    for mode, values in expected.items():
        out = fastconv.conv1d(x, pick, padding=3, padding_mode=mode)
        assert out[0, 0].tolist() == values, mode


def test_padding_wider_than_the_input_folds_again():
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    pick = np.ones((1, 1, 1, 1))
    for mode in MODES:
        out = fastconv.conv2d(x, pick, padding=((0, 0), (7, 8)), padding_mode=mode)
        assert out[0, 0, 0].tolist() == pad_reference(x, ((0, 0), (7, 8)), mode)[0, 0, 0].tolist()
    # a single element reflects onto itself (as np.pad), never out of bounds
    one = np.full((1, 1, 1, 1), 5.0)
    for mode in MODES:
        out = fastconv.conv2d(one, np.ones((1, 1, 3, 3)), padding=4, padding_mode=mode)
        assert np.all(out == 45.0), mode


@pytest.mark.parametrize("mode", MODES)
def test_im2col_col2im_and_conv_matrix(mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 4))
    conv = dict(stride=(2, 1), padding=((2, 3), (1, 4)), dilation=(1, 2))
    cols = fastconv.im2col(x, (3, 2), padding_mode=mode, **conv)
    assert_close(cols, im2col_reference(pad_reference(x, conv["padding"], mode), (3, 2),
                                        stride=conv["stride"], dilation=conv["dilation"]),
                 np.float64)
    c = rng.standard_normal(cols.shape)
    back = fastconv.col2im(c, x.shape, (3, 2), padding_mode=mode, **conv)
    assert abs(np.vdot(cols, c) - np.vdot(x, back)) <= 1e-10 * max(1.0, abs(np.vdot(cols, c)))
    w = rng.standard_normal((2, 3, 3, 2))
    y = fastconv.conv2d(x[:1], w, padding_mode=mode, **conv)[0].ravel()
    for sparse in (False, True):
        W = fastconv.conv_matrix(w, x.shape[1:], padding_mode=mode, sparse=sparse, **conv)
        assert_close(W @ x[0].ravel(), y, np.float64)


@pytest.mark.parametrize("boundary, mode", [("wrap", "circular"), ("symm", "symmetric")])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 3), (4, 4), (2, 5)])
@pytest.mark.parametrize("flip", [False, True])
def test_scipy_boundary_modes(boundary, mode, kernel, flip):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(6)
    image, k = rng.standard_normal((9, 8)), rng.standard_normal(kernel)
    fn = signal.convolve2d if flip else signal.correlate2d
    for scipy_mode, padding in (("same", "same"), ("full", "full")):
        expected = fn(image, k, mode=scipy_mode, boundary=boundary)
        out = fastconv.conv2d(image[None, None], k[None, None], padding=padding, flip=flip,
                              padding_mode=mode)[0, 0]
        assert_close(out, expected, np.float64)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_pytorch(mode, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 8, 7)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 4)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    layer = torch.nn.Conv2d(4, 6, (3, 4), stride=(1, 2), padding=(2, 3), dilation=(2, 1),
                            groups=2, padding_mode=mode, dtype=getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    tx = torch.from_numpy(x).requires_grad_()
    ty = layer(tx)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(g))
    conv = dict(stride=(1, 2), padding=(2, 3), dilation=(2, 1), groups=2, padding_mode=mode)
    assert_close(fastconv.conv2d(x, w, b, **conv), ty.detach().numpy(), dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, g, **conv), tx.grad.numpy(), dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, g, **conv), layer.weight.grad.numpy(),
                 dtype)


def test_planner_keeps_modes_on_the_index_map():
    plan = fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1,
                                padding_mode="reflect")
    assert plan.method in _methods("forward", "reflect")
    assert "reflect padding" in repr(plan)
    depthwise = fastconv.plan_conv2d((8, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32,
                                     padding_mode="circular")
    assert depthwise.method in _methods("forward", "circular")
    for method, shape in (("fused", (64, 64, 3, 3)), ("depthwise", (64, 1, 3, 3))):
        with pytest.raises(ValueError, match="pads with zeros only.*padding_mode='reflect'"):
            fastconv.plan_conv2d((8, 64, 56, 56), shape, padding=1, groups=64 // shape[1],
                                 padding_mode="reflect", method=method)
    # nothing padded: the mode reads nothing, every lowering applies
    unpadded = fastconv.plan_conv2d((8, 64, 56, 56), (64, 1, 3, 3), groups=64,
                                    padding_mode="reflect", method="depthwise")
    assert unpadded.geometry.padding_mode == "zeros"


def test_bad_padding_mode():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"padding_mode='mirror' is not one of .*write 'reflect'"):
        fastconv.conv2d(x, w, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"for 'edge' write 'replicate'"):
        fastconv.conv2d(x, w, padding=1, padding_mode="edge")
    with pytest.raises(ValueError, match=r"for 'wrap' write 'circular'"):
        fastconv.conv2d_input_grad(x.shape, w, np.ones((1, 1, 4, 4)), padding=1,
                                   padding_mode="wrap")
    with pytest.raises(ValueError, match=r"write 'reflect'"):
        fastconv.conv1d(x[0], w[0, :, 0], padding=1, padding_mode="Reflect")
    with pytest.raises(ValueError, match="padding_mode=3 is not one of"):
        fastconv.im2col(x, 3, padding=1, padding_mode=3)
    with pytest.raises(TypeError, match="padding_mode"):
        fastconv.conv_transpose2d(x, w, padding_mode="reflect")


@pytest.mark.parametrize("mode", MODES)
def test_out_and_unbatched(mode):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 3, 3))
    expected = conv2d_reference(x[None], w, padding=((1, 1), (1, 1)), padding_mode=mode)[0]
    assert_close(fastconv.conv2d(x, w, padding=1, padding_mode=mode), expected, np.float64)
    big = np.full((2, 8, 10), -1.0)
    view = big[:, 1:7, ::2]
    assert fastconv.conv2d(x, w, padding=1, padding_mode=mode, out=view) is view
    assert_close(view, expected, np.float64)
    assert np.all(big[:, 0] == -1.0) and np.all(big[:, :, 1::2] == -1.0)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_dask(mode):
    da = pytest.importorskip("dask.array")
    import dask
    import fastconv.dask as fdask
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3, 7, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    dx = da.from_array(x, chunks=(2, 3, 7, 7))
    conv = dict(padding=2, padding_mode=mode)
    with dask.config.set(scheduler="threads"):
        y = fdask.conv2d(dx, w, **conv).compute()
        g = rng.standard_normal(y.shape)
        gx = fdask.conv2d_input_grad(x.shape, w, da.from_array(g, chunks=(2, 4, 9, 9)),
                                     **conv).compute()
        gw = fdask.conv2d_weight_grad(dx, w.shape, da.from_array(g, chunks=(2, 4, 9, 9)),
                                      **conv).compute()
    assert_close(y, fastconv.conv2d(x, w, **conv), np.float64)
    assert_close(gx, fastconv.conv2d_input_grad(x.shape, w, g, **conv), np.float64)
    assert_close(gw, fastconv.conv2d_weight_grad(x, w.shape, g, **conv), np.float64)
