"""Running a plan: check the operands against it, bring them into the form
the kernels take, allocate the result and the lowering's buffers for the
threads granted now, and call the lowering's kernel.

The same steps for every lowering and kind; what differs per lowering is in
its table entry (``_lowerings``): its buffers and its kernel call.
"""
from types import SimpleNamespace

import numpy as np

from fastconv import _lowerings, _runtime
from fastconv._params import as_array, check_bias, kernel_input, resolve_dtypes

__all__ = ["execute"]

# the operands of each kind, in ConvPlan.execute's order (None: optional)
OPERANDS = {
    "forward": ("x", "weight", "bias"),
    "input_grad": ("weight", "grad_output"),
    "weight_grad": ("x", "grad_output"),
}


def _operands(plan, given):
    names = OPERANDS[plan.kind]
    required = [n for n in names if n != "bias"]
    if not len(required) <= len(given) <= len(names):
        raise TypeError(f"a {plan.kind} plan executes on ({', '.join(names)}), "
                        f"got {len(given)} operand(s)")
    arrays = {name: None if value is None and name == "bias" else as_array(value, name)
              for name, value in zip(names, given)}
    expected = {"x": plan.input_shape, "weight": plan.weight_shape,
                "grad_output": plan.geometry.output_shape}
    for name, array in arrays.items():
        if name in expected and array.shape != expected[name]:
            raise ValueError(f"{name} has shape {array.shape}, but the plan is for "
                             f"{expected[name]}")
    resolve_dtypes(**arrays)  # rejects complex, object, strings...
    if arrays.get("bias") is not None:
        check_bias(arrays["bias"], plan.geometry.K, f"filter of weight {plan.weight_shape}")
    return arrays


def _as_2d(g, array):
    """A 1-D convolution's (N, C, L) array as the (N, C, 1, L) the kernels take."""
    return array[:, :, None, :] if g.spatial_dims == 1 else array


def _filters(plan, weight):
    """The weight as the kernels take it: (K, C/groups*R*S), C-contiguous in
    the plan's dtype (a view when it already is)."""
    g = plan.geometry
    return np.ascontiguousarray(weight, dtype=plan.dtype).reshape(g.K, g.rows)


def _gradient(plan, grad_output):
    g = plan.geometry
    return np.ascontiguousarray(grad_output, dtype=plan.dtype).reshape(g.N, g.K, g.cols)


def execute(plan, given):
    """The result of plan on the operands `given` (see ConvPlan.execute)."""
    arrays = _operands(plan, given)
    g, dtype, lowering = plan.geometry, plan.dtype, plan.lowering
    ops = SimpleNamespace(x=None, filters=None, bias=None, grad=None, out=None)
    if plan.kind == "forward":
        ops.out = np.empty((g.N, g.K, g.cols), dtype=dtype)
        bias = arrays.get("bias")
        ops.bias = (np.zeros(0, dtype) if bias is None
                    else np.ascontiguousarray(bias, dtype=dtype).reshape(g.K))
        x = _as_2d(g, arrays["x"])
        if ops.out.size and (x.size == 0 or g.rows == 0):
            # nothing to sum over (empty channels or an input made only of padding)
            ops.out[...] = 0 if bias is None else ops.bias[:, None]
        runs = ops.out.size and x.size and g.rows
        if runs:
            ops.x = lowering.prepare_input(g, kernel_input(x, dtype))
            ops.filters = _filters(plan, arrays["weight"])
    elif plan.kind == "input_grad":
        runs = g.N * g.C * g.H * g.W and g.rows and g.K and g.cols
        # the kernel writes every element (each work item clears its slice)
        ops.out = (np.empty if runs else np.zeros)((g.N, g.C, g.H, g.W), dtype=dtype)
        if runs:
            ops.grad = _gradient(plan, arrays["grad_output"])
            ops.filters = _filters(plan, arrays["weight"])
    else:
        ops.out = np.zeros((g.K, g.rows), dtype=dtype)
        x = _as_2d(g, arrays["x"])
        runs = ops.out.size and g.N and g.cols and x.size
        if runs:
            ops.grad = _gradient(plan, arrays["grad_output"])
            ops.x = lowering.prepare_input(g, kernel_input(x, dtype))
    if runs:
        with _runtime.budget.lend(plan.kernel_threads, plan.blas_threads) as (threads, _):
            # buffers for the threads granted now (never more than planned)
            buffers = _lowerings.allocate(lowering.buffers(g, dtype, plan.blocking, threads))
            _runtime.run_kernel(lambda: lowering.run(plan, ops, buffers, threads), threads)
    return ops.out.reshape(plan.output_shape)
