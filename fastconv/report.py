"""The memory/speed comparison report: ``python -m fastconv report`` (or
``fastconv-report``).

Every case (layer x dtype x kind x lowering or peer, see
:mod:`fastconv._benchcases`) runs in a fresh Python process, so that its peak
memory is its own and no thread pool of an earlier case is still spinning.
The process first puts glibc's malloc in a long-running program's state
(``warm_allocator``: a freed block just under 32 MiB raises the mmap
threshold), then makes one warm-up call on a batch of at most two images
(imports, thread teams, first-touch), one call on the full batch whose peak
resident memory growth is measured (Linux: VmHWM, reset just before the
call; not timed), one more warm-up call, then the timed calls, until the two
best agree (``_time_calls``); cases still noisy are measured again in fresh
processes and otherwise flagged.
The report is written to a folder:

* ``report.md``: the summary (geometric means against PyTorch, NumPy and the
  GEMM of the same shape, memory saved by the mapped lowering, where fastconv
  loses) and a table per layer;
* ``report.json``: every figure, the machine, BLAS and thread settings, versions;
* ``throughput.png``, ``memory.png``, ``tradeoff.png`` (with matplotlib).

PyTorch is never required: absent peers are left out, and the report says so.
"""
import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from fastconv import _benchcases

# The quick run: three layers that show the three regimes (a small first
# layer, a cache-spilling 3x3, small 14x14 maps), fp32, forward and auto
# gradients; the trade-off curve on two of them.
QUICK_LAYERS = ("paper_mnist", "resnet50_2a_3x3", "resnet50_4b_3x3")
QUICK_REPEATS, FULL_REPEATS = 3, 5
# fast cases repeat until this much time is measured (timer and scheduler
# noise are a large part of a sub-millisecond call), at most MAX_CALLS times
QUICK_MIN_SECONDS, FULL_MIN_SECONDS, MAX_CALLS = 0.2, 0.5, 200
# ... and until the two best times are within TOLERANCE of each other, for at
# most this many seconds of timed calls (then at least two calls)
TOLERANCE = 0.10
QUICK_MAX_SECONDS, FULL_MAX_SECONDS = 2.0, 6.0
# a case still noisier than TOLERANCE is measured again in a fresh process,
# up to this many times, at the end of the run (the best times of all its
# runs kept); a full run measures every case twice to begin with
QUICK_RERUNS, FULL_RERUNS = 2, 2
QUICK_PASSES, FULL_PASSES = 1, 2
# SciPy runs where its estimated pass takes at most this many seconds
QUICK_SCIPY_SECONDS, FULL_SCIPY_SECONDS = 2.0, 5.0
# memory limits of the trade-off curve: stretch's workspace divided by these
TRADEOFF_DIVISORS = (1, 2, 4, 8, 16, 32, 64)
QUICK_TRADEOFF_DIVISORS = (1, 4, 16, 64)
CHILD_TIMEOUT = 900  # seconds for one case, warm-up and repeats included
DTYPES = ("float32", "float64")
# how cases are named in tables, plots and the summary alike
CASE_LABELS = {"mapped_tight": "mapped at ⅛", "torch": "PyTorch", "numpy": "NumPy",
               "scipy": "SciPy", "gemm": "same-shape GEMM"}
TORCH_HINT = ("PyTorch is not installed, so nothing is compared with it: to compare, install "
              "its CPU build from PyTorch's CPU wheel index, `python3 -m pip install torch "
              "--index-url https://download.pytorch.org/whl/cpu`")


def label(case):
    return CASE_LABELS.get(case, case)


_CHILD = ("import sys; sys.path.insert(0, {root!r}); "
          "from fastconv.report import _measure_in_this_process as m; m(sys.argv[1])")


# --------------------------------------------------------------------------
# one case, in a fresh process

def _rss_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss():
    try:
        return _rss_status("VmHWM")
    except OSError:
        import resource
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# glibc serves a block larger than its mmap threshold (128 KiB at start) from
# a fresh mmap, page faults and all, until a freed mmapped chunk raises the
# threshold to that chunk's size -- only for chunks of at most 32 MiB
# (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): freeing a 64 MiB block leaves it
# where it was. A long-running program has long since raised it; a fresh
# process has not, and a library that allocates per call (PyTorch) then pays
# ~3.5 us per page fault. So every child first allocates and frees a block
# just under 32 MiB, and checks that a 31 MiB block then comes from the heap.
ALLOCATOR_BLOCK = 32 * 2**20 - 64 * 2**10
_MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")


def _libc():
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO_FIELDS]
    libc.mallinfo2.restype = Mallinfo2
    return libc


def _mmapped_bytes(libc):
    """Bytes glibc holds in mmapped chunks (mallinfo2's hblkhd)."""
    return libc.mallinfo2().hblkhd


def warm_allocator(block=ALLOCATOR_BLOCK):
    """Put glibc's malloc in a long-running program's state: allocate (through
    NumPy, touching it) and free a `block`, then check with a probe of 31 MiB
    whether a large block now comes from the heap. Returns what happened:
    freed_bytes, block_was_mmapped, threshold_raised (None where not glibc)."""
    record = dict(freed_bytes=0, block_was_mmapped=None, threshold_raised=None)
    try:
        libc = _libc()
        before = _mmapped_bytes(libc)
    except (OSError, AttributeError):  # not glibc (or older than 2.33)
        libc = None
    block_array = np.ones(block, np.uint8)
    if libc is not None:
        record["block_was_mmapped"] = _mmapped_bytes(libc) - before >= block
    del block_array
    record["freed_bytes"] = block
    if libc is not None:
        probe_size = 31 * 2**20
        before = _mmapped_bytes(libc)
        probe = libc.malloc(probe_size)
        record["threshold_raised"] = bool(probe) and _mmapped_bytes(libc) - before < probe_size
        libc.free(probe)
    return record


