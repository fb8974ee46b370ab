"""The table of lowerings: every way fastconv can compute a convolution or
one of its gradients, one entry each.

An entry knows, for one kind (``"forward"``, ``"input_grad"``,
``"weight_grad"``) and one ``method=`` name:

* whether it applies to a geometry (``unsuitable``: None, or why not);
* the best plan it can offer under the planner's memory limit
  (``propose``), and what that plan is estimated to cost (``cost``);
* its buffers (``buffers``): shapes and dtypes from one function, from which
  both the plan's ``workspace_bytes`` and the arrays the call allocates are
  derived, so the two cannot drift apart;
* its kernel call (``run``) and what the plan's repr says of it
  (``describe``).

The planner (``_plan.py``) weighs the entries that apply; the executor
(``_execute.py``) prepares the operands and runs the chosen one. Adding a
lowering is its kernel file, its entry here (appended to ``TABLE``), and its
tests; test and benchmark case lists read ``methods()``.
"""
import dataclasses
import functools
import math

import numpy as np

from fastconv import _machine
from fastconv._config import format_bytes
from fastconv._workspace import Buffers

__all__ = ["GemmBlocking", "KINDS", "TABLE", "entry", "general_methods", "methods"]

KINDS = ("forward", "input_grad", "weight_grad")

_INDEX = np.dtype(np.intp)


def row_table_shape(g, rows=None):
    """The index map's row table: one row of ROW_TABLE_FIELDS per row of the
    stretched matrix of a group (or `rows` rows)."""
    from fastconv._kernels.mapped import ROW_TABLE_FIELDS
    return (g.rows if rows is None else rows, ROW_TABLE_FIELDS)


