"""The two gradients against the forward pass of the same layer, interleaved
round-robin (see interleaved.py): input-gradient and weight-gradient time over
forward time ("auto" plans of each), and mapped over stretch for each gradient.

    python bench/gradients.py [--layers FILE] [--dtype float32] [--threads 2]
                              [--rounds 7] [--block 3] [--cooldown 0.2] [--json out.json]
"""
import argparse
import json

import numpy as np

import fastconv
from fastconv._benchcases import conv_kwargs, layer_arrays, load_layers
from interleaved import auto_label, measure


def build_cases(layer, dtype, threads):
    """name -> (plan, run): forward auto, and each gradient by auto, stretch, mapped."""
    x, w = layer_arrays(layer, dtype)
    conv = conv_kwargs(layer)
    grad = np.random.default_rng(2).standard_normal(
        fastconv.conv2d(x[:1], w, **conv).shape[1:], dtype=np.float32).astype(dtype)
    grad = np.ascontiguousarray(np.broadcast_to(grad, (x.shape[0],) + grad.shape))
    runs = {}
    for kind in ("forward", "input_grad", "weight_grad"):
        for method, limit in (("auto", None), ("stretch", "64GiB"), ("mapped", None)):
            if kind == "forward" and method != "auto":
                continue
            plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                        num_threads=threads, kind=kind, **conv)
            keywords = dict(method=method, memory_limit=limit, num_threads=threads, **conv)
            run = {"forward": lambda k=keywords: fastconv.conv2d(x, w, **k),
                   "input_grad": lambda k=keywords: fastconv.conv2d_input_grad(x.shape, w, grad, **k),
                   "weight_grad": lambda k=keywords: fastconv.conv2d_weight_grad(x, w.shape, grad, **k),
                   }[kind]
            runs[f"{kind}:{method}"] = (plan, run)
    return runs


def geometric_mean(values):
    return float(np.exp(np.mean(np.log(values))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--names", default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=0.2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    layers = load_layers(args.layers, args.names)
    print(f"{args.dtype}, threads={args.threads or fastconv.get_config()['num_threads']}, "
          f"{args.rounds} rounds x {args.block} calls, medians")
    print(f"{'layer':<18} {'fwd ms':>8} {'in/fwd':>7} {'wt/fwd':>7} {'in map/str':>10} "
          f"{'wt map/str':>10} {'in auto':>9} {'wt auto':>9}")
    results, columns = [], {k: [] for k in ("in/fwd", "wt/fwd", "in map/str", "wt map/str")}
    for layer in layers:
        runs = build_cases(layer, args.dtype, args.threads)
        times = measure(runs, args.rounds, args.block, args.cooldown)
        med = {k: float(np.median(v)) for k, v in times.items()}
        ratios = {"in/fwd": med["input_grad:auto"] / med["forward:auto"],
                  "wt/fwd": med["weight_grad:auto"] / med["forward:auto"],
                  "in map/str": med["input_grad:mapped"] / med["input_grad:stretch"],
                  "wt map/str": med["weight_grad:mapped"] / med["weight_grad:stretch"]}
        for k, v in ratios.items():
            columns[k].append(v)
        print(f"{layer['name']:<18} {med['forward:auto'] * 1e3:8.2f} {ratios['in/fwd']:7.2f} "
              f"{ratios['wt/fwd']:7.2f} {ratios['in map/str']:10.2f} {ratios['wt map/str']:10.2f} "
              f"{auto_label(runs['input_grad:auto'][0]):>9} "
              f"{auto_label(runs['weight_grad:auto'][0]):>9}", flush=True)
        results.append(dict(layer=layer["name"], dtype=args.dtype, median=med, ratios=ratios,
                            workspace={k: p.workspace_bytes for k, (p, _) in runs.items()},
                            methods={k: p.method for k, (p, _) in runs.items()}))
    print(f"{'geometric mean':<18} {'':>8} {geometric_mean(columns['in/fwd']):7.2f} "
          f"{geometric_mean(columns['wt/fwd']):7.2f} {geometric_mean(columns['in map/str']):10.2f} "
          f"{geometric_mean(columns['wt map/str']):10.2f}")
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
