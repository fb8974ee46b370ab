"""Threads at run time: concurrent calls share the cores, BLAS's setting is
restored, and the caller's threadpool limits cap the default."""
import threading
import time
from contextlib import contextmanager
from unittest import mock
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastconv
from fastconv import _machine, _runtime
from fastconv._kernels.openmp_info import openmp_enabled
from reference import assert_close, conv2d_reference


def _hold(budget, request, log, lock):
    with budget.lend(*request) as (kernel, blas):
        with lock:
            log["now"] += max(kernel, blas)
            log["peak"] = max(log["peak"], log["now"])
            log["grants"].append((request, kernel, blas))
        time.sleep(0.005)
        with lock:
            log["now"] -= max(kernel, blas)


def test_budget_never_lends_more_than_capacity():
    blas_before = _runtime._blas_threads_now()
    budget = _runtime.ThreadBudget(capacity=3)
    log, lock = {"now": 0, "peak": 0, "grants": []}, threading.Lock()
    requests = [(3, 1), (1, 3), (2, 1), (1, 1), (1, 2)] * 8
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: _hold(budget, r, log, lock), requests))
    assert len(log["grants"]) == len(requests)
    assert log["peak"] <= 3
    for (kernel_req, blas_req), kernel, blas in log["grants"]:
        assert 1 <= kernel <= kernel_req and 1 <= blas <= blas_req
        assert kernel == 1 or blas == 1  # OpenMP and BLAS threads never multiply
    assert budget._active == 0 and budget._in_use == 0
    assert _runtime._blas_threads_now() == blas_before  # restored, whichever thread set it


@pytest.mark.parametrize("outside", [1, 2])
def test_blas_is_set_from_any_thread(outside):
    """threadpoolctl lets one Python thread set a pthreads OpenBLAS and
    ignores the others; the budget's lends from pool threads must still set
    BLAS for their call and restore it after."""
    seen = []

    def lend(request):
        with _runtime.budget.lend(*request) as (kernel, blas):
            seen.append((blas, _runtime._blas_threads_now()))

    with threadpool_limits(limits=outside, user_api="blas"):  # the main thread sets it first
        for request in [(2, 1), (1, 2), (2, 1)]:
            worker = threading.Thread(target=lend, args=(request,))
            worker.start()
            worker.join()
            assert _runtime._blas_threads_now() == outside
    assert seen == [(1, 1), (2, 2), (1, 1)]


def test_budget_alone_honours_an_explicit_request():
    budget = _runtime.ThreadBudget(capacity=2)
    with budget.lend(4, 1) as granted:
        assert granted == (4, 1)
    with budget.lend(1, 2) as granted:
        assert granted == (1, 2)
        # threaded BLAS holds the process's BLAS setting: a second call waits
        # for it rather than running GEMMs on its threads


def test_blas_setting_is_restored_after_concurrent_calls():
    before = _runtime._blas_threads_now()
    rng = np.random.default_rng(0)
    cases = []
    for i in range(12):
        n = 1 + i % 3  # 1 image: tiles; 2-3 images: OpenMP over the batch
        x = rng.standard_normal((n, 8, 20 + i, 17)).astype(np.float32)
        w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
        cases.append((x, w, ["auto", "stretch", "mapped"][i % 3]))

    def run(case):
        x, w, method = case
        return fastconv.conv2d(x, w, padding=1, method=method)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(run, cases * 3))
    for (x, w, _), out in zip(cases * 3, results):
        assert_close(out, conv2d_reference(x, w, padding=((1, 1), (1, 1))), np.float32)
    assert _runtime._blas_threads_now() == before
    assert _runtime.budget._active == 0 and _runtime.budget._in_use == 0


def test_threadpool_limits_cap_the_default_threads():
    shape, wshape = (8, 16, 32, 32), (16, 16, 3, 3)
    with threadpool_limits(limits=1):
        plan = fastconv.plan_conv2d(shape, wshape, padding=1)
        assert plan.num_threads == 1
        fastconv.conv2d(np.ones(shape, np.float32), np.ones(wshape, np.float32), padding=1)
        assert _runtime._blas_threads_now() == 1  # the caller's limit is left alone
    with threadpool_limits(limits=1, user_api="blas"):
        assert fastconv.plan_conv2d(shape, wshape, padding=1).num_threads == 1
    # an explicit request is the caller's own decision
    with threadpool_limits(limits=1):
        assert fastconv.plan_conv2d(shape, wshape, padding=1, num_threads=2).num_threads == 2


def _blas_seen_inside(calls):
    """[(granted threads, BLAS threads seen inside the lend)] for each lend
    made while running calls()."""
    seen = []
    real_lend = _runtime.ThreadBudget.lend

    @contextmanager
    def spy(self, *args):
        with real_lend(self, *args) as granted:
            seen.append((granted, _runtime._blas_threads_now()))
            yield granted

    with mock.patch.object(_runtime.ThreadBudget, "lend", spy):
        calls()
    return seen


