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
import dataclasses
from dataclasses import dataclass, field
import functools
import time

import numpy as np

from fastconv import _config, _runtime
from fastconv._params import (ConvGeometry, as_array, check_bias, conv_geometry,
                              kernel_input, resolve_dtypes)

__all__ = ["ConvPlan", "WorkspaceLimitError", "plan_conv2d", "plan_conv"]

METHODS = ("auto", "stretch", "mapped", "gemm1x1")
# what a plan computes: the convolution, or one of its two gradients
KINDS = ("forward", "input_grad", "weight_grad")

# Tiles of the mapped lowering (measured with bench/interleaved.py on
# ../shared/layers.json, 2 threads, fp32 and fp64; see the sweep in the
# foundation issue's note):
# * TILE_TARGET_BYTES: the per-thread tile buffer (rows x tile x itemsize)
#   aimed for, about one core's L2 (2 MiB here): the tile is gathered and then
#   read by GEMM while still in cache. 1-4 MiB measured alike.
# * TILE_MIN_COLS: narrower tiles make GEMM's N dimension too thin for its
#   micro-kernel: 49-64 columns ran 1.3x slower than 196-256 on ResNet layers.
#   The same rule batches small images (below).
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
# Images with fewer than TILE_MIN_COLS output positions are stretched several
# at a time into one GEMM (kernels/batched.pyx), as many as make the GEMM
# TILE_MIN_COLS wide while every thread still gets a batch. Measured on
# ResNet-50 (fp32, 1 thread per GEMM): a 512x4608 by 4x49 GEMM is 1.43x
# faster than four of 49 columns, 2x196 over 196 1.17x, 784 columns 0.95x.
_ROW_TABLE_FIELDS = 5
_INDEX_BYTES = np.dtype(np.intp).itemsize
# plans cached per distinct call (shapes, dtype, limits, threads)
PLAN_CACHE_SIZE = 1024


class WorkspaceLimitError(MemoryError):
    """The memory limit is too small for any lowering of this convolution."""


def _format_bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _format_flops(n):
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} FLOP"


