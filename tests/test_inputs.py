"""Any array a user can hand over: layouts, dtypes, special values, empty batches."""
import numpy as np
import pytest

import fastconv
from reference import assert_close, conv2d_reference

METHODS = ["stretch", "mapped", "auto"]


def _data(seed=0, shape=(3, 4, 9, 11), wshape=(5, 4, 3, 3), dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(wshape).astype(dtype)


def _layouts(x):
    """The same values of x laid out in memory in every way NumPy allows."""
    yield "c-contiguous", x
    yield "fortran", np.asfortranarray(x)
    yield "transposed view", np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    yield "reversed strides", np.ascontiguousarray(x[::-1, ::-1, ::-1, ::-1])[::-1, ::-1, ::-1, ::-1]
    big = np.zeros((x.shape[0] * 2, x.shape[1] + 3, x.shape[2] * 3, x.shape[3] * 2), x.dtype)
    big[::2, 1:1 + x.shape[1], ::3, ::2] = x
    yield "strided slice", big[::2, 1:1 + x.shape[1], ::3, ::2]
    ro = x.copy()
    ro.flags.writeable = False
    yield "read-only", ro
    yield "big-endian", x.astype(x.dtype.newbyteorder(">"))
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(x.dtype).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    yield "unaligned", unaligned
    yield "memmap-like (from buffer)", np.frombuffer(x.tobytes(), x.dtype).reshape(x.shape)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layout_gives_the_same_answer(method, dtype):
    x, w = _data(dtype=dtype)
    expected = conv2d_reference(x, w, stride=(1, 2), padding=((1, 0), (2, 1)))
    for name, xl in _layouts(x):
        for wname, wl in _layouts(w):
            out = fastconv.conv2d(xl, wl, stride=(1, 2), padding=((1, 0), (2, 1)), method=method)
            assert out.flags.c_contiguous, (name, wname)
            assert out.dtype == dtype, (name, wname)
            assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_layouts(dtype):
    # the 1x1 path reads planes directly: every layout must still work
    x, w = _data(shape=(2, 6, 5, 7), wshape=(4, 3, 1, 1), dtype=dtype)
    expected = conv2d_reference(x, w, groups=2)
    for name, xl in _layouts(x):
        out = fastconv.conv2d(xl, w, groups=2)
        assert_close(out, expected, dtype)


def test_broadcast_input_with_zero_strides():
    row = np.arange(7.0)
    x = np.broadcast_to(row, (2, 3, 6, 7))  # strides (0, 0, 0, 8), read-only
    w = np.random.default_rng(0).standard_normal((2, 3, 2, 3))
    for method in ["stretch", "mapped"]:
        assert_close(fastconv.conv2d(x, w, padding=1, method=method),
                     conv2d_reference(np.array(x), w, padding=((1, 1), (1, 1))), np.float64)
    w1 = np.random.default_rng(1).standard_normal((4, 3, 1, 1))
    assert_close(fastconv.conv2d(x, w1), conv2d_reference(np.array(x), w1), np.float64)


def test_nested_lists_are_arrays():
    x = [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]
    w = [[[[1, 0], [0, -1]]]]
    out = fastconv.conv2d(x, w)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[[[-4.0, -4.0], [-4.0, -4.0]]]])


@pytest.mark.parametrize("xdtype, wdtype, expected", [
    (np.int32, np.float32, np.float64),     # integers count as float64
    (np.int64, np.int64, np.float64),
    (np.bool_, np.float64, np.float64),
    (np.uint8, np.float32, np.float64),
    (np.float32, np.float64, np.float64),   # mixed floats promote
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float16),   # computed in float32
    (np.float16, np.float32, np.float32),
])
def test_dtype_rules(xdtype, wdtype, expected):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 2, 6, 6)) * 3).astype(xdtype)
    w = (rng.standard_normal((3, 2, 2, 2)) * 3).astype(wdtype)
    out = fastconv.conv2d(x, w, padding=1)
    assert out.dtype == expected
    ref = conv2d_reference(x, w, padding=((1, 1), (1, 1)))
    if expected == np.float16:
        np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2e-3, atol=2e-2)
    else:
        assert_close(out, ref, expected)


def test_bias_dtype_participates():
    x, w = _data(dtype=np.float32)
    out = fastconv.conv2d(x, w, np.zeros(5, np.float64))
    assert out.dtype == np.float64


@pytest.mark.parametrize("method", ["stretch", "mapped"])
def test_nan_and_inf_propagate(method):
    x, w = _data()
    x[0, 1, 4, 5] = np.nan
    x[1, 2, 0, 0] = np.inf
    out = fastconv.conv2d(x, w, padding=1, method=method)
    ref = conv2d_reference(x, w, padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    assert np.isnan(out[0, :, 3:6, 4:7]).all()
    finite = np.isfinite(ref)
    assert_close(out[finite], ref[finite], np.float64)


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch_gives_empty_output(method):
    x = np.zeros((0, 4, 9, 11), np.float32)
    w = np.zeros((5, 4, 3, 3), np.float32)
    out = fastconv.conv2d(x, w, padding=1, method=method)
    assert out.shape == (0, 5, 9, 11) and out.dtype == np.float32
    assert fastconv.conv1d(np.zeros((0, 2, 5)), np.zeros((3, 2, 2))).shape == (0, 3, 4)


def test_no_filters_and_no_channels():
    assert fastconv.conv2d(np.ones((2, 3, 4, 4)), np.ones((0, 3, 2, 2))).shape == (2, 0, 3, 3)
    # zero input channels: nothing to sum, the output is the bias
    out = fastconv.conv2d(np.ones((2, 0, 4, 4)), np.ones((3, 0, 2, 2)), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([1.0, 2, 3])[:, None, None], (2, 3, 3, 3)))


def test_input_of_only_padding():
    # zero-height input padded to a valid size: every tap lands in the padding
    out = fastconv.conv2d(np.ones((1, 2, 0, 3)), np.ones((2, 2, 1, 1)), np.array([5.0, 6.0]), padding=1)
    assert out.shape == (1, 2, 2, 5)
    np.testing.assert_array_equal(out[0, 0], 5.0)
    np.testing.assert_array_equal(out[0, 1], 6.0)


def test_inputs_are_not_modified():
    x, w = _data()
    x0, w0 = x.copy(), w.copy()
    fastconv.conv2d(x, w, np.ones(5), padding=1, flip=True)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_large_values_keep_precision_float64():
    x, w = _data()
    x *= 1e150
    out = fastconv.conv2d(x, w, method="mapped")
    assert_close(out / 1e150, conv2d_reference(x / 1e150, w), np.float64)
