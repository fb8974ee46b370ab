"""Side-by-side timing of the lowerings on each layer, interleaved round-robin
so that drift of a shared machine hits every case alike (pytest-benchmark runs
cases one after another). Prints min and median per case and the ratios.

    python bench/interleaved.py [--layers FILE] [--dtype float32] [--rounds 15]
                                [--threads 2] [--names a,b] [--json out.json]
"""
import argparse
import json
import time

import numpy as np

import fastconv
from _layers import DEFAULT_LAYERS, conv_kwargs, layer_arrays, load_layers, same_shape_gemm

CASES = {"stretch": ("stretch", "64GiB"), "mapped": ("mapped", None), "auto": ("auto", None)}


def build_cases(layer, dtype, threads):
    x, w = layer_arrays(layer, dtype)
    runs = {"gemm": same_shape_gemm(layer, dtype, threads)}
    for name, (method, limit) in CASES.items():
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                    num_threads=threads, **conv_kwargs(layer))
        runs[name] = (plan, (lambda p=plan: p.execute(x, w)))
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
    layers = load_layers(args.layers, args.names)
    if layers is None:
        raise SystemExit(f"no layers file at {args.layers}")
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