@pytest.mark.skipif(not openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("method", ["stretch", "mapped"])
def test_blas_is_single_threaded_inside_openmp_kernels(method):
    with threadpool_limits(limits=2, user_api="blas"):
        seen = _blas_seen_inside(lambda: fastconv.conv2d(
            np.ones((4, 8, 30, 30)), np.ones((8, 8, 3, 3)), num_threads=2, method=method))
        assert _runtime._blas_threads_now() == 2  # restored
    assert seen == [((2, 1), 1)]


@pytest.mark.skipif(not openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("method, shape", [("fused", (8, 8, 3, 3)), ("depthwise", (8, 1, 3, 3))])
def test_kernels_without_blas_leave_its_setting_alone(method, shape):
    """Changing BLAS's threads and back cost ~15 us a call; kernels that
    never call BLAS skip it."""
    x, w = np.ones((4, 8, 30, 30)), np.ones(shape)
    with threadpool_limits(limits=2, user_api="blas"):
        seen = _blas_seen_inside(lambda: fastconv.conv2d(x, w, groups=8 // shape[1],
                                                         num_threads=2, method=method))
    assert seen == [((2, 1), 2)]


def test_the_kernels_blas_is_scipys():
    """Of the loaded BLAS libraries (NumPy's and SciPy's OpenBLAS in wheels),
    each call sets the one scipy.linalg.cython_blas calls; every one when
    none is recognisably SciPy's."""
    import os
    import scipy
    from threadpoolctl import ThreadpoolController
    everything = ThreadpoolController().select(user_api="blas")
    root = os.path.dirname(os.path.abspath(scipy.__file__))
    scipys = [lib.filepath for lib in everything.lib_controllers
              if os.path.abspath(lib.filepath).startswith((root + os.sep, root + ".libs" + os.sep))]
    chosen = [lib.filepath for lib in _runtime._kernels_blas(everything).lib_controllers]
    assert chosen == (scipys or [lib.filepath for lib in everything.lib_controllers])

    class Unknown:  # one shared library nobody can attribute
        lib_controllers = [mock.Mock(filepath="/usr/lib/libopenblas.so.0")]
    assert _runtime._kernels_blas(Unknown) is Unknown


def test_a_blas_call_joining_a_blas_free_one_sets_blas():
    """A fused call running (BLAS untouched) and a mapped call starting
    beside it: the mapped call's GEMMs still run with BLAS at 1 thread, and
    the caller's setting is back once both are done."""
    budget = _runtime.ThreadBudget(capacity=4)
    with threadpool_limits(limits=2, user_api="blas"):
        with budget.lend(2, 1, False):
            assert _runtime._blas_threads_now() == 2
            with budget.lend(2, 1, True) as granted:
                assert granted == (2, 1) and _runtime._blas_threads_now() == 1
                assert budget.blas_threads_outside() == 2  # the caller's, for defaults
            assert _runtime._blas_threads_now() == 1  # the fused call still runs
        assert _runtime._blas_threads_now() == 2
        assert budget._active == 0 and budget._blas_changed is None


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_child_forked_during_a_call_is_not_left_waiting():
    import multiprocessing as mp
    budget = _runtime.budget
    ctx = mp.get_context("fork")
    started, release = threading.Event(), threading.Event()

    def hold():
        with budget.lend(budget.capacity, 1):
            started.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait(10)
    try:
        with ctx.Pool(1) as pool:  # forked while the budget is fully lent
            result = pool.apply_async(_small_conv)
            out = result.get(timeout=60)
    finally:
        release.set()
        holder.join()
    assert out.shape == (1, 2, 6, 6)


def _small_conv():
    return fastconv.conv2d(np.ones((1, 1, 8, 8)), np.ones((2, 1, 3, 3)), num_threads=1)


@pytest.mark.skipif(_machine.usable_cpus() < 2, reason="needs 2 usable cores")
def test_omp_num_threads_1_sizes_calls_not_the_budget(tmp_path):
    # dask.distributed starts workers with OMP_NUM_THREADS=1: each call
    # defaults to 1 thread, but calls from several threads must run side by
    # side, not wait for a budget of 1
    import os
    import subprocess
    import sys
    code = (
        "import threading, fastconv, numpy as np\n"
        "from fastconv import _runtime\n"
        "b = _runtime.budget\n"
        "inside = threading.Barrier(2, timeout=20)\n"
        "def call():\n"
        "    with b.lend(1, 1):\n"
        "        inside.wait()  # both calls hold threads at once, or this times out\n"
        "ts = [threading.Thread(target=call) for _ in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(b.capacity, fastconv.get_config()['num_threads'])\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FASTCONV_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    capacity, default_threads = map(int, result.stdout.split())
    assert capacity == _machine.usable_cpus() and default_threads == 1
