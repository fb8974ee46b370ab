"""The memory/speed comparison report: ``python -m fastconv report`` (or
``fastconv-report``).

Every case (layer x dtype x kind x lowering or peer, see
:mod:`fastconv._benchcases`) runs in a fresh Python process, so that its peak
memory is its own and no thread pool of an earlier case is still spinning:
one warm-up call on a batch of at most two images (imports, thread teams,
first-touch), one call on the full batch whose peak resident memory growth is
measured (Linux: VmHWM, reset just before the call), then the timed calls.
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
# memory limits of the trade-off curve: stretch's workspace divided by these
TRADEOFF_DIVISORS = (1, 2, 4, 8, 16, 32, 64)
QUICK_TRADEOFF_DIVISORS = (1, 4, 16, 64)
CHILD_TIMEOUT = 900  # seconds for one case, warm-up and repeats included
DTYPES = ("float32", "float64")

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


def _release_free_memory():
    """Give memory freed by the warm-up back to the system (glibc's
    malloc_trim), so that the measured call's own buffers show up in its RSS
    growth instead of silently reusing the warm-up's pages."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _nbytes(out):
    return int(out.nbytes if hasattr(out, "nbytes") else out.element_size() * out.nelement())


def _measure_in_this_process(payload):
    """Child side: run one case, print one JSON line with its figures."""
    import fastconv
    spec = json.loads(payload)
    layer, dtype, kind, name = spec["layer"], spec["dtype"], spec["kind"], spec["case"]
    if spec.get("batch"):
        layer = dict(layer, N=spec["batch"])
    threads, limit = spec["threads"], spec.get("limit")
    try:
        _, run = _benchcases.make_case(layer, dtype, kind, name, threads,
                                       batch=min(2, layer["N"]), limit=limit)
        run()  # warm-up: kernels loaded, thread teams started
        del run
        plan, run = _benchcases.make_case(layer, dtype, kind, name, threads, limit=limit)
    except (fastconv.WorkspaceLimitError, RuntimeError) as exc:
        print(json.dumps(dict(skipped=str(exc))))
        return
    _release_free_memory()
    exact = _reset_peak()
    before = _peak_rss()
    out = run()
    peak = _peak_rss() - before
    output_bytes = _nbytes(out)
    del out
    times = []
    while len(times) < spec["repeats"] or (sum(times) < spec["min_seconds"]
                                           and len(times) < MAX_CALLS):
        start = time.perf_counter()
        run()  # the result is dropped at once: one output alive at a time
        times.append(time.perf_counter() - start)
    result = dict(times=times, peak_growth=peak, output_bytes=output_bytes, peak_exact=exact)
    if plan is not None:
        result.update(method=plan.method, workspace_bytes=plan.workspace_bytes,
                      memory_limit=plan.memory_limit, plan=repr(plan),
                      kernel_threads=plan.kernel_threads, blas_threads=plan.blas_threads)
    print(json.dumps(result))