@dataclass(frozen=True)
class ConvPlan:
    """An immutable, executable decision about how to compute one convolution.

    Attributes
    ----------
    method : str
        ``'gemm1x1'`` (no lowering), ``'stretch'`` (whole im2col matrix per
        image) or ``'mapped'`` (index-mapped tiles).
    workspace_bytes : int
        Upper bound of the memory the call allocates beyond its output (for
        inputs already in the plan's dtype; see :func:`plan_conv2d`).
    output_shape : tuple
    num_threads : int
        Most threads the call uses (OpenMP over work items, or BLAS's own);
        fewer while other calls in the process hold some.
    tile_cols : int
        Output positions (GEMM columns) per image in one GEMM (Ho*Wo unless mapped).
    images_per_gemm : int
        Images whose stretched matrices share one GEMM (> 1 for small images).
    flops : int
        2 * multiply-adds (the same for the forward pass and each gradient).
    kind : str
        ``'forward'``, ``'input_grad'`` or ``'weight_grad'``.
    blocks : int
        Input gradient: blocks of input channels handled as separate work
        items (> 1 when the batch has fewer images than threads). Weight
        gradient: blocks of filters, each computed whole by one thread (> 1
        when per-thread accumulators would outweigh the batch's stretched
        matrices); 1 means work split by images into per-thread accumulators.
    reason : str
        Why this plan (also in the repr).
    """
    geometry: ConvGeometry
    dtype: np.dtype
    method: str
    tile_cols: int
    images_per_gemm: int
    num_threads: int
    kernel_threads: int
    blas_threads: int
    workspace_bytes: int
    memory_limit: int
    flip: bool
    kind: str = "forward"
    blocks: int = 1
    reason: str = field(compare=False, default="")

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

    @property
    def gemm_shape(self):
        """(M, N, K) of each GEMM. Forward: filters x stretched columns x rows
        of the stretched matrix; input gradient: those rows (of one channel
        block) x columns x filters; weight gradient: filters x rows x columns."""
        g = self.geometry
        columns = self.tile_cols * self.images_per_gemm
        if self.kind == "input_grad":
            return (_block_rows(g, self.blocks), columns, g.K // g.groups)
        if self.kind == "weight_grad":
            return (-(-(g.K // g.groups) // self.blocks), g.rows, columns)
        return (g.K // g.groups, columns, g.rows)

    def __repr__(self):
        if self.kernel_threads > 1:
            threads = f"{self.kernel_threads} OpenMP threads, BLAS on 1"
        elif self.blas_threads > 1:
            threads = f"1 loop, BLAS on {self.blas_threads} threads"
        else:
            threads = "1 thread"
        m, n, k = self.gemm_shape
        kind = "" if self.kind == "forward" else f"{self.kind}, "
        return (f"ConvPlan({kind}{self.method}, {self.dtype.name}, x{self.input_shape} * "
                f"w{self.weight_shape} -> {self.output_shape}, {_format_flops(self.flops)}; "
                f"GEMMs {m}x{k} @ {k}x{n} ({self.tile_cols} columns x {self.images_per_gemm} "
                f"image(s)); workspace {_format_bytes(self.workspace_bytes)} of limit "
                f"{_format_bytes(self.memory_limit)}; {threads}: {self.reason})")

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
        if self.kind != "forward":
            raise TypeError(f"this plan computes the {self.kind.replace('_', ' ')}ient; run it "
                            f"through fastconv.conv{self.geometry.spatial_dims}d_{self.kind}")
        x = as_array(x, "x")
        weight = as_array(weight, "weight")
        bias = None if bias is None else as_array(bias, "bias")
        if x.shape != self.input_shape:
            raise ValueError(f"x has shape {x.shape}, but the plan is for {self.input_shape}")
        if weight.shape != self.weight_shape:
            raise ValueError(f"weight has shape {weight.shape}, but the plan is for {self.weight_shape}")
        resolve_dtypes(x=x, weight=weight, bias=bias)  # rejects complex, object, strings...
        check_bias(bias, self.geometry.K, f"filter of weight {weight.shape}")
        return _run(self, x, weight, bias)


def _block_rows(g, channel_blocks):
    """Rows of the stretched matrix in the largest block of input channels."""
    return -(-(g.C // g.groups) // channel_blocks) * g.R * g.S


def _workspace(g, itemsize, method, tile_cols, images, kernel_threads, kind="forward",
               blocks=1):
    """Bytes of the row table and the per-thread buffers: the gathered tile
    (forward, weight gradient) or the product tile before it is scattered
    (input gradient); for several images per GEMM the product before it is
    copied out (forward) or the packed gradients (gradients); for the weight
    gradient split by images, one accumulator per extra thread."""
    accumulators = 0
    if kind == "weight_grad" and blocks == 1:
        accumulators = (kernel_threads - 1) * g.K * g.rows
    if method == "gemm1x1":
        return accumulators * itemsize
    table = g.rows * _ROW_TABLE_FIELDS * _INDEX_BYTES
    rows = _block_rows(g, blocks) if kind == "input_grad" else g.rows
    per_thread = rows * tile_cols * images
    if images > 1:
        filters = -(-(g.K // g.groups) // blocks) if kind == "weight_grad" else g.K // g.groups
        per_thread += filters * tile_cols * images
    return table + (kernel_threads * per_thread + accumulators) * itemsize


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


def _images_per_gemm(g, threads, kind="forward"):
    """How many small images to stretch into one GEMM (1: no batching): in
    the forward pass and the input gradient their columns widen thin GEMMs,
    in the weight gradient they deepen shallow ones."""
    if g.cols >= TILE_MIN_COLS or g.N < 2:
        return 1
    most = -(-TILE_MIN_COLS // g.cols)
    # no fewer batches than threads (counting groups as separate work)
    images = max(1, min(most, g.N // -(-threads // g.groups)))
    return -(-g.N // -(-g.N // images))  # even batches: no short last one


class _Planner:
    """Builds the candidate plans of one convolution under one limit."""

    def __init__(self, g, dtype, flip, limit, threads, kind):
        self.g, self.dtype, self.limit, self.threads, self.kind = g, dtype, limit, threads, kind
        self.common = dict(geometry=g, dtype=dtype, memory_limit=limit, flip=flip, kind=kind)

    def make(self, method, tile, images, reason, split=None):
        g = self.g
        blocks = 1
        if self.kind == "input_grad":
            # tiles of one image scatter into the same pixels, so the work
            # items are (batch of images, group, channel block), never tiles
            batches = -(-g.N // images) * g.groups
            blocks = max(1, min(g.C // g.groups, -(-self.threads // max(1, batches))))
            work_items = batches * blocks
        elif (self.kind == "weight_grad" and self.threads > 1 and g.K > g.N * g.cols
              and g.groups * min(g.K // g.groups, self.threads) >= self.threads):
            # an accumulator per thread (K x rows) would outweigh gathering the
            # batch's stretched matrices (rows x N*cols) once more per thread:
            # split the filters instead (measured on ResNet-50 5b, 7x7 maps:
            # 2 threads with accumulators ran 2.3x slower than 1 thread, the
            # page faults of 9 MiB of fresh accumulators per call dominating)
            blocks = min(g.K // g.groups, self.threads)
            work_items = g.groups * blocks
        else:
            work_items = -(-g.N // images) * g.groups * -(-g.cols // tile)
        kernel_threads, blas_threads = split or _threads(work_items, self.threads)
        if kernel_threads == 1:
            blocks = 1
        ws = _workspace(g, self.dtype.itemsize, method, tile, images, kernel_threads,
                        self.kind, blocks)
        return ConvPlan(method=method, tile_cols=tile, images_per_gemm=images,
                        num_threads=max(kernel_threads, blas_threads),
                        kernel_threads=kernel_threads, blas_threads=blas_threads,
                        workspace_bytes=ws, blocks=blocks, reason=reason, **self.common)

    def fitted(self, plan):
        """The plan, or with one buffer and threaded BLAS if per-thread
        buffers exceed the limit (the cores still work, inside GEMM); None if
        even that does not fit."""
        if plan.workspace_bytes <= self.limit:
            return plan
        if plan.kernel_threads > 1:
            single = self.make(plan.method, plan.tile_cols, plan.images_per_gemm,
                               plan.reason + f"; one buffer, not {plan.kernel_threads}, "
                               "to fit the limit", split=(1, self.threads))
            if single.workspace_bytes <= self.limit:
                return single
        return None

    def gemm1x1(self):
        g = self.g
        return self.fitted(self.make(
            "gemm1x1", g.cols, 1, "1x1 stride 1 unpadded: the input is its own im2col matrix"))

    def stretch(self, reason, single_buffer=True):
        """Whole stretched matrices, several small images per GEMM; the
        largest batch that fits the limit, or None. single_buffer: accept one
        buffer with threaded BLAS if one per thread does not fit."""
        g = self.g
        images = _images_per_gemm(g, self.threads, self.kind)
        while True:
            why = reason if images == 1 else (
                reason + f"; {images} images of {g.cols} columns per GEMM (thin GEMMs are slow)")
            plan = self.make("stretch", g.cols, images, why)
            plan = self.fitted(plan) if single_buffer else (
                plan if plan.workspace_bytes <= self.limit else None)
            if plan is not None or images == 1:
                return plan
            images = max(1, images // 2)

    def mapped(self, why):
        """The widest tile up to the cache-sized target that fits, or None."""
        g, itemsize = self.g, self.dtype.itemsize
        per_col = g.rows * itemsize
        target = max(min(TILE_MIN_COLS, g.cols), min(g.cols, TILE_TARGET_BYTES // max(per_col, 1)))
        # a batch of fewer images than threads: enough tiles for every thread
        # (OpenMP over tiles ran 1.3-1.7x faster than threaded BLAS on each
        # GEMM); the input gradient splits channels instead (see make)
        if self.kind != "input_grad":
            tiles_for_threads = -(-self.threads // max(1, g.N * g.groups))
            target = min(target, max(TILE_MIN_COLS, -(-g.cols // tiles_for_threads)))

        def tiled(tile, split=None):
            n_tiles = -(-g.cols // tile)
            tile = -(-g.cols // n_tiles)  # even tiles: no thin last GEMM; never wider
            return self.make("mapped", tile, 1, why.format(tile=tile, n_tiles=n_tiles), split)

        images = _images_per_gemm(g, self.threads, self.kind)
        if images > 1 and target >= g.cols:
            # a tile holds whole small images: several per GEMM, as stretch does
            plan = self.make("mapped", g.cols, images, why.format(tile=g.cols, n_tiles=1)
                             + f"; {images} images per GEMM (thin GEMMs are slow)")
            if plan.workspace_bytes <= self.limit:
                return plan
        plan = tiled(target)
        if plan.workspace_bytes <= self.limit:
            return plan
        # narrower tiles: as wide as the limit allows with one buffer per
        # thread, else with a single buffer and threaded BLAS
        floor = min(TILE_FLOOR_COLS, g.cols)
        for buffers, split in ((self.threads, None), (1, (1, self.threads))):
            fixed = _workspace(g, itemsize, "mapped", 0, 1, buffers, self.kind)
            affordable = (self.limit - fixed) // (buffers * per_col) if self.limit > fixed else 0
            if affordable >= floor:
                plan = tiled(min(target, affordable), split)
                if plan.workspace_bytes <= self.limit:
                    return plan
        return None

    def too_small(self):
        g = self.g
        floor = min(TILE_FLOOR_COLS, g.cols)
        needed = _workspace(g, self.dtype.itemsize, "mapped", floor, 1, 1, self.kind)
        return WorkspaceLimitError(
            f"memory_limit {self.limit} bytes ({_format_bytes(self.limit)}) is too small: the "
            f"narrowest efficient mapped tile ({floor} columns x {g.rows} rows, one thread) "
            f"needs {needed} bytes ({_format_bytes(needed)})")


def _tuning():
    # part of the cache key, so that changing a constant (tests do) is seen
    return (TILE_TARGET_BYTES, TILE_MIN_COLS, TILE_FLOOR_COLS, STRETCH_CACHE_BYTES)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _choose(g, dtype, flip, method, limit, threads, kind, tuning):
    """The one place where the lowering is chosen (see the constants above).
    The gradients follow the same rules, with one image per GEMM."""
    planner = _Planner(g, dtype, flip, limit, threads, kind)
    if method in ("auto", "gemm1x1") and g.is_pointwise:
        plan = planner.gemm1x1()
        if plan is None:
            raise planner.too_small()
        return plan
    if method == "gemm1x1":
        raise ValueError(f"method='gemm1x1' needs a 1x1 kernel, stride 1 and no padding; "
                         f"got kernel {g.R}x{g.S}, stride {g.stride}, padding {g.padding}")
    matrix = g.rows * g.cols * dtype.itemsize
    if method == "stretch":
        plan = planner.stretch("method='stretch' requested")
        if plan is None:
            needed = _workspace(g, dtype.itemsize, "stretch", g.cols, 1, 1, kind)
            raise WorkspaceLimitError(
                f"method='stretch' needs {needed} bytes ({_format_bytes(needed)}) of workspace "
                f"for one whole {g.rows}x{g.cols} im2col matrix, above memory_limit {limit} "
                f"bytes ({_format_bytes(limit)}); use method='mapped' or a larger memory_limit")
        return plan
    if method == "auto" and matrix <= STRETCH_CACHE_BYTES:
        # With fewer images than threads, stretch would rely on threaded BLAS
        # (1.3-1.7x slower than OpenMP threads here, and OpenBLAS's threads
        # keep spinning after each call, slowing the next OpenMP region), so
        # tiles that give every thread work come first.
        plan = planner.stretch(f"whole-image im2col ({g.rows}x{g.cols}, {_format_bytes(matrix)}) "
                               "fits the cache and the limit", single_buffer=False)
        if plan is not None and plan.blas_threads > 1:
            tiled = planner.mapped("fewer images than threads: {n_tiles} tile(s) of {tile} "
                                   "columns per image, so each thread gets tiles")
            if tiled is not None and tiled.kernel_threads > 1:
                return tiled
        if plan is not None:
            return plan
    if method == "mapped":
        why = "method='mapped' requested; {n_tiles} tile(s) of {tile} columns per image"
    else:
        stretch_ws = _workspace(g, dtype.itemsize, "stretch", g.cols, 1, 1, kind)
        if stretch_ws > limit:
            why = (f"whole-image im2col needs {_format_bytes(stretch_ws)} > limit "
                   f"{_format_bytes(limit)}; " "{n_tiles} tile(s) of {tile} columns per image")
        else:
            why = (f"whole-image im2col ({_format_bytes(matrix)}) would spill the cache; "
                   "{n_tiles} cache-sized tile(s) of {tile} columns per image")
    plan = planner.mapped(why)
    if plan is None:
        raise planner.too_small()
    return plan


def plan_conv(geometry, dtype, *, flip=False, method="auto", memory_limit=None,
              num_threads=None, measure=False, kind="forward"):
    """Plan a convolution (or a gradient) whose geometry is already validated (cached)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    limit, threads = _config.resolve(memory_limit, num_threads)
    args = (geometry, np.dtype(dtype), bool(flip), method, limit, threads, kind, _tuning())
    if measure:
        return _measured(*args)
    return _choose(*args)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _measured(g, dtype, flip, method, limit, threads, kind, tuning):
    """Time every candidate that fits once, on random data, and keep the
    fastest (as scipy.signal.choose_conv_method(measure=True))."""
    planner = _Planner(g, dtype, flip, limit, threads, kind)
    candidates = []
    pointwise = method in ("auto", "gemm1x1") and g.is_pointwise
    if pointwise:
        candidates.append(planner.gemm1x1())
    if method == "stretch" or (method == "auto" and not pointwise):
        candidates.append(planner.stretch("measured fastest"))
        if _images_per_gemm(g, threads, kind) > 1:  # and one image per GEMM
            candidates.append(planner.fitted(planner.make("stretch", g.cols, 1, "measured fastest")))
    if method in ("auto", "mapped"):
        candidates.append(planner.mapped("measured fastest; {n_tiles} tile(s) of {tile} columns"))
    candidates = list(dict.fromkeys(c for c in candidates if c is not None))
    if not candidates:
        return _choose(g, dtype, flip, method, limit, threads, kind, tuning)  # raises the reason
    if len(candidates) == 1:
        return candidates[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(candidates[0].input_shape).astype(dtype)
    w = rng.standard_normal(candidates[0].weight_shape).astype(dtype)
    grad = rng.standard_normal(candidates[0].output_shape).astype(dtype)
    timings = []
    for plan in candidates:
        run = {"forward": lambda: _run(plan, x, w, None),
               "input_grad": lambda: run_input_grad(plan, w, grad),
               "weight_grad": lambda: run_weight_grad(plan, x, grad)}[kind]
        run()  # warm-up
        best = min(_timed(run) for _ in range(2))
        timings.append((best, plan))
    timings.sort(key=lambda pair: pair[0])
    best, winner = timings[0]
    others = ", ".join(f"{p.method}x{p.images_per_gemm} {t * 1e3:.2f} ms" for t, p in timings[1:])
    return dataclasses.replace(winner, reason=f"measured {best * 1e3:.2f} ms against {others}")


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def plan_conv2d(x_shape, weight_shape, dtype="float32", *, stride=1, padding=0,
                dilation=1, groups=1, flip=False, method="auto", memory_limit=None,
                num_threads=None, measure=False, kind="forward"):
    """Plan a 2-D convolution or one of its gradients: choose the lowering,
    tile and threads.

    The rules, in order: a 1x1 kernel with stride 1 and no padding is one GEMM
    on the input itself (no workspace); a stretched matrix that fits the cache
    and the limit is built whole (several small images per GEMM); otherwise
    the stretched matrix is gathered in cache-sized tiles through the index
    map, as wide as the limit allows, with one buffer per thread or, if the
    limit allows only one, a single buffer and threaded BLAS. Plans are
    cached: planning the same call again costs a dictionary look-up.

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
        Most threads to use. Default: the configured number, capped by the
        OpenMP/BLAS limits in force in the calling thread (threadpoolctl's
        ``threadpool_limits``, ``OMP_NUM_THREADS``). Calls running at once in
        several Python threads share the cores instead of oversubscribing.
    measure : bool
        Time each candidate plan that fits once on random data (of the full
        input size) and return the fastest; remembered for later calls, like
        ``scipy.signal.choose_conv_method(..., measure=True)``.
    kind : {"forward", "input_grad", "weight_grad"}
        What the plan computes: the convolution, or the gradient of a loss
        with respect to its input (:func:`fastconv.conv2d_input_grad`, also
        the transposed convolution) or its weight
        (:func:`fastconv.conv2d_weight_grad`). The gradients are GEMMs of
        the same size, lowered by the same rules; their workspace also
        counts the product tiles scattered back (input gradient) and one
        accumulator of the weight's size per extra thread (weight gradient).

    Returns
    -------
    ConvPlan
        ``workspace_bytes`` bounds what the call allocates beyond its output
        when the input is already in the plan's dtype and native byte order;
        other inputs are first converted (a copy of the input), and weights
        that are not C-contiguous are copied (a copy of the weights).

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
                     memory_limit=memory_limit, num_threads=num_threads, measure=measure,
                     kind=kind)


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

def _planes_contiguous(x4):
    _, _, H, W = x4.shape
    item = x4.itemsize
    return (W == 1 or x4.strides[3] == item) and (H == 1 or x4.strides[2] == W * item)


def _filters(plan, weight):
    """The weight as the kernels take it: (K, C/groups*R*S), C-contiguous in
    the plan's dtype (a view when it already is)."""
    g = plan.geometry
    return np.ascontiguousarray(weight, dtype=plan.dtype).reshape(g.K, g.rows)


def _as_2d(g, array):
    """A 1-D convolution's (N, C, L) array as the (N, C, 1, L) the kernels take."""
    return array[:, :, None, :] if g.spatial_dims == 1 else array


def _pointwise_readable(g, x):
    """Whether the 1x1 GEMM can read x's channel planes in place (each plane
    contiguous, planes far enough apart to be a matrix's rows)."""
    return _planes_contiguous(x) and (g.C // g.groups == 1 or x.strides[1] >= g.H * g.W * x.itemsize)


def run_input_grad(plan, weight, grad_output):
    """The input gradient (also the transposed convolution) of an input_grad plan."""
    from fastconv._kernels.input_grad import conv2d_input_grad

    g = plan.geometry
    pointwise = plan.method == "gemm1x1"
    runs = g.N * g.C * g.H * g.W and g.rows and g.K and g.cols
    # the kernel writes every element (each work item clears its slice)
    grad_x = (np.empty if runs else np.zeros)((g.N, g.C, g.H, g.W), dtype=plan.dtype)
    if runs:
        grad = np.ascontiguousarray(grad_output, dtype=plan.dtype).reshape(g.N, g.K, g.cols)
        filters = _filters(plan, weight)
        images = plan.images_per_gemm
        with _runtime.budget.lend(plan.kernel_threads, plan.blas_threads) as (threads, _):
            rows = 0 if pointwise else _block_rows(g, plan.blocks)
            workspace = np.empty((threads, rows * plan.tile_cols * images), dtype=plan.dtype)
            packed = np.empty((threads, (g.K // g.groups) * g.cols * images if images > 1 else 0),
                              dtype=plan.dtype)
            conv2d_input_grad(grad, filters, grad_x, workspace, packed, *g.kernel_args, g.groups,
                              plan.tile_cols, plan.blocks, images, plan.flip, pointwise,
                              threads)
    return grad_x.reshape(plan.input_shape)


def run_weight_grad(plan, x, grad_output):
    """The weight gradient of a weight_grad plan."""
    from fastconv._kernels.weight_grad import conv2d_weight_grad

    g = plan.geometry
    grad_w = np.zeros((g.K, g.rows), dtype=plan.dtype)
    if grad_w.size and g.N and g.cols and x.size:
        grad = np.ascontiguousarray(grad_output, dtype=plan.dtype).reshape(g.N, g.K, g.cols)
        x = kernel_input(_as_2d(g, x), plan.dtype)
        pointwise = plan.method == "gemm1x1"
        if pointwise and not _pointwise_readable(g, x):
            x = np.ascontiguousarray(x)
        images = plan.images_per_gemm
        with _runtime.budget.lend(plan.kernel_threads, plan.blas_threads) as (threads, _):
            split_by_images = plan.blocks == 1
            accumulators = np.zeros((threads - 1 if split_by_images else 0, g.K * g.rows),
                                    dtype=plan.dtype)
            workspace = np.empty((threads, 0 if pointwise else g.rows * plan.tile_cols * images),
                                 dtype=plan.dtype)
            filters = -(-(g.K // g.groups) // plan.blocks)
            packed = np.empty((threads, filters * g.cols * images if images > 1 else 0),
                              dtype=plan.dtype)
            conv2d_weight_grad(x, grad, grad_w, accumulators, workspace, packed, *g.kernel_args,
                               g.groups, plan.tile_cols, images, plan.blocks, plan.flip,
                               pointwise, threads)
    return grad_w.reshape(plan.weight_shape)


def _run(plan, x, weight, bias):
    from fastconv._kernels.batched import conv2d_batched
    from fastconv._kernels.gemm1x1 import conv2d_gemm1x1
    from fastconv._kernels.mapped import conv2d_mapped
    from fastconv._kernels.stretch import conv2d_stretch

    g = plan.geometry
    dtype = plan.dtype
    out = np.empty((g.N, g.K, g.cols), dtype=dtype)
    if out.size == 0:
        return out.reshape(g.output_shape)
    x = _as_2d(g, x)
    filters = _filters(plan, weight)
    bias_vec = (np.zeros(0, dtype) if bias is None
                else np.ascontiguousarray(bias, dtype=dtype).reshape(g.K))
    if x.size == 0 or g.rows == 0:
        # nothing to sum over (empty channels or an input made only of padding)
        out[...] = 0 if bias is None else bias_vec[:, None]
        return out.reshape(g.output_shape)
    x = kernel_input(x, dtype)
    if plan.method == "gemm1x1" and not _pointwise_readable(g, x):
        x = np.ascontiguousarray(x)
    images = plan.images_per_gemm
    with _runtime.budget.lend(plan.kernel_threads, plan.blas_threads) as (threads, _):
        # buffers for the threads granted now (never more than planned)
        if plan.method == "gemm1x1":
            conv2d_gemm1x1(x, filters, bias_vec, out, g.groups, threads)
        elif images > 1:
            workspace = np.empty((threads, g.rows * g.cols * images), dtype=dtype)
            product = np.empty((threads, (g.K // g.groups) * g.cols * images), dtype=dtype)
            conv2d_batched(x, filters, bias_vec, out, workspace, product, *g.kernel_args,
                           g.groups, images, plan.flip, threads)
        elif plan.method == "stretch":
            workspace = np.empty((threads, g.rows * g.cols), dtype=dtype)
            conv2d_stretch(x, filters, bias_vec, out, workspace, *g.kernel_args, g.groups,
                           plan.flip, threads)
        else:
            workspace = np.empty((threads, g.rows * plan.tile_cols), dtype=dtype)
            conv2d_mapped(x, filters, bias_vec, out, workspace, *g.kernel_args, g.groups,
                          plan.tile_cols, plan.flip, threads)
    return out.reshape(g.output_shape)
