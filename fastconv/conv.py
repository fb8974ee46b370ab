"""Convolutions and their gradients: validate -> plan -> run a kernel.

The layout is NCHW (NCL in 1-D), weights (K, C/groups, R, S), and the
operation is cross-correlation as in deep-learning libraries; ``flip=True``
reverses the kernel along every spatial axis (mathematical convolution).

For a loss L and y = conv2d(x, weight, bias), the three gradients are
``conv2d_input_grad(x.shape, weight, dL/dy)``, ``conv2d_weight_grad(x,
weight.shape, dL/dy)`` and ``(dL/dy).sum(axis=(0, 2, 3))`` for the bias. The
transposed convolution is the input gradient with the roles of input and
output exchanged.
"""
import dataclasses
import operator

import numpy as np

from fastconv import _execute
from fastconv._execute import check_out
from fastconv._params import (as_array, check_bias, conv_geometry, int_tuple, padding_pairs,
                              resolve_dtypes, shape_like, shape_tuple, summarize)
from fastconv._plan import plan_conv

__all__ = ["conv1d", "conv2d", "conv1d_input_grad", "conv2d_input_grad", "conv1d_weight_grad",
           "conv2d_weight_grad", "conv_transpose1d", "conv_transpose2d"]


def _run(plan, operands, result, out):
    """Execute plan on operands the caller validated (arrays of the planned
    shapes, computable dtypes; the bias is checked here); the result in
    dtype `result`, or written into `out` (checked against the result's
    shape and dtype before anything runs)."""
    if out is None:
        y = _execute.execute(plan, operands, operands_checked=True)
        return y if y.dtype == result else y.astype(result)
    check_out(out, plan.output_shape, result)
    if np.can_cast(plan.dtype, out.dtype, casting="safe"):
        # out passed check_out for the result's dtype, and takes the plan's
        return _execute.execute(plan, operands, out, out_checked=True, operands_checked=True)
    # out holds the (narrower) result dtype, e.g. float16 computed in float32
    y = _execute.execute(plan, operands, operands_checked=True)
    np.copyto(out, y.astype(result), casting="safe")
    return out


def _check_bias_arg(bias, fn):
    """A string where the bias goes is padding given positionally."""
    if isinstance(bias, (str, bytes)):
        raise TypeError(
            f"bias got {summarize(bias)}: padding and the other options are keyword-only; "
            f"write fastconv.{fn}(x, w, padding={bias!r})")


def _spatial_names(n):
    return "L" if n == 1 else "H, W"


def _int_or_none(value):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    return operator.index(value)


def _channels_last_hint(x, channels, n, batched):
    """The hint for an array laid out channels-last by mistake ('' if it is not one)."""
    caxis = 1 if batched else 0
    if channels is None or x.ndim < caxis + 1 + n or x.shape[caxis] == channels \
            or x.shape[-1] != channels:
        return ""
    order = (0, n + 1) + tuple(range(1, n + 1)) if batched else (n,) + tuple(range(n))
    layout = f"(N, {_spatial_names(n)}, C)" if batched else f"({_spatial_names(n)}, C)"
    return (f"; channels-last {layout}? fastconv takes channels first: "
            f"use x.transpose{order}")


