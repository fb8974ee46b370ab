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

Guidance
--------
Building a graph checks two things that cost time without being wrong, and
says so with a ``dask.array.PerformanceWarning`` pointing at the call:

* an input whose graph holds a large in-memory NumPy array (or memory-mapped
  .npy file), as ``dask.array.from_array(np.load(path, mmap_mode="r"))``
  makes: with a ``dask.distributed`` client the whole array would be pickled
  into the graph and shipped to the scheduler and the workers.
  :func:`from_npy` reads a .npy file in the tasks instead;
* blocks of images too small to pay for a task, or (on a ``dask.distributed``
  cluster) fewer blocks than the cluster's worker threads; both warnings say
  which chunks to use instead.
"""
import functools
import math
import os
import sys
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
           "conv2d_weight_grad", "from_npy"]


def __dir__():
    # the public names only (not np, os, plan_conv... this module imports)
    return sorted(__all__)

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
    _warn(f"fastconv.dask: {name} of shape {array.shape} is rechunked from blocks of "
          f"{array.chunksize} to {rechunked.chunksize}: each task needs whole images (all of "
          f"C, H, W), and blocks of images that match its other batch arguments; chunk "
          f"{name} along the batch axis only to avoid this")
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
                             spatial_dims=spatial_dims, flip=flip, **options)
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
        functools.partial(_on_blocks, func), out_index, *args, token=token, dtype=dtype,
        meta=np.empty((0,) * len(out_index), dtype=dtype),
        new_axes=dict(zip(out_index[1:], out_tail)),
        adjust_chunks={_BATCH: 1} if partial_sums else None,
        concatenate=False, align_arrays=False, **kwargs)


def _on_blocks(func, *blocks, **kwargs):
    """``func`` on the blocks themselves. Every axis but the batch is one
    chunk (``_whole_images``, ``_one_block``), and blockwise hands an axis
    the output lacks (C, H, W, the weight's) over as nested lists of its
    chunks, here one each. Not ``concatenate=True``: Dask's concatenate3
    always allocates and copies, even one block. That copy of the input
    took ~7 % of a worker's time and page faults besides (ResNet-50 2a,
    blocks of 8 images, py-spy on a LocalCluster worker, 2026-11-22)."""
    return func(*map(_single_block, blocks), **kwargs)


def _single_block(block):
    """The one block inside blockwise's nested lists (see _on_blocks)."""
    while isinstance(block, (list, tuple)):
        if len(block) != 1:
            raise ValueError(f"fastconv.dask: a task got {len(block)} blocks along an axis "
                             f"that must be one block (whole images, one weight)")
        (block,) = block
    return block


# --------------------------------------------------------------------------
# guidance: warnings about the input's graph and its blocks of images

# An in-memory array in the graph: with dask.distributed, the graph is
# pickled and sent to the scheduler, and every block to a worker. Measured
# (python bench/dask_cluster.py --embedded 1,4,16,64,128 --guidance-only,
# 2026-11-21, 2 single-threaded workers on 2 cores, ResNet-50 2a, blocks of 16
# images, persisted): from_array(np.load(path, mmap_mode="r")) took 0.081,
# 0.159, 0.555, 2.65, 4.47 s for 0.8, 3.8, 15, 64, 128 MiB, where from_npy(path)
# took 0.072, 0.093, 0.304, 1.09, 1.03 s: ~25 ms more per MiB, 1.7-4x the time.
# From 4 MiB on the graph costs >= 0.1 s more. (Dask itself warns about graphs
# over 10 MB at compute time, without saying what to write instead.)
_EMBEDDED_WARN_BYTES = 4 * 2**20

# Dask's cost per task (python bench/dask_cluster.py --overhead --guidance-only,
# 2026-11-22, 2 cores; 256 blocks of one 1x2x2 image; three runs, medians):
# 2.08 ms of a worker thread per task on a LocalCluster of 2 single-threaded
# workers (2.04-2.52), 0.675 ms per task on the threaded scheduler
# (0.661-0.685; fastconv's call included). One core does 152 GFLOP/s in
# float32 on ResNet-50 2a (141-174; 0.231 GFLOP per image, counted as the
# convolution's multiply-adds: Winograd does a quarter of them). (On
# 2026-11-21, before Winograd: 7.2 ms, 1.26 ms and 23.3 GFLOP/s.)
_TASK_OVERHEAD = {"distributed": 2.08e-3, "threads": 0.675e-3}
_CORE_FLOPS_PER_SECOND = 152e9
# A block is worth a task when its convolution takes >= 10x the task's cost:
# >= 10 * 2.08 ms * 152 GFLOP/s = 3.2 GFLOP per thread of a task on a cluster
# (ResNet-50 2a: 14 images; bench/dask_cluster.py measured 1.71 and 1.50
# times the in-process time for blocks of 8 and 16 images, persisted, on
# 2026-11-22), 1.0 GFLOP per thread on the threaded scheduler.
_MIN_BLOCK_SECONDS_PER_OVERHEAD = 10
# ... and small blocks are worth a warning when their overhead adds up to
# something a user would notice (not for a toy array of a few blocks)
_NOTICEABLE_SECONDS = 0.05


