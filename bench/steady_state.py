"""A loop's steady state, fastconv against PyTorch: the same layer called again
and again, fastconv writing into one `out=` with its kept workspace, PyTorch
as a training loop calls it. Every case runs in a fresh process that first
puts glibc's allocator in a long-running program's state (report's
warm_allocator), warms up on the full batch, then times; the cases alternate
between libraries round after round, and the best of all rounds is kept.
Each process also probes the machine's speed before and after (report's
machine_speed): a process whose slower probe ran under 75 % of the median
probe ran in one of this VM's half-speed phases, and its time is left out
(shown with a warning where a case has no other).

    python bench/steady_state.py [--names paper_mnist,resnet50_2a_1x1] [--rounds 4]
                                 [--threads 2] [--calls 30] [--methods auto,fused]
                                 [--dtype float32] [--kind forward]

--methods lists fastconv's methods to time (each in its own processes);
the ratios are over PyTorch's time.
"""
import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from fastconv.report import machine_speed, warm_allocator
warm_allocator()
import numpy as np
import fastconv
from fastconv._benchcases import conv_kwargs, layer_arrays
layer, library, threads, calls, dtype, kind = json.loads(sys.argv[1])
x, w = layer_arrays(layer, dtype)
conv = conv_kwargs(layer)
y_shape = fastconv.plan_conv2d(x.shape, w.shape, dtype, **conv).output_shape
g = np.random.default_rng(1).standard_normal(y_shape).astype(dtype)
if library == "torch":
    import torch
    torch.set_num_threads(threads)
    tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(g)
    tconv = {k: v for k, v in conv.items() if k in ("stride", "padding", "dilation", "groups")}
    run = {"forward": lambda: torch.nn.functional.conv2d(tx, tw, **tconv),
           "input_grad": lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, **tconv),
           "weight_grad": lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, **tconv)}[kind]
else:
    conv.update(num_threads=threads, method=library)
    out = np.empty({"forward": y_shape, "input_grad": x.shape, "weight_grad": w.shape}[kind],
                   dtype)
    run = {"forward": lambda: fastconv.conv2d(x, w, out=out, **conv),
           "input_grad": lambda: fastconv.conv2d_input_grad(x.shape, w, g, out=out, **conv),
           "weight_grad": lambda: fastconv.conv2d_weight_grad(x, w.shape, g, out=out, **conv),
           }[kind]
for _ in range(3):
    run()
before = machine_speed(threads)
times = []
for _ in range(calls):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
print(json.dumps([min(times), min(before, machine_speed(threads))]))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="paper_mnist,resnet50_2a_1x1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--methods", default="auto", help="fastconv methods, comma-separated")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--kind", default="forward",
                        choices=["forward", "input_grad", "weight_grad"])
    args = parser.parse_args()
    from fastconv._benchcases import load_layers
    layers = {layer["name"]: layer for layer in load_layers()}
    methods = args.methods.split(",")
    from fastconv.report import SLOWED_FRACTION
    runs = {}   # (layer, library) -> [(best time, probe)], or None: not applicable
    for round_ in range(args.rounds):
        for name in args.names.split(","):
            libraries = ["torch"] + methods
            for library in libraries if round_ % 2 == 0 else libraries[::-1]:
                payload = json.dumps([layers[name], library, args.threads, args.calls,
                                      args.dtype, args.kind])
                child = subprocess.run([sys.executable, "-c", CHILD, payload],
                                       capture_output=True, text=True)
                key = (name, library)
                if child.returncode != 0:
                    # a method that does not apply to the layer (gemm1x1 on a
                    # 3x3 one): shown as n/a; anything else is raised
                    if "ValueError: method=" not in child.stderr:
                        raise RuntimeError(f"{name} {library}: {child.stderr[-2000:]}")
                    runs[key] = None
                    continue
                runs.setdefault(key, []).append(json.loads(child.stdout))
                time.sleep(0.2)  # let the other runtime's spinning threads sleep
    probes = sorted(p for r in runs.values() if r for _, p in r)
    floor = SLOWED_FRACTION * probes[len(probes) // 2] if probes else 0
    best, slowed, dropped = {}, set(), 0
    for key, r in runs.items():
        if r is None:
            best[key] = None
            continue
        kept = [t for t, p in r if p >= floor]
        dropped += len(r) - len(kept)
        if not kept:
            slowed.add(key)
        best[key] = min(kept or [t for t, _ in r])
    print(f"{args.kind}, {args.dtype}, {args.threads} threads, best of {args.rounds} rounds; fastconv "
          "with out= (method: time, ratio to PyTorch)")
    print(f"{'layer':24s} {'PyTorch':>10s}" + "".join(f" {m:>19s}" for m in methods))
    for name in args.names.split(","):
        t = best[(name, "torch")]
        print(f"{name:24s} {t * 1e3:7.3f} ms" + "".join(
            f" {'n/a':>19s}" if best[(name, m)] is None else
            f" {best[(name, m)] * 1e3:9.3f} ms {best[(name, m)] / t:5.2f}x" for m in methods))
    print(f"{dropped} of {len(probes)} processes left out: the machine at under "
          f"{100 * SLOWED_FRACTION:.0f} % of its median speed" + (
              "; every process of " + ", ".join(" ".join(k) for k in sorted(slowed))
              + " was slowed (its best time shown anyway)" if slowed else ""))


if __name__ == "__main__":
    main()