def _forward_layout(x, weight, n, groups, fn):
    """Whether x is one unbatched example (C, *spatial), as PyTorch accepts;
    for the usual mistakes (a plain image and kernel, channels-last, a
    missing axis) a ValueError saying what to write."""
    sp = _spatial_names(n)
    g = _int_or_none(groups)
    channels = weight.shape[1] * g if weight.ndim == n + 2 and g is not None and g >= 1 else None
    layouts = f"{n + 2}-D (N, C, {sp}) or {n + 1}-D unbatched (C, {sp})"
    if x.ndim == n and weight.ndim == n:
        axes = "None, " * 2
        raise ValueError(
            f"x has shape {x.shape} and weight {weight.shape}: a single-channel "
            f"{'image (H, W)' if n == 2 else 'signal (L,)'} and kernel? use "
            f"fastconv.{fn}(x[{axes[:-2]}], w[{axes[:-2]}])[0, 0], or pass x as {layouts} "
            f"and weight as (K, C/groups, {'R, S' if n == 2 else 'S'})")
    if x.ndim == n:
        hint = ""
        if channels == 1:
            hint = f"; a single-channel {'image' if n == 2 else 'signal'}? use fastconv.{fn}(x[None], w)[0]"
        raise ValueError(f"x must be {layouts}, got shape {x.shape} (weight of shape "
                         f"{weight.shape}){hint}")
    if x.ndim != n + 1 or weight.ndim != n + 2:
        return False
    if channels is not None and x.shape[0] != channels:
        hint = _channels_last_hint(x, channels, n, batched=False)
        if not hint and channels == 1:
            hint = (f"; a batch of single-channel {'images (N, H, W)' if n == 2 else 'signals (N, L)'}? "
                    f"use fastconv.{fn}(x[:, None], w)")
        raise ValueError(
            f"x must be {n + 2}-D (N, C, {sp}), or {n + 1}-D unbatched (C, {sp}) with C = "
            f"weight.shape[1] * groups = {channels}; got shape {x.shape} for weight of shape "
            f"{weight.shape}{hint}")
    return True


def _geometry(x_shape, w_shape, hint, **kwargs):
    """conv_geometry, with a layout hint added to its ValueError (hint: a
    string, or a function making it, called only on that error)."""
    try:
        return conv_geometry(x_shape, w_shape, **kwargs)
    except ValueError as exc:
        if callable(hint):
            hint = hint()
        if not hint:
            raise
        raise ValueError(f"{exc}{hint}") from None


def _unbatched_out(out, n, shape=None):
    """out for an unbatched call: given (K, *spatial), the kernels write
    out[None]; shape (the unbatched result's, when known) is checked first so
    that a message names the shapes the caller sees."""
    if not isinstance(out, np.ndarray):
        return out
    if shape is not None and out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, but the result has shape {tuple(shape)}")
    return out[None] if out.ndim == n + 1 else out


