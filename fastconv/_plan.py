"""Planning a convolution: which lowering, what tile, how many threads, and
how much workspace, under a memory limit. The choice lives here and only here.

Workspace is every byte a call allocates beyond its output: the per-thread
buffers and the row table of the index map. Arguments that must be converted
first are copied once before the kernels run: an input of another dtype,
byte order or alignment (or, for the 1x1 path, with non-contiguous channel
planes), and weights that are not C-contiguous in the compute dtype. Those
copies are the caller's data in another form, not workspace, and are not
counted; arrays already in the compute dtype are read in place (any strides
for the input; flip=True is done by the index map, not by a copy).
"""
from dataclasses import dataclass, field
import threading

import numpy as np

from fastconv import _config
from fastconv._params import (ConvGeometry, as_array, check_bias, conv_geometry,
                              kernel_input, resolve_dtypes)

__all__ = ["ConvPlan", "WorkspaceLimitError", "plan_conv2d", "plan_conv"]

METHODS = ("auto", "stretch", "mapped", "gemm1x1")

# Tiles of the mapped lowering (measured with bench/interleaved.py on
# ../shared/layers.json, 2 threads, fp32 and fp64; see the sweep in the
# foundation issue's note):
# * TILE_TARGET_BYTES: the per-thread tile buffer (rows x tile x itemsize)
#   aimed for, about one core's L2 (2 MiB here): the tile is gathered and then
#   read by GEMM while still in cache. 1-4 MiB measured alike.
# * TILE_MIN_COLS: narrower tiles make GEMM's N dimension too thin for its
#   micro-kernel: 49-64 columns ran 1.3x slower than 196-256 on ResNet layers.
# * TILE_FLOOR_COLS: the narrowest tile accepted when the memory limit allows
#   no more; below it the limit is refused (WorkspaceLimitError).
TILE_TARGET_BYTES = 2 * 2**20
TILE_MIN_COLS = 256
TILE_FLOOR_COLS = 32
# "auto" prefers mapped tiles to a whole stretched matrix once that matrix is
# larger than one tile: writing it and reading it back leaves the cache.
# Measured (fp32, 2 threads, mapped time / stretch time): VGG-16 conv1_2
# 0.47, ResNet-50 stem 0.70, conv2 3x3 0.70, conv3 3x3 (3.5 MiB) 0.83-0.88;
# a matrix of one tile or less is the same computation either way.
STRETCH_CACHE_BYTES = TILE_TARGET_BYTES
_ROW_TABLE_FIELDS = 5
_INDEX_BYTES = np.dtype(np.intp).itemsize


class WorkspaceLimitError(MemoryError):
    """The memory limit is too small for any lowering of this convolution."""


def _format_bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class ConvPlan:
    """An immutable, executable decision about how to compute one convolution.

    Attributes
    ----------
    method : str
        ``'gemm1x1'`` (no lowering), ``'stretch'`` (whole im2col matrix per
        image) or ``'mapped'`` (index-mapped tiles).
    workspace_bytes : int
        Upper bound of the memory the call allocates beyond its output.
    output_shape : tuple
    num_threads : int
        Threads the call uses (OpenMP over work items, or BLAS's own).
    tile_cols : int
        Output columns per GEMM (Ho*Wo for stretch and gemm1x1).
    flops : int
        2 * multiply-adds.
    """
    geometry: ConvGeometry
    dtype: np.dtype
    method: str
    tile_cols: int
    num_threads: int
    kernel_threads: int
    blas_threads: int
    workspace_bytes: int
    memory_limit: int
    flip: bool
    reason: str = field(compare=False)

    @property
    def output_shape(self):
        return self.geometry.output_shape

    @property
    def flops(self):
        return self.geometry.flops

    @property
    def input_shape(self):
        g = self.geometry
        return (g.N, g.C, g.W) if g.spatial_dims == 1 else (g.N, g.C, g.H, g.W)

    @property
    def weight_shape(self):
        g = self.geometry
        cg = g.C // g.groups
        return (g.K, cg, g.S) if g.spatial_dims == 1 else (g.K, cg, g.R, g.S)

    def __repr__(self):
        return (f"ConvPlan({self.method}, {self.dtype.name}, x{self.input_shape} * "
                f"w{self.weight_shape} -> {self.output_shape}, workspace "
                f"{_format_bytes(self.workspace_bytes)} of {_format_bytes(self.memory_limit)}, "
                f"{self.num_threads} thread(s): {self.reason})")

    def execute(self, x, weight, bias=None):
        """Run the planned convolution; x and weight must have the planned shapes.

        Inputs are converted to the plan's dtype; the result has that dtype.

        Examples
        --------
        >>> import numpy as np, fastconv
        >>> plan = fastconv.plan_conv2d((1, 1, 4, 4), (1, 1, 3, 3), "float64")
        >>> plan.execute(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))).ravel()
        array([9., 9., 9., 9.])
        """
        x = as_array(x, "x")
        weight = as_array(weight, "weight")
        bias = None if bias is None else as_array(bias, "bias")
        if x.shape != self.input_shape:
            raise ValueError(f"x has shape {x.shape}, but the plan is for {self.input_shape}")
        if weight.shape != self.weight_shape:
            raise ValueError(f"weight has shape {weight.shape}, but the plan is for {self.weight_shape}")
        resolve_dtypes(x=x, weight=weight, bias=bias)  # rejects complex, object, strings...
        check_bias(bias, self.geometry.K, weight.shape)
        return _run(self, x, weight, bias)


