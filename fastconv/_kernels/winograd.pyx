# The Winograd lowering: 3x3 stride-1 convolutions as F(4x4, 3x3), 36
# GEMMs of transformed weights and transformed input tiles on the fused
# lowering's micro-kernels, 4x fewer multiply-adds than the convolution
# (the transforms, the item and the layouts: _winograd.h). A dilated
# convolution runs as one undilated convolution per phase of the dilation,
# on strided views of the input and the output (conv2d_winograd). Two
# orders, which the plan chooses (WinogradBlocking.keep_input):
#
# weights kept:
#   U: per (group, point xi) a matrix of filter rows (Cg values each, read
#       in place by the micro-kernel, lda = Cg), filters zero-padded to a
#       multiple of MR; transformed once per call, before the parallel loop,
#       in parallel over panels of MR filters, into `kept`.
#   work items: (group, micro-panel of up to NR tiles of the batch, chunk of
#       filters), dynamic schedule; chunks of filters only where the batch
#       has too few tiles to keep the threads busy (each chunk transforms
#       its tiles' input again).
#   per thread workspace: V (36 x Cg x NR), M (36 x KB x NR), the gathered
#       tiles and the transforms' scratch (2 x 36 x NR + 16 x NR); before
#       the items, the weight transform's scratch (~90 x Cg).
# input kept (few tiles against many weights: ResNet-50 4b, 5b):
#   V of every panel of tiles transformed once per call into `kept` (items:
#       group, panel, block of channels).
#   work items: (group, block of filters, filter_block()), each transforming
#       its U into the thread's workspace (36 x block x Cg), then running
#       it against every panel.
#
# ISA codes as the fused lowering's (_fused_kernels.h): 0 generic, 1 avx2,
# 2 avx512.

from cython cimport floating
from cython.parallel cimport prange, threadid

import numpy as np

from fastconv._kernels._blocks cimport (ALIGN_BYTES, _aligned, _ceil_div, _panel_width,
                                        _round_up)
from fastconv._kernels.fused import _dtype_is_double, _narrow_lanes, isa_code


cdef extern from "_winograd.h" nogil:
    ctypedef struct fw_geometry:
        Py_ssize_t H, W, Ho, Wo, Cg, Kg, K
        Py_ssize_t ys_n, ys_k, ys_h, ys_w
        Py_ssize_t xs_n, xs_c, xs_h, xs_w
        Py_ssize_t pad_top, pad_left
        Py_ssize_t tiles_w, tiles_per_image, tiles
        Py_ssize_t mr, kpanels, kb
    ctypedef void (*fc_ukr_f32_t)(Py_ssize_t, const float *, Py_ssize_t, const float *,
                                  Py_ssize_t, float *, Py_ssize_t, int,
                                  const float *) noexcept nogil
    ctypedef void (*fc_ukr_f64_t)(Py_ssize_t, const double *, Py_ssize_t, const double *,
                                  Py_ssize_t, double *, Py_ssize_t, int,
                                  const double *) noexcept nogil
    ctypedef void (*fw_item_f32_t)(const fw_geometry *, const float *, const float *,
                                   const float *, float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, fc_ukr_f32_t, float *) noexcept nogil
    ctypedef void (*fw_item_f64_t)(const fw_geometry *, const double *, const double *,
                                   const double *, double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, fc_ukr_f64_t, double *) noexcept nogil
    ctypedef void (*fw_wgrad_item_f32_t)(const fw_geometry *, const float *, const float *,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, int, int,
                                         fc_ukr_f32_t, float *) noexcept nogil
    ctypedef void (*fw_wgrad_item_f64_t)(const fw_geometry *, const double *, const double *,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double *,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                         Py_ssize_t, Py_ssize_t, Py_ssize_t, int, int,
                                         fc_ukr_f64_t, double *) noexcept nogil
    fw_wgrad_item_f32_t fw_wgrad_item_f32(int isa)
    fw_wgrad_item_f64_t fw_wgrad_item_f64(int isa)
    fc_ukr_f32_t fc_ukr_f32(int isa)
    fc_ukr_f64_t fc_ukr_f64(int isa)
    ctypedef void (*fw_weights_f32_t)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, int, float *, Py_ssize_t,
                                      float *) noexcept nogil
    ctypedef void (*fw_weights_f64_t)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, int, double *, Py_ssize_t,
                                      double *) noexcept nogil
    ctypedef void (*fw_panel_input_f32_t)(const fw_geometry *, const float *, Py_ssize_t,
                                          Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                                          float *) noexcept nogil
    ctypedef void (*fw_panel_input_f64_t)(const fw_geometry *, const double *, Py_ssize_t,
                                          Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                          double *, double *) noexcept nogil
    ctypedef void (*fw_filters_item_f32_t)(const fw_geometry *, const float *, Py_ssize_t,
                                           Py_ssize_t, int, const float *, const float *, float *,
                                           Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                           fc_ukr_f32_t, fc_ukr_f32_t, float *) noexcept nogil
    ctypedef void (*fw_filters_item_f64_t)(const fw_geometry *, const double *, Py_ssize_t,
                                           Py_ssize_t, int, const double *, const double *,
                                           double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                           Py_ssize_t, fc_ukr_f64_t, fc_ukr_f64_t,
                                           double *) noexcept nogil
    fw_panel_input_f32_t fw_panel_input_f32(int isa)
    fw_panel_input_f64_t fw_panel_input_f64(int isa)
    fw_filters_item_f32_t fw_filters_item_f32(int isa)
    fw_filters_item_f64_t fw_filters_item_f64(int isa)
    int fc_mr(int isa, int is_double)
    int fc_nr(int isa, int is_double)
    fc_ukr_f32_t fc_ukr_width_f32(int isa, Py_ssize_t pw)
    fc_ukr_f64_t fc_ukr_width_f64(int isa, Py_ssize_t pw)
    fw_item_f32_t fw_item_f32(int isa)
    fw_item_f64_t fw_item_f64(int isa)
    fw_weights_f32_t fw_weights_f32(int isa)
    fw_weights_f64_t fw_weights_f64(int isa)
    enum:
        FW_M, FW_A, FW_POINTS, FW_MAX_NR, FW_WEIGHT_BLOCK, FW_TAPS_PAD


