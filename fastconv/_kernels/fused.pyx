# The fused lowering: fastconv's own GEMM, in the BLIS/Goto structure, where
# packing the B panel IS the index map (no im2col buffer, no BLAS).
#
# Per group g the convolution is the GEMM
#     out[n, g*Kg:(g+1)*Kg, :] = Wg (Kg x rows) @ B_n (rows x Ho*Wo) + bias
# with B_n the stretched matrix of image n (row = (c, kr, ks), column =
# (oh, ow); see _index_map.pxd). Here the columns of all N images are one
# axis of N*Ho*Wo columns, so small maps (ResNet's 7x7 = 49 columns) still
# fill whole NR-wide micro-tiles; a micro-tile that straddles two images (or
# the end) is the only one that takes the slow store path.
#
#   packed weights (A): packed ONCE per call, before the parallel loop, in
#       MR-row panels per (group, KC block), zero-padded to a multiple of MR
#       rows: shared read-only by every thread. Or, weights_in_place, not
#       packed at all: the micro-kernel reads MR rows of the weight matrix
#       (lda = rows) and only a group's last, partial MR-row panel is copied
#       (zero-padded, "edge rows"). Packing is one pass over the weights per
#       call, which the columns amortise: with few columns (ResNet-50 5b, 8 x
#       49) it is ~6 % of the run, with many the packed panel's contiguous
#       reads win (the planner decides: Tuning.fused_in_place_max_cols).
#   work items: (group, block of columns, block of filters), dealt by a
#       dynamic OpenMP schedule, run NC columns at a time; _work_split sizes
#       the blocks so that 2 threads get equal work even when the problem
#       is small.
#   per item, per KC block: the item's thread gathers B (KC x NC) straight
#       from the input through the row table into NR-wide micro-panels in its
#       workspace (zero padding, stride, dilation, flip and any input strides,
#       exactly as gather_columns), then for each MC block of filters, each
#       NR micro-panel, each MR panel: one micro-kernel call. A pointwise
#       layer's x is B itself: with b_in_place, whole micro-panels are read
#       from x's channel rows (ldb = xs_c) and only the others are gathered.
#   micro-kernel (_fused_*.h): an MR x NR register tile with FMAs; the first
#       KC block writes (adding the bias), later ones accumulate, straight
#       into out (leading dimension Ho*Wo). Edge tiles (fewer than MR filters,
#       fewer than NR columns, or columns of two images) run the same kernel
#       into a small stack tile that _store_tile adds into the output: same
#       arithmetic, so results do not depend on the blocking or thread count.
#
# ISA: 0 / "generic" portable C, 1 / "avx2" AVX2+FMA, 2 / "avx512" AVX-512F/VL;
# see _fused_kernels.h for the run-time dispatch.

from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blocks cimport (ALIGN_BYTES, _aligned, _ceil_div, _panel_width,
                                        _round_up)
from fastconv._kernels._index_map cimport (build_row_table, ROW_FIELDS, ROW_OFFSET,
                                           ROW_OH_LO, ROW_OH_HI, ROW_OW_LO, ROW_OW_HI)

import functools

import numpy as np


cdef extern from "_fused_kernels.h" nogil:
    ctypedef void (*fc_ukr_f32_t)(Py_ssize_t, const float *, Py_ssize_t, const float *,
                                  Py_ssize_t, float *, Py_ssize_t, int,
                                  const float *) noexcept nogil
    ctypedef void (*fc_ukr_f64_t)(Py_ssize_t, const double *, Py_ssize_t, const double *,
                                  Py_ssize_t, double *, Py_ssize_t, int,
                                  const double *) noexcept nogil
    int fc_isa_available(int isa)
    void fc_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t nbytes,
                          int for_write)
    int fc_mr(int isa, int is_double)
    int fc_nr(int isa, int is_double)
    int fc_lanes(int isa, int is_double)
    fc_ukr_f32_t fc_ukr_f32(int isa)
    fc_ukr_f64_t fc_ukr_f64(int isa)
    fc_ukr_f32_t fc_ukr_narrow_f32(int isa, int nv)
    fc_ukr_f64_t fc_ukr_narrow_f64(int isa, int nv)
    fc_ukr_f32_t fc_ukr_width_f32(int isa, Py_ssize_t pw)
    fc_ukr_f64_t fc_ukr_width_f64(int isa, Py_ssize_t pw)
    ctypedef void (*fc_pack_f32_t)(float *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                   const float *, const Py_ssize_t *, int, Py_ssize_t) noexcept nogil
    ctypedef void (*fc_pack_f64_t)(double *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                   const double *, const Py_ssize_t *, int, Py_ssize_t) noexcept nogil
    fc_pack_f32_t fc_pack_f32(int isa)
    fc_pack_f64_t fc_pack_f64(int isa)
    ctypedef void (*fc_pack_a_f32_t)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, float *) noexcept nogil
    ctypedef void (*fc_pack_a_f64_t)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, double *) noexcept nogil
    ctypedef void (*fc_pack_linear_f32_t)(float *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                          const float *, const Py_ssize_t *,
                                          const unsigned long long *, int, int, int) noexcept nogil
    ctypedef void (*fc_pack_linear_f64_t)(double *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                          const double *, const Py_ssize_t *,
                                          const unsigned long long *, int, int, int) noexcept nogil
    ctypedef int (*fc_pack_step2_f32_t)(float *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                        const float *, const Py_ssize_t *, int, Py_ssize_t,
                                        Py_ssize_t) noexcept nogil
    ctypedef int (*fc_pack_step2_f64_t)(double *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                        const double *, const Py_ssize_t *, int, Py_ssize_t,
                                        Py_ssize_t) noexcept nogil
    fc_pack_step2_f32_t fc_pack_step2_f32(int isa)
    fc_pack_step2_f64_t fc_pack_step2_f64(int isa)
    fc_pack_linear_f32_t fc_pack_linear_f32(int isa)
    fc_pack_linear_f64_t fc_pack_linear_f64(int isa)
    fc_pack_a_f32_t fc_pack_a_f32(int isa)
    fc_pack_a_f64_t fc_pack_a_f64(int isa)
    ctypedef int (*fc_pack_bt_f32_t)(float *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                     const float *, const Py_ssize_t *, const Py_ssize_t *,
                                     const Py_ssize_t *, const Py_ssize_t *, const Py_ssize_t *,
                                     int, Py_ssize_t) noexcept nogil
    ctypedef int (*fc_pack_bt_f64_t)(double *, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                     const double *, const Py_ssize_t *, const Py_ssize_t *,
                                     const Py_ssize_t *, const Py_ssize_t *, const Py_ssize_t *,
                                     int, Py_ssize_t) noexcept nogil
    fc_pack_bt_f32_t fc_pack_bt_f32(int isa)
    fc_pack_bt_f64_t fc_pack_bt_f64(int isa)
    enum:
        FC_ROW_FIELDS, FC_ROW_OFFSET, FC_ROW_OH_LO, FC_ROW_OH_HI, FC_ROW_OW_LO, FC_ROW_OW_HI
        FC_SEG_FIELDS, FC_SEG_BASE, FC_SEG_OH, FC_SEG_OW, FC_SEG_LEN, FC_SEG_POS


# the C packing functions read the row table with their own copy of its layout
if (FC_ROW_FIELDS, FC_ROW_OFFSET, FC_ROW_OH_LO, FC_ROW_OH_HI, FC_ROW_OW_LO, FC_ROW_OW_HI) != \
        (ROW_FIELDS, ROW_OFFSET, ROW_OH_LO, ROW_OH_HI, ROW_OW_LO, ROW_OW_HI):
    raise ImportError("fastconv._kernels.fused: _fused_generic.h's row table layout differs "
                      "from _index_map.pxd's")


ISA_NAMES = ("generic", "avx2", "avx512")   # index = the ISA code of _fused_kernels.h
_ISA_CODES = {name: code for code, name in enumerate(ISA_NAMES)}

cdef enum:
    # Bounds of the register tiles (stack temp tile, segment table of _pack_b).
    MAX_MR = 16
    MAX_NR = 64
    # Linear columns (_pack_linear): at most this many images (or output
    # rows, where x's rows are further apart than Wo) per micro-panel
    # and taps per channel (the lane masks live on the stack); beyond, the
    # segment packer.
    LINEAR_MAX_SEGS = 4
    LINEAR_MAX_TAPS = 32
    # Column segments _pack_bt finds at a time (on the stack).
    BT_SEGS = 64
    # Column blocks per thread from which _work_split stops searching and
    # makes every item nc columns x all filters (equal items), which
    # conv2d_fused then schedules guided
    EQUAL_ITEMS = 64


# ---------------------------------------------------------------- ISA, blocking

cdef inline Py_ssize_t _padded_width(Py_ssize_t width, Py_ssize_t nr, Py_ssize_t lanes) noexcept nogil:
    """Columns computed for a block of width columns: whole NR panels and a
    partial last one of _panel_width."""
    return width // nr * nr + (_panel_width(width % nr, nr, lanes) if width % nr else 0)