def _conv(x, weight, bias, spatial_dims, stride, padding, dilation, groups, flip, padding_mode,
          method, memory_limit, num_threads, out):
    fn = "conv1d" if spatial_dims == 1 else "conv2d"
    _check_bias_arg(bias, fn)
    x = as_array(x, "x")
    weight = as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    compute, result = resolve_dtypes(x=x, weight=weight, bias=bias)
    unbatched = _forward_layout(x, weight, spatial_dims, groups, fn)
    if unbatched:
        x = x[None]

    def hint():
        if unbatched or weight.ndim != spatial_dims + 2 or not _int_or_none(groups):
            return ""
        return _channels_last_hint(x, weight.shape[1] * _int_or_none(groups), spatial_dims, True)

    geometry = _geometry(x.shape, weight.shape, hint, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, spatial_dims=spatial_dims, flip=flip,
                         padding_mode=padding_mode)
    plan = plan_conv(geometry, compute, flip=flip, method=method,
                     memory_limit=memory_limit, num_threads=num_threads)
    if not unbatched:
        return _run(plan, (x, weight, bias), result, out)  # checks bias against the plan
    y = _run(plan, (x, weight, bias), result,
             _unbatched_out(out, spatial_dims, plan.output_shape[1:]))
    return out if out is not None else y[0]


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
           flip=False, padding_mode="zeros", method="auto", memory_limit=None,
           num_threads=None, out=None):
    """2-D convolution (cross-correlation) of a batch, lowered to GEMM.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), or (C, H, W) unbatched
        Any layout: strided, transposed, reversed and read-only arrays are read
        in place; other dtypes are converted. An unbatched x (as PyTorch
        accepts) gives an unbatched result (K, Ho, Wo).
    weight : array_like, shape (K, C/groups, R, S)
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int, int)
        >= 1.
    padding : int, (ph, pw), ((top, bottom), (left, right)), or "valid", "same", "full"
        "same" keeps H x W (stride 1 only; an odd total pads one more at the
        bottom/right, as PyTorch and ``scipy.signal.correlate2d``, or with
        ``flip=True`` at the top/left, as ``scipy.signal.convolve2d`` and
        ``np.convolve``); "full" pads dilation*(k-1) on every side.
    groups : int
        C and K must both be divisible by it; each group is its own GEMM.
    flip : bool
        Reverse the kernel spatially: mathematical convolution, as
        ``scipy.signal.convolve2d``.
    padding_mode : {"zeros", "reflect", "replicate", "circular", "symmetric"}
        What the padding reads, as PyTorch's ``padding_mode`` (and
        ``np.pad``'s "symmetric", SciPy's ``boundary="symm"``; "circular" is
        its "wrap"): zeros, the input mirrored without or with its edge, its
        edge repeated, or the input wrapped around. Padding wider than the
        input folds again, as ``np.pad``. Done by the index map while
        gathering, never by a padded copy; the gradients add what the
        padding read back into the elements it came from.
    method : {"auto", "stretch", "mapped", "gemm1x1", "fused", "depthwise", "direct", "winograd"}
        "stretch" builds each image's whole im2col matrix; "mapped" gathers
        tiles of it through an index map; "gemm1x1" multiplies a 1x1 layer's
        input in place; "fused" runs fastconv's own micro-kernels on panels
        gathered through the index map; "depthwise" a sliding window (groups
        == C, or at most 16 channels per group); "direct" skips the padding's taps; "winograd" F(4x4, 3x3)
        (3x3 stride-1 layers); "auto" picks the cheapest under the memory
        limit (``ConvPlan.reason`` says why). The input gradient (and the
        transposed convolution) also takes "phased": one stride-1 forward
        pass per phase of the input, on fastconv's own kernels.
    memory_limit : int or str, optional
        Bound on the workspace (bytes, or "512MB", "1.5GiB"...).
    num_threads : int, optional
        Default: :func:`fastconv.get_config`.
    out : ndarray, optional
        Where to write the result, as NumPy's ufuncs have it: the right
        shape, any strides (a view of a larger array is written in place,
        nothing outside it), a dtype the result casts to safely; checked
        before anything is written, and returned. A loop that passes the
        same ``out`` allocates nothing (with the kept workspace, see
        :func:`fastconv.set_config`).

    Returns
    -------
    ndarray, shape (N, K, Ho, Wo), or (K, Ho, Wo) for an unbatched x
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
    >>> fastconv.conv2d(x, w, padding=((0, 1), (0, 1)), padding_mode="circular")[0, 0, 3]
    array([26., 30., 34., 30.])
    """
    return _conv(x, weight, bias, 2, stride, padding, dilation, groups, flip, padding_mode,
                 method, memory_limit, num_threads, out)


def conv1d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
           flip=False, padding_mode="zeros", method="auto", memory_limit=None,
           num_threads=None, out=None):
    """1-D convolution (cross-correlation) of a batch, through the 2-D kernels.

    Parameters
    ----------
    x : array_like, shape (N, C, L), or (C, L) unbatched
    weight : array_like, shape (K, C/groups, S)
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int,)
    padding : int, (p,), (left, right), or "valid", "same", "full"
    groups, flip, padding_mode, method, memory_limit, num_threads, out
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape (N, K, Lo), or (K, Lo) for an unbatched x

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d(np.array([[[1.0, 2.0, 3.0, 4.0]]]), np.array([[[1.0, -1.0]]]))
    array([[[-1., -1., -1.]]])
    >>> fastconv.conv1d(np.array([[[1.0, 2.0, 3.0, 4.0]]]), np.array([[[0.0, 1.0, 0.0]]]),
    ...                 padding=2, padding_mode="reflect")
    array([[[2., 1., 2., 3., 4., 3.]]])
    """
    return _conv(x, weight, bias, 1, stride, padding, dilation, groups, flip, padding_mode,
                 method, memory_limit, num_threads, out)


