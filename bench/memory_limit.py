"""Time and peak memory of a layer under memory limits, each case in a fresh
process (peak RSS cannot be reset within one; see fastconv.report), cases
alternated so drift of a shared machine hits both alike.

    python bench/memory_limit.py [--layer vgg16_1_2] [--batch 16] [--dtype float32]
        [--cases stretch:64GiB,mapped:64MiB] [--repeats 3] [--runs 3] [--threads 2]

Prints, per case: median time, peak RSS growth during the first full-batch
call (beyond the output), the plan's workspace, and ratios to the first case.
"""
import argparse

import numpy as np

from fastconv._benchcases import load_layers
from fastconv.report import measure_case


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=None)
    parser.add_argument("--layer", default="vgg16_1_2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cases", default="stretch:64GiB,mapped:64MiB")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per process")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    layer = load_layers(args.layers, args.layer)[0]
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    results = {c: {"times": [], "growth": []} for c in cases}
    for _ in range(args.repeats):
        for method, limit in cases:
            r = measure_case(dict(layer=layer, dtype=args.dtype, kind="forward", case=method,
                                  threads=args.threads, repeats=args.runs, min_seconds=0,
                                  limit=limit, batch=args.batch))
            if "times" not in r:
                raise SystemExit(f"{method}:{limit}: {r.get('skipped') or r.get('error')}")
            results[(method, limit)]["times"] += r["times"]
            results[(method, limit)]["growth"].append(r["peak_growth"] - r["output_bytes"])
            results[(method, limit)].update(workspace=r["workspace_bytes"], plan=r["plan"])
    base = cases[0]
    base_t = np.median(results[base]["times"])
    base_m = max(results[base]["growth"])
    print(f"{layer['name']} batch {args.batch} {args.dtype}; {args.repeats} fresh processes "
          f"x {args.runs} runs per case, alternated")
    print(f"{'case':<22} {'median s':>9} {'peak MiB':>9} {'ws MiB':>8} {'time/first':>11} "
          f"{'first/peak':>11}")
    for case in cases:
        r = results[case]
        t, m = np.median(r["times"]), max(r["growth"])
        print(f"{':'.join(case):<22} {t:9.3f} {m / 2**20:9.1f} {r['workspace'] / 2**20:8.1f} "
              f"{t / base_t:11.2f} {base_m / max(m, 1):11.1f}")
        print(f"    {r['plan']}")


if __name__ == "__main__":
    main()
