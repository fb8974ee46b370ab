"""Benchmark cases, shared by the pytest-benchmark suites (bench/) and the
report (fastconv.report): layers, their arrays, and one callable per case.

A case is (layer, dtype, kind, name). ``kind`` is "forward", "input_grad" or
"weight_grad"; ``name`` is a fastconv lowering (see LOWERINGS) or a peer:

* "torch": PyTorch's CPU convolution (``torch.nn.functional.conv2d`` and
  ``torch.nn.grad``), the library users would otherwise pick;
* "numpy": what a user writes by hand: ``sliding_window_view`` and
  ``tensordot`` (forward only);
* "gemm": the GEMMs of the same shape on an already stretched, cache-hot
  operand, through fastconv's 1x1 kernel: the ceiling of a GEMM lowering;
* "scipy" (the report only, see REPORT_PEERS; forward only): SciPy's 2-D
  correlation as a NumPy user writes it, one call per (image, filter, input
  channel) on the zero-padded input, summed over channels (see
  ``scipy_conv2d``); far slower than the others, so the report runs it only
  where ``scipy_estimate`` says it finishes in time.
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
# the report's peers: PEERS and SciPy (not in PEERS: the benchmark suites run
# every peer on every layer, and SciPy takes minutes on the large ones)
REPORT_PEERS = PEERS + ("scipy",)
# SciPy's two per-channel formulations: correlate2d (direct, compiled 2-D
# loop) and correlate (method="auto": FFT or direct, by SciPy's estimate)
SCIPY_FORMULATIONS = ("correlate2d", "correlate")
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
    # forced: auto may take fastconv's own GEMM (fused) for a 1x1 layer,
    # and this case is BLAS's ceiling
    plan = fastconv.plan_conv2d(stretched.shape, filters.shape, dtype, groups=g.groups,
                                num_threads=threads, method="gemm1x1")
    assert plan.flops == g.flops
    return plan, (lambda: plan.execute(stretched, filters))


def peer_available(name, kind="forward"):
    """None if the peer can run this kind, else why not."""
    if name == "torch" and importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    if name == "scipy" and importlib.util.find_spec("scipy") is None:
        return "SciPy is not installed"
    if name in ("numpy", "gemm", "scipy") and kind != "forward":
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


def _dilated(w, dh, dw):
    """A kernel with (d - 1) zeros between its taps: SciPy has no dilation."""
    if dh == dw == 1:
        return w
    K, C, R, S = w.shape
    out = np.zeros((K, C, dh * (R - 1) + 1, dw * (S - 1) + 1), w.dtype)
    out[:, :, ::dh, ::dw] = w
    return out


def scipy_conv2d(x, w, stride, padding, dilation, groups, formulation="correlate2d",
                 images=None, filters=None):
    """Convolution with SciPy as a NumPy user writes it: zero-pad the input
    once, then for each image and filter sum over the filter's input channels
    the 2-D "valid" correlation of the channel plane with the kernel plane
    (``scipy.signal.correlate2d``, or ``scipy.signal.correlate`` which picks
    FFT or direct itself); a stride slices the valid result (computed whole), a
    dilation becomes zeros inserted into the kernel. ``images`` and
    ``filters`` (ranges) compute part of the output (for estimates).
    """
    from scipy import signal
    sh, sw = (stride, stride) if np.ndim(stride) == 0 else stride
    dh, dw = (dilation, dilation) if np.ndim(dilation) == 0 else dilation
    ph, pw = (padding, padding) if np.ndim(padding) == 0 else padding
    correlate = (signal.correlate2d if formulation == "correlate2d" else
                 lambda a, b, mode: signal.correlate(a, b, mode=mode))
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kernel = _dilated(w, dh, dw)
    K, cg = w.shape[:2]
    kg = K // groups
    images = range(x.shape[0]) if images is None else images
    filters = range(K) if filters is None else filters
    Ho = (padded.shape[2] - kernel.shape[2]) // sh + 1
    Wo = (padded.shape[3] - kernel.shape[3]) // sw + 1
    out = np.zeros((len(images), len(filters), Ho, Wo), np.result_type(x, w))
    for i, n in enumerate(images):
        for j, k in enumerate(filters):
            first = (k // kg) * cg
            for c in range(cg):
                out[i, j] += correlate(padded[n, first + c], kernel[k, c], mode="valid")[::sh, ::sw]
    return out


_SCIPY_ESTIMATES = {}


def scipy_estimate(layer, dtype):
    """Which SciPy formulation is faster on this layer and how long a whole
    forward pass would take with it: each formulation times one image and
    one filter (every input channel of the filter), best of two; the pass
    costs N * K of those.

    Returns a dict: formulation, seconds (estimated per pass), unit_seconds,
    gflops (the rate measured on the unit), and the units' times per formulation.
    """
    import time
    key = (tuple(sorted(layer.items())), str(np.dtype(dtype)))
    if key in _SCIPY_ESTIMATES:
        return _SCIPY_ESTIMATES[key]
    x, w = layer_arrays(layer, dtype, batch=1)
    conv = conv_kwargs(layer)
    units = {}
    for formulation in SCIPY_FORMULATIONS:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            scipy_conv2d(x, w, formulation=formulation, images=range(1), filters=range(1), **conv)
            best = min(best, time.perf_counter() - start)
        units[formulation] = best
    formulation = min(units, key=units.get)
    unit = units[formulation]
    passes = layer["N"] * layer["K"]
    _SCIPY_ESTIMATES[key] = dict(formulation=formulation, unit_seconds=unit,
                                 seconds=unit * passes, units=units,
                                 gflops=flops(layer) / passes / unit / 1e9)
    return _SCIPY_ESTIMATES[key]


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
    if name == "scipy":
        formulation = scipy_estimate(layer, dtype)["formulation"]

        def run():  # single-threaded: SciPy's correlations use one core
            return scipy_conv2d(x, w, formulation=formulation, **conv)
        run.operands, run.formulation = (x, w), formulation
        return None, run
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
