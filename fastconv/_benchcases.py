"""Benchmark cases, shared by the pytest-benchmark suites (bench/) and the
report (fastconv.report): layers, their arrays, and one callable per case.

A case is (layer, dtype, kind, name). ``kind`` is "forward", "input_grad" or
"weight_grad"; ``name`` is a fastconv lowering (see LOWERINGS) or a peer:

* "torch": PyTorch's CPU convolution (``torch.nn.functional.conv2d`` and
  ``torch.nn.grad``), the library users would otherwise pick;
* "numpy": what a user writes by hand: ``sliding_window_view`` and
  ``tensordot`` (forward only);
* "gemm": the GEMMs of the same shape on an already stretched, cache-hot
  operand, through fastconv's 1x1 kernel: the ceiling of a GEMM lowering.
"""
import importlib.util
import json
import os
import pathlib

import numpy as np

import fastconv
from fastconv._lowerings import general_methods

KINDS = ("forward", "input_grad", "weight_grad")
# name -> (method, memory limit): every general lowering of the table with
# room to plan as it likes, "mapped_tight" with an eighth of stretch's
# workspace, and the planner's own choice under the default limit
LOWERINGS = {**{method: (method, "64GiB") for method in general_methods()},
             "mapped_tight": ("mapped", "tight"), "auto": ("auto", None)}
PEERS = ("torch", "numpy", "gemm")
TIGHT_FRACTION = 8

_LAYER_FIELDS = ("name", "N", "C", "H", "W", "K", "R", "S", "stride", "padding", "dilation",
                 "groups")
PACKAGED_LAYERS = pathlib.Path(__file__).resolve().parent / "benchmark_layers.json"


def default_layers_path():
    """$FASTCONV_LAYERS, else ../shared/layers.json next to the working
    directory or to a source checkout of fastconv, else the copy shipped in
    the package (the same layers)."""
    if os.environ.get("FASTCONV_LAYERS"):
        return pathlib.Path(os.environ["FASTCONV_LAYERS"])
    for root in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent.parent):
        candidate = root.parent / "shared" / "layers.json"
        if candidate.is_file():
            return candidate
    return PACKAGED_LAYERS


def load_layers(path=None, names=None):
    """The layers of a layers JSON file ({"layers": [{name, N, C, H, W, K, R, S,
    stride, padding, dilation, groups}, ...]}), optionally only those named.

    Raises FileNotFoundError or ValueError naming the file and the problem.
    """
    path = pathlib.Path(path) if path is not None else default_layers_path()
    if not path.is_file():
        raise FileNotFoundError(f"layers file {str(path)!r} does not exist")
    try:
        layers = json.loads(path.read_text())["layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"layers file {str(path)!r} is not a JSON object with a 'layers' list: "
                         f"{exc}") from None
    for i, layer in enumerate(layers):
        missing = [f for f in _LAYER_FIELDS if f not in layer]
        if missing:
            raise ValueError(f"layers file {str(path)!r}: layer {i} lacks {missing}")
        bad = [f for f in _LAYER_FIELDS[1:] if not isinstance(layer[f], int) or layer[f] < 0]
        if bad:
            raise ValueError(f"layers file {str(path)!r}: layer {layer['name']!r} has "
                             f"non-integer or negative {bad}")
    if names:
        wanted = names.split(",") if isinstance(names, str) else list(names)
        unknown = sorted(set(wanted) - {layer["name"] for layer in layers})
        if unknown:
            raise ValueError(f"layers {unknown} are not in {str(path)!r}")
        layers = [layer for layer in layers if layer["name"] in wanted]
    return layers


def conv_kwargs(layer):
    return dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                groups=layer["groups"])


