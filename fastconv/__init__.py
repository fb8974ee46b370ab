"""fastconv: deep-learning convolutions on the CPU as GEMM.

Two lowerings, explicit stretching (im2col then GEMM) and index-mapped im2col
(tiles gathered through an index map), Cython kernels over SciPy's BLAS, OpenMP
across the batch, and a planner that keeps the workspace under a memory limit.
"""
from fastconv._config import config_context, get_config, set_config
from fastconv._info import show_config
from fastconv._plan import ConvPlan, WorkspaceLimitError, plan_conv2d
from fastconv.conv import (conv1d, conv1d_input_grad, conv1d_weight_grad, conv2d,
                           conv2d_input_grad, conv2d_weight_grad, conv_transpose1d,
                           conv_transpose2d)
from fastconv.equivalence import col2im, conv_matrix, im2col
from fastconv._workspace import release_workspace

__version__ = "0.1.0"

__all__ = [
    "ConvPlan", "WorkspaceLimitError", "col2im", "config_context", "conv1d",
    "conv1d_input_grad", "conv1d_weight_grad", "conv2d", "conv2d_input_grad",
    "conv2d_weight_grad", "conv_matrix", "conv_transpose1d", "conv_transpose2d", "get_config",
    "im2col", "plan_conv2d", "release_workspace", "set_config", "show_config",
]
