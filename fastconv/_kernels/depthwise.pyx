# Depthwise convolution (groups == C, K = C * multiplier) computed directly,
# without a GEMM: output channel k reads only input channel c = k // multiplier,
# so the im2col lowering degenerates into one M = 1 GEMM per channel, which is
# memory-bound. Grouped convolutions with few channels per group (ResNeXt's
# 32 groups of 4; at most GROUP_MAX_CHANNELS) run here too: an output plane
# is the sum of its group's Cg input planes, each through the same sliding
# window, where the GEMM lowerings would make one skinny product per group. Here each output row is made in vector registers: for a block
# of 32 output columns (float32; 16 in float64) every kernel tap adds
# w[r, s] * (a contiguous run of the input row) and the block is stored once.
# Zero padding is never copied: the columns where every kernel column is
# inside the input (the interior) are found once per call, the kernel rows
# valid for an output row by two comparisons, and only the border columns
# (pad_left + pad_right of them per row) take a scalar path.
#
# The plane kernels are C (_depthwise.h / _depthwise_impl.h), compiled for
# AVX-512, AVX2+FMA and the x86-64 baseline in one extension and chosen at
# import (FASTCONV_ISA=avx512|avx2|generic forces one; set_isa() for tests).
#
# Work items and determinism:
# * forward: (image, output channel); each writes its own output plane. With
#   a channel multiplier m > 1, (image, block of up to DW_FWD_BLOCK_MAX of one
#   input channel's m filters): the block's planes are made together, each
#   input vector loaded once for all of them. Grouped: (image, group, block of
#   the group's filters), each block's planes summed over the group's input
#   planes by the multi-plane kernels.
# * input gradient: (image, input channel); the item sums its `multiplier`
#   filters' contributions into its own plane of grad_x (cleared first), so
#   no two threads touch one plane. Stride 1: the gradient is the correlation
#   of the gradient planes with the reversed kernel, padded by
#   dil*(R-1) - pad, and runs through the forward kernel (gather, vectorised);
#   larger strides scatter-add tap by tap. Grouped at stride 1: (image, group,
#   block of the group's input channels), each made from the group's Kg
#   gradient planes by the forward's multi-plane kernels.
# * weight gradient: one (filter, channel of its group) plane of grad_w per
#   item, summed over all images by the item itself: no reduction between
#   threads, the same bits for any thread count.

from cython cimport floating
from cython.parallel cimport prange

import os

