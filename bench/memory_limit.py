"""Time and peak memory of a layer under memory limits, each case in a fresh
process (peak RSS cannot be reset within one), cases alternated so drift of a
shared machine hits both alike.

    python bench/memory_limit.py [--layer vgg16_1_2] [--batch 16] [--dtype float32]
        [--cases stretch:64GiB,mapped:64MiB] [--repeats 3] [--runs 3] [--threads 2]

Prints, per case: median time, peak RSS growth during the first call (beyond
the output), the plan's workspace, and ratios to the first case.
"""
import argparse
import json
import subprocess
import sys

import numpy as np

from fastconv._benchcases import load_layers

CHILD = r"""
import json, resource, sys, time
import numpy as np
import fastconv
layer, batch, dtype, method, limit, runs, threads = json.loads(sys.argv[1])
def reset_peak():
    # Linux >= 4.0: writing 5 resets VmHWM, so the peak of one call is seen
    # even below an earlier, larger peak (the warm-up's)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
def peak():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
kw = dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
          groups=layer["groups"])
w = np.random.default_rng(0).standard_normal(
    (layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"])).astype(dtype)
def run(n):
    x = np.empty((n, layer["C"], layer["H"], layer["W"]), dtype)
    x[...] = 1.0
    plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                num_threads=threads, **kw)
    return x, plan
x, plan = run(min(2, batch))
plan.execute(x, w)  # warm-up: kernels, OpenMP team, BLAS buffers
del x
x, plan = run(batch)
reset_peak()
before = peak()
out = plan.execute(x, w)
growth = peak() - before - out.nbytes
times = []
for _ in range(runs):
    del out
    start = time.perf_counter()
    out = plan.execute(x, w)
    times.append(time.perf_counter() - start)
print(json.dumps(dict(growth=growth, times=times, workspace=plan.workspace_bytes,
                      plan=repr(plan))))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=None)
    parser.add_argument("--layer", default="vgg16_1_2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cases", default="stretch:64GiB,mapped:64MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    layer = load_layers(args.layers, args.layer)[0]
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    results = {c: {"times": [], "growth": []} for c in cases}
    for _ in range(args.repeats):
        for method, limit in cases:
            payload = json.dumps([layer, args.batch, args.dtype, method, limit, args.runs,
                                  args.threads])
            proc = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True,
                                  text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(method, limit)]["times"] += r["times"]
            results[(method, limit)]["growth"].append(r["growth"])
            results[(method, limit)].update(workspace=r["workspace"], plan=r["plan"])
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