def shapes(layer, batch=None):
    """(x shape, weight shape) of a layer, optionally with another batch size."""
    x = (layer["N"] if batch is None else batch, layer["C"], layer["H"], layer["W"])
    return x, (layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"])


def flops(layer):
    """FLOPs of one pass (forward or either gradient) over the layer."""
    return fastconv.plan_conv2d(*shapes(layer), **conv_kwargs(layer)).flops


def layer_arrays(layer, dtype, seed=0, batch=None):
    """Random x and weight of a layer (standard normal, drawn in float32)."""
    rng = np.random.default_rng(seed)
    x_shape, w_shape = shapes(layer, batch)
    x = rng.standard_normal(x_shape, dtype=np.float32).astype(dtype)
    w = rng.standard_normal(w_shape, dtype=np.float32).astype(dtype)
    return x, w


def plan_for(layer, dtype, kind, name, threads=None, batch=None, limit=None):
    """The fastconv plan of a lowering case (limit overrides the case's own)."""
    method, case_limit = LOWERINGS[name]
    x_shape, w_shape = shapes(layer, batch)
    conv = conv_kwargs(layer)
    if limit is None and case_limit == "tight":
        stretch = fastconv.plan_conv2d(x_shape, w_shape, dtype, method="stretch",
                                       memory_limit="64GiB", num_threads=threads, kind=kind, **conv)
        limit = stretch.workspace_bytes // TIGHT_FRACTION
    elif limit is None:
        limit = case_limit
    return fastconv.plan_conv2d(x_shape, w_shape, dtype, method=method, memory_limit=limit,
                                num_threads=threads, kind=kind, **conv)


def same_shape_gemm(layer, dtype, threads=None, batch=None):
    """(plan, run) of the GEMMs a lowering of `layer` performs, without the lowering.

    N*groups products of (K/g x C/g*R*S) by (C/g*R*S x Ho*Wo), through the same
    BLAS and threading as the convolution (fastconv's 1x1 kernel), on one
    stretched matrix per group shared by every image (batch stride 0): the
    operand is as hot in cache as a lowering's freshly built buffer can be, so
    this is the ceiling of any GEMM lowering.
    """
    x_shape, w_shape = shapes(layer, batch)
    g = fastconv.plan_conv2d(x_shape, w_shape, dtype, **conv_kwargs(layer)).geometry
    rng = np.random.default_rng(1)
    one = rng.standard_normal((1, g.groups * g.rows, 1, g.cols), dtype=np.float32).astype(dtype)
    stretched = np.broadcast_to(one, (g.N,) + one.shape[1:])
    filters = rng.standard_normal((g.K, g.rows, 1, 1), dtype=np.float32).astype(dtype)
    plan = fastconv.plan_conv2d(stretched.shape, filters.shape, dtype, groups=g.groups,
                                num_threads=threads)
    assert plan.method == "gemm1x1" and plan.flops == g.flops
    return plan, (lambda: plan.execute(stretched, filters))


def peer_available(name, kind="forward"):
    """None if the peer can run this kind, else why not."""
    if name == "torch" and importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    if name in ("numpy", "gemm") and kind != "forward":
        return f"no {name} peer for the {kind.replace('_', ' ')}ient"
    return None


def numpy_conv2d(x, w, stride, padding, dilation, groups):
    """Convolution as a user writes it in NumPy: pad, take every window with
    sliding_window_view, contract channels and kernel taps with tensordot."""
    from numpy.lib.stride_tricks import sliding_window_view
    sh, sw = (stride, stride) if np.ndim(stride) == 0 else stride
    dh, dw = (dilation, dilation) if np.ndim(dilation) == 0 else dilation
    ph, pw = (padding, padding) if np.ndim(padding) == 0 else padding
    K, cg, R, S = w.shape
    kg = K // groups
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(padded, (dh * (R - 1) + 1, dw * (S - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, Ho, Wo, R, S)
    out = np.empty((x.shape[0], K) + windows.shape[2:4], dtype=np.result_type(x, w))
    for g in range(groups):
        part = np.tensordot(windows[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg],
                            axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, K/g)
        out[:, g * kg:(g + 1) * kg] = part.transpose(0, 3, 1, 2)
    return out


def make_case(layer, dtype, kind, name, threads=None, batch=None, limit=None):
    """(plan or None, run) for one case; run() computes it once. Arrays are
    made here, so a caller can time run() alone; only those the case reads."""
    if name == "gemm" and kind == "forward":
        return same_shape_gemm(layer, dtype, threads, batch)
    x, w = layer_arrays(layer, dtype, batch=batch)
    conv = conv_kwargs(layer)
    grad = None
    if kind != "forward":
        out_shape = fastconv.plan_conv2d(x.shape, w.shape, dtype, **conv).output_shape
        grad = np.random.default_rng(2).standard_normal(out_shape, dtype=np.float32).astype(dtype)
    if name in LOWERINGS:
        plan = plan_for(layer, dtype, kind, name, threads, batch, limit)
        keywords = dict(conv, method=plan.method, memory_limit=plan.memory_limit,
                        num_threads=threads)
        run = {"forward": lambda: plan.execute(x, w),
               "input_grad": lambda: fastconv.conv2d_input_grad(x.shape, w, grad, **keywords),
               "weight_grad": lambda: fastconv.conv2d_weight_grad(x, w.shape, grad, **keywords),
               }[kind]
        return plan, run
    why = peer_available(name, kind)
    if why:
        raise RuntimeError(why)
    if name == "numpy":
        from threadpoolctl import threadpool_limits

        def run():
            with threadpool_limits(threads, user_api="blas"):  # NumPy's BLAS, in tensordot
                return numpy_conv2d(x, w, **conv)
        return None, run
    import torch
    if threads:
        torch.set_num_threads(threads)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    if kind == "forward":
        return None, lambda: torch.nn.functional.conv2d(tx, tw, **conv)
    tg = torch.from_numpy(grad)
    if kind == "input_grad":
        return None, lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, **conv)
    return None, lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, **conv)