def _warn(message):
    """A PerformanceWarning pointing at the user's call (the first frame
    outside this module)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, PerformanceWarning, stacklevel=level)


def _active_client():
    """The dask.distributed Client that compute() would use now, or None."""
    if "distributed" not in sys.modules:
        return None
    try:
        scheduler = dask.base.get_scheduler()
    except Exception:  # noqa: BLE001 - guidance must never fail a call
        return None
    client = getattr(scheduler, "__self__", None)
    if client is None or not type(client).__module__.startswith("distributed"):
        return None
    return client


def _cluster_threads(client):
    """Worker threads of the client's cluster (0 if unknown)."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return sum(int(info.get("nthreads", 0)) for info in workers)
    except Exception:  # noqa: BLE001
        return 0


def _collect_arrays(value, found, depth=0):
    if isinstance(value, np.ndarray):
        found.setdefault(id(value), value)
        return
    if depth >= 3:
        return
    try:
        from dask import _task_spec as spec
    except ImportError:  # an older Dask: its tasks are tuples
        spec = None
    if spec is not None and isinstance(value, spec.DataNode):
        _collect_arrays(value.value, found, depth + 1)
    elif spec is not None and isinstance(value, spec.Task):
        for arg in list(value.args) + list(value.kwargs.values()):
            _collect_arrays(arg, found, depth + 1)
    elif isinstance(value, (tuple, list)) and len(value) <= 16:
        for arg in value:
            _collect_arrays(arg, found, depth + 1)


def _embedded_arrays(array):
    """The NumPy arrays (each once) that the graph of ``array`` holds as
    data: what ``from_array`` of an in-memory or memory-mapped array puts
    there. Only materialized layers and blockwise literals are looked at
    (nothing lazy is expanded)."""
    try:
        from dask.blockwise import Blockwise
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
        graph = array.__dask_graph__()
        if not isinstance(graph, HighLevelGraph):
            return []
        found = {}
        for layer in graph.layers.values():
            if isinstance(layer, MaterializedLayer):
                for value in layer.mapping.values():
                    _collect_arrays(value, found)
            elif isinstance(layer, Blockwise):
                for value, index in layer.indices:
                    if index is None:
                        _collect_arrays(value, found)
        return list(found.values())
    except Exception:  # noqa: BLE001 - guidance must never fail a call
        return []


def _check_embedded(arrays, images_per_block):
    """Warn (once) if ``arrays`` (name -> Dask array) carry large in-memory
    NumPy data in their graphs while a dask.distributed client is active."""
    if _active_client() is None:
        return
    for name, array in arrays.items():
        held = _embedded_arrays(array)
        total = sum(a.nbytes for a in held)
        if total < _EMBEDDED_WARN_BYTES:
            continue
        mapped = [a for a in held if isinstance(a, np.memmap)]
        # Dask may keep a copy of the memory map that has lost its file name
        files = sorted({str(a.filename) for a in mapped if getattr(a, "filename", None)})
        if mapped:
            path = repr(files[0]) if files else "path"
            instead = (f"read the file in the tasks instead: {name} = fastconv.dask.from_npy("
                       f"{path}, images_per_block={images_per_block})")
        else:
            instead = (f"load the data in the tasks instead (fastconv.dask.from_npy(path, "
                       f"images_per_block={images_per_block}) for a .npy file, "
                       f"dask.array.from_zarr(path) for Zarr), or, for an array already in "
                       f"this process's memory, call fastconv's in-memory function")
        _warn(f"fastconv.dask: the graph of {name} holds {dask.utils.format_bytes(total)} of "
              f"in-memory NumPy data (dask.array.from_array of a "
              f"{'memory-mapped file' if mapped else 'NumPy array'}): the dask.distributed "
              f"client would pickle all of it into the graph and send it to the scheduler and "
              f"the workers; {instead}")
        return