cdef extern from "_depthwise.h" nogil:
    ctypedef Py_ssize_t dws
    ctypedef struct dw_geom:
        dws H, W, xs_h, xs_w, Ho, Wo, R, S, sh, sw, pt, pl, dh, dw
        int flip
    int DW_ISA_PORTABLE, DW_ISA_AVX2, DW_ISA_AVX512
    int dw_cpu_level()
    void dw_fwd_f(int isa, const dw_geom *g, const float *inp, dws in_plane, dws M,
                  const float *w, dws w_plane, float bias, float *out)
    void dw_fwd_d(int isa, const dw_geom *g, const double *inp, dws in_plane, dws M,
                  const double *w, dws w_plane, double bias, double *out)
    void dw_fwd_multi_f(int isa, const dw_geom *g, const float *inp, dws in_plane, dws M,
                        dws MB, const float *w, dws w_step, dws w_plane, const float *bias,
                        float *out, dws o_step)
    void dw_fwd_multi_d(int isa, const dw_geom *g, const double *inp, dws in_plane, dws M,
                        dws MB, const double *w, dws w_step, dws w_plane, const double *bias,
                        double *out, dws o_step)
    void dw_igrad_strided_f(int isa, const dw_geom *g, const float *grad, dws g_plane,
                            dws M, const float *w, dws w_plane, float *gx)
    void dw_igrad_strided_d(int isa, const dw_geom *g, const double *grad, dws g_plane,
                            dws M, const double *w, dws w_plane, double *gx)
    void dw_wgrad_f(int isa, const dw_geom *g, const float *x, dws xs_n, const float *grad,
                    dws g_n, dws N, float *gw)
    void dw_wgrad_d(int isa, const dw_geom *g, const double *x, dws xs_n, const double *grad,
                    dws g_n, dws N, double *gw)
    void dw_fwd_panels_f(int isa, const dw_geom *g, const float *inp, dws MB, const float *w,
                         dws w_step, const float *bias, float *out, dws o_step, dws chunk)
    void dw_fwd_panels_d(int isa, const dw_geom *g, const double *inp, dws MB,
                         const double *w, dws w_step, const double *bias, double *out,
                         dws o_step, dws chunk)
    dws dw_panel_chunks_f(int isa, const dw_geom *g, dws mult)
    dws dw_panel_chunks_d(int isa, const dw_geom *g, dws mult)
    int DW_MULTI_PLANES, DW_MULTI_BLOCKS, DW_MULTI_BANDS
    int dw_multi_path_f(int isa, const dw_geom *g, dws M)
    int dw_multi_path_d(int isa, const dw_geom *g, dws M)
    int DW_FWD_OTHER, DW_FWD_TILES, DW_FWD_TILES_S2
    int dw_fwd_path_f(int isa, const dw_geom *g, dws M)
    int dw_fwd_path_d(int isa, const dw_geom *g, dws M)
    # filters of one input channel per forward item (a channel multiplier):
    # the C kernel blocks them by 8, 4, 2 (fwd_panels) or 4, 2 (fwd_multi)
    enum: DW_FWD_BLOCK_MAX
    # a multiplier from which the filters run over gathered taps (fwd_panels),
    # for kernels of at most DW_PANEL_MAX_TAPS taps
    enum: DW_PANEL_MIN_MULT
    enum: DW_PANEL_MAX_TAPS
    # channels per group up to which the fixed-size kernels take a grouped
    # convolution's planes together
    enum: DW_GROUP_MAX_PLANES

FORWARD_BLOCK_MAX = DW_FWD_BLOCK_MAX
PANEL_MIN_MULT = DW_PANEL_MIN_MULT
PANEL_MAX_TAPS = DW_PANEL_MAX_TAPS
# the most channels (and filters) per group the planner offers this kernel
# for: beyond it a GEMM runs at its full rate (see _tuning.py)
GROUP_MAX_CHANNELS = DW_GROUP_MAX_PLANES


cdef inline Py_ssize_t _blocks(Py_ssize_t n) noexcept nogil:
    """Blocks of up to DW_FWD_BLOCK_MAX planes that n planes take."""
    return (n + DW_FWD_BLOCK_MAX - 1) // DW_FWD_BLOCK_MAX


# Grouped layers over padded bands (fwd_band_multi) take all of a group's
# filters in one work item where there are at least this many (image,
# group) items to share out: the band buffer is then filled once per group,
# not once per block of DW_FWD_BLOCK_MAX filters (16 channels and filters
# per group on 14x14 maps refilled it twice).
cdef enum:
    _BAND_WHOLE_GROUP_ITEMS = 64
BAND_WHOLE_GROUP_ITEMS = _BAND_WHOLE_GROUP_ITEMS


cdef inline Py_ssize_t _group_item_filters(Py_ssize_t N, Py_ssize_t groups, Py_ssize_t kg,
                                           bint bands) noexcept nogil:
    """Filters of one group per forward work item (grouped layers)."""
    if bands and N * groups >= _BAND_WHOLE_GROUP_ITEMS:
        return max(kg, 1)
    return DW_FWD_BLOCK_MAX