def _release_free_memory():
    """Give memory freed by the warm-up back to the system (glibc's
    malloc_trim; fastconv's kept workspace too), so that the measured call's
    own buffers show up in its RSS growth instead of silently reusing the
    warm-up's pages."""
    import fastconv
    release = getattr(fastconv, "release_workspace", None)
    if release is not None:
        release()
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# A half-speed machine: on this 2-vCPU virtual machine a whole process now and
# then runs every threaded case at about half its speed (the host giving the
# two vCPUs one core's throughput, it seems): a full run of 2026-11-22 had 48
# cases whose slowest process took 1.7-2.0x their fastest, PyTorch's among
# them, each process uniformly slow while its CPU seconds per wall second
# stayed 2.0 and a 64 MB copy kept its speed. A case whose processes all land
# in such a phase shows no spread (ResNet-50 3a projection, auto, 16.9 against
# 9.4 ms, in two full runs). So each child times a small compute-bound
# convolution on the case's threads before and after its timed calls
# (fastconv's own GEMM, 4 images of 64x16x16 through 64 3x3 filters, ~0.4 ms a
# call: fits the L2 cache, so it measures the cores, not the memory), and the
# run compares each process's probe with the median of all of them.
PROBE_CALLS = 40
# a process whose slower probe ran below this fraction of the run's median
# probe ran on a slowed machine: a case whose best time came from such a
# process is measured again (and flagged if it still is after the reruns).
# Measured over 67 processes of the 3a projection (stretch; 20 calls a
# probe): the 8 slow ones took 16.4-17.7 ms and probed 99-102 GFLOP/s
# before and after, 54 others took 9.1-11.8 ms and probed 120-187 (the
# faster of their two probes; 105-187 the slower, and one fast process 99).
# A full run (634 processes, 40 calls a probe, median 184): 19 probed under
# 110 twice, 35 once; the dilated layer's auto case ran at 1.6x its usual
# time in both its processes with probes 151/137 and 157/129, a slowdown in
# the middle that only the slower probe shows. So the slower one counts: a
# false alarm costs a rerun, a missed slowdown a wrong ratio
SLOWED_FRACTION = 0.75


def machine_speed(threads, calls=PROBE_CALLS):
    """GFLOP/s of a small compute-bound convolution on `threads` threads (the
    best of `calls` calls): how fast this process's cores are running now."""
    import fastconv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * threads, 64, 16, 16), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    out = np.empty_like(x)
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fastconv.conv2d(x, w, padding=1, method="fused", num_threads=threads, out=out)
        best = min(best, time.perf_counter() - start)
    time.sleep(0.01)  # OpenMP's workers stop spinning before a peer's threads run
    n, _, h, width = x.shape
    return 2 * n * h * width * w.size / best / 1e9   # padding 1: Ho, Wo = H, W


def _nbytes(out):
    return int(out.nbytes if hasattr(out, "nbytes") else out.element_size() * out.nelement())


def spread_of(times):
    """Second-best time over the best (1.0 with a single time)."""
    best = sorted(times)[:2]
    return best[-1] / best[0] if best[0] > 0 else 1.0


def _time_calls(runs, spec):
    """Time the callables in `runs` round-robin (one call of each per round)
    until each has `repeats` calls and `min_seconds` of them, with its two best
    times within `tolerance`; stop early at MAX_CALLS calls or once
    `max_seconds` have passed (with at least two calls each). Returns the
    list of times of each."""
    times = [[] for _ in runs]
    started = time.perf_counter()
    while True:
        for run, ts in zip(runs, times):
            start = time.perf_counter()
            run()  # the result is dropped at once: one output alive at a time
            ts.append(time.perf_counter() - start)
        done = all(len(ts) >= spec["repeats"] and sum(ts) >= spec["min_seconds"]
                   and spread_of(ts) <= 1 + spec["tolerance"] for ts in times)
        calls = len(times[0])
        if (done or calls >= MAX_CALLS
                or (calls >= 2 and time.perf_counter() - started >= spec["max_seconds"])):
            return times


def _first_call(run):
    """Peak resident-memory growth of one call (after freed memory went back
    to the system); (output, peak growth, exact)."""
    _release_free_memory()
    exact = _reset_peak()
    before = _peak_rss()
    out = run()
    return out, _peak_rss() - before, exact


def _plan_record(plan):
    return dict(method=plan.method, workspace_bytes=plan.workspace_bytes,
                memory_limit=plan.memory_limit, plan=repr(plan), kernel_threads=plan.kernel_threads,
                blas_threads=plan.blas_threads,
                images_per_gemm=getattr(getattr(plan, "blocking", None), "images", 1),
                tile_cols=getattr(getattr(plan, "blocking", None), "tile_cols", None))


def _measure_in_this_process(payload):
    """Child side: put the allocator in a long-running program's state, run
    one case (or a trade-off curve), print one JSON line with its figures."""
    allocator = warm_allocator()  # before anything else
    import fastconv
    spec = json.loads(payload)
    if spec.get("batch"):   # another batch (bench/memory_limit.py --batch): every use sees it
        spec["layer"] = dict(spec["layer"], N=spec["batch"])
    layer, dtype, kind, name = spec["layer"], spec["dtype"], spec["kind"], spec["case"]
    threads = spec["threads"]
    if name == "tradeoff":
        print(json.dumps(dict(_measure_tradeoff(spec), allocator=allocator)))
        return
    limit = spec.get("limit")
    extra = {}
    try:
        if name == "scipy":
            estimate = _benchcases.scipy_estimate(layer, dtype)
            extra["scipy"] = estimate
            if estimate["seconds"] > spec["scipy_seconds"]:
                print(json.dumps(dict(skipped=(
                    f"estimated {estimate['seconds']:.1f} s per pass (one image x one filter took "
                    f"{estimate['unit_seconds'] * 1e3:.1f} ms, {estimate['gflops']:.2f} GFLOP/s, "
                    f"x {layer['N']} images x {layer['K']} filters), over the "
                    f"{spec['scipy_seconds']:g} s allowed"), scipy=estimate, allocator=allocator)))
                return
        _, run = _benchcases.make_case(layer, dtype, kind, name, threads,
                                       batch=min(2, layer["N"]), limit=limit)
        run()  # warm-up: kernels loaded, thread teams started
        del run
        plan, run = _benchcases.make_case(layer, dtype, kind, name, threads, limit=limit)
    except (fastconv.WorkspaceLimitError, RuntimeError) as exc:
        print(json.dumps(dict(skipped=str(exc), allocator=allocator)))
        return
    # peak memory: the first call on the full batch (it counts the workspace
    # the call allocates); not timed
    first = time.perf_counter()
    out, peak, exact = _first_call(run)
    first = time.perf_counter() - first
    output_bytes = _nbytes(out)
    if name == "scipy":  # checked once against fastconv
        x, w = run.operands
        reference = fastconv.conv2d(x, w, **_benchcases.conv_kwargs(layer))
        error = float(np.max(np.abs(out - reference)) / max(np.max(np.abs(reference)), 1e-30))
        tolerance = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
        extra["check"] = dict(max_relative_error=error, tolerance=tolerance,
                              formulation=run.formulation)
        if not error <= tolerance:
            print(json.dumps(dict(error=f"SciPy's result differs from fastconv's by {error:.2e} "
                                        f"(relative to the largest output; over {tolerance:g})",
                                  allocator=allocator, **extra)))
            return
    del out
    if first < spec["max_seconds"] / 4:
        run()  # warm-up on the full batch, after the first call
    # what the process got of the machine while timed: CPU seconds per
    # wall second (about the threads a call runs when it has the cores to
    # itself, less when something else takes them) and the load average at
    # the start, so that a case slower than its twin shows why in report.json
    # the speed of the cores just before and just after (machine_speed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    speed_before = machine_speed(threads)
    cpu, wall = time.process_time(), time.perf_counter()
    times = _time_calls([run], spec)[0]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    speed_after = machine_speed(threads)
    result = dict(times=times, first_call=first, peak_growth=peak, output_bytes=output_bytes,
                  peak_exact=exact, allocator=allocator,
                  machine_share=dict(cpu_per_wall=cpu / wall if wall > 0 else None,
                                     load_average=load,
                                     probe_gflops=[speed_before, speed_after]), **extra)
    if plan is not None:
        result.update(_plan_record(plan))
    print(json.dumps(result))


