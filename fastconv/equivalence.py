"""The fully connected view of a convolution.

A convolutional layer is a fully connected layer whose weight matrix is
sparse and shares its values. Two factorisations make that concrete:

* ``im2col``: stretch every input window into a column. The convolution is
  then one matrix product, ``weight.reshape(K, -1) @ im2col(x)[n]``, the
  lowering fastconv computes with. ``col2im`` is its adjoint (transpose):
  each column is added back where it came from, overlaps summed.
* ``conv_matrix``: the (K*Ho*Wo) x (C*H*W) matrix ``W`` of the layer itself,
  with ``conv2d(x[None], weight)[0].ravel() == W @ x.ravel()``. Each row holds
  one filter placed at one output position; most entries are zero.
"""
import numpy as np

from fastconv import _config, _runtime
from fastconv._execute import check_out, writable_in_place
from fastconv._params import as_array, conv_geometry, int_tuple, kernel_input, resolve_dtypes

__all__ = ["im2col", "col2im", "conv_matrix"]


def _window_geometry(x_shape, kernel_size, stride, padding, dilation, padding_mode, name):
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x_shape}")
    R, S = int_tuple(kernel_size, "kernel_size", 2, 1)
    C = x_shape[1]
    return conv_geometry(x_shape, (1, C, R, S), stride=stride, padding=padding,
                         dilation=dilation, groups=1, padding_mode=padding_mode)


def _row_table(g):
    """The index map's row table of a window geometry (groups 1)."""
    from fastconv._lowerings import row_table_shape
    return np.empty(row_table_shape(g), dtype=np.intp)


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, padding_mode="zeros",
           num_threads=None, out=None):
    """The stretched (im2col) matrix of every image: one column per window.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size : int or (int, int)
        (R, S).
    stride, padding, dilation, padding_mode
        As in :func:`fastconv.conv2d`.
    num_threads : int, optional
    out : ndarray, optional
        Where to write the result (as in :func:`fastconv.conv2d`).

    Returns
    -------
    ndarray, shape (N, C*R*S, Ho*Wo)
        Row ``(c*R + r)*S + s``, column ``oh*Wo + ow`` holds
        ``x[n, c, oh*sh + r*dh - pad_top, ow*sw + s*dw - pad_left]``, or in
        the padding 0 (or, with another ``padding_mode``, the element it
        reads). ``weight.reshape(K, -1) @ cols[n]`` is ``conv2d(x, weight)[n]``
        flattened.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.im2col(x, 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    from fastconv._kernels.stretch import im2col as im2col_kernel
    x = as_array(x, "x")
    compute, result = resolve_dtypes(x=x)
    g = _window_geometry(x.shape, kernel_size, stride, padding, dilation, padding_mode, "x")
    _, threads = _config.resolve(None, num_threads)
    shape = (g.N, g.rows, g.cols)
    if out is not None:
        check_out(out, shape, result)
    cols = out if out is not None and writable_in_place(out, compute, [x]) else np.empty(
        shape, dtype=compute)
    if cols.size and x.size:
        x = kernel_input(x, compute)
        _runtime.run_kernel(lambda: im2col_kernel(x, cols, _row_table(g), g.index_args(),
                                                  threads), threads)
    else:
        # an input with no elements (H or W of 0, padded) gives all-padding columns
        cols[...] = 0
    return _delivered(cols, result, out)


def col2im(cols, input_shape, kernel_size, *, stride=1, padding=0, dilation=1,
           padding_mode="zeros", num_threads=None, out=None):
    """The adjoint of :func:`im2col`: add every column back into its window.

    Parameters
    ----------
    cols : array_like, shape (N, C*R*S, Ho*Wo)
    input_shape : tuple of int
        (N, C, H, W) of the image the columns came from.
    kernel_size, stride, padding, dilation, padding_mode
        As for :func:`im2col`.
    num_threads : int, optional
    out : ndarray, optional
        Where to write the result (as in :func:`fastconv.conv2d`).

    Returns
    -------
    ndarray, shape input_shape
        Elements covered by several windows receive the sum of their copies;
        entries that fell in zero padding are dropped (with another
        ``padding_mode``, added into the element they read). For any x and c,
        ``(im2col(x) * c).sum() == (x * col2im(c)).sum()``: the two are
        transposes of one linear map. ``col2im(im2col(x))`` is therefore x
        times the number of windows covering each element, not x.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.col2im(np.ones((1, 4, 4)), (1, 1, 3, 3), 2)[0, 0]  # windows per pixel
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    from fastconv._kernels.col2im import col2im as col2im_kernel
    cols = as_array(cols, "cols")
    compute, result = resolve_dtypes(cols=cols)
    g = _window_geometry(input_shape, kernel_size, stride, padding, dilation, padding_mode,
                         "input_shape")
    expected = (g.N, g.rows, g.cols)
    if cols.shape != expected:
        raise ValueError(
            f"cols must have shape (N, C*R*S, Ho*Wo) = {expected} for input_shape "
            f"{tuple(input_shape)} and kernel {g.R}x{g.S}, got shape {cols.shape}")
    _, threads = _config.resolve(None, num_threads)
    shape = (g.N, g.C, g.H, g.W)
    if out is not None:
        check_out(out, shape, result)
    x = out if out is not None and writable_in_place(out, compute, [cols]) else np.empty(
        shape, dtype=compute)
    x[...] = 0  # the kernel adds into it
    if cols.size and x.size:
        cols = np.ascontiguousarray(cols, dtype=compute)
        _runtime.run_kernel(lambda: col2im_kernel(cols, x, _row_table(g), g.index_args(),
                                                  threads), threads)
    return _delivered(x, result, out)


