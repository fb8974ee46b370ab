"""Convolutions of Dask arrays: one fastconv call per block of whole images.

A batch too big for one machine's memory (or time) is a ``dask.array.Array``
split along its batch axis. Every function here builds a lazy graph with one
task per block of images, each calling the in-memory function of the same
name (:func:`fastconv.conv2d`, ...), so results equal the in-memory ones:

* The input is chunked along the batch axis only, whole images per block
  (a convolution needs every channel and the neighbourhood of every pixel).
  An input chunked along C, H or W is rechunked to whole images and a
  ``dask.array.PerformanceWarning`` says so.
* The weight (and bias) enters the graph once, as a one-block array every
  task depends on, not as a copy inside every task; a Dask weight is merged
  into one block.
* The output's shape, chunks, dtype and meta are known before anything is
  computed.
* The weight gradient is a partial sum per block of images followed by
  Dask's tree reduction (``sum(split_every=...)``): no task holds the batch.

Threads and memory per task
---------------------------
``num_threads`` and ``memory_limit`` apply to each task. Left at ``None``
they are decided where the task runs:

* on a ``dask.distributed`` worker, which starts its processes with
  ``OMP_NUM_THREADS=1``, a task gets the cores of its host divided by the
  worker threads on that host (2 single-threaded worker processes on 2 cores:
  1 thread each; 1 single-threaded worker on 8 cores: 8 threads), and a
  workspace of at most a quarter of the worker's memory limit per worker
  thread (and at most fastconv's own default);
* elsewhere (Dask's threaded or synchronous scheduler) fastconv's defaults
  apply, and concurrent tasks share the process's cores (no oversubscription).

``FASTCONV_NUM_THREADS`` / ``FASTCONV_MEMORY_LIMIT`` in a worker's environment
override these defaults.
"""
import os
import threading
import time
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.array.core import PerformanceWarning
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError(
        "fastconv.dask needs Dask: pip install 'fastconv[dask]' "
        f"(dask[array] and distributed); importing it failed: {exc}") from exc

import fastconv.conv as _inmemory
from fastconv import _config, _machine
from fastconv._params import check_bias, conv_geometry, resolve_dtypes, shape_tuple
from fastconv._plan import plan_conv

__all__ = ["conv1d", "conv2d", "conv1d_input_grad", "conv2d_input_grad", "conv1d_weight_grad",
           "conv2d_weight_grad"]

# index letters for blockwise: the batch, the output's other axes, and axes
# that are not in the output (each of those arrays has one block along them)
_BATCH, _OUT, _IN, _GRAD, _WEIGHT, _BIAS = "n", "abcd", "efgh", "ijkl", "opqr", "s"


# --------------------------------------------------------------------------
# arguments

def _layout(ndim):
    return "(N, C, L)" if ndim == 3 else "(N, C, H, W)"


def _batch_array(array, name, ndim):
    """A Dask array of images, checked: (N, C, *spatial) with known C and
    spatial sizes, NumPy blocks."""
    if not isinstance(array, da.Array):
        raise TypeError(
            f"{name} must be a dask.array.Array {_layout(ndim)}, got {type(array).__name__}; "
            f"for an in-memory array call fastconv's function of the same name, or wrap it: "
            f"dask.array.from_array({name}, chunks=(images_per_block, -1, ...))")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {_layout(ndim)}, got shape {array.shape}")
    if any(np.isnan(size) for size in array.shape[1:]):
        raise ValueError(f"{name} has unknown sizes along C or its spatial axes (shape "
                         f"{array.shape}): call {name}.compute_chunk_sizes() first")
    if not isinstance(array._meta, np.ndarray) or isinstance(array._meta, np.ma.MaskedArray):
        raise TypeError(f"{name} must have NumPy blocks, got blocks of type "
                        f"{type(array._meta).__name__}")
    return array


