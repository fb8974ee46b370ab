"""The fused lowering's own GEMM (fastconv._kernels.fused) side by side with
fastconv's mapped lowering (im2col tiles + OpenBLAS), PyTorch's CPU
convolution and a 2048^3 GEMM of SciPy's OpenBLAS, in one process.

    python bench/fused_kernel.py [--dtype float32|float64|both] [--threads 2]
        [--rounds 7] [--names a,b | --all] [--isa avx512,avx2,generic]
        [--kc N] [--nc N] [--mc N] [--clock wall|cpu] [--no-peers] [--layers FILE]

Default layers: the 3x3 layers of ../shared/layers.json with >= 64 channels
(the targets: fused >= 90 % of the GEMM's GFLOP/s and faster than mapped
and torch). Every case is warmed up, then timed once per round, the cases
alternating within a round, each after a rest (--cooldown) and an untimed
call; the best round counts. A 64 MiB array is
allocated and freed first: that raises glibc's mmap threshold, so that the
outputs allocated per call come from the heap rather than fresh pages (whose
faults would otherwise dominate the smaller layers).
"""
import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

DEFAULT_NAMES = ("resnet50_2a_3x3", "resnet50_3b_3x3", "resnet50_4b_3x3", "resnet50_5b_3x3",
                 "vgg16_3_2", "dilated_3x3_d2")


def layers_path(arg):
    if arg:
        return pathlib.Path(arg)
    here = pathlib.Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "shared" / "layers.json",
                      here / "fastconv" / "benchmark_layers.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("no layers.json: pass --layers FILE")


def output_hw(layer):
    p, d, s = layer["padding"], layer["dilation"], layer["stride"]
    ho = (layer["H"] + 2 * p - d * (layer["R"] - 1) - 1) // s + 1
    wo = (layer["W"] + 2 * p - d * (layer["S"] - 1) - 1) // s + 1
    return ho, wo


def flops(layer):
    ho, wo = output_hw(layer)
    return 2.0 * layer["N"] * layer["K"] * ho * wo * (layer["C"] // layer["groups"]) \
        * layer["R"] * layer["S"]


def fused_case(fused, layer, x, w, b, isa, threads, kc=None, nc=None, mc=None):
    """A callable running conv2d_fused on the layer, its buffers allocated
    once (as the planner keeps workspace between calls), the output per call."""
    dtype = x.dtype
    blk = fused.blocking(dtype, isa)
    kc, nc, mc = kc or blk["KC"], nc or blk["NC"], mc or blk["MC"]
    K, groups = layer["K"], layer["groups"]
    rows = layer["C"] // groups * layer["R"] * layer["S"]
    n_packed, per_thread = fused.buffer_sizes(K, rows, groups, kc, nc, dtype, isa)
    packed = np.empty(n_packed, dtype)
    workspace = np.empty((threads, per_thread), dtype)
    w2 = np.ascontiguousarray(w.reshape(K, rows))
    ho, wo = output_hw(layer)
    p, s, d = layer["padding"], layer["stride"], layer["dilation"]
    shape = (layer["N"], K, ho * wo)

    def run():
        out = np.empty(shape, dtype)
        fused.conv2d_fused(x, w2, b, out, packed, workspace, layer["R"], layer["S"], wo,
                           s, s, p, p, d, d, groups, False, kc, nc, mc, isa, threads)
        return out
    return run


def gemm_case(dtype, threads, n=2048):
    from scipy.linalg import blas
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n)).astype(dtype))
    c = np.asfortranarray(np.random.default_rng(1).standard_normal((n, n)).astype(dtype))
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits
    except ImportError:
        limits = None

    def run():
        if limits is None:
            return gemm(1.0, a, c)
        with limits(threads, "blas"):
            return gemm(1.0, a, c)
    return run, 2.0 * n ** 3


def peer_cases(layer, x, w, b, threads):
    cases = {}
    p, s, d, g = layer["padding"], layer["stride"], layer["dilation"], layer["groups"]
    try:
        import fastconv
        fastconv.conv2d(x[:1], w, b, stride=s, padding=p, dilation=d, groups=g,
                        method="mapped", num_threads=threads)
        cases["mapped"] = lambda: fastconv.conv2d(x, w, b, stride=s, padding=p, dilation=d,
                                                  groups=g, method="mapped",
                                                  num_threads=threads)
    except Exception as exc:  # the front end may be mid-change in a working tree
        print(f"  (mapped left out: {type(exc).__name__}: {exc})", file=sys.stderr)
    try:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(threads)
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

        def run_torch():
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d, groups=g)
        cases["torch"] = run_torch
    except ImportError:
        pass
    return cases