# --------------------------------------------------------------------------
# gradients

def _gradient(kind, array, shape, grad_output, spatial_dims, stride, padding, dilation,
              groups, flip, padding_mode, method, memory_limit, num_threads, out):
    """The input gradient (array = weight, shape = the input's) or the weight
    gradient (array = x, shape = the weight's): validate -> plan -> run."""
    array_name, shape_name = (("weight", "input_shape") if kind == "input_grad"
                              else ("x", "weight_shape"))
    n = spatial_dims
    sp = _spatial_names(n)
    array = as_array(array, array_name)
    grad_output = as_array(grad_output, "grad_output")
    compute, result = resolve_dtypes(**{array_name: array, "grad_output": grad_output})
    if kind == "input_grad":
        # unbatched as grad_output is: input_shape (C, *spatial), grad_output (K, *out)
        unbatched = grad_output.ndim == n + 1
        dims = shape_like(shape, shape_name, "x")
        layout = f" (C, {sp}), as grad_output of shape {grad_output.shape} is unbatched" \
            if unbatched else f" (N, C, {sp})"
        hint = ""
        if not unbatched and len(dims) == n + 1:
            hint = (f"; missing the batch axis? an unbatched input_shape (C, {sp}) goes with "
                    f"an unbatched grad_output (K, ...), got grad_output of shape "
                    f"{grad_output.shape}: pass (1, *input_shape) or grad_output[0]")
        try:
            shape = shape_tuple(dims, shape_name, n + 1 if unbatched else n + 2, layout=layout)
        except ValueError as exc:
            raise ValueError(f"{exc}{hint}") from None
        batched_array, x_shape = array, ((1,) + shape if unbatched else shape)
        w_shape = array.shape
    else:
        # unbatched as x is: x (C, *spatial), grad_output (K, *out)
        unbatched = array.ndim == n + 1
        shape = shape_tuple(shape, shape_name, n + 2, "w",
                            layout=f" (K, C/groups, {'R, S' if n == 2 else 'S'})")
        batched_array = array[None] if unbatched else array
        x_shape, w_shape = batched_array.shape, shape
    geometry = conv_geometry(x_shape, w_shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, spatial_dims=n, flip=flip,
                             padding_mode=padding_mode)
    expected = geometry.output_shape[1:] if unbatched else geometry.output_shape
    if grad_output.shape != expected:
        hint = ""
        if unbatched and grad_output.shape == geometry.output_shape:
            hint = f"; x is unbatched (C, {sp}): pass x[None], or grad_output[0]"
        elif not unbatched and grad_output.shape == expected[1:]:
            hint = "; missing the batch axis? pass grad_output[None]"
        shown = ((array.shape if kind == "weight_grad" else shape), w_shape) if unbatched \
            else (x_shape, w_shape)
        raise ValueError(
            f"grad_output must have the convolution's output shape {expected} "
            f"(x {shown[0]}, weight {shown[1]}), got shape {grad_output.shape}{hint}")
    plan = plan_conv(geometry, compute, flip=flip, method=method, memory_limit=memory_limit,
                     num_threads=num_threads, kind=kind)
    if not unbatched:
        return _run(plan, (array, grad_output), result, out)
    operands = (array, grad_output[None]) if kind == "input_grad" else (batched_array, grad_output[None])
    if kind == "weight_grad":  # the weight gradient has the weight's shape either way
        return _run(plan, operands, result, out)
    y = _run(plan, operands, result, _unbatched_out(out, n, plan.output_shape[1:]))
    return out if out is not None else y[0]