def _narrow_lanes(int code, bint dbl):
    """fc_lanes of the ISA if it has a narrow kernel for every partial
    width (1 .. NR/lanes - 1 vectors), else 0 (partial panels run the full
    tile)."""
    cdef int lanes = fc_lanes(code, dbl), nr = fc_nr(code, dbl), nv
    if lanes >= nr:
        return 0
    for nv in range(1, nr // lanes):
        if (fc_ukr_narrow_f64(code, nv) == NULL if dbl else fc_ukr_narrow_f32(code, nv) == NULL):
            return 0
    return lanes


def supported_isas():
    """The instruction sets this build and this CPU can run, best first,
    among ("avx512", "avx2", "generic"); "generic" (portable C) always.

    "avx512" comes first where available although Zen 4 runs its 512-bit FMAs
    as two 256-bit halves: its 32 registers hold a larger tile (fewer loads per
    FMA); bench/fused_kernel.py measures the two against each other.
    """
    return tuple(name for name in ("avx512", "avx2", "generic")
                 if fc_isa_available(_ISA_CODES[name]))


def isa_code(isa):
    """The ISA code (0 generic, 1 avx2, 2 avx512) of a name, a code, or
    None / "auto" (the best this CPU runs). ValueError if this CPU or build
    cannot run it."""
    if isa is None or (isinstance(isa, str) and isa == "auto"):
        return _ISA_CODES[supported_isas()[0]]
    if isinstance(isa, str):
        if isa not in _ISA_CODES:
            raise ValueError(f"isa must be one of {ISA_NAMES} or 'auto', got {isa!r}")
        code = _ISA_CODES[isa]
    elif isinstance(isa, (int, np.integer)) and not isinstance(isa, bool):
        code = int(isa)
        if not 0 <= code < len(ISA_NAMES):
            raise ValueError(f"isa code must be 0 (generic), 1 (avx2) or 2 (avx512), got {isa}")
    else:
        raise TypeError(f"isa must be a name, a code or None, got {isa!r}")
    if not fc_isa_available(code):
        raise ValueError(f"isa {ISA_NAMES[code]!r} is not supported by this CPU or build; "
                         f"supported: {supported_isas()}")
    return code


def _dtype_is_double(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return 1
    if dtype == np.float32:
        return 0
    raise TypeError(f"dtype must be float32 or float64, got {dtype}")


# This machine's caches (Zen 4 EPYC, lscpu): 32 KiB L1d and 1 MiB L2 per
# core, 32 MiB L3 shared.
L2_BYTES = 1 << 20
# KC in bytes of one column of a packed panel (KC * itemsize).
KC_BYTES = 2304


def blocking(dtype, isa=None):
    """Default blocking of the fused GEMM for a dtype and ISA (name, code or
    None for the best): dict(MR=, NR=, KC=, NC=, MC=).

    MR x NR is the micro-kernel's register tile (fixed per kernel, see
    _fused_*.h). KC, NC, MC (Zen 4: 32 KiB L1d, 1 MiB L2 per core, 32 MiB L3;
    measured with bench/fused_kernel.py on one thread, CPU time, float32
    AVX-512 8x48 unless said):

    KC = 2304 bytes / itemsize (576 floats, 288 doubles): the depth of a
        packed panel. The classic model puts the KC x NR micro-panel of B in
        L1 (KC ~ 80 here); measured, the kernel's 24 FMAs per depth step hide
        L2 latency, so the micro-panel (110 KB) lives in L2: KC from 256 to
        1152 was flat within 1.5 % (vgg16_3_2 108-109 GFLOP/s, 4b 100-101),
        KC = 128 lost 3-4 % on 5b_3x3 (more passes through the output and
        edge tiles). 576 = 64*3*3 is also the whole depth of ResNet's 64-channel
        3x3 layer. float64 AVX-512 8x24: 144/288/576 within 1 %.
    NC = the KC x NC panel of B (one thread's workspace) in half of L2
        (~192 columns): 192, 480 and 960 were within 1 % of each other,
        so the smallest, for more work items and less workspace.
    MC = an MC x KC block of packed weights in a quarter of L2 (~112
        filters): 64, 128 and 256 within 1 %.
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    itemsize = 8 if dbl else 4
    mr, nr = fc_mr(code, dbl), fc_nr(code, dbl)
    kc = KC_BYTES // itemsize
    nc = max(nr, (L2_BYTES // 2) // (kc * itemsize) // nr * nr)
    mc = max(mr, (L2_BYTES // 4) // (kc * itemsize) // mr * mr)
    return dict(MR=mr, NR=nr, KC=kc, NC=nc, MC=mc)


def padded_columns(columns, dtype, isa=None):
    """Columns the micro-kernel computes for `columns` columns in one block:
    whole NR-wide panels, the last one narrowed to whole vectors where the
    ISA has narrow kernels (see _panel_width).

    >>> padded_columns(392, "float32", "generic") % blocking("float32", "generic")["NR"]
    0
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    cdef Py_ssize_t nr = fc_nr(code, dbl), lanes = _narrow_lanes(code, dbl)
    cdef Py_ssize_t n = int(columns)
    if n < 0:
        raise ValueError(f"columns must be >= 0, got {n}")
    return _padded_width(n, nr, lanes)


def buffer_sizes(K, rows, groups, kc, nc, dtype, isa=None, weights_in_place=False):
    """(packed_weight_elems, per_thread_workspace_elems): the sizes, in
    elements of dtype, of the arrays conv2d_fused needs:

        packed_weight: groups * ceil(K/groups / MR)*MR * rows  + 64 bytes / itemsize
                       (weights_in_place: groups * MR * rows if K/groups is
                       not a multiple of MR, else 0, + 64 bytes / itemsize:
                       the edge rows)
        workspace:     (num_threads, min(kc, rows) * ceil(nc / NR)*NR + 64 bytes / itemsize)

    (MR, NR of the ISA's kernel; the 64 bytes align the panels). The one
    formula for both allocating and counting the workspace.
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    itemsize = 8 if dbl else 4
    mr, nr = fc_mr(code, dbl), fc_nr(code, dbl)
    K, rows, groups, kc, nc = (int(v) for v in (K, rows, groups, kc, nc))
    if groups < 1 or K % groups or kc < 1 or nc < 1 or rows < 0:
        raise ValueError(f"buffer_sizes: bad K={K}, rows={rows}, groups={groups}, "
                         f"kc={kc}, nc={nc}")
    slack = ALIGN_BYTES // itemsize
    if weights_in_place:
        packed = (groups * mr * rows if (K // groups) % mr else 0) + slack
    else:
        packed = groups * _round_up(K // groups, mr) * rows + slack
    per_thread = min(kc, max(rows, 1)) * (_round_up(nc, nr)) + slack
    return packed, per_thread


# ---------------------------------------------------------------- work split

# Cost of gathering one element of B, in multiply-adds of the micro-kernel.
# Measured by perf: packing took 8 % of ResNet-50 3b_3x3 (128 filters, B
# packed once) and 7.9 % of 4b_3x3 (256 filters, B packed once per each of 2
# filter blocks): x / (128 + x) = 0.08 and 2x / (256 + 2x) = 0.079 give
# x = 11 (the old guess of 4, from a copy's throughput, let 4b, 4b_1x1 and
# VGG-16 3_2 pack B twice).
cdef double GATHER_MACS = 11
# Fixed cost of a work item (finding and packing its panels), in MACs.
cdef double ITEM_MACS = 20000


@functools.lru_cache(maxsize=512)
def _work_split(Py_ssize_t total_cols, Py_ssize_t Kg, Py_ssize_t groups, Py_ssize_t rows,
                Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t nc, Py_ssize_t mc, int threads,
                Py_ssize_t lanes=0):
    """(column block width, number of column blocks, filter block height,
    number of filter blocks) for the work items.

    One thread, or plenty of items (>= 64 per thread): blocks of nc columns
    (rounded up to NR), all the group's filters per item. Otherwise the
    candidate splits (from `threads` column blocks up to 4*threads more than
    nc-wide blocks need, widths in whole vectors (lanes; NR without narrow
    kernels); up to 2*threads filter blocks) are scored by the makespan of a
    greedy in-order assignment, which is what the dynamic schedule does,
    under a cost model (padded MACs, a partial last panel padded to lanes
    (_panel_width), + gather + a fixed cost per item); ties go to fewer
    items. A block wider than nc runs nc columns at a time (conv2d_fused),
    so B is gathered once per filter block whatever the width; a filter
    block costs its own gather of B (each thread packs the panel it needs).
    E.g. on 2 threads ResNet-50 4b_1x1 (1568 columns) becomes 2 blocks of
    784 columns, all filters each, not 9 x 2 items of 192 columns x 128
    filters: 0.90x the time (interleaved A/B); 5b_3x3 (392 columns x 512
    filters) 2 x 2 items of 208 + 184 columns x 256 filters.

    Cached: the search runs at Python speed, serially before the parallel
    loop, and a loop calls the same layers again and again. Per call it took
    (2 threads, the planned blocks): float64 ResNet-50 2a_1x1 0.44-0.50 ms
    (of a 3 ms call), 2a_3x3 and 2b_1x1 0.41 ms, their input gradients
    0.9-1.0 ms; float32 dilated_3x3_d2 0.25 ms (0.57 its input gradient),
    3b and VGG-16 3_2 0.05 ms; 3 us where the first test returns.
    """
    cdef Py_ssize_t width_max = _round_up(nc, nr)
    cdef Py_ssize_t nb_min = _ceil_div(total_cols, width_max)
    cdef Py_ssize_t k_pad = _round_up(Kg, mr)
    cdef Py_ssize_t granule = lanes if lanes else nr
    if threads <= 1 or groups * nb_min >= EQUAL_ITEMS * threads:
        return width_max, nb_min, k_pad, 1
    cdef double[::1] load = np.zeros(threads)
    cdef double cost, best_cost = -1, makespan
    cdef Py_ssize_t nb_c, nb_m, width, n_cb, height, n_mb, cb, mb, w, h, g, t, i_min
    cdef Py_ssize_t best_items = 0
    best = None
    for nb_c in range(min(nb_min, threads), nb_min + 4 * threads + 1):
        width = _round_up(_ceil_div(total_cols, nb_c), granule)
        n_cb = _ceil_div(total_cols, width)
        for nb_m in range(1, 2 * threads + 1):
            height = _round_up(_ceil_div(Kg, nb_m), mr)
            n_mb = _ceil_div(Kg, height)
            load[:] = 0
            for g in range(groups):
                for cb in range(n_cb):
                    w = min(width, total_cols - cb * width)
                    for mb in range(n_mb):
                        h = min(height, Kg - mb * height)
                        cost = (<double> _padded_width(w, nr, lanes) * _round_up(h, mr) * rows
                                + GATHER_MACS * w * rows + ITEM_MACS)
                        i_min = 0
                        for t in range(1, threads):
                            if load[t] < load[i_min]:
                                i_min = t
                        load[i_min] += cost
            makespan = 0
            for t in range(threads):
                makespan = max(makespan, load[t])
            if best is None or makespan < best_cost or (
                    makespan == best_cost and n_cb * n_mb * groups < best_items):
                best_cost = makespan
                best_items = n_cb * n_mb * groups
                best = (width, n_cb, height, n_mb)
    return best


# ---------------------------------------------------------------- packing

cdef void _pack_a(int isa, const floating *weight, Py_ssize_t rows, Py_ssize_t Kg,
                  Py_ssize_t k_pad, Py_ssize_t kc, Py_ssize_t mr, Py_ssize_t panel,
                  floating *dst) noexcept nogil:
    """Pack filter rows [panel*mr, panel*mr + mr) of one group (weight: its
    first row, leading dimension rows) for every KC block: block p holds, for
    each depth k, mr consecutive values (zeros past Kg). Block p of the group
    starts at p*kc*k_pad; the panel within it at panel*mr*kcb. The ISA's
    function (_fused_avx2.h, also AVX-512's) transposes 8 depth steps of the
    mr rows at a time in registers."""
    cdef Py_ssize_t k0, kcb, f0 = panel * mr
    cdef Py_ssize_t m = Kg - f0 if Kg - f0 < mr else mr
    k0 = 0
    while k0 < rows:
        kcb = rows - k0 if rows - k0 < kc else kc
        if floating is float:
            fc_pack_a_f32(isa)(weight + f0 * rows + k0, rows, m, mr, kcb,
                               dst + k0 * k_pad + f0 * kcb)
        else:
            fc_pack_a_f64(isa)(weight + f0 * rows + k0, rows, m, mr, kcb,
                               dst + k0 * k_pad + f0 * kcb)
        k0 += kcb


cdef void _copy_edge_rows(const floating *w_group, Py_ssize_t rows, Py_ssize_t Kg,
                          Py_ssize_t mr, floating *dst) noexcept nogil:
    """For weights read in place: the group's last MR-row panel when Kg is
    not a multiple of MR, its Kg % MR filter rows (w_group: the group's
    first row, leading dimension rows) then zero rows up to MR, into dst
    (MR x rows): the micro-kernel always reads MR rows."""
    cdef Py_ssize_t first = Kg - Kg % mr, i, k
    for i in range(mr):
        for k in range(rows):
            dst[i * rows + k] = w_group[(first + i) * rows + k] if first + i < Kg else 0


cdef inline Py_ssize_t _image_run(Py_ssize_t j, Py_ssize_t left, Py_ssize_t cols,
                                  Py_ssize_t *n, Py_ssize_t *col) noexcept nogil:
    """Global column j (of all images' columns, cols per image): its image
    *n and position *col; returns how many of the next `left` columns stay
    in that image (the split of a panel or tile where the image changes)."""
    n[0] = j // cols
    col[0] = j - n[0] * cols
    return cols - col[0] if cols - col[0] < left else left


cdef inline unsigned long long _lanes(Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Bits [lo, hi) of a 64-bit lane mask (0 <= lo <= hi <= 64)."""
    cdef unsigned long long upto = (~0ULL) if hi >= 64 else ((1ULL << hi) - 1)
    return upto & ~((1ULL << lo) - 1)


cdef inline bint _whole_panel(Py_ssize_t j, Py_ssize_t nvalid, Py_ssize_t pw,
                              Py_ssize_t cols) noexcept nogil:
    """A micro-panel of global columns j.. whose columns are all valid
    (nvalid == its width pw) and in one image: the kernel stores it straight
    into the output and, with B in place, reads it straight from x."""
    return nvalid == pw and j % cols + pw <= cols


cdef inline bint _b_in_place_layout(Py_ssize_t H, Py_ssize_t W, Py_ssize_t xs_h,
                                    Py_ssize_t xs_w, Py_ssize_t R, Py_ssize_t S,
                                    Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t stride_h,
                                    Py_ssize_t stride_w, Py_ssize_t pad_top,
                                    Py_ssize_t pad_left) noexcept nogil:
    """B is x's channel rows (1x1, stride 1, the one tap inside the input at
    every output position) and an image's columns one run of each (unit
    column step, rows Wo apart; either step is moot along a length-1 axis,
    where NumPy may give any stride): conv2d_fused's b_in_place applies."""
    return (R == 1 and S == 1 and stride_h == 1 and stride_w == 1 and pad_top == 0
            and pad_left == 0 and Ho <= H and Wo <= W
            and (xs_w == 1 or Wo == 1) and (xs_h == Wo or Ho == 1))


def reads_x_in_place(x, Py_ssize_t R, Py_ssize_t S, Py_ssize_t Ho, Py_ssize_t Wo,
                     Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_top,
                     Py_ssize_t pad_left):
    """Whether conv2d_fused(..., b_in_place=True) reads this x (N, C, H, W)
    in place for that geometry (for tests: which path ran)."""
    itemsize = x.itemsize
    return bool(_b_in_place_layout(x.shape[2], x.shape[3], x.strides[2] // itemsize,
                                   x.strides[3] // itemsize, R, S, Ho, Wo, stride_h,
                                   stride_w, pad_top, pad_left))


cdef bint _pack_linear(int isa, const floating *x_group, Py_ssize_t xs_n,
                       const Py_ssize_t *table, Py_ssize_t taps, Py_ssize_t k0, Py_ssize_t kcb,
                       Py_ssize_t j, Py_ssize_t nvalid, Py_ssize_t cols, Py_ssize_t Wo,
                       Py_ssize_t row_step, Py_ssize_t nr, floating *dst) noexcept nogil:
    """Pack one micro-panel (global columns j.. j+nvalid) of unit column
    step with the ISA's linear packer (see _fused_generic.h; conv2d_fused
    checked that the ISA has one and that taps <= LINEAR_MAX_TAPS); False
    (nothing written) if the panel spans more than LINEAR_MAX_SEGS segments.

    A segment is the panel's columns of one image where x's row step is Wo
    (linear columns), else of one output row; its lane mask per tap
    is built from the row table's valid ranges (rows 0..taps-1 hold every
    tap; the other channels repeat them), one output row at a time."""
    cdef Py_ssize_t bases[LINEAR_MAX_SEGS]
    cdef unsigned long long masks[LINEAR_MAX_SEGS * LINEAR_MAX_TAPS]
    cdef Py_ssize_t ns = 0, off = 0, n, col, run, left, lane, oh, ow, a, b, t, s
    cdef Py_ssize_t unit = cols if row_step == Wo else Wo
    cdef const Py_ssize_t *row
    if (j + nvalid - 1) // unit - j // unit >= LINEAR_MAX_SEGS:
        return False
    while off < nvalid:
        run = _image_run(j + off, nvalid - off, cols, &n, &col)
        if unit == cols:
            bases[ns] = n * xs_n + col - off
        else:
            # rows of x further apart than Wo: a segment is one output row
            oh = col // Wo
            ow = col - oh * Wo
            if Wo - ow < run:
                run = Wo - ow
            bases[ns] = n * xs_n + oh * row_step + ow - off
        for t in range(taps):
            masks[ns * taps + t] = 0
        # one output row of the segment at a time: its lanes that a tap
        # finds inside the input are one range
        lane = off
        left = run
        while left > 0:
            oh = col // Wo
            ow = col - oh * Wo
            b = Wo - ow if Wo - ow < left else left
            for t in range(taps):
                row = table + t * ROW_FIELDS
                if row[ROW_OH_LO] <= oh < row[ROW_OH_HI]:
                    a = row[ROW_OW_LO] - ow if row[ROW_OW_LO] > ow else 0
                    s = row[ROW_OW_HI] - ow if row[ROW_OW_HI] - ow < b else b
                    if s > a:
                        masks[ns * taps + t] |= _lanes(lane + a, lane + s)
            col += b
            lane += b
            left -= b
        ns += 1
        off += run
    if floating is float:
        fc_pack_linear_f32(isa)(dst, nr, kcb, table + k0 * ROW_FIELDS, x_group, bases, masks,
                                <int> ns, <int> taps, <int> (k0 % taps))
    else:
        fc_pack_linear_f64(isa)(dst, nr, kcb, table + k0 * ROW_FIELDS, x_group, bases, masks,
                                <int> ns, <int> taps, <int> (k0 % taps))
    return True


cdef Py_ssize_t _pack_b(int isa, const floating *x_group, Py_ssize_t xs_n,
                        const Py_ssize_t *table, Py_ssize_t k0, Py_ssize_t kcb,
                        Py_ssize_t j0, Py_ssize_t width, Py_ssize_t cols, Py_ssize_t Wo,
                        Py_ssize_t row_step, Py_ssize_t col_step, Py_ssize_t nr,
                        Py_ssize_t lanes, Py_ssize_t taps, Py_ssize_t S, bint linear,
                        bint step2, bint in_place, floating *dst) noexcept nogil:
    """Gather rows [k0, k0+kcb) x global columns [j0, j0+width) of the
    stretched matrices (column j = image j // cols, position j % cols) into
    NR-wide micro-panels: micro-panel q (columns j0+q*NR...) at dst +
    q*NR*kcb, depth k at +k*NR, zero-filled past width; a partial last one
    only _panel_width(..., lanes) wide (depth k at +k*that).

    The columns of a micro-panel split into segments that share an image and
    an output row; those are the same for every row of the table, so they are
    found here once per micro-panel, and the ISA's pack function
    (_fused_*.h) makes each (row, segment) one bounds decision (the padding,
    from the row table) and one copy, as gather_columns does. linear
    columns (unit column step, output row step Wo: conv2d_fused decides)
    go to _pack_linear instead, where it applies, and step2 ones (column
    step 2: conv2d_fused decides) to the ISA's stride-2 packer, which finds
    the lane masks once per micro-panel and kernel column, not per (row,
    segment), where the ISA has one. in_place: the micro-panels
    the kernel reads from x (_whole_panel) are left unwritten. Returns how
    many micro-panels the stride-2 packer filled (pack_b_panels, for tests).
    """
    cdef Py_ssize_t segs[MAX_NR * FC_SEG_FIELDS]
    cdef Py_ssize_t *seg
    cdef Py_ssize_t q, nvalid, pw, ns, off, j, n, col, oh, ow, run
    cdef fc_pack_step2_f32_t step2_32 = fc_pack_step2_f32(isa)
    cdef fc_pack_step2_f64_t step2_64 = fc_pack_step2_f64(isa)
    cdef Py_ssize_t by_step2 = 0
    q = 0
    while q < width:
        nvalid = width - q if width - q < nr else nr
        pw = _panel_width(nvalid, nr, lanes)
        if in_place and _whole_panel(j0 + q, nvalid, pw, cols):
            q += nr
            continue
        if linear and _pack_linear(isa, x_group, xs_n, table, taps, k0, kcb, j0 + q, nvalid,
                                   cols, Wo, row_step, pw, dst + q * kcb):
            q += nr
            continue
        ns = 0
        off = 0
        j = j0 + q
        while off < nvalid:
            n = j // cols
            col = j - n * cols
            oh = col // Wo
            ow = col - oh * Wo
            run = Wo - ow
            if run > nvalid - off:
                run = nvalid - off
            seg = segs + ns * FC_SEG_FIELDS
            seg[FC_SEG_BASE] = n * xs_n + oh * row_step
            seg[FC_SEG_OH] = oh
            seg[FC_SEG_OW] = ow
            seg[FC_SEG_LEN] = run
            seg[FC_SEG_POS] = off
            ns += 1
            off += run
            j += run
        if floating is float:
            if step2 and step2_32 != NULL and step2_32(
                    dst + q * kcb, pw, kcb, table + k0 * ROW_FIELDS, x_group, segs, <int> ns,
                    S, k0 % S):
                by_step2 += 1
                q += nr
                continue
            fc_pack_f32(isa)(dst + q * kcb, pw, kcb, table + k0 * ROW_FIELDS, x_group,
                             segs, <int> ns, col_step)
        else:
            if step2 and step2_64 != NULL and step2_64(
                    dst + q * kcb, pw, kcb, table + k0 * ROW_FIELDS, x_group, segs, <int> ns,
                    S, k0 % S):
                by_step2 += 1
                q += nr
                continue
            fc_pack_f64(isa)(dst + q * kcb, pw, kcb, table + k0 * ROW_FIELDS, x_group,
                             segs, <int> ns, col_step)
        q += nr
    return by_step2


def pack_b_panels(const floating[:, :, :, :] x, Py_ssize_t R, Py_ssize_t S,
                  Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_top,
                  Py_ssize_t pad_left, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t k0,
                  Py_ssize_t kcb, Py_ssize_t j0, Py_ssize_t width, isa,
                  bint panel_packers=True):
    """For tests: rows [k0, k0+kcb) x columns [j0, j0+width) of the stretched
    matrix of x (one group, every channel; dilation 1, no flip; Ho x Wo
    outputs, column j = image j // (Ho*Wo)) packed into micro-panels as the
    forward pass packs B (_pack_b; the linear packer left out), into a
    NaN-filled array (micro-panel q at q*NR*kcb). Returns (the array, how many
    micro-panels the stride-2 packer filled): with panel_packers False, none.

    >>> import numpy as np
    >>> x = np.arange(2 * 9 * 9, dtype=np.float32).reshape(1, 2, 9, 9)
    >>> panels, by_step2 = pack_b_panels(x, 3, 3, 2, 2, 1, 1, 5, 5, 0, 18, 0, 25, "generic")
    >>> by_step2, panels.shape[0] >= 18 * 25
    (0, True)
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int code = isa_code(isa)
    cdef bint dbl = floating is double
    cdef Py_ssize_t nr = fc_nr(code, dbl), lanes = _narrow_lanes(code, dbl)
    cdef Py_ssize_t itemsize = sizeof(floating), rows = C * R * S, cols = Ho * Wo
    if R < 1 or S < 1 or stride_h < 1 or stride_w < 1 or Ho < 1 or Wo < 1:
        raise ValueError("pack_b_panels: bad geometry")
    if k0 < 0 or kcb < 1 or k0 + kcb > rows or j0 < 0 or width < 1 or j0 + width > N * cols:
        raise ValueError(f"pack_b_panels: rows [{k0}, {k0 + kcb}) of {rows}, columns "
                         f"[{j0}, {j0 + width}) of {N * cols}")
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    table = np.empty((rows, ROW_FIELDS), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] t = table
    dtype = np.float64 if dbl else np.float32
    out = np.full(_round_up(width, nr) * kcb, np.nan, dtype)
    cdef floating[::1] o = out
    build_row_table(&t[0, 0], C, R, S, H, W, Ho, Wo, stride_h, stride_w, pad_top, pad_left,
                    1, 1, xs_c, xs_h, xs_w, False)
    by_step2 = _pack_b(code, &x[0, 0, 0, 0], xs_n, &t[0, 0], k0, kcb, j0, width, cols, Wo,
                       stride_h * xs_h, stride_w * xs_w, nr, lanes, R * S, S, False,
                       panel_packers and stride_w * xs_w == 2, False, &o[0])
    return out, by_step2


cdef inline void _store_tile(const floating *tile, Py_ssize_t ld, Py_ssize_t m,
                             Py_ssize_t j, Py_ssize_t width, floating *out_rows,
                             Py_ssize_t image_step, Py_ssize_t cols, int first,
                             const floating *bias) noexcept nogil:
    """Add (first: write, plus the bias) an m x width tile of global columns
    j.. into the output rows at out_rows (image 0, leading dimension cols,
    images image_step apart), split where the columns change image."""
    cdef Py_ssize_t off = 0, n, col, run, i, t
    cdef floating bi
    cdef floating *o
    cdef const floating *src
    while off < width:
        run = _image_run(j + off, width - off, cols, &n, &col)
        for i in range(m):
            o = out_rows + n * image_step + i * cols + col
            src = tile + i * ld + off
            if not first:
                for t in range(run):
                    o[t] = o[t] + src[t]
            elif bias != NULL:
                bi = bias[i]
                for t in range(run):
                    o[t] = src[t] + bi
            else:
                for t in range(run):
                    o[t] = src[t]
        off += run


# ---------------------------------------------------------------- one work item

cdef struct Geometry:
    Py_ssize_t Kg, k_pad, rows, cols, Wo, xs_n, row_step, col_step, image_step
    Py_ssize_t mr, nr, kc, mc
    Py_ssize_t lanes            # width step of the narrow kernels (0: none; _narrow_lanes)
    Py_ssize_t taps             # R*S: rows per channel of the row table
    Py_ssize_t S                # the kernel's width: a row's kernel column is its index % S
    bint step2                  # column step 2: the stride-2 packer where the ISA has one
    bint linear                 # unit column step: runs of x per image or row (_pack_linear)
    bint a_in_place             # weights read in place (packed_group: the edge rows)
    bint b_in_place             # whole micro-panels read from x in place (_b_in_place_layout)
    Py_ssize_t xs_c             # x's channel step: the depth step of B read in place
    int isa


cdef void _run_item(const Geometry *geo, const floating *x_group, const Py_ssize_t *table,
                    const floating *w_group, const floating *packed_group,
                    const floating *bias_group,
                    floating *out_group, floating *buf, Py_ssize_t j0, Py_ssize_t width,
                    Py_ssize_t m0, Py_ssize_t m1) noexcept nogil:
    """Filters [m0, m1) of one group x global columns [j0, j0+width).
    w_group: the group's weight rows; packed_group: its packed panels, or
    (geo.a_in_place) its edge rows."""
    cdef floating tile[MAX_MR * MAX_NR]
    cdef Py_ssize_t lda = geo.rows if geo.a_in_place else 0
    cdef fc_ukr_f32_t panel32
    cdef fc_ukr_f64_t panel64
    cdef Py_ssize_t mr = geo.mr, nr = geo.nr, cols = geo.cols, Kg = geo.Kg
    cdef Py_ssize_t k0, kcb, ic, ie, jr, ir, nvalid, pw, j, n, col, m, ldb
    cdef Py_ssize_t n_blocks, block, r0, r1
    cdef bint direct
    cdef const floating *b_next
    cdef int first
    cdef const floating *a_block
    cdef const floating *ap
    cdef const floating *bp
    cdef const floating *bias_i
    cdef floating *c_col
    k0 = 0
    while k0 < geo.rows:
        kcb = geo.rows - k0 if geo.rows - k0 < geo.kc else geo.kc
        first = k0 == 0
        _pack_b(geo.isa, x_group, geo.xs_n, table, k0, kcb, j0, width, cols, geo.Wo,
                geo.row_step, geo.col_step, nr, geo.lanes, geo.taps, geo.S, geo.linear,
                geo.step2, geo.b_in_place, buf)
        a_block = packed_group + k0 * geo.k_pad
        ic = m0
        while ic < m1:
            ie = ic + geo.mc if ic + geo.mc < m1 else m1
            jr = 0
            while jr < width:
                nvalid = width - jr if width - jr < nr else nr
                pw = _panel_width(nvalid, nr, geo.lanes)
                panel32 = fc_ukr_width_f32(geo.isa, pw)
                panel64 = fc_ukr_width_f64(geo.isa, pw)
                j = j0 + jr
                n = j // cols
                col = j - n * cols
                direct = _whole_panel(j, nvalid, pw, cols)
                if direct and geo.b_in_place:
                    bp = x_group + n * geo.xs_n + table[k0 * ROW_FIELDS + ROW_OFFSET] + col
                    ldb = geo.xs_c
                else:
                    bp = buf + jr * kcb
                    ldb = pw
                c_col = out_group + n * geo.image_step + col
                # B read in place (a pointwise layer): its first pass per
                # micro-panel read one row per channel plane from memory; the
                # next micro-panel's rows are prefetched a slice per call of
                # this one's, so that pass finds them in the cache
                b_next = NULL
                if direct and geo.b_in_place and col + 2 * nr <= cols:
                    b_next = bp + nr
                n_blocks = (ie - ic + mr - 1) // mr
                block = 0
                ir = ic
                while ir < ie:
                    if b_next != NULL:
                        r0 = block * kcb // n_blocks
                        r1 = (block + 1) * kcb // n_blocks
                        fc_prefetch_rows(b_next + r0 * ldb, ldb * sizeof(floating), r1 - r0,
                                         nr * sizeof(floating), 0)
                        block += 1
                    if lda == 0:
                        ap = a_block + ir * kcb
                    elif ir + mr <= Kg:
                        ap = w_group + ir * lda + k0     # MR rows of the weights
                    else:
                        ap = packed_group + k0           # the edge rows' copy
                    bias_i = bias_group + ir if bias_group != NULL else NULL
                    if direct and ir + mr <= Kg:
                        if floating is float:
                            panel32(kcb, ap, lda, bp, ldb, c_col + ir * cols, cols, first, bias_i)
                        else:
                            panel64(kcb, ap, lda, bp, ldb, c_col + ir * cols, cols, first, bias_i)
                    else:
                        if floating is float:
                            panel32(kcb, ap, lda, bp, ldb, tile, nr, 1, NULL)
                        else:
                            panel64(kcb, ap, lda, bp, ldb, tile, nr, 1, NULL)
                        m = Kg - ir if Kg - ir < mr else mr
                        _store_tile(tile, nr, m, j, nvalid, out_group + ir * cols,
                                    geo.image_step, cols, first, bias_i)
                    ir += mr
                jr += nr
            ic = ie
        k0 += kcb


cdef struct Work:
    # what every work item of one conv2d_fused call shares
    const Geometry *geo
    const void *x0
    const Py_ssize_t *table
    const void *weight
    const void *packed
    const void *bias
    void *out
    Py_ssize_t a_stride, x_group_step, total, cb_width, n_col_blocks, mb_height
    Py_ssize_t n_m_blocks, sub_width


cdef void _run_work_item(const Work *work, Py_ssize_t item, floating *buf) noexcept nogil:
    """Work item `item` of conv2d_fused: (group, column block, filter block),
    nc columns at a time where the block is wider than the workspace's panel."""
    cdef const Geometry *geo = work.geo
    cdef Py_ssize_t g = item // (work.n_col_blocks * work.n_m_blocks)
    cdef Py_ssize_t cb = (item // work.n_m_blocks) % work.n_col_blocks
    cdef Py_ssize_t mb = item % work.n_m_blocks
    cdef Py_ssize_t j0 = cb * work.cb_width
    cdef Py_ssize_t w = work.total - j0 if work.total - j0 < work.cb_width else work.cb_width
    cdef Py_ssize_t m0 = mb * work.mb_height
    cdef Py_ssize_t m1 = m0 + work.mb_height if m0 + work.mb_height < geo.Kg else geo.Kg
    cdef Py_ssize_t s0 = 0
    cdef const floating *bias = <const floating *> work.bias
    while s0 < w:
        _run_item(geo, <const floating *> work.x0 + g * work.x_group_step, work.table,
                  <const floating *> work.weight + g * geo.Kg * geo.rows,
                  <const floating *> work.packed + g * work.a_stride,
                  bias + g * geo.Kg if bias != NULL else NULL,
                  <floating *> work.out + g * geo.Kg * geo.cols, buf,
                  j0 + s0, w - s0 if w - s0 < work.sub_width else work.sub_width, m0, m1)
        s0 += work.sub_width


# ---------------------------------------------------------------- entry point

def conv2d_fused(const floating[:, :, :, :] x,
                 const floating[:, ::1] weight,
                 const floating[::1] bias,
                 floating[:, :, ::1] out,
                 floating[::1] packed_weight,
                 floating[:, ::1] workspace,
                 Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                 Py_ssize_t stride_h, Py_ssize_t stride_w,
                 Py_ssize_t pad_top, Py_ssize_t pad_left,
                 Py_ssize_t dil_h, Py_ssize_t dil_w,
                 Py_ssize_t groups, bint flip,
                 Py_ssize_t kc, Py_ssize_t nc, Py_ssize_t mc,
                 isa, int num_threads, bint panel_packers=True, row_table=None,
                 bint weights_in_place=False, bint b_in_place=False):
    """out (N, K, Ho*Wo), C-contiguous = the convolution of x (N, C, H, W; any
    strides, negative and zero included) with weight (K, C/groups*R*S),
    C-contiguous, plus bias (K,) (length 0: no bias), on fastconv's own GEMM.

    packed_weight: 1-D, >= buffer_sizes(...)[0] elements (overwritten);
    workspace: (>= num_threads, >= buffer_sizes(...)[1]) (overwritten);
    kc, nc, mc >= 1: depth, columns and filters of the blocks (see blocking();
    kc and nc must be those given to buffer_sizes; any values >= 1 are correct);
    isa: "avx512", "avx2", "generic", their codes 2, 1, 0, or None / "auto"
    for the best of supported_isas(); num_threads: OpenMP threads (>= 1);
    panel_packers False: every micro-panel through the segment packer, not
    the linear or stride-2 one where it applies (for tests: they must agree);
    row_table: an intp array of >= (C/groups*R*S, ROW_FIELDS), C-contiguous,
    for the index map's row table (overwritten; None: allocated here);
    weights_in_place: the micro-kernel reads the weight rows in place (no
    packing pass; packed_weight then holds only the edge rows, sized by
    buffer_sizes(..., weights_in_place=True)); the same bits either way.
    b_in_place: where the kernel is 1x1 at stride 1 without padding and
    x's rows are contiguous (unit column step, row step Wo), the micro-kernel
    reads whole micro-panels from x's channel rows in place, xs_c apart, and
    only the others are packed; the same bits either way.
    Same index-map conventions as conv2d_mapped (flip reverses the kernel).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], rows = weight.shape[1]
    cdef Py_ssize_t cols = out.shape[2]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    cdef Py_ssize_t mr = fc_mr(code, dbl), nr = fc_nr(code, dbl)
    cdef Py_ssize_t itemsize = sizeof(floating)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if kc < 1 or nc < 1 or mc < 1:
        raise ValueError(f"kc, nc, mc must be >= 1, got {kc}, {nc}, {mc}")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if Wo < 1 or cols % Wo or R < 1 or S < 1:
        raise ValueError(f"bad geometry: Wo={Wo}, R={R}, S={S}, out columns {cols}")
    if rows != C // groups * R * S:
        raise ValueError(f"weight has {rows} columns, expected C/groups*R*S = {C // groups * R * S}")
    if out.shape[0] != N or out.shape[1] != K:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected ({N}, {K}, {cols})")
    if bias.shape[0] not in (0, K):
        raise ValueError(f"bias has {bias.shape[0]} values, expected 0 or K={K}")
    if N == 0 or K == 0 or cols == 0:
        return
    if rows == 0:
        if bias.shape[0]:
            np.asarray(out)[...] = np.asarray(bias)[:, None]
        else:
            np.asarray(out)[...] = 0
        return
    need_packed, need_ws = buffer_sizes(K, rows, groups, kc, nc, np.float64 if dbl else np.float32,
                                        code, weights_in_place)
    if packed_weight.shape[0] < need_packed:
        raise ValueError(f"packed_weight has {packed_weight.shape[0]} elements, needs {need_packed}")
    if workspace.shape[0] < num_threads or workspace.shape[1] < need_ws:
        raise ValueError(f"workspace has shape {tuple(workspace.shape)}, needs "
                         f"({num_threads}, {need_ws})")

    cdef Py_ssize_t Ho = cols // Wo, c_group = C // groups
    cdef Geometry geo
    geo.Kg = K // groups
    geo.k_pad = _round_up(geo.Kg, mr)
    geo.rows = rows
    geo.cols = cols
    geo.Wo = Wo
    geo.xs_n = x.strides[0] // itemsize
    cdef Py_ssize_t xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    geo.row_step = stride_h * xs_h
    geo.col_step = stride_w * xs_w
    geo.image_step = K * cols
    geo.mr = mr
    geo.nr = nr
    geo.lanes = _narrow_lanes(code, dbl)
    geo.kc = kc if kc < rows else rows
    geo.mc = max(mr, mc // mr * mr)
    geo.isa = code
    geo.taps = R * S
    geo.S = S
    geo.step2 = panel_packers and geo.col_step == 2
    geo.a_in_place = weights_in_place
    # every panel row of an image (row step Wo) or of an output row one run
    # of x, and a linear packer for the ISA whose masks hold the taps (per
    # panel, _pack_linear counts the segments)
    geo.linear = (panel_packers and geo.col_step == 1
                  and geo.taps <= LINEAR_MAX_TAPS
                  and (fc_pack_linear_f32(code) != NULL if floating is float
                       else fc_pack_linear_f64(code) != NULL))
    # a 1x1 kernel at stride 1 whose one tap is inside the input everywhere:
    # B's rows are x's channel planes, a micro-panel's columns one run of a
    # plane, so the kernel reads them in place, xs_c apart; only the panels
    # that straddle images or are partial get packed. Packing was 20 % of
    # ResNet-50 2a_1x1 (64 filters amortise it least).
    geo.xs_c = xs_c
    geo.b_in_place = b_in_place and _b_in_place_layout(H, W, xs_h, xs_w, R, S, Ho, Wo, stride_h,
                                                       stride_w, pad_top, pad_left)
    cdef Py_ssize_t total = N * cols
    width, n_cb, height, n_mb = _work_split(total, geo.Kg, groups, rows, mr, nr, nc, geo.mc,
                                            num_threads, geo.lanes)
    cdef Py_ssize_t cb_width = width, n_col_blocks = n_cb
    cdef Py_ssize_t mb_height = height, n_m_blocks = n_mb
    if row_table is None:
        row_table = np.empty((rows, ROW_FIELDS), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] table = row_table
    if table.shape[0] < rows or table.shape[1] != ROW_FIELDS:
        raise ValueError(f"row_table has shape {tuple(table.shape)}, needs ({rows}, {ROW_FIELDS})")
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *packed = _aligned(&packed_weight[0])
    cdef floating *out0 = &out[0, 0, 0]
    cdef Py_ssize_t item, g, panel, n_items
    cdef Work work
    cdef Py_ssize_t sub_width = _round_up(nc, nr)
    cdef Py_ssize_t n_panels = geo.k_pad // mr
    cdef Py_ssize_t a_stride = mr * rows if weights_in_place else geo.k_pad * rows

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        if weights_in_place:
            if geo.Kg % mr:
                for g in range(groups):
                    _copy_edge_rows(&weight[g * geo.Kg, 0], rows, geo.Kg, mr,
                                    packed + g * a_stride)
        else:
            # weights first: every item reads every panel of its group
            for item in prange(groups * n_panels, schedule="static", num_threads=num_threads):
                g = item // n_panels
                panel = item % n_panels
                _pack_a(code, &weight[g * geo.Kg, 0], rows, geo.Kg, geo.k_pad, geo.kc, mr,
                        panel, packed + g * a_stride)
        work.geo = &geo
        work.x0 = x0
        work.table = &table[0, 0]
        work.weight = &weight[0, 0]
        work.packed = packed
        work.bias = bias_ptr
        work.out = out0
        work.a_stride = a_stride
        work.x_group_step = c_group * xs_c
        work.total = total
        work.cb_width = cb_width
        work.n_col_blocks = n_col_blocks
        work.mb_height = mb_height
        work.n_m_blocks = n_m_blocks
        work.sub_width = sub_width
        n_items = groups * n_col_blocks * n_m_blocks
        if n_items >= EQUAL_ITEMS * num_threads:
            # many equal items (nc columns each): a dynamic schedule hands
            # neighbouring blocks to the threads at the same time, and the
            # output lines their edges share (rows of cols values, rarely a
            # multiple of a line) bounce between the cores; guided gives each
            # thread long runs of blocks, and smaller ones at the end to
            # balance. MTCNN's first layer (67712 columns x 32 filters):
            # 0.85 -> 0.77 ms, paper_mnist 0.36 -> 0.26 (fp32, 2 threads)
            for item in prange(n_items, schedule="guided", num_threads=num_threads):
                _run_work_item(&work, item, _aligned(&workspace[threadid(), 0]))
        else:
            # few items, sized by _work_split's model of this schedule
            for item in prange(n_items, schedule="dynamic", num_threads=num_threads):
                _run_work_item(&work, item, _aligned(&workspace[threadid(), 0]))


# ---------------------------------------------------------------- adjoint filters

cdef enum:
    # Tile of the filter transpose: ADJ_TILE filters x ADJ_TILE channels, each
    # a run of taps, so that reads and writes both move ADJ_TILE*taps
    # contiguous values per row (a NumPy copy through the transposed view
    # jumped a whole filter row per element: 4.5 ms for 512 x 512 x 3 x 3).
    ADJ_TILE = 16


def adjoint_filters(const floating[:, ::1] weight, floating[:, ::1] out, Py_ssize_t groups,
                    Py_ssize_t taps, int num_threads):
    """out (C, K/groups*taps) = each group's filters transposed: out[g*C/g + c,
    k*taps + t] = weight[g*K/g + k, c*taps + t] for weight (K, C/groups*taps),
    the weights of the input gradient's forward pass (conv2d_fused on the
    output gradient; the kernel's reversal is the flip). Blocked in tiles
    of ADJ_TILE filters x ADJ_TILE channels, over num_threads threads.

    >>> import numpy as np
    >>> w = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3 * 4)
    >>> out = np.empty((3, 2 * 4), np.float32)
    >>> adjoint_filters(w, out, 1, 4, 1)
    >>> bool((out.reshape(3, 2, 4) == w.reshape(2, 3, 4).transpose(1, 0, 2)).all())
    True
    """
    cdef Py_ssize_t K = weight.shape[0], C = out.shape[0]
    if groups < 1 or taps < 1 or K % groups or C % groups:
        raise ValueError(f"adjoint_filters: groups={groups} must divide K={K} and C={C}, "
                         f"taps={taps} >= 1")
    cdef Py_ssize_t kg = K // groups, cg = C // groups
    if weight.shape[1] != cg * taps or out.shape[1] != kg * taps:
        raise ValueError(f"adjoint_filters: weight {tuple(weight.shape)} and out "
                         f"{tuple(out.shape)} do not match groups={groups}, taps={taps}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if K == 0 or C == 0:
        return
    cdef Py_ssize_t c_tiles = _ceil_div(cg, ADJ_TILE)
    cdef Py_ssize_t item, g, c0, c1, k0, k1, kk, k2, k, c, t
    cdef const floating *src
    cdef floating *dst
    with nogil:
        for item in prange(groups * c_tiles, schedule="static", num_threads=num_threads):
            g = item // c_tiles
            c0 = (item % c_tiles) * ADJ_TILE
            c1 = c0 + ADJ_TILE if c0 + ADJ_TILE < cg else cg
            k0 = 0
            while k0 < kg:
                k1 = k0 + ADJ_TILE if k0 + ADJ_TILE < kg else kg
                if taps == 1:
                    # 1x1 kernels: per channel, 8 filters' values written
                    # side by side, read down 8 rows of the weights. The
                    # 3x3 order wrote one element to each of 16 rows K
                    # elements apart, which share a cache set when K is a
                    # power of two; reading down 16 rows C apart thrashes
                    # one the same way (16 lines in a 12-way set). On one
                    # thread: 2048 x 512 2.0 -> 0.38 ns an element, 512 x
                    # 2048 0.65 -> 0.33
                    kk = k0
                    while kk < k1:
                        k2 = kk + 8 if kk + 8 < k1 else k1
                        for c in range(c0, c1):
                            dst = &out[g * cg + c, 0]
                            src = &weight[g * kg, c]
                            for k in range(kk, k2):
                                dst[k] = src[k * cg]
                        kk = k2
                    k0 = k1
                    continue
                for k in range(k0, k1):
                    src = &weight[g * kg + k, 0]
                    for c in range(c0, c1):
                        dst = &out[g * cg + c, 0] + k * taps
                        if taps == 9:
                            # 3 x 3 kernels: a copy of constant length, which
                            # the compiler unrolls: 0.25 -> 0.17 ms for 256 x
                            # 256 x 3 x 3 on one thread (512 x 512, 9.4 MB
                            # each way, is bound by memory: 1.4-1.5 ms)
                            for t in range(9):
                                dst[t] = src[c * 9 + t]
                        else:
                            for t in range(taps):
                                dst[t] = src[c * taps + t]
                k0 = k1


# ---------------------------------------------------------------- weight gradient
#
#     grad_w[g] (Kg x rows) (+)= sum over images n and columns of
#                                G_n (Kg x Ho*Wo) @ B_n^T (Ho*Wo x rows)
# on the same micro-kernel: the GEMM's M is the filters, its N the rows of the
# stretched matrix (the columns of grad_w), its depth the columns of all
# images (one axis, as in the forward pass). Packing B^T IS the index map
# again: an NR-wide micro-panel holds, for each column (depth step), the
# input elements of NR consecutive table rows. G is packed per depth block
# into MR-filter panels. Work items are (group, block of NC rows, block of
# filters): each element of grad_w has one owner, which runs the whole depth
# in one order, so the result has the same bits for any thread count and no
# reduction is needed (no per-thread accumulators, unlike the mapped
# lowering's split by images).
#
# Packing B^T costs 11-26 % of the 3x3 layers' weight gradients (fp32, 2
# threads, the time with the pack skipped: ResNet-50 3b 26 %, the stem 24 %,
# 2a and 3a 3x3/2 20 %, 4b and 5b 11-17 %). The other orientation was tried
# (grad_w^T = B @ G^T: the stretched rows as the micro-kernel's A operand,
# packed row-major by masked copies with no transpose; G^T packed as B) and
# not kept: its row pack still took 11-12 % of 3b (perf; the time is the
# gather of the input's scattered rows, not the transpose), the filters on
# the NR side left narrow last panels (128 = 48 + 48 + 32: 16 % of 3b in
# the narrow kernel), and the stem's G^T pack took 18 % where G is read in
# place here. Fused / mapped, each ratio from one process: 3b 0.85, 4b
# 0.82, 3a 3x3/2 0.92, 5b 0.84, 2a 0.79, the stem 0.93 (this code, in the
# full report of 2026-11-22: 0.87, 0.80, 0.91, 0.79, 0.86, 0.78).


def weight_grad_blocking(dtype, isa=None, cols=None):
    """Default blocking of conv2d_fused_weight_grad: dict(MR=, NR=, KC=, NC=, MC=)
    (cols: the output's columns per image, if known).

    KC = 1024 bytes / itemsize (256 floats) where each image has at least
    G_IN_PLACE_MIN_BLOCKS blocks of that many columns, else 512 bytes /
    itemsize (128 floats): depth (columns) per packed block. Re-measured
    after the vectorised packs and G read in place (interleaved in one
    process, fp32, 2 threads, KC 256 / 128, two runs): the stem 0.83 and
    0.93, 2a 3x3 0.89 and 0.95, dilated 0.92, VGG-16 conv3_2 0.98 (images
    of >= 3136 columns); but 3b 3x3 1.05-1.06, 3a 3x3/2 1.02, 5b 1.03,
    paper_mnist 1.20 (784 columns or fewer: with KC 256 their images hold
    fewer than 4 blocks, and G is packed). float64 keeps the same bytes:
    KC 128 / 64 doubles, same protocol, the stem 1.03, 2a 3x3 0.96, 3b 0.91,
    VGG-16 conv3_2 0.98.
    NC = ~1152 rows of grad_w per item; MC = 512 filters (in practice all of
    a group's). Measured (one thread, float32 AVX-512, vs the mapped weight
    gradient): KC=256/NC=192 0.90-1.00x of mapped, KC=576/NC=96 0.75-0.93x,
    KC=128/NC=576 1.02-1.03x, KC=128/NC=1152 0.99-1.05x, KC=64/NC=1152
    0.96-1.03x (measured when the transposing pack of B^T was scalar: its
    strided writes were cheapest into a small (L1/L2) panel reused by many
    filters; not re-tuned since it was vectorised).
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    itemsize = 8 if dbl else 4
    mr, nr = fc_mr(code, dbl), fc_nr(code, dbl)
    kc = 512 // itemsize
    if cols is not None and int(cols) >= G_IN_PLACE_MIN_BLOCKS * 2 * kc:
        kc *= 2
    return dict(MR=mr, NR=nr, KC=kc, NC=max(nr, 1152 // nr * nr),
                MC=max(mr, 512 // mr * mr))


def weight_grad_buffer_sizes(K, rows, groups, kc, nc, mc, dtype, isa=None):
    """per_thread_workspace_elems for conv2d_fused_weight_grad (allocate
    (num_threads, that)):

        (kc + NR) * ceil(min(mc, K/groups)/MR)*MR + kc * ceil(min(nc, rows)/NR)*NR
        + 3 * 64 bytes / itemsize

    (a KC x NC panel of B^T, an MC x KC panel of the output gradient and an
    MC x NR tile for a partial last micro-panel of rows, each 64-byte
    aligned)."""
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    itemsize = 8 if dbl else 4
    mr, nr = fc_mr(code, dbl), fc_nr(code, dbl)
    K, rows, groups, kc, nc, mc = (int(v) for v in (K, rows, groups, kc, nc, mc))
    if groups < 1 or K % groups or kc < 1 or nc < 1 or mc < 1 or rows < 0:
        raise ValueError(f"weight_grad_buffer_sizes: bad K={K}, rows={rows}, groups={groups}, "
                         f"kc={kc}, nc={nc}, mc={mc}")
    height = _round_up(min(mc, max(K // groups, 1)), mr)
    width = _round_up(min(nc, max(rows, 1)), nr)
    return kc * (width + height) + nr * height + 3 * (ALIGN_BYTES // itemsize)


cdef void _pack_bt(int isa, const floating *x_group, Py_ssize_t xs_n, const Py_ssize_t *table,
                   Py_ssize_t r0, Py_ssize_t nrows, Py_ssize_t j0, Py_ssize_t kcb,
                   Py_ssize_t cols, Py_ssize_t Wo, Py_ssize_t row_step, Py_ssize_t col_step,
                   Py_ssize_t nr, Py_ssize_t lanes, floating *dst) noexcept nogil:
    """Table rows [r0, r0+nrows) x global columns [j0, j0+kcb) of the
    stretched matrices, transposed into NR-row micro-panels: micro-panel q
    (rows r0+q*NR...) at dst + q*NR*kcb, column k at +k*pw, row at +j, pw
    its _panel_width (NR, or for a partial last panel the fewest vectors of
    `lanes` rows holding it, for the narrow kernels); zeros for padding and
    for rows past nrows.

    The columns split into segments of one output row of one image; they
    are the same for every row of a micro-panel, so they are found once per
    micro-panel (up to BT_SEGS at a time), not once per row, and every
    element of the panel is written once (values or zeros, no memset first).
    Interleaved A/B against finding them per row after a memset (fp32, 2
    threads): ResNet-50 2a_3x3 0.93x, VGG-16 3_2 0.98x, 3b and 5b 1.00x,
    stem 1.03x. The ISA's transposing pack (_fused_avx512.h: masked loads
    along the columns, a register transpose, one store per column) does a
    run of segments where it applies (column step 1 or 2); this loop writes
    each element alone, NR apart, elsewhere."""
    cdef Py_ssize_t seg_base[BT_SEGS]
    cdef Py_ssize_t seg_oh[BT_SEGS]
    cdef Py_ssize_t seg_ow[BT_SEGS]
    cdef Py_ssize_t seg_off[BT_SEGS]
    cdef Py_ssize_t seg_run[BT_SEGS]
    cdef Py_ssize_t q, jrow, nvalid, pw, j, off, off0, n, col, oh, ow, run, a, b, t, ns, sg
    cdef Py_ssize_t oh_lo, oh_hi, ow_lo, ow_hi, row_offset
    cdef const Py_ssize_t *row
    cdef const floating *src
    cdef floating *panel
    cdef floating *d
    cdef fc_pack_bt_f32_t simd32 = fc_pack_bt_f32(isa)
    cdef fc_pack_bt_f64_t simd64 = fc_pack_bt_f64(isa)
    cdef bint done
    q = 0
    while q < nrows:
        nvalid = nrows - q if nrows - q < nr else nr
        pw = _panel_width(nvalid, nr, lanes)
        panel = dst + q * kcb
        off0 = 0
        j = j0
        while off0 < kcb:
            # the next segments of columns: (image, output row, first ow, run)
            ns = 0
            off = off0
            while off < kcb and ns < BT_SEGS:
                n = j // cols
                col = j - n * cols
                oh = col // Wo
                ow = col - oh * Wo
                run = Wo - ow
                if run > kcb - off:
                    run = kcb - off
                seg_base[ns] = n * xs_n + oh * row_step
                seg_oh[ns] = oh
                seg_ow[ns] = ow
                seg_off[ns] = off
                seg_run[ns] = run
                ns += 1
                off += run
                j += run
            if floating is float:
                done = simd32 != NULL and simd32(panel, pw, nvalid, table + (r0 + q) * ROW_FIELDS,
                                                 x_group, seg_base, seg_oh, seg_ow, seg_off,
                                                 seg_run, <int> ns, col_step)
            else:
                done = simd64 != NULL and simd64(panel, pw, nvalid, table + (r0 + q) * ROW_FIELDS,
                                                 x_group, seg_base, seg_oh, seg_ow, seg_off,
                                                 seg_run, <int> ns, col_step)
            if done:
                off0 = off
                continue
            for jrow in range(pw):
                if jrow >= nvalid:
                    for t in range(off0, off):
                        panel[t * pw + jrow] = 0
                    continue
                row = table + (r0 + q + jrow) * ROW_FIELDS
                oh_lo, oh_hi = row[ROW_OH_LO], row[ROW_OH_HI]
                ow_lo, ow_hi = row[ROW_OW_LO], row[ROW_OW_HI]
                row_offset = row[ROW_OFFSET]
                for sg in range(ns):
                    ow = seg_ow[sg]
                    run = seg_run[sg]
                    d = panel + seg_off[sg] * pw + jrow
                    a, b = 0, 0
                    if oh_lo <= seg_oh[sg] < oh_hi:
                        a = ow_lo - ow if ow_lo > ow else 0
                        b = ow_hi - ow if ow_hi < ow + run else run
                        if a > run:
                            a = run
                        if b < a:
                            b = a
                    for t in range(a):
                        d[t * pw] = 0
                    src = x_group + seg_base[sg] + row_offset + ow * col_step
                    for t in range(a, b):
                        d[t * pw] = src[t * col_step]
                    for t in range(b, run):
                        d[t * pw] = 0
            off0 = off
        q += nr


cdef void _pack_g(int isa, const floating *grad_rows, Py_ssize_t image_step, Py_ssize_t cols,
                  Py_ssize_t m, Py_ssize_t j0, Py_ssize_t kcb, Py_ssize_t mr,
                  floating *dst) noexcept nogil:
    """Gradient rows [0, m) (grad_rows: image 0's first, leading dimension
    cols, images image_step apart) x global columns [j0, j0+kcb) into
    MR-filter panels: panel p at dst + p*MR*kcb, column k at +k*MR; zeros
    for filters past m. Each run of columns within one image is packed as
    the weights are (_pack_a's ISA function, a register transpose); a loop
    writing each value alone, MR apart, took 21 % of the stem's weight
    gradient (perf), and per-column gathers 1.24x that loop's time."""
    cdef Py_ssize_t p, mp, off, j, n, col, run
    cdef const floating *src
    cdef fc_pack_a_f32_t pack32 = fc_pack_a_f32(isa)
    cdef fc_pack_a_f64_t pack64 = fc_pack_a_f64(isa)
    p = 0
    while p * mr < m:
        mp = m - p * mr if m - p * mr < mr else mr
        off = 0
        j = j0
        while off < kcb:
            run = _image_run(j, kcb - off, cols, &n, &col)
            src = grad_rows + n * image_step + p * mr * cols + col
            if floating is float:
                pack32(src, cols, mp, mr, run, dst + p * mr * kcb + off * mr)
            else:
                pack64(src, cols, mp, mr, run, dst + p * mr * kcb + off * mr)
            off += run
            j += run
        p += 1


cdef void _weight_grad_item(int isa, const floating *x_group, Py_ssize_t xs_n,
                            const Py_ssize_t *table, const floating *grad_rows,
                            Py_ssize_t image_step, Py_ssize_t cols, Py_ssize_t Wo,
                            Py_ssize_t row_step, Py_ssize_t col_step, Py_ssize_t total,
                            Py_ssize_t kc, Py_ssize_t r0, Py_ssize_t nrows, Py_ssize_t m,
                            Py_ssize_t width, Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t lanes,
                            bint accumulate, bint g_in_place, floating *out, Py_ssize_t ld_out,
                            floating *buf) noexcept nogil:
    """One work item of the weight gradient: filters [0, m) (grad_rows: the
    first one's gradient) x table rows [r0, r0+nrows) into out (leading
    dimension ld_out), over all total columns, kc at a time. A partial last
    micro-panel of rows is packed and run narrower (_panel_width), as the
    forward pass's columns: the stem's 147 rows pad to 160, not 192. That
    partial panel's tiles accumulate over the whole depth in an edge tile of
    the workspace (seeded with out's values if accumulate, so the sums run
    in the same order as into out) and are written once at the end: a
    store per depth block, element by element, took 5 % of the stem's
    weight gradient (perf).

    g_in_place: the micro-kernel reads MR rows of the output gradient in
    place (lda = cols), as the forward pass reads the weights, and only a
    partial last panel of filters is packed; the depth blocks then end
    where an image does (each image's columns in equal blocks of at most
    kc), since the rows jump between images."""
    cdef floating tile[MAX_MR * MAX_NR]
    cdef fc_ukr_f32_t ukr32
    cdef fc_ukr_f64_t ukr64
    cdef floating *bpanel = buf
    cdef floating *gpanel = _aligned(buf + kc * width)
    cdef floating *edge = _aligned(gpanel + kc * _round_up(m, mr))
    cdef Py_ssize_t k0, kcb, jr, ir, nvalid, mvalid, pw, i, t, n_img, col0, run, alda
    cdef Py_ssize_t g_block = _ceil_div(cols, _ceil_div(cols, kc))
    cdef Py_ssize_t m_full = m // mr * mr
    cdef const floating *ap
    cdef Py_ssize_t edge_col = nrows // nr * nr, edge_valid = nrows - edge_col
    cdef Py_ssize_t edge_pw = _panel_width(edge_valid, nr, lanes) if edge_valid else 0
    cdef floating *c
    cdef int first
    if edge_valid and edge_valid != edge_pw:
        for i in range(_round_up(m, mr)):
            for t in range(edge_pw):
                edge[i * edge_pw + t] = (out[i * ld_out + edge_col + t]
                                         if accumulate and i < m and t < edge_valid else 0)
    else:
        edge_pw = 0     # no partial panel: every tile direct or a full-width edge
    k0 = 0
    while k0 < total:
        kcb = total - k0 if total - k0 < kc else kc
        run = _image_run(k0, kcb, cols, &n_img, &col0)
        if g_in_place:
            kcb = run if run < g_block else g_block
        first = k0 == 0 and not accumulate
        _pack_bt(isa, x_group, xs_n, table, r0, nrows, k0, kcb, cols, Wo, row_step, col_step, nr,
                 lanes, bpanel)
        if not g_in_place:
            _pack_g(isa, grad_rows, image_step, cols, m, k0, kcb, mr, gpanel)
        elif m_full < m:
            _pack_g(isa, grad_rows + m_full * cols, image_step, cols, m - m_full, k0, kcb, mr,
                    gpanel + m_full * kcb)
        jr = 0
        while jr < nrows:
            nvalid = nrows - jr if nrows - jr < nr else nr
            pw = _panel_width(nvalid, nr, lanes)
            ukr32 = fc_ukr_width_f32(isa, pw)
            ukr64 = fc_ukr_width_f64(isa, pw)
            ir = 0
            while ir < m:
                mvalid = m - ir if m - ir < mr else mr
                c = out + ir * ld_out + jr
                if g_in_place and ir < m_full:
                    ap = grad_rows + n_img * image_step + ir * cols + col0
                    alda = cols
                else:
                    ap = gpanel + ir * kcb
                    alda = 0
                if nvalid != pw:
                    # the partial panel of rows: into the edge tile
                    if floating is float:
                        ukr32(kcb, ap, alda, bpanel + jr * kcb, pw, edge + ir * pw, pw,
                              0, NULL)
                    else:
                        ukr64(kcb, ap, alda, bpanel + jr * kcb, pw, edge + ir * pw, pw,
                              0, NULL)
                elif nvalid == pw and mvalid == mr:
                    if floating is float:
                        ukr32(kcb, ap, alda, bpanel + jr * kcb, pw, c, ld_out, first, NULL)
                    else:
                        ukr64(kcb, ap, alda, bpanel + jr * kcb, pw, c, ld_out, first, NULL)
                else:
                    if floating is float:
                        ukr32(kcb, ap, alda, bpanel + jr * kcb, pw, tile, pw, 1, NULL)
                    else:
                        ukr64(kcb, ap, alda, bpanel + jr * kcb, pw, tile, pw, 1, NULL)
                    for i in range(mvalid):
                        for t in range(nvalid):
                            if first:
                                c[i * ld_out + t] = tile[i * pw + t]
                            else:
                                c[i * ld_out + t] = c[i * ld_out + t] + tile[i * pw + t]
                ir += mr
            jr += nr
        k0 += kcb
    if edge_pw:
        for i in range(m):
            for t in range(edge_valid):
                out[i * ld_out + edge_col + t] = edge[i * edge_pw + t]


# The output gradient is read in place (no packing of G) when each image has
# at least this many depth blocks of kc columns: its depth blocks end with the
# image, so small maps would make short micro-kernel calls (ResNet-50 5b:
# 49 columns per image). And not when a row of G is a multiple of 4 KiB: its
# rows then fall in one set of the L1 cache and evict each other. Measured,
# interleaved, fp32, 2 threads, in place / packed: paper_mnist 0.76, stem
# 0.94, 2a 3x3 0.95, 3b 0.98, 3a 3x3/2 0.99; VGG-16 conv1_2 (rows of 196 KiB)
# 1.05 and dilated (16 KiB) 1.03.
G_IN_PLACE_MIN_BLOCKS = 4
G_ALIASED_ROW_BYTES = 4096


def weight_grad_reads_grad_in_place(cols, total, kc, dtype):
    """Whether conv2d_fused_weight_grad (g_in_place=None) reads the output
    gradient's rows in place: `cols` columns per image, `total` of the
    batch, depth blocks of `kc` columns (the rule above; the planner's cost
    model asks the same question).

    >>> weight_grad_reads_grad_in_place(12544, 8 * 12544, 128, "float32")
    True
    >>> weight_grad_reads_grad_in_place(49, 8 * 49, 128, "float32")   # short images
    False
    """
    itemsize = 8 if _dtype_is_double(dtype) else 4
    kc_eff = min(int(kc), int(total))
    return bool(cols >= G_IN_PLACE_MIN_BLOCKS * kc_eff
                and (cols * itemsize) % G_ALIASED_ROW_BYTES != 0)


def weight_grad_split(rows, Kg, groups, nc, mc, isa, dbl, threads):
    """(width, row_blocks, height, filter_blocks): the work items of
    conv2d_fused_weight_grad, groups x row_blocks blocks of at most `width`
    rows of grad_w x filter_blocks blocks of at most `height` filters (nc,
    mc: the nominal blocking; blocks only shrink from it, so the workspace
    sized for nc, mc holds any).

    The rows are shared out evenly in whole vectors (a block's last
    micro-panel runs narrow), and their number of blocks is rounded up so
    that the items are a multiple of the threads: with 1536 rows and NC
    1152, blocks of 1152 + 384 left one of 2 threads idle for half the
    time: fused / stretch, fp32, 2 threads, one process, TDNN 1.43 -> 0.95,
    wav2vec 2.0 conv1 1.43 -> 0.92; Inception-v3 5x5 (1152 + 48 rows) 1.57
    -> 0.80; DeepSpeech2 conv2 (6 x 1152 + 480) 35.8 -> 33.9 ms. Where there are
    fewer rows than that, blocks of fewer filters make up the items. Every
    element of grad_w is still summed over the whole depth in one order:
    the same bits for any split.

    >>> weight_grad_split(1536, 512, 1, 1152, 512, "generic", False, 2)[:2]
    (768, 2)
    """
    cdef int code = isa_code(isa)
    cdef Py_ssize_t mr = fc_mr(code, dbl), nr = fc_nr(code, dbl)
    cdef Py_ssize_t lanes = _narrow_lanes(code, dbl)
    cdef Py_ssize_t granule = lanes if lanes else nr
    cdef Py_ssize_t height = _round_up(min(mc, Kg), mr), n_mb = _ceil_div(Kg, height)
    cdef Py_ssize_t n_rb = _ceil_div(rows, _round_up(min(nc, rows), nr))
    cdef Py_ssize_t most = _ceil_div(rows, granule)    # blocks of one vector of rows
    cdef Py_ssize_t width
    while (groups * n_mb * n_rb) % threads and n_rb < most:
        n_rb += 1
    width = _round_up(_ceil_div(rows, n_rb), granule)
    # rounding up to whole vectors can merge blocks again (65 rows in 4:
    # 17 -> 32, 3 blocks): narrower, a vector at a time, until each thread
    # has one or the blocks are one vector wide
    while groups * n_mb * _ceil_div(rows, width) < threads and width > granule:
        width -= granule
    n_rb = _ceil_div(rows, width)
    while groups * n_rb * n_mb < threads and height > mr:
        height = _round_up(_ceil_div(height, 2), mr)
        n_mb = _ceil_div(Kg, height)
    return width, n_rb, height, n_mb


def conv2d_fused_weight_grad(const floating[:, :, :, :] x,
                             const floating[:, :, ::1] grad,
                             floating[:, ::1] grad_w,
                             floating[:, ::1] workspace,
                             Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                             Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_top, Py_ssize_t pad_left,
                             Py_ssize_t dil_h, Py_ssize_t dil_w,
                             Py_ssize_t groups, bint flip,
                             Py_ssize_t kc, Py_ssize_t nc, Py_ssize_t mc,
                             isa, int num_threads, bint accumulate=False, row_table=None,
                             g_in_place=None):
    """grad_w (K, C/groups*R*S), C-contiguous = (accumulate: +=) the weight
    gradient for input x (N, C, H, W; any strides) and output gradient grad
    (N, K, Ho*Wo), C-contiguous, on the fused GEMM.

    workspace: (>= num_threads, >= weight_grad_buffer_sizes(...)).
    kc: depth (columns of all images) per packed block; nc: rows of grad_w
    per work item; mc: filters per work item (rounded up to MR); any >= 1.
    Items are (group, nc rows, mc filters): the same bits for any thread
    count. isa, flip, row_table: as conv2d_fused. g_in_place: read the
    output gradient's rows in place rather than packing them (see
    _weight_grad_item); None: where each image has at least
    G_IN_PLACE_MIN_BLOCKS * kc columns and a row is not a multiple of
    G_ALIASED_ROW_BYTES (both below).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_w.shape[0], rows = grad_w.shape[1]
    cdef Py_ssize_t cols = grad.shape[2]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    cdef Py_ssize_t mr = fc_mr(code, dbl), nr = fc_nr(code, dbl)
    cdef Py_ssize_t lanes = _narrow_lanes(code, dbl)
    cdef Py_ssize_t itemsize = sizeof(floating)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if kc < 1 or nc < 1 or mc < 1:
        raise ValueError(f"kc, nc, mc must be >= 1, got {kc}, {nc}, {mc}")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if Wo < 1 or cols % Wo or R < 1 or S < 1:
        raise ValueError(f"bad geometry: Wo={Wo}, R={R}, S={S}, grad columns {cols}")
    if rows != C // groups * R * S:
        raise ValueError(f"grad_w has {rows} columns, expected C/groups*R*S = {C // groups * R * S}")
    if grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError(f"grad has shape {tuple(grad.shape)}, expected ({N}, {K}, {cols})")
    if K == 0 or rows == 0:
        return
    if N == 0 or cols == 0:
        if not accumulate:
            np.asarray(grad_w)[...] = 0
        return
    need = weight_grad_buffer_sizes(K, rows, groups, kc, nc, mc,
                                    np.float64 if dbl else np.float32, code)
    if workspace.shape[0] < num_threads or workspace.shape[1] < need:
        raise ValueError(f"workspace has shape {tuple(workspace.shape)}, needs "
                         f"({num_threads}, {need})")

    cdef Py_ssize_t Ho = cols // Wo, c_group = C // groups, Kg = K // groups
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t row_step = stride_h * xs_h, col_step = stride_w * xs_w
    cdef Py_ssize_t total = N * cols, image_step = K * cols
    cdef Py_ssize_t width, n_rb, height, n_mb
    width, n_rb, height, n_mb = weight_grad_split(rows, Kg, groups, nc, mc, code, dbl,
                                                  num_threads)
    cdef Py_ssize_t kc_eff = kc if kc < total else total
    cdef bint grad_in_place = (
        weight_grad_reads_grad_in_place(cols, total, kc, np.float64 if dbl else np.float32)
        if g_in_place is None else bool(g_in_place))
    if row_table is None:
        row_table = np.empty((rows, ROW_FIELDS), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] table = row_table
    if table.shape[0] < rows or table.shape[1] != ROW_FIELDS:
        raise ValueError(f"row_table has shape {tuple(table.shape)}, needs ({rows}, {ROW_FIELDS})")
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *g0 = &grad[0, 0, 0]
    cdef floating *gw = &grad_w[0, 0]
    cdef Py_ssize_t item, g, rb, mb, r0, nrows, m0, m

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        for item in prange(groups * n_rb * n_mb, schedule="dynamic", num_threads=num_threads):
            g = item // (n_rb * n_mb)
            rb = (item // n_mb) % n_rb
            mb = item % n_mb
            r0 = rb * width
            nrows = rows - r0 if rows - r0 < width else width
            m0 = mb * height
            m = Kg - m0 if Kg - m0 < height else height
            _weight_grad_item(code, x0 + g * c_group * xs_c, xs_n, &table[0, 0],
                              g0 + (g * Kg + m0) * cols, image_step, cols, Wo, row_step,
                              col_step, total, kc_eff, r0, nrows, m, width, mr, nr, lanes,
                              accumulate, grad_in_place,
                              gw + (g * Kg + m0) * rows + r0, rows,
                              _aligned(&workspace[threadid(), 0]))
