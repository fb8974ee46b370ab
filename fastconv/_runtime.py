"""Threads at run time: one budget of cores shared by every call in the process.

A plan says how many threads a call may use; this module decides how many it
gets *now*. Two things make that necessary:

* Several Python threads may call fastconv at once (a thread pool, a web
  server, Dask's threaded scheduler). Each call's OpenMP team plus the others'
  would oversubscribe the cores, so calls draw threads from a shared budget of
  the machine's usable cores and wait (without holding the GIL) while none is
  free. CPU-bound work gains nothing from more threads than cores.
* BLAS's thread count is one process-wide setting (OpenBLAS has no per-call
  argument). OpenMP kernels need it at 1, so that each OpenMP thread's GEMM does
  not start a BLAS team of its own; a call whose parallelism *is* BLAS's threads
  needs it at its thread count. The setting is changed when the first call
  starts and restored when the last one ends, and a call runs on threaded BLAS
  only when it is alone (otherwise it runs on one thread), so the setting is
  never changed under a running GEMM.

The caller's own limits are respected: the default thread count of a call
(``num_threads=None``) is capped by the OpenMP and BLAS limits in force in the
calling thread, e.g. inside ``threadpoolctl.threadpool_limits(1)``.
"""
import os
import queue
import sys
import threading

from fastconv import _machine

__all__ = ["blas_vector_bits", "budget", "call_threads", "run_kernel"]

_controller_lock = threading.Lock()
_controller = None


def _blas_controller():
    """The threadpoolctl controller of the BLAS libraries loaded (built once:
    scanning the loaded libraries costs milliseconds)."""
    global _controller
    if _controller is None:
        with _controller_lock:
            if _controller is None:
                # the kernels load SciPy's BLAS: it must be loaded before the
                # scan, or the controller would only see NumPy's
                import fastconv._kernels.mapped  # noqa: F401
                from threadpoolctl import ThreadpoolController
                _controller = _kernels_blas(ThreadpoolController().select(user_api="blas"))
    return _controller


def _kernels_blas(controller):
    """The BLAS the kernels call (scipy.linalg.cython_blas's: in a wheel, the
    OpenBLAS in scipy.libs, not NumPy's in numpy.libs), so that each call sets
    one library's threads, not every loaded one's; all of them when none is
    recognisably SciPy's (e.g. one shared libopenblas)."""
    import scipy
    root = os.path.dirname(os.path.abspath(scipy.__file__))
    mine = [lib for lib in controller.lib_controllers
            if os.path.abspath(lib.filepath).startswith((root + os.sep, root + ".libs" + os.sep))]
    if mine and len(mine) < len(controller.lib_controllers):
        controller = controller.select(filepath=[lib.filepath for lib in mine])
    return controller


# OpenBLAS's kernel families (its "core" names: threadpoolctl's
# `architecture`) by the width of the vector registers their GEMM uses.
# OpenBLAS picks the family from the CPU at load time, and a CPU newer than
# its table gets an older family: SciPy's OpenBLAS 0.3.30 runs its Haswell
# (AVX2) kernels on AMD Zen 5 (family 26), at half the rate of AVX-512 code
# there (see Tuning.blas_rate).
_OPENBLAS_VECTOR_BITS = {
    "sapphirerapids": 512, "cooperlake": 512, "skylakex": 512,
    "zen": 256, "haswell": 256, "sandybridge": 256, "excavator": 256,
    "steamroller": 256, "piledriver": 256, "bulldozer": 256,
    "nehalem": 128, "core2": 128, "penryn": 128, "dunnington": 128,
    "atom": 128, "prescott": 128, "barcelona": 128, "opteron": 128,
}


def blas_vector_bits():
    """Width in bits of the vectors the kernels' BLAS computes its GEMM with
    on this CPU (OpenBLAS's kernel family, as threadpoolctl reads it), the
    narrowest if several are loaded; None where it cannot be told (another
    BLAS, a family not in the table)."""
    bits = [_OPENBLAS_VECTOR_BITS.get(str(getattr(lib, "architecture", None)).lower())
            for lib in _blas_controller().lib_controllers]
    return min(bits) if bits and None not in bits else None


def _fewest(counts):
    counts = [c for c in counts if isinstance(c, int) and c >= 1]
    return min(counts) if counts else None


def _blas_threads_now():
    libraries = _blas_controller().lib_controllers
    if len(libraries) == 1:
        # the usual case (SciPy's one OpenBLAS), read on every call that
        # asks for the default threads: 0.3 us here, 0.75 us through _fewest
        count = libraries[0].num_threads
        return count if isinstance(count, int) and count >= 1 else None
    return _fewest(lib.num_threads for lib in libraries)


