"""Side-by-side timing of the lowerings on each layer, interleaved round-robin
so that drift of a shared machine hits every case alike (pytest-benchmark runs
cases one after another). Prints min and median per case and the ratios.

    python bench/interleaved.py [--layers FILE] [--dtype float32] [--rounds 15]
                                [--threads 2] [--names a,b] [--scaling] [--json out.json]
"""
import argparse
import json
import time

import numpy as np

import fastconv
from fastconv._benchcases import conv_kwargs, layer_arrays, load_layers, same_shape_gemm

def build_cases(layer, dtype, threads, scaling=False):
    """name -> (plan, run). 'mapped_1/8' is mapped held to an eighth of
    stretch's workspace; with scaling, stretch and mapped also on 1 thread."""
    x, w = layer_arrays(layer, dtype)
    conv = conv_kwargs(layer)

    def planned(method, limit, n_threads=threads):
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                    num_threads=n_threads, **conv)
        return plan, (lambda: plan.execute(x, w))

    runs = {"gemm": same_shape_gemm(layer, dtype, threads)}
    runs["stretch"] = planned("stretch", "64GiB")
    runs["mapped"] = planned("mapped", None)
    try:
        runs["mapped_1/8"] = planned("mapped", runs["stretch"][0].workspace_bytes // 8)
    except fastconv.WorkspaceLimitError:
        pass  # small layers: an eighth is below the narrowest tile
    runs["auto"] = planned("auto", None)
    if scaling:
        runs["stretch_1t"] = planned("stretch", "64GiB", 1)
        runs["mapped_1t"] = planned("mapped", None, 1)
    return runs


def measure(runs, rounds, block=1, cooldown=0.0):
    """Round-robin over the cases; in each round a case runs `block` timed
    calls after one untimed call, following `cooldown` seconds of rest: the
    threads of the previous case (OpenMP's or BLAS's) stop spinning first."""
    times = {name: [] for name in runs}
    for _, fn in runs.values():
        fn()
    for _ in range(rounds):
        for name, (_, fn) in runs.items():
            if cooldown:
                time.sleep(cooldown)
            if block > 1:
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def auto_over_best(med, low):
    """auto's time over the faster of stretch and mapped (medians; minima)."""
    best_med = min(med["stretch"], med["mapped"])
    best_low = min(low["stretch"], low["mapped"])
    return f"{med['auto'] / best_med:5.2f} ({low['auto'] / best_low:4.2f})"


def auto_label(plan):
    label = plan.method
    if getattr(plan.blocking, "images", 1) > 1:
        label += f"x{plan.blocking.images}"
    if plan.blas_threads > 1:
        label += "/blas"
    return label


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--names", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--scaling", action="store_true", help="also time 1 thread")
    parser.add_argument("--block", type=int, default=1, help="timed calls per case per round")
    parser.add_argument("--cooldown", type=float, default=0.0, help="seconds of rest between cases")
    args = parser.parse_args()
    layers = load_layers(args.layers, args.names)
    results = []
    print(f"{args.dtype}, threads={args.threads or fastconv.get_config()['num_threads']}, "
          f"{args.rounds} interleaved rounds; ratios of medians (of minima in brackets)")
    head = (f"{'layer':<18} {'gemm ms':>8} {'stretch/gemm':>13} {'mapped/gemm':>13} "
            f"{'auto/gemm':>13} {'map/str':>13} {'ws str/map':>10} {'map1/8/str':>13} "
            f"{'auto/best':>13} {'auto':>10}")
    if args.scaling:
        head += f" {'str 1T/2T':>13} {'map 1T/2T':>13}"
    print(head)
    for layer in layers:
        runs = build_cases(layer, args.dtype, args.threads, args.scaling)
        times = measure(runs, args.rounds, args.block, args.cooldown)
        med = {k: float(np.median(v)) for k, v in times.items()}
        low = {k: float(np.min(v)) for k, v in times.items()}
        ws = {k: runs[k][0].workspace_bytes for k in runs}

        def r(a, b):
            if a not in med:
                return "-"
            return f"{med[a] / med[b]:5.2f} ({low[a] / low[b]:4.2f})"
        line = (f"{layer['name']:<18} {med['gemm'] * 1e3:8.2f} {r('stretch', 'gemm'):>13} "
                f"{r('mapped', 'gemm'):>13} {r('auto', 'gemm'):>13} {r('mapped', 'stretch'):>13} "
                f"{ws['stretch'] / max(ws['mapped'], 1):10.1f} {r('mapped_1/8', 'stretch'):>13} "
                f"{auto_over_best(med, low):>13} {auto_label(runs['auto'][0]):>10}")
        if args.scaling:
            line += f" {r('stretch_1t', 'stretch'):>13} {r('mapped_1t', 'mapped'):>13}"
        print(line, flush=True)
        results.append(dict(layer=layer["name"], dtype=args.dtype, threads=args.threads,
                            median=med, min=low, workspace=ws,
                            methods={k: runs[k][0].method for k in runs},
                            blocking={k: repr(runs[k][0].blocking) for k in runs}))
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
