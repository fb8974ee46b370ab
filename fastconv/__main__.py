"""Command line: ``fastconv demo``, ``fastconv report``, ``fastconv config``
(or ``python -m fastconv ...``).

``demo`` runs conv2d with each lowering on one layer and prints the time, the
throughput and the workspace of each, and how far apart their results are.
"""
import argparse
import sys
import time

import numpy as np

# VGG-16 conv3_2 at batch 2: big enough that the lowerings differ, small
# enough to run in a second or two.
DEMO_LAYER = dict(name="vgg16_3_2", N=2, C=256, H=56, W=56, K=256, R=3, S=3,
                  stride=1, padding=1, dilation=1, groups=1)


def _time(fn, repeats):
    fn()  # warm-up: first-touch of the output and workspace pages
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def demo(args):
    import fastconv
    layer = DEMO_LAYER
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    x = rng.standard_normal((layer["N"], layer["C"], layer["H"], layer["W"])).astype(dtype)
    w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"])).astype(dtype)
    conv = dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                groups=layer["groups"])
    fastconv.show_config()
    print(f"\nlayer {layer['name']}: x {x.shape} {dtype.name}, weight {w.shape}, "
          f"stride {layer['stride']}, padding {layer['padding']}")
    cases = [("stretch", None), ("mapped", None), ("mapped", args.limit)]
    results = {}
    print(f"{'method':<8} {'limit':>10} {'time ms':>9} {'GFLOP/s':>8} {'workspace':>11}  plan")
    for method, limit in cases:
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                    num_threads=args.threads, **conv)
        seconds = _time(lambda: plan.execute(x, w), args.repeats)
        results[(method, limit)] = plan.execute(x, w)
        print(f"{method:<8} {str(limit or 'default'):>10} {seconds * 1e3:9.1f} "
              f"{plan.flops / seconds / 1e9:8.1f} {plan.workspace_bytes / 2**20:9.1f} MiB"
              f"  {plan.reason}")
    outs = list(results.values())
    diff = max(float(np.max(np.abs(o - outs[0]))) for o in outs[1:])
    print(f"largest difference between lowerings: {diff:.3g}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="run conv2d with each lowering on a layer; print time and workspace")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", default="4MiB", help="memory limit for the constrained mapped run")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=demo)
    sub.add_parser("config", help="print the build and machine configuration").set_defaults(
        func=lambda a: __import__("fastconv").show_config() or 0)
    p = sub.add_parser("report", help="measure every lowering and peer; write report.md/.json/.png")
    from fastconv.report import add_arguments, report_command
    add_arguments(p)
    p.set_defaults(func=lambda a, p=p: report_command(a, p))
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
