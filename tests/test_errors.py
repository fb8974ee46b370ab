"""Bad input gets a clear error naming the argument and the shapes."""
import numpy as np
import pytest

import fastconv

X = np.zeros((2, 4, 8, 8))
W = np.zeros((6, 4, 3, 3))


def _raises(exc, match, *args, fn=fastconv.conv2d, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("x, w, match", [
    # 3-D is an unbatched (C, H, W) image, as in PyTorch: wrong only if C does not match
    (np.zeros((3, 8, 8)), W, r"x must be 4-D .*\(3, 8, 8\)"),
    (np.zeros((8, 8)), W, r"x must be 4-D .*\(8, 8\)"),
    (np.zeros((1, 2, 4, 8, 8)), W, r"x must be 4-D"),
    (X, np.zeros((6, 4, 3)), r"weight must be 4-D .*\(6, 4, 3\)"),
    (X, np.zeros((6, 3, 3, 3)), r"weight.shape\[1\] must be C/groups .*\(2, 4, 8, 8\).*\(6, 3, 3, 3\)"),
    (X, np.zeros((6, 4, 9, 3)), r"kernel larger than the padded input.*\(2, 4, 8, 8\).*\(6, 4, 9, 3\)"),
    (np.float64(3.0), W, r"x must be 4-D"),
])
def test_shape_errors(x, w, match):
    _raises(ValueError, match, x, w)


def test_kernel_larger_than_padded_input_with_dilation():
    msg = _raises(ValueError, "kernel larger", X, W, dilation=4)
    assert "dilation 4" in msg and "spans 9" in msg
    # padding can make it fit
    assert fastconv.conv2d(X, W, dilation=4, padding=1).shape == (2, 6, 2, 2)


@pytest.mark.parametrize("groups, match", [
    (3, r"x has 4 channels.*not divisible by groups=3"),
    (0, r"groups must be >= 1"),
    (-2, r"groups must be >= 1"),
    (1.5, r"groups must be given as ints"),
    (True, r"groups must be given as ints"),
])
def test_group_errors(groups, match):
    _raises((ValueError, TypeError), match, X, W, groups=groups)


def test_filters_not_divisible_by_groups():
    _raises(ValueError, r"weight has 5 filters .*not divisible by groups=2", X, np.zeros((5, 2, 3, 3)), groups=2)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(stride=0), ValueError, r"stride must be >= 1"),
    (dict(stride=(1, -1)), ValueError, r"stride must be >= 1"),
    (dict(stride=(1, 2, 3)), TypeError, r"stride must be an int or a sequence of 2 ints"),
    (dict(stride=1.0), TypeError, r"stride"),
    (dict(dilation=0), ValueError, r"dilation must be >= 1"),
    (dict(dilation="2"), TypeError, r"dilation"),
    (dict(padding=-1), ValueError, r"padding must be >= 0"),
    (dict(padding=((0, -1), (0, 0))), ValueError, r"padding must be >= 0"),
    (dict(padding="sometimes"), ValueError, r"padding='sometimes' is not one of"),
    (dict(padding=(1, 2, 3)), ValueError, r"padding=.*one entry per spatial axis"),
    (dict(padding=((1, 2, 3), 0)), ValueError, r"padding=.*before, after"),
    (dict(padding=1.5), TypeError, r"padding"),
    (dict(padding="same", stride=2), ValueError, r"padding='same' needs stride 1"),
    (dict(method="fastest"), ValueError, r"method='fastest' is not one of"),
    (dict(method="gemm1x1"), ValueError, r"method='gemm1x1' needs a 1x1 kernel"),
    (dict(num_threads=0), ValueError, r"num_threads must be >= 1"),
    (dict(num_threads=-3), ValueError, r"num_threads must be >= 1"),
    (dict(num_threads=2.0), TypeError, r"num_threads must be an int"),
    (dict(memory_limit="lots"), ValueError, r"memory_limit='lots' is not a size"),
    (dict(memory_limit="12 parsecs"), ValueError, r"memory_limit='12 parsecs' is not a size"),
    (dict(memory_limit=-5), ValueError, r"memory_limit must be a non-negative"),
    (dict(memory_limit=[1]), TypeError, r"memory_limit must be a number"),
])
def test_parameter_errors(kwargs, exc, match):
    _raises(exc, match, X, W, **kwargs)