def _whole_images(array, name, batch_chunks=None):
    """``array`` chunked along the batch axis only, in the blocks of images
    ``batch_chunks`` (default: its own), warning when that needs a rechunk."""
    keep_batch = batch_chunks is None or array.chunks[0] == batch_chunks
    if keep_batch and array.numblocks[1:] == (1,) * (array.ndim - 1):
        return array
    if not keep_batch and any(np.isnan(c) for c in batch_chunks + array.chunks[0]):
        raise ValueError(
            f"{name} and x are split into different blocks of images, {array.chunks[0]} "
            f"and {batch_chunks}, and their sizes are not all known: call "
            f"compute_chunk_sizes() on both")
    whole = {axis: -1 for axis in range(1, array.ndim)}
    if batch_chunks is not None:
        whole[0] = batch_chunks  # must match x's blocks, whatever their size
    else:
        # merging C/H/W multiplies the block size: keep the batch blocks
        # unless they would grow past Dask's target block size
        target = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
        merged = max(array.chunks[0]) * np.prod(array.shape[1:]) * array.dtype.itemsize
        if merged > target:
            whole[0] = "auto"
    rechunked = array.rechunk(whole)
    warnings.warn(
        f"fastconv.dask: {name} of shape {array.shape} is rechunked from blocks of "
        f"{array.chunksize} to {rechunked.chunksize}: each task needs whole images (all of "
        f"C, H, W), and blocks of images that match its other batch arguments; chunk "
        f"{name} along the batch axis only to avoid this",
        PerformanceWarning, stacklevel=4)  # the caller of the public function
    return rechunked


def _one_block(value, name):
    """A weight or bias as a one-block Dask array, so that the graph holds it
    once (a NumPy argument would be copied into every task)."""
    if value is None:
        return None
    if isinstance(value, da.Array):
        if any(np.isnan(size) for size in value.shape):
            raise ValueError(f"{name} has unknown sizes (shape {value.shape}): call "
                             f"{name}.compute_chunk_sizes() first")
        return value.rechunk(-1) if value.npartitions > 1 else value
    if dask.is_dask_collection(value):
        raise TypeError(f"{name} must be an array or a dask.array.Array, "
                        f"got {type(value).__name__}")
    array = np.asarray(value)
    return da.from_array(array, chunks=array.shape or -1)


def _checked_geometry(kind, x_shape, weight_shape, batch_chunks, dtype, spatial_dims, options,
                      flip, method, memory_limit, num_threads):
    """Validate every argument against the largest block of images and plan
    it, so that a wrong shape, method, memory limit or thread count fails here
    and not in a worker; returns the geometry of that block."""
    largest = max((int(c) for c in batch_chunks if not np.isnan(c)), default=1)
    geometry = conv_geometry((max(largest, 1),) + tuple(x_shape[1:]), weight_shape,
                             spatial_dims=spatial_dims, **options)
    plan_conv(geometry, dtype, flip=flip, method=method, memory_limit=memory_limit,
              num_threads=1 if num_threads is None else num_threads, kind=kind)
    return geometry


def _per_block(func, token, batch_arrays, constants, out_tail, dtype, partial_sums=False,
               **kwargs):
    """``func`` on every block of images: ``batch_arrays`` are split alike
    along the batch axis, ``constants`` (one block each, or None) go to every
    task. The output is (N, *out_tail), or with ``partial_sums`` one entry
    (1, *out_tail) per block of images."""
    args = []
    for array, letters in zip(batch_arrays, (_IN, _GRAD)):
        args += [array, _BATCH + letters[:array.ndim - 1]]
    for array, letters in zip(constants, (_WEIGHT, _BIAS)):
        if array is not None:
            args += [array, letters[:array.ndim]]
    out_index = _BATCH + _OUT[:len(out_tail)]
    return da.blockwise(
        func, out_index, *args, token=token, dtype=dtype,
        meta=np.empty((0,) * len(out_index), dtype=dtype),
        new_axes=dict(zip(out_index[1:], out_tail)),
        adjust_chunks={_BATCH: 1} if partial_sums else None,
        concatenate=True, align_arrays=False, **kwargs)


# --------------------------------------------------------------------------
# inside a task: threads and memory

_HOST_THREADS_TTL = 10.0  # seconds: clusters grow and shrink
_host_threads = {}        # host -> (when counted, worker threads on it)
_host_threads_lock = threading.Lock()


def _current_worker():
    """The dask.distributed worker running the calling task, or None."""
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):  # not installed / not in a worker task
        return None


