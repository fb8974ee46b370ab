"""Planning a convolution: which lowering, what blocking, how many threads,
and how much workspace, under a memory limit. The choice is made here and
only here (``_choose``), among the entries of the table of lowerings
(``_lowerings.TABLE``); running a plan is ``_execute``'s job.

Workspace is every byte a call allocates beyond its output: the per-thread
buffers and the row table of the index map, as the lowering's ``buffers``
lists them. Arguments that must be converted first are copied once before
the kernels run: an input of another dtype, byte order or alignment (or, for
the 1x1 path, with non-contiguous channel planes), and weights that are not
C-contiguous in the compute dtype. Those copies are the caller's data in
another form, not workspace, and are not counted; arrays already in the
compute dtype are read in place (any strides for the input; flip=True is done
by the index map, not by a copy).
"""
import dataclasses
from dataclasses import dataclass, field
import functools
import time

import numpy as np

from fastconv import _config, _execute, _lowerings, _machine, _tuning
from fastconv._config import format_bytes
from fastconv._lowerings import KINDS, buffer_bytes
from fastconv._params import ConvGeometry, conv_geometry

__all__ = ["ConvPlan", "WorkspaceLimitError", "plan_conv2d", "plan_conv"]

# plans cached per distinct call (shapes, dtype, limits, threads, tuning)
PLAN_CACHE_SIZE = 1024


def methods(kind="forward"):
    """The method= values a kind accepts: "auto" and the table's lowerings."""
    return ("auto",) + _lowerings.methods(kind)


class WorkspaceLimitError(MemoryError):
    """The memory limit is too small for any lowering of this convolution."""


def _format_flops(n):
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} FLOP"


@dataclass(frozen=True)
class ConvPlan:
    """An immutable, executable decision about how to compute one convolution
    (or one of its gradients).

    Attributes
    ----------
    method : str
        The lowering: ``'gemm1x1'`` (no lowering), ``'stretch'`` (whole
        im2col matrix per image), ``'mapped'`` (index-mapped tiles), ...
        (``fastconv._lowerings.TABLE``).
    kind : str
        ``'forward'``, ``'input_grad'`` or ``'weight_grad'``.
    blocking : object
        How the lowering cuts its work (for the GEMM lowerings a
        ``GemmBlocking``: tile columns, images per GEMM, blocks).
    workspace_bytes : int
        Upper bound of the memory the call allocates beyond its output (for
        inputs already in the plan's dtype; see :func:`plan_conv2d`).
    output_shape : tuple
        Shape of what the plan computes (for a gradient, of the gradient).
    num_threads : int
        Most threads the call uses (OpenMP over work items, or BLAS's own);
        fewer while other calls in the process hold some.
    kernel_threads, blas_threads : int
        OpenMP threads over work items, and BLAS threads inside each GEMM
        (one of the two is 1).
    flops : int
        2 * multiply-adds (the same for the forward pass and each gradient).
    reason : str
        Why this plan (also in the repr).
    """
    geometry: ConvGeometry
    dtype: np.dtype
    method: str
    kind: str
    blocking: object
    num_threads: int
    kernel_threads: int
    blas_threads: int
    workspace_bytes: int
    memory_limit: int
    flip: bool
    reason: str = field(compare=False, default="")
    # the lowering's buffers per thread count granted (buffer_specs)
    _specs: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def buffer_specs(self, threads):
        """The lowering's buffers for a call granted `threads` threads,
        {name: (shape, dtype)}: worked out once per thread count (a loop's
        repeated call spent ~3.5 us in them, 1.5 % of paper_mnist's call)."""
        specs = self._specs.get(threads)
        if specs is None:
            specs = self._specs[threads] = self.lowering.buffers(self.geometry, self.dtype,
                                                                 self.blocking, threads)
        return specs

    @property
    def lowering(self):
        """The table entry that runs this plan."""
        return _lowerings.entry(self.kind, self.method)

    @property
    def output_shape(self):
        if self.kind == "input_grad":
            return self.input_shape
        if self.kind == "weight_grad":
            return self.weight_shape
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
        if self.kernel_threads > 1:
            threads = f"{self.kernel_threads} OpenMP threads, BLAS on 1"
        elif self.blas_threads > 1:
            threads = f"1 loop, BLAS on {self.blas_threads} threads"
        else:
            threads = "1 thread"
        kind = "" if self.kind == "forward" else f"{self.kind}, "
        mode = self.geometry.padding_mode
        padding = "" if mode == "zeros" else f", {mode} padding"
        return (f"ConvPlan({kind}{self.method}, {self.dtype.name}, x{self.input_shape} * "
                f"w{self.weight_shape} -> {self.output_shape}{padding}, "
                f"{_format_flops(self.flops)}; "
                f"{self.lowering.describe(self)}; workspace "
                f"{format_bytes(self.workspace_bytes)} of limit "
                f"{format_bytes(self.memory_limit)}; {threads}: {self.reason})")

    def execute(self, *operands, out=None):
        """Run the plan on arrays of the planned shapes; returns the result.

        The operands, by kind: forward ``(x, weight[, bias])``; input_grad
        ``(weight, grad_output)``; weight_grad ``(x, grad_output)``. They are
        converted to the plan's dtype; the result has that dtype, or is
        written into ``out`` (any strides; a dtype the result casts to
        safely; checked before anything is written), which is returned.

        Examples
        --------
        >>> import numpy as np, fastconv
        >>> plan = fastconv.plan_conv2d((1, 1, 4, 4), (1, 1, 3, 3), "float64")
        >>> plan.execute(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))).ravel()
        array([9., 9., 9., 9.])
        >>> grad = fastconv.plan_conv2d((1, 1, 4, 4), (1, 1, 3, 3), "float64", kind="weight_grad")
        >>> grad.execute(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)))[0, 0]
        array([[4., 4., 4.],
               [4., 4., 4.],
               [4., 4., 4.]])
        """
        return _execute.execute(self, operands, out)