def buffer_bytes(buffers):
    """Bytes of a buffers() dict: {name: (shape, dtype)}."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
               for shape, dtype in buffers.values())


@dataclasses.dataclass(frozen=True)
class GemmBlocking:
    """How a GEMM lowering cuts its work.

    tile_cols : output positions (GEMM columns) per image in one GEMM (Ho*Wo
        unless tiled); images : images whose stretched matrices share one
        GEMM (> 1 for small images); blocks : input gradient, blocks of input
        channels handled as separate work items (> 1 when the batch has fewer
        images than threads); weight gradient, blocks of filters each
        computed whole by one thread (> 1 when per-thread accumulators would
        outweigh the batch's stretched matrices; 1: work split by images into
        per-thread accumulators).
    """
    tile_cols: int
    images: int = 1
    blocks: int = 1


class Lowering:
    """One way of computing one kind of convolution (see the module docstring)."""
    name = None      # the method= value
    kernel = None    # the kernel module, fastconv/_kernels/<kernel>.pyx
    uses_blas = True  # False: the kernel never calls BLAS, whose thread setting is then left alone
    # True: the weight-gradient kernel writes every element of grad_w, so the
    # executor does not clear it first (a pass over K x rows: 9.4 MB on
    # ResNet-50 5b); False: the kernel adds into a cleared grad_w
    writes_whole_weight_grad = False

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"<lowering {self.name} ({self.kind}): fastconv/_kernels/{self.kernel}.pyx>"

    def unsuitable(self, g):
        """None if this lowering can compute geometry g, else why not."""
        return None

    def propose(self, planner, forced):
        """The best plan this lowering offers under planner.limit, or None."""
        raise NotImplementedError

    def candidates(self, planner):
        """Plans worth timing with measure=True."""
        plan = self.propose(planner, forced=True)
        return [] if plan is None else [plan]

    def cost(self, plan, tuning):
        """Estimated seconds of the plan (only compared with other entries')."""
        raise NotImplementedError

    def buffers(self, g, dtype, blocking, threads):
        """{name: (shape, dtype)} of the call's workspace with `threads` threads."""
        raise NotImplementedError

    def needed_bytes(self, planner):
        """The least workspace any plan of this lowering needs."""
        return 0

    def too_small(self, planner):
        """The WorkspaceLimitError message when no plan of this lowering fits."""
        raise NotImplementedError

    def prepare_input(self, g, x):
        """The input as the kernel reads it (already in the plan's dtype)."""
        return x

    def run(self, plan, ops, buffers, threads):
        """Call the kernel: ops has the prepared operands and the result."""
        raise NotImplementedError

    def describe(self, plan):
        """What the plan's repr says of the lowering's blocking."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# the GEMM lowerings over SciPy's BLAS

# A relative rate for the cost model: GEMM lowerings differ in how many
# threads they keep busy and what memory traffic they add, not in the GEMM.
_GEMM_FLOPS_PER_THREAD = 50e9   # fp32 GEMM on these layers, one core (bench/)


# vector width of fastconv's own kernels by instruction set (the portable
# one's is the compiler's: not known, so not compared)
_ISA_VECTOR_BITS = {"avx512": 512, "avx2": 256}


def blas_rate(tuning):
    """The BLAS GEMM's rate against the one the other rates were measured
    beside: Tuning.blas_rate, or where that is None, the width of the BLAS
    kernels' vectors over that of fastconv's own (at most 1; 1 where either
    is unknown). See Tuning.blas_rate."""
    if tuning.blas_rate is not None:
        return tuning.blas_rate
    own = _ISA_VECTOR_BITS.get(fused_isa(tuning.isa))
    from fastconv._runtime import blas_vector_bits
    theirs = blas_vector_bits()
    return 1.0 if own is None or theirs is None else min(1.0, theirs / own)


def _thin_gemm_factor(m, k, tuning):
    """Time factor of a GEMM whose smaller inner dimension (m filters or k
    depth) leaves the micro-kernel partly empty (see Tuning.gemm_full_rate_dim)."""
    return max(1.0, tuning.gemm_full_rate_dim / max(1, min(m, k)))


def _micro_kernel_rate(depth, tuning):
    """The fused micro-kernel's rate on products `depth` deep: fused_rate,
    or below fused_min_depth fused_shallow_rate (a tile's accumulators
    loaded and stored for few multiply-adds)."""
    return tuning.fused_rate if depth >= tuning.fused_min_depth else tuning.fused_shallow_rate


def _block_rows(g, channel_blocks):
    """Rows of the stretched matrix in the largest block of input channels."""
    return -(-(g.C // g.groups) // channel_blocks) * g.R * g.S


def _filters_per_block(g, blocks):
    return -(-(g.K // g.groups) // blocks)


class _Gemm(Lowering):
    """What the BLAS lowerings share: buffers, work items, threads, kernels."""
    uses_table = True

    def buffers(self, g, dtype, blocking, threads):
        tile, images, blocks = blocking.tile_cols, blocking.images, blocking.blocks
        bufs = {"table": (row_table_shape(g, g.rows if self.uses_table else 0), _INDEX)}
        gathered = 0 if not self.uses_table else (
            _block_rows(g, blocks) if self.kind == "input_grad" else g.rows) * tile * images
        if self.kind == "forward":
            if images > 1:
                bufs["workspace"] = ((threads, gathered), dtype)
                bufs["product"] = ((threads, (g.K // g.groups) * tile * images), dtype)
            elif self.uses_table:
                bufs["workspace"] = ((threads, gathered), dtype)
            return bufs
        filters = (_filters_per_block(g, blocks) if self.kind == "weight_grad"
                   else g.K // g.groups)
        bufs["workspace"] = ((threads, gathered), dtype)
        bufs["packed"] = ((threads, filters * tile * images if images > 1 else 0), dtype)
        if self.kind == "weight_grad":
            bufs["accumulators"] = ((threads - 1 if blocks == 1 else 0, g.K * g.rows), dtype)
        return bufs

    def work(self, planner, blocking):
        """(work items, blocking with its blocks set) for the planner's threads."""
        g, threads = planner.g, planner.threads
        batches = -(-g.N // blocking.images) * g.groups
        if self.kind == "input_grad":
            # tiles of one image scatter into the same pixels, so the work
            # items are (batch of images, group, channel block), never tiles
            blocks = max(1, min(g.C // g.groups, -(-threads // max(1, batches))))
            return batches * blocks, dataclasses.replace(blocking, blocks=blocks)
        if (self.kind == "weight_grad" and threads > 1 and g.K > g.N * g.cols
                and g.groups * min(g.K // g.groups, threads) >= threads):
            # an accumulator per thread (K x rows) would outweigh gathering the
            # batch's stretched matrices (rows x N*cols) once more per thread:
            # split the filters instead (measured on ResNet-50 5b, 7x7 maps:
            # 2 threads with accumulators ran 2.3x slower than 1 thread, the
            # page faults of 9 MiB of fresh accumulators per call dominating)
            blocks = min(g.K // g.groups, threads)
            return g.groups * blocks, dataclasses.replace(blocking, blocks=blocks)
        return batches * -(-g.cols // blocking.tile_cols), blocking

    def make(self, planner, blocking, reason, split=None):
        """The plan of this blocking: OpenMP over work items when there are at
        least as many as threads (BLAS single-threaded inside), otherwise a
        serial loop over threaded GEMMs, so no core idles and OpenMP and BLAS
        threads never multiply; `split` forces (kernel, BLAS) threads."""
        work_items, blocking = self.work(planner, blocking)
        kernel_threads, blas_threads = split or planner.threads_for(work_items)
        if kernel_threads == 1:
            blocking = dataclasses.replace(blocking, blocks=1)
        return planner.plan(self, blocking, kernel_threads, blas_threads, reason)

    def fitted(self, planner, plan):
        """The plan, or with one buffer and threaded BLAS if per-thread
        buffers exceed the limit (the cores still work, inside GEMM); None if
        even that does not fit."""
        if plan.workspace_bytes <= planner.limit:
            return plan
        if plan.kernel_threads > 1:
            single = self.make(planner, plan.blocking, plan.reason + f"; one buffer, not "
                               f"{plan.kernel_threads}, to fit the limit",
                               split=(1, planner.threads))
            if single.workspace_bytes <= planner.limit:
                return single
        return None

    def bytes_for(self, planner, tile, images=1, threads=1):
        return buffer_bytes(self.buffers(planner.g, planner.dtype,
                                         GemmBlocking(tile, images), threads))

    def cost(self, plan, tuning):
        if plan.kernel_threads > 1:
            worth = plan.kernel_threads
        elif plan.blas_threads > 1:
            worth = plan.blas_threads / tuning.blas_threads_penalty
        else:
            worth = 1
        m, _, k = self.gemm_shape(plan)
        return (plan.flops / (_GEMM_FLOPS_PER_THREAD * worth) * _thin_gemm_factor(m, k, tuning)
                * (self.gemm_share(plan) / blas_rate(tuning) + self.added_traffic(plan, tuning)))

    def gemm_share(self, plan):
        """The lowering's time over its GEMMs' model, BLAS's part (1; Gemm1x1
        0.5, its weight gradient on OpenMP threads 0.9)."""
        return 1.0

    def added_traffic(self, plan, tuning):
        """The memory traffic the lowering adds to its GEMMs, as a share of
        their time: the input gradient's col2im, which adds each element of
        the product (rows x columns) back into the input, against its GEMM's
        2 x filters flops per element (see Tuning.col2im_flops)."""
        if self.kind != "input_grad" or not self.uses_table:
            return 0.0
        return tuning.col2im_flops / (2 * max(1, plan.geometry.K // plan.geometry.groups))

    def gemm_shape(self, plan):
        """(M, N, K) of each GEMM. Forward: filters x stretched columns x rows
        of the stretched matrix; input gradient: those rows (of one channel
        block) x columns x filters; weight gradient: filters x rows x columns."""
        g, b = plan.geometry, plan.blocking
        columns = b.tile_cols * b.images
        if self.kind == "input_grad":
            return (_block_rows(g, b.blocks), columns, g.K // g.groups)
        if self.kind == "weight_grad":
            return (_filters_per_block(g, b.blocks), g.rows, columns)
        return (g.K // g.groups, columns, g.rows)

    def describe(self, plan):
        m, n, k = self.gemm_shape(plan)
        b = plan.blocking
        return (f"GEMMs {m}x{k} @ {k}x{n} ({b.tile_cols} columns x {b.images} image(s)"
                + (f", {b.blocks} blocks" if b.blocks > 1 else "") + ")")

    def run(self, plan, ops, bufs, threads):
        from fastconv._kernels.batched import conv2d_batched
        from fastconv._kernels.input_grad import conv2d_input_grad
        from fastconv._kernels.mapped import conv2d_mapped
        from fastconv._kernels.weight_grad import conv2d_weight_grad

        g, b = plan.geometry, plan.blocking
        args = g.index_args(plan.flip)
        pointwise = not self.uses_table
        if self.kind == "input_grad":
            conv2d_input_grad(ops.grad, ops.filters, ops.out, bufs["table"], bufs["workspace"],
                              bufs["packed"], args, b.tile_cols, b.blocks, b.images, pointwise,
                              threads)
        elif self.kind == "weight_grad":
            conv2d_weight_grad(ops.x, ops.grad, ops.out, bufs["accumulators"], bufs["table"],
                               bufs["workspace"], bufs["packed"], args, b.tile_cols, b.images,
                               b.blocks, pointwise, threads)
        elif b.images > 1:
            conv2d_batched(ops.x, ops.filters, ops.bias, ops.out, bufs["table"],
                           bufs["workspace"], bufs["product"], args, b.images, threads)
        else:
            conv2d_mapped(ops.x, ops.filters, ops.bias, ops.out, bufs["table"],
                          bufs["workspace"], args, b.tile_cols, threads)


def _planes_contiguous(x4):
    _, _, H, W = x4.shape
    item = x4.itemsize
    return (W == 1 or x4.strides[3] == item) and (H == 1 or x4.strides[2] == W * item)


class Gemm1x1(_Gemm):
    """1x1, stride 1, no padding: the input is its own stretched matrix, one
    GEMM per image and group reads it in place (no gather, no workspace but
    the weight gradient's accumulators)."""
    name = "gemm1x1"
    kernel = "gemm1x1"
    uses_table = False

    def unsuitable(self, g):
        if not g.is_pointwise:
            return (f"needs a 1x1 kernel, stride 1 and no padding; got kernel {g.R}x{g.S}, "
                    f"stride {g.stride}, padding {g.padding}")
        return None

    def propose(self, planner, forced):
        g = planner.g
        return self.fitted(planner, self.make(
            planner, GemmBlocking(g.cols),
            "1x1 stride 1 unpadded: the input is its own im2col matrix"))

    def gemm_share(self, plan):
        # no gather and no buffer: half a gathering lowering's time, so it is
        # preferred whatever the threads (blas_threads_penalty < 2); but the
        # weight gradient's gather of a 1x1 layer is a copy beside a product
        # as deep as the batch's columns: gemm1x1 / stretch measured 0.91
        # (ResNet-50 2a_1x1), 0.90 (2b), 0.94 (4b_1x1) (fp32, 2 threads,
        # bench/steady_state.py), and at 0.5 the planner kept it against
        # fused where that took 0.52-0.78x its time (Tuning.blas_rate 0.5;
        # fused_weight_grad_pointwise was fitted against stretch and mapped).
        # Those ran OpenMP over images; on threaded BLAS (fewer images than
        # threads), not measured, it keeps 0.5 and so its preference.
        if self.kind == "weight_grad" and plan.blas_threads == 1:
            return 0.9
        return 0.5

    def too_small(self, planner):
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                "small for the 1x1 GEMM's accumulators even on one thread")

    def prepare_input(self, g, x):
        # each channel plane must be contiguous, planes far enough apart to be
        # a matrix's rows; else one copy
        readable = _planes_contiguous(x) and (
            g.C // g.groups == 1 or x.strides[1] >= g.H * g.W * x.itemsize)
        return x if readable else np.ascontiguousarray(x)

    def run(self, plan, ops, bufs, threads):
        if self.kind != "forward":
            return super().run(plan, ops, bufs, threads)
        from fastconv._kernels.gemm1x1 import conv2d_gemm1x1
        conv2d_gemm1x1(ops.x, ops.filters, ops.bias, ops.out, plan.geometry.groups, threads)


def _images_per_gemm(g, threads, tuning):
    """How many small images to stretch into one GEMM (1: no batching): in
    the forward pass and the input gradient their columns widen thin GEMMs,
    in the weight gradient they deepen shallow ones. Measured on ResNet-50
    (fp32, 1 thread per GEMM): a 512x4608 by 4x49 GEMM is 1.43x faster than
    four of 49 columns, 2x196 over 196 1.17x, 784 columns 0.95x."""
    if g.cols >= tuning.tile_min_cols or g.N < 2:
        return 1
    most = -(-tuning.tile_min_cols // g.cols)
    # no fewer batches than threads (counting groups as separate work)
    images = max(1, min(most, g.N // -(-threads // g.groups)))
    return -(-g.N // -(-g.N // images))  # even batches: no short last one


class Stretch(_Gemm):
    """Explicit im2col: each image's whole stretched matrix in a per-thread
    buffer, one GEMM per image and group (several small images per GEMM)."""
    name = "stretch"
    kernel = "stretch"

    def matrix_bytes(self, g, dtype):
        return g.rows * g.cols * dtype.itemsize

    def propose(self, planner, forced):
        """Whole stretched matrices, several small images per GEMM; the
        largest batch that fits the limit, or None. Under "auto", only with
        one buffer per thread (a single buffer and threaded BLAS is what
        mapped tiles do better); a matrix that spills the cache is left to
        the mapped tiles."""
        g, tuning = planner.g, planner.tuning
        matrix = self.matrix_bytes(g, planner.dtype)
        if forced:
            reason = "method='stretch' requested"
        elif matrix > tuning.stretch_cache_bytes:
            return None
        else:
            reason = (f"whole-image im2col ({g.rows}x{g.cols}, {format_bytes(matrix)}) fits "
                      "the cache and the limit")
        return self._largest_batch(planner, reason, single_buffer=forced,
                                   images=_images_per_gemm(g, planner.threads, tuning))

    def _largest_batch(self, planner, reason, single_buffer, images):
        g = planner.g
        while True:
            why = reason if images == 1 else (
                reason + f"; {images} images of {g.cols} columns per GEMM (thin GEMMs are slow)")
            plan = self.make(planner, GemmBlocking(g.cols, images), why)
            plan = self.fitted(planner, plan) if single_buffer else (
                plan if plan.workspace_bytes <= planner.limit else None)
            if plan is not None or images == 1:
                return plan
            images = max(1, images // 2)

    def candidates(self, planner):
        plans = super().candidates(planner)
        if _images_per_gemm(planner.g, planner.threads, planner.tuning) > 1:
            one = self._largest_batch(planner, "one image per GEMM", True, 1)
            plans += [one] if one is not None else []
        return plans

    def needed_bytes(self, planner):
        return self.bytes_for(planner, planner.g.cols)

    def too_small(self, planner):
        g = planner.g
        needed = self.needed_bytes(planner)
        return (f"method='stretch' needs {needed} bytes ({format_bytes(needed)}) of workspace "
                f"for one whole {g.rows}x{g.cols} im2col matrix, above memory_limit "
                f"{planner.limit} bytes ({format_bytes(planner.limit)}); use method='mapped' "
                "or a larger memory_limit")


class Mapped(_Gemm):
    """Index-mapped im2col: tiles of the stretched matrix gathered through
    the index map into a per-thread buffer, never the whole matrix."""
    name = "mapped"
    kernel = "mapped"

    def _why(self, planner, forced):
        g, dtype, limit = planner.g, planner.dtype, planner.limit
        if forced:
            return "method='mapped' requested; {n_tiles} tile(s) of {tile} columns per image"
        matrix = g.rows * g.cols * dtype.itemsize
        stretch_ws = self.bytes_for(planner, g.cols)
        if stretch_ws > limit:
            return (f"whole-image im2col needs {format_bytes(stretch_ws)} > limit "
                    f"{format_bytes(limit)}; " "{n_tiles} tile(s) of {tile} columns per image")
        if matrix > planner.tuning.stretch_cache_bytes:
            return (f"whole-image im2col ({format_bytes(matrix)}) would spill the cache; "
                    "{n_tiles} cache-sized tile(s) of {tile} columns per image")
        per_thread = self.bytes_for(planner, g.cols, threads=min(planner.threads, g.N * g.groups))
        if per_thread > limit:
            return (f"a whole-image im2col per thread needs {format_bytes(per_thread)} > limit "
                    f"{format_bytes(limit)}; " "{n_tiles} tile(s) of {tile} columns per image")
        return ("fewer images than threads: {n_tiles} tile(s) of {tile} columns per image, "
                "so each thread gets tiles")

    def propose(self, planner, forced):
        """The widest tile up to the cache-sized target that fits, or None."""
        g, tuning, threads = planner.g, planner.tuning, planner.threads
        why = self._why(planner, forced)
        per_col = g.rows * planner.dtype.itemsize
        target = max(min(tuning.tile_min_cols, g.cols),
                     min(g.cols, tuning.tile_target_bytes // max(per_col, 1)))
        # a batch of fewer images than threads: enough tiles for every thread
        # (OpenMP over tiles ran 1.3-1.7x faster than threaded BLAS on each
        # GEMM); the input gradient splits channels instead (see work)
        if self.kind != "input_grad":
            tiles_for_threads = -(-threads // max(1, g.N * g.groups))
            target = min(target, max(tuning.tile_min_cols, -(-g.cols // tiles_for_threads)))

        def tiled(tile, split=None):
            n_tiles = -(-g.cols // tile)
            tile = -(-g.cols // n_tiles)  # even tiles: no thin last GEMM; never wider
            return self.make(planner, GemmBlocking(tile),
                             why.format(tile=tile, n_tiles=n_tiles), split)

        images = _images_per_gemm(g, threads, tuning)
        if images > 1 and target >= g.cols:
            # a tile holds whole small images: several per GEMM, as stretch does
            plan = self.make(planner, GemmBlocking(g.cols, images),
                             why.format(tile=g.cols, n_tiles=1)
                             + f"; {images} images per GEMM (thin GEMMs are slow)")
            if plan.workspace_bytes <= planner.limit:
                return plan
        plan = tiled(target)
        if plan.workspace_bytes <= planner.limit:
            return plan
        # narrower tiles: as wide as the limit allows with one buffer per
        # thread, else with a single buffer and threaded BLAS
        floor = min(tuning.tile_floor_cols, g.cols)
        for buffers, split in ((threads, None), (1, (1, threads))):
            fixed = self.bytes_for(planner, 0, threads=buffers)
            affordable = ((planner.limit - fixed) // (buffers * per_col)
                          if planner.limit > fixed else 0)
            if affordable >= floor:
                plan = tiled(min(target, affordable), split)
                if plan.workspace_bytes <= planner.limit:
                    return plan
        return None

    def needed_bytes(self, planner):
        return self.bytes_for(planner, min(planner.tuning.tile_floor_cols, planner.g.cols))

    def too_small(self, planner):
        g = planner.g
        floor = min(planner.tuning.tile_floor_cols, g.cols)
        needed = self.needed_bytes(planner)
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                f"small: the narrowest efficient mapped tile ({floor} columns x {g.rows} rows, "
                f"one thread) needs {needed} bytes ({format_bytes(needed)})")


# --------------------------------------------------------------------------
# fastconv's own GEMM: packing the B panel is the index map

@dataclasses.dataclass(frozen=True)
class FusedBlocking:
    """The fused GEMM's blocks: kc rows of the stretched matrix (depth), nc
    columns, mc filters per packed block, the micro-kernel's ISA, and
    whether it reads the weights in place rather than packed (forward), and
    x's channel planes (forward of a pointwise layer: B is x itself)."""
    kc: int
    nc: int
    mc: int
    isa: str
    weights_in_place: bool = False
    x_in_place: bool = False


def fused_isa(requested=None):
    """The fused kernels' instruction set: `requested` (Tuning.isa), else
    FASTCONV_ISA, else the best this CPU and build run. A forced set the CPU
    cannot run is an error naming the ones it can."""
    import os
    from fastconv._kernels import fused
    supported = fused.supported_isas()
    wanted = requested or os.environ.get("FASTCONV_ISA", "").strip().lower() or None
    if wanted is None:
        return supported[0]
    if wanted not in supported:
        raise ValueError(f"FASTCONV_ISA={wanted!r} is not one this CPU and build run: "
                         f"{supported}")
    return wanted


def _zero_padding_only(g):
    """Why a lowering with its own zero-padding logic (not the shared index
    map's walk) cannot run g, or None."""
    if g.padding_mode == "zeros":
        return None
    walkers = [e.name for e in TABLE["forward"] if isinstance(e, _Gemm) and e.uses_table]
    return (f"pads with zeros only; padding_mode={g.padding_mode!r} runs on the lowerings "
            f"that gather through the index map ({', '.join(walkers)})")


def _kernel_geometry(kind, g):
    """The convolution a forward kernel runs for `kind`: g, or for the input
    gradient its adjoint (fused and direct compute it as a forward pass)."""
    return _adjoint(g) if kind == "input_grad" else g


def _adjoint_operands(plan, ops):
    """(x, out, bias, geometry) of the input gradient run as its adjoint's
    forward pass (fused, direct, winograd): the output gradient as the input, the
    input gradient as the output, each viewed as the forward kernel takes
    them, no bias, and the adjoint's geometry."""
    g = plan.geometry
    return (ops.grad.reshape(g.N, g.K, g.Ho, g.Wo), ops.out.reshape(g.N, g.C, g.H * g.W),
            np.zeros(0, plan.dtype), _adjoint(g))


def _forward_pass_operands(plan, ops, bufs, threads):
    """(x, filters, bias, out, geometry, flip) of the forward pass a kernel
    that takes the weights as filter rows (fused) runs for plan:
    the call's own operands, or for the input gradient its adjoint's
    (_adjoint_operands) with each group's weights transposed into
    bufs["adjoint_weight"] (K/groups x C/groups x taps to C/groups x
    K/groups x taps) and the kernel reversed (again, if flip reversed it)."""
    if plan.kind != "input_grad":
        return ops.x, ops.filters, ops.bias, ops.out, plan.geometry, plan.flip
    g = plan.geometry
    filters = bufs["adjoint_weight"]
    from fastconv._kernels import fused
    fused.adjoint_filters(ops.filters, filters, g.groups, g.R * g.S, threads)
    x, out, bias, adjoint = _adjoint_operands(plan, ops)
    return x, filters, bias, out, adjoint, not plan.flip


def _adjoint_weight_buffer(adjoint, dtype):
    """The buffer _forward_pass_operands transposes the weights into, for
    the adjoint geometry: {"adjoint_weight": (shape, dtype)}."""
    return {"adjoint_weight": ((adjoint.K, adjoint.rows), dtype)}


def _adjoint_unsuitable(g):
    """Why g's input gradient is not a forward convolution (_adjoint), or None."""
    if g.stride != (1, 1):
        return (f"computes the input gradient of stride-1 convolutions only (as a "
                f"forward pass); got stride {g.stride[1] if g.spatial_dims == 1 else g.stride}")
    spans = g.spans
    if any(p > span for pair, span in zip(g.padding, spans) for p in pair):
        return (f"computes the input gradient only where no side's padding exceeds "
                f"the kernel's span {spans}; got padding {g.padding}")
    if (g.H + sum(g.padding[0]) - spans[0], g.W + sum(g.padding[1]) - spans[1]) != (g.Ho, g.Wo):
        # a transposed convolution's output_padding: rows no output reads
        return (f"computes the input gradient only where the input is the stride-1 "
                f"preimage of the output (no output_padding); got input "
                f"{(g.H, g.W)} for output {(g.Ho, g.Wo)}")
    return None


def _forward_kernel_unsuitable(kind, g):
    """Why a lowering that runs a forward kernel for every kind it computes
    (fused, direct) cannot compute g, or None: for the input gradient the
    adjoint's conditions first, then zero padding only."""
    return (_adjoint_unsuitable(g) if kind == "input_grad" else None) or _zero_padding_only(g)


@functools.lru_cache(maxsize=64)
def _adjoint(g):
    """The forward convolution that is g's input gradient when g has stride
    1: grad_x (N, C, H, W) = conv(grad_output (N, K, Ho, Wo), each group's
    weights transposed to (C/groups) x (K/groups) and reversed), dilated as
    g, padded on each side by the kernel's span less g's padding there
    (Fused.unsuitable refuses wider padding); its output is H x W."""
    from fastconv._params import conv_geometry
    padding = tuple((span - lo, span - hi) for (lo, hi), span in zip(g.padding, g.spans))
    adjoint = conv_geometry((g.N, g.K, g.Ho, g.Wo), (g.C, g.K // g.groups, g.R, g.S),
                            stride=1, padding=padding, dilation=g.dilation, groups=g.groups)
    assert (adjoint.Ho, adjoint.Wo) == (g.H, g.W), (g, adjoint)
    return adjoint


class Fused(Lowering):
    """fastconv's own GEMM in the BLIS structure (NC, KC, MC blocks; weights
    packed once into MR-row panels; an MR x NR register-blocked micro-kernel
    with FMA per ISA), where packing each KC x NC panel of the stretched
    matrix *is* the gather through the index map: no im2col buffer and no
    second copy by BLAS; bias and the store into the output fused into the
    micro-kernel (fastconv/_kernels/fused.pyx, _fused_*.h).

    The weight gradient runs the same micro-kernel on grad_w = G @ B^T, with
    B^T's panels packed through the index map (transposing: an NR-wide
    micro-panel holds NR rows of the stretched matrix per column) and no
    per-thread accumulators: each item owns a block of grad_w.

    The input gradient of a stride-1 convolution is itself a forward
    convolution (_adjoint): of the output gradient, with each group's
    weights transposed (C x K/groups) and reversed, padded by the kernel's
    span less the forward padding. It runs as that forward pass, straight
    into grad_x: no col2im scatter, no product tiles."""
    name = "fused"
    kernel = "fused"
    uses_blas = False
    writes_whole_weight_grad = True   # each item owns its block of grad_w

    def unsuitable(self, g):
        return _forward_kernel_unsuitable(self.kind, g)

    @property
    def _runs_forward_kernel(self):
        """The forward pass and the input gradient (its adjoint's forward
        pass) run conv2d_fused, which can read the weights in place."""
        return self.kind != "weight_grad"

    def defaults(self, planner):
        from fastconv._kernels import fused
        isa = fused_isa(planner.tuning.isa)
        if self.kind == "weight_grad":
            return isa, fused.weight_grad_blocking(planner.dtype, isa, planner.g.cols)
        return isa, fused.blocking(planner.dtype, isa)

    def propose(self, planner, forced):
        g = _kernel_geometry(self.kind, planner.g)
        isa, defaults = self.defaults(planner)
        nr = defaults["NR"]
        kc, nc, mc = defaults["KC"], defaults["NC"], defaults["MC"]
        threads = planner.threads if _machine.openmp_enabled() else 1
        # few columns for the weights: their packing pass is not amortised
        in_place = (self._runs_forward_kernel
                    and g.N * g.cols <= planner.tuning.fused_in_place_max_cols)
        reason = (f"fastconv's own GEMM ({isa} micro-kernel {defaults['MR']}x{nr}), "
                  "panels gathered through the index map"
                  + ("; weights read in place (few columns to amortise packing them)"
                     if in_place else ""))
        while True:
            x_in_place = self._reads_x_in_place(g, kc, nr, planner)
            plan = planner.plan(self, FusedBlocking(kc, nc, mc, isa, in_place, x_in_place),
                                threads, 1, reason + ("; x's channel rows read in place "
                                                      "where contiguous" if x_in_place else ""))
            if plan.workspace_bytes <= planner.limit:
                return plan
            # a tighter limit: the weights in place (no packed copy), then
            # narrower panels, then shallower ones, then one thread
            if self._runs_forward_kernel and not in_place:
                in_place = True
                reason += "; weights read in place to fit the limit"
            elif nc > nr:
                nc = max(nr, nc // 2 // nr * nr)
            elif kc > 16:
                kc = max(16, kc // 2)
            elif threads > 1:
                threads = 1
            else:
                return None

    def _reads_x_in_place(self, g, kc, nr, planner):
        """A pointwise forward kernel whose micro-panel of B (depth kc x NR
        columns of x's channel rows) is small enough to be re-read from x by
        every panel of filters: the kernel reads it there, not from a packed
        copy (conv2d_fused's b_in_place; at run time it still packs an x
        whose rows are not contiguous). Not where a contiguous x's channel
        planes are a multiple of 4 KiB apart: the panel's rows would then
        share a few cache sets and evict each other (as the weight
        gradient's rows of G, G_ALIASED_ROW_BYTES)."""
        from fastconv._kernels import fused
        itemsize = np.dtype(planner.dtype).itemsize
        panel = min(kc, g.rows) * nr * itemsize
        return (self._runs_forward_kernel and g.is_pointwise
                and panel <= planner.tuning.fused_x_in_place_panel_bytes
                and (g.H * g.W * itemsize) % fused.G_ALIASED_ROW_BYTES != 0)

    def cost(self, plan, tuning):
        g = _kernel_geometry(self.kind, plan.geometry)
        m, _, k = self.gemm_shape(plan)
        thin = _thin_gemm_factor(m, k, tuning)
        base = plan.flops / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads) * thin
        if self.kind == "weight_grad":
            return base * self.weight_grad_factor(plan, tuning)
        min_cols = tuning.fused_pointwise_min_cols
        if blas_rate(tuning) < 1:
            min_cols = tuning.fused_pointwise_min_cols_narrow_blas
        if g.is_pointwise and g.N * g.cols >= min_cols:
            rate = tuning.fused_pointwise_rate  # against gemm1x1's half-traffic model
        elif g.R * g.S > 1 and g.N * g.cols >= tuning.fused_min_cols:
            rate = _micro_kernel_rate(g.rows, tuning)   # with a spatial kernel
        else:
            rate = tuning.fused_shallow_rate
        # the batch's columns run in NR-wide micro-tiles (the last one
        # narrowed to whole vectors): few columns, much padding (ResNet-50
        # 5b, one 7x7 image: 49 columns in a 48-wide tile and a 16-wide
        # one), which costs in the micro-kernel's share of the run (~70 % by
        # perf on 5b and 4b), not in packing
        from fastconv._kernels import fused
        columns = max(1, g.N * g.cols)
        padding = fused.padded_columns(columns, plan.dtype, plan.blocking.isa) / columns
        # and filters in MR-row panels: an input gradient's "filters" are the
        # input channels (paper_mnist's one channel: 1 row in 8)
        mr = fused.blocking(plan.dtype, plan.blocking.isa)["MR"]
        filters = max(1, g.K // g.groups)
        padding *= -(-filters // mr) * mr / filters
        return base / rate * (1 - tuning.fused_kernel_share + tuning.fused_kernel_share * padding)

    def weight_grad_factor(self, plan, tuning):
        """Time of the fused weight gradient over the BLAS lowerings' model:
        its transposing gather of B^T (once per filter block) and packing of
        G (once per block of grad_w's columns), per multiply-add, weigh
        against a faster product (see Tuning.fused_weight_grad_*), and tiles
        padded to MR filters and NR rows (the last panel narrowed to whole
        vectors) compute zeros."""
        from fastconv._kernels import fused
        g, b = plan.geometry, plan.blocking
        kg, depth = g.K // g.groups, g.N * g.cols
        sizes = fused.blocking(plan.dtype, b.isa)
        mr = sizes["MR"]
        padded = (-(-kg // mr) * mr) * fused.padded_columns(g.rows, plan.dtype, b.isa)
        macs = g.groups * padded * depth
        if macs == 0:
            return 1.0   # nothing to compute (the executor returns zeros)
        # B^T gathered once per block of filters; G packed once per block of
        # rows, or only its partial last panel of filters where the kernel
        # reads G's rows in place
        g_packed = kg % mr if fused.weight_grad_reads_grad_in_place(
            g.cols, depth, b.kc, plan.dtype) else kg
        packed = g.groups * depth * (g.rows * -(-kg // b.mc) + g_packed * -(-g.rows // b.nc))
        # (float64 packs half the vectors per element but multiplies at half
        # the rate too: the same per MAC; halving it sent ResNet-50's stem to
        # fused at 1.27x mapped's time)
        per_mac = packed / macs
        factor = ((tuning.fused_weight_grad_rate + tuning.fused_weight_grad_gather * per_mac)
                  * padded / (kg * g.rows))
        return factor * (tuning.fused_weight_grad_pointwise if g.R * g.S == 1 else 1.0)

    def gemm_shape(self, plan):
        """(M, N, K): the forward pass as the BLAS lowerings'; the weight
        gradient filters x rows of the stretched matrix x the batch's columns."""
        g = _kernel_geometry(self.kind, plan.geometry)
        if self.kind == "weight_grad":
            return (g.K // g.groups, g.rows, g.N * g.cols)
        return (g.K // g.groups, g.cols, g.rows)

    def buffers(self, g, dtype, blocking, threads):
        from fastconv._kernels import fused
        g = _kernel_geometry(self.kind, g)
        table = (row_table_shape(g), np.intp)
        if self.kind == "weight_grad":
            # per thread: a KC x NC panel of B^T and an MC x KC panel of G
            per_thread = fused.weight_grad_buffer_sizes(g.K, g.rows, g.groups, blocking.kc,
                                                        blocking.nc, blocking.mc, dtype,
                                                        blocking.isa)
            return {"workspace": ((threads, per_thread), dtype), "table": table}
        packed, per_thread = fused.buffer_sizes(g.K, g.rows, g.groups, blocking.kc, blocking.nc,
                                                dtype, blocking.isa, blocking.weights_in_place)
        # the packed weights (or their edge rows), the packed panels of B, the row table
        bufs = {"packed_weight": ((packed,), dtype), "workspace": ((threads, per_thread), dtype),
                "table": table}
        if self.kind == "input_grad":
            bufs.update(_adjoint_weight_buffer(g, dtype))
        return bufs

    def needed_bytes(self, planner):
        isa, defaults = self.defaults(planner)
        smallest = FusedBlocking(16, defaults["NR"], defaults["MR"], isa,
                                 weights_in_place=self._runs_forward_kernel)
        return buffer_bytes(self.buffers(planner.g, planner.dtype, smallest, 1))

    def too_small(self, planner):
        needed = self.needed_bytes(planner)
        held = ("smallest panels" if self.kind == "weight_grad"
                else "weights read in place, smallest panel")
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                f"small: the fused lowering ({held}, one thread, row table) "
                f"needs {needed} bytes ({format_bytes(needed)})")

    def describe(self, plan):
        b = plan.blocking
        m, n, k = self.gemm_shape(plan)
        return (f"fused GEMMs {m}x{k} @ {k}x{n} (own {b.isa} micro-kernel; KC {b.kc}, "
                f"NC {b.nc}, MC {b.mc}" + ("; weights in place" if b.weights_in_place else "")
                + ("; x in place where its rows are contiguous" if b.x_in_place else "")
                + ")")

    def run(self, plan, ops, bufs, threads):
        from fastconv._kernels import fused
        g, b = plan.geometry, plan.blocking
        if self.kind == "weight_grad":
            fused.conv2d_fused_weight_grad(ops.x, ops.grad, ops.out, bufs["workspace"],
                                           *g.kernel_args, g.groups, plan.flip, b.kc, b.nc,
                                           b.mc, b.isa, threads, row_table=bufs["table"])
            return
        # (the input gradient: its adjoint's forward pass)
        x, filters, bias, out, g, flip = _forward_pass_operands(plan, ops, bufs, threads)
        fused.conv2d_fused(x, filters, bias, out, bufs["packed_weight"],
                           bufs["workspace"], *g.kernel_args, g.groups, flip,
                           b.kc, b.nc, b.mc, b.isa, threads, row_table=bufs["table"],
                           weights_in_place=b.weights_in_place, b_in_place=b.x_in_place)


# --------------------------------------------------------------------------
# direct kernels, no GEMM

@dataclasses.dataclass(frozen=True)
class DirectBlocking:
    """A direct kernel's work items (each one output plane, or one filter)."""
    work_items: int


class Depthwise(Lowering):
    """groups == C (any channel multiplier), or grouped with few channels per
    group: each output channel reads one input channel (or its group's few),
    so the GEMM would be M = 1 per channel (or a few), memory-bound or run
    partly empty. A vectorised sliding window per plane instead (forward
    and both gradients), no workspace."""
    name = "depthwise"
    kernel = "depthwise"
    uses_blas = False

    # channels per group it takes: the kernel's DW_GROUP_MAX_PLANES
    # (depthwise.GROUP_MAX_CHANNELS; a test checks they agree), here so that
    # the table is read without importing the compiled kernels (as
    # general_methods does on importing fastconv.report)
    group_max_channels = 16

    def unsuitable(self, g):
        if g.groups != g.C and g.C // g.groups > self.group_max_channels:
            return (f"needs groups == C (a depthwise convolution) or at most "
                    f"{self.group_max_channels} channels per group; got groups "
                    f"{g.groups} with C = {g.C}")
        return _zero_padding_only(g)

    def work_items(self, g, dtype):
        # forward: see depthwise.forward_items (chunks of positions where a
        # channel multiplier runs over gathered taps); input gradient:
        # (image, input channel), or blocks of a group's channels; weight
        # gradient: one filter's plane of one channel over the batch
        from fastconv._kernels import depthwise

        if self.kind == "forward":
            chunks = depthwise.forward_panel_chunks(g.H, g.W, g.Ho, *g.kernel_args,
                                                    g.K // g.C if g.C else 1,
                                                    np.dtype(dtype).itemsize) if g.C else 0
            bands = g.groups != g.C and depthwise.grouped_path(
                g.H, g.W, g.Ho, *g.kernel_args, False, g.C // g.groups,
                np.dtype(dtype).itemsize) == "bands"
            return depthwise.forward_items(g.N, g.C, g.K, chunks if g.groups == g.C else 0,
                                           g.groups, bands)
        if self.kind == "input_grad":
            return depthwise.input_grad_items(g.N, g.C, g.groups, *g.stride)
        return g.K * (g.C // g.groups)

    def propose(self, planner, forced):
        items = self.work_items(planner.g, planner.dtype)
        threads = max(1, min(planner.threads, items)) if _machine.openmp_enabled() else 1
        g = planner.g
        what = ("groups == C" if g.groups == g.C
                else f"{g.C // g.groups} channels per group")
        plan = planner.plan(self, DirectBlocking(items), threads, 1,
                            f"{what}: direct sliding-window kernel, no GEMM, no workspace")
        return plan if plan.workspace_bytes <= planner.limit else None

    def cost(self, plan, tuning):
        # against thin GEMMs (see Tuning.gemm_full_rate_dim): measured 0.13-0.78x
        # mapped's time at 1 filter per group, stride 2 the worst
        g = plan.geometry
        seconds = plan.flops / (_GEMM_FLOPS_PER_THREAD * self.rate(g, plan.dtype, tuning))
        if self._grouped_unit_stride_weight_grad(g):
            # and a cost per pair of filter and input planes (their loops' set-up)
            seconds += g.N * g.K * (g.C // g.groups) * tuning.direct_group_grad_pair_seconds
        return seconds / plan.kernel_threads

    def _grouped_unit_stride_weight_grad(self, g):
        """the weight gradient of a grouped (not depthwise) layer at stride 1
        (Tuning.direct_group_grad_rate)"""
        return self.kind == "weight_grad" and g.groups != g.C and g.stride == (1, 1)

    def rate(self, g, dtype, tuning):
        """The kernel's rate against a full-rate GEMM: direct_rate one filter
        at a time, up to direct_block_rate where the forward pass computes
        blocks of a channel multiplier's filters together; grouped,
        direct_group_rate where the fixed-size kernels take blocks of planes
        (depthwise.grouped_path "blocks", at most GROUP_MAX_CHANNELS input
        planes each), direct_group_band_rate where blocks of filters run
        over padded bands ("bands"), else direct_rate over the input planes
        per output plane (the generic kernels, plane by plane); a grouped
        weight gradient at stride 1 direct_group_grad_rate (cost adds a
        term per pair of planes). One plane at a
        time, each loaded vector meets few multiply-adds, so wider FMAs gain
        it no more than BLAS: direct_rate counts at the BLAS's rate
        (Tuning.blas_rate); the blocks run at their own."""
        from fastconv._kernels import depthwise

        one_plane = tuning.direct_rate * blas_rate(tuning)
        if g.groups != g.C:
            if self.kind == "weight_grad":
                return (tuning.direct_group_grad_rate
                        if self._grouped_unit_stride_weight_grad(g) else one_plane)
            # planes: input planes summed into each output plane; together:
            # output planes made from each input vector (forward: the
            # group's filters; input gradient: its channels)
            cg, kg = g.C // g.groups, g.K // g.groups
            planes, together = (cg, kg) if self.kind == "forward" else (kg, cg)
            path = depthwise.grouped_path(g.H, g.W, g.Ho, *g.kernel_args,
                                          self.kind == "input_grad", planes,
                                          np.dtype(dtype).itemsize)
            if together >= 2 and path == "blocks":
                return tuning.direct_group_rate
            # (bands of more planes, or blocks of fewer filters, load each
            # vector for too few multiply-adds: MTCNN's first layer's input
            # gradient, 32 planes into 3, took 1.39x stretch's time; and a
            # first layer's wide kernel over bands, groups = 1, ran below
            # fused: ResNet-50's stem 17.6 ms against 12.0)
            if (together >= 4 and planes <= self.group_max_channels
                    and g.groups > 1 and path == "bands"):
                return (tuning.direct_group_band_rate if self.kind == "forward"
                        else tuning.direct_group_band_grad_rate)
            return one_plane / max(1, planes)
        block = (depthwise.forward_block_filters(g.K // g.C, g.R, g.S, g.stride[1])
                 if self.kind == "forward" else 1)
        return one_plane + ((tuning.direct_block_rate - one_plane)
                            * (block - 1) / (depthwise.FORWARD_BLOCK_MAX - 1))

    def buffers(self, g, dtype, blocking, threads):
        return {}

    def too_small(self, planner):
        return "the depthwise kernel needs no workspace"  # never: it always fits

    def describe(self, plan):
        return f"direct depthwise, {plan.blocking.work_items} work items"

    def run(self, plan, ops, bufs, threads):
        from fastconv._kernels import depthwise

        g = plan.geometry
        if self.kind == "forward":
            depthwise.conv2d_depthwise(ops.x, ops.filters, ops.bias, ops.out, *g.kernel_args,
                                       plan.flip, threads)
        elif self.kind == "input_grad":
            depthwise.conv2d_depthwise_input_grad(ops.grad, ops.filters, ops.out, *g.kernel_args,
                                                  plan.flip, threads)
        else:
            depthwise.conv2d_depthwise_weight_grad(ops.x, ops.grad, ops.out, *g.kernel_args,
                                                   plan.flip, threads)


# --------------------------------------------------------------------------
# the direct convolution: no gathered panel, padding skipped

@dataclasses.dataclass(frozen=True)
class DirectConvBlocking:
    """The direct convolution's tile (MR pixels x NR filters) and ISA; for
    the weight gradient, a chunk's output rows and a pass's tiles (0: the
    kernel's defaults; fewer under a tight memory limit); for the others,
    pack_in_items (None: the kernel's rule, direct.packs_in_items; True
    under a limit the shared panel does not fit: each work item packs a
    channel block at a time into its thread's workspace); for the weight
    gradient, lanes: the lanes kernel (pixels along the vector lanes, the
    output gradient read in place; direct.weight_grad_lanes) rather than
    the panel kernel."""
    mr: int
    nr: int
    isa: str
    chunk_rows: int = 0
    pass_tiles: int = 0
    pack_in_items: bool = None
    lanes: bool = False


def _inside_share(out_len, in_len, taps, stride, pad, dil):
    """Along one axis, the share of (output position, tap) pairs inside the
    input: each position's valid taps (the direct kernel's own pixel
    classes) over all taps."""
    from fastconv._kernels.direct import pixel_classes
    if out_len == 0 or taps == 0:
        return 1.0
    ids, ranges = pixel_classes(out_len, in_len, taps, stride, pad, dil)
    return float((ranges[ids, 1] - ranges[ids, 0]).mean()) / taps


def valid_tap_fraction(g):
    """The share of the stretched matrix's elements that are inside the image
    (the rest are padding): the two axes' _inside_share multiplied."""
    (pad_top, _), (pad_left, _) = g.padding
    return (_inside_share(g.Ho, g.H, g.R, g.stride[0], pad_top, g.dilation[0])
            * _inside_share(g.Wo, g.W, g.S, g.stride[1], pad_left, g.dilation[1]))


class DirectConv(Lowering):
    """The convolution on the input in place (oneDNN's direct kernels,
    XNNPACK's indirect GEMM): a tile of MR output pixels by NR filters, per
    input channel and kernel tap each pixel's input value broadcast into NR
    filters' packed weights. The stretched matrix's element is at a channel
    offset + a tap offset + a pixel offset, so nothing is gathered; pixels
    are grouped by which taps fall in the padding, and those taps are
    skipped, not multiplied (fastconv/_kernels/direct.pyx, _direct_*.h).

    The input gradient of a stride-1 convolution runs as its adjoint's
    forward pass (see Fused), the kernel packing each group's weights
    transposed straight from the forward ones: no transposed copy.

    The weight gradient runs the same tile with the roles renamed: up to MR
    taps of one kernel row x NR filters, summed over the batch's output
    pixels, the output gradient transposed per chunk of output rows and
    each tap's input broadcast from a zero-padded copy of the chunk's input
    rows: nothing gathered per (tap, pixel), as fused's B^T is."""
    name = "direct"
    kernel = "direct"
    uses_blas = False
    writes_whole_weight_grad = True   # every tile is stored whole (weight gradient)

    def unsuitable(self, g):
        return _forward_kernel_unsuitable(self.kind, g)

    def propose(self, planner, forced):
        from fastconv._kernels import direct
        isa = fused_isa(planner.tuning.isa)
        g = _kernel_geometry(self.kind, planner.g)
        # narrow tiles for few filters, medium ones for 33-48, 65-96, ...
        # (the weight gradient keeps wide and narrow)
        sizes = direct.blocking(planner.dtype, isa, g.K // g.groups,
                                medium=self.kind != "weight_grad")
        threads = planner.threads if _machine.openmp_enabled() else 1
        lanes = False
        if self.kind == "weight_grad":
            lanes = direct.weight_grad_lanes(g.K, g.C, g.R, g.S, g.groups, g.stride[1],
                                             planner.dtype, isa, H=g.H, Wo=g.Wo)
            if lanes:
                sizes = direct.weight_grad_tile(planner.dtype, isa, g.K // g.groups, lanes=True)
                reason = (f"direct weight gradient ({isa} lanes kernel, {sizes['MR']} taps x "
                          f"{sizes['NR']} filters, pixels along the lanes), the output "
                          "gradient read in place: few taps per filter block, or filters for "
                          "half a tile, to spread a transposed copy over")
            else:
                reason = (f"direct weight gradient ({isa} kernel, {sizes['MR']} taps x "
                          f"{sizes['NR']} filters), input rows broadcast in place of a "
                          "gathered B^T")
        else:
            reason = (f"direct convolution ({isa} kernel, {sizes['MR']} pixels x "
                      f"{sizes['NR']} filters), padding taps skipped")
        blocking = DirectConvBlocking(sizes["MR"], sizes["NR"], isa, lanes=lanes)
        # the smallest chunks tried (for the lanes kernel on one thread)
        smallest = blocking, reason
        while True:
            plan = planner.plan(self, blocking, threads, 1, reason)
            if plan.workspace_bytes <= planner.limit:
                return plan
            # a tighter limit: the weights packed by each item (a shared
            # panel is packed once but held whole: up to
            # direct.SHARED_PANEL_MAX_BYTES), or for the weight gradient one
            # output row per chunk and one tile per pass; then one thread
            if (self.kind != "weight_grad" and blocking.pack_in_items is None
                    and not direct.packs_in_items(g.K, g.C, g.R, g.S, g.groups,
                                                  planner.dtype, isa)):
                blocking = dataclasses.replace(blocking, pack_in_items=True)
                reason += "; weights packed by each work item to fit the limit"
            elif self.kind == "weight_grad" and blocking.chunk_rows != 1:
                blocking = dataclasses.replace(blocking, chunk_rows=1, pass_tiles=1)
                reason += "; chunks of one row, one tile a pass to fit the limit"
                smallest = blocking, reason
            elif blocking.lanes:
                # (a lanes tile holds a vector of partial sums per tap and filter)
                panel = direct.weight_grad_tile(planner.dtype, isa, g.K // g.groups)
                blocking = dataclasses.replace(blocking, mr=panel["MR"], lanes=False)
                reason += "; the panel kernel, whose tiles are smaller, to fit the limit"
            elif threads > 1:
                threads = 1
                if lanes:
                    # one thread's lanes tiles may fit where the panel
                    # kernel's chunks (of whole filter blocks) do not
                    blocking, reason = smallest
            else:
                return None

    def cost(self, plan, tuning):
        # the multiply-adds inside the image, filters padded to NR, at the
        # kernel's rate (see Tuning.direct_conv_rate)
        g, b = _kernel_geometry(self.kind, plan.geometry), plan.blocking
        kg = max(1, g.K // g.groups)
        filters = -(-kg // b.nr) * b.nr / kg
        if self.kind == "weight_grad":
            return self._weight_grad_cost(plan, tuning, filters)
        shallow = max(1.0, tuning.direct_conv_min_depth / max(1, g.rows))
        if g.R * g.S == 1:
            layout = tuning.direct_conv_pointwise_factor
        else:
            layout = tuning.direct_conv_strided_factor if g.stride[1] > 1 else 1.0
        return (plan.flops * valid_tap_fraction(g) * filters * shallow * layout
                / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads * tuning.direct_conv_rate)
                * _thin_gemm_factor(kg, g.rows, tuning))

    def _weight_grad_cost(self, plan, tuning, filters):
        """The weight gradient: the multiply-adds of the output rows whose
        input row is inside the image (the others are skipped by row tiles),
        at the panel or the lanes kernel's rate (_panel_weight_grad_work,
        _lanes_weight_grad_work), plus per element of the gradient each
        thread's tiles of it parked, summed and stored, however small the
        batch (Tuning.direct_weight_grad_weights)."""
        g, b = plan.geometry, plan.blocking
        (pad_top, _), _ = g.padding
        # (as fitted: the rows inside, also for tiles across kernel rows,
        # which compute the padding's rows too)
        inside = _inside_share(g.Ho, g.H, g.R, g.stride[0], pad_top, g.dilation[0])
        work = (self._lanes_weight_grad_work if b.lanes
                else self._panel_weight_grad_work)(plan, tuning, filters)
        return ((plan.flops * inside * work + tuning.direct_weight_grad_weights * g.K * g.rows)
                / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads))

    def _panel_weight_grad_work(self, plan, tuning, filters):
        """The panel kernel's time per multiply-add inside: filters padded to
        NR, at Tuning.direct_weight_grad_rate, slower where a tile has few
        taps (each pixel's NV vector loads of the output gradient then serve
        fewer multiply-adds), where a filter block has few taps in all (its
        chunk of the output gradient, transposed once, serves them) and
        where a chunk has few pixels (each call of the tile on a chunk loads
        and stores its accumulators)."""
        from fastconv._kernels import direct
        g, b = plan.geometry, plan.blocking
        _, tiles, flat = direct.weight_grad_units(g.K, g.C, g.R, g.S, g.groups, plan.dtype,
                                                  b.isa)
        taps = (g.R * g.S if flat else g.S) / tiles   # taps per tile
        depth = max(1, g.rows)          # taps per filter block (C/groups x R x S)
        chunk = direct.weight_grad_blocking(plan.dtype, b.isa, g.K // g.groups, g.Ho, g.Wo,
                                            b.chunk_rows, 0, b.pass_tiles)
        pixels = chunk["rows"] * chunk["cols"]   # summed by one call of the tile
        return (filters * (1 + tuning.direct_weight_grad_call / pixels)
                * (1 + tuning.direct_weight_grad_tile_taps / taps)
                * (1 + tuning.direct_weight_grad_depth / depth)
                / tuning.direct_weight_grad_rate)

    def _lanes_weight_grad_work(self, plan, tuning, filters):
        """The lanes kernel's: each row's pixels in whole vectors (the last
        one masked), at Tuning.direct_weight_grad_lanes_rate. Nothing is
        packed, and the filters run 4 at a time then one at a time, so
        neither the panel kernel's depth term nor its filters padded to NR
        apply."""
        from fastconv._kernels import direct
        g, b = plan.geometry, plan.blocking
        lanes = direct.weight_grad_tile(plan.dtype, b.isa, g.K // g.groups, lanes=True)["L"]
        lane_fill = g.Wo / (-(-g.Wo // lanes) * lanes)
        return 1 / (lane_fill * tuning.direct_weight_grad_lanes_rate)

    def buffers(self, g, dtype, blocking, threads):
        from fastconv._kernels import direct
        g = _kernel_geometry(self.kind, g)
        if self.kind == "weight_grad":
            per_thread = direct.weight_grad_buffer_sizes(
                g.N, g.K, g.C, g.H, g.W, g.Ho, g.Wo, g.R, g.S, g.groups, *g.stride,
                *g.dilation, dtype, blocking.isa, chunk_rows=blocking.chunk_rows,
                pass_tiles=blocking.pass_tiles, lanes=blocking.lanes)
            return {"workspace": ((threads, per_thread), dtype)}
        (pad_top, _), (pad_left, _) = g.padding
        packed, tables, per_thread = direct.buffer_sizes(
            g.N, g.K, g.C, g.H, g.W, g.Ho, g.Wo, g.R, g.S, g.groups, *g.stride, pad_top,
            pad_left, *g.dilation, dtype, blocking.isa, pack_in_items=blocking.pack_in_items)
        return {"packed_weight": ((packed,), dtype), "tables": ((tables,), _INDEX),
                "workspace": ((threads, per_thread), dtype)}

    def too_small(self, planner):
        sizes = self.buffers(planner.g, planner.dtype,
                             DirectConvBlocking(1, 1, fused_isa(planner.tuning.isa), 1, 1,
                                                pack_in_items=self.kind != "weight_grad"), 1)
        needed = buffer_bytes(sizes)
        held = ("accumulators, a chunk of the output gradient and of the input rows, one thread"
                if self.kind == "weight_grad" else "packed weights, pixel tables, one thread")
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                f"small: the direct convolution ({held}) needs {needed} bytes "
                f"({format_bytes(needed)})")

    def describe(self, plan):
        b = plan.blocking
        if self.kind == "weight_grad":
            return (f"direct {b.isa} {'lanes ' if b.lanes else ''}kernel, tiles of {b.mr} taps "
                    f"x {b.nr} filters summed over the batch")
        return (f"direct {b.isa} kernel, tiles of {b.mr} pixels x {b.nr} filters, "
                f"{valid_tap_fraction(_kernel_geometry(self.kind, plan.geometry)):.0%} of the taps inside "
                "the image")

    def run(self, plan, ops, bufs, threads):
        from fastconv._kernels import direct
        g = plan.geometry
        if self.kind == "weight_grad":
            b = plan.blocking
            direct.conv2d_direct_weight_grad(ops.x, ops.grad, ops.out, bufs["workspace"],
                                             *g.kernel_args, g.groups, plan.flip, b.isa,
                                             threads, chunk_rows=b.chunk_rows,
                                             pass_tiles=b.pass_tiles, lanes=b.lanes)
            return
        x, bias, out = ops.x, ops.bias, ops.out
        if self.kind == "input_grad":
            # grad_x = the adjoint's forward pass over the output gradient,
            # the kernel packing the weights transposed and reversed
            x, out, bias, g = _adjoint_operands(plan, ops)
        # the pixel tables depend on the shapes, x's strides and the tile,
        # not on the data: a kept buffer that holds this call's is reused
        # (and on where the weights are packed: a tap's panel rows)
        tables_key = ("direct", x.shape, x.strides, ops.filters.shape, out.shape, g.kernel_args,
                      g.groups, plan.dtype, plan.blocking.isa, plan.blocking.pack_in_items,
                      self.kind)
        ready = bufs.holds("tables", tables_key)
        if not ready:
            bufs.forget("tables")
        direct.conv2d_direct(x, ops.filters, bias, out, bufs["packed_weight"], bufs["tables"],
                             bufs["workspace"], *g.kernel_args, g.groups, plan.flip,
                             plan.blocking.isa, threads, adjoint=self.kind == "input_grad",
                             pack_in_items=plan.blocking.pack_in_items, tables_ready=ready)
        bufs.remember("tables", tables_key)


# --------------------------------------------------------------------------
# Winograd F(4x4, 3x3): 36 GEMMs of transformed tiles, 4x fewer multiply-adds

@dataclasses.dataclass(frozen=True)
class WinogradBlocking:
    """The Winograd kernel's ISA (its GEMMs run the fused micro-kernels) and
    its order: keep_input (filter_block > 0) False transforms the weights once per call and
    each item (panel of tiles, chunk of filters) its tiles; True transforms
    the input once and each item (block of filters) its filters' weights, in
    its cache (the better order where the tiles are few and the weights many:
    ResNet-50 5b_3x3, 32 tiles against 2.4 M weights), filter_block of them
    per item (winograd.filter_block, for the planned threads; 0: the
    weights-kept order)."""
    isa: str
    filter_block: int = 0   # the input-kept order's filters per item; 0: weights kept

    @property
    def keep_input(self):
        return self.filter_block > 0


def winograd_unsuitable(g):
    """Why g is not a 3x3 stride-1 convolution (the geometry F(4x4, 3x3)
    computes; a dilated one is several undilated ones), or None."""
    if (g.R, g.S) != (3, 3):
        return f"computes 3x3 kernels only; got {g.R}x{g.S}"
    if g.stride != (1, 1):
        return f"computes stride-1 convolutions only; got stride {g.stride}"
    return None


def winograd_phases(g):
    """(N, Ho, Wo) of each undilated convolution a dilated g is made of: the
    output's rows and columns p, p + d, p + 2d, ... for each phase p < d."""
    def sizes(length, d):
        return [len(range(p, length, d)) for p in range(min(d, length))]
    return [(g.N, ho, wo) for ho in sizes(g.Ho, g.dilation[0]) for wo in sizes(g.Wo, g.dilation[1])]


class Winograd(Lowering):
    """Winograd's minimal filtering, F(4x4, 3x3) (Lavin & Gray 2016): each
    4x4 block of outputs from a 6x6 input tile, 36 multiplies per channel
    and filter instead of 144. The products summed over channels are 36
    GEMMs (filters x channels @ channels x tiles), run on the fused
    lowering's micro-kernels: the input transform writes each GEMM's B
    straight in the micro-kernel's layout, the output transform adds the
    bias and stores the tiles (fastconv/_kernels/winograd.pyx, _winograd.h).
    Rounding differs from the direct sum (float32: ~1e-5 of the output's
    magnitude). A dilated layer is one undilated convolution per phase of
    the dilation (strided views of the input and output). The input
    gradient of a 3x3 stride-1 layer is a 3x3 stride-1 forward pass (its
    adjoint, see Fused), computed the same way. The weight gradient is the
    transposed algorithm, F(3x3, 4x4): dW = G^T [sum over tiles of (A h A^T)
    .* (B^T d B)] G, 36 GEMMs whose depth is the batch's tiles."""
    name = "winograd"
    kernel = "winograd"
    uses_blas = False
    writes_whole_weight_grad = True   # each item writes its block of grad_w

    def unsuitable(self, g):
        return (winograd_unsuitable(g) or _forward_kernel_unsuitable(self.kind, g)
                or winograd_unsuitable(_kernel_geometry(self.kind, g)))

    def propose(self, planner, forced):
        from fastconv._kernels import winograd
        isa = fused_isa(planner.tuning.isa)
        sizes = winograd.blocking(planner.dtype, isa)
        threads = planner.threads if _machine.openmp_enabled() else 1
        algorithm = "F(3x3, 4x4)" if self.kind == "weight_grad" else "F(4x4, 3x3)"
        plans = [planner.plan(self, blocking, threads, 1,
                              f"Winograd {algorithm}: 36 GEMMs on the {isa} micro-kernel "
                              f"({sizes['MR']}x{sizes['NR']}), 4x fewer multiply-adds")
                 for blocking in self._orders(planner, isa, threads)]
        plans = [plan for plan in plans if plan.workspace_bytes <= planner.limit]
        return min(plans, key=lambda plan: self.cost(plan, planner.tuning), default=None)

    def _orders(self, planner, isa, threads, smallest=False):
        """The blockings of each order the kind has: weights kept, and (not
        for the weight gradient) input kept in blocks of filters for the
        threads (smallest: of MR filters, the least workspace)."""
        from fastconv._kernels import winograd
        if self.kind == "weight_grad":
            return [WinogradBlocking(isa)]
        g = _kernel_geometry(self.kind, planner.g)
        block = (winograd.blocking(planner.dtype, isa)["MR"] if smallest else
                 winograd.filter_block(g.K // g.groups, g.C // g.groups, g.groups,
                                       planner.dtype, isa, threads))
        return [WinogradBlocking(isa), WinogradBlocking(isa, block)]

    def cost(self, plan, tuning):
        # in flop-equivalents of the GEMM lowerings' model: the 36 GEMMs
        # (filters padded to MR, tiles to NR-wide panels) at the fused
        # micro-kernel's rate, and per element the transforms (input: per
        # channel and tile, again for each chunk of filters; output: per
        # filter and tile; weights: per filter and channel, and the
        # transformed weights' 36 matrices read again for each panel of
        # tiles); see Tuning.winograd_*
        from fastconv._kernels import fused, winograd
        g, b = _kernel_geometry(self.kind, plan.geometry), plan.blocking
        if self.kind == "weight_grad":
            return self.weight_grad_cost(plan, tuning)
        sizes = winograd.blocking(plan.dtype, b.isa)
        mr, nr = sizes["MR"], sizes["NR"]
        kg, cg = g.K // g.groups, g.C // g.groups
        kpanels = -(-kg // mr)
        # the input-kept order's items: blocks of filters, dealt to the threads
        filter_blocks = g.groups * -(-kg // max(1, b.filter_block))
        threads = plan.kernel_threads
        balance = threads * -(-filter_blocks // threads) / filter_blocks
        itemsize = np.dtype(plan.dtype).itemsize

        def reads(elements, kept):
            # the kept operand read again: from the cache if it fits
            rate = (tuning.winograd_cached_reads if kept * itemsize <= tuning.winograd_cache_bytes
                    else tuning.winograd_weight_reads)
            return rate * elements

        # the GEMMs' depth is a group's channels: few (ResNeXt's 4) run at
        # the shallow rate, as fused's own
        rate = _micro_kernel_rate(cg, tuning)
        gemm = transforms = 0.0
        for n, ho, wo in winograd_phases(g):   # one undilated convolution each
            tiles_h, tiles_w = winograd.tiles(ho, wo)
            tiles = max(1, n * tiles_h * tiles_w)
            padded = fused.padded_columns(tiles, plan.dtype, b.isa)
            panels = -(-tiles // nr)
            gemm += 2 * winograd.POINTS * g.groups * kpanels * mr * cg * padded / rate
            transforms += tuning.winograd_output * g.K * tiles
            kept_input = winograd.POINTS * g.C * padded
            kept_weights = winograd.POINTS * g.K * cg
            if b.keep_input:
                # the input once; each block of filters its weights (per
                # phase) and every panel's transformed input
                transforms += (tuning.winograd_input * g.C * padded
                               + tuning.winograd_weights * g.K * cg
                               + reads(kept_input * filter_blocks, kept_input))
            else:
                chunks = winograd.chunk_count(g.groups * panels, kpanels, plan.kernel_threads)
                transforms += (tuning.winograd_input * g.C * padded * chunks
                               + reads(kept_weights * panels, kept_weights))
        if not b.keep_input:
            transforms += tuning.winograd_weights * g.K * cg
        else:
            gemm *= balance   # (the input transform's items are many)
        return ((gemm + transforms) * tuning.winograd_factor
                / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads))

    def weight_grad_cost(self, plan, tuning):
        """The weight gradient's: the 36 GEMMs (channels padded to MR, filters
        to NR) over the batch's tiles, the input tiles transformed once per
        block of NR filters and the gradient's once per block of channels,
        and per (filter, channel) pair its 36 sums kept, added up over the
        threads and transformed back to the 3x3 taps, however few the tiles
        (Tuning.winograd_grad_output)."""
        from fastconv._kernels import winograd
        g, b = plan.geometry, plan.blocking
        sizes = winograd.weight_grad_blocking(plan.dtype, b.isa)
        mr, nr = sizes["MR"], sizes["NR"]
        kg, cg = g.K // g.groups, g.C // g.groups
        kblocks = -(-kg // nr)
        cblocks = -(-cg // sizes["CB"])
        gemm = transforms = 0.0
        for n, ho, wo in winograd_phases(g):
            tiles = n * int(np.prod(winograd.tiles(ho, wo)))
            gemm += (2 * winograd.POINTS * g.groups * kblocks * nr * (-(-cg // mr) * mr) * tiles
                     / tuning.fused_rate)
            transforms += (tuning.winograd_weight_grad_tiles * g.C * tiles * kblocks
                           + tuning.winograd_grad_input * g.groups * kblocks * nr * tiles
                           * cblocks
                           + tuning.winograd_grad_output * g.groups * kg * cg)
        return ((gemm + transforms) * tuning.winograd_weight_grad_factor
                / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads))

    def buffers(self, g, dtype, blocking, threads):
        from fastconv._kernels import winograd
        if self.kind == "weight_grad":
            per_thread = winograd.weight_grad_buffer_size(g.C, g.groups, dtype, blocking.isa)
            return {"workspace": ((threads, per_thread), dtype)}
        g = _kernel_geometry(self.kind, g)
        tiles = (winograd.kept_tiles(g.N, g.Ho, g.Wo, *g.dilation) if blocking.keep_input
                 else None)
        kept, per_thread = winograd.buffer_sizes(g.K, g.C, g.groups, dtype, blocking.isa, tiles,
                                                 blocking.filter_block or None)
        # (the input gradient's weights are read in place, transposed)
        return {"kept": ((kept,), dtype), "workspace": ((threads, per_thread), dtype)}

    def too_small(self, planner):
        isa = fused_isa(planner.tuning.isa)
        needed = min(buffer_bytes(self.buffers(planner.g, planner.dtype, blocking, 1))
                     for blocking in self._orders(planner, isa, 1, smallest=True))
        held = ("one thread's tiles" if self.kind == "weight_grad"
                else "transformed weights or input, one thread's tiles")
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                f"small: the Winograd lowering ({held}) needs {needed} bytes "
                f"({format_bytes(needed)})")

    def describe(self, plan):
        from fastconv._kernels import winograd
        g = _kernel_geometry(self.kind, plan.geometry)
        phases = winograd_phases(g)
        tiles = sum(n * np.prod(winograd.tiles(ho, wo)) for n, ho, wo in phases)
        kg, cg = g.K // g.groups, g.C // g.groups
        shape = (f"F(3x3, 4x4), {plan.blocking.isa} micro-kernel: 36 GEMMs {cg}x{tiles} tiles "
                 f"@ {tiles}x{kg}" if self.kind == "weight_grad" else
                 f"F(4x4, 3x3), {plan.blocking.isa} micro-kernel: 36 GEMMs {kg}x{cg} @ "
                 f"{cg}x{tiles} tiles")
        order = ("" if self.kind == "weight_grad" else
                 "; input transformed once, weights per block of filters"
                 if plan.blocking.keep_input else
                 "; weights transformed once, input per panel of tiles")
        return (f"Winograd {shape}{order}"
                + (f" (dilation {g.dilation}: {len(phases)} undilated convolutions)"
                   if len(phases) > 1 else ""))

    def run(self, plan, ops, bufs, threads):
        from fastconv._kernels import winograd
        g = plan.geometry
        if self.kind == "weight_grad":
            (pad_top, _), (pad_left, _) = g.padding
            winograd.conv2d_winograd_weight_grad(
                ops.x, ops.grad.reshape(g.N, g.K, g.Ho, g.Wo), ops.out, bufs["workspace"],
                pad_top, pad_left, *g.dilation, g.groups, plan.flip, plan.blocking.isa, threads)
            return
        # the input gradient: its adjoint's forward pass, the kernel reading
        # the layer's weights as the adjoint's filters in place
        x, out, bias, flip = ops.x, ops.out, ops.bias, plan.flip
        if self.kind == "input_grad":
            x, out, bias, g = _adjoint_operands(plan, ops)
            flip = not flip
        (pad_top, _), (pad_left, _) = g.padding
        winograd.conv2d_winograd(x, ops.filters, bias, out.reshape(g.N, g.K, g.Ho, g.Wo),
                                 bufs["kept"], bufs["workspace"], pad_top, pad_left,
                                 *g.dilation, g.groups, flip, plan.blocking.isa, threads,
                                 keep_input=plan.blocking.keep_input,
                                 adjoint=self.kind == "input_grad",
                                 block=plan.blocking.filter_block)


# --------------------------------------------------------------------------
# the input gradient of any convolution as stride-1 forward passes, one per
# phase of the input

@dataclasses.dataclass(frozen=True)
class PhaseAxis:
    """One axis of one phase of a strided layer's input gradient: the input
    positions phase, phase + stride, ... (``length`` of them) receive the
    kernel taps first_tap, first_tap + tap_step, ... (``taps`` of them),
    which read the output gradient as a stride-1 convolution with dilation
    ``dilation``, zero-padded by ``padding`` after ``crop`` positions are cut
    from each end of it (where that convolution's padding would be
    negative)."""
    first_tap: int
    tap_step: int
    taps: int
    dilation: int
    length: int
    crop: tuple
    padding: tuple


def phase_axis(length, out_len, taps, stride, pad_lo, dilation, phase):
    """The PhaseAxis of input positions phase::stride of a convolution along
    one axis (input `length`, output `out_len`, forward pass y[o] = sum over
    r of w[r] x[o*stride + r*dilation - pad_lo]), or None where nothing
    reaches them (their gradient is zero).

    The input position i = phase + stride*j gets tap r from output o where
    o*stride = i + pad_lo - r*dilation: the taps r = first_tap + k*tap_step
    (tap_step = stride / gcd(stride, dilation)), from o = j + c0 - k*d',
    d' = dilation / gcd, c0 = (phase + pad_lo - first_tap*dilation) /
    stride. Reversed (t = taps-1-k) that is a stride-1 forward pass over the
    output gradient with dilation d' and leading padding (taps-1)*d' - c0."""
    common = math.gcd(stride, dilation)
    step, reach = stride // common, dilation // common
    phase_len = len(range(phase, length, stride))
    first = next((r for r in range(min(step, taps))
                  if (phase + pad_lo - r * dilation) % stride == 0), None)
    if first is None or phase_len == 0:
        return None
    n = len(range(first, taps, step))
    c0 = (phase + pad_lo - first * dilation) // stride
    lo, hi = (n - 1) * reach - c0, phase_len - out_len + c0
    crop = (max(0, -lo), max(0, -hi))
    if out_len - sum(crop) <= 0:
        return None   # every tap reads the padding
    return PhaseAxis(first, step, n, reach, phase_len, crop, (max(0, lo), max(0, hi)))


@functools.lru_cache(maxsize=64)
def input_phases(g):
    """((phase_y, phase_x), PhaseAxis rows, PhaseAxis columns, geometry of
    the stride-1 forward pass) of each phase of g's input some tap reaches;
    the forward pass reads the output gradient (N, K, Ho, Wo), cropped, with
    each group's weights transposed and the kernel's taps of the phase
    reversed (C x K/groups x taps), and writes the phase (N, C, rows, cols)."""
    from fastconv._params import conv_geometry
    (top, _), (left, _) = g.padding
    phases = []
    for py in range(min(g.stride[0], g.H)):
        rows = phase_axis(g.H, g.Ho, g.R, g.stride[0], top, g.dilation[0], py)
        for px in range(min(g.stride[1], g.W)):
            cols = phase_axis(g.W, g.Wo, g.S, g.stride[1], left, g.dilation[1], px)
            if rows is None or cols is None:
                continue
            forward = conv_geometry(
                (g.N, g.K, g.Ho - sum(rows.crop), g.Wo - sum(cols.crop)),
                (g.C, g.K // g.groups, rows.taps, cols.taps), stride=1,
                padding=(rows.padding, cols.padding), dilation=(rows.dilation, cols.dilation),
                groups=g.groups)
            assert (forward.Ho, forward.Wo) == (rows.length, cols.length), (g, py, px)
            phases.append(((py, px), rows, cols, forward))
    return tuple(phases)


@functools.lru_cache(maxsize=64)
def phase_filter_taps(g, flip):
    """The taps (r*S + s) of each phase of input_phases(g), in the order its
    pass reads them, as phased.phase_filters takes them: (first, taps),
    phase p's being taps[first[p]:first[p + 1]]. Row i of a pass's kernel
    is tap r = first_tap + (taps-1-i) * tap_step (reversed), and with flip
    the kernel is reversed first."""
    first, taps = [0], []
    for _, rows, cols, _ in input_phases(g):
        for i in range(rows.taps):
            r = rows.first_tap + (rows.taps - 1 - i) * rows.tap_step
            for j in range(cols.taps):
                s = cols.first_tap + (cols.taps - 1 - j) * cols.tap_step
                taps.append((g.R - 1 - r) * g.S + g.S - 1 - s if flip else r * g.S + s)
        first.append(len(taps))
    first, taps = np.array(first, np.intp), np.array(taps, np.intp)
    first.setflags(write=False)   # (cached: shared by every call)
    taps.setflags(write=False)
    return first, taps


def _own_forward_kernels(g):
    """The forward entries that compute g on fastconv's own kernels (no
    BLAS): what a phase's pass is planned among."""
    return [e for e in TABLE["forward"] if not e.uses_blas and e.unsuitable(g) is None]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the phased input gradient and the plan of its forward pass."""
    offset: tuple
    rows: PhaseAxis
    cols: PhaseAxis
    plan: object


@dataclasses.dataclass(frozen=True)
class PhasedBlocking:
    """The phases some tap reaches (the others are zeros), each with its plan;
    filters_at_once: every phase's filters gathered in one pass over the
    weights into one buffer (about the kernel's size), else phase by phase
    into the largest phase's (where the memory limit allows no more)."""
    phases: tuple
    filters_at_once: bool = True


_ALIGN = 64


def _carve(raw, specs):
    """Arrays for {name: (shape, dtype)} laid one after another (64-byte
    steps) in the flat uint8 buffer raw; its size if raw is None."""
    arrays, offset = {}, 0
    for name, (shape, dtype) in specs.items():
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if raw is not None:
            arrays[name] = raw[offset:offset + size].view(dtype).reshape(shape)
        offset += -(-size // _ALIGN) * _ALIGN
    return offset if raw is None else Buffers(arrays)   # (holding nothing: phases share raw)


class Phased(Lowering):
    """The input gradient of any zero-padded convolution as stride-1 forward
    passes over the output gradient, one per phase of the input (the
    positions phase::stride along each axis): each phase gets only the
    kernel taps that land on it (a 3x3 kernel at stride 2: 2x2, 2x1, 1x2
    and 1x1), so each pass is a plain convolution, planned and run by
    fastconv's own forward kernels (fused, direct, Winograd, depthwise):
    nothing is scatter-added, and the zeros a transposed convolution would
    insert between the stride's positions are never multiplied (the
    padding's taps are, by the kernels that multiply them: fused, Winograd).
    Each pass writes its phase contiguously; the phase is then spread into
    the gradient (fastconv/_kernels/phased.pyx). Where the stride is 1 it
    also takes the padding wider than the kernel and the output_padding
    that the adjoint entries refuse."""
    name = "phased"
    kernel = "phased"
    uses_blas = False

    def unsuitable(self, g):
        if self.kind != "input_grad":
            return "computes the input gradient only"
        why = _zero_padding_only(g)
        if why is None:
            for offset, rows, cols, forward in input_phases(g):
                if not _own_forward_kernels(forward):
                    return (f"has no forward kernel of its own for phase {offset} "
                            f"({rows.taps}x{cols.taps} taps)")
        return why

    @staticmethod
    def _filters_at(g, at_once):
        """Where each phase's filters start in the phase_weight buffer, and its
        size (elements): one after another (64-byte steps, in elements of 8
        bytes at most) if at_once, else each at 0 (the largest phase's)."""
        at, offsets = 0, []
        for *_, f in input_phases(g):
            size = -(-f.K * f.rows // 16) * 16
            offsets.append(at if at_once else 0)
            at = at + size if at_once else max(at, size)
        return np.array(offsets, np.intp), at

    def _own_bytes(self, g, dtype, at_once):
        """(the phases' filters (_filters_at), the largest phase's output):
        the outputs are made one phase at a time."""
        phases = input_phases(g)
        outputs = max((g.N * g.C * f.cols for *_, f in phases), default=0)
        return self._filters_at(g, at_once)[1], outputs

    def propose(self, planner, forced):
        # the filters of all phases in one pass where the limit allows it
        # (phase by phase, each pass read the whole kernel again: ResNet-50
        # 4a 3x3/2 0.94 against 0.66 ms; DeepSpeech2 conv2 0.44 against 0.15)
        g = planner.g
        for at_once in (True, False):
            own = sum(self._own_bytes(g, planner.dtype, at_once)) * planner.dtype.itemsize
            if own >= planner.limit:
                continue
            phases = []
            for offset, rows, cols, forward in input_phases(g):
                sub = planner.derived(forward, "forward", planner.limit - own)
                best = sub.cheapest(_own_forward_kernels(forward))
                if best is None:
                    break
                phases.append(Phase(offset, rows, cols, best))
            else:
                threads = max([p.plan.kernel_threads for p in phases], default=1)
                taps = " + ".join(f"{p.rows.taps}x{p.cols.taps} {p.plan.method}"
                                  for p in phases)
                plan = planner.plan(self, PhasedBlocking(tuple(phases), at_once), threads, 1,
                                    f"stride {g.stride}: one stride-1 forward pass per phase "
                                    f"of the input ({taps or 'no tap reaches the input'})")
                if plan.workspace_bytes <= planner.limit:
                    return plan
        return None

    def cost(self, plan, tuning):
        # the passes' own costs (a thin adjoint, such as 3 input channels
        # as filters, is as slow here as at stride 1), a 1x1 pass at the
        # fused rate of a deep layer rather than its rate against gemm1x1's
        # model, times phased_factor; and the spreading of the phases
        g = plan.geometry
        passes = sum(p.plan.lowering.cost(p.plan, tuning)
                     * (tuning.fused_pointwise_rate / tuning.fused_rate
                        if p.plan.method == "fused" and p.plan.geometry.is_pointwise else 1.0)
                     for p in plan.blocking.phases) * tuning.phased_factor
        spread = (tuning.phased_spread * g.N * g.C * g.H * g.W
                  / (_GEMM_FLOPS_PER_THREAD * plan.kernel_threads))
        return passes + spread

    def buffers(self, g, dtype, blocking, threads):
        weights, outputs = self._own_bytes(g, dtype, blocking.filters_at_once)
        passes = max((_carve(None, p.plan.lowering.buffers(
            p.plan.geometry, dtype, p.plan.blocking, min(threads, p.plan.kernel_threads)))
            for p in blocking.phases), default=0)
        return {"phase_weight": ((weights,), dtype), "phase_output": ((outputs,), dtype),
                "phase_workspace": ((passes,), np.uint8)}

    def needed_bytes(self, planner):
        g = planner.g
        own = sum(self._own_bytes(g, planner.dtype, False)) * planner.dtype.itemsize
        return own + max((min(e.needed_bytes(planner.derived(f, "forward", planner.limit))
                              for e in _own_forward_kernels(f))
                          for *_, f in input_phases(g)), default=0)

    def too_small(self, planner):
        needed = self.needed_bytes(planner)
        return (f"memory_limit {planner.limit} bytes ({format_bytes(planner.limit)}) is too "
                f"small: the phased input gradient (the largest phase's weights and "
                f"output, and its forward pass's smallest workspace) needs {needed} bytes "
                f"({format_bytes(needed)})")

    def describe(self, plan):
        passes = "; ".join(f"phase {p.offset}: {p.rows.taps}x{p.cols.taps} taps, "
                           f"{p.plan.method} ({p.plan.lowering.describe(p.plan)})"
                           for p in plan.blocking.phases)
        filters = ("their filters gathered in one pass" if plan.blocking.filters_at_once
                   else "their filters gathered phase by phase (memory limit)")
        return (f"{len(plan.blocking.phases)} stride-1 forward pass(es), one per phase of "
                f"the input, {filters}: {passes or 'none (no tap reaches the input)'}")

    def run(self, plan, ops, bufs, threads):
        from types import SimpleNamespace
        from fastconv._kernels import phased
        g, dtype = plan.geometry, plan.dtype
        grad = ops.grad.reshape(g.N, g.K, g.Ho, g.Wo)
        out = ops.out
        weight = ops.filters.reshape(g.K, g.C // g.groups, g.R, g.S)
        done = {p.offset for p in plan.blocking.phases}
        for py in range(g.stride[0]):
            for px in range(g.stride[1]):
                if (py, px) not in done:
                    phased.clear_phase(out, py, g.stride[0], px, g.stride[1], threads)
        no_bias = np.zeros(0, dtype)
        at_once = plan.blocking.filters_at_once
        filters_at = self._filters_at(g, at_once)[0]
        first, taps = phase_filter_taps(g, plan.flip)

        def gather_filters(lo, hi):
            # phases [lo, hi)'s filters, in one pass over the weights
            phased.phase_filters(weight, bufs["phase_weight"], first[lo:hi + 1] - first[lo],
                                 taps[first[lo]:first[hi]], filters_at[lo:hi], g.groups,
                                 threads)

        if at_once:
            gather_filters(0, len(plan.blocking.phases))
        for i, (at, p) in enumerate(zip(filters_at, plan.blocking.phases)):
            if not at_once:
                gather_filters(i, i + 1)
            sub, f = p.plan, p.plan.geometry
            cy, cx = p.rows.crop, p.cols.crop
            filters = bufs["phase_weight"][at:at + f.K * f.rows].reshape(f.K, f.rows)
            x = grad[:, :, cy[0]:g.Ho - cy[1], cx[0]:g.Wo - cx[1]]
            result = bufs["phase_output"][:g.N * g.C * f.cols].reshape(g.N, g.C, f.cols)
            sub_threads = min(threads, sub.kernel_threads)
            sub_bufs = _carve(bufs["phase_workspace"], sub.lowering.buffers(
                f, dtype, sub.blocking, sub_threads))
            sub_ops = SimpleNamespace(x=sub.lowering.prepare_input(f, x), filters=filters,
                                      bias=no_bias, out=result, grad=None)
            sub.lowering.run(sub, sub_ops, sub_bufs, sub_threads)
            phased.scatter_phase(result, out, p.offset[0], g.stride[0], p.offset[1],
                                 g.stride[1], threads)


# --------------------------------------------------------------------------
# the table: per kind, the entries in order of preference when costs tie

TABLE = {kind: (Gemm1x1(kind), Stretch(kind), Mapped(kind), Fused(kind), Depthwise(kind),
               DirectConv(kind), Winograd(kind), Phased(kind))
         for kind in KINDS}


# A geometry with everything at once (stride, dilation, uneven padding,
# groups): a lowering that computes it computes any convolution.
_ANY_GEOMETRY = None


def general_methods(kind="forward", padding_mode="zeros"):
    """The method= names of the lowerings that compute any convolution of the
    kind (the case lists of tests and benchmarks read them from here;
    special-purpose lowerings, such as the 1x1 GEMM, have their own), with
    padding that reads `padding_mode`."""
    global _ANY_GEOMETRY
    if _ANY_GEOMETRY is None:
        from fastconv._params import conv_geometry
        _ANY_GEOMETRY = conv_geometry((2, 4, 9, 8), (6, 2, 3, 2), stride=(2, 1), groups=2,
                                      padding=((1, 2), (0, 1)), dilation=(2, 1))
    g = dataclasses.replace(_ANY_GEOMETRY, padding_mode=padding_mode)
    return tuple(e.name for e in TABLE[kind] if e.unsuitable(g) is None)


def methods(kind="forward"):
    """The method= names of a kind's lowerings, in table order."""
    return tuple(e.name for e in TABLE[kind])


def entry(kind, method):
    """The table entry of a kind and method name."""
    for candidate in TABLE[kind]:
        if candidate.name == method:
            return candidate
    raise ValueError(f"method={method!r} is not one of {('auto',) + methods(kind)}")
