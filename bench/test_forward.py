"""Forward convolution: each lowering, fp32 and fp64, against the GEMM of the
same shape (the ceiling of any GEMM lowering).

    pytest bench/ --benchmark-group-by=param:layer,param:dtype
    pytest bench/ -k "resnet50 and float32" --threads 1     # one thread

extra_info of every benchmark: method, workspace bytes, GFLOP/s, threads.
"""
import pytest

import fastconv
from _layers import conv_kwargs, layer_arrays, same_shape_gemm

CASES = {
    # name: (method, memory_limit)
    "stretch": ("stretch", "64GiB"),
    "mapped": ("mapped", None),
    "mapped_4MiB": ("mapped", "4MiB"),
    "auto": ("auto", None),
}


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
    x, w = layer_arrays(layer, dtype)
    try:
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, method=method, memory_limit=limit,
                                    num_threads=threads, **conv_kwargs(layer))
    except fastconv.WorkspaceLimitError as exc:
        pytest.skip(str(exc))
    _record(benchmark, layer, plan, case)
    plan.execute(x, w)  # warm-up
    benchmark(plan.execute, x, w)
    _finish(benchmark, plan.flops)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_same_shape(benchmark, layer, dtype, threads):
    """The ceiling: the same GEMMs on an already stretched, cache-hot operand
    (see _layers.same_shape_gemm). A lowering's time over this is its cost."""
    plan, run = same_shape_gemm(layer, dtype, threads)
    _record(benchmark, layer, plan, "gemm")
    run()
    benchmark(run)
    _finish(benchmark, plan.flops)