def conv2d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, padding_mode="zeros", method="auto",
                      memory_limit=None, num_threads=None, out=None):
    """Gradient of a loss with respect to the input of :func:`conv2d`.

    The same as ``torch.nn.grad.conv2d_input``: per image and group,
    ``col2im(W^T @ grad_output)``, the transpose of the forward lowering. The
    stretch lowering makes the whole product ``W^T @ grad_output`` of an
    image and then adds it back (:func:`fastconv.col2im`); the mapped one
    makes it a tile of columns at a time and scatter-adds each tile through
    the index map, never holding the whole matrix. Images (and, for small
    batches, blocks of channels) are split between threads, so no two
    threads add into the same element and the result does not depend on the
    thread count.

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, H, W) of the convolution's input, or (C, H, W) with an
        unbatched grad_output (K, Ho, Wo).
    weight : array_like, shape (K, C/groups, R, S)
    grad_output : array_like, shape (N, K, Ho, Wo)
        Gradient of the loss with respect to the convolution's output.
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads, out
        As in :func:`conv2d`; the same planner chooses the lowering under
        the same memory limit.

    Returns
    -------
    ndarray, shape input_shape
        dtype: ``np.result_type`` of weight and grad_output (as :func:`conv2d`).

    See Also
    --------
    conv2d_weight_grad, conv_transpose2d
    fastconv.conv_matrix : ``conv_matrix(w, ...).T @ g.ravel()`` is this gradient.

    Notes
    -----
    The bias gradient needs no kernel: ``grad_output.sum(axis=(0, 2, 3))``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> w = np.ones((1, 1, 2, 2))
    >>> fastconv.conv2d_input_grad((1, 1, 3, 3), w, np.ones((1, 1, 2, 2)))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    return _gradient("input_grad", weight, input_shape, grad_output, 2, stride, padding,
                     dilation, groups, flip, padding_mode, method, memory_limit,
                     num_threads, out)


def conv2d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, padding_mode="zeros", method="auto",
                       memory_limit=None, num_threads=None, out=None):
    """Gradient of a loss with respect to the weight of :func:`conv2d`.

    The same as ``torch.nn.grad.conv2d_weight``: per group, the sum over
    images of ``grad_output[n] @ im2col(x[n]).T``. The stretched matrix is
    gathered whole (stretch) or a tile at a time (mapped); each thread adds
    its images' terms into its own accumulator (counted in the workspace)
    and the accumulators are summed in a fixed order at the end, so a given
    thread count always gives the same bits.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        The convolution's input (any layout, as in :func:`conv2d`); or (C, H,
        W) unbatched, with grad_output (K, Ho, Wo).
    weight_shape : tuple of int
        (K, C/groups, R, S).
    grad_output : array_like, shape (N, K, Ho, Wo)
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads, out
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape weight_shape
        dtype: ``np.result_type`` of x and grad_output.

    Notes
    -----
    The bias gradient: ``grad_output.sum(axis=(0, 2, 3))``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.conv2d_weight_grad(x, (1, 1, 2, 2), np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    return _gradient("weight_grad", x, weight_shape, grad_output, 2, stride, padding,
                     dilation, groups, flip, padding_mode, method, memory_limit,
                     num_threads, out)


def conv1d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, padding_mode="zeros", method="auto",
                      memory_limit=None, num_threads=None, out=None):
    """Gradient of a loss with respect to the input of :func:`conv1d`.

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, L).
    weight : array_like, shape (K, C/groups, S)
    grad_output : array_like, shape (N, K, Lo)
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads, out
        As in :func:`conv1d`.

    Returns
    -------
    ndarray, shape input_shape

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d_input_grad((1, 1, 4), np.array([[[1.0, -1.0]]]), np.ones((1, 1, 3)))
    array([[[ 1.,  0.,  0., -1.]]])
    """
    return _gradient("input_grad", weight, input_shape, grad_output, 1, stride, padding,
                     dilation, groups, flip, padding_mode, method, memory_limit,
                     num_threads, out)


