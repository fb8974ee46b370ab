"""Shared by the benchmark suites: layers, their arrays, and the GEMM of the same shape."""
import json
import pathlib

import numpy as np

import fastconv

DEFAULT_LAYERS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "layers.json"


def load_layers(path=None, names=None):
    """The layers of a layers JSON file (default ../shared/layers.json), or None if absent."""
    path = pathlib.Path(path or DEFAULT_LAYERS)
    if not path.is_file():
        return None
    layers = json.loads(path.read_text())["layers"]
    if names:
        wanted = set(names.split(",") if isinstance(names, str) else names)
        layers = [layer for layer in layers if layer["name"] in wanted]
    return layers


def conv_kwargs(layer):
    return dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                groups=layer["groups"])


def layer_arrays(layer, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((layer["N"], layer["C"], layer["H"], layer["W"]), dtype=np.float32)
    w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"]),
                            dtype=np.float32)
    return x.astype(dtype), w.astype(dtype)


def same_shape_gemm(layer, dtype, threads=None):
    """(plan, run) of the GEMMs a lowering of `layer` performs, without the lowering.

    N*groups products of (K/g x C/g*R*S) by (C/g*R*S x Ho*Wo), through the same
    BLAS and threading as the convolution (fastconv's 1x1 kernel), on one
    stretched matrix per group shared by every image (batch stride 0): the
    operand is as hot in cache as a lowering's freshly built buffer can be, so
    this is the ceiling of any GEMM lowering.
    """
    x_shape = (layer["N"], layer["C"], layer["H"], layer["W"])
    w_shape = (layer["K"], layer["C"] // layer["groups"], layer["R"], layer["S"])
    g = fastconv.plan_conv2d(x_shape, w_shape, dtype, **conv_kwargs(layer)).geometry
    rng = np.random.default_rng(1)
    one = rng.standard_normal((1, g.groups * g.rows, 1, g.cols), dtype=np.float32).astype(dtype)
    stretched = np.broadcast_to(one, (g.N,) + one.shape[1:])
    filters = rng.standard_normal((g.K, g.rows, 1, 1), dtype=np.float32).astype(dtype)
    plan = fastconv.plan_conv2d(stretched.shape, filters.shape, dtype, groups=g.groups,
                                num_threads=threads)
    assert plan.method == "gemm1x1" and plan.flops == g.flops
    return plan, (lambda: plan.execute(stretched, filters))
