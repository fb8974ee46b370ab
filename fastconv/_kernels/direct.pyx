# The direct lowering: the convolution computed on the input in place, with
# neither an im2col matrix nor a gathered panel (oneDNN's direct kernels,
# XNNPACK's indirect GEMM), and the taps that fall in the padding skipped.
#
# The stretched matrix's element (channel c, tap (r, s), output pixel p) is
#     x[c * xs_c + tap_off(r, s) + pix(p)]
# with tap_off(r, s) = r*dh*xs_h + s*dw*xs_w and pix(p) = n*xs_n +
# (oh*sh - pad_top)*xs_h + (ow*sw - pad_left)*xs_w: separable, wherever the
# tap is inside the image. So:
#
#   pixel classes: output rows whose valid taps (r range) agree form a row
#       class, likewise columns; a class is (row class, column class), and
#       every tap in it is inside the image for all its pixels. ResNet-50's
#       7x7 maps with a 3x3 kernel: 9 classes (interior, 4 edges, 4
#       corners), the interior's 25 pixels use 9 taps, an edge's 6, a
#       corner's 4: 82 % of the multiply-adds a GEMM lowering makes.
#   tiles: up to MR pixels of one class (in batch order: an interior run of
#       a row is contiguous in the input).
#   packed weights: per (group, block of NR filters) a panel [tap][channel]
#       [NR], filters zero-padded to NR, the kernel reversed if flip. Each
#       work item packs its channel blocks' parts into its thread's
#       workspace as it reaches them; a panel under SHARED_PANEL_MAX_BYTES
#       is packed once, before the parallel loop, and shared.
#   work items: (group, filter block, run of tiles), dynamic schedule, or
#       (group, run of tiles, filter block) where the group's input is too
#       large to sweep once per filter block (INPUT_SWEEP_MAX_BYTES). Per
#       item, per block of input channels (its panel part in L2), per tile:
#       one kernel call (_direct_*.h): MR x NR accumulators in registers
#       over the channel block's taps (outer) and channels (inner), parked
#       in the thread's workspace between blocks; after the last block the
#       tile is stored into out (bias added), each pixel's filters at out's
#       filter stride.
#   adjoint: the input gradient of a stride-1 convolution is the forward
#       pass of its adjoint (see _lowerings._adjoint); the panels are then
#       packed straight from the forward weights, transposed per group and
#       reversed, so no transposed copy is made.
#
# ISA codes as the fused lowering's (_fused_kernels.h): 0 generic, 1 avx2,
# 2 avx512.

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

import numpy as np

from fastconv._kernels._blocks cimport ALIGN_BYTES, _aligned, _ceil_div
from fastconv._kernels._index_map cimport _end_valid, _first_valid
from fastconv._kernels.fused import ISA_NAMES, _dtype_is_double, isa_code


cdef extern from "_direct_kernels.h" nogil:
    ctypedef void (*fc_direct_f32_t)(Py_ssize_t, const float *, const Py_ssize_t *, Py_ssize_t,
                                     Py_ssize_t, const Py_ssize_t *, const Py_ssize_t *,
                                     Py_ssize_t, const float *, Py_ssize_t, float *,
                                     int) noexcept nogil
    ctypedef void (*fc_direct_f64_t)(Py_ssize_t, const double *, const Py_ssize_t *, Py_ssize_t,
                                     Py_ssize_t, const Py_ssize_t *, const Py_ssize_t *,
                                     Py_ssize_t, const double *, Py_ssize_t, double *,
                                     int) noexcept nogil
    int fc_direct_has_narrow(int isa)
    int fc_direct_mr(int isa, int tile)
    int fc_direct_nr(int isa, int is_double, int tile)
    fc_direct_f32_t fc_direct_f32(int isa, int tile)
    fc_direct_f64_t fc_direct_f64(int isa, int tile)
    ctypedef void (*fc_direct_pack_f32_t)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                          Py_ssize_t, int, Py_ssize_t, float *) noexcept nogil
    ctypedef void (*fc_direct_pack_f64_t)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                          Py_ssize_t, int, Py_ssize_t, double *) noexcept nogil
    fc_direct_pack_f32_t fc_direct_pack_f32(int isa, int tile)
    fc_direct_pack_f64_t fc_direct_pack_f64(int isa, int tile)
    ctypedef void (*fc_direct_pack_adjoint_f32_t)(const float *, Py_ssize_t, Py_ssize_t,
                                                  Py_ssize_t, Py_ssize_t, int, Py_ssize_t,
                                                  float *) noexcept nogil
    ctypedef void (*fc_direct_pack_adjoint_f64_t)(const double *, Py_ssize_t, Py_ssize_t,
                                                  Py_ssize_t, Py_ssize_t, int, Py_ssize_t,
                                                  double *) noexcept nogil
    fc_direct_pack_adjoint_f32_t fc_direct_pack_adjoint_f32(int isa, int tile)
    fc_direct_pack_adjoint_f64_t fc_direct_pack_adjoint_f64(int isa, int tile)
    ctypedef void (*fc_direct_store_f32_t)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                           float *, Py_ssize_t, const float *) noexcept nogil
    fc_direct_store_f32_t fc_direct_store_f32(int isa)
    void fc_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t nbytes,
                          int for_write)
    ctypedef void (*fc_direct_lanes_f32_t)(Py_ssize_t, Py_ssize_t, const float *,
                                           const Py_ssize_t *, Py_ssize_t, const Py_ssize_t *,
                                           const Py_ssize_t *, Py_ssize_t, const float *,
                                           Py_ssize_t, float *, Py_ssize_t) noexcept nogil
    ctypedef void (*fc_direct_lanes_f64_t)(Py_ssize_t, Py_ssize_t, const double *,
                                           const Py_ssize_t *, Py_ssize_t, const Py_ssize_t *,
                                           const Py_ssize_t *, Py_ssize_t, const double *,
                                           Py_ssize_t, double *, Py_ssize_t) noexcept nogil
    fc_direct_lanes_f32_t fc_direct_lanes_f32(int isa)
    fc_direct_lanes_f64_t fc_direct_lanes_f64(int isa)
    int fc_direct_lanes_width(int isa, int is_double)
    int fc_direct_lanes_mr(int isa)
    int fc_direct_lanes_nf(int isa)


cdef enum:
    # the tile fields of the tables: first pixel, pixels, class
    TILE_START = 0
    TILE_PIXELS = 1
    TILE_CLASS = 2
    TILE_FIELDS = 3

# A channel block's part of a panel (channels x taps x NR) stays near this
# size, so that it lives in L2 while an item's tiles run over it (prototype,
# fp32, 2 threads: the whole depth at once, 1.2 MB on ResNet-50 5b, took
# 1.1x the time of 64-channel blocks; 16-64 channels within 3 %).
PANEL_BLOCK_BYTES = 144 * 1024
# An item's accumulators (tiles x MR x NR) stay in L2 between channel blocks.
ITEM_TILE_BYTES = 128 * 1024
# Items per thread at least, for the dynamic schedule to even out (4: up to
# 10 % of a 2-thread run waited at the end; 16: 2-3 %).
ITEMS_PER_THREAD = 16
# Packed weights above this size are packed by each item, a channel block at
# a time, into its thread's workspace (in L2), not once into one buffer for
# all items: in one process, fp32, 2 threads, direct / fused went from 1.03 to
# 0.97 on ResNet-50 4b (2.4 MB of weights) and 1.06 to 1.04 on 3b (0.6 MB);
# on 2a (0.15 MB) it made no difference (1.07 either way). Inception-v3's
# 5x5 (0.3 MB, 48 channels in 3 blocks; Zen 5, 1 MiB L2 a core, builds
# alternated, fp32, 2 threads) shared: forward 3.00 -> 2.89 ms, input
# gradient 3.06 -> 2.82 (each of its 20 items had packed all of it); ResNet-50
# 3a 3x3/2 (0.58 MB), wav2vec 2.0 conv1 and the 3b input gradient the same
# within noise with 512 KB per filter block as the test.
SHARED_PANEL_MAX_BYTES = 512 * 1024
# A group's input (all images) larger than this is swept once, each run of
# tiles taking every filter block in turn while its input lines are in
# cache, rather than once per filter block (from memory: it and the output
# outgrow the L3, 32 MiB here). Fresh processes alternated, fp32, 2
# threads, blocks inner / outer: wav2vec 2.0 conv1 (26 MB, 8 blocks of 64
# filters) 0.63-0.72, the same at stride 1 0.79, with 128 filters 0.81-0.87;
# but ResNet-50 4a-like 3x3/2 (6.4 MB, 8 blocks) 1.03-1.04, TDNN (4.9 MB)
# 1.05, 3a 3x3/2 (12.8 MB, 2 blocks) 0.95-1.04.
INPUT_SWEEP_MAX_BYTES = 16 * 2**20


