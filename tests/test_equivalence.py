"""The fully connected view: im2col, its adjoint col2im, and conv_matrix."""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings, strategies as st

import fastconv
from reference import assert_close, conv_matrix_reference, im2col_reference


@st.composite
def window_cases(draw):
    R, S = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(tuple(draw(st.integers(0, 2)) for _ in range(2)) for _ in range(2))
    H = draw(st.integers(max(1, dh * (R - 1) + 1 - sum(pads[0])), 9))
    W = draw(st.integers(max(1, dw * (S - 1) + 1 - sum(pads[1])), 9))
    return dict(shape=(draw(st.integers(1, 3)), draw(st.integers(1, 3)), H, W), kernel=(R, S),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=pads,
                dilation=(dh, dw), dtype=draw(st.sampled_from([np.float32, np.float64])),
                threads=draw(st.sampled_from([1, 2])), seed=draw(st.integers(0, 2**31)))


def _conv(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])


@settings(max_examples=300, deadline=None)
@given(window_cases())
def test_im2col_matches_reference_and_col2im_is_its_adjoint(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    cols = fastconv.im2col(x, case["kernel"], num_threads=case["threads"], **_conv(case))
    expected = im2col_reference(x, case["kernel"], **_conv(case))
    assert cols.dtype == case["dtype"]
    assert_close(cols, expected, case["dtype"])
    # <im2col(x), c> == <x, col2im(c)> in float64
    x64 = rng.standard_normal(case["shape"])
    c64 = rng.standard_normal(expected.shape)
    back = fastconv.col2im(c64, x64.shape, case["kernel"], num_threads=case["threads"],
                           **_conv(case))
    lhs = np.vdot(fastconv.im2col(x64, case["kernel"], **_conv(case)), c64)
    assert abs(lhs - np.vdot(x64, back)) <= 1e-10 * max(1.0, abs(lhs))
    # and col2im agrees with the transpose of the reference im2col, entry by entry
    n_in = int(np.prod(case["shape"][1:]))
    basis = np.eye(n_in).reshape((n_in,) + case["shape"][1:])
    stretched = im2col_reference(basis, case["kernel"], **_conv(case))  # (n_in, rows, cols)
    expected_back = np.einsum("irc,nrc->ni", stretched, c64).reshape(case["shape"])
    assert_close(back, expected_back, np.float64)


def test_im2col_reads_any_layout():
    x = np.arange(2 * 3 * 8 * 9, dtype=np.float64).reshape(2, 3, 8, 9)
    for view in (x[:, :, ::-1], np.asfortranarray(x), x.astype(">f8"), x[..., ::2]):
        assert_close(fastconv.im2col(view, 3, padding=1),
                     im2col_reference(view, (3, 3), padding=((1, 1), (1, 1))), np.float64)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
def test_conv_matrix_is_the_layer(groups, sparse):
    rng = np.random.default_rng(groups)
    shape = (4, 6, 5)
    w = rng.standard_normal((6, 4 // groups, 3, 2))
    conv = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
    W = fastconv.conv_matrix(w, shape, groups=groups, **conv)
    if sparse:
        W_sparse = fastconv.conv_matrix(w, shape, groups=groups, sparse=True, **conv)
        assert scipy.sparse.issparse(W_sparse)
        assert W_sparse.nnz == np.count_nonzero(W)
        W_dense = W_sparse.toarray()
    else:
        W_dense = W
    assert_close(W_dense, conv_matrix_reference(w, shape, groups=groups, **conv), np.float64)
    x = rng.standard_normal(shape)
    y = fastconv.conv2d(x[None], w, groups=groups, **conv)
    assert_close(W_dense @ x.ravel(), y.ravel(), np.float64)
    # its transpose is the adjoint of the convolution
    g = rng.standard_normal(y.shape)
    assert abs(np.vdot(y, g) - np.vdot(x, W_dense.T @ g.ravel())) < 1e-10 * np.abs(y).sum()


def test_sparse_conv_matrix_never_builds_the_dense_one():
    # 32 -> 32 channels, 3x3, 28x28: dense would be 25088 x 25088 float32 (2.3 GiB)
    w = np.ones((32, 32, 3, 3), np.float32)
    tracemalloc.start()
    try:
        W = fastconv.conv_matrix(w, (32, 28, 28), padding=1, sparse=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert W.shape == (32 * 784, 32 * 784)
    assert W.nnz == 32 * 32 * (26 * 26 * 9 + 4 * 26 * 6 + 4 * 4)
    nnz_bytes = W.nnz * (4 + 8 + 8)  # value, row, column
    assert peak < 6 * nnz_bytes  # a few arrays of the nonzeros, nothing of the dense size


def test_bad_input():
    with pytest.raises(ValueError, match="cols must have shape"):
        fastconv.col2im(np.ones((1, 4, 5)), (1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match="input_shape must be"):
        fastconv.conv_matrix(np.ones((1, 1, 2, 2)), (1, 1, 3, 3))
    with pytest.raises(ValueError, match="kernel_size"):
        fastconv.im2col(np.ones((1, 1, 3, 3)), 0)
    with pytest.raises(ValueError, match="4-D"):
        fastconv.im2col(np.ones((3, 3)), 2)
    with pytest.raises(TypeError, match="dtype"):
        fastconv.im2col(np.ones((1, 1, 3, 3), complex), 2)