TILE = FW_M            # outputs per tile side
POINTS = FW_POINTS     # GEMMs per call (the 6 x 6 transform domain)

# Bytes of a filter block's M (36 x KB x NR) in the thread's workspace: a
# quarter of the 1 MiB L2 (fused.L2_BYTES), beside V.
M_BLOCK_BYTES = 1 << 18


def blocking(dtype, isa=None):
    """dict(MR=, NR=, KB=): the micro-kernel's tile (the fused lowering's) and
    the filters per block of M.

    >>> sizes = blocking("float32", "generic")
    >>> sizes["KB"] % sizes["MR"]
    0
    """
    code = isa_code(isa)
    dbl = _dtype_is_double(dtype)
    itemsize = 8 if dbl else 4
    mr, nr = fc_mr(code, dbl), fc_nr(code, dbl)
    kb = max(mr, M_BLOCK_BYTES // (FW_POINTS * nr * itemsize) // mr * mr)
    return dict(MR=mr, NR=nr, KB=kb)


def tiles(Ho, Wo):
    """(tiles down, tiles across) of a Ho x Wo output: 4 x 4 outputs each.

    >>> tiles(56, 55)
    (14, 14)
    """
    return -(-Ho // FW_M), -(-Wo // FW_M)


# Bytes of an input-kept item's transformed weights (36 x block x Cg in the
# thread's workspace): about two L2s, so that a block is large enough that
# the kept input is read again few times (ResNet-50 5b, fp32 AVX-512: 32
# filters, 16 blocks; blocks of 8 read it 64 times), and the transformed
# weights of one point (block x Cg, 64 KiB) stay in L2 for its GEMMs.
U_BLOCK_BYTES = 5 << 19


def filter_block(Kg, Cg, groups, dtype, isa=None, num_threads=1):
    """Filters per item of the input-kept order: at most KB (M's block) and
    U_BLOCK_BYTES of transformed weights, a multiple of MR, and small enough
    that every thread gets two items where the filters allow it.

    >>> filter_block(512, 512, 1, "float32", "avx512", 2) <= 32
    True
    >>> filter_block(64, 64, 1, "float32", "generic", 2)   # 4 items of 16
    16
    """
    sizes = blocking(dtype, isa)
    mr, kb = sizes["MR"], sizes["KB"]
    itemsize = 8 if _dtype_is_double(dtype) else 4
    by_bytes = U_BLOCK_BYTES // (FW_POINTS * max(1, Cg) * itemsize) // mr * mr
    per_group = _ceil_div(2 * max(1, num_threads), max(1, groups))
    by_threads = _round_up(_ceil_div(max(1, Kg), per_group), mr)
    return max(mr, min(kb, by_bytes, by_threads))


def kept_tiles(N, Ho, Wo, dil_h=1, dil_w=1):
    """The tiles of the largest undilated convolution of a layer (its first
    dilation phase): what the input-kept order's buffer holds.

    >>> kept_tiles(2, 7, 7), kept_tiles(1, 9, 9, 2, 2)
    (8, 4)
    """
    return N * int(np.prod(tiles(-(-Ho // dil_h), -(-Wo // dil_w))))


def buffer_sizes(K, C, groups, dtype, isa=None, tiles=None, block=None):
    """(kept_elems, per_thread_workspace_elems) for K filters and C input
    channels in `groups` groups, with alignment slack. tiles None: the
    weights-kept order (kept: the transformed weights, 36 x K x C/groups);
    else the input-kept order for that many tiles (kept_tiles) and blocks
    of `block` filters (filter_block; default KB) (kept: the transformed
    input, 36 x C x the tiles in NR-wide panels).

    >>> kept, per_thread = buffer_sizes(64, 64, 1, "float32", "generic")
    >>> kept >= 36 * 64 * 64
    True
    >>> kept, per_thread = buffer_sizes(64, 64, 1, "float32", "generic", tiles=20, block=8)
    >>> kept >= 36 * 64 * 20, per_thread >= 36 * 8 * 64
    (True, True)
    """
    sizes = blocking(dtype, isa)
    mr, nr, kb = sizes["MR"], sizes["NR"], sizes["KB"]
    itemsize = np.dtype(np.float64 if _dtype_is_double(dtype) else np.float32).itemsize
    slack = ALIGN_BYTES // itemsize
    kg, cg = K // groups, C // groups
    weights = 9 * FW_WEIGHT_BLOCK * (cg + FW_TAPS_PAD) + 18 * cg   # fw_weights' scratch
    if tiles is not None:
        block = kb if block is None else block
        if block < mr or block % mr:
            raise ValueError(f"block={block} must be a positive multiple of MR={mr}")
        kept = groups * _ceil_div(max(1, tiles), nr) * FW_POINTS * cg * nr + slack
        gemms = FW_POINTS * (block + 1) * nr + 16 * nr
        return kept, FW_POINTS * block * cg + max(weights, gemms, 2 * FW_POINTS * nr) + slack
    kept = groups * FW_POINTS * _ceil_div(kg, mr) * mr * cg + slack
    items = FW_POINTS * (cg + kb + 2) * nr + FW_M * FW_M * nr
    per_thread = max(items, weights) + slack
    return kept, per_thread


def chunk_count(Py_ssize_t items, Py_ssize_t kpanels, int num_threads):
    """Chunks of filters per (group, panel of tiles) item: 1, or more where
    there are fewer than 4 items a thread (ResNet-50 4b_3x3: 128 tiles, 3
    panels), at most one per MR-row panel of filters.

    >>> chunk_count(3, 32, 2), chunk_count(100, 32, 2)
    (3, 1)
    """
    cdef Py_ssize_t want = 4 * num_threads
    if items >= want:
        return 1
    return min(kpanels, _ceil_div(want, items))


def _phases(x, y, Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t dil_h, Py_ssize_t dil_w):
    """(x view, y view, pad_top, pad_left) of each undilated convolution a
    dilated one is made of (y: the output, or the output gradient): output
    rows oh = d*i + p read input rows d*(i + r + s) + q, with q and s fixed
    by p and the padding, so phase p of y is the undilated convolution of
    phase q of x, padded by -s. Without dilation: x, y and the padding."""
    if dil_h < 1 or dil_w < 1:
        raise ValueError(f"dilation must be >= 1, got ({dil_h}, {dil_w})")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError(f"x and the output must be 4-D, got shapes {x.shape} and {y.shape}")
    for p_h in range(min(dil_h, y.shape[2])):
        q_h = (p_h - pad_top) % dil_h
        for p_w in range(min(dil_w, y.shape[3])):
            q_w = (p_w - pad_left) % dil_w
            yield (x[:, :, q_h::dil_h, q_w::dil_w], y[:, :, p_h::dil_h, p_w::dil_w],
                   -((p_h - pad_top - q_h) // dil_h), -((p_w - pad_left - q_w) // dil_w))


cdef fw_geometry _geometry(x, Py_ssize_t K, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t groups,
                           Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t mr,
                           Py_ssize_t itemsize):
    """The item geometry both passes share: x's shape and strides (in
    elements), the groups, padding and the batch's 4x4 tiles of Ho x Wo."""
    cdef fw_geometry geo
    geo.H, geo.W, geo.Ho, geo.Wo = x.shape[2], x.shape[3], Ho, Wo
    geo.Cg, geo.Kg, geo.K = x.shape[1] // groups, K // groups, K
    geo.xs_n, geo.xs_c = x.strides[0] // itemsize, x.strides[1] // itemsize
    geo.xs_h, geo.xs_w = x.strides[2] // itemsize, x.strides[3] // itemsize
    geo.pad_top, geo.pad_left = pad_top, pad_left
    tiles_h, geo.tiles_w = tiles(Ho, Wo)
    geo.tiles_per_image = tiles_h * geo.tiles_w
    geo.tiles = x.shape[0] * geo.tiles_per_image
    geo.mr = mr
    return geo


def conv2d_winograd(x, weight, bias, out, kept, workspace, Py_ssize_t pad_top,
                    Py_ssize_t pad_left, Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    bint flip, isa, int num_threads, keep_input=False, bint adjoint=False,
                    Py_ssize_t block=0):
    """out (N, K, Ho, Wo; any strides) = the 3x3 stride-1 correlation of x
    (N, C, H, W; any strides), dilated by (dil_h, dil_w), with weight
    (K, C/groups*9), C-contiguous, plus bias (K,) (length 0: no bias), by
    F(4x4, 3x3) Winograd (flip: the kernel reversed, mathematical
    convolution). Padding: pad_top, pad_left zeros before the image; the
    output's size says the rest. All arrays of one dtype, float32 or float64.

    adjoint: weight is instead (C, K/groups*9), the weights of the layer
    whose input gradient this forward pass computes; filter k of group g is
    their column block k of rows g*C/groups ..., read in place (no
    transposed copy).

    keep_input False (the weights-kept order): the weights are transformed
    once into `kept`, then the items are (group, panel of tiles, chunk of
    filters). True (the input-kept order, for few tiles: ResNet-50 5b_3x3
    has 32 against 2.4 M weights): the input is transformed once into
    `kept`, then the items are (group, block of `block` filters; 0:
    filter_block() for num_threads), each transforming its filters' weights
    in its own workspace, where they stay in cache, and running them
    against every panel of tiles.

    A dilated convolution is dil_h x dil_w undilated ones: output rows
    oh = d*i + p read input rows d*(i + r + s) + q (q, s from p and the
    padding), so each phase p of the output is the undilated convolution of
    one phase q of the input, both strided views; in the weights-kept order
    the weights are transformed once, for the first.

    kept, workspace: >= buffer_sizes(..., tiles=None, or kept_tiles(...) and
    the block) elements (workspace: (>= num_threads, per thread));
    overwritten.
    isa: as conv2d_fused's.

    >>> import numpy as np
    >>> x = np.arange(2 * 6 * 6, dtype=np.float64).reshape(1, 2, 6, 6)
    >>> w = np.ones((1, 2 * 9))
    >>> out = np.empty((1, 1, 4, 4))
    >>> kept, per_thread = buffer_sizes(1, 2, 1, np.float64, "generic")
    >>> conv2d_winograd(x, w, np.zeros(0), out, np.empty(kept),
    ...                 np.empty((1, per_thread)), 0, 0, 1, 1, 1, False, "generic", 1)
    >>> float(out[0, 0, 0, 0]) == float(x[0, :, :3, :3].sum())
    True
    """
    transformed = False
    if keep_input and block == 0:
        C, K = np.shape(x)[1], np.shape(out)[1]
        block = filter_block(K // max(1, groups), C // max(1, groups), groups, weight.dtype,
                             isa, num_threads)
    for x_phase, out_phase, top, left in _phases(x, out, pad_top, pad_left, dil_h, dil_w):
        transformed |= _undilated(x_phase, weight, bias, out_phase, kept, workspace, top,
                                  left, groups, flip, isa, num_threads, bool(keep_input),
                                  adjoint, not transformed, block)


def _undilated(const floating[:, :, :, :] x,
               const floating[:, ::1] weight,
               const floating[::1] bias,
               floating[:, :, :, :] out,
               floating[::1] kept,
               floating[:, ::1] workspace,
               Py_ssize_t pad_top, Py_ssize_t pad_left,
               Py_ssize_t groups, bint flip, isa, int num_threads, bint keep_input,
               bint adjoint, bint transform_weights, Py_ssize_t block):
    """conv2d_winograd without dilation; transform_weights False (the
    weights-kept order): the kept weights are already there. Returns whether
    it transformed the weights into `kept`."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = out.shape[1], rows = weight.shape[1]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if out.shape[0] != N:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected ({N}, K, Ho, Wo)")
    expected = (C, K // groups * 9) if adjoint else (K, C // groups * 9)
    if (weight.shape[0], rows) != expected:
        raise ValueError(f"weight has shape {(weight.shape[0], rows)}, expected {expected} = "
                         + ("(C, K/groups*9)" if adjoint else "(K, C/groups*9)")
                         + f" for C={C}, K={K}, groups={groups}")
    if bias.shape[0] not in (0, K):
        raise ValueError(f"bias has {bias.shape[0]} values, expected 0 or K={K}")
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return False
    dtype = np.float64 if dbl else np.float32
    sizes = blocking(dtype, code)
    need = buffer_sizes(K, C, groups, dtype, code, kept_tiles(N, Ho, Wo) if keep_input else None,
                        block if keep_input else None)
    if (kept.shape[0] < need[0] or workspace.shape[0] < num_threads
            or workspace.shape[1] < need[1]):
        raise ValueError(f"buffers of {kept.shape[0]} and ({workspace.shape[0]}, "
                         f"{workspace.shape[1]}) elements, need {need[0]} and "
                         f"({num_threads}, {need[1]})")
    if C == 0 or H == 0 or W == 0:
        # nothing to sum (no channels, or a phase of a dilated input with no pixels)
        np.asarray(out)[...] = np.asarray(bias)[:, None, None] if bias.shape[0] else 0
        return False
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef fw_geometry geo = _geometry(x, K, Ho, Wo, groups, pad_top, pad_left, sizes["MR"],
                                     itemsize)
    geo.ys_n, geo.ys_k = out.strides[0] // itemsize, out.strides[1] // itemsize
    geo.ys_h, geo.ys_w = out.strides[2] // itemsize, out.strides[3] // itemsize
    geo.kpanels = _ceil_div(geo.Kg, geo.mr)
    geo.kb = sizes["KB"]
    # filter f of group g, channel c: w_group(g) + f*filter_step + c*channel_step
    cdef Py_ssize_t filter_step = 9 if adjoint else rows
    cdef Py_ssize_t channel_step = rows if adjoint else 9
    cdef Py_ssize_t group_step = (geo.Cg if adjoint else geo.Kg) * rows
    cdef Py_ssize_t nr = sizes["NR"], lanes = _narrow_lanes(code, dbl)
    cdef Py_ssize_t panels = _ceil_div(geo.tiles, nr)
    cdef Py_ssize_t last_width = _panel_width(geo.tiles - (panels - 1) * nr, nr, lanes)
    cdef Py_ssize_t chunks, chunk, u_group, u_point, weight_items, cblock, cblocks
    cdef Py_ssize_t v_group = panels * FW_POINTS * geo.Cg * nr
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *w0 = &weight[0, 0]
    cdef const floating *bias0 = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *kept0 = _aligned(&kept[0])
    cdef floating *out0 = &out[0, 0, 0, 0]
    cdef floating *ws
    cdef floating *panel
    cdef Py_ssize_t item, g, p, t0, nt, pw, f0, f1, m, xi, c0, c1
    if keep_input:
        # V of every panel (items: group, panel, block of channels), then the
        # blocks of filters (M's block too)
        geo.kb = block
        cblocks = min(geo.Cg, _ceil_div(4 * num_threads, groups * panels))
        cblock = _ceil_div(geo.Cg, cblocks)
        cblocks = _ceil_div(geo.Cg, cblock)
        chunks = _ceil_div(geo.Kg, block)
        with nogil:
            for item in prange(groups * panels * cblocks, schedule="dynamic",
                               num_threads=num_threads):
                g = item // (panels * cblocks)
                p = (item // cblocks) % panels
                c0 = item % cblocks * cblock
                c1 = c0 + cblock if c0 + cblock < geo.Cg else geo.Cg
                t0 = p * nr
                nt = geo.tiles - t0 if geo.tiles - t0 < nr else nr
                pw = last_width if p == panels - 1 else nr
                ws = _aligned(&workspace[threadid(), 0])
                panel = kept0 + g * v_group + p * FW_POINTS * geo.Cg * nr
                if floating is float:
                    fw_panel_input_f32(code)(&geo, x0 + g * geo.Cg * geo.xs_c, t0, nt, pw,
                                             c0, c1, panel, ws)
                else:
                    fw_panel_input_f64(code)(&geo, x0 + g * geo.Cg * geo.xs_c, t0, nt, pw,
                                             c0, c1, panel, ws)
            for item in prange(groups * chunks, schedule="dynamic", num_threads=num_threads):
                g = item // chunks
                f0 = item % chunks * geo.kb
                f1 = f0 + geo.kb if f0 + geo.kb < geo.Kg else geo.Kg
                ws = _aligned(&workspace[threadid(), 0])
                if floating is float:
                    fw_filters_item_f32(code)(
                        &geo, w0 + g * group_step, filter_step, channel_step, flip,
                        kept0 + g * v_group, bias0 + g * geo.Kg if bias0 != NULL else NULL,
                        out0 + g * geo.Kg * geo.ys_k, f0, f1, nr, last_width,
                        fc_ukr_width_f32(code, nr), fc_ukr_width_f32(code, last_width), ws)
                else:
                    fw_filters_item_f64(code)(
                        &geo, w0 + g * group_step, filter_step, channel_step, flip,
                        kept0 + g * v_group, bias0 + g * geo.Kg if bias0 != NULL else NULL,
                        out0 + g * geo.Kg * geo.ys_k, f0, f1, nr, last_width,
                        fc_ukr_width_f64(code, nr), fc_ukr_width_f64(code, last_width), ws)
        return False
    chunks = chunk_count(groups * panels, geo.kpanels, num_threads)
    chunk = _ceil_div(geo.kpanels, chunks) * geo.mr
    chunks = _ceil_div(geo.Kg, chunk)
    u_group = FW_POINTS * geo.kpanels * geo.Cg * geo.mr
    u_point = geo.kpanels * geo.Cg * geo.mr
    weight_items = groups * geo.kpanels if transform_weights else 0
    with nogil:
        for item in prange(weight_items, schedule="static", num_threads=num_threads):
            g = item // geo.kpanels
            p = item % geo.kpanels
            m = geo.Kg - p * geo.mr if geo.Kg - p * geo.mr < geo.mr else geo.mr
            ws = _aligned(&workspace[threadid(), 0])
            panel = kept0 + g * u_group + p * geo.mr * geo.Cg
            if floating is float:
                fw_weights_f32(code)(w0 + g * group_step + p * geo.mr * filter_step, filter_step,
                                     channel_step, m, geo.mr, geo.Cg, flip, panel, u_point, ws)
            else:
                fw_weights_f64(code)(w0 + g * group_step + p * geo.mr * filter_step, filter_step,
                                     channel_step, m, geo.mr, geo.Cg, flip, panel, u_point, ws)
        for item in prange(groups * panels * chunks, schedule="dynamic", num_threads=num_threads):
            g = item // (panels * chunks)
            p = (item // chunks) % panels
            f0 = item % chunks * chunk
            f1 = f0 + chunk if f0 + chunk < geo.Kg else geo.Kg
            t0 = p * nr
            nt = geo.tiles - t0 if geo.tiles - t0 < nr else nr
            pw = last_width if p == panels - 1 else nr
            ws = _aligned(&workspace[threadid(), 0])
            if floating is float:
                fw_item_f32(code)(&geo, x0 + g * geo.Cg * geo.xs_c, kept0 + g * u_group,
                                  bias0 + g * geo.Kg if bias0 != NULL else NULL,
                                  out0 + g * geo.Kg * geo.ys_k, t0, nt, pw, f0, f1,
                                  fc_ukr_width_f32(code, pw), ws)
            else:
                fw_item_f64(code)(&geo, x0 + g * geo.Cg * geo.xs_c, kept0 + g * u_group,
                                  bias0 + g * geo.Kg if bias0 != NULL else NULL,
                                  out0 + g * geo.Kg * geo.ys_k, t0, nt, pw, f0, f1,
                                  fc_ukr_width_f64(code, pw), ws)
    return transform_weights


# ---------------------------------------------------------------- weight gradient
#
# dW[k, c] (3x3) = G^T [ sum over the batch's tiles of (A h A^T) .* (B^T d B) ] G
# with h a 4x4 tile of the output gradient and d the 6x6 input tile under it
# (F(3x3, 4x4), the transpose of the forward's algorithm): per point xi one
# GEMM M[xi] (channels x filters) = V[xi] (channels x tiles) @ H[xi] (tiles
# x filters), the depth being the batch's tiles. Work items: (group, NR
# filters, WGRAD_CB channels), each over every tile, WGRAD_TB at a time
# (_winograd.h's fw_wgrad_item): the input tiles are transformed once per
# block of filters, the gradient tiles once per block of channels.

# Tiles per panel (the GEMMs' depth step; <= FW_MAX_NR lanes of the input
# transform) and channels per item: V (36 x CB x TB), H (36 x TB x NR) and M
# (36 x CB x NR) of one item, ~1.5 MB in float32 AVX-512, in L2 and L3.
WGRAD_TB = 64
WGRAD_CB = 64


def weight_grad_blocking(dtype, isa=None):
    """dict(MR=, NR=, TB=, CB=) of the weight gradient's items.

    >>> sizes = weight_grad_blocking("float64", "generic")
    >>> sizes["CB"] % sizes["MR"], sizes["TB"] <= 64
    (0, True)
    """
    sizes = blocking(dtype, isa)
    mr = sizes["MR"]
    return dict(MR=mr, NR=sizes["NR"], TB=WGRAD_TB, CB=max(mr, WGRAD_CB // mr * mr))


def weight_grad_channel_major(K, C, Ho, Wo, H, W, groups, dtype, isa=None):
    """The order of conv2d_winograd_weight_grad's items (each one block of
    NR filters x one block of CB channels over every tile): blocks of
    channels outermost where that re-reads less: each item streams its
    channels' input and its filters' gradient over the whole batch, so
    filters-outer reads the input once per block of filters and channels-
    outer the gradient once per block of channels; consecutive items (on
    both threads) then share the outer block in the cache. Where the batch
    outgrows the L3 that traffic shows: VGG-16 conv3_2 at 8 images, channels
    outer / filters outer, 0.81 in float64 (103 against 127 ms), 0.95 in
    float32; layers that fit within 0.97-1.03 (Zen 5, 2 threads). The same
    bits either way (each item owns its block of the gradient).

    >>> weight_grad_channel_major(256, 256, 56, 56, 56, 56, 1, "float64", "generic")
    True
    """
    sizes = weight_grad_blocking(dtype, isa)
    kg, cg = K // groups, C // groups
    return bool(_channel_major(_ceil_div(kg, sizes["NR"]),
                               _ceil_div(cg, _channel_block(cg, sizes)), K, C, Ho, Wo, H, W))


cdef inline bint _channel_major(Py_ssize_t kblocks, Py_ssize_t cblocks, Py_ssize_t K,
                                Py_ssize_t C, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t H,
                                Py_ssize_t W) noexcept:
    # re-reads beyond the first: the gradient's (K x Ho x Wo an image) per
    # extra block of channels against the input's (C x H x W) per extra
    # block of filters
    return (cblocks - 1) * K * Ho * Wo < (kblocks - 1) * C * H * W


cdef inline Py_ssize_t _channel_block(Py_ssize_t cg, sizes):
    """Channels of a weight-gradient item: CB, or a group's channels rounded
    up to MR where fewer."""
    return min(<Py_ssize_t> sizes["CB"], _round_up(max(1, cg), <Py_ssize_t> sizes["MR"]))


def weight_grad_buffer_size(C, groups, dtype, isa=None):
    """Elements of one thread's workspace for the weight gradient of C input
    channels in `groups` groups (with alignment slack).

    >>> weight_grad_buffer_size(64, 1, "float32", "generic") > 36 * 64 * 64
    True
    """
    sizes = weight_grad_blocking(dtype, isa)
    mr, nr, tb = sizes["MR"], sizes["NR"], sizes["TB"]
    cb = _channel_block(C // groups, sizes)
    itemsize = 8 if _dtype_is_double(dtype) else 4
    return (FW_POINTS * (cb * tb + tb * nr + cb * nr + 2 * tb) + (16 + 24 + 9) * nr
            + ALIGN_BYTES // itemsize)


def conv2d_winograd_weight_grad(x, grad, out, workspace, Py_ssize_t pad_top,
                                Py_ssize_t pad_left, Py_ssize_t dil_h, Py_ssize_t dil_w,
                                Py_ssize_t groups, bint flip, isa, int num_threads):
    """out (K, C/groups*9), C-contiguous = the gradient of the 3x3 stride-1
    correlation (dilated by (dil_h, dil_w); flip: of the convolution) with
    respect to its weights, from x (N, C, H, W; any strides) and the output
    gradient grad (N, K, Ho, Wo; any strides), by F(3x3, 4x4) Winograd; a
    dilated layer as the sum over its phases (see conv2d_winograd).
    workspace: (>= num_threads, >= weight_grad_buffer_size(...)).

    >>> import numpy as np
    >>> x = np.arange(2 * 6 * 6, dtype=np.float64).reshape(1, 2, 6, 6)
    >>> g = np.ones((1, 1, 4, 4))
    >>> out = np.empty((1, 2 * 9))
    >>> ws = np.empty((1, weight_grad_buffer_size(2, 1, np.float64, "generic")))
    >>> conv2d_winograd_weight_grad(x, g, out, ws, 0, 0, 1, 1, 1, False, "generic", 1)
    >>> abs(float(out[0, 0]) - float(x[0, 0, :4, :4].sum())) < 1e-9  # (Winograd rounds)
    True
    """
    written = False
    for x_phase, grad_phase, top, left in _phases(x, grad, pad_top, pad_left, dil_h, dil_w):
        written |= _weight_grad_undilated(x_phase, grad_phase, out, workspace, top, left,
                                          groups, flip, isa, num_threads, written)
    if not written:
        np.asarray(out)[...] = 0


def _weight_grad_undilated(const floating[:, :, :, :] x,
                           const floating[:, :, :, :] grad,
                           floating[:, ::1] out,
                           floating[:, ::1] workspace,
                           Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t groups,
                           bint flip, isa, int num_threads, bint accumulate):
    """conv2d_winograd_weight_grad without dilation, added to out if
    accumulate; returns whether it wrote out (nothing to sum: not)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad.shape[1], Ho = grad.shape[2], Wo = grad.shape[3]
    cdef int code = isa_code(isa)
    cdef int dbl = floating is double
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide C={C} and K={K}")
    if grad.shape[0] != N or out.shape[0] != K or out.shape[1] != C // groups * 9:
        raise ValueError(f"grad {tuple(grad.shape)} and out {tuple(out.shape)} do not match x "
                         f"{(N, C, H, W)} with groups={groups} (out: (K, C/groups*9))")
    dtype = np.float64 if dbl else np.float32
    if workspace.shape[0] < num_threads or workspace.shape[1] < weight_grad_buffer_size(
            C, groups, dtype, code):
        raise ValueError(f"workspace of ({workspace.shape[0]}, {workspace.shape[1]}) elements, "
                         f"need ({num_threads}, {weight_grad_buffer_size(C, groups, dtype, code)})")
    if N == 0 or K == 0 or C == 0 or H == 0 or W == 0 or Ho == 0 or Wo == 0:
        return False
    sizes = weight_grad_blocking(dtype, code)
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef fw_geometry geo = _geometry(x, K, Ho, Wo, groups, pad_top, pad_left, sizes["MR"],
                                     itemsize)
    cdef Py_ssize_t nr = sizes["NR"], tb = sizes["TB"]
    cdef Py_ssize_t cb = _channel_block(geo.Cg, sizes)
    cdef Py_ssize_t gs_n = grad.strides[0] // itemsize, gs_k = grad.strides[1] // itemsize
    cdef Py_ssize_t gs_h = grad.strides[2] // itemsize, gs_w = grad.strides[3] // itemsize
    cdef Py_ssize_t kblocks = _ceil_div(geo.Kg, nr), cblocks = _ceil_div(geo.Cg, cb)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *g0 = &grad[0, 0, 0, 0]
    cdef floating *out0 = &out[0, 0]
    cdef Py_ssize_t item, g, kb, cblock, nk, nc
    cdef bint channel_major = _channel_major(kblocks, cblocks, K, C, Ho, Wo, H, W)
    with nogil:
        for item in prange(groups * kblocks * cblocks, schedule="dynamic",
                           num_threads=num_threads):
            g = item // (kblocks * cblocks)
            if channel_major:
                cblock = (item // kblocks) % cblocks
                kb = item % kblocks
            else:
                kb = (item // cblocks) % kblocks
                cblock = item % cblocks
            nk = geo.Kg - kb * nr if geo.Kg - kb * nr < nr else nr
            nc = geo.Cg - cblock * cb if geo.Cg - cblock * cb < cb else cb
            if floating is float:
                fw_wgrad_item_f32(code)(&geo, x0 + g * geo.Cg * geo.xs_c, g0 + g * geo.Kg * gs_k,
                                        gs_n, gs_k, gs_h, gs_w, out0 + g * geo.Kg * out.shape[1],
                                        kb * nr, nk, cblock * cb, nc, cb, tb, nr, flip,
                                        accumulate, fc_ukr_f32(code),
                                        _aligned(&workspace[threadid(), 0]))
            else:
                fw_wgrad_item_f64(code)(&geo, x0 + g * geo.Cg * geo.xs_c, g0 + g * geo.Kg * gs_k,
                                        gs_n, gs_k, gs_h, gs_w, out0 + g * geo.Kg * out.shape[1],
                                        kb * nr, nk, cblock * cb, nc, cb, tb, nr, flip,
                                        accumulate, fc_ukr_f64(code),
                                        _aligned(&workspace[threadid(), 0]))
    return True