def _threads_on_host(worker):
    """Threads of all the workers on this worker's host, as the scheduler
    knows them (asked at most every few seconds)."""
    from distributed import get_client
    from distributed.comm import get_address_host
    host = get_address_host(worker.address)
    with _host_threads_lock:
        counted = _host_threads.get(host)
        if counted is not None and time.monotonic() - counted[0] < _HOST_THREADS_TTL:
            return counted[1]
    try:
        workers = get_client().scheduler_info(n_workers=-1)["workers"].values()
        threads = sum(info["nthreads"] for info in workers if info.get("host") == host)
    except Exception:  # noqa: BLE001 - a default must not fail the task: count this worker alone
        threads = 0
    threads = max(threads, worker.state.nthreads)
    with _host_threads_lock:
        _host_threads[host] = (time.monotonic(), threads)
    return threads


def _task_resources(memory_limit, num_threads):
    """The memory_limit and num_threads of one task (see the module's notes)."""
    worker = _current_worker()
    if worker is None:
        return {"memory_limit": memory_limit, "num_threads": num_threads}
    if num_threads is None and not os.environ.get("FASTCONV_NUM_THREADS"):
        num_threads = max(1, _machine.usable_cpus() // _threads_on_host(worker))
    worker_memory = worker.memory_manager.memory_limit
    if memory_limit is None and worker_memory and not os.environ.get("FASTCONV_MEMORY_LIMIT"):
        share = worker_memory // (4 * worker.state.nthreads)
        memory_limit = min(_config.get_config()["memory_limit"], share)
    return {"memory_limit": memory_limit, "num_threads": num_threads}


def _forward_block(x, weight, bias=None, *, spatial_dims, options, memory_limit, num_threads):
    run = _inmemory.conv2d if spatial_dims == 2 else _inmemory.conv1d
    return run(x, weight, bias, **options, **_task_resources(memory_limit, num_threads))


def _input_grad_block(grad_output, weight, *, spatial_dims, image_shape, options,
                      memory_limit, num_threads):
    run = _inmemory.conv2d_input_grad if spatial_dims == 2 else _inmemory.conv1d_input_grad
    return run((grad_output.shape[0],) + image_shape, weight, grad_output, **options,
               **_task_resources(memory_limit, num_threads))


def _weight_grad_block(x, grad_output, *, spatial_dims, weight_shape, compute, options,
                       memory_limit, num_threads):
    run = _inmemory.conv2d_weight_grad if spatial_dims == 2 else _inmemory.conv1d_weight_grad
    # partial sums in the compute dtype (float16 inputs: float32), rounded once at the end
    partial = run(x.astype(compute, copy=False), weight_shape,
                  grad_output.astype(compute, copy=False), **options,
                  **_task_resources(memory_limit, num_threads))
    return partial[np.newaxis]


# --------------------------------------------------------------------------
# graphs

def _forward(x, weight, bias, spatial_dims, options, flip, method, memory_limit, num_threads):
    x = _batch_array(x, "x", spatial_dims + 2)
    weight, bias = _one_block(weight, "weight"), _one_block(bias, "bias")
    compute, result = resolve_dtypes(x=x, weight=weight, bias=bias)
    geometry = _checked_geometry("forward", x.shape, weight.shape, x.chunks[0], compute,
                                 spatial_dims, options, flip, method, memory_limit, num_threads)
    check_bias(bias, geometry.K, f"filter of weight {weight.shape}")
    x = _whole_images(x, "x")
    return _per_block(
        _forward_block, f"fastconv-conv{spatial_dims}d", (x,), (weight, bias),
        geometry.output_shape[1:], result, spatial_dims=spatial_dims,
        options=dict(options, flip=flip, method=method),
        memory_limit=memory_limit, num_threads=num_threads)


def _gradient(kind, array, shape, grad_output, spatial_dims, options, flip, method,
              memory_limit, num_threads, split_every=None):
    """The input gradient (array = weight, shape = the input's) or the weight
    gradient (array = x, shape = the weight's) of Dask arrays."""
    ndim = spatial_dims + 2
    grad_output = _batch_array(grad_output, "grad_output", ndim)
    shape = shape_tuple(shape, "input_shape" if kind == "input_grad"
                                   else "weight_shape", ndim)
    if kind == "input_grad":
        array_name, x_shape = "weight", shape
        array = _one_block(array, "weight")
        w_shape = array.shape
    else:
        array_name, w_shape = "x", shape
        array = _batch_array(array, "x", ndim)
        x_shape = array.shape
    compute, result = resolve_dtypes(**{array_name: array, "grad_output": grad_output})
    batch_chunks = grad_output.chunks[0] if kind == "input_grad" else array.chunks[0]
    geometry = _checked_geometry(kind, x_shape, w_shape, batch_chunks, compute, spatial_dims,
                                 options, flip, method, memory_limit, num_threads)
    expected = (x_shape[0],) + geometry.output_shape[1:]
    if any(not np.isnan(a) and not np.isnan(b) and a != b
           for a, b in zip(grad_output.shape, expected)):
        raise ValueError(
            f"grad_output must have the convolution's output shape {expected} "
            f"(x {x_shape}, weight {w_shape}), got shape {grad_output.shape}")
    options = dict(options, flip=flip, method=method)
    resources = {"memory_limit": memory_limit, "num_threads": num_threads}
    if kind == "input_grad":
        grad_output = _whole_images(grad_output, "grad_output")
        return _per_block(
            _input_grad_block, f"fastconv-conv{spatial_dims}d-input-grad", (grad_output,),
            (array,), tuple(x_shape[1:]), result, spatial_dims=spatial_dims,
            image_shape=tuple(x_shape[1:]), options=options, **resources)
    x = _whole_images(array, "x")
    grad_output = _whole_images(grad_output, "grad_output", batch_chunks=x.chunks[0])
    partial_sums = _per_block(
        _weight_grad_block, f"fastconv-conv{spatial_dims}d-weight-grad-partial",
        (x, grad_output), (), tuple(w_shape), compute, partial_sums=True,
        spatial_dims=spatial_dims, weight_shape=tuple(w_shape), compute=compute,
        options=options, **resources)
    total = partial_sums.sum(axis=0, split_every=split_every)
    return total if total.dtype == result else total.astype(result)


# --------------------------------------------------------------------------
# public functions

def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, flip=False,
           method="auto", memory_limit=None, num_threads=None):
    """2-D convolution of a Dask array of images: :func:`fastconv.conv2d` per block.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
        Blocks should split the batch axis only; otherwise x is rechunked to
        whole images (with a ``PerformanceWarning``). The batch may have
        unknown block sizes (NaN) if C, H and W are not split.
    weight : array_like or dask.array.Array, shape (K, C/groups, R, S)
        Enters the graph once; a Dask weight is merged into one block.
    bias : array_like or dask.array.Array, shape (K,), optional
    stride, padding, dilation, groups, flip, method
        As in :func:`fastconv.conv2d`.
    memory_limit, num_threads : optional
        Per task. ``None``: decided where the task runs (module notes: on a
        ``dask.distributed`` worker, the host's cores shared between its
        worker threads).

    Returns
    -------
    dask.array.Array, shape (N, K, Ho, Wo)
        Lazy; chunked like x along the batch axis, whole along the others;
        dtype as :func:`fastconv.conv2d` would return.

    Raises
    ------
    TypeError, ValueError
        Before building the graph, for any invalid argument (x not a Dask
        array, channels that do not match, a bad method...).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import fastconv, fastconv.dask
    >>> x = da.ones((10, 3, 8, 8), chunks=(4, 3, 8, 8))
    >>> w = np.ones((2, 3, 3, 3))
    >>> y = fastconv.dask.conv2d(x, w, padding=1)
    >>> y.shape, y.chunks[0]
    ((10, 2, 8, 8), (4, 4, 2))
    >>> np.array_equal(y.compute(), fastconv.conv2d(x.compute(), w, padding=1))
    True
    """
    return _forward(x, weight, bias, 2, _options(stride, padding, dilation, groups), flip, method,
                    memory_limit, num_threads)


