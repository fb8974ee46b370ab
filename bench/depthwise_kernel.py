"""The direct depthwise kernels (fastconv._kernels.depthwise) side by side with
fastconv's mapped lowering (one M=1 GEMM per channel) and PyTorch, forward and
both gradients, in one process.

    python bench/depthwise_kernel.py [--rounds 7] [--threads 2] [--dtypes float32,float64]
                                     [--names mobilenet_dw_3x3,...] [--isa avx2]

Method: a 64 MiB array is allocated and freed first (raises glibc's mmap
threshold, so that the peers' fresh output pages are not page-faulted on every
call); the direct kernels write into outputs allocated once; every case is
warmed up on the full batch; then rounds alternate all cases (drift of a shared
machine hits them alike) and the best of the rounds is kept.
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv._kernels import depthwise as dw
from fastconv._params import conv_geometry

try:
    import torch
except ImportError:  # the table then has no PyTorch column
    torch = None

# name: N, C, H, W, R, S, stride, padding, multiplier
LAYERS = {
    "mobilenet_dw_3x3": (8, 144, 56, 56, 3, 3, 1, 1, 1),
    "dw_112x112_c32": (8, 32, 112, 112, 3, 3, 1, 1, 1),
    "dw_14x14_c512": (8, 512, 14, 14, 3, 3, 1, 1, 1),
    "dw_28x28_s2": (8, 192, 28, 28, 3, 3, 2, 1, 1),
    "dw_28x28_5x5": (8, 240, 28, 28, 5, 5, 1, 2, 1),
    "dw_56x56_mult2": (8, 72, 56, 56, 3, 3, 1, 1, 2),
}


def build(name, dtype, threads):
    """pass -> {impl: callable} for one layer."""
    N, C, H, W, R, S, stride, pad, mult = LAYERS[name]
    K = C * mult
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, 1, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    conv = dict(stride=stride, padding=pad, groups=C)
    geometry = conv_geometry(x.shape, w.shape, dilation=1, **conv)
    args = geometry.kernel_args
    Ho, Wo = geometry.Ho, geometry.Wo
    g = rng.standard_normal((N, K, Ho, Wo)).astype(dtype)
    g3 = g.reshape(N, K, Ho * Wo)
    w2 = w.reshape(K, R * S)
    out = np.empty((N, K, Ho * Wo), dtype)
    grad_x = np.empty_like(x)
    grad_w = np.empty((K, R * S), dtype)
    mapped = dict(conv, method="mapped", num_threads=threads)
    runs = {
        "forward": {
            "direct": lambda: dw.conv2d_depthwise(x, w2, b, out, *args, False, threads),
            "mapped": lambda: fastconv.conv2d(x, w, b, **mapped),
        },
        "input_grad": {
            "direct": lambda: dw.conv2d_depthwise_input_grad(g3, w2, grad_x, *args, False,
                                                             threads),
            "mapped": lambda: fastconv.conv2d_input_grad(x.shape, w, g, **mapped),
        },
        "weight_grad": {
            "direct": lambda: dw.conv2d_depthwise_weight_grad(x, g3, grad_w, *args, False,
                                                              threads),
            "mapped": lambda: fastconv.conv2d_weight_grad(x, w.shape, g, **mapped),
        },
    }
    if torch is not None:
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        F = torch.nn.functional
        runs["forward"]["torch"] = lambda: F.conv2d(tx, tw, tb, **conv)
        runs["input_grad"]["torch"] = lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, **conv)
        runs["weight_grad"]["torch"] = lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, **conv)
    # the direct kernels agree with the mapped lowering before anything is timed
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    checks = [("forward", out, runs["forward"]["mapped"]),
              ("input_grad", grad_x, runs["input_grad"]["mapped"]),
              ("weight_grad", grad_w, runs["weight_grad"]["mapped"])]
    for pass_, result, reference in checks:
        runs[pass_]["direct"]()
        expected = reference()
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.allclose(result.reshape(expected.shape) / scale, expected / scale, **tol), \
            (name, pass_)
    return runs


def measure(cases, rounds):
    """Alternate all cases, `rounds` times; best time of each (seconds)."""
    for fn in cases.values():
        fn()
    best = {key: float("inf") for key in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--names", default=",".join(LAYERS))
    parser.add_argument("--isa", default=None, help="force avx512 | avx2 | generic")
    opts = parser.parse_args()
    if opts.rounds < 1:
        parser.error("--rounds must be >= 1")

    # raise glibc's mmap threshold (see the module docstring)
    scratch = np.ones(64 << 20, np.uint8)
    del scratch
    if torch is not None:
        torch.set_num_threads(opts.threads)
    if opts.isa:
        dw.set_isa(opts.isa)
    print(f"direct kernels: {dw.get_isa()}; {opts.threads} threads; best of {opts.rounds} "
          f"rounds; PyTorch {torch.__version__ if torch else 'not installed'}")
    header = (f"{'layer':<18} {'dtype':<8} {'pass':<12} {'direct ms':>10} {'mapped ms':>10} "
              f"{'torch ms':>9} {'direct/torch':>13} {'direct/mapped':>14}")
    print(header)
    print("-" * len(header))
    for dtype_name in opts.dtypes.split(","):
        dtype = np.dtype(dtype_name).type
        for name in opts.names.split(","):
            runs = build(name, dtype, opts.threads)
            cases = {(p, impl): fn for p, impls in runs.items() for impl, fn in impls.items()}
            best = measure(cases, opts.rounds)
            for pass_ in runs:
                ms = {impl: best[(pass_, impl)] * 1e3 for impl in runs[pass_]}
                torch_ms = ms.get("torch", float("nan"))
                print(f"{name:<18} {dtype_name:<8} {pass_:<12} {ms['direct']:>10.2f} "
                      f"{ms['mapped']:>10.2f} {torch_ms:>9.2f} "
                      f"{ms['direct'] / torch_ms:>13.2f} {ms['direct'] / ms['mapped']:>14.2f}")


if __name__ == "__main__":
    main()