def _set_library_threads(lib, n):
    """Set one BLAS library's threads, from whichever thread calls.

    threadpoolctl (3.6+) lets only one Python thread set a pthreads OpenBLAS
    (the first to call set_num_threads) and silently ignores the others, to
    stop threads fighting over one pool. The budget already serialises every
    change under its lock, so fastconv calls the library's own setter
    (threadpoolctl's _real_set_num_threads): otherwise a call from a pool
    thread, or a Dask worker's, left BLAS at its threads for the whole
    OpenMP team (oversubscribed), or its restore did not take and BLAS
    stayed at 1 thread after the calls (found with 8 pool threads lending
    concurrently)."""
    real_setter = getattr(lib, "_real_set_num_threads", None)
    if real_setter is not None:
        real_setter(n)
    else:
        lib.set_num_threads(n)


def _set_blas_threads(n):
    """Set the kernels' BLAS libraries' thread count to n; returns their
    fewest threads before, and [(library, its count before)] for those that
    changed. Calls each library's own setter (about 1 us) rather than
    building a threadpoolctl limiter, whose inspection of every loaded
    library cost about 15 us a call."""
    before = [(lib, lib.num_threads) for lib in _blas_controller().lib_controllers]
    changed = [(lib, count) for lib, count in before if count != n]
    for lib, _ in changed:
        _set_library_threads(lib, n)
    return _fewest(count for _, count in before), changed


def _restore_blas_threads(changed):
    for lib, count in changed:
        _set_library_threads(lib, count)


class ThreadBudget:
    """The usable cores of the process, lent to calls for their duration."""

    def __init__(self, capacity=None):
        self._capacity = capacity
        # a plain lock under the condition, taken directly (`with
        # self._lock`): every call takes it three times, and a Condition's
        # Python-level enter and exit over an RLock cost 0.3 us each time
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._in_use = 0
        self._exclusive = False
        self._blas_before = None   # the BLAS setting found by the first call that uses BLAS
        self._blas_changed = None  # [(library, count)] to restore; None: not set by fastconv

    @property
    def capacity(self):
        # the cores, not OMP_NUM_THREADS: that variable sizes one call's team
        # (dask.distributed sets it to 1), and a budget of 1 would make the
        # calls of a multi-threaded worker wait for each other
        if self._capacity is None:
            self._capacity = _machine.usable_cpus()
        return self._capacity

    def blas_threads_outside(self):
        """BLAS threads as the caller set them (not as fastconv set them for a
        running call)."""
        with self._lock:
            if self._blas_changed is not None:
                return self._blas_before
        return _blas_threads_now()

    def lend(self, kernel_threads, blas_threads, uses_blas=True):
        """Lend threads to one call: a context manager whose ``with ... as``
        gets the (kernel, BLAS) threads to use.

        kernel_threads > 1: an OpenMP team over work items, BLAS at 1.
        blas_threads > 1: a serial loop over threaded GEMMs.
        The grant never exceeds the request; it is smaller while other calls
        hold part of the budget. uses_blas False (kernels that never call
        BLAS): the BLAS setting is left as it is, unless a running call of
        another kind needs it.
        """
        return _Loan(self, kernel_threads, blas_threads, uses_blas)

    def _acquire(self, kernel_threads, blas_threads, uses_blas):
        """Wait for and take a grant: (kernel, blas, granted, exclusive)."""
        want = max(kernel_threads, blas_threads)
        with self._lock:
            while self._active and (self._exclusive or self._in_use >= self.capacity):
                self._cond.wait()
            if self._active == 0:
                granted = want  # alone: an explicit request above the core count is honoured
            else:
                granted = min(want, self.capacity - self._in_use)
            if blas_threads > 1 and self._active == 0:
                kernel, blas, exclusive = 1, granted, True
            elif blas_threads > 1:
                kernel, blas, exclusive, granted = 1, 1, False, 1
            else:
                kernel, blas, exclusive = granted, 1, False
            if uses_blas and self._blas_changed is None:
                # the first call using BLAS since the budget was idle sets
                # it (no GEMM runs now: an exclusive call runs alone, and
                # the calls running hold no BLAS setting)
                self._blas_before, self._blas_changed = _set_blas_threads(blas)
            self._active += 1
            self._in_use += granted
            self._exclusive = exclusive
        return kernel, blas, granted, exclusive

    def _release(self, granted, exclusive):
        with self._lock:
            self._active -= 1
            self._in_use -= granted
            if exclusive:
                self._exclusive = False
            if self._active == 0 and self._blas_changed is not None:
                _restore_blas_threads(self._blas_changed)
                self._blas_changed = None
            self._cond.notify_all()

    def _after_fork_in_child(self):
        # the calls in flight belong to threads the child does not have: a
        # budget that still counted them would make the child's calls wait forever
        changed = self._blas_changed
        self.__init__(self._capacity)
        if changed:
            try:
                _restore_blas_threads(changed)
            except Exception:  # the library may not be usable in the child; keep going
                pass


