"""The two gradients, each lowering, fp32 and fp64, grouped with the forward
pass of the same layer (bench/test_forward.py) so that one table compares them.

    pytest bench/test_backward.py bench/test_forward.py --benchmark-group-by=param:layer
"""
import numpy as np
import pytest

import fastconv
from _layers import conv_kwargs, layer_arrays
from test_forward import CASES, _finish, _record


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["input_grad", "weight_grad"])
def test_conv2d_gradient(benchmark, layer, kind, case, dtype, threads):
    method, limit = CASES[case]
    x, w = layer_arrays(layer, dtype)
    conv = dict(conv_kwargs(layer), method=method, memory_limit=limit, num_threads=threads)
    try:
        plan = fastconv.plan_conv2d(x.shape, w.shape, dtype, kind=kind, **conv)
    except fastconv.WorkspaceLimitError as exc:
        pytest.skip(str(exc))
    grad = np.random.default_rng(2).standard_normal(plan.output_shape).astype(dtype)
    if kind == "input_grad":
        def run():
            return fastconv.conv2d_input_grad(x.shape, w, grad, **conv)
    else:
        def run():
            return fastconv.conv2d_weight_grad(x, w.shape, grad, **conv)
    _record(benchmark, layer, plan, f"{kind}:{case}")
    benchmark.extra_info["kind"] = kind
    run()  # warm-up
    benchmark(run)
    _finish(benchmark, plan.flops)
