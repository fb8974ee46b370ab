"""Running a plan: check the operands against it, bring them into the form
the kernels take, allocate the result and the lowering's buffers for the
threads granted now, and call the lowering's kernel.

The same steps for every lowering and kind; what differs per lowering is in
its table entry (``_lowerings``): its buffers and its kernel call.
"""
from types import SimpleNamespace

import numpy as np

from fastconv import _config, _runtime, _workspace
from fastconv._params import as_array, check_bias, kernel_input, resolve_dtypes

__all__ = ["execute"]

# the operands of each kind, in ConvPlan.execute's order (None: optional)
OPERANDS = {
    "forward": ("x", "weight", "bias"),
    "input_grad": ("weight", "grad_output"),
    "weight_grad": ("x", "grad_output"),
}


def _expected_shape(plan, name):
    if name == "x":
        return plan.input_shape
    if name == "weight":
        return plan.weight_shape
    return plan.geometry.output_shape if name == "grad_output" else None


def _operands(plan, given, checked=False):
    """{name: array} of the operands given; checked: the front end
    (``fastconv.conv``) already made them arrays of the planned shapes in
    dtypes fastconv computes with, so only the bias is left to check."""
    names = OPERANDS[plan.kind]
    if checked:
        arrays = dict(zip(names, given))
        if arrays.get("bias") is not None:
            check_bias(arrays["bias"], plan.geometry.K, f"filter of weight {plan.weight_shape}")
        return arrays
    required = len(names) - ("bias" in names)   # the bias may be left out
    if not required <= len(given) <= len(names):
        raise TypeError(f"a {plan.kind} plan executes on ({', '.join(names)}), "
                        f"got {len(given)} operand(s)")
    arrays = {}
    for name, value in zip(names, given):
        if value is None and name == "bias":
            arrays[name] = None
            continue
        array = arrays[name] = as_array(value, name)
        expected = _expected_shape(plan, name)
        if expected is not None and array.shape != expected:
            raise ValueError(f"{name} has shape {array.shape}, but the plan is for "
                             f"{expected}")
    resolve_dtypes(**arrays)  # rejects complex, object, strings...
    if arrays.get("bias") is not None:
        check_bias(arrays["bias"], plan.geometry.K, f"filter of weight {plan.weight_shape}")
    return arrays


# what the kernels take for "no bias": one read-only empty array per dtype
_NO_BIAS = {np.dtype(t): np.zeros(0, t) for t in (np.float32, np.float64)}
for _empty in _NO_BIAS.values():
    _empty.flags.writeable = False


def _as_2d(g, array):
    """A 1-D convolution's (N, C, L) array as the (N, C, 1, L) the kernels take."""
    return array[:, :, None, :] if g.spatial_dims == 1 else array


def _filters(plan, weight):
    """The weight as the kernels take it: (K, C/groups*R*S), C-contiguous in
    the plan's dtype (a view when it already is)."""
    g = plan.geometry
    if weight.dtype is plan.dtype and weight.flags.c_contiguous:
        return weight.reshape(g.K, g.rows)   # (0.5 us less than ascontiguousarray)
    return np.ascontiguousarray(weight, dtype=plan.dtype).reshape(g.K, g.rows)


def _gradient(plan, grad_output):
    g = plan.geometry
    return np.ascontiguousarray(grad_output, dtype=plan.dtype).reshape(g.N, g.K, g.cols)


def check_out(out, shape, dtype):
    """Refuse an `out` that cannot receive a result of `shape` and `dtype`,
    before anything is written: not an ndarray, another shape, read-only, or
    a dtype the result cannot be cast to safely."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, but the result has shape {tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError(f"out (shape {out.shape}) is read-only")
    if not np.can_cast(dtype, out.dtype, casting="safe"):
        raise TypeError(f"out has dtype {out.dtype}, which the result's {np.dtype(dtype)} "
                        "cannot be cast to safely")


def writable_in_place(out, dtype, operands):
    """Whether kernels can write straight into `out`: C-contiguous, aligned,
    the compute dtype in native order, and sharing no memory with an operand
    (an overlapping out gets the result through a temporary instead)."""
    return (out.dtype == dtype and out.dtype.isnative and out.flags.c_contiguous
            and out.flags.aligned
            and not any(a is not None and np.shares_memory(out, a) for a in operands))


def execute(plan, given, out=None, out_checked=False, operands_checked=False):
    """The result of plan on the operands `given` (see ConvPlan.execute),
    written into `out` if given (then returned). out_checked: the caller
    already ran check_out for the plan's output shape and dtype;
    operands_checked: and made the operands arrays of the planned shapes
    (see _operands)."""
    arrays = _operands(plan, given, operands_checked)
    g, dtype, lowering = plan.geometry, plan.dtype, plan.lowering
    if out is not None:
        if not out_checked:
            check_out(out, plan.output_shape, dtype)
        direct = writable_in_place(out, dtype, arrays.values())
    ops = SimpleNamespace(x=None, filters=None, bias=None, grad=None, out=None)
    if plan.kind == "forward":
        shape = (g.N, g.K, g.cols)
    else:
        shape = (g.N, g.C, g.H, g.W) if plan.kind == "input_grad" else (g.K, g.rows)
    ops.out = out.reshape(shape) if out is not None and direct else np.empty(shape, dtype)
    if plan.kind == "forward":
        bias = arrays.get("bias")
        ops.bias = (_NO_BIAS[dtype] if bias is None
                    else np.ascontiguousarray(bias, dtype=dtype).reshape(g.K))
        x = _as_2d(g, arrays["x"])
        runs = ops.out.size and x.size and g.rows
        if ops.out.size and not runs:
            # nothing to sum over (empty channels or an input made only of padding)
            ops.out[...] = 0 if bias is None else ops.bias[:, None]
        if runs:
            ops.x = lowering.prepare_input(g, kernel_input(x, dtype))
            ops.filters = _filters(plan, arrays["weight"])
    elif plan.kind == "input_grad":
        # the kernel writes every element (each work item clears its slice)
        runs = g.N * g.C * g.H * g.W and g.rows and g.K and g.cols
        if not runs:
            ops.out[...] = 0
        else:
            ops.grad = _gradient(plan, arrays["grad_output"])
            ops.filters = _filters(plan, arrays["weight"])
    else:
        x = _as_2d(g, arrays["x"])
        runs = ops.out.size and g.N and g.cols and x.size
        if not runs or not lowering.writes_whole_weight_grad:
            ops.out[...] = 0   # nothing to sum, or the kernel adds into it
        if runs:
            ops.grad = _gradient(plan, arrays["grad_output"])
            ops.x = lowering.prepare_input(g, kernel_input(x, dtype))
    if runs:
        with _runtime.budget.lend(plan.kernel_threads, plan.blas_threads,
                                  lowering.uses_blas) as (threads, _):
            # buffers for the threads granted now (never more than planned)
            specs = plan.buffer_specs(threads)
            with _workspace.lend_buffers(specs, plan.memory_limit,
                                         _config.setting("keep_workspace")) as buffers:
                _runtime.run_kernel(lambda: lowering.run(plan, ops, buffers, threads), threads)
    result = ops.out.reshape(plan.output_shape)
    if out is None or direct:
        return out if out is not None else result
    np.copyto(out, result, casting="safe")
    return out