def _measure_tradeoff(spec):
    """The mapped lowering under each memory limit of spec["limits"] and,
    first, at the default limit (the report's own mapped case): the peak
    growth of each first call, then every point timed round-robin, so the
    baseline and the curve see the same machine."""
    layer, dtype, threads = spec["layer"], spec["dtype"], spec["threads"]
    _, run = _benchcases.make_case(layer, dtype, "forward", "mapped", threads,
                                   batch=min(2, layer["N"]))
    run()
    del run
    points, runs = [], []
    for limit in [None] + spec["limits"]:
        plan, run = _benchcases.make_case(layer, dtype, "forward", "mapped", threads, limit=limit)
        out, peak, exact = _first_call(run)
        points.append(dict(limit=limit, peak_growth=peak, output_bytes=_nbytes(out),
                           peak_exact=exact, **_plan_record(plan)))
        del out
        runs.append(run)
    for run in runs:
        run()  # warm-up on the full batch
    for point, times in zip(points, _time_calls(runs, spec)):
        point["times"] = times
    return dict(points=points)


# Setting any of these turns glibc's dynamic mmap threshold off, so that the
# warm-up cannot put the child in a long-running program's state (dask's
# LocalCluster sets MALLOC_TRIM_THRESHOLD_ in its parent's environment).
_STATIC_MALLOC_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                           "MALLOC_MMAP_MAX_")


def child_environment():
    """The environment of a measuring child: this one, less the malloc
    settings that would freeze glibc's mmap threshold."""
    return {k: v for k, v in os.environ.items() if k not in _STATIC_MALLOC_SETTINGS}