# the tile kinds of _direct_kernels.h (FC_DIRECT_WIDE, _NARROW, _MEDIUM)
TILE_WIDE, TILE_NARROW, TILE_MEDIUM = 0, 1, 2


def tile_kind(filters, dtype, isa=None, medium=True):
    """The tile that runs groups of `filters` filters (None: unknown): where
    the ISA has more than one (AVX-512), the narrow tile (14 pixels x 32
    float32 or 16 float64 filters) where they fit one; with `medium` (the
    forward pass and the input gradient), the medium tile (8 x 48 or 24)
    where 48-filter blocks pad fewer zero filters than 64-filter ones (33-48,
    65-96, ...); else the wide tile (6 x 64 or 32), which computes the
    filters past them as zeros. The weight gradient keeps wide and narrow
    (its cost model was fitted on them).

    >>> tile_kind(32, "float32", "generic")   # it has one tile only
    0
    >>> [tile_kind(f, "float32", "avx512") for f in (32, 48, 64, 96, 128)]
    [1, 2, 0, 2, 0]
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    if filters is None or int(filters) <= 0 or not fc_direct_has_narrow(code):
        return TILE_WIDE
    f = int(filters)
    if f <= fc_direct_nr(code, dbl, TILE_NARROW):
        return TILE_NARROW
    wide, mid = fc_direct_nr(code, dbl, TILE_WIDE), fc_direct_nr(code, dbl, TILE_MEDIUM)
    if medium and _ceil_div(f, mid) * mid < _ceil_div(f, wide) * wide:
        return TILE_MEDIUM
    return TILE_WIDE


def narrow_tiles(filters, dtype, isa=None):
    """Whether groups of `filters` filters run the narrow tile (tile_kind).

    >>> narrow_tiles(32, "float32", "generic")   # it has one tile only
    False
    """
    return tile_kind(filters, dtype, isa) == TILE_NARROW


def blocking(dtype, isa=None, filters=None, medium=True):
    """{"MR": pixels, "NR": filters} of a tile of the ISA's kernel for
    groups of `filters` filters (see tile_kind; None: the wide tile)."""
    code = isa_code(isa)
    tile = tile_kind(filters, dtype, code, medium)
    return {"MR": fc_direct_mr(code, tile),
            "NR": fc_direct_nr(code, _dtype_is_double(dtype), tile)}


cdef Py_ssize_t _axis_classes(Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t taps,
                              Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t dil,
                              Py_ssize_t *ids, Py_ssize_t *ranges) noexcept nogil:
    """Per output position along one axis, the class of its valid taps
    [lo, hi) (ids[o]), the classes' ranges (ranges[2k], ranges[2k + 1]) in
    order of first appearance; returns how many. As the position grows its
    first tap moves right, so lo and hi only fall: positions of one class
    are one run, and there are at most 2 * taps + 1 classes."""
    cdef Py_ssize_t o, first, lo, hi, n = 0
    for o in range(out_len):
        first = o * stride - pad
        lo = 0
        while lo < taps and first + lo * dil < 0:
            lo += 1
        hi = taps
        while hi > lo and first + (hi - 1) * dil >= in_len:
            hi -= 1
        if n == 0 or ranges[2 * n - 2] != lo or ranges[2 * n - 1] != hi:
            ranges[2 * n] = lo
            ranges[2 * n + 1] = hi
            n += 1
        ids[o] = n - 1
    return n


def pixel_classes(Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t taps, Py_ssize_t stride,
                  Py_ssize_t pad, Py_ssize_t dil):
    """(ids, ranges) of _axis_classes along one axis, as arrays."""
    ids = np.empty(out_len, np.intp)
    ranges = np.empty((2 * taps + 1, 2), np.intp)
    cdef Py_ssize_t[::1] ids_v = ids
    cdef Py_ssize_t[:, ::1] ranges_v = ranges
    n = _axis_classes(out_len, in_len, taps, stride, pad, dil, &ids_v[0] if out_len else NULL,
                      &ranges_v[0, 0])
    return ids, ranges[:n]


def table_size(N, Ho, Wo, R, S, mr):
    """intp elements of the tables of a geometry, in tiles of mr pixels:
    every pixel's input and output offsets, the tiles, and each class's taps
    (offsets and panel rows) and count. An upper bound, from the shapes
    only: row classes are at most 2R+1 (the valid tap range's ends only
    fall as the row grows)."""
    pixels = N * Ho * Wo
    classes = min(Ho, 2 * R + 1) * min(Wo, 2 * S + 1)
    tiles = pixels // mr + classes + 1   # sum of ceil(class pixels / MR)
    return 2 * pixels + TILE_FIELDS * tiles + classes * (2 * R * S + 1)


def item_tiles(Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t itemsize):
    """The most tiles of an item, whose accumulators stay in L2 between
    channel blocks (the workspace holds that many per thread)."""
    return max(1, ITEM_TILE_BYTES // (mr * nr * itemsize))


def work_split(Py_ssize_t tiles, Py_ssize_t blocks, Py_ssize_t mr, Py_ssize_t nr,
               Py_ssize_t itemsize, Py_ssize_t threads, bint pack_in_items):
    """Tiles per item: at most item_tiles() (the accumulators of an item stay
    in L2 between channel blocks), and enough items (with the `blocks`
    filter blocks of all groups) for every thread several times over, or,
    where each item packs its own panel, only as many as it takes to share
    the work between the threads (each item packs its filter block again)."""
    if tiles == 0:
        return 1
    wanted = 1 if threads == 1 else (2 * threads if pack_in_items
                                     else ITEMS_PER_THREAD * threads)
    runs = max(_ceil_div(tiles, item_tiles(mr, nr, itemsize)), _ceil_div(wanted, max(1, blocks)))
    return _ceil_div(tiles, min(runs, tiles))


def packs_in_items(K, C, R, S, groups, dtype, isa=None):
    """Whether each item packs its own panel (the packed weights are larger
    than SHARED_PANEL_MAX_BYTES) rather than all items sharing one."""
    Kg = K // groups
    nr = blocking(dtype, isa, Kg)["NR"]
    return (groups * _ceil_div(Kg, nr) * nr * (C // groups) * R * S * np.dtype(dtype).itemsize
            > SHARED_PANEL_MAX_BYTES)


def buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, groups, stride_h, stride_w, pad_top, pad_left,
                 dil_h, dil_w, dtype, isa=None, channel_block_size=0, pack_in_items=None):
    """(packed weight elements, tables' intp elements, workspace elements per
    thread) of a call (channel_block_size, pack_in_items: as conv2d_direct's)."""
    Kg, Cg = K // groups, C // groups
    sizes = blocking(dtype, isa, Kg)
    mr, nr = sizes["MR"], sizes["NR"]
    itemsize = np.dtype(dtype).itemsize
    fblocks = _ceil_div(Kg, nr) if Kg else 0
    if pack_in_items is None:
        pack_in_items = packs_in_items(K, C, R, S, groups, dtype, isa)
    tables = table_size(N, Ho, Wo, R, S, mr)
    align = ALIGN_BYTES // itemsize
    # an item's accumulators (see work_split), and with pack_in_items, the
    # panel of its channel block
    per_thread = item_tiles(mr, nr, itemsize) * mr * nr + align
    if pack_in_items:
        cb = channel_block_size or channel_block(Cg, R * S, nr, itemsize)
        return align, tables, per_thread + min(cb, max(Cg, 1)) * R * S * nr + align
    return groups * fblocks * Cg * R * S * nr + align, tables, per_thread


def channel_block(Py_ssize_t channels, Py_ssize_t taps, Py_ssize_t nr, Py_ssize_t itemsize):
    """Input channels per block: their part of a panel near PANEL_BLOCK_BYTES,
    the blocks of even size."""
    if channels == 0:
        return 1
    most = max(1, PANEL_BLOCK_BYTES // max(1, taps * nr * itemsize))
    return _ceil_div(channels, _ceil_div(channels, most))


cdef void _pack_panel(const floating *weight, Py_ssize_t rows, Py_ssize_t nf,
                      Py_ssize_t depth, Py_ssize_t taps, bint flip, Py_ssize_t tap_rows,
                      Py_ssize_t nr, floating *panel) noexcept nogil:
    """panel[tap * tap_rows + c][f] = weight[f * rows + c * taps + tap] (tap
    reversed if flip) for the depth = channels x taps weights of nf <= nr
    filter rows, zero for filters past nf: in blocks of 64 depth steps, so
    that the block being written stays in L1 while the nr rows are read
    (_direct_avx512.h has the transposing version)."""
    cdef Py_ssize_t d0, d1, d, f, c, t
    cdef const floating *row
    for d0 in range(0, depth, 64):
        d1 = d0 + 64 if d0 + 64 < depth else depth
        for f in range(nr):
            row = weight + f * rows
            for d in range(d0, d1):
                c = d // taps
                t = d - c * taps
                if flip:
                    t = taps - 1 - t
                panel[(t * tap_rows + c) * nr + f] = row[d] if f < nf else 0


cdef struct Packers:
    # the ISA's packs, NULL where it has none (the portable loops run)
    fc_direct_pack_f32_t rows32
    fc_direct_pack_f64_t rows64
    fc_direct_pack_adjoint_f32_t adjoint32
    fc_direct_pack_adjoint_f64_t adjoint64


cdef void _pack_strided(const floating *weight, Py_ssize_t filter_step,
                        Py_ssize_t channel_step, Py_ssize_t nf, Py_ssize_t channels,
                        Py_ssize_t taps, bint reverse, Py_ssize_t tap_rows, Py_ssize_t nr,
                        floating *panel) noexcept nogil:
    """The panel of weights laid out otherwise: element (filter f, channel c,
    tap t) at weight[f * filter_step + c * channel_step + t]. The input
    gradient's panel from the forward weights (filter_step = taps: a
    channel's nr filters x taps are one run of the forward row)."""
    cdef Py_ssize_t c, f, t, tt
    cdef const floating *run
    for c in range(channels):
        run = weight + c * channel_step
        for f in range(nr):
            for t in range(taps):
                tt = taps - 1 - t if reverse else t
                panel[(tt * tap_rows + c) * nr + f] = run[f * filter_step + t] if f < nf else 0


cdef inline void _pack(const floating *weight, Py_ssize_t filter_step, Py_ssize_t channel_step,
                       Py_ssize_t nf, Py_ssize_t channels, Py_ssize_t taps, bint reverse,
                       Py_ssize_t tap_rows, Py_ssize_t nr, const Packers *packers,
                       floating *panel) noexcept nogil:
    """A panel of nf (at most nr) filters x channels x taps: where each
    filter's weights are one run (channel_step = taps), the ISA's
    transposing pack or the portable blocked loop; where each channel's are
    (filter_step = taps: the input gradient's), the ISA's gathering pack or
    the portable strided loop."""
    if nf > nr:
        nf = nr
    if channel_step != taps:
        if floating is float:
            if filter_step == taps and packers.adjoint32 != NULL:
                packers.adjoint32(weight, channel_step, nf, channels, taps, reverse, tap_rows,
                                  panel)
                return
        else:
            if filter_step == taps and packers.adjoint64 != NULL:
                packers.adjoint64(weight, channel_step, nf, channels, taps, reverse, tap_rows,
                                  panel)
                return
        _pack_strided(weight, filter_step, channel_step, nf, channels, taps, reverse, tap_rows,
                      nr, panel)
        return
    if floating is float:
        if packers.rows32 != NULL:
            packers.rows32(weight, filter_step, nf, channels * taps, taps, reverse, tap_rows,
                           panel)
            return
    else:
        if packers.rows64 != NULL:
            packers.rows64(weight, filter_step, nf, channels * taps, taps, reverse, tap_rows,
                           panel)
            return
    _pack_panel(weight, filter_step, nf, channels * taps, taps, reverse, tap_rows, nr, panel)


cdef void _store_tile(const floating *tile, Py_ssize_t m, Py_ssize_t nr, Py_ssize_t nf,
                      const Py_ssize_t *pix_out, floating *out, Py_ssize_t out_filter,
                      const floating *bias, fc_direct_store_f32_t store32) noexcept nogil:
    """Each of the tile's m pixels' nf filters into out, bias added: filter
    by filter, so that each output row's line takes the tile's pixels one
    after another. Pixel by pixel, every store went to another row, and
    rows 16 KiB apart (64 x 64 maps) share one L1 set: dilated_3x3_d2
    spent 16 % of its run in this loop (perf). store32 (the ISA's, or
    NULL): float32 tiles of pixels consecutive in the output, 8 at a time,
    transposed in registers (_direct_avx2.h)."""
    cdef Py_ssize_t j, f
    cdef floating *o
    cdef floating b
    if floating is float:
        if store32 != NULL:
            j = 1
            while j < m and pix_out[j] == pix_out[0] + j:
                j += 1
            if j == m:
                # in runs of 8 (the narrow tile's 14 pixels as 8 + 6)
                for j in range(0, m, 8):
                    store32(tile + j * nr, m - j if m - j < 8 else 8, nr, nf, out + pix_out[j],
                            out_filter, bias)
                return
    for f in range(nf):
        o = out + f * out_filter
        b = bias[f] if bias != NULL else 0
        for j in range(m):
            o[pix_out[j]] = tile[j * nr + f] + b


def conv2d_direct(const floating[:, :, :, :] x,
                  const floating[:, ::1] weight,
                  const floating[::1] bias,
                  floating[:, :, ::1] out,
                  floating[::1] packed_weight,
                  Py_ssize_t[::1] tables,
                  floating[:, ::1] workspace,
                  Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                  Py_ssize_t stride_h, Py_ssize_t stride_w,
                  Py_ssize_t pad_top, Py_ssize_t pad_left,
                  Py_ssize_t dil_h, Py_ssize_t dil_w,
                  Py_ssize_t groups, bint flip, isa, int num_threads,
                  Py_ssize_t channel_block_size=0, pack_in_items=None, bint adjoint=False,
                  bint tables_ready=False):
    """out (N, K, Ho*Wo), C-contiguous = the convolution of x (N, C, H, W; any
    strides, negative and zero included) with weight (K, C/groups*R*S),
    C-contiguous, plus bias (K,) (length 0: no bias), by the direct kernel.

    packed_weight, tables, workspace: at least buffer_sizes(...) elements
    (workspace: (>= num_threads, per thread)); all overwritten. isa:
    "avx512", "avx2", "generic", their codes, or None / "auto". Same
    conventions as conv2d_fused (flip reverses the kernel).
    channel_block_size: input channels per block (0: channel_block()'s; any
    value >= 1 is correct); pack_in_items: each item packs its channel
    blocks' panels into its thread's workspace (None: packs_in_items()); the
    buffers must be sized by buffer_sizes with the same two values.
    adjoint: weight holds the forward weights (C, K/groups*R*S) of the
    convolution whose input gradient this is (x the output gradient, N x C
    channels; out N x K, the input gradient), which it packs transposed per
    group (K/groups filters of C/groups channels each) and reversed: the
    input gradient of a stride-1 convolution as a forward pass, with no
    transposed copy of the weights.
    tables_ready: `tables` already hold this call's tables, written by an
    earlier call with the same arguments but the arrays' data (shapes, x's
    strides, the geometry, isa, blocking, adjoint); they are read, not
    rebuilt.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t rows = weight.shape[1]
    cdef Py_ssize_t K = groups * (rows // (R * S)) if adjoint and R > 0 and S > 0 else weight.shape[0]
    cdef Py_ssize_t cols = out.shape[2]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    cdef Py_ssize_t itemsize = sizeof(floating)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if Wo < 1 or cols % Wo or R < 1 or S < 1:
        raise ValueError(f"bad geometry: Wo={Wo}, R={R}, S={S}, out columns {cols}")
    if adjoint and (weight.shape[0] != C or rows % (R * S)):
        raise ValueError(f"adjoint: weight has shape {tuple(weight.shape)[:2]}, expected "
                         f"({C}, a multiple of R*S = {R * S})")
    if not adjoint and rows != C // groups * R * S:
        raise ValueError(f"weight has {rows} columns, expected C/groups*R*S = {C // groups * R * S}")
    if out.shape[0] != N or out.shape[1] != K:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected ({N}, {K}, {cols})")
    if bias.shape[0] not in (0, K):
        raise ValueError(f"bias has {bias.shape[0]} values, expected 0 or K={K}")
    if N == 0 or K == 0 or cols == 0:
        return
    cdef Py_ssize_t Ho = cols // Wo
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups
    dtype = np.float64 if dbl else np.float32
    cdef int tile_type = tile_kind(Kg, dtype, code)
    cdef Py_ssize_t mr = fc_direct_mr(code, tile_type), nr = fc_direct_nr(code, dbl, tile_type)
    if pack_in_items is None:
        pack_in_items = packs_in_items(K, C, R, S, groups, dtype, code)
    cdef bint in_items = pack_in_items
    need = buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, groups, stride_h, stride_w, pad_top,
                        pad_left, dil_h, dil_w, dtype, code, channel_block_size, in_items)
    if (packed_weight.shape[0] < need[0] or tables.shape[0] < need[1]
            or workspace.shape[0] < num_threads or workspace.shape[1] < need[2]):
        raise ValueError(f"buffers of {packed_weight.shape[0]}, {tables.shape[0]} and "
                         f"({workspace.shape[0]}, {workspace.shape[1]}) elements, need {need[0]}, {need[1]} and "
                         f"({num_threads}, {need[2]})")
    if Cg == 0:
        # nothing to sum over: the bias (or zeros)
        np.asarray(out)[...] = np.asarray(bias)[:, None] if bias.shape[0] else 0
        return
    cdef Py_ssize_t cb = (channel_block_size if channel_block_size > 0
                          else channel_block(Cg, R * S, nr, itemsize))
    if cb > Cg:
        cb = Cg
    # a tap's rows in a panel: the group's channels (one shared panel), or a
    # channel block's (each item packing its own)
    cdef Py_ssize_t tap_rows = cb if in_items else Cg
    # element (filter f, channel c, tap t) of group g at w0 + g * w_group +
    # f * w_filter + c * w_channel + t, the taps reversed if `reverse`
    cdef Py_ssize_t w_group = Cg * rows if adjoint else Kg * rows
    cdef Py_ssize_t w_filter = R * S if adjoint else rows
    cdef Py_ssize_t w_channel = rows if adjoint else R * S
    cdef bint reverse = (not flip) if adjoint else flip

    # ---- the classes, pixels (class by class, each in batch order) and tiles
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[::1] row_class = np.empty(Ho, np.intp), col_class = np.empty(Wo, np.intp)
    cdef Py_ssize_t[:, ::1] row_ranges = np.empty((2 * R + 1, 2), np.intp)
    cdef Py_ssize_t[:, ::1] col_ranges = np.empty((2 * S + 1, 2), np.intp)
    cdef Py_ssize_t n_col_classes = _axis_classes(Wo, W, S, stride_w, pad_left, dil_w,
                                                  &col_class[0], &col_ranges[0, 0])
    cdef Py_ssize_t n_classes = n_col_classes * _axis_classes(Ho, H, R, stride_h, pad_top, dil_h,
                                                              &row_class[0], &row_ranges[0, 0])
    cdef Py_ssize_t npix = N * Ho * Wo
    cdef Py_ssize_t[::1] fill = np.zeros(n_classes + 1, np.intp)
    cdef Py_ssize_t[::1] class_rows = np.zeros(n_classes // n_col_classes, np.intp)
    cdef Py_ssize_t[::1] class_cols = np.zeros(n_col_classes, np.intp)
    cdef Py_ssize_t *tab_w = &tables[0]
    cdef Py_ssize_t n, i, j, k, pos, count, tiles_at = 2 * npix, n_tiles = 0
    for i in range(Ho):
        class_rows[row_class[i]] += 1
    for j in range(Wo):
        class_cols[col_class[j]] += 1
    for k in range(n_classes):
        # fill[k]: where class k's pixels start
        fill[k + 1] = fill[k] + N * class_rows[k // n_col_classes] * class_cols[k % n_col_classes]
    for k in range(n_classes):
        count = fill[k + 1] - fill[k]
        if tables_ready:
            n_tiles += _ceil_div(count, mr)   # (their entries are written)
            continue
        for pos in range(0, count, mr):
            tab_w[tiles_at + n_tiles * TILE_FIELDS + TILE_START] = fill[k] + pos
            tab_w[tiles_at + n_tiles * TILE_FIELDS + TILE_PIXELS] = count - pos if count - pos < mr else mr
            tab_w[tiles_at + n_tiles * TILE_FIELDS + TILE_CLASS] = k
            n_tiles += 1
    # the pixels, and per class its valid taps: rebuilt only where the
    # tables are new (on DeepSpeech2's first layer, 44k pixels of 1 channel,
    # this loop took 5 % of a 2-thread call, the other thread waiting)
    for n in range(0 if tables_ready else N):
        for i in range(Ho):
            for j in range(Wo):
                k = row_class[i] * n_col_classes + col_class[j]
                pos = fill[k]
                fill[k] = pos + 1
                tab_w[pos] = n * xs_n + (i * stride_h - pad_top) * xs_h + (j * stride_w - pad_left) * xs_w
                tab_w[npix + pos] = n * K * cols + i * Wo + j
    # per class: its valid taps' count, input offsets and rows in the panel
    cdef Py_ssize_t taps_at = tiles_at + TILE_FIELDS * n_tiles
    cdef Py_ssize_t RS = R * S, class_fields = 2 * RS + 1
    cdef Py_ssize_t r, s, at, ntap
    for k in range(0 if tables_ready else n_classes):
        at = taps_at + k * class_fields
        ntap = 0
        for r in range(row_ranges[k // n_col_classes, 0], row_ranges[k // n_col_classes, 1]):
            for s in range(col_ranges[k % n_col_classes, 0], col_ranges[k % n_col_classes, 1]):
                tab_w[at + 1 + ntap] = r * dil_h * xs_h + s * dil_w * xs_w
                tab_w[at + 1 + RS + ntap] = (r * S + s) * tap_rows * nr
                ntap += 1
        tab_w[at] = ntap

    cdef Py_ssize_t fblocks = _ceil_div(Kg, nr)
    cdef Py_ssize_t n_cblocks = _ceil_div(Cg, cb)
    cdef Py_ssize_t per_item = work_split(n_tiles, groups * fblocks, mr, nr, itemsize,
                                          num_threads, in_items)
    cdef Py_ssize_t panel_at = item_tiles(mr, nr, itemsize) * mr * nr
    cdef Py_ssize_t runs = _ceil_div(n_tiles, per_item)
    cdef Py_ssize_t panel_size = Cg * RS * nr
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *w0 = &weight[0, 0]
    cdef const floating *bias0 = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *packed = _aligned(&packed_weight[0])
    cdef floating *out0 = &out[0, 0, 0]
    cdef const Py_ssize_t *tab = &tables[0]
    cdef Py_ssize_t item, g, fb, run, t0, t1, t, c0, nc, nf, f0, ntaps, slot
    cdef bint blocks_inner = N * Cg * H * W * itemsize > INPUT_SWEEP_MAX_BYTES
    cdef const Py_ssize_t *tile
    cdef const Py_ssize_t *pix_out
    cdef floating *out_block
    cdef const Py_ssize_t *klass_taps
    cdef floating *acc
    cdef const floating *panel
    cdef fc_direct_f32_t kernel32 = fc_direct_f32(code, tile_type)
    cdef fc_direct_f64_t kernel64 = fc_direct_f64(code, tile_type)
    cdef Packers packers
    cdef fc_direct_store_f32_t store32 = fc_direct_store_f32(code)
    packers.rows32 = fc_direct_pack_f32(code, tile_type)
    packers.rows64 = fc_direct_pack_f64(code, tile_type)
    packers.adjoint32 = fc_direct_pack_adjoint_f32(code, tile_type)
    packers.adjoint64 = fc_direct_pack_adjoint_f64(code, tile_type)
    with nogil:
        if not in_items:
            # weights first: every item of a filter block reads its whole panel
            for item in prange(groups * fblocks, schedule="static", num_threads=num_threads):
                g = item // fblocks
                fb = item % fblocks
                _pack(w0 + g * w_group + fb * nr * w_filter, w_filter, w_channel, Kg - fb * nr,
                      Cg, RS, reverse, Cg, nr, &packers, packed + item * panel_size)
        for item in prange(groups * fblocks * runs, schedule="dynamic", num_threads=num_threads):
            g = item // (fblocks * runs)
            if blocks_inner:
                run = (item // fblocks) % runs
                fb = item % fblocks
            else:
                fb = (item // runs) % fblocks
                run = item % runs
            f0 = fb * nr
            nf = Kg - f0 if Kg - f0 < nr else nr
            t0 = run * per_item
            t1 = t0 + per_item if t0 + per_item < n_tiles else n_tiles
            out_block = out0 + (g * Kg + f0) * cols   # the item's filters' output rows
            acc = _aligned(&workspace[threadid(), 0])
            c0 = 0
            while c0 < Cg:
                nc = Cg - c0 if Cg - c0 < cb else cb
                if in_items:
                    panel = _aligned(acc + panel_at)
                    _pack(w0 + g * w_group + f0 * w_filter + c0 * w_channel, w_filter, w_channel,
                          nf, nc, RS, reverse, cb, nr, &packers, <floating *>panel)
                else:
                    panel = packed + (g * fblocks + fb) * panel_size + c0 * nr
                for t in range(t0, t1):
                    tile = tab + tiles_at + t * TILE_FIELDS
                    klass_taps = tab + taps_at + tile[TILE_CLASS] * class_fields
                    ntaps = klass_taps[0]
                    # one channel block: a tile is stored as soon as computed
                    slot = (t - t0) * mr * nr if n_cblocks > 1 else 0
                    pix_out = tab + npix + tile[TILE_START]
                    if c0 + nc >= Cg:
                        # its nf output rows fetched for writing while it computes
                        fc_prefetch_rows(out_block + pix_out[0], cols * sizeof(floating), nf,
                                         tile[TILE_PIXELS] * sizeof(floating), 1)
                    if floating is float:
                        kernel32(tile[TILE_PIXELS], x0 + (g * Cg + c0) * xs_c,
                                 tab + tile[TILE_START], xs_c, nc, klass_taps + 1,
                                 klass_taps + 1 + RS, ntaps, panel, nr, acc + slot, c0 == 0)
                    else:
                        kernel64(tile[TILE_PIXELS], x0 + (g * Cg + c0) * xs_c,
                                 tab + tile[TILE_START], xs_c, nc, klass_taps + 1,
                                 klass_taps + 1 + RS, ntaps, panel, nr, acc + slot, c0 == 0)
                    if c0 + nc >= Cg:
                        _store_tile(acc + slot, tile[TILE_PIXELS], nr, nf, pix_out, out_block, cols,
                                    bias0 + g * Kg + f0 if bias0 != NULL else NULL, store32)
                c0 = c0 + cb   # (not +=: Cython would make it a reduction)


# --------------------------------------------------------------------------
# The weight gradient on the same tile kernel
#
# grad_w[f, c, r, s] = sum over (n, p, q) of grad[n, f, p, q] *
# x[n, c, p*sh - pad_top + r*dh, q*sw - pad_left + s*dw]: a GEMM of
# filters x taps whose depth is the batch's output pixels. The forward
# tile computes it with the roles renamed: its "pixels" are up to MR taps
# (s) of one kernel row of one channel, its NR "filters" the filters, its
# depth loop (taps outer, channels inner) the output rows of a chunk
# (outer) and their pixels (inner). Per pixel: NV vector loads of the
# output gradient, transposed per chunk into rows of NR filters, and one
# broadcast per tap from a zero-padded copy of the chunk's input rows, the
# taps of a tile at fixed offsets (consecutive where dw = 1). So nothing
# is gathered per (tap, pixel) as fused's transposing pack of im2col(x)^T
# does (28 % of its run on DeepSpeech2's first layer, perf).
#
#   units: (group, filter block, channel, kernel row, tile of taps), each
#       one MR x NR tile of accumulators summed over the batch (split by
#       units below: over the whole batch by one thread, so every grad_w
#       element is summed in one order whatever the threads).
#   threads, where all units' tiles fit one pass and there are at least as
#       many images as threads (first layers: few channels, one filter
#       block): contiguous runs of images, each thread summing every unit
#       over its images into its own tiles, which are then added in thread
#       order (so a given thread count gives the same bits, as the BLAS
#       lowerings). Split by units, every thread would pack the same output
#       gradient (all its units in one filter block): the stem's 64
#       filters took 8.3 ms on 2 threads against 12.6 on one, its packing
#       a third of a thread's run (perf).
#   threads, otherwise: contiguous runs of units, split by their work (rows
#       inside the image x taps); each thread walks the batch's chunks (output rows
#       x columns of one image) once per pass over at most pass_tiles of its
#       units (their accumulators stay in L2), transposing a chunk's output
#       gradient once per filter block and copying a channel's input rows
#       once per channel.
#   rows of the chunk whose input row (for the unit's kernel row) is padding
#       are skipped; columns in the padding are multiplied as zeros.

# The chunk's transposed output gradient (one filter block), which every
# tile of a pass streams over from L2; the tiles' accumulators are loaded and
# stored once per chunk. fp32, 2 threads, ms at 1 / 2 / 4 / 8 / 16 / 32 rows
# per chunk: DeepSpeech2 conv1 (19 KB a row) 6.33 / 6.14 / 5.94 / 5.83 /
# 5.85 / 5.81, AlexNet conv1 (14 KB) 6.30 / 5.91 / 5.69 / 5.51 / 5.35 /
# 5.40, the stem (28 KB) 12.1 / 11.9 / 12.0 / 11.4 / 11.5 / 11.6: flat
# from ~128 KB on.
WG_CHUNK_BYTES = 256 * 1024
# A thread's accumulators per pass (each touched once per chunk).
WG_PASS_TILE_BYTES = 256 * 1024
# Output columns per chunk at most (long 1-D signals).
WG_MAX_CHUNK_COLS = 1024

cdef enum:
    WG_MAX_CHUNK_ROWS = 64
    WG_MAX_TAPS = 16      # taps per tile, above every ISA's MR


cdef struct WGShape:
    # the geometry and the blocking a thread's loop reads
    Py_ssize_t N, H, W, Ho, Wo, K, Kg, Cg, R, S, sh, sw, pad_top, pad_left, dh, dw
    Py_ssize_t xs_n, xs_c, xs_h, xs_w, rows, cols
    Py_ssize_t mr, nr, fblocks, stiles, chunk_rows, chunk_cols, pass_tiles
    # a tile holds mr x nr x lanes partial sums: (tap, filter) lanes of
    # the lanes kernel, or (panel kernel, lanes 1) filters along a tap's row
    Py_ssize_t lanes
    bint lanes_kernel
    # a unit's taps: tiles of a kernel row's S (rows = R), or with `flat` of
    # a channel's R*S taps in (r, s) order (rows = 1, taps = R*S)
    Py_ssize_t unit_rows, unit_taps
    bint flip, flat


def weight_grad_tile(dtype, isa, filters, lanes=False):
    """{"MR", "NR", "L"}: the weight gradient's tile, MR taps x NR filters
    (the forward's for groups of `filters` filters) of L partial sums each:
    the panel kernel's (L = 1), or with lanes the lanes kernel's MR and
    lanes."""
    code = isa_code(isa)
    sizes = dict(blocking(dtype, code, filters, medium=False), L=1)
    if lanes:
        sizes.update(MR=fc_direct_lanes_mr(code),
                     L=fc_direct_lanes_width(code, _dtype_is_double(dtype)))
    return sizes


def weight_grad_blocking(dtype, isa, filters, Ho, Wo, chunk_rows=0, chunk_cols=0, pass_tiles=0,
                         lanes=False):
    """{"MR", "NR", "L", "rows", "cols", "pass"}: the tile (weight_grad_tile),
    a chunk's output rows (at most Ho) and columns, and the tiles of one
    pass (0: the defaults above)."""
    sizes = weight_grad_tile(dtype, isa, filters, lanes)
    itemsize = np.dtype(dtype).itemsize
    cols = int(chunk_cols) or max(1, min(int(Wo), WG_MAX_CHUNK_COLS))
    rows = int(chunk_rows) or WG_CHUNK_BYTES // (cols * sizes["NR"] * itemsize)
    tiles = int(pass_tiles) or WG_PASS_TILE_BYTES // (sizes["MR"] * sizes["NR"] * sizes["L"]
                                                      * itemsize)
    rows = max(1, min(rows, WG_MAX_CHUNK_ROWS, int(Ho)))
    return dict(sizes, rows=rows, cols=cols, **{"pass": max(1, tiles)})


def weight_grad_flat(R, S, mr):
    """Whether the weight gradient's tiles take a channel's taps in (r, s)
    order across kernel rows ("flat") rather than a kernel row's alone:
    where that fills the tiles better (the stem's 7x7 in tiles of 6: 5.4
    taps a tile, not 4 + 3). Up to the narrow AVX-512 tile's 14 taps: flat,
    a 3x3 kernel of 32 filters takes 9 of its 14 taps for each vector pair
    of the output gradient loaded, not 3 (fresh processes alternated, 2
    threads: paper_mnist 0.25 -> 0.215 ms, MTCNN O-Net conv1 0.63 -> 0.46;
    was held to 8 for the taps' pointers, one each, to stay in registers)."""
    R, S, mr = int(R), int(S), int(mr)
    if R < 2 or mr > 14:
        return False
    return R * S / _ceil_div(R * S, mr) > 1.25 * S / _ceil_div(S, mr)


def weight_grad_lanes(K, C, R, S, groups, stride_w, dtype, isa=None, H=None, Wo=None):
    """Whether the weight gradient takes the lanes kernel (_direct_vector.h)
    rather than the panel kernel: on AVX-512, at stride_w 1, where a filter
    block has few taps (C/groups x R x S <= 32) to spread the transposing
    pack of the output gradient over, or where the filters fill at most half
    of the panel kernel's tile.

    Measured (both kernels alternated in one process, 2 threads, Zen 5;
    lanes / panel time, float32 then float64): 1 channel 3x3 of 32 filters
    (paper_mnist) 0.80 / 0.65, LeNet's 1 -> 20 5x5 0.58 / 0.40, 3 -> 64 3x3
    0.93 / 0.87, 3 -> 128 3x3 on 64x64 0.53 / 0.81; 8 -> 16 3x3 (half the
    float32 tile, all of float64's) 0.65 / 1.13; and deeper: 3 -> 32 5x5
    1.21 / 1.11, 16 -> 32 3x3 1.19 / 1.09, 32 -> 64 1.35 / 1.35, 64 -> 64
    1.96 / 1.59. On AVX2 (its 3 x 3 register tile) only LeNet's gained
    (0.83); the others 0.99-2.28, so AVX2 keeps the panel kernel.

    Groups of fewer filters than the register tile's (fc_direct_lanes_nf: 4)
    run one filter at a time. On 2-D depthwise layers that took 1.7-4.2x
    the depthwise kernel's time (MobileNet 56x56 1.8-2.1x, MobileNetV2
    14x14 4.2x, EfficientNet 5x5 3.0x), so there they do not take it; on
    1-D ones (H = R = 1: the input's x 1 x W rows) it took 0.43-0.86x in
    float64 and 0.52-0.92x in float32 (QuartzNet's 33 taps 0.70 / 0.46,
    Conformer's 31 0.73 / 0.43, 5-15 taps over 200-1000 columns), except in
    float32 with 3 taps (1.10x) or 100 output columns (1.20x): so 1-D,
    and in float32 with >= 5 taps over >= 128 output columns (H and Wo
    given; None: not known to be 1-D). With 4 filters a group (ResNeXt's
    32 groups) 0.77-0.85x in float32, 0.67-0.73x in float64."""
    code = isa_code(isa)
    if int(stride_w) != 1 or ISA_NAMES[code] != "avx512":
        return False
    Kg, depth = int(K) // int(groups), int(C) // int(groups) * int(R) * int(S)
    if Kg < 1:
        return False
    if Kg < fc_direct_lanes_nf(code):
        one_row = H is not None and int(H) == 1 and int(R) == 1
        return one_row and (_dtype_is_double(dtype) == 1
                            or (int(S) >= 5 and Wo is not None and int(Wo) >= 128))
    nr = weight_grad_tile(dtype, code, Kg)["NR"]
    fill = Kg / (_ceil_div(Kg, nr) * nr)
    return depth <= 32 or fill <= 0.5


def weight_grad_units(K, C, R, S, groups, dtype, isa=None, flat=None, lanes=False):
    """(units, tap tiles per unit row, flat): the weight gradient's units
    (tiles summed over the batch), with flat (None: weight_grad_flat's) a
    channel's R*S taps as one row; lanes: of the lanes kernel's tiles."""
    Kg = K // groups
    sizes = weight_grad_tile(dtype, isa, Kg, lanes)
    if flat is None:
        flat = weight_grad_flat(R, S, sizes["MR"])
    rows, taps = (1, R * S) if flat else (R, S)
    stiles = _ceil_div(taps, sizes["MR"])
    return groups * _ceil_div(Kg, sizes["NR"]) * (C // groups) * rows * stiles, stiles, bool(flat)


def weight_grad_by_images(N, units, pass_tiles, threads):
    """Whether conv2d_direct_weight_grad splits the batch's images between
    threads (each summing every unit over its images; see the comment
    above) rather than the units: where all units' tiles fit one pass and
    each thread gets an image."""
    return threads > 1 and N >= threads and units <= pass_tiles


def weight_grad_buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, groups, stride_h, stride_w, dil_h,
                             dil_w, dtype, isa=None, chunk_rows=0, chunk_cols=0, pass_tiles=0,
                             flat=None, lanes=False):
    """Workspace elements per thread of conv2d_direct_weight_grad: a pass's
    accumulators, a chunk's transposed output gradient (one filter block;
    none for the lanes kernel, which reads it in place) and a channel's
    zero-padded input rows of a chunk, each aligned."""
    b = weight_grad_blocking(dtype, isa, K // groups, Ho, Wo, chunk_rows, chunk_cols, pass_tiles,
                             lanes)
    units, _, flat = weight_grad_units(K, C, R, S, groups, dtype, isa, flat, lanes)
    align = ALIGN_BYTES // np.dtype(dtype).itemsize
    # (flat tiles read the padding's rows too, as zeros)
    in_rows = (b["rows"] - 1) * stride_h + (R - 1) * dil_h + 1
    if not flat:
        in_rows = min(H, in_rows)
    in_cols = (b["cols"] - 1) * stride_w + (S - 1) * dil_w + 1
    panel = 0 if lanes else b["rows"] * b["cols"] * b["NR"]
    return (min(units, b["pass"]) * b["MR"] * b["NR"] * b["L"] + panel + in_rows * in_cols
            + 3 * align)


cdef inline void _tap_tile(Py_ssize_t S, Py_ssize_t stiles, Py_ssize_t st, Py_ssize_t *first,
                           Py_ssize_t *count) noexcept nogil:
    """Tap tile st of a kernel row's S taps cut into stiles tiles as even as
    can be (7 taps in tiles of at most 6: 4 + 3, not 6 + 1)."""
    cdef Py_ssize_t base = S // stiles, extra = S % stiles
    first[0] = st * base + (st if st < extra else extra)
    count[0] = base + (1 if st < extra else 0)


cdef void _copy_rows(const floating *x_plane, Py_ssize_t xs_h, Py_ssize_t xs_w, Py_ssize_t H,
                     Py_ssize_t W, Py_ssize_t ih_lo, Py_ssize_t ih_hi, Py_ssize_t col_lo,
                     Py_ssize_t width, floating *dst) noexcept nogil:
    """dst row i, column b = x row ih_lo + i, column col_lo + b; zero where
    that row or column is outside the image."""
    cdef Py_ssize_t ih, b
    cdef Py_ssize_t lo = _first_valid(col_lo, 1, width)
    cdef Py_ssize_t hi = _end_valid(col_lo, 1, W, width)
    cdef const floating *src
    cdef floating *d
    if hi < lo:
        hi = lo
    for ih in range(ih_lo, ih_hi):
        d = dst + (ih - ih_lo) * width
        if ih < 0 or ih >= H:
            memset(d, 0, width * sizeof(floating))
            continue
        src = x_plane + ih * xs_h + col_lo * xs_w
        for b in range(lo):
            d[b] = 0
        if xs_w == 1:
            memcpy(d + lo, src + lo, (hi - lo) * sizeof(floating))
        else:
            for b in range(lo, hi):
                d[b] = src[b * xs_w]
        for b in range(hi, width):
            d[b] = 0


cdef inline Py_ssize_t _unit(const WGShape *sh, Py_ssize_t u, Py_ssize_t *g, Py_ssize_t *fb,
                             Py_ssize_t *c, Py_ssize_t *r, Py_ssize_t *st) noexcept nogil:
    """Unit u's (group, filter block, channel, unit row, tap tile), in that
    order of significance; returns the block's filters."""
    st[0] = u % sh.stiles
    u = u // sh.stiles
    r[0] = u % sh.unit_rows
    u = u // sh.unit_rows
    c[0] = u % sh.Cg
    u = u // sh.Cg
    fb[0] = u % sh.fblocks
    g[0] = u // sh.fblocks
    return sh.Kg - fb[0] * sh.nr if sh.Kg - fb[0] * sh.nr < sh.nr else sh.nr


cdef inline Py_ssize_t _next_unit(const WGShape *sh, Py_ssize_t *g, Py_ssize_t *fb,
                                  Py_ssize_t *c, Py_ssize_t *r, Py_ssize_t *st) noexcept nogil:
    """The unit after (g, fb, c, r, st), as _unit would decode it, without
    its divisions, paid once per chunk and unit: the thread's loop around
    the tile was 14 % of ResNet-50 5b's one-thread run (perf; 49 pixels a
    chunk), 12 % with this; returns the block's filters."""
    st[0] += 1
    if st[0] == sh.stiles:
        st[0] = 0
        r[0] += 1
        if r[0] == sh.unit_rows:
            r[0] = 0
            c[0] += 1
            if c[0] == sh.Cg:
                c[0] = 0
                fb[0] += 1
                if fb[0] == sh.fblocks:
                    fb[0] = 0
                    g[0] += 1
    return sh.Kg - fb[0] * sh.nr if sh.Kg - fb[0] * sh.nr < sh.nr else sh.nr


cdef void _store_tiles(const WGShape *sh, const floating *tiles, Py_ssize_t p0, Py_ssize_t p1,
                       floating *grad_w0) noexcept nogil:
    """The tiles of units [p0, p1) (tile u - p0 holding unit u) into grad_w;
    the lanes kernel's partial sums added up in lane order."""
    cdef Py_ssize_t u, g, fb, c, r, st, s0, m, nf, f, t, ss, lane
    cdef Py_ssize_t lanes = sh.lanes
    cdef const floating *tile
    cdef const floating *part
    cdef floating *o
    cdef floating value
    for u in range(p0, p1):
        nf = _unit(sh, u, &g, &fb, &c, &r, &st)
        _tap_tile(sh.unit_taps, sh.stiles, st, &s0, &m)
        tile = tiles + (u - p0) * sh.mr * sh.nr * lanes
        for f in range(nf):
            # the tile's taps are (r, s0 + t), or flat (c's tap s0 + t)
            o = grad_w0 + (g * sh.Kg + fb * sh.nr + f) * sh.rows + c * sh.R * sh.S
            for t in range(m):
                ss = r * sh.S + s0 + t
                if sh.lanes_kernel:
                    part = tile + (f * sh.mr + t) * lanes
                    value = part[0]
                    for lane in range(1, lanes):
                        value = value + part[lane]
                else:
                    value = tile[t * sh.nr + f]
                o[sh.R * sh.S - 1 - ss if sh.flip else ss] = value


cdef void _weight_grad_thread(const WGShape *sh, const floating *x0, const floating *grad0,
                              floating *grad_w0, Py_ssize_t u0, Py_ssize_t u1, Py_ssize_t n0,
                              Py_ssize_t n1, bint keep, floating *ws,
                              fc_direct_f32_t kernel32, fc_direct_f64_t kernel64,
                              fc_direct_lanes_f32_t lanes32, fc_direct_lanes_f64_t lanes64,
                              const Packers *packers) noexcept nogil:
    """Units [u0, u1) of conv2d_direct_weight_grad over images [n0, n1),
    written into grad_w; or with keep (one pass: u1 - u0 <= pass_tiles),
    left in the workspace's tiles for the caller to add up. With sh.lanes_kernel,
    the lanes kernel reads the output gradient's rows in place (tap_panel:
    a chunk row's offset in them) where the panel kernel packs them."""
    cdef Py_ssize_t tap_off[WG_MAX_CHUNK_ROWS]
    cdef Py_ssize_t tap_panel[WG_MAX_CHUNK_ROWS]
    cdef Py_ssize_t pix[WG_MAX_TAPS]
    cdef Py_ssize_t mr = sh.mr, nr = sh.nr
    cdef Py_ssize_t tile_size = sh.mr * sh.nr * sh.lanes
    cdef floating *tiles = _aligned(ws)
    cdef Py_ssize_t pass_units = sh.pass_tiles if sh.pass_tiles < u1 - u0 else u1 - u0
    cdef floating *panel = _aligned(tiles + pass_units * tile_size)
    # (the lanes kernel has no panel)
    cdef floating *rowbuf = (panel if sh.lanes_kernel else
                             _aligned(panel + sh.chunk_rows * sh.chunk_cols * nr))
    cdef Py_ssize_t p0, p1, q0, u, n, pr, qc, i, j, t, ntaps, width, col_lo
    cdef Py_ssize_t ih_lo, ih_hi, ih, g, fb, c, r, st, s0, m, nf, gfb, gc, i0, j0
    cdef Py_ssize_t row_r, kr, kc
    cdef floating *tile
    cdef const floating *grad_rows = grad0
    p0 = u0
    while p0 < u1:
        p1 = p0 + sh.pass_tiles if p0 + sh.pass_tiles < u1 else u1
        memset(tiles, 0, (p1 - p0) * tile_size * sizeof(floating))
        for n in range(n0, n1):
            for i0 in range(_ceil_div(sh.Ho, sh.chunk_rows)):
                i = i0 * sh.chunk_rows
                pr = sh.Ho - i if sh.Ho - i < sh.chunk_rows else sh.chunk_rows
                # the input rows the chunk reads (inside the image; flat
                # tiles, whose taps span kernel rows, read the padding's too)
                ih_lo = i * sh.sh - sh.pad_top
                ih_hi = (i + pr - 1) * sh.sh - sh.pad_top + (sh.R - 1) * sh.dh + 1
                if not sh.flat:
                    if ih_lo < 0:
                        ih_lo = 0
                    if ih_hi > sh.H:
                        ih_hi = sh.H
                    if ih_hi <= ih_lo:
                        continue
                for j0 in range(_ceil_div(sh.Wo, sh.chunk_cols)):
                    q0 = j0 * sh.chunk_cols
                    qc = sh.Wo - q0 if sh.Wo - q0 < sh.chunk_cols else sh.chunk_cols
                    width = (qc - 1) * sh.sw + (sh.S - 1) * sh.dw + 1
                    col_lo = q0 * sh.sw - sh.pad_left
                    gfb = -1
                    gc = -1
                    row_r = -1
                    nf = _unit(sh, p0, &g, &fb, &c, &r, &st)
                    for u in range(p0, p1):
                        if u > p0:
                            nf = _next_unit(sh, &g, &fb, &c, &r, &st)
                        if g * sh.fblocks + fb != gfb:
                            # the chunk's output gradient (the panel
                            # kernel's: packed into rows of nr filters)
                            gfb = g * sh.fblocks + fb
                            grad_rows = (grad0 + (n * sh.K + g * sh.Kg + fb * nr) * sh.cols
                                         + i * sh.Wo + q0)
                            if not sh.lanes_kernel:
                                for j in range(pr):
                                    _pack(grad_rows + j * sh.Wo, sh.cols, 1, nf, qc, 1, False,
                                          qc, nr, packers, panel + j * qc * nr)
                        if g * sh.Cg + c != gc:
                            gc = g * sh.Cg + c
                            _copy_rows(x0 + n * sh.xs_n + gc * sh.xs_c, sh.xs_h, sh.xs_w, sh.H,
                                       sh.W, ih_lo, ih_hi, col_lo, width, rowbuf)
                        if r != row_r:
                            # the chunk's rows whose input row is inside the
                            # image (flat: every row, the kernel row is in
                            # the tap); the same for the unit row's tiles
                            row_r = r
                            ntaps = 0
                            for j in range(pr):
                                ih = (i + j) * sh.sh - sh.pad_top + r * sh.dh
                                if sh.flat or 0 <= ih < sh.H:
                                    tap_off[ntaps] = (ih - ih_lo) * width
                                    tap_panel[ntaps] = (j * sh.Wo if sh.lanes_kernel
                                                        else j * qc * nr)
                                    ntaps += 1
                        if ntaps == 0:
                            continue
                        _tap_tile(sh.unit_taps, sh.stiles, st, &s0, &m)
                        if sh.flat:
                            # tap s0 + t is (row, col) of the kernel, walked
                            # from s0's without a division per tap
                            kr = s0 // sh.S
                            kc = s0 - kr * sh.S
                            for t in range(m):
                                pix[t] = kr * sh.dh * width + kc * sh.dw
                                kc += 1
                                if kc == sh.S:
                                    kc = 0
                                    kr += 1
                        else:
                            for t in range(m):
                                pix[t] = (s0 + t) * sh.dw
                        tile = tiles + (u - p0) * tile_size
                        if sh.lanes_kernel:
                            if floating is float:
                                lanes32(m, nf, rowbuf, pix, qc, tap_off, tap_panel, ntaps,
                                        grad_rows, sh.cols, tile, mr)
                            else:
                                lanes64(m, nf, rowbuf, pix, qc, tap_off, tap_panel, ntaps,
                                        grad_rows, sh.cols, tile, mr)
                        elif floating is float:
                            kernel32(m, rowbuf, pix, sh.sw, qc, tap_off, tap_panel, ntaps, panel,
                                     nr, tile, 0)
                        else:
                            kernel64(m, rowbuf, pix, sh.sw, qc, tap_off, tap_panel, ntaps, panel,
                                     nr, tile, 0)
        if not keep:
            _store_tiles(sh, tiles, p0, p1, grad_w0)
        p0 = p1


def conv2d_direct_weight_grad(const floating[:, :, :, :] x,
                              const floating[:, :, ::1] grad,
                              floating[:, ::1] grad_w,
                              floating[:, ::1] workspace,
                              Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                              Py_ssize_t stride_h, Py_ssize_t stride_w,
                              Py_ssize_t pad_top, Py_ssize_t pad_left,
                              Py_ssize_t dil_h, Py_ssize_t dil_w,
                              Py_ssize_t groups, bint flip, isa, int num_threads,
                              Py_ssize_t chunk_rows=0, Py_ssize_t chunk_cols=0,
                              Py_ssize_t pass_tiles=0, flat=None, bint lanes=False):
    """grad_w (K, C/groups*R*S), C-contiguous = the weight gradient for input
    x (N, C, H, W; any strides) and output gradient grad (N, K, Ho*Wo),
    C-contiguous, on the direct tile kernel (every element written), or
    with lanes (stride_w 1 only) on the lanes kernel (_direct_vector.h).

    workspace: (>= num_threads, >= weight_grad_buffer_sizes(...)), with the
    same chunk_rows, chunk_cols, pass_tiles (0: weight_grad_blocking's; any
    value >= 1 is correct), flat (tiles across kernel rows; None:
    weight_grad_flat's) and lanes. Same conventions as conv2d_direct; each
    element is summed in one order for a given num_threads, and whatever
    num_threads where the threads split the units (not
    weight_grad_by_images).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_w.shape[0], rows = grad_w.shape[1]
    cdef Py_ssize_t cols = grad.shape[2]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    cdef Py_ssize_t itemsize = sizeof(floating)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if chunk_rows < 0 or chunk_cols < 0 or pass_tiles < 0:
        raise ValueError(f"chunk_rows, chunk_cols, pass_tiles must be >= 0, got {chunk_rows}, "
                         f"{chunk_cols}, {pass_tiles}")
    if min(stride_h, stride_w, dil_h, dil_w) < 1 or min(pad_top, pad_left) < 0:
        raise ValueError(f"bad geometry: strides ({stride_h}, {stride_w}) and dilations "
                         f"({dil_h}, {dil_w}) must be >= 1, padding ({pad_top}, {pad_left}) >= 0")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if Wo < 1 or cols % Wo or R < 1 or S < 1:
        raise ValueError(f"bad geometry: Wo={Wo}, R={R}, S={S}, grad columns {cols}")
    if lanes and stride_w != 1:
        raise ValueError(f"the lanes kernel needs stride_w == 1, got {stride_w}")
    if rows != C // groups * R * S:
        raise ValueError(f"grad_w has {rows} columns, expected C/groups*R*S = {C // groups * R * S}")
    if grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError(f"grad has shape {tuple(grad.shape)}, expected ({N}, {K}, {cols})")
    if K == 0 or rows == 0:
        return
    if N == 0 or cols == 0:
        np.asarray(grad_w)[...] = 0
        return
    dtype = np.float64 if dbl else np.float32
    cdef Py_ssize_t Ho = cols // Wo, Kg = K // groups, Cg = C // groups
    need = weight_grad_buffer_sizes(N, K, C, H, W, Ho, Wo, R, S, groups, stride_h, stride_w,
                                    dil_h, dil_w, dtype, code, chunk_rows, chunk_cols, pass_tiles,
                                    flat, lanes)
    if workspace.shape[0] < num_threads or workspace.shape[1] < need:
        raise ValueError(f"workspace has shape {tuple(workspace.shape)}, needs "
                         f"({num_threads}, {need})")
    b = weight_grad_blocking(dtype, code, Kg, Ho, Wo, chunk_rows, chunk_cols, pass_tiles, lanes)
    cdef int narrow = tile_kind(Kg, dtype, code, medium=False)
    cdef WGShape shape
    shape.N, shape.H, shape.W, shape.Ho, shape.Wo = N, H, W, Ho, Wo
    shape.K, shape.Kg, shape.Cg, shape.R, shape.S = K, Kg, Cg, R, S
    shape.sh, shape.sw, shape.pad_top, shape.pad_left = stride_h, stride_w, pad_top, pad_left
    shape.dh, shape.dw, shape.rows, shape.cols, shape.flip = dil_h, dil_w, rows, cols, flip
    shape.xs_n, shape.xs_c = x.strides[0] // itemsize, x.strides[1] // itemsize
    shape.xs_h, shape.xs_w = x.strides[2] // itemsize, x.strides[3] // itemsize
    shape.mr, shape.nr = b["MR"], b["NR"]
    shape.lanes, shape.lanes_kernel = b["L"], lanes
    shape.fblocks = _ceil_div(Kg, shape.nr)
    units, shape.stiles, shape.flat = weight_grad_units(K, C, R, S, groups, dtype, code, flat,
                                                        lanes)
    shape.unit_rows = 1 if shape.flat else R
    shape.unit_taps = R * S if shape.flat else S
    shape.chunk_rows, shape.chunk_cols, shape.pass_tiles = b["rows"], b["cols"], b["pass"]
    if shape.mr > WG_MAX_TAPS:
        raise ValueError(f"tiles of {shape.mr} taps exceed WG_MAX_TAPS={WG_MAX_TAPS}")

    cdef Packers packers
    packers.rows32 = fc_direct_pack_f32(code, narrow)
    packers.rows64 = fc_direct_pack_f64(code, narrow)
    packers.adjoint32 = NULL
    packers.adjoint64 = NULL
    cdef fc_direct_f32_t kernel32 = fc_direct_f32(code, narrow)
    cdef fc_direct_f64_t kernel64 = fc_direct_f64(code, narrow)
    cdef fc_direct_lanes_f32_t lanes32 = fc_direct_lanes_f32(code)
    cdef fc_direct_lanes_f64_t lanes64 = fc_direct_lanes_f64(code)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *grad0 = &grad[0, 0, 0]
    cdef floating *grad_w0 = &grad_w[0, 0]
    cdef Py_ssize_t item, e, n_units = units
    cdef Py_ssize_t size = n_units * shape.mr * shape.nr * shape.lanes
    cdef floating *summed
    cdef const floating *part
    if weight_grad_by_images(N, units, shape.pass_tiles, num_threads):
        # each item's images, every unit into its own tiles (row `item` of
        # the workspace), then added up in item order
        with nogil:
            for item in prange(num_threads, schedule="static", chunksize=1,
                               num_threads=num_threads):
                _weight_grad_thread(&shape, x0, grad0, grad_w0, 0, n_units,
                                    item * N // num_threads, (item + 1) * N // num_threads,
                                    True, &workspace[item, 0], kernel32, kernel64, lanes32,
                                    lanes64, &packers)
            summed = _aligned(&workspace[0, 0])
            for item in range(1, num_threads):
                part = _aligned(&workspace[item, 0])
                for e in range(size):
                    summed[e] += part[e]
            _store_tiles(&shape, summed, 0, n_units, grad_w0)
        return

    # threads: runs of units of even work (rows computed x taps)
    cdef Py_ssize_t[::1] bounds = np.zeros(num_threads + 1, np.intp)
    cdef Py_ssize_t[::1] row_work = np.zeros(R, np.intp)
    cdef Py_ssize_t[::1] work = np.empty(units, np.intp)
    cdef Py_ssize_t u, r, p, st, s0, m, total = 0, done = 0, t = 1
    for r in range(shape.unit_rows):
        for p in range(Ho):
            if shape.flat or 0 <= p * stride_h - pad_top + r * dil_h < H:
                row_work[r] += 1
    for u in range(units):
        _tap_tile(shape.unit_taps, shape.stiles, u % shape.stiles, &s0, &m)
        work[u] = row_work[(u // shape.stiles) % shape.unit_rows] * m + 1
        total += work[u]
    for u in range(units):
        done += work[u]
        while t < num_threads and done * num_threads >= total * t:
            bounds[t] = u + 1
            t += 1
    while t <= num_threads:
        bounds[t] = units
        t += 1
    with nogil:
        for item in prange(num_threads, schedule="static", chunksize=1, num_threads=num_threads):
            if bounds[item] < bounds[item + 1]:
                _weight_grad_thread(&shape, x0, grad0, grad_w0, bounds[item], bounds[item + 1],
                                    0, N, False, &workspace[threadid(), 0], kernel32, kernel64,
                                    lanes32, lanes64, &packers)