class _Planner:
    """What the entries plan under: one convolution, one limit, one thread
    count, one tuning. Makes their plans (workspace from their buffers)."""

    def __init__(self, g, dtype, flip, limit, threads, kind, tuning):
        self.g, self.dtype, self.flip, self.limit = g, dtype, flip, limit
        self.threads, self.kind, self.tuning = threads, kind, tuning

    def derived(self, g, kind, limit):
        """A planner for another convolution under the same threads and
        tuning (a lowering made of others' plans: Phased)."""
        return _Planner(g, self.dtype, False, limit, self.threads, kind, self.tuning)

    def cheapest(self, lowerings, forced=False):
        """The cheapest plan the lowerings propose by their cost model (ties
        go to the earlier one), or None if none fits the limit."""
        plans = [(lowering.cost(plan, self.tuning), i, plan)
                 for i, lowering in enumerate(lowerings)
                 for plan in [lowering.propose(self, forced)] if plan is not None]
        return min(plans, key=lambda t: t[:2])[2] if plans else None

    def threads_for(self, work_items):
        """(kernel threads, BLAS threads). OpenMP over work items when there
        are at least as many items as threads, BLAS single-threaded inside;
        otherwise a serial loop whose GEMMs use threaded BLAS, so no core is
        left idle and OpenMP and BLAS threads never multiply. A build without
        OpenMP has only BLAS's threads."""
        if work_items >= self.threads and _machine.openmp_enabled():
            return self.threads, 1
        return 1, self.threads

    def plan(self, lowering, blocking, kernel_threads, blas_threads, reason):
        workspace = buffer_bytes(lowering.buffers(self.g, self.dtype, blocking, kernel_threads))
        return ConvPlan(geometry=self.g, dtype=self.dtype, method=lowering.name,
                        kind=self.kind, blocking=blocking,
                        num_threads=max(kernel_threads, blas_threads),
                        kernel_threads=kernel_threads, blas_threads=blas_threads,
                        workspace_bytes=workspace, memory_limit=self.limit, flip=self.flip,
                        reason=reason)


def _applicable(g, kind, method):
    """The entries a call may use: the forced one (ValueError if it cannot
    compute g), or every entry that can."""
    if method != "auto":
        lowering = _lowerings.entry(kind, method)
        why_not = lowering.unsuitable(g)
        if why_not is not None:
            raise ValueError(f"method={method!r} {why_not}")
        return [lowering]
    return [e for e in _lowerings.TABLE[kind] if e.unsuitable(g) is None]


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _choose(g, dtype, flip, method, limit, threads, kind, tuning):
    """The one place where the lowering is chosen: each applicable entry
    proposes its best plan under the limit, and the cheapest by the entries'
    cost model wins (ties go to the earlier entry of the table)."""
    planner = _Planner(g, dtype, flip, limit, threads, kind, tuning)
    lowerings = _applicable(g, kind, method)
    plan = planner.cheapest(lowerings, forced=method != "auto")
    if plan is None:
        # the message of the lowering that would need the least
        smallest = min(lowerings, key=lambda lowering: lowering.needed_bytes(planner))
        raise WorkspaceLimitError(smallest.too_small(planner))
    return plan