def conv1d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, flip=False,
           method="auto", memory_limit=None, num_threads=None):
    """1-D convolution of a Dask array (N, C, L): :func:`fastconv.conv1d` per block.

    Parameters and behaviour as :func:`conv2d`, with weight (K, C/groups, S).

    Returns
    -------
    dask.array.Array, shape (N, K, Lo)

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import fastconv.dask
    >>> windows = da.arange(24.0, chunks=8).reshape(3, 1, 8)   # three windows of a signal
    >>> fastconv.dask.conv1d(windows, np.array([[[1.0, -1.0]]])).compute()[:, 0, :3]
    array([[-1., -1., -1.],
           [-1., -1., -1.],
           [-1., -1., -1.]])
    """
    return _forward(x, weight, bias, 1, _options(stride, padding, dilation, groups), flip, method,
                    memory_limit, num_threads)


def conv2d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, method="auto", memory_limit=None, num_threads=None):
    """Input gradient of :func:`conv2d` for a Dask ``grad_output``, per block of images.

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, H, W) of the convolution's input.
    weight : array_like or dask.array.Array, shape (K, C/groups, R, S)
    grad_output : dask.array.Array, shape (N, K, Ho, Wo)
    stride, padding, dilation, groups, flip, method, memory_limit, num_threads
        As in :func:`conv2d`.

    Returns
    -------
    dask.array.Array, shape input_shape
        Chunked like grad_output along the batch axis.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import fastconv, fastconv.dask
    >>> w = np.ones((2, 3, 3, 3))
    >>> g = da.ones((6, 2, 8, 8), chunks=(2, 2, 8, 8))
    >>> dx = fastconv.dask.conv2d_input_grad((6, 3, 8, 8), w, g, padding=1)
    >>> dx.chunks[0]
    (2, 2, 2)
    >>> np.allclose(dx.compute(), fastconv.conv2d_input_grad((6, 3, 8, 8), w, g.compute(), padding=1))
    True
    """
    return _gradient("input_grad", weight, input_shape, grad_output, 2,
                     _options(stride, padding, dilation, groups), flip, method, memory_limit,
                     num_threads)


