"""Everyday use: "same" with flip as SciPy/NumPy, unbatched inputs as PyTorch,
and errors that say what to write instead of printing whole arrays."""
import numpy as np
import pytest
from scipy import signal

import fastconv
from reference import assert_close

METHODS = ["stretch", "mapped", "auto"]


def _dilated(kernel, dilation):
    """The kernel with dilation - 1 zeros inserted between its taps."""
    dilation = (dilation,) * kernel.ndim if np.ndim(dilation) == 0 else dilation
    shape = tuple(d * (k - 1) + 1 for k, d in zip(kernel.shape, dilation))
    out = np.zeros(shape, kernel.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = kernel
    return out


# --------------------------------------------------------------------------
# 1. padding="same" with flip=True is SciPy's / NumPy's "same"

def test_issue_example_1d():
    y = fastconv.conv1d([[[1., 2, 3, 4, 5]]], [[[1., 10]]], padding="same", flip=True)
    assert y.tolist() == [[[1., 12., 23., 34., 45.]]]
    assert y[0, 0].tolist() == np.convolve([1., 2, 3, 4, 5], [1., 10], mode="same").tolist()
    # without flip: PyTorch's 'same' (extra padding at the end), as correlate
    y = fastconv.conv1d([[[1., 2, 3, 4, 5]]], [[[1., 10]]], padding="same")
    assert y.tolist() == [[[21., 32., 43., 54., 5.]]]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("R, S", [(4, 4), (2, 3), (3, 2), (3, 3), (1, 4), (5, 6)])
@pytest.mark.parametrize("dilation", [1, 2, (1, 3), (2, 1)])
def test_same_2d_matches_scipy(R, S, dilation, method):
    rng = np.random.default_rng(R * 10 + S)
    image, kernel = rng.standard_normal((13, 12)), rng.standard_normal((R, S))
    dk = _dilated(kernel, dilation)
    for flip, fn in ((True, signal.convolve2d), (False, signal.correlate2d)):
        out = fastconv.conv2d(image[None, None], kernel[None, None], padding="same",
                              dilation=dilation, flip=flip, method=method)[0, 0]
        assert_close(out, fn(image, dk, mode="same"), np.float64)
        if flip:
            assert_close(out, signal.convolve(image, dk, mode="same"), np.float64)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("S", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_1d_matches_numpy(S, dilation, method):
    rng = np.random.default_rng(S + 100 * dilation)
    x, k = rng.standard_normal(31), rng.standard_normal(S)
    dk = _dilated(k, dilation)
    out = fastconv.conv1d(x[None, None], k[None, None], padding="same", dilation=dilation,
                          flip=True, method=method)[0, 0]
    assert_close(out, np.convolve(x, dk, mode="same"), np.float64)
    assert_close(out, signal.convolve(x, dk, mode="same"), np.float64)
    out = fastconv.conv1d(x[None, None], k[None, None], padding="same", dilation=dilation,
                          method=method)[0, 0]
    assert_close(out, signal.correlate2d(x[None], dk[None], mode="same")[0], np.float64)


def test_same_flip_multichannel_and_gradients_agree():
    """Every entry point resolves 'same' with flip the same way: the
    gradients are the adjoints of the flipped 'same' convolution."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((4, 3, 2, 4))
    conv = dict(padding="same", flip=True, dilation=(2, 1))
    y = fastconv.conv2d(x, w, **conv)
    for k in range(4):
        expected = sum(signal.convolve2d(x[n, c], _dilated(w[k, c], (2, 1)), mode="same")
                       for c in range(3) for n in [0])
        assert_close(y[0, k], expected, np.float64)
    g = rng.standard_normal(y.shape)
    lhs = np.vdot(y, g)
    dx = fastconv.conv2d_input_grad(x.shape, w, g, **conv)
    dw = fastconv.conv2d_weight_grad(x, w.shape, g, **conv)
    assert abs(lhs - np.vdot(x, dx)) < 1e-10 * abs(lhs)
    assert abs(lhs - np.vdot(w, dw)) < 1e-10 * abs(lhs)
    plan = fastconv.plan_conv2d(x.shape, w.shape, "float64", **conv)
    assert_close(plan.execute(x, w), y, np.float64)


# --------------------------------------------------------------------------
# 2. unbatched inputs, as PyTorch

@pytest.mark.parametrize("method", METHODS)
def test_unbatched_conv2d_and_conv1d(method):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((4, 9, 8)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    y = fastconv.conv2d(x, w, b, padding=1, groups=2, method=method)
    assert y.shape == (6, 9, 8)
    assert_close(y, fastconv.conv2d(x[None], w, b, padding=1, groups=2, method=method)[0], np.float64)
    out = np.empty((6, 9, 8))
    assert fastconv.conv2d(x, w, b, padding=1, groups=2, out=out) is out
    assert_close(out, y, np.float64)
    x1, w1 = rng.standard_normal((3, 20)), rng.standard_normal((5, 3, 4))
    y1 = fastconv.conv1d(x1, w1, padding="same", flip=True, method=method)
    assert y1.shape == (5, 20)
    assert_close(y1, fastconv.conv1d(x1[None], w1, padding="same", flip=True)[0], np.float64)


def test_unbatched_gradients_and_transpose():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((3, 8, 9)), rng.standard_normal((4, 3, 3, 2))
    g = rng.standard_normal((4, 6, 8))
    dx = fastconv.conv2d_input_grad(x.shape, w, g)
    assert dx.shape == (3, 8, 9)
    assert_close(dx, fastconv.conv2d_input_grad((1,) + x.shape, w, g[None])[0], np.float64)
    out = np.empty((3, 8, 9))
    assert fastconv.conv2d_input_grad(x.shape, w, g, out=out) is out
    assert_close(out, dx, np.float64)
    dw = fastconv.conv2d_weight_grad(x, w.shape, g)
    assert_close(dw, fastconv.conv2d_weight_grad(x[None], w.shape, g[None]), np.float64)
    x1, g1 = rng.standard_normal((3, 10)), rng.standard_normal((2, 8))
    w1 = rng.standard_normal((2, 3, 3))
    assert_close(fastconv.conv1d_input_grad(x1.shape, w1, g1),
                 fastconv.conv1d_input_grad((1, 3, 10), w1, g1[None])[0], np.float64)
    assert_close(fastconv.conv1d_weight_grad(x1, w1.shape, g1),
                 fastconv.conv1d_weight_grad(x1[None], w1.shape, g1[None]), np.float64)
    # transposed: weight (C_in, C_out/groups, R, S), x (C_in, H, W)
    wt, bt = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(2)
    up = fastconv.conv_transpose2d(g, wt, bt, stride=2, padding=1, output_padding=1)
    assert up.shape == (2, 12, 16)
    assert_close(up, fastconv.conv_transpose2d(g[None], wt, bt, stride=2, padding=1,
                                               output_padding=1)[0], np.float64)
    out = np.empty((2, 12, 16))
    assert fastconv.conv_transpose2d(g, wt, bt, stride=2, padding=1, output_padding=1,
                                     out=out) is out
    assert_close(out, up, np.float64)
    up1 = fastconv.conv_transpose1d(g1, w1)
    assert up1.shape == (3, 10)
    assert_close(up1, fastconv.conv_transpose1d(g1[None], w1)[0], np.float64)


def test_plain_image_and_kernel_say_what_to_write():
    image, kernel = np.ones((8, 8)), np.ones((3, 3))
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(image, kernel)
    msg = str(info.value)
    assert "(8, 8)" in msg and "(3, 3)" in msg
    assert "fastconv.conv2d(x[None, None], w[None, None])[0, 0]" in msg
    with pytest.raises(ValueError, match=r"fastconv.conv1d\(x\[None, None\], w\[None, None\]\)\[0, 0\]"):
        fastconv.conv1d(np.ones(9), np.ones(3))
    # an (H, W) image with a 4-D single-channel weight: add the channel axis
    with pytest.raises(ValueError, match=r"x must be 4-D .*\(8, 8\).*single-channel image\? "
                                         r"use fastconv.conv2d\(x\[None\], w\)\[0\]"):
        fastconv.conv2d(image, np.ones((2, 1, 3, 3)))
    # a batch of single-channel images (N, H, W)
    with pytest.raises(ValueError, match=r"\(5, 8, 8\).*x\[:, None\]"):
        fastconv.conv2d(np.ones((5, 8, 8)), np.ones((2, 1, 3, 3)))


def test_channels_last_hint():
    w = np.ones((6, 3, 3, 3))
    with pytest.raises(ValueError, match=r"channels-last.*x.transpose\(0, 3, 1, 2\)"):
        fastconv.conv2d(np.ones((2, 16, 16, 3)), w)
    with pytest.raises(ValueError, match=r"channels-last.*x.transpose\(2, 0, 1\)"):
        fastconv.conv2d(np.ones((16, 16, 3)), w)
    with pytest.raises(ValueError, match=r"channels-last.*x.transpose\(0, 2, 1\)"):
        fastconv.conv1d(np.ones((2, 20, 3)), np.ones((4, 3, 5)))
    with pytest.raises(ValueError, match=r"channels-last.*x.transpose\(0, 3, 1, 2\)"):
        fastconv.conv_transpose2d(np.ones((2, 5, 5, 3)), np.ones((3, 2, 3, 3)))
    # a matching channel count gets no such hint
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(np.ones((2, 4, 16, 16)), w)
    assert "channels-last" not in str(info.value)


def test_missing_batch_axis_hints_in_gradients():
    w, g = np.ones((4, 3, 3, 3)), np.ones((2, 4, 6, 7))
    with pytest.raises(ValueError, match=r"input_shape must be a tuple of 4 ints.*batch axis"):
        fastconv.conv2d_input_grad((3, 8, 9), w, g)
    with pytest.raises(ValueError, match=r"x is unbatched.*x\[None\]"):
        fastconv.conv2d_weight_grad(np.ones((3, 8, 9)), w.shape, g[:1])
    with pytest.raises(ValueError, match=r"batch axis\? pass grad_output\[None\]"):
        fastconv.conv2d_weight_grad(np.ones((1, 3, 8, 9)), w.shape, g[0])


# --------------------------------------------------------------------------
# 3. errors that summarise arrays and name the argument

def test_weight_array_instead_of_shape():
    x, w = np.ones((8, 1, 28, 28)), np.ones((4, 1, 3, 3))
    g = np.ones((8, 4, 26, 26))
    with pytest.raises(TypeError) as info:
        fastconv.conv2d_weight_grad(x, w, g)
    msg = str(info.value)
    assert "weight_shape" in msg and "ndarray of shape (4, 1, 3, 3)" in msg and "w.shape" in msg
    assert len(msg) < 200
    with pytest.raises(TypeError) as info:
        fastconv.conv2d_input_grad(x, w, g)
    msg = str(info.value)
    assert "input_shape" in msg and "ndarray of shape (8, 1, 28, 28)" in msg and "x.shape" in msg
    assert len(msg) < 200
    # a nested list is an array's values too, not a shape
    with pytest.raises(TypeError, match=r"weight_shape must be a shape tuple.*w.shape"):
        fastconv.conv2d_weight_grad(x, w.tolist(), g)
    # a 1-D integer array still works as a shape
    assert fastconv.conv2d_weight_grad(x, np.array(w.shape), g).shape == w.shape


def test_plan_with_arrays_instead_of_shapes():
    x, w = np.ones((8, 1, 28, 28)), np.ones((4, 1, 3, 3))
    with pytest.raises(TypeError) as info:
        fastconv.plan_conv2d(x, w)
    msg = str(info.value)
    assert msg.startswith("x_shape must be a shape tuple, got ndarray of shape (8, 1, 28, 28)")
    assert "pass x.shape" in msg and len(msg) < 200
    with pytest.raises(TypeError, match=r"weight_shape must be a shape tuple, got ndarray of "
                                        r"shape \(4, 1, 3, 3\).*pass w.shape"):
        fastconv.plan_conv2d(x.shape, w)
    with pytest.raises(TypeError, match=r"x_shape must be a shape tuple, got the string"):
        fastconv.plan_conv2d("x", w.shape)
    assert fastconv.plan_conv2d(x.shape, w.shape).output_shape == (8, 4, 26, 26)


@pytest.mark.parametrize("fn, x, w", [
    (fastconv.conv2d, np.ones((1, 1, 5, 5)), np.ones((1, 1, 2, 2))),
    (fastconv.conv1d, np.ones((1, 1, 5)), np.ones((1, 1, 2))),
    (fastconv.conv_transpose2d, np.ones((1, 1, 5, 5)), np.ones((1, 1, 2, 2))),
])
def test_positional_padding_string(fn, x, w):
    with pytest.raises(TypeError) as info:
        fn(x, w, "same")
    msg = str(info.value)
    assert "bias got the string 'same'" in msg and "keyword-only" in msg
    assert "padding='same'" in msg


@pytest.mark.parametrize("call, name", [
    (lambda: fastconv.conv2d("image.png", np.ones((1, 1, 2, 2))), "x"),
    (lambda: fastconv.conv2d(np.ones((1, 1, 5, 5)), "kernel"), "weight"),
    (lambda: fastconv.conv2d_input_grad((1, 1, 5, 5), np.ones((1, 1, 2, 2)), "g"), "grad_output"),
    (lambda: fastconv.conv2d_weight_grad("x", (1, 1, 2, 2), np.ones((1, 1, 4, 4))), "x"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 1, 5, 5)), "w"), "weight"),
])
def test_strings_where_arrays_go(call, name):
    with pytest.raises(TypeError, match=rf"^{name} must be an array, got the string"):
        call()


def test_messages_never_print_whole_arrays():
    x, w = np.ones((2, 4, 8, 8)), np.ones((6, 4, 3, 3))
    big = np.arange(100)
    for kwargs in (dict(stride=big), dict(dilation=big), dict(padding=big),
                   dict(padding=np.ones((3, 3))), dict(stride=list(range(100)))):
        with pytest.raises((ValueError, TypeError)) as info:
            fastconv.conv2d(x, w, **kwargs)
        msg = str(info.value)
        assert len(msg) < 250, msg
        assert "99" not in msg or "shape" in msg, msg


def test_unbatched_out_of_wrong_shape_names_the_unbatched_shapes():
    x, w = np.ones((4, 9, 8)), np.ones((6, 4, 3, 3))
    with pytest.raises(ValueError, match=r"out has shape \(6, 9, 7\), but the result has shape \(6, 7, 6\)"):
        fastconv.conv2d(x, w, out=np.empty((6, 9, 7)))
    with pytest.raises(ValueError, match=r"out has shape \(4, 9, 9\), but the result has shape \(4, 9, 8\)"):
        fastconv.conv2d_input_grad(x.shape, w, np.ones((6, 7, 6)), out=np.empty((4, 9, 9)))