@pytest.mark.parametrize("bias", [np.zeros(5), np.zeros((6, 1)), np.zeros(7), np.zeros(())])
def test_bias_of_wrong_shape(bias):
    msg = _raises(ValueError, r"bias must have shape \(6,\)", X, W, bias)
    assert str(bias.shape) in msg and "(6, 4, 3, 3)" in msg


@pytest.mark.parametrize("bad", [
    np.zeros((2, 4, 8, 8), np.complex128),
    np.zeros((2, 4, 8, 8), object),
    np.full((2, 4, 8, 8), "a"),
    np.zeros((2, 4, 8, 8), "datetime64[s]"),
])
def test_unsupported_dtypes(bad):
    msg = _raises(TypeError, r"x has dtype", bad, W)
    assert "(2, 4, 8, 8)" in msg
    _raises(TypeError, r"weight has dtype", X, bad[:, :, :3, :3].reshape(2, 4, 3, 3)[:, :4])
    _raises(TypeError, r"bias has dtype", X, W, bad.ravel()[:6])


def test_ragged_input():
    _raises(TypeError, r"x cannot be converted", [[[[1, 2], [3]]]], W)


def test_workspace_limit_error_says_how_much():
    x = np.zeros((2, 64, 56, 56), np.float32)
    w = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(fastconv.WorkspaceLimitError, match=r"needs \d+ bytes") as info:
        fastconv.conv2d(x, w, padding=1, memory_limit=1000)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(fastconv.WorkspaceLimitError, match=r"method='stretch' needs \d+ bytes"):
        fastconv.conv2d(x, w, padding=1, method="stretch", memory_limit="1MiB")


def test_conv1d_errors_speak_1d():
    _raises(ValueError, r"x must be 3-D \(N, C, L\)", np.zeros((2, 4, 8, 8)), np.zeros((3, 4, 2)), fn=fastconv.conv1d)
    _raises(ValueError, r"weight must be 3-D \(K, C/groups, S\)", np.zeros((2, 4, 8)), W, fn=fastconv.conv1d)
    _raises(ValueError, r"kernel larger.*\(2, 4, 8\)", np.zeros((2, 4, 8)), np.zeros((3, 4, 9)), fn=fastconv.conv1d)


def test_plan_execute_checks_arrays():
    plan = fastconv.plan_conv2d(X.shape, W.shape, "float64")
    _raises(ValueError, r"x has shape \(1, 4, 8, 8\), but the plan is for \(2, 4, 8, 8\)",
            np.zeros((1, 4, 8, 8)), W, fn=plan.execute)
    _raises(ValueError, r"weight has shape", X, np.zeros((6, 4, 2, 2)), fn=plan.execute)
    _raises(TypeError, r"x has dtype complex", X.astype(complex), W, fn=plan.execute)
    _raises(ValueError, r"bias must have shape", X, W, np.zeros(3), fn=plan.execute)
    _raises(TypeError, r"dtype=.* is not supported", X.shape, W.shape, "complex64", fn=fastconv.plan_conv2d)


@pytest.mark.parametrize("kwargs, bad", [
    (dict(stride=(1, 1)), dict(stride=(True, 1))),
    (dict(stride=(1, 1)), dict(stride=(1.0, 1))),
    (dict(padding=((1, 1), (0, 0))), dict(padding=((1.0, 1), (0, 0)))),
    (dict(dilation=1), dict(dilation=True)),
    (dict(groups=1), dict(groups=1.0)),
])
def test_remembered_geometry_does_not_accept_equal_but_invalid_values(kwargs, bad):
    # the geometry of plain arguments is cached; True == 1 and 1.0 == 1
    # must not find the entry of the valid call and skip the validation
    fastconv.conv2d(X, W, **kwargs)
    with pytest.raises(TypeError):
        fastconv.conv2d(X, W, **bad)
