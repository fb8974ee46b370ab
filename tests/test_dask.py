"""fastconv.dask: Dask arrays, with the threaded scheduler and a real
dask.distributed LocalCluster, against the NumPy reference and the in-memory
functions."""
import math
import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from cases import DTYPES, GRADIENT_METHODS, conv_cases, random_arrays  # noqa: E402
from reference import (assert_close, conv1d_reference, conv2d_input_grad_reference,  # noqa: E402
                       conv2d_reference, conv2d_weight_grad_reference)

CONV = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
X_SHAPE, W_SHAPE = (7, 4, 9, 10), (6, 2, 3, 2)

# batch-axis blocks: uneven last block, one image per block, all in one;
# the last chunking splits C, H and W too (rechunked to whole images)
CHUNKINGS = [(3, 4, 9, 10), (1, 4, 9, 10), (7, 4, 9, 10), (2, 1, 5, 4)]


def _arrays(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    w = rng.standard_normal(W_SHAPE).astype(dtype)
    b = rng.standard_normal(W_SHAPE[0]).astype(dtype)
    g = rng.standard_normal(fastconv.plan_conv2d(X_SHAPE, W_SHAPE, **CONV).output_shape).astype(dtype)
    return x, w, b, g


def _splits_more_than_batch(chunks):
    return chunks[1:] != X_SHAPE[1:]


def _dask(array, chunks):
    """A Dask array of `array` (x or grad_output) split as `chunks` (x's)
    says: along the batch axis only, or along the others too."""
    if not _splits_more_than_batch(chunks):
        return da.from_array(array, chunks=(chunks[0], -1, -1, -1))
    return da.from_array(array, chunks=chunks)


def _build_recording_rechunks(build):
    """build()'s graphs, and the rechunk warnings building them gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build()
    rechunked = [w for w in caught if issubclass(w.category, dask.array.PerformanceWarning)]
    return result, rechunked


# --------------------------------------------------------------------------
# threaded scheduler

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_forward_and_gradients_threaded(chunks, dtype):
    x, w, b, g = _arrays(dtype)
    xd, gd = _dask(x, chunks), _dask(g, chunks)
    (y, dx, dw), rechunked = _build_recording_rechunks(lambda: (
        fd.conv2d(xd, w, b, **CONV),
        fd.conv2d_input_grad(x.shape, w, gd, **CONV),
        fd.conv2d_weight_grad(xd, w.shape, gd, **CONV, split_every=2)))
    # a rechunk happens, and is announced, exactly when C/H/W are split
    assert bool(rechunked) == _splits_more_than_batch(chunks)
    batch_blocks = (chunks[0],) * (X_SHAPE[0] // chunks[0]) + ((X_SHAPE[0] % chunks[0],)
                                                               if X_SHAPE[0] % chunks[0] else ())
    assert y.chunks[0] == dx.chunks[0] == batch_blocks
    assert y.numblocks[1:] == dx.numblocks[1:] == (1, 1, 1) and dw.numblocks == (1, 1, 1, 1)
    with dask.config.set(scheduler="threads"):
        y, dx, dw = dask.compute(y, dx, dw)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    assert_close(y, conv2d_reference(x, w, b, **CONV), dtype)
    assert_close(dx, conv2d_input_grad_reference(x.shape, w, g, **CONV), dtype)
    assert_close(dw, conv2d_weight_grad_reference(x, w.shape, g, **CONV), dtype)
    assert_close(y, fastconv.conv2d(x, w, b, **CONV), dtype)
    assert_close(dw, fastconv.conv2d_weight_grad(x, w.shape, g, **CONV), dtype)


def _conv_kwargs(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(GRADIENT_METHODS), st.integers(1, 3), st.data())
def test_random_cases_match_reference(case, images_per_block, data):
    x, w, b = random_arrays(case)
    kw = dict(_conv_kwargs(case), method=case["method"], num_threads=case["threads"])
    xd = da.from_array(x, chunks=(images_per_block, -1, -1, -1))
    y = fd.conv2d(xd, w, b, **kw)
    expected = conv2d_reference(x, w, b, **_conv_kwargs(case))
    assert y.shape == expected.shape and y.dtype == case["dtype"]
    assert_close(y.compute(scheduler="threads"), expected, case["dtype"])
    g = np.random.default_rng(case["seed"] + 1).standard_normal(expected.shape).astype(case["dtype"])
    gd = da.from_array(g, chunks=(data.draw(st.integers(1, 3)), -1, -1, -1))
    with warnings.catch_warnings():
        # x and grad_output may be split differently: grad_output is rechunked
        warnings.simplefilter("ignore", dask.array.PerformanceWarning)
        dw = fd.conv2d_weight_grad(xd, w.shape, gd, **kw)
    dx = fd.conv2d_input_grad(x.shape, w, gd, **kw)
    dx, dw = dask.compute(dx, dw, scheduler="threads")
    assert_close(dx, conv2d_input_grad_reference(x.shape, w, g, **_conv_kwargs(case)), case["dtype"])
    assert_close(dw, conv2d_weight_grad_reference(x, w.shape, g, **_conv_kwargs(case)), case["dtype"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_and_its_gradients(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 30)).astype(dtype)
    w = rng.standard_normal((4, 2, 4)).astype(dtype)
    kw = dict(stride=2, padding=(3, 1), dilation=2, groups=2)
    y = fd.conv1d(da.from_array(x, chunks=(2, 4, 30)), w, **kw)
    assert_close(y.compute(), conv1d_reference(x, w, **kw), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    gd = da.from_array(g, chunks=(2, 3, -1))   # split along K: rechunked, with a warning
    with pytest.warns(dask.array.PerformanceWarning, match=r"grad_output .* rechunked") as caught:
        dx = fd.conv1d_input_grad(x.shape, w, gd, **kw)
        dw = fd.conv1d_weight_grad(da.from_array(x, chunks=(2, 4, 30)), w.shape, gd, **kw)
    assert len(caught) == 2 and all(warning.filename == __file__ for warning in caught)  # the call
    assert dx.shape == x.shape and dw.shape == w.shape
    assert_close(dx.compute(), fastconv.conv1d_input_grad(x.shape, w, g, **kw), dtype)
    assert_close(dw.compute(), fastconv.conv1d_weight_grad(x, w.shape, g, **kw), dtype)


def test_weight_gradient_is_a_tree_of_partial_sums():
    x, w, _, g = _arrays(np.float64)
    dw = fd.conv2d_weight_grad(da.from_array(x, chunks=(1, -1, -1, -1)), w.shape,
                               da.from_array(g, chunks=(1, -1, -1, -1)), **CONV, split_every=2)
    graph = dict(dw.__dask_graph__())
    partials = [k for k in graph if "weight-grad-partial" in str(k[0] if isinstance(k, tuple) else k)]
    assert len(partials) == X_SHAPE[0]  # one per block of images
    # 7 partial sums added two by two: more than one reduction level
    levels = {k[0] for k in graph if isinstance(k, tuple) and "sum" in k[0]}
    assert len(levels) >= 3
    assert_close(dw.compute(), conv2d_weight_grad_reference(x, w.shape, g, **CONV), np.float64)


def test_float16_and_integer_inputs_follow_the_in_memory_dtypes():
    rng = np.random.default_rng(5)
    x16 = rng.standard_normal((4, 2, 6, 6)).astype(np.float16)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float16)
    g = rng.standard_normal((4, 3, 4, 4)).astype(np.float16)
    xd, gd = da.from_array(x16, chunks=1), da.from_array(g, chunks=(1, -1, -1, -1))
    dw = fd.conv2d_weight_grad(xd.rechunk((1, -1, -1, -1)), w.shape, gd)
    assert dw.dtype == np.float16
    # summed in float32 and rounded once: within float16's rounding of the exact sum
    expected = conv2d_weight_grad_reference(x16, w.shape, g)
    np.testing.assert_allclose(dw.compute().astype(np.float64), expected, rtol=1e-3,
                               atol=1e-3 * np.abs(expected).max())
    xi = np.arange(2 * 2 * 5 * 5).reshape(2, 2, 5, 5)
    y = fd.conv2d(da.from_array(xi, chunks=(1, -1, -1, -1)), np.ones((1, 2, 2, 2), dtype=int))
    assert y.dtype == np.float64 and y.compute().dtype == np.float64
    np.testing.assert_array_equal(y.compute(), fastconv.conv2d(xi, np.ones((1, 2, 2, 2), dtype=int)))


def test_unknown_batch_block_sizes():
    x, w, b, _ = _arrays(np.float64)
    keep = np.array([True, False, True, True, False, True, True])
    xd = da.from_array(x, chunks=(3, -1, -1, -1))[da.from_array(keep, chunks=3)]
    assert np.isnan(xd.shape[0])
    y = fd.conv2d(xd, w, b, **CONV)
    assert np.isnan(y.shape[0]) and y.shape[1:] == (6, 4, 11)
    assert_close(y.compute(), conv2d_reference(x[keep], w, b, **CONV), np.float64)


def test_dask_weight_and_bias_are_merged_into_one_block():
    x, w, b, _ = _arrays(np.float32)
    y = fd.conv2d(da.from_array(x, chunks=(2, -1, -1, -1)), da.from_array(w, chunks=(2, 1, 2, 1)),
                  da.from_array(b, chunks=2), **CONV)
    assert_close(y.compute(), conv2d_reference(x, w, b, **CONV), np.float32)


# --------------------------------------------------------------------------
# everyday use: public names, .npy files, block sizes

def test_dir_lists_only_the_public_names():
    assert dir(fd) == sorted(fd.__all__)
    assert not {"np", "os", "time", "plan_conv", "da", "dask", "warnings"} & set(dir(fd))
    assert all(callable(getattr(fd, name)) for name in fd.__all__)
    namespace = {}
    exec("from fastconv.dask import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(fd.__all__)


def _save_images(path, shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    np.save(path, x)
    return x


def test_from_npy_reads_the_file_in_the_tasks(tmp_path):
    path = tmp_path / "images.npy"
    x = _save_images(path, (10, 4, 32, 32))   # 160 KiB
    xd = fd.from_npy(path, images_per_block=4)
    assert xd.chunks == ((4, 4, 2), (4,), (32,), (32,)) and xd.dtype == np.float32
    graph = dict(xd.__dask_graph__())
    assert len(pickle.dumps(graph)) < 10_000 < x.nbytes   # the path, not the data
    assert fd._embedded_arrays(xd) == []
    w = np.random.default_rng(1).standard_normal((3, 4, 3, 3)).astype(np.float32)
    assert_close(fd.conv2d(xd, w, padding=1).compute(scheduler="threads"),
                 fastconv.conv2d(x, w, padding=1), np.float32)
    # a rewritten file gets new keys (no stale results from a cluster's memory)
    _save_images(path, (10, 4, 32, 32), seed=2)
    assert fd.from_npy(path, images_per_block=4).name != xd.name
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="images_per_block"):
            fd.from_npy(path, images_per_block=bad)


def test_an_array_in_the_graph_is_found(tmp_path):
    path = tmp_path / "images.npy"
    x = _save_images(path, (8, 2, 16, 16))
    mapped = da.from_array(np.load(path, mmap_mode="r"), chunks=(2, -1, -1, -1))
    held = fd._embedded_arrays(mapped)
    assert sum(a.nbytes for a in held) == x.nbytes and isinstance(held[0], np.memmap)
    inline = da.from_array(np.load(path, mmap_mode="r"), chunks=(2, -1, -1, -1), inline_array=True)
    assert sum(a.nbytes for a in fd._embedded_arrays(inline)) == x.nbytes  # held once
    assert sum(a.nbytes for a in fd._embedded_arrays(da.from_array(x, chunks=2))) == x.nbytes
    assert fd._embedded_arrays(da.zeros((8, 2, 16, 16), chunks=2)) == []


def test_no_embedded_array_warning_without_a_cluster(tmp_path):
    # the threaded scheduler reads the memory map where it is: nothing is sent
    path = tmp_path / "images.npy"
    _save_images(path, (48, 64, 28, 28))   # 9.2 MiB
    x = da.from_array(np.load(path, mmap_mode="r"), chunks=(16, -1, -1, -1))
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.conv2d(x, np.ones((64, 64, 3, 3), np.float32), padding=1)


def _suggested_chunks(message):
    (chunks,) = set(re.findall(r"chunks=(\([0-9, -]+\))", message))
    return eval(chunks)  # noqa: S307 - a tuple of ints from our own message


def _only_warning(caught):
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].filename == __file__   # points at the call
    return str(caught[0].message)


def test_blocks_too_small_for_a_task_threaded():
    w = np.ones((64, 64, 3, 3), np.float32)   # ResNet-50 2a: 0.23 GFLOP per image
    x = da.zeros((256, 64, 56, 56), np.float32, chunks=(1, -1, -1, -1))
    with dask.config.set(scheduler="threads"):
        with pytest.warns(dask.array.PerformanceWarning, match="too little work") as caught:
            fd.conv2d(x, w, padding=1)
        message = _only_warning(caught)
        assert "threaded scheduler" in message and "x.rechunk(" in message
        chunks = _suggested_chunks(message)
        assert chunks[0] > 1 and chunks[1:] == (-1, -1, -1)
        # what it says to use is quiet
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fd.conv2d(x.rechunk(chunks), w, padding=1)
            fd.conv2d(x.rechunk((64, -1, -1, -1)), w, padding=1)
            # a few small blocks cost too little to mention
            fd.conv2d(x[:8], w, padding=1)
        g = da.zeros((256, 64, 56, 56), np.float32, chunks=(1, -1, -1, -1))
        with pytest.warns(dask.array.PerformanceWarning, match="grad_output is split") as caught:
            fd.conv2d_input_grad(x.shape, w, g, padding=1)
        _only_warning(caught)
        with pytest.warns(dask.array.PerformanceWarning, match=r"x is split") as caught:
            fd.conv2d_weight_grad(x, w.shape, g, padding=1)
        _only_warning(caught)


# --------------------------------------------------------------------------
# the graph

class _Computed(Exception):
    pass


def _must_not_run(shape, dtype):
    def fail():
        raise _Computed("the graph was computed")
    return da.from_delayed(dask.delayed(fail)(), shape=shape, dtype=dtype)


def test_building_the_graph_computes_nothing():
    blocks = [_must_not_run((2, 4, 9, 10), np.float32) for _ in range(3)]
    x = da.concatenate(blocks + [_must_not_run((1, 4, 9, 10), np.float32)])
    w = np.ones(W_SHAPE, np.float32)
    y = fd.conv2d(x, w, **CONV)
    grad = _must_not_run(y.shape, np.float32).rechunk((2, -1, -1, -1))
    dx = fd.conv2d_input_grad(x.shape, w, grad, **CONV)
    with pytest.warns(dask.array.PerformanceWarning, match=r"rechunked from blocks of \(3, "):
        dw = fd.conv2d_weight_grad(x, w.shape, grad.rechunk((3, -1, -1, -1)), **CONV)
    assert y.shape == (7, 6, 4, 11) and y.chunks == ((2, 2, 2, 1), (6,), (4,), (11,))
    assert y.dtype == np.float32 and type(y._meta) is np.ndarray and y._meta.dtype == np.float32
    assert dx.chunks == ((2, 2, 2, 1), (4,), (9,), (10,)) and dx.dtype == np.float32
    assert dw.chunks == ((6,), (2,), (3,), (2,)) and dw.dtype == np.float32
    with pytest.raises(_Computed):
        y.compute(scheduler="synchronous")


def test_the_weight_is_in_the_graph_once():
    x = da.zeros((16, 8, 6, 6), chunks=(2, -1, -1, -1))
    w = np.random.default_rng(0).standard_normal((256, 8, 8, 8))   # 1 MiB
    y = fd.conv2d(x, w, padding=3)
    for graph in (y.__dask_graph__(), dask.optimize(y)[0].__dask_graph__()):
        tasks = dict(graph)
        # distributed pickles every task on its own: 8 tasks that each held
        # the weight would weigh 8 MiB
        total = sum(len(pickle.dumps(task)) for task in tasks.values())
        assert w.nbytes < total < 1.5 * w.nbytes


def _held(array, images_per_block):
    """A Dask array whose blocks are the given NumPy views of ``array``
    themselves (from_array may copy small slices into the graph), and
    those views."""
    parts = [array[i:i + images_per_block] for i in range(0, len(array), images_per_block)]
    same = dask.delayed(lambda part: part, pure=True)
    return da.concatenate([da.from_delayed(same(part), part.shape, part.dtype)
                           for part in parts]), parts


def test_a_task_unwraps_one_block_and_refuses_several():
    block = np.ones((2, 3))
    first, second = fd._on_blocks(lambda a, b: (a, b), [[block]], ([block],))
    assert first is block and second is block
    with pytest.raises(ValueError, match="got 2 blocks along an axis that must be one block"):
        fd._on_blocks(lambda a: a, [[block, block]])


@pytest.mark.parametrize("kind", ["forward", "input_grad", "weight_grad"])
def test_tasks_get_their_blocks_without_a_copy(kind, monkeypatch):
    """A task hands fastconv the blocks Dask holds, not copies (blockwise's
    concatenate=True copied every block)."""
    x, w, b, g = _arrays(np.float32)
    (xd, x_parts), (gd, g_parts) = _held(x, 3), _held(g, 3)
    (wd, (w_part,)), (bd, (b_part,)) = _held(w, len(w)), _held(b, len(b))
    function, build, held = {
        "forward": ("conv2d", lambda: fd.conv2d(xd, wd, bd, **CONV),
                    lambda i: (x_parts[i], w_part, b_part)),
        "input_grad": ("conv2d_input_grad", lambda: fd.conv2d_input_grad(X_SHAPE, wd, gd, **CONV),
                       lambda i: (w_part, g_parts[i])),
        "weight_grad": ("conv2d_weight_grad",
                        lambda: fd.conv2d_weight_grad(xd, W_SHAPE, gd, **CONV),
                        lambda i: (x_parts[i], g_parts[i]))}[kind]
    seen = []
    in_memory = getattr(fd._inmemory, function)

    def recording(*args, **kwargs):
        seen.append([a for a in args if isinstance(a, np.ndarray)])
        return in_memory(*args, **kwargs)

    monkeypatch.setattr(fd._inmemory, function, recording)
    build().compute(scheduler="synchronous")
    assert len(seen) == 3  # blocks of 3, 3 and 1 images
    for blocks in seen:
        assert any(all(given is expected for given, expected in zip(blocks, held(i), strict=True))
                   for i in range(3))


# --------------------------------------------------------------------------
# bad input: clear errors before any compute

@pytest.fixture
def lazy_x():
    return _must_not_run((4, 4, 9, 10), np.float64).rechunk((2, -1, -1, -1))


def test_a_numpy_input_is_refused(lazy_x):
    x, w, _, g = _arrays(np.float64)
    with pytest.raises(TypeError, match=r"x must be a dask.array.Array .*fastconv"):
        fd.conv2d(x, w)
    with pytest.raises(TypeError, match="grad_output must be a dask.array.Array"):
        fd.conv2d_input_grad(x.shape, w, g)
    with pytest.raises(TypeError, match="grad_output must be a dask.array.Array"):
        fd.conv2d_weight_grad(lazy_x, w.shape, g[:4])
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        fd.conv1d([[[1.0, 2.0]]], np.ones((1, 1, 1)))


def test_bad_arguments_fail_before_compute(lazy_x):
    w = np.ones(W_SHAPE)
    with pytest.raises(ValueError, match=r"weight.shape\[1\] must be C/groups"):
        fd.conv2d(lazy_x, np.ones((6, 3, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        fd.conv2d(lazy_x[0], w)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        fd.conv2d(lazy_x, w, np.ones(5), groups=2)
    with pytest.raises(ValueError, match="method="):
        fd.conv2d(lazy_x, w, groups=2, method="fast")
    with pytest.raises(fastconv.WorkspaceLimitError):
        fd.conv2d(lazy_x, np.ones((6, 2, 5, 5)), groups=2, method="stretch", memory_limit=10)
    with pytest.raises(ValueError, match="num_threads"):
        fd.conv2d(lazy_x, w, groups=2, num_threads=0)
    grad = _must_not_run((4, 6, 7, 8), np.float64)
    with pytest.raises(ValueError, match=r"grad_output must have the convolution's output shape"):
        fd.conv2d_input_grad((4, 4, 9, 10), w, grad, groups=2)
    with pytest.raises(ValueError, match=r"grad_output must have the convolution's output shape"):
        fd.conv2d_weight_grad(lazy_x, W_SHAPE, grad, groups=2)
    with pytest.raises(ValueError, match="input_shape must be a tuple of 4 ints"):
        fd.conv2d_input_grad((4, 4, 9), w, grad, groups=2)
    unknown_c = da.from_array(np.ones((4, 4, 9, 10)))[:, da.from_array(np.ones(4, bool))]
    with pytest.raises(ValueError, match="unknown sizes along C"):
        fd.conv2d(unknown_c, w, groups=2)
    with pytest.raises(TypeError, match="weight must be an array or a dask.array.Array"):
        fd.conv2d(lazy_x, dask.delayed(np.ones)(W_SHAPE), groups=2)


def test_non_numpy_blocks_are_refused():
    masked = da.from_array(np.ma.masked_array(np.ones((2, 1, 3, 3))), chunks=1)
    with pytest.raises(TypeError, match="NumPy blocks"):
        fd.conv2d(masked, np.ones((1, 1, 2, 2)))


def test_a_clear_import_error_without_dask(tmp_path):
    code = ("import sys; sys.modules['dask'] = None\n"
            "try:\n    import fastconv.dask\nexcept ImportError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pip install 'fastconv[dask]'" in result.stdout
    assert "fastconv.conv2d" not in result.stderr  # the package itself still imports


# --------------------------------------------------------------------------
# a real dask.distributed cluster

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _environment_and_resources(memory_limit, num_threads):
    import os
    return os.environ.get("OMP_NUM_THREADS"), fd._task_resources(memory_limit, num_threads)


def _on_every_worker(client, func, *args):
    """func(*args) as a task on each worker (client.run would call it
    outside any task)."""
    futures = [client.submit(func, *args, workers=[address], pure=False)
               for address in client.scheduler_info(n_workers=-1)["workers"]]
    return client.gather(futures)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_forward_and_gradients_on_a_local_cluster(client, chunks, dtype):
    x, w, b, g = _arrays(dtype, seed=11)
    xd, gd = _dask(x, chunks), _dask(g, chunks)
    (y, dx, dw), _ = _build_recording_rechunks(lambda: (
        fd.conv2d(xd, w, b, **CONV),
        fd.conv2d_input_grad(x.shape, w, gd, **CONV),
        fd.conv2d_weight_grad(xd, w.shape, gd, **CONV)))
    y, dx, dw = client.compute([y, dx, dw], sync=True)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    assert_close(y, fastconv.conv2d(x, w, b, **CONV), dtype)
    assert_close(dx, fastconv.conv2d_input_grad(x.shape, w, g, **CONV), dtype)
    assert_close(dw, fastconv.conv2d_weight_grad(x, w.shape, g, **CONV), dtype)
    assert_close(y, conv2d_reference(x, w, b, **CONV), dtype)


def test_tasks_share_the_hosts_cores_between_worker_threads(client):
    from fastconv import _machine

    runs = _on_every_worker(client, _environment_and_resources, None, None)
    assert len(runs) == 2
    for omp, chosen in runs:
        assert omp == "1"  # what dask.distributed does to its workers
        assert chosen["num_threads"] == max(1, _machine.usable_cpus() // 2)
        assert 0 < chosen["memory_limit"] <= fastconv.get_config()["memory_limit"]
    # an explicit choice is kept
    explicit = _on_every_worker(client, _environment_and_resources, "64MiB", 3)
    assert all(r == {"memory_limit": "64MiB", "num_threads": 3} for _, r in explicit)


def test_a_lone_single_threaded_worker_uses_the_free_cores():
    distributed = pytest.importorskip("distributed")
    from fastconv import _machine
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        ((_, chosen),) = _on_every_worker(client, _environment_and_resources, None, None)
        x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
        y = fd.conv2d(da.from_array(x, chunks=(1, -1, -1, -1)), np.ones((2, 2, 3, 3)))
        result = client.compute(y, sync=True)
    assert chosen["num_threads"] == _machine.usable_cpus()
    assert_close(result, conv2d_reference(x, np.ones((2, 2, 3, 3))), np.float64)


def test_grad_output_split_along_channels_keeps_x_blocks_of_images():
    # merging grad_output's K blocks makes its blocks exceed array.chunk-size;
    # it must still get x's blocks of images (x is whole and stays as it is)
    x, w, _, g = _arrays(np.float64)
    with dask.config.set({"array.chunk-size": "10kB"}), \
            pytest.warns(dask.array.PerformanceWarning, match="grad_output"):
        dw = fd.conv2d_weight_grad(da.from_array(x, chunks=(7, -1, -1, -1)), w.shape,
                                   da.from_array(g, chunks=(7, 3, -1, -1)), **CONV)
    assert_close(dw.compute(), conv2d_weight_grad_reference(x, w.shape, g, **CONV), np.float64)


def test_an_array_inside_the_graph_warns_on_a_cluster(client, tmp_path):
    path = tmp_path / "images.npy"
    x = _save_images(path, (48, 64, 28, 28))   # 9.2 MiB, over the 4 MiB threshold
    w = np.ones((64, 64, 3, 3), np.float32)
    mapped = da.from_array(np.load(path, mmap_mode="r"), chunks=(16, -1, -1, -1))
    with pytest.warns(dask.array.PerformanceWarning, match="holds 9.19 MiB") as caught:
        fd.conv2d(mapped, w, padding=1)
    message = _only_warning(caught)
    assert "memory-mapped file" in message
    assert re.search(r"x = fastconv.dask.from_npy\((path|'[^']*images.npy'), images_per_block=16\)",
                     message)
    with pytest.warns(dask.array.PerformanceWarning, match="in-memory function") as caught:
        fd.conv2d(da.from_array(x, chunks=(16, -1, -1, -1)), w, padding=1)
    _only_warning(caught)
    with pytest.warns(dask.array.PerformanceWarning, match="graph of grad_output") as caught:
        fd.conv2d_input_grad(x.shape, w, mapped, padding=1)
    _only_warning(caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fd.conv2d(fd.from_npy(path, images_per_block=16), w, padding=1)
        fd.conv2d(da.from_array(x[:4], chunks=(2, -1, -1, -1)), w, padding=1)  # small: fine
    assert_close(client.compute(y, sync=True), fastconv.conv2d(x, w, padding=1), np.float32)


def test_block_guidance_on_a_cluster(client):
    w = np.ones((64, 64, 3, 3), np.float32)
    x = da.zeros((64, 64, 56, 56), np.float32, chunks=(64, -1, -1, -1))
    # one block for 2 worker threads: one would idle
    with pytest.warns(dask.array.PerformanceWarning, match="1 block.* for 2 worker threads") as caught:
        fd.conv2d(x, w, padding=1)
    assert _suggested_chunks(_only_warning(caught)) == (32, -1, -1, -1)
    # blocks of one image: a task costs more than its work
    with pytest.warns(dask.array.PerformanceWarning, match="too little work .*dask.distributed") as caught:
        fd.conv2d(x.rechunk((1, -1, -1, -1)), w, padding=1)
    chunks = _suggested_chunks(_only_warning(caught))
    assert chunks == (32, -1, -1, -1)   # big enough, and one block per worker thread
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.conv2d(x.rechunk(chunks), w, padding=1)
        fd.conv2d(x.rechunk((32, -1, -1, -1)), w, padding=1)
        fd.conv2d(x[:1], w, padding=1)   # one image: nothing better to suggest


def _plain_call_threads():
    import fastconv as fc
    return fd._worker_default_threads(), fc.plan_conv2d((4, 8, 16, 16), (8, 8, 3, 3)).num_threads


@pytest.fixture(scope="module")
def lone_worker_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def test_the_worker_default_for_plain_calls(lone_worker_client):
    from fastconv import _machine
    assert fd._worker_default_threads() is None   # not in a task
    ((helper, _),) = _on_every_worker(lone_worker_client, _plain_call_threads)
    assert helper == _machine.usable_cpus()


def test_a_plain_call_in_a_worker_task_gets_the_worker_default(lone_worker_client):
    from fastconv import _machine
    if _machine.usable_cpus() < 2:
        pytest.skip("one core: 1 thread either way")
    ((helper, plain),) = _on_every_worker(lone_worker_client, _plain_call_threads)
    assert plain == helper


def test_the_readme_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("zarr")   # in the dask extra
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme[readme.index("## Dask: batches past one machine"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from_npy(" in code and "np.load(" not in code
    code = code.replace("np.random.rand(64, 64, 56, 56)", "np.random.rand(4, 64, 12, 12)")  # small
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with dask.config.set(scheduler="threads"):
        exec(code, namespace)
        y, dx, dw = dask.compute(namespace["y"], namespace["dx"], namespace["dw"])
    x = np.load(tmp_path / "images.npy")
    assert_close(y, fastconv.conv2d(x, namespace["w"], namespace["b"], padding=1), np.float32)
    assert dx.shape == y.shape and dw.shape == namespace["w"].shape
