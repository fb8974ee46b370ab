"""Kept workspace: a call's buffers stay allocated for the next call.

On these machines a page fault costs about 3.5 us, more than the arithmetic
of a small layer, and glibc serves blocks above its mmap threshold (up to
32 MiB) from fresh pages on every call. So each Python thread keeps the
buffers of its last calls and lends views of them to the next call that
fits: a loop over the same layers allocates nothing after its first calls.

* Per Python thread (its own pool): concurrent calls never share a buffer,
  and the threads of a thread pool or of a Dask worker each keep their own.
* Within the memory limit: after a call, the pool holds only what that call
  used, and never more bytes than its limit (larger buffers kept from an
  earlier call under a larger limit are replaced by exact-size ones).
* ``fastconv.release_workspace()`` gives every pool back (waiting for calls
  that are using one); ``set_config(keep_workspace=False)`` turns keeping off.
"""
import math
import os
import threading
import weakref

import numpy as np

__all__ = ["kept_bytes", "lend_buffers", "release_workspace"]


def _nbytes(shape, dtype):
    return math.prod(shape) * np.dtype(dtype).itemsize


class Buffers(dict):
    """A call's buffers, {name: array}, and what the kept ones still hold.

    A buffer whose contents depend only on the call's shapes (the direct
    lowering's pixel tables) need not be rebuilt when the same buffer, kept
    since a call with the same `key`, comes back: ``holds(name, key)`` says
    so. A lowering calls ``forget(name)`` before it writes such a buffer and
    ``remember(name, key)`` once it is whole. Fresh buffers hold nothing."""
    __slots__ = ("_contents",)

    def __init__(self, arrays, contents=None):
        super().__init__(arrays)
        self._contents = contents   # the pool's {name: key}, or None (fresh)

    def holds(self, name, key):
        return self._contents is not None and self._contents.get(name) == key

    def forget(self, name):
        if self._contents is not None:
            self._contents.pop(name, None)

    def remember(self, name, key):
        if self._contents is not None:
            self._contents[name] = key


def allocate(specs):
    """Fresh arrays for {name: (shape, dtype)} (accumulators zeroed)."""
    return Buffers({name: (np.zeros if name == "accumulators" else np.empty)(shape, dtype)
                    for name, (shape, dtype) in specs.items()})


class _Pool:
    """One thread's kept buffers: {name: flat uint8 array}."""

    def __init__(self):
        self.raw = {}
        self.contents = {}   # {name: key} of raw buffers a call left whole (Buffers)
        self.lock = threading.Lock()
        # the views lent last, for a loop that calls the same layer again
        # (building them costs more than a small layer's arithmetic): (specs
        # object, limit, key, views), or None. A plan hands the same specs
        # object on every call (ConvPlan.buffer_specs), so no key is built
        # and compared then; another object with the same specs matches the key.
        self.last = None

    def nbytes(self):
        return sum(a.nbytes for a in self.raw.values())

    def lend(self, specs, limit):
        last = self.last
        if last is not None:
            same = specs is last[0] and limit == last[1]
            if same or (tuple(specs.items()), limit) == last[2]:
                views = last[3]
                if not same:
                    self.last = (specs, limit, last[2], views)
                if "accumulators" in views:
                    views["accumulators"].fill(0)
                return Buffers(views, self.contents)
        self.last = None
        needed = {name: _nbytes(shape, dtype) for name, (shape, dtype) in specs.items()}
        for name in list(self.raw):
            if name not in needed:
                del self.raw[name]
                self.contents.pop(name, None)
        if sum(max(self.raw[n].nbytes if n in self.raw else 0, size)
               for n, size in needed.items()) > limit:
            self.clear()  # what is kept must fit the limit: exact sizes
        arrays = {}
        for name, (shape, dtype) in specs.items():
            raw = self.raw.get(name)
            if raw is None or raw.nbytes < needed[name]:
                raw = self.raw[name] = np.empty(needed[name], np.uint8)
                self.contents.pop(name, None)
            view = raw[:needed[name]].view(dtype).reshape(shape)
            if name == "accumulators":
                view.fill(0)
            arrays[name] = view
        self.last = (specs, limit, (tuple(specs.items()), limit), dict(arrays))
        return Buffers(arrays, self.contents)

    def clear(self):
        self.raw.clear()
        self.contents.clear()
        self.last = None


_local = threading.local()
_pools = weakref.WeakSet()   # every thread's pool, for release and kept_bytes
_pools_lock = threading.Lock()


def _pool():
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = _Pool()
        with _pools_lock:
            _pools.add(pool)
    return pool


class lend_buffers:
    """Arrays for {name: (shape, dtype)} for the duration of a call (a
    context manager): views of the calling thread's kept buffers if keep,
    else fresh ones. The thread's pool stays locked until the call ends, so
    release_workspace() never frees a buffer in use. A class rather than a
    @contextmanager generator, which cost about 1 us more a call."""
    __slots__ = ("_specs", "_limit", "_keep", "_locked")

    def __init__(self, specs, limit, keep):
        self._specs, self._limit, self._keep = specs, limit, keep
        self._locked = None

    def __enter__(self):
        if not self._keep or not self._specs:
            return allocate(self._specs)
        pool = _pool()
        pool.lock.acquire()
        self._locked = pool
        try:
            return pool.lend(self._specs, self._limit)
        except BaseException:
            self._release()
            raise

    def _release(self):
        pool, self._locked = self._locked, None
        if pool is not None:
            pool.lock.release()

    def __exit__(self, *exc_info):
        self._release()
        return False


def release_workspace():
    """Free the workspace fastconv keeps between calls, in every thread.

    Calls that are running keep theirs until they end. Returns the number of
    bytes released.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> y = fastconv.conv2d(np.ones((1, 2, 8, 8)), np.ones((3, 2, 3, 3)), padding=1)
    >>> fastconv.release_workspace() >= 0
    True
    """
    released = 0
    with _pools_lock:
        pools = list(_pools)
    for pool in pools:
        with pool.lock:
            released += pool.nbytes()
            pool.clear()
    return released


def kept_bytes():
    """Bytes of workspace kept between calls, over every thread."""
    with _pools_lock:
        return sum(pool.nbytes() for pool in list(_pools))


def _after_fork_in_child():
    # locks held by threads that do not exist in the child would block it
    global _pools_lock
    _pools_lock = threading.Lock()
    for pool in list(_pools):
        pool.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