def _workspace(g, itemsize, method, tile_cols, kernel_threads):
    if method == "gemm1x1":
        return 0
    table = g.rows * _ROW_TABLE_FIELDS * _INDEX_BYTES
    return table + kernel_threads * g.rows * tile_cols * itemsize


def _openmp_enabled():
    from fastconv._kernels.openmp_info import openmp_enabled
    return openmp_enabled()


def _threads(work_items, num_threads):
    """(kernel threads, BLAS threads). OpenMP over work items when there are
    at least as many items as threads, BLAS single-threaded inside; otherwise
    a serial loop whose GEMMs use threaded BLAS, so no core is left idle and
    OpenMP and BLAS threads never multiply. A build without OpenMP has only
    BLAS's threads."""
    if work_items >= num_threads and _openmp_enabled():
        return num_threads, 1
    return 1, num_threads


def plan_conv(geometry, dtype, *, flip=False, method="auto", memory_limit=None,
              num_threads=None):
    """Plan a convolution whose geometry is already validated."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    limit, threads = _config.resolve(memory_limit, num_threads)
    g = geometry
    itemsize = dtype.itemsize
    items = g.N * g.groups
    common = dict(geometry=g, dtype=dtype, memory_limit=limit, flip=bool(flip))

    def make(method_, tile, work_items, reason):
        kernel_threads, blas_threads = _threads(work_items, threads)
        ws = _workspace(g, itemsize, method_, tile, kernel_threads)
        used = max(kernel_threads, blas_threads)
        return ConvPlan(method=method_, tile_cols=tile, num_threads=used,
                        kernel_threads=kernel_threads, blas_threads=blas_threads,
                        workspace_bytes=ws, reason=reason, **common)

    if method in ("auto", "gemm1x1") and g.is_pointwise:
        return make("gemm1x1", g.cols, items, "1x1 stride 1 unpadded: the input is its own im2col matrix")
    if method == "gemm1x1":
        raise ValueError(f"method='gemm1x1' needs a 1x1 kernel, stride 1 and no padding; "
                         f"got kernel {g.R}x{g.S}, stride {g.stride}, padding {g.padding}")

    stretch_matrix = g.rows * g.cols * itemsize
    stretch = make("stretch", g.cols, items,
                   f"whole-image im2col ({g.rows}x{g.cols}, {_format_bytes(stretch_matrix)}) "
                   "fits the cache and the limit" if method == "auto" else "method='stretch' requested")
    prefer_stretch = stretch.workspace_bytes <= limit and stretch_matrix <= STRETCH_CACHE_BYTES
    if method == "stretch" or (method == "auto" and prefer_stretch):
        if stretch.workspace_bytes > limit:
            raise WorkspaceLimitError(
                f"method='stretch' needs {stretch.workspace_bytes} bytes "
                f"({_format_bytes(stretch.workspace_bytes)}) of workspace for "
                f"{stretch.kernel_threads} whole {g.rows}x{g.cols} im2col matrices, "
                f"above memory_limit {limit} bytes ({_format_bytes(limit)}); "
                "use method='mapped' or a larger memory_limit")
        return stretch

    # mapped: the widest tile the limit allows, up to the cache-sized target
    min_cols = min(TILE_MIN_COLS, g.cols)
    per_col = g.rows * itemsize
    target = max(min_cols, min(g.cols, TILE_TARGET_BYTES // max(per_col, 1)))

    def mapped(tile, why):
        n_tiles = -(-g.cols // tile)
        tile = -(-g.cols // n_tiles)  # even tiles: no thin last GEMM; never wider
        reason = why.format(tile=tile, n_tiles=n_tiles)
        return make("mapped", tile, items * n_tiles, reason)

    if method == "auto" and stretch.workspace_bytes > limit:
        why = (f"whole-image im2col needs {_format_bytes(stretch.workspace_bytes)} > limit "
               f"{_format_bytes(limit)}; " "{n_tiles} tile(s) of {tile} columns per image")
    elif method == "auto":
        why = (f"whole-image im2col ({_format_bytes(stretch_matrix)}) would spill the cache; "
               "{n_tiles} cache-sized tile(s) of {tile} columns per image")
    else:
        why = "method='mapped' requested; {n_tiles} tile(s) of {tile} columns per image"
    plan = mapped(target, why)
    if plan.workspace_bytes <= limit:
        return plan
    # Narrower tiles, sized for the worst case of every thread holding one.
    floor_cols = min(TILE_FLOOR_COLS, g.cols)
    fixed = _workspace(g, itemsize, "mapped", 0, threads)
    affordable = (limit - fixed) // (threads * per_col) if limit > fixed else 0
    if affordable < floor_cols:
        needed = fixed + threads * per_col * floor_cols
        raise WorkspaceLimitError(
            f"memory_limit {limit} bytes ({_format_bytes(limit)}) is too small: the narrowest "
            f"efficient mapped tile ({floor_cols} columns x {g.rows} rows x {threads} "
            f"thread(s)) needs {needed} bytes ({_format_bytes(needed)})")
    return mapped(min(target, affordable), why)


def plan_conv2d(x_shape, weight_shape, dtype="float32", *, stride=1, padding=0,
                dilation=1, groups=1, flip=False, method="auto", memory_limit=None,
                num_threads=None):
    """Plan a 2-D convolution: choose the lowering, tile and threads.

    Parameters
    ----------
    x_shape : tuple of int
        (N, C, H, W).
    weight_shape : tuple of int
        (K, C/groups, R, S).
    dtype : dtype-like
        ``float32`` or ``float64`` (integer types plan as float64).
    stride, padding, dilation, groups, flip
        As in :func:`fastconv.conv2d`.
    method : {"auto", "stretch", "mapped", "gemm1x1"}
    memory_limit : int or str, optional
        Workspace bound; default from :func:`fastconv.get_config`.
    num_threads : int, optional

    Returns
    -------
    ConvPlan

    Raises
    ------
    WorkspaceLimitError
        If no lowering fits the memory limit.

    Examples
    --------
    >>> import fastconv
    >>> plan = fastconv.plan_conv2d((16, 64, 224, 224), (64, 64, 3, 3), padding=1,
    ...                             memory_limit="64MiB")
    >>> plan.method, plan.workspace_bytes <= 64 * 2**20
    ('mapped', True)
    """
    geometry = conv_geometry(x_shape, weight_shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups)
    return plan_conv(geometry, _plan_dtype(dtype), flip=flip, method=method,
                     memory_limit=memory_limit, num_threads=num_threads)


def _plan_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype={dtype!r} is not a NumPy dtype") from None
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype.kind != "f":
        raise TypeError(f"dtype={dtype} is not supported: fastconv computes in float32/float64")
    return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)


# --------------------------------------------------------------------------
# execution

_controller_lock = threading.Lock()
_controller = None


def _blas_limit(n):
    """A context limiting BLAS (the one SciPy loaded) to n threads."""
    global _controller
    if _controller is None:
        with _controller_lock:
            if _controller is None:
                from threadpoolctl import ThreadpoolController
                _controller = ThreadpoolController()
    return _controller.limit(limits=n, user_api="blas")


def _planes_contiguous(x4):
    _, _, H, W = x4.shape
    item = x4.itemsize
    return (W == 1 or x4.strides[3] == item) and (H == 1 or x4.strides[2] == W * item)


def _run(plan, x, weight, bias):
    from fastconv._kernels.gemm1x1 import conv2d_gemm1x1
    from fastconv._kernels.mapped import conv2d_mapped
    from fastconv._kernels.stretch import conv2d_stretch

    g = plan.geometry
    dtype = plan.dtype
    out = np.empty((g.N, g.K, g.cols), dtype=dtype)
    if out.size == 0:
        return out.reshape(g.output_shape)
    if g.spatial_dims == 1:
        x = x[:, :, None, :]
        weight = weight[:, :, None, :]
    filters = np.ascontiguousarray(weight, dtype=dtype).reshape(g.K, g.rows)  # a view if it can be
    bias_vec = (np.zeros(0, dtype) if bias is None
                else np.ascontiguousarray(bias, dtype=dtype).reshape(g.K))
    if x.size == 0 or g.rows == 0:
        # nothing to sum over (empty channels or an input made only of padding)
        out[...] = 0 if bias is None else bias_vec[:, None]
        return out.reshape(g.output_shape)
    x = kernel_input(x, dtype)
    sh, sw = g.stride
    (pt, _), (pl, _) = g.padding
    dh, dw = g.dilation
    with _blas_limit(plan.blas_threads):
        if plan.method == "gemm1x1":
            if not _planes_contiguous(x) or (g.C // g.groups > 1 and x.strides[1] < g.H * g.W * x.itemsize):
                x = np.ascontiguousarray(x)
            conv2d_gemm1x1(x, filters, bias_vec, out, g.groups, plan.kernel_threads)
        else:
            workspace = np.empty((plan.kernel_threads, g.rows * plan.tile_cols), dtype=dtype)
            if plan.method == "stretch":
                conv2d_stretch(x, filters, bias_vec, out, workspace, g.R, g.S, g.Wo,
                               sh, sw, pt, pl, dh, dw, g.groups, plan.flip, plan.kernel_threads)
            else:
                conv2d_mapped(x, filters, bias_vec, out, workspace, g.R, g.S, g.Wo,
                              sh, sw, pt, pl, dh, dw, g.groups, plan.tile_cols,
                              plan.flip, plan.kernel_threads)
    return out.reshape(g.output_shape)
