"""The two gradients, each lowering, fp32 and fp64, and PyTorch's
(torch.nn.grad) where installed, grouped with the forward pass of the same
layer (bench/test_forward.py) so that one table compares them.

    pytest bench/test_backward.py bench/test_forward.py --benchmark-group-by=param:layer
"""
import pytest

from fastconv._benchcases import LOWERINGS
from test_forward import run_case


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(LOWERINGS) + ["torch"])
@pytest.mark.parametrize("kind", ["input_grad", "weight_grad"])
def test_conv2d_gradient(benchmark, layer, kind, case, dtype, threads):
    run_case(benchmark, layer, kind, case, dtype, threads)
