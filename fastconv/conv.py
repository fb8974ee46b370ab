"""Convolutions: validate -> plan -> run a kernel.

The layout is NCHW (NCL in 1-D), weights (K, C/groups, R, S), and the
operation is cross-correlation as in deep-learning libraries; ``flip=True``
reverses the kernel along every spatial axis (mathematical convolution).
"""
import numpy as np

from fastconv._params import as_array, conv_geometry, resolve_dtypes
from fastconv._plan import plan_conv

__all__ = ["conv1d", "conv2d"]


def _conv(x, weight, bias, spatial_dims, stride, padding, dilation, groups, flip,
          method, memory_limit, num_threads):
    x = as_array(x, "x")
    weight = as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    compute, result = resolve_dtypes(x=x, weight=weight, bias=bias)
    geometry = conv_geometry(x.shape, weight.shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, spatial_dims=spatial_dims)
    plan = plan_conv(geometry, compute, flip=flip, method=method,
                     memory_limit=memory_limit, num_threads=num_threads)
    out = plan.execute(x, weight, bias)  # checks bias against the plan
    return out if out.dtype == result else out.astype(result)


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
           flip=False, method="auto", memory_limit=None, num_threads=None):
    """2-D convolution (cross-correlation) of a batch, lowered to GEMM.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Any layout: strided, transposed, reversed and read-only arrays are read
        in place; other dtypes are converted.
    weight : array_like, shape (K, C/groups, R, S)
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int, int)
        >= 1.
    padding : int, (ph, pw), ((top, bottom), (left, right)), or "valid", "same", "full"
        "same" keeps H x W (stride 1 only; an odd total pads one more at the
        bottom/right); "full" pads dilation*(k-1) on every side.
    groups : int
        C and K must both be divisible by it; each group is its own GEMM.
    flip : bool
        Reverse the kernel spatially: mathematical convolution, as
        ``scipy.signal.convolve2d``.
    method : {"auto", "stretch", "mapped", "gemm1x1"}
        "stretch" builds each image's whole im2col matrix; "mapped" gathers
        tiles of it through an index map; "auto" picks under the memory limit.
    memory_limit : int or str, optional
        Bound on the workspace (bytes, or "512MB", "1.5GiB"...).
    num_threads : int, optional
        Default: :func:`fastconv.get_config`.

    Returns
    -------
    ndarray, shape (N, K, Ho, Wo)
        C-contiguous; dtype is the np.result_type of the inputs (integer and
        bool inputs count as float64). Ho = floor((H + pads - dilation*(R-1) - 1)
        / stride) + 1.

    Raises
    ------
    ValueError, TypeError
        For any invalid argument, naming it and the shapes.
    WorkspaceLimitError
        If no lowering fits ``memory_limit``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> fastconv.conv2d(x, w, stride=2)
    array([[[[10., 18.],
             [42., 50.]]]])
    """
    return _conv(x, weight, bias, 2, stride, padding, dilation, groups, flip,
                 method, memory_limit, num_threads)


def conv1d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
           flip=False, method="auto", memory_limit=None, num_threads=None):
    """1-D convolution (cross-correlation) of a batch, through the 2-D kernels.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    weight : array_like, shape (K, C/groups, S)
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int,)
    padding : int, (p,), (left, right), or "valid", "same", "full"
    groups, flip, method, memory_limit, num_threads
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape (N, K, Lo)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d(np.array([[[1.0, 2.0, 3.0, 4.0]]]), np.array([[[1.0, -1.0]]]))
    array([[[-1., -1., -1.]]])
    """
    return _conv(x, weight, bias, 1, stride, padding, dilation, groups, flip,
                 method, memory_limit, num_threads)