def _suggested_images(n_images, min_images, threads, image_bytes):
    """Images per block: enough for every worker thread, at least
    ``min_images``, at most Dask's array.chunk-size (but never below
    ``min_images``), at most the batch."""
    per = min_images
    if threads:
        target = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
        per = max(min_images, min(math.ceil(n_images / threads),
                                  max(1, target // max(image_bytes, 1))))
    return max(1, min(per, n_images))


def _check_blocks(name, array, flops_per_image, argument):
    """Warn if the blocks of images of ``array`` are too small to pay for a
    task, or (dask.distributed) fewer than the cluster's worker threads."""
    chunks = array.chunks[0]
    if not chunks or any(np.isnan(c) for c in chunks):
        return
    n_images, blocks = int(sum(chunks)), len(chunks)
    client = _active_client()
    threads = _cluster_threads(client) if client is not None else 0
    overhead = _TASK_OVERHEAD["distributed" if client is not None else "threads"]
    # each task's threads: the cores shared by the worker threads (dask.distributed,
    # see _task_resources), or all of them (the threaded scheduler lends them in turn)
    cores = _machine.usable_cpus()
    task_threads = max(1, cores // threads) if threads else cores
    min_flops = _MIN_BLOCK_SECONDS_PER_OVERHEAD * overhead * _CORE_FLOPS_PER_SECOND * task_threads
    min_images = max(1, math.ceil(min_flops / max(flops_per_image, 1)))
    image_bytes = int(np.prod(array.shape[1:])) * array.dtype.itemsize
    per = _suggested_images(n_images, min_images, threads, image_bytes)
    largest = int(max(chunks))
    shape = f"({per}, " + ", ".join(["-1"] * (array.ndim - 1)) + ")"
    if blocks > 1 and largest < min_images and blocks * overhead >= _NOTICEABLE_SECONDS:
        _warn(f"fastconv.dask: {name} is split into {blocks} blocks of at most {largest} "
              f"image(s), {largest * flops_per_image / 1e9:.2g} GFLOP each: too little work to "
              f"pay for a task (~{overhead * 1e3:.2g} ms each on "
              f"{'a dask.distributed cluster' if client is not None else 'the threaded scheduler'}"
              f" here, {blocks * overhead:.2g} s in all); use blocks of >= {min_images} images: "
              f"{argument}.rechunk({shape}) or chunks={shape} where {argument} is made")
    elif threads and blocks < threads and per < largest:
        _warn(f"fastconv.dask: {name} is split into {blocks} block(s) of images for "
              f"{threads} worker threads: {threads - blocks} of them would have nothing to do; "
              f"use blocks of {per} images: {argument}.rechunk({shape}) or chunks={shape} "
              f"where {argument} is made")


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


def _worker_default_threads(worker=None):
    """The default thread count of a fastconv call in a task on a
    dask.distributed worker: the host's usable cores divided by the worker
    threads on that host (at least 1); None outside a worker task. Meant
    also for ``_runtime.call_threads`` (plain calls in a user's own tasks),
    which would call it only when ``distributed`` is in ``sys.modules``."""
    worker = worker or _current_worker()
    if worker is None:
        return None
    return max(1, _machine.usable_cpus() // _threads_on_host(worker))


def _task_resources(memory_limit, num_threads):
    """The memory_limit and num_threads of one task (see the module's notes)."""
    worker = _current_worker()
    if worker is None:
        return {"memory_limit": memory_limit, "num_threads": num_threads}
    if num_threads is None and not os.environ.get("FASTCONV_NUM_THREADS"):
        num_threads = _worker_default_threads(worker)
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
    _check_embedded({"x": x}, _images_per_block(x))
    x = _whole_images(x, "x")
    _check_blocks("x", x, geometry.flops // geometry.N, "x")
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
    batch_arrays = {"grad_output": grad_output} if kind == "input_grad" else {
        "x": array, "grad_output": grad_output}
    _check_embedded(batch_arrays, _images_per_block(grad_output))
    flops_per_image = geometry.flops // geometry.N
    if kind == "input_grad":
        grad_output = _whole_images(grad_output, "grad_output")
        _check_blocks("grad_output", grad_output, flops_per_image, "grad_output")
        return _per_block(
            _input_grad_block, f"fastconv-conv{spatial_dims}d-input-grad", (grad_output,),
            (array,), tuple(x_shape[1:]), result, spatial_dims=spatial_dims,
            image_shape=tuple(x_shape[1:]), options=options, **resources)
    x = _whole_images(array, "x")
    _check_blocks("x", x, flops_per_image, "x (and grad_output)")
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
           padding_mode="zeros", method="auto", memory_limit=None, num_threads=None):
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
    stride, padding, dilation, groups, flip, padding_mode, method
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
    return _forward(x, weight, bias, 2, _options(stride, padding, dilation, groups, padding_mode),
                    flip, method, memory_limit, num_threads)


def conv1d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, flip=False,
           padding_mode="zeros", method="auto", memory_limit=None, num_threads=None):
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
    return _forward(x, weight, bias, 1, _options(stride, padding, dilation, groups, padding_mode),
                    flip, method, memory_limit, num_threads)


def conv2d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, padding_mode="zeros", method="auto",
                      memory_limit=None, num_threads=None):
    """Input gradient of :func:`conv2d` for a Dask ``grad_output``, per block of images.

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, H, W) of the convolution's input.
    weight : array_like or dask.array.Array, shape (K, C/groups, R, S)
    grad_output : dask.array.Array, shape (N, K, Ho, Wo)
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads
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
                     _options(stride, padding, dilation, groups, padding_mode), flip, method,
                     memory_limit, num_threads)


def conv2d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, padding_mode="zeros", method="auto",
                       memory_limit=None, num_threads=None, split_every=None):
    """Weight gradient of :func:`conv2d` for Dask arrays: partial sums per
    block of images, added by Dask's tree reduction.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
    weight_shape : tuple of int
        (K, C/groups, R, S).
    grad_output : dask.array.Array, shape (N, K, Ho, Wo)
        Rechunked to x's blocks of images if they differ.
    stride, padding, dilation, groups, flip, padding_mode, method, memory_limit, num_threads
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
                     _options(stride, padding, dilation, groups, padding_mode), flip, method,
                     memory_limit, num_threads, split_every)


def conv1d_input_grad(input_shape, weight, grad_output, *, stride=1, padding=0, dilation=1,
                      groups=1, flip=False, padding_mode="zeros", method="auto",
                      memory_limit=None, num_threads=None):
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
                     _options(stride, padding, dilation, groups, padding_mode), flip, method,
                     memory_limit, num_threads)


def conv1d_weight_grad(x, weight_shape, grad_output, *, stride=1, padding=0, dilation=1,
                       groups=1, flip=False, padding_mode="zeros", method="auto",
                       memory_limit=None, num_threads=None, split_every=None):
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
                     _options(stride, padding, dilation, groups, padding_mode), flip, method,
                     memory_limit, num_threads, split_every)


