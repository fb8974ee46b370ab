"""Facts of this machine and this build, read once: usable cores, available
memory, OpenMP. A leaf module: it imports nothing else of fastconv's but the
compiled ``openmp_info``, so the settings (``_config``) and the run-time
thread budget (``_runtime``) can both use it without importing each other.
"""
import functools
import math
import os

__all__ = ["available_memory", "omp_max_threads", "openmp_enabled", "usable_cpus"]


def available_memory():
    """Bytes of memory this process may still use (cgroup limit, then the OS),
    or None if neither says."""
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
            if text.isdigit():
                candidates.append(int(text))
        except OSError:
            pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    return min(candidates) if candidates else None


def usable_cpus():
    """CPUs this process may run on: affinity mask and cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


@functools.lru_cache(maxsize=None)
def openmp_enabled():
    """True if the kernels were compiled with OpenMP (else every prange is serial)."""
    from fastconv._kernels.openmp_info import openmp_enabled as built_with_openmp
    return built_with_openmp()


def omp_max_threads():
    """OpenMP's own default team size in the calling thread (it honours
    OMP_NUM_THREADS and omp_set_num_threads, e.g. threadpoolctl's limits); 1
    without OpenMP."""
    global _omp_max_threads
    if _omp_max_threads is None:  # imported on first use (an import per call costs 1 us)
        from fastconv._kernels.openmp_info import omp_max_threads as _omp_max_threads
    return max(1, _omp_max_threads())


_omp_max_threads = None