def conv2d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, method="auto", memory_limit=None, num_threads=None,
                       split_every=None):
    """Weight gradient of :func:`conv2d` for Dask arrays: partial sums per
    block of images, added by Dask's tree reduction.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
    weight_shape : tuple of int
        (K, C/groups, R, S).
    grad_output : dask.array.Array, shape (N, K, Ho, Wo)
        Rechunked to x's blocks of images if they differ.
    stride, padding, dilation, groups, flip, method, memory_limit, num_threads
        As in :func:`conv2d`.
    split_every : int, optional
        Partial sums added per reduction task (``dask.array.sum``'s argument).

    Returns
    -------
    dask.array.Array, shape weight_shape
        One block. Sums are in float32 for float16 inputs.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import fastconv, fastconv.dask
    >>> x = da.ones((6, 3, 8, 8), chunks=(2, 3, 8, 8))
    >>> g = da.ones((6, 2, 8, 8), chunks=(2, 2, 8, 8))
    >>> dw = fastconv.dask.conv2d_weight_grad(x, (2, 3, 3, 3), g, padding=1)
    >>> dw.shape, float(dw[0, 0, 1, 1].compute())   # 6 images x 64 pixels
    ((2, 3, 3, 3), 384.0)
    """
    return _gradient("weight_grad", x, weight_shape, grad_output, 2,
                     _options(stride, padding, dilation, groups), flip, method, memory_limit,
                     num_threads, split_every)


def conv1d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, method="auto", memory_limit=None, num_threads=None):
    """Input gradient of :func:`conv1d` for a Dask ``grad_output`` (N, K, Lo).

    As :func:`conv2d_input_grad`, with input_shape (N, C, L).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import fastconv.dask
    >>> g = da.ones((2, 1, 3), chunks=1)
    >>> fastconv.dask.conv1d_input_grad((2, 1, 4), np.array([[[1.0, -1.0]]]), g).compute()
    array([[[ 1.,  0.,  0., -1.]],
    <BLANKLINE>
           [[ 1.,  0.,  0., -1.]]])
    """
    return _gradient("input_grad", weight, input_shape, grad_output, 1,
                     _options(stride, padding, dilation, groups), flip, method, memory_limit,
                     num_threads)


def conv1d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, method="auto", memory_limit=None, num_threads=None,
                       split_every=None):
    """Weight gradient of :func:`conv1d` for Dask arrays (N, C, L) and (N, K, Lo).

    As :func:`conv2d_weight_grad`, with weight_shape (K, C/groups, S).

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.arange(8.0, chunks=4).reshape(2, 1, 4)
    >>> fastconv.dask.conv1d_weight_grad(x, (1, 1, 2), da.ones((2, 1, 3), chunks=1)).compute()
    array([[[18., 24.]]])
    """
    return _gradient("weight_grad", x, weight_shape, grad_output, 1,
                     _options(stride, padding, dilation, groups), flip, method, memory_limit,
                     num_threads, split_every)


def _options(stride, padding, dilation, groups):
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