def measure_case(spec):
    """Run one case in a fresh interpreter (importing this very fastconv, from
    an empty folder) and return its figures: times, first_call, peak_growth,
    output_bytes, allocator (what the allocator warm-up did), and for
    fastconv's lowerings the plan; or skipped/error with the reason.

    spec: layer (dict), dtype, kind, case (a name of _benchcases.LOWERINGS or
    REPORT_PEERS, or "tradeoff" with limits: a list of memory limits),
    threads (None: fastconv's num_threads setting, as run_report), repeats,
    min_seconds, max_seconds, tolerance, scipy_seconds, and optionally limit
    (memory limit of a lowering).
    """
    spec = dict(dict(tolerance=TOLERANCE, max_seconds=QUICK_MAX_SECONDS,
                     scipy_seconds=QUICK_SCIPY_SECONDS), **spec)
    if spec.get("threads") is None:
        # (bench/memory_limit.py without --threads passed None to the child,
        # which failed multiplying it)
        import fastconv
        spec["threads"] = fastconv.get_config()["num_threads"]
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as empty:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=root), json.dumps(spec)],
                                  capture_output=True, text=True, cwd=empty, timeout=CHILD_TIMEOUT,
                                  env=child_environment())
        except subprocess.TimeoutExpired:
            return dict(error=f"timed out after {CHILD_TIMEOUT} s")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return dict(error=f"exit code {proc.returncode}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# which cases

def plan_cases(layers, dtypes, quick):
    """Every case to run, as dicts (layer, dtype, kind, case, [limit, divisor])."""
    cases = []
    gradient_cases = ["auto", "torch"] if quick else ["stretch", "mapped", "auto", "torch"]
    for dtype in dtypes:
        for layer in layers:
            for name in list(_benchcases.LOWERINGS) + list(_benchcases.REPORT_PEERS):
                cases.append(dict(layer=layer, dtype=dtype, kind="forward", case=name))
            for kind in ("input_grad", "weight_grad"):
                for name in gradient_cases:
                    cases.append(dict(layer=layer, dtype=dtype, kind=kind, case=name))
    # the trade-off of the mapped lowering as the limit shrinks (first dtype),
    # measured in one process per layer beside the mapped case at the default
    # limit (run_report groups these points by layer)
    divisors = QUICK_TRADEOFF_DIVISORS if quick else TRADEOFF_DIVISORS
    import fastconv
    for layer in layers[:2] if quick else layers:
        stretch = _benchcases.plan_for(layer, dtypes[0], "forward", "stretch")
        if stretch.method != "stretch" or stretch.workspace_bytes == 0:
            continue
        for divisor in divisors:
            limit = stretch.workspace_bytes // divisor
            try:
                _benchcases.plan_for(layer, dtypes[0], "forward", "mapped", limit=limit)
            except fastconv.WorkspaceLimitError:
                break
            cases.append(dict(layer=layer, dtype=dtypes[0], kind="forward", case="mapped",
                              limit=limit, divisor=divisor, tradeoff=True))
    return cases


# --------------------------------------------------------------------------
# the machine

def machine_info(threads):
    """The machine, the build (the facts fastconv.show_config prints) and versions."""
    import scipy
    from importlib import metadata
    from fastconv._info import build_info
    build = build_info()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = _meminfo_total()
    except OSError:
        memory = None
    versions = {"python": build["python"], "fastconv": build["fastconv"],
                "numpy": build["numpy"], "scipy": scipy.__version__}
    for package in ("torch", "threadpoolctl", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                platform=platform.platform(), cpu=cpu, logical_cpus=os.cpu_count(),
                usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                memory_bytes=memory, threads=threads,
                config=dict(num_threads=build["num_threads"], memory_limit=build["memory_limit"]),
                threadpools=build["threadpools"], versions=versions, openmp=bool(build["openmp"]))


def _meminfo_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError("MemTotal")


# --------------------------------------------------------------------------
# figures

def _geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def _beyond_output(result, floor=64 * 1024):
    """Peak growth beyond the output (never below 64 KiB, the resolution that
    makes ratios of near-zero peaks meaningless)."""
    return max(result["peak_growth"] - result["output_bytes"], floor)


def _index(results):
    table = {}
    for r in results:
        if "times" in r and not r.get("tradeoff"):
            table[(r["layer"], r["dtype"], r["kind"], r["case"])] = r
    return table


def summarize(results, layers, dtypes):
    """Headline figures per (dtype, kind): geometric means over layers of
    fastconv auto's time over each peer's (and the ratio of total times, which
    weighs layers by their cost), the layers behind each, auto's share of the
    GEMM's throughput, and the memory the mapped lowering saves. Times are
    each case's best."""
    table = _index(results)
    names = [layer["name"] for layer in layers]
    summary = []
    for dtype in dtypes:
        for kind in _benchcases.KINDS:
            def ratios(numerator, denominator, value=lambda r: r["best"]):
                out = {}
                for name in names:
                    a = table.get((name, dtype, kind, numerator))
                    b = table.get((name, dtype, kind, denominator))
                    if a and b:
                        out[name] = value(a) / value(b)
                return out

            def noisy(case_names):
                return sorted({f"{name} {label(c)}" for name in names for c in case_names
                               if (table.get((name, dtype, kind, c)) or {}).get("noisy")})
            row = dict(dtype=dtype, kind=kind)
            for peer in ("torch", "numpy", "scipy"):
                per_layer = ratios("auto", peer)
                row[f"auto_over_{peer}"] = _geomean(per_layer.values())
                row[f"auto_over_{peer}_layers"] = per_layer
                row[f"slower_than_{peer}"] = {k: v for k, v in per_layer.items() if v > 1.0}
                row[f"auto_over_{peer}_total"] = (
                    sum(table[(n, dtype, kind, "auto")]["best"] for n in per_layer)
                    / sum(table[(n, dtype, kind, peer)]["best"] for n in per_layer)
                    if per_layer else None)
                row[f"auto_over_{peer}_noisy"] = noisy(["auto", peer]) if per_layer else []
            gemm = ratios("gemm", "auto")
            row["gemm_fraction"] = _geomean(gemm.values())
            row["gemm_fraction_layers"] = gemm
            saved = ratios("stretch", "mapped_tight", _beyond_output)
            row["stretch_over_mapped_tight_memory"] = _geomean(saved.values())
            row["stretch_over_mapped_tight_memory_layers"] = saved
            memory_vs_torch = ratios("torch", "auto", _beyond_output)
            row["torch_over_auto_memory"] = _geomean(memory_vs_torch.values())
            row["torch_over_auto_memory_layers"] = memory_vs_torch
            if any(v for k, v in row.items() if k.endswith("_layers")):
                summary.append(row)
    return summary


def _run_statistics(runs):
    """best, median, max, spread of a case measured in one or more runs
    (processes): the spread is the larger of the best run's second-best over
    its best and, with several runs, the second-best run's best over the best
    run's (a slow phase of the machine that lasts a whole run shows there)."""
    bests = sorted(min(ts) for ts in runs)
    best_run = min(runs, key=min)
    spread = spread_of(best_run)
    if len(bests) > 1:
        spread = max(spread, bests[1] / bests[0])
    times = np.concatenate([np.asarray(ts, float) for ts in runs])
    return dict(best=float(bests[0]), median=float(np.median(times)), min=float(bests[0]),
                max=float(times.max()), spread=float(spread), runs_measured=len(runs))


def _probe_speed(share):
    """The slower of a process's two machine_speed probes (None without): a
    slowed phase may start or end while the case is timed."""
    speeds = (share or {}).get("probe_gflops")
    return min(speeds) if speeds else None


def _probe_speeds(records):
    """The probe speed of every timed process of the run."""
    return [speed for r in records for share in r.get("machine_shares") or []
            if (speed := _probe_speed(share))]


def reference_speed(records):
    """The run's machine speed: the median probe over every timed process
    (most run at the machine's normal speed), or None without probes."""
    speeds = _probe_speeds(records)
    return float(np.median(speeds)) if speeds else None


def _with_statistics(result, tolerance=TOLERANCE, reference=None):
    """Add best, median, spread... to a record; noisy when its spread is over
    `tolerance` or (given the run's `reference` speed) its best process ran on
    a slowed machine."""
    runs = result.get("runs") or [result["times"]]
    result["times"] = [t for ts in runs for t in ts]
    result.update(_run_statistics(runs))
    noisy = result["spread"] > 1 + tolerance
    shares = result.get("machine_shares") or []
    best_run = min(range(len(runs)), key=lambda j: min(runs[j]))
    speed = _probe_speed(shares[best_run]) if best_run < len(shares) else None
    if reference and speed:
        result["machine_speed"] = speed / reference
        result["slowed"] = bool(speed < SLOWED_FRACTION * reference)
        noisy = noisy or result["slowed"]
    if result.get("baseline_runs"):
        base = _run_statistics(result["baseline_runs"])
        # the baseline and the point timed in the same process, round-robin:
        # their ratio from the run whose baseline was fastest
        i = min(range(len(runs)), key=lambda j: min(result["baseline_runs"][j]))
        result.update(baseline_best=base["best"], baseline_spread=base["spread"],
                      over_baseline=min(runs[i]) / min(result["baseline_runs"][i]))
        noisy = noisy or base["spread"] > 1 + tolerance
    result["noisy"] = bool(noisy)
    return result


# --------------------------------------------------------------------------
# writing

def _fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def _fmt_bytes(n):
    from fastconv._config import format_bytes
    return "–" if n is None else format_bytes(int(n))


def _layer_title(layer, flops):
    return (f"{layer['name']}: x ({layer['N']}, {layer['C']}, {layer['H']}, {layer['W']}), "
            f"{layer['K']} filters {layer['R']}×{layer['S']}, stride {layer['stride']}, "
            f"padding {layer['padding']}, dilation {layer['dilation']}, groups {layer['groups']}; "
            f"{flops / 1e9:.3g} GFLOP per pass")


def _l2_bytes():
    try:
        text = pathlib.Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
        return int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]]
    except (OSError, ValueError, KeyError):
        return 2**20


