"""Settings, and only settings: the workspace memory limit, the thread count
and whether workspace is kept between calls.

Like scikit-learn's ``_config``: defaults come from the environment
(``FASTCONV_MEMORY_LIMIT``, ``FASTCONV_NUM_THREADS``) or the machine;
``set_config`` changes them for the whole process (every thread sees them:
a setting made before starting a thread pool applies inside it), and
``config_context`` changes them for a ``with`` block of the calling thread
only, restoring them on exit (also on error).
Facts of the machine live in ``_machine``; how many threads a call gets is
decided in one place, ``_runtime.call_threads``.
"""
import math
import os
import re
import threading
from contextlib import contextmanager

import numpy as np

from fastconv import _machine, _runtime

__all__ = ["get_config", "set_config", "config_context", "format_bytes", "parse_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
    "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}
_SIZE_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def format_bytes(n):
    """A byte count for people, the inverse of parse_bytes: "3.5 MiB", "512 B".

    Examples
    --------
    >>> format_bytes(3 * 2**20 + 2**19), format_bytes(512)
    ('3.5 MiB', '512 B')
    """
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def parse_bytes(value, name="memory_limit"):
    """Return a byte count from an int or a string such as ``"512MB"``,
    ``"1.5GiB"`` or ``"64k"``.

    Decimal units (k, kB, MB, GB, TB) are powers of 1000, binary units (KiB,
    MiB, GiB, TiB) powers of 1024; units are case-insensitive.

    Examples
    --------
    >>> parse_bytes("1.5GiB")
    1610612736
    >>> parse_bytes(4096)
    4096
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a string like '512MB', got {value!r}")
    if isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name}={value!r} is not a size: use bytes as an int or a string "
                "like '512MB', '1.5GiB', '64k' (units B, k/kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        number = float(match.group(1)) * _UNITS[unit]
    else:
        try:
            number = float(value) if not hasattr(value, "__index__") else int(value.__index__())
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a number of bytes or a string like '512MB', got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative, finite number of bytes, got {value!r}")
    return int(number)


def check_num_threads(value, name="num_threads"):
    """Validate a thread count: an int >= 1."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int >= 1 or None, got {value!r}")
    value = int(value.__index__())
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _defaults():
    env_limit = os.environ.get("FASTCONV_MEMORY_LIMIT")
    if env_limit:
        memory_limit = parse_bytes(env_limit, "FASTCONV_MEMORY_LIMIT")
    else:
        available = _machine.available_memory()
        memory_limit = 2**30 if available is None else min(2**30, available // 4)
    env_threads = os.environ.get("FASTCONV_NUM_THREADS")
    if env_threads:
        try:
            num_threads = check_num_threads(int(env_threads), "FASTCONV_NUM_THREADS")
        except ValueError:
            raise ValueError(f"FASTCONV_NUM_THREADS={env_threads!r} is not an int >= 1") from None
    else:
        num_threads = None  # automatic: _runtime.call_threads
    return {"memory_limit": memory_limit, "num_threads": num_threads, "keep_workspace": True}


_global_config = _defaults()
_global_lock = threading.Lock()
# per thread: only what a config_context in that thread set
_thread_local = threading.local()


def _overrides():
    if not hasattr(_thread_local, "overrides"):
        _thread_local.overrides = {}
    return _thread_local.overrides


def _current():
    """The settings in force for the calling thread: the process-wide ones,
    under whatever config_context blocks of this thread changed."""
    return {**_global_config, **_overrides()}


def _validated(memory_limit, num_threads, keep_workspace):
    changes = {}
    if memory_limit is not None:
        changes["memory_limit"] = parse_bytes(memory_limit)
    if num_threads is not None:
        changes["num_threads"] = check_num_threads(num_threads)
    if keep_workspace is not None:
        if not isinstance(keep_workspace, (bool, np.bool_)):
            raise TypeError(f"keep_workspace must be True or False, got {keep_workspace!r}")
        changes["keep_workspace"] = bool(keep_workspace)
    return changes


def setting(name):
    """One setting in force for the calling thread."""
    return _current()[name]


def get_config():
    """The settings in force for the calling thread.

    Returns
    -------
    dict
        ``memory_limit`` (bytes), ``num_threads`` (int) and
        ``keep_workspace`` (bool).

    Examples
    --------
    >>> import fastconv
    >>> sorted(fastconv.get_config())
    ['keep_workspace', 'memory_limit', 'num_threads']
    """
    config = _current()
    config["num_threads"] = _runtime.call_threads(None, config["num_threads"])
    return config


def set_config(memory_limit=None, num_threads=None, keep_workspace=None):
    """Change the process-wide settings; ``None`` leaves one unchanged.

    Every thread sees them (thread pools, Dask's threaded scheduler), except
    inside a :func:`config_context` of its own, which overrides them for that
    thread only.

    Parameters
    ----------
    memory_limit : int or str, optional
        Upper bound of the workspace a call may allocate beyond its output,
        in bytes or as a string like ``"512MB"``; kept workspace counts.
    num_threads : int, optional
        Threads per call (>= 1).
    keep_workspace : bool, optional
        Keep a call's buffers allocated for the next call of the same thread
        (default True: loops allocate nothing; the memory stays held between
        calls, at most the limit per thread: :func:`fastconv.release_workspace`
        gives it back). False frees them after every call.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.set_config(memory_limit="256MiB")
    >>> fastconv.get_config()["memory_limit"]
    268435456
    """
    changes = _validated(memory_limit, num_threads, keep_workspace)
    with _global_lock:
        _global_config.update(changes)


@contextmanager
def config_context(*, memory_limit=None, num_threads=None, keep_workspace=None):
    """Change settings within a ``with`` block, for this thread only (nestable).

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.config_context(memory_limit="64MiB"):
    ...     fastconv.get_config()["memory_limit"]
    67108864
    """
    changes = _validated(memory_limit, num_threads, keep_workspace)
    overrides = _overrides()
    saved = dict(overrides)
    overrides.update(changes)
    try:
        yield
    finally:
        overrides.clear()
        overrides.update(saved)


def resolve(memory_limit, num_threads):
    """Per-call values: (memory limit in bytes, threads the call asks for),
    from the arguments if given, else from the settings."""
    config = _current()
    limit = config["memory_limit"] if memory_limit is None else parse_bytes(memory_limit)
    if num_threads is not None:
        num_threads = check_num_threads(num_threads)
    return limit, _runtime.call_threads(num_threads, config["num_threads"])