def best_times(cases, rounds, cooldown, clock=time.perf_counter):
    """Best wall time of each case over `rounds` alternating rounds, after
    two warm-up calls each (a short case is repeated within its round so
    that each timing lasts at least ~20 ms). Each timing follows `cooldown`
    seconds of rest and one untimed call: OpenBLAS's and other OpenMP
    runtimes' threads keep spinning on the cores for a while after a call,
    and without the rest the case after the GEMM or torch ran up to 1.5x
    slower (fused on resnet50_2a_3x3: 146 GFLOP/s in the round-robin, 192
    alone)."""
    repeat = {}
    for name, fn in cases.items():
        fn()
        start = clock()
        fn()
        repeat[name] = max(1, int(0.02 / max(clock() - start, 1e-6)))
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            time.sleep(cooldown)
            fn()
            start = clock()
            for _ in range(repeat[name]):
                fn()
            best[name] = min(best[name], (clock() - start) / repeat[name])
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers")
    ap.add_argument("--names", help="comma-separated layer names (default: the 3x3 targets)")
    ap.add_argument("--all", action="store_true", help="every layer of the file")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "both"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--isa", help="comma-separated ISAs (default: every supported one)")
    ap.add_argument("--kc", type=int)
    ap.add_argument("--nc", type=int)
    ap.add_argument("--mc", type=int)
    ap.add_argument("--cooldown", type=float, default=0.3,
                    help="seconds of rest before each timing (default 0.3)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time (the default); cpu: the process's CPU time "
                         "divided by --threads, for a machine shared with other work (it "
                         "charges threads that spin while waiting, not those descheduled)")
    ap.add_argument("--no-peers", action="store_true", help="fused (and the GEMM) only")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)

    from fastconv._kernels import fused
    np.empty(64 << 20, np.uint8).fill(1)  # raise glibc's mmap threshold (see the docstring)

    layers = json.loads(layers_path(args.layers).read_text())["layers"]
    if not args.all:
        names = args.names.split(",") if args.names else DEFAULT_NAMES
        layers = [layer for layer in layers if layer["name"] in names]
    isas = args.isa.split(",") if args.isa else list(fused.supported_isas())
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    results = []
    for dtype_name in dtypes:
        dtype = np.dtype(dtype_name)
        gemm, gemm_flops = gemm_case(dtype, args.threads)
        blk = {isa: fused.blocking(dtype, isa) for isa in isas}
        print(f"\n{dtype_name}, {args.threads} threads, {args.clock} clock; blocking " + "; ".join(
            f"{isa}: MR={b['MR']} NR={b['NR']} KC={args.kc or b['KC']} NC={args.nc or b['NC']} "
            f"MC={args.mc or b['MC']}" for isa, b in blk.items()))
        peers = [] if args.no_peers else ["mapped", "torch"]
        head = f"{'layer':18s}" + "".join(f"{'fused-' + isa:>14s}" for isa in isas) + \
            "".join(f"{p:>9s}" for p in peers) + f"{'GEMM':>8s}" + \
            f"{'/GEMM':>8s}" + "".join(f"{'/' + p:>9s}" for p in peers)
        print(head + "   (GFLOP/s; ratios of the best fused)")
        for layer in layers:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((layer["N"], layer["C"], layer["H"], layer["W"])).astype(dtype)
            w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"], layer["R"],
                                     layer["S"])).astype(dtype)
            b = rng.standard_normal(layer["K"]).astype(dtype)
            cases = {f"fused-{isa}": fused_case(fused, layer, x, w, b, isa, args.threads,
                                                args.kc, args.nc, args.mc) for isa in isas}
            if not args.no_peers:
                cases.update(peer_cases(layer, x, w, b, args.threads))
            cases["GEMM"] = gemm
            clock = time.perf_counter if args.clock == "wall" else time.process_time
            t = best_times(cases, args.rounds, args.cooldown, clock)
            if args.clock == "cpu":
                t = {name: v / args.threads for name, v in t.items()}
            rate = {name: (gemm_flops if name == "GEMM" else flops(layer)) / t[name] / 1e9
                    for name in t}
            best_fused = max(rate[f"fused-{isa}"] for isa in isas)
            line = f"{layer['name']:18s}" + "".join(f"{rate[f'fused-{isa}']:14.1f}" for isa in isas)
            line += "".join(f"{rate.get(p, float('nan')):9.1f}" for p in peers)
            line += f"{rate['GEMM']:8.1f}{best_fused / rate['GEMM']:8.2f}"
            line += "".join(f"{best_fused / rate.get(p, float('nan')):9.2f}" for p in peers)
            print(line, flush=True)
            results.append(dict(layer=layer["name"], dtype=dtype_name, threads=args.threads,
                                gflops=rate))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