class _NpyFile:
    """A .npy file that the process reading a block opens itself (memory
    mapped, read-only): a graph holds its path, shape and dtype, not its data."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        header = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = header.shape, header.dtype, header.ndim
        del header
        stat = os.stat(self.path)
        self._version = (stat.st_size, stat.st_mtime_ns)

    def __getitem__(self, index):
        return np.array(np.load(self.path, mmap_mode="r")[index])

    def __dask_tokenize__(self):
        # a rewritten file gets new keys
        return ("fastconv.dask.from_npy", self.path, self._version, self.shape, str(self.dtype))

    def __repr__(self):
        return f"_NpyFile({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def from_npy(path, images_per_block="auto"):
    """A .npy file of images as a Dask array whose tasks read it, a block at a time.

    ``dask.array.from_array(np.load(path, mmap_mode="r"))`` puts the whole
    array into the graph, which a ``dask.distributed`` client pickles and
    sends to the scheduler and the workers. Here the graph holds the path:
    each task memory-maps the file and copies its block of images, so the
    file must be readable at the same path where the tasks run (a shared
    file system on a multi-machine cluster).

    Parameters
    ----------
    path : str or os.PathLike
        A .npy file (``np.save``, ``np.lib.format.open_memmap``), (N, C, ...).
    images_per_block : int or "auto"
        Images per block; ``"auto"``: Dask's ``array.chunk-size``. Blocks
        split the batch axis only.

    Returns
    -------
    dask.array.Array
        Lazy, chunked (images_per_block, -1, ...).

    Examples
    --------
    >>> import os, tempfile, numpy as np, fastconv, fastconv.dask
    >>> path = os.path.join(tempfile.mkdtemp(), "images.npy")
    >>> np.save(path, np.ones((6, 3, 8, 8), np.float32))
    >>> x = fastconv.dask.from_npy(path, images_per_block=4)
    >>> x.chunks[0], x.dtype
    ((4, 2), dtype('float32'))
    >>> float(fastconv.dask.conv2d(x, np.ones((2, 3, 3, 3)), padding=1)[5, 0, 4, 4].compute())
    27.0
    """
    source = _NpyFile(path)
    if source.ndim < 1:
        raise ValueError(f"{path} holds a 0-d array: from_npy needs a batch axis")
    if images_per_block != "auto" and (isinstance(images_per_block, bool) or
                                       not isinstance(images_per_block, (int, np.integer))
                                       or images_per_block < 1):
        raise ValueError(f"images_per_block must be an int >= 1 or 'auto', "
                         f"got {images_per_block!r}")
    chunks = (images_per_block,) + (-1,) * (source.ndim - 1)
    return da.from_array(source, chunks=chunks, name=f"from-npy-{dask.base.tokenize(source)}",
                         meta=np.empty((0,) * source.ndim, dtype=source.dtype))


def _images_per_block(array):
    """The batch blocks' size, for a message (16 if unknown)."""
    known = [int(c) for c in array.chunks[0] if not np.isnan(c)]
    return max(known) if known else 16


def _options(stride, padding, dilation, groups, padding_mode):
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
            "padding_mode": padding_mode}
