"""show_config(): what this build and this machine give fastconv."""
import sys

import numpy as np

from fastconv._config import format_bytes


def build_info():
    """A dict: version, OpenMP, default threads, memory limit, the instruction
    set of fastconv's own kernels, BLAS libraries."""
    import fastconv
    from fastconv._config import get_config
    from fastconv._kernels import fused
    from fastconv._lowerings import blas_rate, fused_isa
    from fastconv._tuning import current
    from fastconv._workspace import kept_bytes
    from fastconv._kernels.openmp_info import openmp_enabled
    import fastconv._kernels.stretch  # noqa: F401  (loads SciPy's BLAS)
    from threadpoolctl import threadpool_info

    config = get_config()
    return {
        "fastconv": fastconv.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "openmp": openmp_enabled(),
        "num_threads": config["num_threads"],
        "memory_limit": config["memory_limit"],
        "keep_workspace": config["keep_workspace"],
        "kept_workspace_bytes": kept_bytes(),
        # the fused and direct kernels' ISA (FASTCONV_ISA, else the best) and
        # every one this CPU and build run
        "isa": fused_isa(current().isa),
        # the planner's rate of the BLAS lowerings' GEMMs against the own
        # kernels' (Tuning.blas_rate: below 1 where the BLAS's kernels run
        # narrower vectors), and whether it was set by hand
        "blas_rate": blas_rate(current()),
        "blas_rate_set": current().blas_rate is not None,
        "isas": list(fused.supported_isas()),
        "threadpools": [
            {k: info.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                      "threading_layer", "filepath", "architecture")}
            for info in threadpool_info()
        ],
    }


def show_config(file=None):
    """Print whether OpenMP is built in, the BLAS SciPy loaded, and the defaults.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.show_config()  # doctest: +SKIP
    fastconv 0.1.0 (Python 3.11.7, NumPy 2.4.6)
    OpenMP: built in
    ...
    """
    info = build_info()
    lines = [
        f"fastconv {info['fastconv']} (Python {info['python']}, NumPy {info['numpy']})",
        f"OpenMP: {'built in' if info['openmp'] else 'not built in (serial kernels)'}",
        f"default threads: {info['num_threads']}",
        f"default memory limit: {info['memory_limit']} bytes ({format_bytes(info['memory_limit'])})",
    ]
    lines.append(f"own kernels (fused, direct, winograd): {info['isa']} (this CPU and build run "
                 f"{', '.join(info['isas'])}; FASTCONV_ISA forces one)")
    if info["blas_rate"] != 1:
        why = ("as Tuning.blas_rate is set" if info["blas_rate_set"] else
               f"the BLAS runs narrower vector kernels than the own {info['isa']} ones")
        lines.append(f"BLAS lowerings planned at {info['blas_rate']:g}x their GEMM rate: {why}")
    lines.append(f"workspace kept between calls: "
                 f"{'yes' if info['keep_workspace'] else 'no'}, "
                 f"{format_bytes(info['kept_workspace_bytes'])} held now")
    for pool in info["threadpools"]:
        # threadpoolctl leaves fields it cannot read as None: say only what is known
        details = ", ".join(str(v) for v in (pool["architecture"],) if v)
        threads = f"{pool['num_threads']} threads" if pool["num_threads"] else ""
        inside = ", ".join(part for part in (details, threads) if part)
        lines.append(" ".join(str(part) for part in (
            f"{pool['user_api']}:", pool["internal_api"], pool["version"],
            f"({inside})" if inside else None, pool["filepath"]) if part))
    print("\n".join(lines), file=file or sys.stdout)
