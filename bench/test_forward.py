"""Forward convolution: each lowering (stretch, mapped at the default limit and
at an eighth of stretch's workspace, auto), fp32 and fp64, and the peers where
installed: PyTorch, plain NumPy, and the GEMM of the same shape (the ceiling of
any GEMM lowering). Grouped per layer, so --benchmark-compare reads naturally.

    pytest bench/ --benchmark-group-by=param:layer,param:dtype
    pytest bench/ -k "resnet50 and float32" --threads 1     # one thread
    pytest bench/ --layers my_layers.json --layer-names a,b

extra_info of every benchmark: case, kind, method, workspace bytes, GFLOP/s, threads.
"""
import pytest

import fastconv
from fastconv._benchcases import LOWERINGS, PEERS, make_case, peer_available
from fastconv._benchcases import flops as layer_flops


def _record(benchmark, layer, plan, case, kind, flops, dtype):
    benchmark.group = layer["name"]
    benchmark.extra_info.update(layer=layer["name"], case=case, kind=kind, dtype=dtype,
                                flops=flops)
    if plan is not None:
        benchmark.extra_info.update(method=plan.method, workspace_bytes=plan.workspace_bytes,
                                    blocking=repr(plan.blocking), num_threads=plan.num_threads)
    else:
        benchmark.extra_info.update(method=case)


def run_case(benchmark, layer, kind, case, dtype, threads):
    """Benchmark one case; skip (with the reason) what cannot run here."""
    if case in PEERS and peer_available(case, kind):
        pytest.skip(peer_available(case, kind))
    try:
        plan, run = make_case(layer, dtype, kind, case, threads)
    except fastconv.WorkspaceLimitError as exc:
        pytest.skip(str(exc))
    flops = layer_flops(layer)
    _record(benchmark, layer, plan, case, kind, flops, dtype)
    run()  # warm-up
    benchmark(run)
    if benchmark.stats is not None:
        benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(LOWERINGS) + list(PEERS))
def test_conv2d(benchmark, layer, case, dtype, threads):
    run_case(benchmark, layer, "forward", case, dtype, threads)