def _delivered(array, result, out):
    """The computed array as the caller asked for it: in `out` (written
    there already, or copied into it), else in the result dtype."""
    if out is None:
        return array if array.dtype == result else array.astype(result)
    if array is not out:
        np.copyto(out, array.astype(result, copy=False), casting="safe")
    return out


def conv_matrix(weight, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                padding_mode="zeros", sparse=False):
    """The matrix of a convolutional layer seen as a fully connected layer.

    Parameters
    ----------
    weight : array_like, shape (K, C/groups, R, S)
    input_shape : tuple of int
        (C, H, W) of one image.
    stride, padding, dilation, groups, padding_mode
        As in :func:`fastconv.conv2d`.
    sparse : bool
        Return a ``scipy.sparse`` CSR matrix, built from its nonzeros without
        a dense intermediate (a ResNet layer's matrix has billions of entries,
        fewer than one in a thousand nonzero).

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix, shape (K*Ho*Wo, C*H*W)
        ``W`` with ``conv2d(x[None], weight, ...)[0].ravel() == W @ x.ravel()``.
        Row ``(k*Ho + oh)*Wo + ow`` is filter k placed at output (oh, ow).

    Notes
    -----
    ``W.T`` maps an output gradient to the input gradient, and is itself a
    convolution: the full correlation with the kernel mirrored in space (and
    the roles of K and C swapped). For one channel, a 3-tap kernel [a, b, c]
    on a 4-sample input without padding gives::

        W = [[a, b, c, 0],        W.T = [[a, 0],
             [0, a, b, c]]               [b, a],
                                         [c, b],
                                         [0, c]]

    and each row of W.T, read right to left, is the mirrored kernel [c, b, a]
    sliding over the (zero-padded) output gradient.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_matrix(np.array([[[[1.0, 2.0, 3.0]]]]), (1, 1, 4))
    array([[1., 2., 3., 0.],
           [0., 1., 2., 3.]])
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 5))
    >>> w = np.random.default_rng(1).standard_normal((2, 3, 3, 3))
    >>> W = fastconv.conv_matrix(w, x.shape, padding=1, sparse=True)
    >>> np.allclose(W @ x.ravel(), fastconv.conv2d(x[None], w, padding=1).ravel())
    True
    """
    weight = as_array(weight, "weight")
    compute, result = resolve_dtypes(weight=weight)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) of one image, got {input_shape}")
    g = conv_geometry((1,) + input_shape, weight.shape, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, padding_mode=padding_mode)
    n_out, n_in = g.K * g.cols, g.C * g.H * g.W
    # Which input element each (tap, output position) reads: im2col of the
    # element numbers 1..C*H*W (0 = padding), exact in float64 below 2**53.
    numbers = np.arange(1, n_in + 1, dtype=np.float64).reshape((1,) + input_shape)
    # (other padding modes read input elements there: their numbers)
    source = im2col(numbers, (g.R, g.S), stride=g.stride, padding=g.padding,
                    dilation=g.dilation, padding_mode=g.padding_mode,
                    num_threads=1)[0].astype(np.int64) - 1
    rows_g, k_g = g.rows, g.K // g.groups
    filters = weight.astype(result, copy=False).reshape(g.K, rows_g)
    out_rows, in_cols, values = [], [], []
    for grp in range(g.groups):
        taps = source[grp * rows_g:(grp + 1) * rows_g]    # (rows, cols)
        tap, pos = np.nonzero(taps >= 0)                    # valid (tap, position) pairs
        ks = np.arange(grp * k_g, (grp + 1) * k_g)
        out_rows.append((ks[:, None] * g.cols + pos[None, :]).ravel())
        in_cols.append(np.broadcast_to(taps[tap, pos], (k_g, tap.size)).ravel())
        values.append(filters[ks][:, tap].ravel())
    out_rows, in_cols, values = (np.concatenate(a) for a in (out_rows, in_cols, values))
    if sparse:
        from scipy.sparse import csr_matrix
        return csr_matrix((values, (out_rows, in_cols)), shape=(n_out, n_in))
    dense = np.zeros((n_out, n_in), dtype=result)
    if g.padding_mode == "zeros":
        dense[out_rows, in_cols] = values
    else:  # a window may read an element twice (reflected): the taps add up
        np.add.at(dense, (out_rows, in_cols), values)
    return dense
