"""Forward convolution: each lowering, fp32 and fp64, against the GEMM of the
same shape (the ceiling of any GEMM lowering).

    pytest bench/ --benchmark-group-by=param:layer,param:dtype
    pytest bench/ -k "resnet50 and float32" --threads 1     # one thread

extra_info of every benchmark: method, workspace bytes, GFLOP/s, threads.
"""
import numpy as np
import pytest

import fastconv

CASES = {
    # name: (method, memory_limit)
    "stretch": ("stretch", "64GiB"),
    "mapped": ("mapped", None),
    "mapped_4MiB": ("mapped", "4MiB"),
    "auto": ("auto", None),
}


def _arrays(layer, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((layer["N"], layer["C"], layer["H"], layer["W"]), dtype=np.float32).astype(dtype)
    w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"]),
                            dtype=np.float32).astype(dtype)
    return x, w


def _conv_args(layer):
    return dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                groups=layer["groups"])


def _record(benchmark, layer, plan, name):
    benchmark.group = f"{layer['name']}"
    benchmark.extra_info.update(
        layer=layer["name"], case=name, method=plan.method, workspace_bytes=plan.workspace_bytes,
        tile_cols=plan.tile_cols, num_threads=plan.num_threads, flops=plan.flops,
        dtype=plan.dtype.name)


def _finish(benchmark, flops):
    if benchmark.stats is not None:
        benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_conv2d(benchmark, layer, case, dtype, threads):
    method, limit = CASES[case]
    x, w = _arrays(layer, dtype)
    try:
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                    num_threads=threads, **_conv_args(layer))
    except fastconv.WorkspaceLimitError as exc:
        pytest.skip(str(exc))
    _record(benchmark, layer, plan, case)
    plan.execute(x, w)  # warm-up
    benchmark(plan.execute, x, w)
    _finish(benchmark, plan.flops)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_same_shape(benchmark, layer, dtype, threads):
    """The GEMMs a lowering performs, on an input that already is the
    stretched matrix: N*groups products of (K/g x C/g*R*S) by (C/g*R*S x Ho*Wo),
    same BLAS, same threading. A lowering's time over this is its overhead."""
    probe = fastconv.plan_conv2d((layer["N"], layer["C"], layer["H"], layer["W"]),
                                 (layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"]),
                                 dtype, **_conv_args(layer))
    g = probe.geometry
    rng = np.random.default_rng(1)
    stretched = rng.standard_normal((g.N, g.groups * g.rows, 1, g.cols), dtype=np.float32).astype(dtype)
    filters = rng.standard_normal((g.K, g.rows, 1, 1), dtype=np.float32).astype(dtype)
    plan = fastconv.plan_conv2d(stretched.shape, filters.shape, dtype, groups=g.groups,
                                num_threads=threads)
    assert plan.method == "gemm1x1" and plan.flops == probe.flops
    _record(benchmark, layer, plan, "gemm")
    plan.execute(stretched, filters)
    benchmark(plan.execute, stretched, filters)
    _finish(benchmark, plan.flops)