def forward_items(Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, Py_ssize_t chunks=0,
                  Py_ssize_t groups=0, bint bands=False):
    """The forward pass's work items (groups: C unless given). Depthwise
    (groups == C): (image, output channel), or with a channel multiplier
    m = K/C > 1 (image, input channel, chunk of positions) where it runs
    over gathered taps in `chunks` chunks a plane (forward_panel_chunks),
    else (image, input channel, block of up to FORWARD_BLOCK_MAX of its m
    filters). Grouped (C/groups > 1 channels per group): (image, group,
    block of up to FORWARD_BLOCK_MAX of the group's filters), or over padded
    bands (`bands`: grouped_path "bands") with at least
    BAND_WHOLE_GROUP_ITEMS (image, group) pairs, (image, group)."""
    if groups == 0:
        groups = C
    if groups == 0:
        return 0
    cdef Py_ssize_t mult = K // groups
    cdef Py_ssize_t per
    if C > groups:
        per = _group_item_filters(N, groups, mult, bands)
        return N * groups * ((mult + per - 1) // per)
    if mult < 2:
        return N * K
    if chunks > 0:
        return N * C * chunks
    return N * C * _blocks(mult)


def input_grad_items(Py_ssize_t N, Py_ssize_t C, Py_ssize_t groups, Py_ssize_t stride_h,
                     Py_ssize_t stride_w):
    """The input gradient's work items: (image, input channel), or for a
    grouped convolution at stride 1 (image, group, block of up to
    FORWARD_BLOCK_MAX of the group's input channels, made together)."""
    if groups > 0 and C > groups and stride_h == 1 and stride_w == 1:
        return N * groups * _blocks(C // groups)
    return N * C


def forward_block_filters(Py_ssize_t multiplier, Py_ssize_t R, Py_ssize_t S,
                          Py_ssize_t stride_w):
    """How many filters of one input channel the forward kernel computes
    together (each input vector loaded once for all of them): blocks of up
    to DW_FWD_BLOCK_MAX where the fixed-size kernels run (square 3x3, 5x5,
    7x7, column stride 1: _depthwise_impl.h, fixed_size, for input rows of
    contiguous elements) and over gathered taps (fwd_panels: any other
    kernel of up to DW_PANEL_MAX_TAPS taps), else 1. For the planner's cost
    model."""
    fixed = R == S and R in (3, 5, 7) and stride_w == 1
    if multiplier < 2 or not fixed and R * S > DW_PANEL_MAX_TAPS:
        return 1
    return min(multiplier, DW_FWD_BLOCK_MAX)


def forward_panel_chunks(Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                         Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                         Py_ssize_t stride_h, Py_ssize_t stride_w,
                         Py_ssize_t pad_top, Py_ssize_t pad_left,
                         Py_ssize_t dil_h, Py_ssize_t dil_w,
                         Py_ssize_t multiplier, Py_ssize_t itemsize):
    """Chunks of a plane's Ho*Wo positions that the forward pass gathers for
    a channel multiplier (fwd_panels) on contiguous input rows, with the
    current instruction set and 4- or 8-byte elements (the geometry as
    conv2d_depthwise takes it); 0 where that path does not apply (a small
    multiplier where the fixed-size kernels run, fewer outputs than a
    vector, more than PANEL_MAX_TAPS taps). For tests."""
    cdef dw_geom g = _geometry(H, W, W, 1, Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left,
                               dil_h, dil_w, False)
    return (dw_panel_chunks_f(_isa, &g, multiplier) if itemsize == 4
            else dw_panel_chunks_d(_isa, &g, multiplier))


def forward_path(Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                 Py_ssize_t R, Py_ssize_t S, Py_ssize_t stride_h, Py_ssize_t stride_w,
                 Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t dil_h, Py_ssize_t dil_w,
                 Py_ssize_t itemsize):
    """Which kernel the forward pass runs on a plane of one filter per
    channel with contiguous rows, with the current instruction set and 4- or
    8-byte elements: "tiles" (the fixed sizes where rows share their input
    rows), "tiles_s2" (stride 2, dilation 1) or "other". For the tests."""
    cdef dw_geom g = _geometry(H, W, W, 1, Ho, Wo, R, S, stride_h, stride_w, pad_top,
                               pad_left, dil_h, dil_w, False)
    cdef int path = (dw_fwd_path_f(_isa, &g, 1) if itemsize == 4
                     else dw_fwd_path_d(_isa, &g, 1))
    return ("tiles" if path == DW_FWD_TILES else "tiles_s2" if path == DW_FWD_TILES_S2
            else "other")


def grouped_path(Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                 Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                 Py_ssize_t stride_h, Py_ssize_t stride_w,
                 Py_ssize_t pad_top, Py_ssize_t pad_left,
                 Py_ssize_t dil_h, Py_ssize_t dil_w,
                 bint input_grad, Py_ssize_t planes, Py_ssize_t itemsize):
    """How the kernels make a grouped convolution's planes from `planes`
    input planes each (the forward pass: channels per group; the input
    gradient at stride 1: filters per group), on contiguous input rows, with
    the current instruction set and 4- or 8-byte elements (geometry as
    conv2d_depthwise takes it): "blocks", the fixed-size kernels' blocks of
    planes (3x3, 5x5, 7x7, column stride 1, rows at least a vector wide);
    "bands", blocks of filters over padded bands (fwd_band_multi: the other
    kernels up to DW_BAND_MAX_S wide whose rows fit the band buffer); or
    "planes", plane by plane (the generic kernels; the strided input
    gradient). For the planner's cost model."""
    cdef dw_geom g
    cdef int path
    if input_grad:
        if stride_h != 1 or stride_w != 1:
            return "planes"
        g = _geometry(Ho, Wo, Wo, 1, H, W, R, S, 1, 1, dil_h * (R - 1) - pad_top,
                      dil_w * (S - 1) - pad_left, dil_h, dil_w, True)
    else:
        g = _geometry(H, W, W, 1, Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left,
                      dil_h, dil_w, False)
    path = (dw_multi_path_f(_isa, &g, planes) if itemsize == 4
            else dw_multi_path_d(_isa, &g, planes))
    return "blocks" if path == DW_MULTI_BLOCKS else "bands" if path == DW_MULTI_BANDS else "planes"


_ISA_NAMES = {"generic": DW_ISA_PORTABLE, "avx2": DW_ISA_AVX2, "avx512": DW_ISA_AVX512}
cdef int _cpu_level = dw_cpu_level()
cdef int _isa = _cpu_level


def available_isas():
    """The instruction sets this CPU can run, worst first."""
    return [name for name, level in sorted(_ISA_NAMES.items(), key=lambda kv: kv[1])
            if level <= _cpu_level]


def get_isa():
    """The instruction set the kernels use ('avx512', 'avx2' or 'generic')."""
    return {level: name for name, level in _ISA_NAMES.items()}[_isa]


def set_isa(name):
    """Use the kernels compiled for `name` (one of available_isas()); returns
    the previous name. For tests and benchmarks; not thread-safe."""
    global _isa
    if name not in _ISA_NAMES or _ISA_NAMES[name] > _cpu_level:
        raise ValueError(f"instruction set {name!r} is not available here: "
                         f"{available_isas()}")
    previous = get_isa()
    _isa = _ISA_NAMES[name]
    return previous


_forced = os.environ.get("FASTCONV_ISA", "").strip().lower()
if _forced in _ISA_NAMES and _ISA_NAMES[_forced] <= _cpu_level:
    set_isa(_forced)


cdef inline dw_geom _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t xs_h, Py_ssize_t xs_w,
                              Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t R, Py_ssize_t S,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                              Py_ssize_t dh, Py_ssize_t dw, bint flip) noexcept:
    cdef dw_geom g
    g.H = H
    g.W = W
    g.xs_h = xs_h
    g.xs_w = xs_w
    g.Ho = Ho
    g.Wo = Wo
    g.R = R
    g.S = S
    g.sh = sh
    g.sw = sw
    g.pt = pt
    g.pl = pl
    g.dh = dh
    g.dw = dw
    g.flip = flip
    return g


def _check(Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, Py_ssize_t H, Py_ssize_t W,
           Py_ssize_t R, Py_ssize_t S, Py_ssize_t cols, Py_ssize_t taps, Py_ssize_t Wo,
           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw):
    """Cheap consistency checks of the caller's arrays (the planner has
    validated the convolution itself): whatever is passed, the kernels must
    not read or write outside the arrays."""
    if min(R, S, Wo, sh, sw, dh, dw) < 1:
        raise ValueError(f"R, S, Wo, strides and dilations must be >= 1, got R={R}, S={S}, "
                         f"Wo={Wo}, stride=({sh}, {sw}), dilation=({dh}, {dw})")
    if taps == 0 or taps % (R * S):
        raise ValueError(f"weight must be (K, C/groups*R*S), a multiple of R*S = {R * S} "
                         f"columns, got {taps}")
    cdef Py_ssize_t cg = taps // (R * S)
    if C % cg:
        raise ValueError(f"C = {C} channels is not a multiple of C/groups = {cg} "
                         f"(weight's {taps} columns over R*S = {R * S})")
    if C == 0 and K != 0 or C > 0 and K % (C // cg):
        raise ValueError(f"K = {K} filters is not a multiple of groups = {C // cg}")
    if cols % Wo:
        raise ValueError(f"output has {cols} columns per plane, not a multiple of Wo = {Wo}")


def conv2d_depthwise(const floating[:, :, :, :] x,
                     const floating[:, ::1] weight,
                     const floating[::1] bias,
                     floating[:, :, ::1] out,
                     Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                     Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t pad_top, Py_ssize_t pad_left,
                     Py_ssize_t dil_h, Py_ssize_t dil_w,
                     bint flip, int num_threads):
    """out[n, k] = bias[k] + (x[n, k // m] correlated with weight[k]), the
    depthwise convolution (groups == C, K = C*m for a channel multiplier
    m >= 1), without GEMM; or a grouped convolution with Cg > 1 channels
    per group: out[n, k] = bias[k] + sum over the Cg channels c of k's
    group of x[n, c] correlated with weight[k]'s plane of c.

    x: (N, C, H, W), any element strides (negative, zero, non-contiguous:
    read in place, never copied). weight: (K, Cg*R*S) C-contiguous (the
    (K, Cg, R, S) filters reshaped; Cg = 1: depthwise). bias: (K,), or length 0 for none.
    out: (N, K, Ho*Wo) C-contiguous, fully written (need not be initialised);
    Ho = out.shape[2] // Wo. Padding is pad_top/pad_left (bottom/right
    follow from Ho, Wo). flip: mathematical convolution (kernel reversed).
    Work items (forward_items) on num_threads OpenMP threads; the result
    does not depend on the thread count. Rows of x that are contiguous with
    stride_w == 1 take the vectorised path; anything else a strided one
    (correct, slower).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], taps = weight.shape[1]
    cdef Py_ssize_t cols = out.shape[2]
    _check(N, C, K, H, W, R, S, cols, taps, Wo, stride_h, stride_w, dil_h, dil_w)
    if out.shape[0] != N or out.shape[1] != K:
        raise ValueError(f"out must be (N, K, Ho*Wo) = ({N}, {K}, ...), got {tuple(out.shape)[:3]}")
    if bias.shape[0] not in (0, K):
        raise ValueError(f"bias must have K = {K} entries or none, got {bias.shape[0]}")
    if N == 0 or K == 0 or cols == 0:
        return
    cdef Py_ssize_t Ho = cols // Wo, mult = K // C
    cdef Py_ssize_t rs = R * S, cg = taps // rs, groups = C // cg, kg = K // groups
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef dw_geom g = _geometry(H, W, x.strides[2] // itemsize, x.strides[3] // itemsize,
                               Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left,
                               dil_h, dil_w, flip)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *w0 = &weight[0, 0]
    cdef const floating *b0 = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *out0 = &out[0, 0, 0]
    cdef int isa = _isa
    cdef Py_ssize_t item, n, k, c, grp, blocks, first, count, per, chunks = 0
    cdef int path
    cdef floating b

    if cg > 1:
        # grouped: an item is up to DW_FWD_BLOCK_MAX filters of one group
        # (or all of them over padded bands: _group_item_filters), each
        # input vector of the group's cg planes loaded once for them
        if floating is float:
            path = dw_multi_path_f(isa, &g, cg)
        else:
            path = dw_multi_path_d(isa, &g, cg)
        per = _group_item_filters(N, groups, kg, path == DW_MULTI_BANDS)
        blocks = (kg + per - 1) // per
        with nogil:
            for item in prange(N * groups * blocks, schedule="static",
                               num_threads=num_threads):
                n = item // (groups * blocks)
                grp = (item // blocks) % groups
                first = grp * kg + (item % blocks) * per
                count = min(per, (grp + 1) * kg - first)
                if floating is float:
                    dw_fwd_multi_f(isa, &g, x0 + n * xs_n + grp * cg * xs_c, xs_c, cg, count,
                                   w0 + first * taps, taps, rs,
                                   b0 + first if b0 != NULL else NULL,
                                   out0 + (n * K + first) * cols, cols)
                else:
                    dw_fwd_multi_d(isa, &g, x0 + n * xs_n + grp * cg * xs_c, xs_c, cg, count,
                                   w0 + first * taps, taps, rs,
                                   b0 + first if b0 != NULL else NULL,
                                   out0 + (n * K + first) * cols, cols)
        return

    if mult > 1:
        chunks = (dw_panel_chunks_f(isa, &g, mult) if floating is float
                  else dw_panel_chunks_d(isa, &g, mult))
    if chunks > 0:
        # a multiplier over gathered taps: an item is a chunk of one input
        # plane's positions, gathered once for all of its filters
        with nogil:
            for item in prange(N * C * chunks, schedule="static", num_threads=num_threads):
                n = item // (C * chunks)
                c = (item // chunks) % C
                if floating is float:
                    dw_fwd_panels_f(isa, &g, x0 + n * xs_n + c * xs_c, mult, w0 + c * mult * taps,
                                    taps, b0 + c * mult if b0 != NULL else NULL,
                                    out0 + (n * K + c * mult) * cols, cols, item % chunks)
                else:
                    dw_fwd_panels_d(isa, &g, x0 + n * xs_n + c * xs_c, mult, w0 + c * mult * taps,
                                    taps, b0 + c * mult if b0 != NULL else NULL,
                                    out0 + (n * K + c * mult) * cols, cols, item % chunks)
        return

    if mult > 1:
        # a channel multiplier: an item is up to DW_FWD_BLOCK_MAX filters of one
        # input channel, which the kernel computes together, each input
        # vector loaded once for all of them
        blocks = _blocks(mult)
        with nogil:
            for item in prange(N * C * blocks, schedule="static", num_threads=num_threads):
                n = item // (C * blocks)
                c = (item // blocks) % C
                first = c * mult + (item % blocks) * DW_FWD_BLOCK_MAX
                count = min(DW_FWD_BLOCK_MAX, (c + 1) * mult - first)
                if floating is float:
                    dw_fwd_multi_f(isa, &g, x0 + n * xs_n + c * xs_c, 0, 1, count,
                                   w0 + first * taps, taps, 0,
                                   b0 + first if b0 != NULL else NULL,
                                   out0 + (n * K + first) * cols, cols)
                else:
                    dw_fwd_multi_d(isa, &g, x0 + n * xs_n + c * xs_c, 0, 1, count,
                                   w0 + first * taps, taps, 0,
                                   b0 + first if b0 != NULL else NULL,
                                   out0 + (n * K + first) * cols, cols)
        return

    with nogil:
        # static: each thread streams one contiguous half of the planes
        for item in prange(N * K, schedule="static", num_threads=num_threads):
            n = item // K
            k = item - n * K
            b = b0[k] if b0 != NULL else 0
            if floating is float:
                dw_fwd_f(isa, &g, x0 + n * xs_n + k * xs_c, 0, 1, w0 + k * taps, 0, b,
                         out0 + item * cols)
            else:
                dw_fwd_d(isa, &g, x0 + n * xs_n + k * xs_c, 0, 1, w0 + k * taps, 0, b,
                         out0 + item * cols)


def conv2d_depthwise_input_grad(const floating[:, :, ::1] grad,
                                const floating[:, ::1] weight,
                                floating[:, :, :, ::1] grad_x,
                                Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_top, Py_ssize_t pad_left,
                                Py_ssize_t dil_h, Py_ssize_t dil_w,
                                bint flip, int num_threads):
    """grad_x (N, C, H, W) = the input gradient of the depthwise convolution
    (as conv2d_depthwise, same geometry arguments; grouped too) for output
    gradient grad (N, K, Ho*Wo) C-contiguous, weight (K, Cg*R*S)
    C-contiguous.

    grad_x: C-contiguous, fully written by the kernel (need not be
    initialised). Work items (input_grad_items): each sums the
    contributions of its channels' group's filters into its own planes, so
    no two threads touch one plane and the result is the same for any
    thread count.
    """
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], taps = weight.shape[1]
    cdef Py_ssize_t cols = grad.shape[2]
    _check(N, C, K, H, W, R, S, cols, taps, Wo, stride_h, stride_w, dil_h, dil_w)
    if grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError(f"grad must be (N, K, Ho*Wo) = ({N}, {K}, ...), got {tuple(grad.shape)[:3]}")
    if N == 0 or C == 0 or H * W == 0:
        return
    cdef Py_ssize_t Ho = cols // Wo, plane = H * W
    cdef Py_ssize_t rs = R * S, cg = taps // rs, groups = C // cg, kg = K // groups
    cdef bint gather = stride_h == 1 and stride_w == 1
    cdef dw_geom g
    if gather:
        # grad_x[ih, iw] = sum_{r,s} w[R-1-r, S-1-s] * grad[ih + r*dh - pt',
        # iw + s*dw - pl'] with pt' = dh*(R-1) - pad_top (negative when the
        # padding exceeds the kernel's span; the intervals handle it)
        g = _geometry(Ho, Wo, Wo, 1, H, W, R, S, 1, 1, dil_h * (R - 1) - pad_top,
                      dil_w * (S - 1) - pad_left, dil_h, dil_w, not flip)
    else:
        g = _geometry(H, W, W, 1, Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left,
                      dil_h, dil_w, flip)
    cdef const floating *g0 = &grad[0, 0, 0]
    cdef const floating *w0 = &weight[0, 0]
    cdef floating *gx0 = &grad_x[0, 0, 0, 0]
    cdef int isa = _isa
    cdef Py_ssize_t item, n, c, grp, blocks, first, count

    if cg > 1 and gather:
        # grouped, stride 1: an item is up to DW_FWD_BLOCK_MAX input channels
        # of one group, made together from the group's kg gradient planes
        # (the forward kernel with the roles of filters and planes swapped:
        # input channel j's "filter" for gradient plane k is weight[k]'s
        # plane j)
        blocks = _blocks(cg)
        with nogil:
            for item in prange(N * groups * blocks, schedule="static",
                               num_threads=num_threads):
                n = item // (groups * blocks)
                grp = (item // blocks) % groups
                first = (item % blocks) * DW_FWD_BLOCK_MAX
                count = min(DW_FWD_BLOCK_MAX, cg - first)
                if floating is float:
                    dw_fwd_multi_f(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg, count,
                                   w0 + grp * kg * taps + first * rs, rs, taps, NULL,
                                   gx0 + (n * C + grp * cg + first) * plane, plane)
                else:
                    dw_fwd_multi_d(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg, count,
                                   w0 + grp * kg * taps + first * rs, rs, taps, NULL,
                                   gx0 + (n * C + grp * cg + first) * plane, plane)
        return

    with nogil:
        for item in prange(N * C, schedule="static", num_threads=num_threads):
            n = item // C
            c = item - n * C
            grp = c // cg
            # the kg filters of c's group, each at c's plane
            if floating is float:
                if gather:
                    dw_fwd_f(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg,
                             w0 + grp * kg * taps + (c - grp * cg) * rs, taps, 0,
                             gx0 + item * plane)
                else:
                    dw_igrad_strided_f(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg,
                                       w0 + grp * kg * taps + (c - grp * cg) * rs, taps,
                                       gx0 + item * plane)
            else:
                if gather:
                    dw_fwd_d(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg,
                             w0 + grp * kg * taps + (c - grp * cg) * rs, taps, 0,
                             gx0 + item * plane)
                else:
                    dw_igrad_strided_d(isa, &g, g0 + (n * K + grp * kg) * cols, cols, kg,
                                       w0 + grp * kg * taps + (c - grp * cg) * rs, taps,
                                       gx0 + item * plane)


def conv2d_depthwise_weight_grad(const floating[:, :, :, :] x,
                                 const floating[:, :, ::1] grad,
                                 floating[:, ::1] grad_w,
                                 Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                                 Py_ssize_t stride_h, Py_ssize_t stride_w,
                                 Py_ssize_t pad_top, Py_ssize_t pad_left,
                                 Py_ssize_t dil_h, Py_ssize_t dil_w,
                                 bint flip, int num_threads):
    """grad_w (K, Cg*R*S) = the weight gradient of the depthwise convolution
    (as conv2d_depthwise, same geometry arguments; grouped too) for input x
    (N, C, H, W; any strides) and output gradient grad (N, K, Ho*Wo)
    C-contiguous.

    grad_w: C-contiguous, fully written by the kernel (need not be zeroed).
    Work items are (filter, channel of its group) planes of grad_w: each sums
    over all images itself, so there is no reduction between threads and
    the bits are the same for any thread count (a layer with fewer such
    planes than threads leaves threads idle).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_w.shape[0], taps = grad_w.shape[1]
    cdef Py_ssize_t cols = grad.shape[2]
    _check(N, C, K, H, W, R, S, cols, taps, Wo, stride_h, stride_w, dil_h, dil_w)
    if grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError(f"grad must be (N, K, Ho*Wo) = ({N}, {K}, ...), got {tuple(grad.shape)[:3]}")
    if K == 0:
        return
    if N == 0 or cols == 0:
        grad_w[:, :] = 0
        return
    cdef Py_ssize_t Ho = cols // Wo
    cdef Py_ssize_t rs = R * S, cg = taps // rs, kg = K // (C // cg)
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef dw_geom g = _geometry(H, W, x.strides[2] // itemsize, x.strides[3] // itemsize,
                               Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left,
                               dil_h, dil_w, flip)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *g0 = &grad[0, 0, 0]
    cdef floating *gw0 = &grad_w[0, 0]
    cdef int isa = _isa
    cdef Py_ssize_t item, k, c

    with nogil:
        # item = k*cg + j: filter k's plane j, which meets input channel
        # (k // kg)*cg + j
        for item in prange(K * cg, schedule="static", num_threads=num_threads):
            k = item // cg
            c = (k // kg) * cg + (item - k * cg)
            if floating is float:
                dw_wgrad_f(isa, &g, x0 + c * xs_c, xs_n, g0 + k * cols, K * cols,
                           N, gw0 + item * rs)
            else:
                dw_wgrad_d(isa, &g, x0 + c * xs_c, xs_n, g0 + k * cols, K * cols,
                           N, gw0 + item * rs)