def plan_conv(geometry, dtype, *, flip=False, method="auto", memory_limit=None,
              num_threads=None, measure=False, kind="forward"):
    """Plan a convolution (or a gradient) whose geometry is already validated (cached)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if not (isinstance(method, str) and (method == "auto" or method in methods(kind))):
        raise ValueError(f"method={method!r} is not one of {methods(kind)}")
    limit, threads = _config.resolve(memory_limit, num_threads)
    args = (geometry, np.dtype(dtype), bool(flip), method, limit, threads, kind,
            _tuning.current())
    if measure:
        return _measured(*args)
    return _choose(*args)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _measured(g, dtype, flip, method, limit, threads, kind, tuning):
    """Time every candidate that fits once, on random data, and keep the
    fastest (as scipy.signal.choose_conv_method(measure=True))."""
    planner = _Planner(g, dtype, flip, limit, threads, kind, tuning)
    candidates = [plan for lowering in _applicable(g, kind, method)
                  for plan in lowering.candidates(planner)]
    candidates = list(dict.fromkeys(candidates))
    if len(candidates) <= 1:
        # one candidate, or none: the rules' choice (which raises the reason)
        return _choose(g, dtype, flip, method, limit, threads, kind, tuning)
    rng = np.random.default_rng(0)
    first = candidates[0]
    x = rng.standard_normal(first.input_shape).astype(dtype)
    w = rng.standard_normal(first.weight_shape).astype(dtype)
    grad = rng.standard_normal(g.output_shape).astype(dtype)
    operands = {"forward": (x, w), "input_grad": (w, grad), "weight_grad": (x, grad)}[kind]
    timings = []
    for plan in candidates:
        plan.execute(*operands)  # warm-up
        best = min(_timed(plan.execute, *operands) for _ in range(2))
        timings.append((best, plan))
    timings.sort(key=lambda pair: pair[0])
    best, winner = timings[0]
    others = ", ".join(f"{p.method} ({p.lowering.describe(p)}) {t * 1e3:.2f} ms"
                       for t, p in timings[1:])
    return dataclasses.replace(winner, reason=f"measured {best * 1e3:.2f} ms against {others}")


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def plan_conv2d(x_shape, weight_shape, dtype="float32", *, stride=1, padding=0,
                dilation=1, groups=1, flip=False, padding_mode="zeros", method="auto",
                memory_limit=None, num_threads=None, measure=False, kind="forward"):
    """Plan a 2-D convolution or one of its gradients: choose the lowering,
    tile and threads.

    Every lowering of the table (``fastconv._lowerings.TABLE``) that applies
    proposes its best plan under the memory limit, and the cheapest by the
    cost model wins. Among the BLAS lowerings: a 1x1 kernel with stride 1 and
    no padding is one GEMM on the input itself (no workspace); a stretched
    matrix that fits the cache and the limit is built whole (several small
    images per GEMM); otherwise the stretched matrix is gathered in
    cache-sized tiles through the index map, as wide as the limit allows,
    with one buffer per thread or, if the limit allows only one, a single
    buffer and threaded BLAS. fastconv's own GEMM ("fused") outbids them on
    deep layers and on 1x1 layers with large maps, the direct kernels
    ("depthwise", "direct") on groups == C (or few channels per group) and where the padding is a large
    share of the taps, Winograd's F(4x4, 3x3) ("winograd", 4x fewer
    multiply-adds) on 3x3 stride-1 layers with enough channels and tiles. Plans are cached: planning the same call
    again costs a dictionary look-up.

    Parameters
    ----------
    x_shape : tuple of int
        (N, C, H, W).
    weight_shape : tuple of int
        (K, C/groups, R, S).
    dtype : dtype-like
        ``float32`` or ``float64`` (integer types plan as float64).
    stride, padding, dilation, groups, flip, padding_mode
        As in :func:`fastconv.conv2d`.
    method : {"auto", "stretch", "mapped", "gemm1x1", "fused", "depthwise", "direct", "winograd", "phased"}
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
        At stride 1 the input gradient can also run fused (or direct, or
        Winograd), as the forward convolution it is (the weights transposed
        per group and reversed);
        its workspace then holds that transposed copy of the weights. At
        any stride it can run "phased": one stride-1 forward pass per phase
        of the input (the positions phase::stride), each on the taps that
        land there, on fastconv's own forward kernels; its workspace holds
        every phase's weights (gathered in one pass; under a tight limit,
        only the largest phase's, gathered phase by phase), the largest
        phase's output, and its pass's buffers.

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
    ('winograd', True)
    >>> fastconv.plan_conv2d((16, 64, 224, 224), (64, 64, 5, 5), padding=2,
    ...                      memory_limit="64MiB").method
    'fused'
    """
    from fastconv._params import shape_like
    x_shape = shape_like(x_shape, "x_shape", "x")
    weight_shape = shape_like(weight_shape, "weight_shape", "w")
    geometry = conv_geometry(x_shape, weight_shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, flip=flip,
                             padding_mode=padding_mode)
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