def conv1d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, padding_mode="zeros", method="auto",
                       memory_limit=None, num_threads=None, out=None):
    """Gradient of a loss with respect to the weight of :func:`conv1d`.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    weight_shape : tuple of int
        (K, C/groups, S).
    grad_output : array_like, shape (N, K, Lo)
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads, out
        As in :func:`conv1d`.

    Returns
    -------
    ndarray, shape weight_shape

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d_weight_grad(np.array([[[1.0, 2.0, 3.0, 4.0]]]), (1, 1, 2), np.ones((1, 1, 3)))
    array([[[6., 9.]]])
    """
    return _gradient("weight_grad", x, weight_shape, grad_output, 1, stride, padding,
                     dilation, groups, flip, padding_mode, method, memory_limit,
                     num_threads, out)


# --------------------------------------------------------------------------
# transposed convolution

def _conv_transpose(x, weight, bias, spatial_dims, stride, padding, output_padding, groups,
                    dilation, method, memory_limit, num_threads, out):
    fn = "conv_transpose1d" if spatial_dims == 1 else "conv_transpose2d"
    _check_bias_arg(bias, fn)
    x = as_array(x, "x")
    weight = as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    compute, result = resolve_dtypes(x=x, weight=weight, bias=bias)
    n = spatial_dims
    sp = _spatial_names(n)
    layout, wlayout = ("(N, C_in, L)", "(C_in, C_out/groups, S)") if n == 1 else (
        "(N, C_in, H, W)", "(C_in, C_out/groups, R, S)")
    if weight.ndim != n + 2:
        raise ValueError(f"weight must be {n + 2}-D {wlayout}, got shape {weight.shape}")
    # unbatched (C_in, *spatial), as PyTorch accepts
    unbatched = x.ndim == n + 1
    if unbatched and x.shape[0] != weight.shape[0]:
        raise ValueError(
            f"x must be {n + 2}-D {layout}, or {n + 1}-D unbatched (C_in, {sp}) with C_in = "
            f"weight.shape[0] = {weight.shape[0]}; got shape {x.shape} for weight of shape "
            f"{weight.shape}{_channels_last_hint(x, weight.shape[0], n, batched=False)}")
    if x.ndim != n + 2 and not unbatched:
        raise ValueError(f"x must be {n + 2}-D {layout} or {n + 1}-D unbatched (C_in, {sp}), "
                         f"got shape {x.shape}")
    given_out = out
    if unbatched:
        x = x[None]
        out = _unbatched_out(out, n)
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight.shape[0] must be C_in = {x.shape[1]} (x of shape {x.shape}); "
                         f"got weight of shape {weight.shape}, laid out {wlayout}"
                         f"{_channels_last_hint(x, weight.shape[0], n, batched=True)}")
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r}: a transposed convolution takes numeric padding "
                         "(the padding of the convolution it transposes)")
    y = _conv_transpose_batched(x, weight, bias, n, stride, padding, output_padding, groups,
                                dilation, method, memory_limit, num_threads, out, compute,
                                result)
    if not unbatched:
        return y
    return given_out if given_out is not None else y[0]