def _above_gemm(r, layer, dtype, l2):
    """Why a case ran faster than the same-shape GEMM (above 100%)."""
    import fastconv
    g = fastconv.plan_conv2d(*_benchcases.shapes(layer), **_benchcases.conv_kwargs(layer)).geometry
    operand = g.groups * (g.C // g.groups) * g.R * g.S * g.Ho * g.Wo * np.dtype(dtype).itemsize
    if r["case"] == "torch":
        return ("PyTorch does not run this GEMM: its CPU build computes the layer with "
                "oneDNN's own convolution kernels")
    if r.get("images_per_gemm", 1) > 1:
        return (f"the lowering puts {r['images_per_gemm']} images' columns side by side in one "
                f"wider GEMM; the same-shape GEMM multiplies {g.Ho * g.Wo} columns at a time")
    if operand > l2:
        tile = r.get("tile_cols")
        tile_text = (f" its tiles of {tile} columns "
                     f"({_fmt_bytes(tile * operand // (g.Ho * g.Wo))}) stay in cache"
                     if tile and tile < g.Ho * g.Wo else " it builds its operand as it goes")
        return (f"the same-shape GEMM's operand ({_fmt_bytes(operand)} per image, broadcast "
                f"over the batch) is larger than the {_fmt_bytes(l2)} L2 cache and streams from "
                f"memory, while{tile_text}")
    if r.get("noisy") or r["best"] * 1.10 > r.get("_gemm_best", 0):
        return ("within 10 % of the GEMM: timing noise and BLAS's choice of kernels, "
                "not a lowering faster than its own GEMM")
    if r["best"] * 2 < r.get("_gemm_best", 0):
        return ("far faster than the GEMM it performs: the same-shape GEMM's time is suspect here "
                "(on a loaded machine a threaded call of a small layer can wait whole scheduler "
                "ticks; a lowering with another thread layout, e.g. a single buffer with threaded "
                "BLAS, does not)")
    return "the lowering's GEMMs ran faster than the broadcast one (cache layout, BLAS kernel choice)"


def _time_cell(r):
    cell = f"{r['best'] * 1e3:.3g} ({r['median'] * 1e3:.3g}–{r['max'] * 1e3:.3g})"
    if r.get("noisy"):
        cell += f" ⚠ noisy: spread {r['spread']:.2f}×"
    return cell


def _loss_lines(summary):
    lines = []
    for row in summary:
        for peer in ("torch", "numpy", "scipy"):
            slower = row[f"slower_than_{peer}"]
            if slower:
                worst = ", ".join(f"{k} {v:.2f}×" for k, v in sorted(slower.items(),
                                                                      key=lambda kv: -kv[1]))
                lines.append(f"- {row['dtype']} {row['kind']}: slower than {label(peer)} on "
                             f"{len(slower)} of {len(row[f'auto_over_{peer}_layers'])} layers "
                             f"({worst})")
    return lines


def _driver_lines(summary):
    """Which layers make each geometric mean: every per-layer ratio, largest first."""
    lines = []
    for row in summary:
        for peer in ("torch", "numpy", "scipy"):
            per_layer = row[f"auto_over_{peer}_layers"]
            if not per_layer:
                continue
            items = ", ".join(f"{k} {v:.2f}×" for k, v in sorted(per_layer.items(),
                                                                  key=lambda kv: -kv[1]))
            noisy = row[f"auto_over_{peer}_noisy"]
            lines.append(f"- {row['dtype']} {row['kind']}, auto / {label(peer)}: {items}"
                         + (f" (noisy: {', '.join(noisy)})" if noisy else ""))
    return lines


def write_markdown(path, meta, summary, results, layers, dtypes, notes, plots):
    table = _index(results)
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    blas = "; ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '')}, "
                     f"{p.get('num_threads')} threads) from {pathlib.Path(p.get('filepath', '')).name}"
                     for p in meta["threadpools"] if p.get("user_api") == "blas")
    allocator = meta.get("allocator") or {}
    lines = [
        "# fastconv: memory and speed report", "",
        f"{meta['date']} · {meta['cpu']} · {meta['usable_cpus']} usable of {meta['logical_cpus']} "
        f"logical CPUs · {(meta['memory_bytes'] or 0) / 2**30:.1f} GiB RAM · {meta['platform']}", "",
        f"Threads per call: **{meta['threads']}** (OpenMP {'on' if meta['openmp'] else 'off'}; "
        f"SciPy's correlations run on one). Versions: {versions}. BLAS: {blas}.", "",
        f"Layers: `{meta['layers_file']}`; {'quick' if meta['quick'] else 'full'} run, "
        f"{meta['seconds']:.0f} s. Each case runs in a fresh process, which first allocates and "
        f"frees a {allocator.get('block_bytes', ALLOCATOR_BLOCK) / 2**20:.2f} MiB block so that "
        f"glibc's mmap threshold is raised as in a long-running program "
        f"(raised in {allocator.get('raised', '?')} of {allocator.get('children', '?')} processes), "
        f"then warms up on two images.", "",
        f"- **Peak memory** is a first-call measurement: the resident-memory growth (Linux VmHWM, "
        f"reset just before) of the first call on the full batch, after freed memory went back "
        f"to the system, so it counts the workspace the call allocates. It is not timed.",
        f"- **Time** is the best of the timed calls that follow one more full-batch warm-up "
        f"call: at least {meta['repeats']} calls and {meta['min_seconds']} s, more until the two "
        f"best are within {100 * meta['tolerance']:.0f} % (for at most {meta['max_seconds']} s). "
        f"{'Every case is measured in ' + str(meta['passes']) + ' processes at different times; a' if meta['passes'] > 1 else 'A'}"
        f" case still noisier is measured again in a fresh process at the end (up to "
        f"{meta['reruns']} times), and one still noisy after that is flagged "
        f"\"noisy: spread S×\" (S: second best over best, or the second-best process's best over "
        f"the best one's).", "",
        f"- **Machine speed**: each process also times a small compute-bound convolution on the "
        f"same threads before and after its timed calls; on a virtual machine whole processes "
        f"sometimes run at half speed, and a case whose best process ran below "
        f"{100 * SLOWED_FRACTION:.0f} % of the run's median probe is measured again like a noisy "
        f"one. " + (f"This run: {ms['slowed_processes']} of {ms['processes']} processes slowed "
                    f"(median probe {ms['median_gflops']:.0f} GFLOP/s)."
                    if (ms := meta.get("machine_speed")) and ms.get("median_gflops") else ""), "",
        "## Summary", "",
        "Geometric means over the layers of the best times; a time ratio below 1 means fastconv "
        "(auto) is faster. \"total\": the summed times of those layers, which weighs each layer "
        "by its cost.", "",
        "| dtype | pass | auto / PyTorch time | (total) | auto / NumPy time | auto / SciPy time "
        "| % of same-shape GEMM | memory saved by mapped (stretch / mapped at ⅛) "
        "| PyTorch / auto memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        gemm = "–" if row["gemm_fraction"] is None else f"{100 * row['gemm_fraction']:.0f}%"

        def flagged(peer):
            cell = _fmt_ratio(row[f"auto_over_{peer}"])
            n = len(row[f"auto_over_{peer}_noisy"])
            return cell + (f" ({n} noisy)" if n else "")
        lines.append(f"| {row['dtype']} | {row['kind']} | {flagged('torch')} | "
                     f"{_fmt_ratio(row['auto_over_torch_total'])} | {flagged('numpy')} | "
                     f"{flagged('scipy')} | {gemm} | "
                     f"{_fmt_ratio(row['stretch_over_mapped_tight_memory'])} | "
                     f"{_fmt_ratio(row['torch_over_auto_memory'])} |")
    lines.append("")
    drivers = _driver_lines(summary)
    if drivers:
        lines += ["What drives the means (per layer, largest first):", ""] + drivers + [""]
    losses = _loss_lines(summary)
    lines += (["Where fastconv loses:", ""] + losses if losses
              else ["fastconv (auto) was not slower than any peer on any layer measured."]) + [""]
    noisy = [r for r in results if r.get("noisy")]
    if noisy:
        lines += [f"Noisy cases ({len(noisy)}; spread of the best times still over "
                  f"{100 * meta['tolerance']:.0f} %, or the best time from a process on a slowed "
                  f"machine, after every rerun):", ""] + [
            f"- {r['layer']} {r['dtype']} {r['kind']} {label(r['case'])}"
            f"{' (limit ' + _fmt_bytes(r['limit']) + ')' if r.get('tradeoff') else ''}: "
            f"noisy: spread {max(r['spread'], r.get('baseline_spread', 1)):.2f}× over "
            f"{r['runs_measured']} process(es)"
            + (f"; its best process ran with the cores at {100 * r['machine_speed']:.0f} % of "
               f"the run's speed" if r.get("slowed") else "") for r in noisy] + [""]
    load = meta.get("load_average")
    # at the end the run's own child counts (its threads): more is someone else
    if load and (load[0] > (meta["usable_cpus"] or 1) or load[1] > meta["threads"] + 1):
        lines += [f"⚠ Other processes loaded the machine during this run (1-minute load average "
                  f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
                  f"{meta['usable_cpus']} usable CPUs): threaded calls then wait for time slices, "
                  f"and a whole process can run uniformly slow (small layers at multiples of the "
                  f"scheduler tick), which no spread shows. Run it again on an idle machine.", ""]
    if meta.get("torch_missing"):
        lines += [TORCH_HINT + ".", ""]
    if notes:
        lines += ["Left out:", ""] + [f"- {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    lines += ["## Layers", "",
              "Time ms: best (median–max) of the timed calls. GFLOP/s: from the best. % of GEMM: "
              "the same-shape GEMM's best time over the case's; that GEMM runs on one stretched "
              "matrix broadcast to every image, hot in cache, so above 100% needs the reason "
              "given under the table. Peak beyond output: the first call's resident-memory "
              "growth beyond its output (page resolution). Workspace: the plan's bound of it. "
              "/ PyTorch, / NumPy, / SciPy: best times over theirs (below 1: faster).", ""]
    l2 = _l2_bytes()
    for layer in layers:
        flops = _benchcases.flops(layer)
        lines += [f"### {_layer_title(layer, flops)}", ""]
        for dtype in dtypes:
            for kind in _benchcases.KINDS:
                rows = [r for key, r in table.items() if key[:3] == (layer["name"], dtype, kind)]
                if not rows:
                    continue
                gemm = table.get((layer["name"], dtype, kind, "gemm"))
                peers = {p: table.get((layer["name"], dtype, kind, p))
                         for p in ("torch", "numpy", "scipy")}
                lines += [f"{dtype}, {kind.replace('_', ' ')}:", "",
                          "| case | method | time ms | GFLOP/s | % of GEMM | peak beyond output | "
                          "workspace | / PyTorch | / NumPy | / SciPy |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
                above = []
                for r in rows:
                    share = "–"
                    if gemm and r is not gemm:
                        share = f"{100 * gemm['best'] / r['best']:.0f}%"
                        if gemm["best"] > r["best"]:
                            above.append(f"- {label(r['case'])} ({share}): "
                                         + _above_gemm(dict(r, _gemm_best=gemm["best"]),
                                                       layer, dtype, l2))
                            share += f" [{len(above)}]"
                    method = r.get("method") or (r.get("check", {}).get("formulation") or "–")
                    cells = [label(r["case"]), method, _time_cell(r),
                             f"{flops / r['best'] / 1e9:.1f}", share,
                             _fmt_bytes(_beyond_output(r, 0)), _fmt_bytes(r.get("workspace_bytes"))]
                    cells += [_fmt_ratio(r["best"] / p["best"]) if p else "–"
                              for p in peers.values()]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
                if above:
                    lines += ["Above 100% of the same-shape GEMM:", ""] + [
                        f"{line.replace('- ', f'- [{i}] ', 1)}" for i, line in enumerate(above, 1)]
                    lines.append("")
                scipy = peers.get("scipy")
                if scipy and scipy.get("check"):
                    c = scipy["check"]
                    lines += [f"SciPy: `scipy.signal.{c['formulation']}` per (image, filter, input "
                              f"channel), summed over channels (the faster of correlate2d and "
                              f"correlate on one image and filter); checked against fastconv: "
                              f"largest difference {c['max_relative_error']:.1e} of the largest "
                              f"output.", ""]
    tradeoff = [r for r in results if r.get("tradeoff") and "times" in r]
    if tradeoff:
        lines += ["## The mapped lowering under a shrinking memory limit", "",
                  "Each layer's points and its mapped case at the default limit are timed in one "
                  "process, round-robin; \"time / mapped (default limit)\" divides bests of the "
                  "same rounds.", "",
                  "| layer | limit (stretch workspace ÷) | limit | workspace | peak beyond output "
                  "| time ms | time / mapped (default limit) |", "|---|---|---|---|---|---|---|"]
        for r in tradeoff:
            lines.append(f"| {r['layer']} | {r['divisor']} | {_fmt_bytes(r['limit'])} | "
                         f"{_fmt_bytes(r['workspace_bytes'])} | {_fmt_bytes(_beyond_output(r, 0))} | "
                         f"{_time_cell(r)} | {r['over_baseline']:.2f} |")
        lines.append("")
    not_run = [r for r in results if "times" not in r]
    if not_run:
        lines += ["## Cases not measured", ""] + [
            f"- {r['layer']} {r['dtype']} {r['kind']} {label(r['case'])}"
            f"{' (limit ' + _fmt_bytes(r['limit']) + ')' if r.get('tradeoff') else ''}: "
            f"{r.get('error') or r.get('skipped')}" for r in not_run] + [""]
    pathlib.Path(path).write_text("\n".join(lines))


def write_plots(out_dir, results, layers, dtypes):
    """throughput.png, memory.png, tradeoff.png; the names written. Cases are
    labelled as in the tables; a zero peak is drawn as a marker at 0 on a
    symmetric-log axis (not clamped to a floor)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = _index(results)
    names = [layer["name"] for layer in layers]
    flops = {layer["name"]: _benchcases.flops(layer) for layer in layers}
    cases = [c for c in list(_benchcases.LOWERINGS) + list(_benchcases.REPORT_PEERS)
             if any(k[3] == c and k[2] == "forward" for k in table)]
    written = []
    for filename, ylabel, value, log in (
            ("throughput.png", "GFLOP/s (forward, best time)",
             lambda r, n: flops[n] / r["best"] / 1e9, False),
            ("memory.png", "peak beyond output, MiB (forward, first call)",
             lambda r, n: _beyond_output(r, 0) / 2**20, True)):
        fig, axes = plt.subplots(len(dtypes), 1, figsize=(max(8, 0.9 * len(names) + 3),
                                                          3.6 * len(dtypes)), squeeze=False)
        width = 0.8 / max(1, len(cases))
        for ax, dtype in zip(axes[:, 0], dtypes):
            zeros = []
            for i, case in enumerate(cases):
                xs, ys = [], []
                for j, name in enumerate(names):
                    r = table.get((name, dtype, "forward", case))
                    if r:
                        xs.append(j + (i - (len(cases) - 1) / 2) * width)
                        ys.append(value(r, name))
                bars = ax.bar(xs, ys, width, label=label(case))
                zeros += [(x, bars.patches[0].get_facecolor()) for x, y in zip(xs, ys) if y == 0]
            if log and zeros:
                ax.scatter([x for x, _ in zeros], [0] * len(zeros), marker="o", s=14,
                           c=[c for _, c in zeros], edgecolors="black", linewidths=0.5, zorder=3,
                           label="0 (no growth)")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(dtype, fontsize=9)
            if log:
                ax.set_yscale("symlog", linthresh=0.1)
                ax.set_ylim(bottom=0)
        axes[0, 0].legend(fontsize=7, ncol=min(len(cases) + 1, 5))
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=110)
        plt.close(fig)
        written.append(filename)
    tradeoff = [r for r in results if r.get("tradeoff") and "times" in r]
    if tradeoff:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in dict.fromkeys(r["layer"] for r in tradeoff):
            points = [r for r in tradeoff if r["layer"] == name]
            ax.plot([r["workspace_bytes"] / 2**20 for r in points],
                    [r["over_baseline"] for r in points], marker="o", label=name)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("workspace, MiB (the memory limit shrinking to the left)")
        ax.set_ylabel("time / mapped (default limit)")
        ax.set_title("mapped lowering: time against memory (same rounds)", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "tradeoff.png", dpi=110)
        plt.close(fig)
        written.append("tradeoff.png")
    return written


def _progress(total, enabled):
    """A progress bar on a terminal (tqdm, from the report extra); otherwise a
    line on stderr every tenth of the cases."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm
            return tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass

    class Lines:
        def __init__(self):
            self.n = 0

        def set_description(self, text):
            self.text = text

        def update(self, k=1):
            self.n += k
            if enabled and (self.n * 10 // total != (self.n - k) * 10 // total or self.n == total):
                print(f"[{self.n}/{total}] {self.text}", file=sys.stderr, flush=True)

        def close(self):
            pass
    return Lines()


def _record_for(case):
    record = dict(layer=case["layer"]["name"], dtype=case["dtype"], kind=case["kind"],
                  case=case["case"], tradeoff=case.get("tradeoff", False))
    if "limit" in case:
        record.update(limit=case["limit"], divisor=case["divisor"])
    return record


def _units(cases):
    """The processes to run: one per case, one per layer for its trade-off
    points (each unit: a list of (index into cases, case))."""
    units, tradeoff = [], {}
    for i, case in enumerate(cases):
        if case.get("tradeoff"):
            key = (case["layer"]["name"], case["dtype"])
            if key not in tradeoff:
                tradeoff[key] = []
                units.append(tradeoff[key])
            tradeoff[key].append((i, case))
        else:
            units.append([(i, case)])
    return units


def _measure_unit(unit, records, settings, allocator):
    """Measure one unit in a fresh process and add its times to its records."""
    first = unit[0][1]
    spec = dict(layer=first["layer"], dtype=first["dtype"], kind=first["kind"],
                case=first["case"], limit=first.get("limit"), **settings)
    if first.get("tradeoff"):
        spec.update(case="tradeoff", limits=[case["limit"] for _, case in unit])
    result = measure_case(spec)
    if "allocator" in result:
        allocator["children"] += 1
        allocator["raised"] += bool(result["allocator"].get("threshold_raised"))
    if "points" in result:
        baseline = result["points"][0]
        for (i, _), point in zip(unit, result["points"][1:]):
            record = records[i]
            record.setdefault("runs", []).append(point.pop("times"))
            record.setdefault("baseline_runs", []).append(baseline["times"])
            record.update(point)
        return
    record = records[unit[0][0]]
    if "times" in result:
        record.setdefault("runs", []).append(result.pop("times"))
        # one per process, beside its run
        record.setdefault("machine_shares", []).append(result.pop("machine_share", None))
        record.pop("skipped", None)
        record.pop("error", None)
        record.update(result)
    elif "runs" not in record:
        record.update(result)


def run_report(layers_file=None, dtypes=None, threads=None, quick=False, out_dir="report-out",
               repeats=None, names=None, progress=True, min_seconds=None, tolerance=None,
               reruns=None, passes=None):
    """Measure every case and write the report; return the paths written.

    Parameters
    ----------
    layers_file : str or path, optional
        Layers JSON (default: ../shared/layers.json or the packaged copy).
    dtypes : sequence of {"float32", "float64"}, optional
        Default: float32 for a quick run, both otherwise.
    threads : int, optional
        Threads per call for fastconv and every peer (default: fastconv's).
    quick : bool
        Three layers, float32, auto gradients only, a short trade-off curve.
    out_dir : str or path
    repeats : int, optional
        Least timed calls per case (default 3 quick, 5 full).
    names : sequence of str, optional
        Only these layers.
    progress : bool
        Show a progress bar on stderr.
    min_seconds : float, optional
        Keep timing a case until this much time is measured (default 0.2 s
        quick, 0.5 s full; at most 200 calls).
    tolerance : float, optional
        A case whose two best times differ by more than this fraction
        (default 0.10) is timed longer, then measured again in a fresh
        process, then flagged as noisy.
    reruns : int, optional
        Fresh processes for a noisy case at the end (default 2).
    passes : int, optional
        Processes per case to begin with, one pass over every case after
        the other (default 1 quick, 2 full).

    Returns
    -------
    dict
        {"markdown", "json", "plots": [...]} paths.

    Examples
    --------
    >>> from fastconv.report import run_report
    >>> paths = run_report(quick=True, out_dir="report-out")  # doctest: +SKIP
    """
    import fastconv
    layers_path = pathlib.Path(layers_file) if layers_file else _benchcases.default_layers_path()
    layers = _benchcases.load_layers(layers_path, names)
    if not layers:
        raise ValueError(f"layers file {str(layers_path)!r} has no layers")
    if quick and not names:
        chosen = [layer for layer in layers if layer["name"] in QUICK_LAYERS]
        layers = chosen or layers[:3]
    dtypes = list(dtypes or (["float32"] if quick else DTYPES))
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"dtype {bad[0]!r} is not one of {DTYPES}")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    threads = int(threads) if threads else fastconv.get_config()["num_threads"]
    repeats = repeats or (QUICK_REPEATS if quick else FULL_REPEATS)
    if min_seconds is None:
        min_seconds = QUICK_MIN_SECONDS if quick else FULL_MIN_SECONDS
    tolerance = TOLERANCE if tolerance is None else tolerance
    reruns = (QUICK_RERUNS if quick else FULL_RERUNS) if reruns is None else reruns
    passes = (QUICK_PASSES if quick else FULL_PASSES) if passes is None else passes
    settings = dict(threads=threads, repeats=repeats, min_seconds=min_seconds,
                    tolerance=tolerance,
                    max_seconds=max(min_seconds, QUICK_MAX_SECONDS if quick else FULL_MAX_SECONDS),
                    scipy_seconds=QUICK_SCIPY_SECONDS if quick else FULL_SCIPY_SECONDS)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    cases = plan_cases(layers, dtypes, quick)
    records = [_record_for(case) for case in cases]
    left_out = set()
    units = []
    for unit in _units(cases):
        i, case = unit[0]
        why = (_benchcases.peer_available(case["case"], case["kind"])
               if case["case"] in _benchcases.REPORT_PEERS else None)
        if why:
            records[i]["skipped"] = why
            left_out.add(f"{case['case']} peer: {why}")
        else:
            units.append(unit)
    allocator = dict(children=0, raised=0, block_bytes=ALLOCATOR_BLOCK)
    bar = _progress(len(units) * passes, progress)
    started = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def measure(unit, what):
        case = unit[0][1]
        bar.set_description(f"{what}{case['layer']['name']} {case['dtype']} {case['kind']} "
                            f"{'trade-off' if case.get('tradeoff') else case['case']}")
        _measure_unit(unit, records, settings, allocator)

    for p in range(passes):
        for unit in units:
            measure(unit, f"pass {p + 1}: " if passes > 1 else "")
            bar.update(1)
    bar.close()
    for attempt in range(reruns):
        noisy = []
        reference = reference_speed(records)
        for unit in units:
            for i, _ in unit:
                if (records[i].get("runs")
                        and _with_statistics(dict(records[i]), tolerance, reference)["noisy"]):
                    noisy.append(unit)
                    break
        if not noisy:
            break
        if progress:
            print(f"measuring {len(noisy)} noisy case(s) again ({attempt + 1} of {reruns})",
                  file=sys.stderr, flush=True)
        for unit in noisy:
            measure(unit, "again: ")
    results = []
    reference = reference_speed(records)
    for record in records:
        if record.get("runs"):
            _with_statistics(record, tolerance, reference)
        results.append(record)
    speeds = _probe_speeds(records)

    meta = machine_info(threads)
    meta.update(layers_file=str(layers_path), quick=quick, repeats=repeats,
                min_seconds=min_seconds, tolerance=tolerance, max_seconds=settings["max_seconds"],
                reruns=reruns, passes=passes, scipy_seconds=settings["scipy_seconds"],
                dtypes=dtypes, allocator=allocator,
                machine_speed=dict(median_gflops=reference, processes=len(speeds),
                                   slowed_processes=sum(v < SLOWED_FRACTION * reference
                                                        for v in speeds) if reference else 0,
                                   slowed_fraction=SLOWED_FRACTION),
                torch_missing=_benchcases.peer_available("torch") is not None,
                load_average=(None if load_start is None else [load_start, os.getloadavg()[0]]),
                seconds=round(time.perf_counter() - started, 1))
    summary = summarize(results, layers, dtypes)
    notes = sorted(left_out)
    plots = []
    try:
        plots = write_plots(out_dir, results, layers, dtypes)
    except ImportError:
        notes.append("plots: matplotlib is not installed (pip install 'fastconv[report]')")
    paths = dict(markdown=out_dir / "report.md", json=out_dir / "report.json",
                 plots=[out_dir / p for p in plots])
    write_markdown(paths["markdown"], meta, summary, results, layers, dtypes, notes, plots)
    paths["json"].write_text(json.dumps(dict(meta=meta, layers=layers, summary=summary,
                                             results=results, notes=notes), indent=1))
    return paths


def add_arguments(parser):
    parser.add_argument("--layers", default=None, help="layers JSON file (default: "
                        "../shared/layers.json, else the copy shipped with fastconv)")
    parser.add_argument("--names", default=None, help="comma-separated subset of layer names")
    parser.add_argument("--dtype", default=None, choices=DTYPES + ("all",),
                        help="default: float32 with --quick, both otherwise")
    parser.add_argument("--threads", type=int, default=None, help="threads per call (default: all usable)")
    parser.add_argument("--quick", action="store_true",
                        help="three layers, float32, auto gradients: a few minutes at most")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--out", default="report-out", help="folder to write the report to")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def report_command(args, parser):
    """Run the report for parsed arguments; errors in the arguments go to parser.error."""
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    dtypes = None if args.dtype in (None, "all") else [args.dtype]
    if args.dtype == "all":
        dtypes = list(DTYPES)
    try:
        paths = run_report(args.layers, dtypes, args.threads, args.quick, args.out, args.repeats,
                           args.names, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(f"wrote {paths['markdown']}, {paths['json']}"
          + "".join(f", {p}" for p in paths["plots"]))
    summary = pathlib.Path(paths["markdown"]).read_text().split("## Summary", 1)[1]
    print("\n## Summary" + summary.split("\n## ", 1)[0])
    return 0


def main(argv=None):
    """The ``fastconv-report`` console script."""
    parser = argparse.ArgumentParser(prog="fastconv-report", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return report_command(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