class _Loan:
    """ThreadBudget.lend's context manager. A class rather than a
    @contextmanager generator, which cost 1 us more a call (paper_mnist's
    call is ~0.2 ms)."""
    __slots__ = ("_budget", "_request", "_grant")

    def __init__(self, budget, kernel_threads, blas_threads, uses_blas):
        self._budget = budget
        self._request = (kernel_threads, blas_threads, uses_blas)

    def __enter__(self):
        self._grant = self._budget._acquire(*self._request)
        return self._grant[:2]

    def __exit__(self, *exc_info):
        self._budget._release(*self._grant[2:])
        return False


budget = ThreadBudget()


# --------------------------------------------------------------------------
# kernels in a forked child
#
# GNU libgomp keeps a thread's OpenMP team in that thread's own state. fork()
# copies the calling thread only, so in the child the forking thread still
# holds a team whose threads do not exist, and its next parallel region waits
# for them forever. Every other thread of the child is new, and a new thread
# gets a new team. So a kernel call from the forking thread (of this process,
# or of any generation before it: the state is inherited) runs on one
# long-lived helper thread of the child, with all its threads; calls from any
# other thread, and single-threaded ones, run where they are. Measured on
# ResNet-50 2a 3x3 (2 threads): the child's call took 0.95x the parent's
# time through the helper; the hand-off costs about 10 us a call. (Linking
# LLVM's libomp, which survives fork, was weighed: a second OpenMP runtime in
# processes that already load libgomp, and a dependency, for the same result.)

_forked_ident = None   # the thread that forked this process, if it was forked
_helper = None
_helper_lock = threading.Lock()


class _KernelThread:
    """One daemon thread that runs the kernel calls handed to it, in order."""

    def __init__(self):
        self._requests = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="fastconv-kernels", daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            call, done, result = self._requests.get()
            try:
                result.append((True, call()))
            except BaseException as exc:  # handed back to the caller, raised there
                result.append((False, exc))
            done.set()

    def run(self, call):
        done, result = threading.Event(), []
        self._requests.put((call, done, result))
        interrupted = False
        while not done.is_set():
            try:
                done.wait()
            except KeyboardInterrupt:
                # the kernel is writing into buffers the caller owns: it
                # finishes before the caller unwinds
                interrupted = True
        if interrupted:
            raise KeyboardInterrupt
        ok, value = result[0]
        if not ok:
            raise value
        return value


def run_kernel(call, kernel_threads):
    """call() (a kernel call that runs `kernel_threads` OpenMP threads), on a
    thread whose OpenMP state is sound: the calling thread, unless it is the
    thread that forked this process and the call needs a team."""
    global _helper
    if kernel_threads > 1 and _forked_ident == threading.get_ident():
        with _helper_lock:
            if _helper is None:
                _helper = _KernelThread()
        return _helper.run(call)
    return call()


def _after_fork_in_child():
    global _forked_ident, _helper
    _forked_ident = threading.get_ident()
    _helper = None  # the parent's helper thread does not exist here
    budget._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def call_threads(requested, configured):
    """How many threads a call asks for: the one place this is decided.

    ``requested``: the call's ``num_threads`` (already validated), honoured as
    given. ``configured``: the ``num_threads`` setting (``set_config``,
    ``FASTCONV_NUM_THREADS``), honoured as given. With neither, all usable
    cores, capped by the OpenMP and BLAS limits in force in the calling
    thread (``threadpool_limits`` blocks, OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS). What the call then gets at run time may be fewer,
    while other calls hold some of the budget (ThreadBudget.lend).
    """
    if requested is not None:
        return requested
    if configured is not None:
        return configured
    if "distributed" in sys.modules:
        # inside a dask.distributed task (only a process that imported it
        # can be a worker): what fastconv.dask gives its tasks, the host's
        # cores shared among the workers' threads, not the OMP_NUM_THREADS=1
        # that distributed sets for its workers
        try:
            from fastconv.dask import _worker_default_threads
        except ImportError:  # dask[array] missing: the plain default
            _worker_default_threads = None
        threads = _worker_default_threads() if _worker_default_threads else None
        if threads is not None:
            return threads
    limits = [budget.capacity]
    if _machine.openmp_enabled():
        limits.append(_machine.omp_max_threads())
    blas = budget.blas_threads_outside()
    if blas is not None:
        limits.append(blas)
    return max(1, min(limits))