def _conv_transpose_batched(x, weight, bias, n, stride, padding, output_padding, groups,
                            dilation, method, memory_limit, num_threads, out, compute, result):
    groups, = int_tuple(groups, "groups", 1, 1)
    stride = int_tuple(stride, "stride", n, 1)
    dilation = int_tuple(dilation, "dilation", n, 1)
    output_padding = int_tuple(output_padding, "output_padding", n, 0)
    kernel = weight.shape[2:]
    pads = padding_pairs(padding, n, kernel, dilation, stride)
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(f"output_padding={output_padding} must be smaller than the stride "
                             f"{stride} or the dilation {dilation} on each axis")
    out_size = tuple((size - 1) * s - lo - hi + d * (k - 1) + op + 1 for size, s, (lo, hi), d, k, op
                     in zip(x.shape[2:], stride, pads, dilation, kernel, output_padding))
    if min(out_size, default=1) < 1:
        raise ValueError(f"x of shape {x.shape} with weight {weight.shape}, stride {stride}, "
                         f"padding {summarize(padding)} and dilation {dilation} gives an empty output "
                         f"of size {out_size}")
    out_shape = (x.shape[0], weight.shape[1] * groups) + out_size
    # the convolution whose input gradient this is: input out_shape, output x
    geometry = conv_geometry(out_shape, weight.shape, stride=stride, padding=pads,
                             dilation=dilation, groups=groups, spatial_dims=n)
    # output_padding rows beyond the last window see no input; the conv's own
    # output may count them as one more position, but x has exactly H x W
    geometry = dataclasses.replace(geometry, Ho=1 if n == 1 else x.shape[2], Wo=x.shape[-1])
    check_bias(bias, out_shape[1], "output channel (C_out = weight.shape[1] * groups)")
    plan = plan_conv(geometry, compute, method=method, memory_limit=memory_limit,
                     num_threads=num_threads, kind="input_grad")
    if bias is not None:  # a copy: out may overlap it
        bias = np.array(bias, dtype=compute).reshape((-1,) + (1,) * n)
    if out is not None:
        check_out(out, plan.output_shape, result)
        if bias is None or out.dtype == compute:
            _run(plan, (weight, x), result, out)
            if bias is not None:
                out += bias
            return out
    # the bias is added in the compute dtype, then the sum is rounded once
    y = _run(plan, (weight, x), compute, None)
    if bias is not None:
        y += bias
    if out is None:
        return y if y.dtype == result else y.astype(result)
    np.copyto(out, y.astype(result, copy=False), casting="safe")
    return out


def conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, method="auto", memory_limit=None, num_threads=None,
                     out=None):
    """2-D transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``.

    It is the input gradient of the convolution with the same weight,
    stride, padding and dilation that maps an output-shaped image back to
    x's shape: every input pixel scatters a copy of the kernel, scaled, into
    the (stride-spaced) output. Computed by the input-gradient kernels
    (:func:`conv2d_input_grad`), with the same planner and memory limit.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W), or (C_in, H, W) unbatched
    weight : array_like, shape (C_in, C_out/groups, R, S)
        PyTorch's layout for transposed convolutions.
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        Removed from the output's borders (the padding of the transposed
        convolution); no strings.
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right, to pick among the output
        sizes a strided convolution maps to the same size; each must be
        smaller than the stride or the dilation.
    groups : int
    method, memory_limit, num_threads, out
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape (N, C_out, Hout, Wout)
        Hout = (H - 1)*stride - pad_top - pad_bottom + dilation*(R - 1) + output_padding + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0, 2.0]]]])
    >>> fastconv.conv_transpose2d(x, np.ones((1, 1, 1, 2)), stride=2)
    array([[[[1., 1., 2., 2.]]]])
    """
    return _conv_transpose(x, weight, bias, 2, stride, padding, output_padding, groups,
                           dilation, method, memory_limit, num_threads, out)


def conv_transpose1d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, method="auto", memory_limit=None, num_threads=None,
                     out=None):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, L)
    weight : array_like, shape (C_in, C_out/groups, S)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, groups, dilation, method, memory_limit, num_threads, out
        As in :func:`conv_transpose2d`, one value per axis.

    Returns
    -------
    ndarray, shape (N, C_out, Lout)
        Lout = (L - 1)*stride - 2*padding + dilation*(S - 1) + output_padding + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.array([[[1.0, 10.0]]]))
    array([[[ 1., 12., 20.]]])
    """
    return _conv_transpose(x, weight, bias, 1, stride, padding, output_padding, groups,
                           dilation, method, memory_limit, num_threads, out)