def measure_case(spec):
    """Run one case in a fresh interpreter (importing this very fastconv, from
    an empty folder) and return its figures: times, peak_growth, output_bytes,
    and for fastconv's lowerings the plan; or skipped/error with the reason.

    spec: layer (dict), dtype, kind, case (a name of _benchcases.LOWERINGS or
    PEERS), threads, repeats, min_seconds, and optionally limit (memory limit
    of a lowering) and batch (another N).
    """
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as empty:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=root), json.dumps(spec)],
                                  capture_output=True, text=True, cwd=empty, timeout=CHILD_TIMEOUT)
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
            for name in list(_benchcases.LOWERINGS) + list(_benchcases.PEERS):
                cases.append(dict(layer=layer, dtype=dtype, kind="forward", case=name))
            for kind in ("input_grad", "weight_grad"):
                for name in gradient_cases:
                    cases.append(dict(layer=layer, dtype=dtype, kind=kind, case=name))
    # the trade-off of the mapped lowering as the limit shrinks (first dtype)
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
    fastconv auto's time over each peer's, of its share of the GEMM's
    throughput, and of the memory the mapped lowering saves."""
    table = _index(results)
    names = [layer["name"] for layer in layers]
    summary = []
    for dtype in dtypes:
        for kind in _benchcases.KINDS:
            def ratios(numerator, denominator, value=lambda r: r["median"]):
                out = {}
                for name in names:
                    a = table.get((name, dtype, kind, numerator))
                    b = table.get((name, dtype, kind, denominator))
                    if a and b:
                        out[name] = value(a) / value(b)
                return out
            row = dict(dtype=dtype, kind=kind)
            for peer in ("torch", "numpy"):
                per_layer = ratios("auto", peer)
                row[f"auto_over_{peer}"] = _geomean(per_layer.values())
                row[f"auto_over_{peer}_layers"] = per_layer
                row[f"slower_than_{peer}"] = {k: v for k, v in per_layer.items() if v > 1.0}
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


def _with_statistics(result):
    times = np.array(result["times"])
    result.update(median=float(np.median(times)), min=float(times.min()), max=float(times.max()),
                  spread=float((times.max() - times.min()) / np.median(times)))
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


def write_markdown(path, meta, summary, results, layers, dtypes, notes, plots):
    table = _index(results)
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    blas = "; ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '')}, "
                     f"{p.get('num_threads')} threads) from {pathlib.Path(p.get('filepath', '')).name}"
                     for p in meta["threadpools"] if p.get("user_api") == "blas")
    lines = [
        "# fastconv: memory and speed report", "",
        f"{meta['date']} · {meta['cpu']} · {meta['usable_cpus']} usable of {meta['logical_cpus']} "
        f"logical CPUs · {(meta['memory_bytes'] or 0) / 2**30:.1f} GiB RAM · {meta['platform']}", "",
        f"Threads per call: **{meta['threads']}** (OpenMP {'on' if meta['openmp'] else 'off'}). "
        f"Versions: {versions}. BLAS: {blas}.", "",
        f"Layers: `{meta['layers_file']}`; {'quick' if meta['quick'] else 'full'} run, "
        f"at least {meta['repeats']} timed calls and {meta['min_seconds']} s per case after a "
        f"warm-up, each case in a fresh process.", "",
        "## Summary", "",
        "Geometric means over the layers; a time ratio below 1 means fastconv (auto) is faster.", "",
        "| dtype | pass | auto / PyTorch time | auto / NumPy time | % of same-shape GEMM "
        "| memory saved by mapped (stretch / mapped at ⅛) | PyTorch / auto memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        gemm = "–" if row["gemm_fraction"] is None else f"{100 * row['gemm_fraction']:.0f}%"
        lines.append(f"| {row['dtype']} | {row['kind']} | {_fmt_ratio(row['auto_over_torch'])} | "
                     f"{_fmt_ratio(row['auto_over_numpy'])} | {gemm} | "
                     f"{_fmt_ratio(row['stretch_over_mapped_tight_memory'])} | "
                     f"{_fmt_ratio(row['torch_over_auto_memory'])} |")
    lines.append("")
    losses = []
    for row in summary:
        for peer, label in (("torch", "PyTorch"), ("numpy", "NumPy")):
            slower = row[f"slower_than_{peer}"]
            if slower:
                worst = ", ".join(f"{k} {v:.2f}×" for k, v in sorted(slower.items(),
                                                                      key=lambda kv: -kv[1]))
                losses.append(f"- {row['dtype']} {row['kind']}: slower than {label} on "
                              f"{len(slower)} of {len(row[f'auto_over_{peer}_layers'])} layers "
                              f"({worst})")
    lines += (["Where fastconv loses:", ""] + losses if losses
              else ["fastconv (auto) was not slower than any peer on any layer measured."]) + [""]
    if notes:
        lines += ["Left out:", ""] + [f"- {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    lines += ["## Layers", "",
              "Time: median of the timed calls (min–max). % of GEMM: the same-shape GEMM's time "
              "over the case's (above 100% where several small images share one GEMM). Peak: the "
              "largest resident-memory growth during one call, beyond its output (page "
              "resolution). Workspace: the plan's bound of it. Ratios are times over PyTorch's "
              "and NumPy's (below 1: fastconv faster).", ""]
    for layer in layers:
        flops = _benchcases.flops(layer)
        lines += [f"### {_layer_title(layer, flops)}", ""]
        for dtype in dtypes:
            for kind in _benchcases.KINDS:
                rows = [r for key, r in table.items() if key[:3] == (layer["name"], dtype, kind)]
                if not rows:
                    continue
                gemm = table.get((layer["name"], dtype, kind, "gemm"))
                peers = {p: table.get((layer["name"], dtype, kind, p)) for p in ("torch", "numpy")}
                lines += [f"{dtype}, {kind.replace('_', ' ')}:", "",
                          "| case | method | time ms | GFLOP/s | % of GEMM | peak | "
                          "workspace | / PyTorch | / NumPy |",
                          "|---|---|---|---|---|---|---|---|---|"]
                for r in rows:
                    cells = [r["case"], r.get("method", "–"),
                             f"{r['median'] * 1e3:.2f} ({r['min'] * 1e3:.2f}–{r['max'] * 1e3:.2f})",
                             f"{flops / r['median'] / 1e9:.1f}",
                             f"{100 * gemm['median'] / r['median']:.0f}%" if gemm else "–",
                             _fmt_bytes(_beyond_output(r, 0)), _fmt_bytes(r.get("workspace_bytes"))]
                    cells += [_fmt_ratio(r["median"] / p["median"]) if p else "–"
                              for p in peers.values()]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
    tradeoff = [r for r in results if r.get("tradeoff") and "times" in r]
    if tradeoff:
        lines += ["## The mapped lowering under a shrinking memory limit", "",
                  "| layer | limit (stretch workspace ÷) | limit | workspace | peak "
                  "| time ms | time / unlimited mapped |", "|---|---|---|---|---|---|---|"]
        for r in tradeoff:
            first = next(t for t in tradeoff if t["layer"] == r["layer"])
            lines.append(f"| {r['layer']} | {r['divisor']} | {_fmt_bytes(r['limit'])} | "
                         f"{_fmt_bytes(r['workspace_bytes'])} | {_fmt_bytes(_beyond_output(r, 0))} | "
                         f"{r['median'] * 1e3:.2f} | {r['median'] / first['median']:.2f} |")
        lines.append("")
    not_run = [r for r in results if "times" not in r]
    if not_run:
        lines += ["## Cases not measured", ""] + [
            f"- {r['layer']} {r['dtype']} {r['kind']} {r['case']}"
            f"{' (limit ' + _fmt_bytes(r['limit']) + ')' if r.get('tradeoff') else ''}: "
            f"{r.get('error') or r.get('skipped')}" for r in not_run] + [""]
    pathlib.Path(path).write_text("\n".join(lines))


def write_plots(out_dir, results, layers, dtypes):
    """throughput.png, memory.png, tradeoff.png; the names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = _index(results)
    names = [layer["name"] for layer in layers]
    flops = {layer["name"]: _benchcases.flops(layer) for layer in layers}
    cases = [c for c in list(_benchcases.LOWERINGS) + list(_benchcases.PEERS)
             if any(k[3] == c and k[2] == "forward" for k in table)]
    written = []
    for filename, ylabel, value, log in (
            ("throughput.png", "GFLOP/s (forward)", lambda r, n: flops[n] / r["median"] / 1e9, False),
            ("memory.png", "peak memory beyond the output, MiB (forward)",
             lambda r, n: _beyond_output(r) / 2**20, True)):
        fig, axes = plt.subplots(len(dtypes), 1, figsize=(max(8, 0.9 * len(names) + 3),
                                                          3.6 * len(dtypes)), squeeze=False)
        width = 0.8 / max(1, len(cases))
        for ax, dtype in zip(axes[:, 0], dtypes):
            for i, case in enumerate(cases):
                xs, ys = [], []
                for j, name in enumerate(names):
                    r = table.get((name, dtype, "forward", case))
                    if r:
                        xs.append(j + (i - (len(cases) - 1) / 2) * width)
                        ys.append(value(r, name))
                ax.bar(xs, ys, width, label=case)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(dtype, fontsize=9)
            if log:
                ax.set_yscale("log")
        axes[0, 0].legend(fontsize=7, ncol=len(cases))
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
                    [r["median"] / points[0]["median"] for r in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("workspace, MiB (the memory limit shrinking to the left)")
        ax.set_ylabel("time / time at stretch's workspace")
        ax.set_title("mapped lowering: time against memory", fontsize=10)
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


def run_report(layers_file=None, dtypes=None, threads=None, quick=False, out_dir="report-out",
               repeats=None, names=None, progress=True, min_seconds=None):
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
        Timed calls per case (default 3 quick, 5 full).
    names : sequence of str, optional
        Only these layers.
    progress : bool
        Show a progress bar on stderr.
    min_seconds : float, optional
        Keep timing a case until this much time is measured (default 0.2 s
        quick, 0.5 s full; at most 200 calls).

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
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    cases = plan_cases(layers, dtypes, quick)
    left_out = set()
    results = []
    bar = _progress(len(cases), progress)
    started = time.perf_counter()
    for case in cases:
        label = f"{case['layer']['name']} {case['dtype']} {case['kind']} {case['case']}"
        bar.set_description(label)
        record = dict(layer=case["layer"]["name"], dtype=case["dtype"], kind=case["kind"],
                      case=case["case"], tradeoff=case.get("tradeoff", False))
        if "limit" in case:
            record.update(limit=case["limit"], divisor=case["divisor"])
        why = (_benchcases.peer_available(case["case"], case["kind"])
               if case["case"] in _benchcases.PEERS else None)
        if why:
            record["skipped"] = why
            left_out.add(f"{case['case']} peer: {why}")
        else:
            spec = dict(layer=case["layer"], dtype=case["dtype"], kind=case["kind"],
                        case=case["case"], threads=threads, repeats=repeats,
                        min_seconds=min_seconds, limit=case.get("limit"))
            record.update(measure_case(spec))
            if "times" in record:
                _with_statistics(record)
        results.append(record)
        bar.update(1)
    bar.close()

    meta = machine_info(threads)
    meta.update(layers_file=str(layers_path), quick=quick, repeats=repeats,
                min_seconds=min_seconds, dtypes=dtypes,
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
