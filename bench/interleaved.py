"""Side-by-side timing of the lowerings on each layer, interleaved round-robin
so that drift of a shared machine hits every case alike (pytest-benchmark runs
cases one after another). Prints min and median per case and the ratios.

    python bench/interleaved.py [--layers FILE] [--dtype float32] [--rounds 15]
                                [--threads 2] [--names a,b] [--json out.json]
"""
import argparse
import json
import pathlib
import time

import numpy as np

import fastconv

DEFAULT_LAYERS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "layers.json"
CASES = {"gemm": None, "stretch": ("stretch", "64GiB"), "mapped": ("mapped", None),
         "auto": ("auto", None)}


def build_cases(layer, dtype, threads):
    rng = np.random.default_rng(0)
    conv = dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                groups=layer["groups"])
    x = rng.standard_normal((layer["N"], layer["C"], layer["H"], layer["W"]), dtype=np.float32).astype(dtype)
    w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"]),
                            dtype=np.float32).astype(dtype)
    runs = {}
    for name, spec in CASES.items():
        if spec is None:
            continue
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=spec[0], memory_limit=spec[1],
                                    num_threads=threads, **conv)
        runs[name] = (plan, (lambda p=plan: p.execute(x, w)))
    g = runs["stretch"][0].geometry
    stretched = rng.standard_normal((g.N, g.groups * g.rows, 1, g.cols), dtype=np.float32).astype(dtype)
    filters = rng.standard_normal((g.K, g.rows, 1, 1), dtype=np.float32).astype(dtype)
    gplan = fastconv.plan_conv2d(stretched.shape, filters.shape, dtype, groups=g.groups,
                                 num_threads=threads)
    runs["gemm"] = (gplan, (lambda: gplan.execute(stretched, filters)))
    return runs


def measure(runs, rounds):
    times = {name: [] for name in runs}
    for _, fn in runs.values():
        fn()
    for _ in range(rounds):
        for name, (_, fn) in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=str(DEFAULT_LAYERS))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--names", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    layers = json.load(open(args.layers))["layers"]
    if args.names:
        layers = [l for l in layers if l["name"] in args.names.split(",")]
    results = []
    print(f"{args.dtype}, threads={args.threads or fastconv.get_config()['num_threads']}, "
          f"{args.rounds} interleaved rounds; ratios of medians (min in brackets)")
    print(f"{'layer':<18} {'gemm ms':>8} {'stretch/gemm':>14} {'mapped/gemm':>14} {'auto/gemm':>14} "
          f"{'mapped/stretch':>15} {'ws str/map':>10} {'auto':>8}")
    for layer in layers:
        runs = build_cases(layer, args.dtype, args.threads)
        times = measure(runs, args.rounds)
        med = {k: float(np.median(v)) for k, v in times.items()}
        low = {k: float(np.min(v)) for k, v in times.items()}
        ws = {k: runs[k][0].workspace_bytes for k in runs}
        r = lambda a, b: f"{med[a] / med[b]:5.2f} ({low[a] / low[b]:4.2f})"
        print(f"{layer['name']:<18} {med['gemm'] * 1e3:8.2f} {r('stretch', 'gemm'):>14} "
              f"{r('mapped', 'gemm'):>14} {r('auto', 'gemm'):>14} {r('mapped', 'stretch'):>15} "
              f"{ws['stretch'] / max(ws['mapped'], 1):10.1f} {runs['auto'][0].method:>8}", flush=True)
        results.append(dict(layer=layer["name"], dtype=args.dtype, threads=args.threads,
                            median=med, min=low, workspace=ws,
                            methods={k: runs[k][0].method for k in runs},
                            tile_cols={k: runs[k][0].tile_cols for k in runs}))
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
