/* Direct depthwise convolution: the C kernels behind depthwise.pyx.
 *
 * One call handles one channel plane (the Cython side runs the planes in an
 * OpenMP prange). The code is written once, in _depthwise_impl.h, over GCC
 * vector extensions of 64, 32 and 16 bytes, and included twice (float,
 * double) for each instruction set: AVX-512 (64-byte vectors), AVX2+FMA
 * (32) and the baseline (16: SSE2 on x86-64), the first two under
 * `#pragma GCC target`, and dispatched at run time from
 * __builtin_cpu_supports: the extension is built without -march and runs on
 * any x86-64. On other architectures only the portable version exists.
 *
 * Zero padding is never materialised: the valid range of output columns of
 * every kernel column (and of kernel rows for every output row) is computed
 * once, as the row table of _index_map.pxd does. 3x3, 5x5 and 7x7 kernels
 * have fixed-size kernels (_depthwise_fixed.h) for the rows where every
 * kernel row is inside the input; with AVX-512/AVX2 they also do the border
 * columns of those rows, as vector blocks whose lanes in the padding are
 * masked off the loads; with AVX-512, rows with no column padding and a
 * channel multiplier run "compact": vectors across the ends of rows.
 * Everything else (other sizes, strided or
 * non-contiguous rows, top and bottom rows, the portable build's border
 * columns) takes the generic loops of _depthwise_impl.h.
 *
 * A channel multiplier of 8 or more (paper_mnist's first layer: 1 channel,
 * 32 filters), or a smaller one where those kernels run slower (see
 * panel_chunks), takes none of those: its plane is gathered in chunks, tap by
 * tap, once for all of its filters, and blocks of 8 filters run over the
 * chunk as a small GEMM (fwd_panels, any kernel of up to 128 taps, any
 * stride, dilation and padding). Against the fixed-size and generic
 * kernels, one thread, float32, AVX-512, one process alternating the two
 * builds: paper_mnist (16 images) 0.84x the time, 3x3 with padding 0.76x,
 * 5x5 0.68x, stride 2 0.29x.
 */
#ifndef FASTCONV_DEPTHWISE_H
#define FASTCONV_DEPTHWISE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

typedef ptrdiff_t dws;

/* Geometry of one plane-to-plane depthwise correlation:
 *   out[oh, ow] = bias + sum_{r, s} wt(r, s) * in[oh*sh + r*dh - pt, ow*sw + s*dw - pl]
 * (zero outside the H x W input), wt(r, s) = w[r*S + s], or w[(R-1-r)*S + S-1-s]
 * with flip. The input has element strides xs_h, xs_w (any sign, zero too);
 * the output is contiguous, Ho x Wo. */
typedef struct {
    dws H, W, xs_h, xs_w;
    dws Ho, Wo;
    dws R, S, sh, sw, pt, pl, dh, dw;
    int flip;
} dw_geom;

/* ISA levels, best last */
enum { DW_ISA_PORTABLE = 0, DW_ISA_AVX2 = 1, DW_ISA_AVX512 = 2 };

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DW_X86 1
#else
#define DW_X86 0
#endif

#define DW_INLINE static inline __attribute__((always_inline))

static inline int dw_cpu_level(void)
{
#if DW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return DW_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return DW_ISA_AVX2;
#endif
    return DW_ISA_PORTABLE;
}

/* smallest o >= 0 with o*stride + shift >= 0, capped at limit */
DW_INLINE dws dw_first(dws shift, dws stride, dws limit)
{
    dws o = 0;
    if (shift < 0)    /* stride 1 is the rule: no division for it */
        o = stride == 1 ? -shift : (-shift + stride - 1) / stride;
    return o < limit ? o : limit;
}

/* smallest o >= 0 with o*stride + shift >= size, capped at limit */
DW_INLINE dws dw_end(dws shift, dws stride, dws size, dws limit)
{
    dws o = 0;
    if (size - shift > 0)
        o = stride == 1 ? size - shift : (size - shift + stride - 1) / stride;
    return o < limit ? o : limit;
}

/* Interior output columns [*A, *B): every kernel column inside the input.
 * Kernel column s is valid on [first(s*dw - pl), end(s*dw - pl)): the first
 * interval starts last and the last one ends first. */
DW_INLINE void dw_interior_columns(const dw_geom *g, dws *A, dws *B)
{
    *A = dw_first(-g->pl, g->sw, g->Wo);
    *B = dw_end((g->S - 1) * g->dw - g->pl, g->sw, g->W, g->Wo);
    if (*B < *A)
        *B = *A;
}

/* Interior output rows [*lo, *hi): every kernel row inside the input
 * (empty when *hi <= *lo) */
DW_INLINE void dw_interior_rows(const dw_geom *g, dws *lo, dws *hi)
{
    *lo = dw_first(-g->pt, g->sh, g->Ho);
    *hi = dw_end((g->R - 1) * g->dh - g->pt, g->sh, g->H, g->Ho);
}

/* (*row, *col) moved `step` positions along rows of Wo columns (the compact
 * rows of _depthwise_fixed.h: step <= Wo, so one row end at most) */
DW_INLINE void dw_step_position(dws *row, dws *col, dws step, dws Wo)
{
    *col += step;
    if (*col >= Wo) {
        *col -= Wo;
        (*row)++;
    }
}

/* Filters of one input channel the forward kernel computes together at most
 * (a channel multiplier's blocks of 8, 4, 2 and 1 over gathered taps:
 * _depthwise_impl.h, fwd_panels; the fixed-size kernels' fwd_multi takes
 * blocks of 4 and 2); depthwise.pyx and the planner read it from here. */
#define DW_FWD_BLOCK_MAX 8

/* Input planes per output plane (a grouped convolution's channels per
 * group) up to which the fixed-size multi-plane kernels run: their weights
 * (4 filters x planes x taps) are copied to the thread's stack, 25 KB for
 * 7x7 in float64. More planes go plane by plane through the generic
 * kernels (correct, slower); the planner does not offer the lowering
 * there (depthwise.pyx, GROUP_MAX_CHANNELS). */
#define DW_GROUP_MAX_PLANES 16

/* which kernel fwd runs on a plane (_depthwise_impl.h, fwd_path) */
enum { DW_FWD_OTHER = 0, DW_FWD_TILES = 1, DW_FWD_TILES_S2 = 2 };

/* how fwd_multi makes blocks of planes (_depthwise_impl.h, multi_path) */
enum { DW_MULTI_PLANES = 0, DW_MULTI_BLOCKS = 1, DW_MULTI_BANDS = 2 };

/* A channel multiplier of at least DW_PANEL_MIN_MULT filters (of 2 where
 * the fixed-size kernels do not run, of 4 where they meet column padding:
 * _depthwise_impl.h, panel_chunks) runs over gathered taps (fwd_panels):
 * the gather costs a store
 * per tap and output vector, shared by the channel's filters. Chunks of
 * positions hold at most DW_PANEL_BYTES of taps, a buffer on the thread's
 * stack that stays in L1 beside the output's lines. */
#define DW_PANEL_MIN_MULT 8
#define DW_PANEL_BYTES 16384
#define DW_PANEL_MAX_TAPS 128

/* fwd_band: the buffer of padded input rows on the thread's stack (a band of
 * output rows takes as many as fit), and the widest kernel it takes */
#define DW_BAND_BYTES 32768
#define DW_BAND_MAX_S 128

/* A row of zeros that the fixed-size kernels' tiles read for input rows in
 * the padding (_depthwise_fixed.h, fwd_tiles): only lanes of input columns
 * [0, W) are loaded, so planes up to this many bytes wide take them. */
#define DW_ZERO_ROW_BYTES 8192
static const double dw_zero_row[DW_ZERO_ROW_BYTES / sizeof(double)] __attribute__((aligned(64)));

/* Unaligned vector load and store (GNU statement expressions; memcpy compiles
 * to one vmovups / movups). */
#define DW_LOAD(TYPE, p) ({ TYPE v_; memcpy(&v_, (p), sizeof v_); v_; })
#define DW_STORE(p, v) do { __typeof__(v) v_ = (v); memcpy((p), &v_, sizeof v_); } while (0)

/* Lane i_ of the result: element IDX (an expression of i_, known at compile
 * time) of the concatenation (a, b) of two L-lane vectors. GCC: one
 * two-source permute (__builtin_shuffle; vpermt2ps / valignd with
 * AVX-512); other compilers (Clang spells it __builtin_shufflevector, with
 * the indices as separate constants), or with DW_PORTABLE_SHUFFLE defined
 * (how the tests build it once): lane by lane. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(DW_PORTABLE_SHUFFLE)
#define DW_SHUFFLE2(TYPE, ITYPE, L, a, b, IDX) ({                              \
    ITYPE ix_;                                                                 \
    for (int i_ = 0; i_ < (L); i_++)                                           \
        ix_[i_] = (IDX);                                                       \
    __builtin_shuffle((a), (b), ix_); })
#else
#define DW_SHUFFLE2(TYPE, ITYPE, L, a, b, IDX) ({                              \
    const TYPE sa_ = (a), sb_ = (b);                                           \
    TYPE r_;                                                                   \
    for (int i_ = 0; i_ < (L); i_++) {                                         \
        const int e_ = (IDX);                                                  \
        r_[i_] = e_ < (L) ? sa_[e_] : sb_[e_ - (L)];                           \
    }                                                                          \
    r_; })
#endif

/* L pairs of elements from p (2L elements), the first of each pair to d0
 * and the second to d1: two vector loads and two two-source permutes
 * (vpermt2ps with AVX-512). The loop of pairs the compiler vectorised did
 * one vector of pairs and the rest (12 of EfficientNet's 28) one at a time:
 * the fill was half of that 5x5/2 layer's time (perf). */
#define DW_SPLIT_PAIRS(TYPE, ITYPE, L, p, d0, d1) do {                         \
    const TYPE lo_ = DW_LOAD(TYPE, (p)), hi_ = DW_LOAD(TYPE, (p) + (L));        \
    DW_STORE((d0), DW_SHUFFLE2(TYPE, ITYPE, L, lo_, hi_, 2 * i_));             \
    DW_STORE((d1), DW_SHUFFLE2(TYPE, ITYPE, L, lo_, hi_, 2 * i_ + 1));         \
} while (0)

/* Kernel columns whose valid output-column interval is cached per call; wider
 * kernels compute it where needed (a division per use). */
#define DW_MAX_S 32

/* Vector types by size; an instance of the kernels uses its ISA's native
 * width (VT) and, for narrow rows, half and quarter widths (HT, QT) where
 * they are at least 16 bytes. (A 64-byte vector in an AVX2 or SSE2 function
 * is not split into registers but goes through the stack: measured 8x slower
 * than native widths, 40.7 ms against 4.9 ms per mobilenet_dw_3x3 forward.) */
typedef float dw_f64 __attribute__((vector_size(64)));
typedef float dw_f32 __attribute__((vector_size(32)));
typedef float dw_f16 __attribute__((vector_size(16)));
typedef int32_t dw_fi64 __attribute__((vector_size(64)));
typedef int32_t dw_fi32 __attribute__((vector_size(32)));
typedef int32_t dw_fi16 __attribute__((vector_size(16)));
typedef double dw_d64 __attribute__((vector_size(64)));
typedef double dw_d32 __attribute__((vector_size(32)));
typedef double dw_d16 __attribute__((vector_size(16)));
typedef int64_t dw_di64 __attribute__((vector_size(64)));
typedef int64_t dw_di32 __attribute__((vector_size(32)));
typedef int64_t dw_di16 __attribute__((vector_size(16)));
/* masks keeping the last `rem` of L lanes: L elements loaded from
 * mid - L + rem (16 zeros, then 16 all-ones) */
static const int32_t dw_f_masks[32] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
static const int64_t dw_d_masks[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1};

/* argument lists of the entry points, by name and element type */
#define DW_ARGS_fwd(T) const dw_geom *g, const T *in, dws in_plane, dws M, \
                       const T *w, dws w_plane, T bias, T *out
#define DW_PASS_fwd g, in, in_plane, M, w, w_plane, bias, out
#define DW_ARGS_fwd_multi(T) const dw_geom *g, const T *in, dws in_plane, dws M, dws MB, \
                             const T *w, dws w_step, dws w_plane, const T *bias, T *out, \
                             dws o_step
#define DW_PASS_fwd_multi g, in, in_plane, M, MB, w, w_step, w_plane, bias, out, o_step
#define DW_ARGS_fwd_panels(T) const dw_geom *g, const T *in, dws MB, const T *w, dws w_step, \
                              const T *bias, T *out, dws o_step, dws chunk
#define DW_PASS_fwd_panels g, in, MB, w, w_step, bias, out, o_step, chunk
#define DW_ARGS_igrad_strided(T) const dw_geom *g, const T *grad, dws g_plane, dws M, \
                                 const T *w, dws w_plane, T *gx
#define DW_PASS_igrad_strided g, grad, g_plane, M, w, w_plane, gx
#define DW_ARGS_wgrad(T) const dw_geom *g, const T *x, dws xs_n, const T *grad, dws g_n, \
                         dws N, T *gw
#define DW_PASS_wgrad g, x, xs_n, grad, g_n, N, gw

/* ---- portable: SSE2 on x86-64 (16-byte vectors), whatever the target is elsewhere ---- */
#define T float
#define VT dw_f16
#define IVT dw_fi16
#define VL 4
#define MASKS_MID (dw_f_masks + 16)
#define NM(name) dw_##name##_portable_f
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST

#define T double
#define VT dw_d16
#define IVT dw_di16
#define VL 2
#define MASKS_MID (dw_d_masks + 8)
#define NM(name) dw_##name##_portable_d
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST

#if DW_X86
/* ---- AVX2 + FMA: 32-byte vectors, 16-byte halves ---- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define T float
#define IT int32_t
#define VT dw_f32
#define IVT dw_fi32
#define VL 8
#define DW_MLOAD(p, cond) ((VT)_mm256_maskload_ps((p), (__m256i)(cond)))
#define HT dw_f16
#define IHT dw_fi16
#define HL 4
#define MASKS_MID (dw_f_masks + 16)
#define NM(name) dw_##name##_avx2_f
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef HT
#undef IHT
#undef HL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST

#define T double
#define IT int64_t
#define VT dw_d32
#define IVT dw_di32
#define VL 4
#define DW_MLOAD(p, cond) ((VT)_mm256_maskload_pd((p), (__m256i)(cond)))
#define HT dw_d16
#define IHT dw_di16
#define HL 2
#define MASKS_MID (dw_d_masks + 8)
#define NM(name) dw_##name##_avx2_d
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef HT
#undef IHT
#undef HL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST
#pragma GCC pop_options

/* ---- AVX-512: 64-byte vectors, 32- and 16-byte for narrow rows ---- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define T float
#define IT int32_t
#define VT dw_f64
#define IVT dw_fi64
#define VL 16
#define DW_MLOAD(p, cond) ((VT)_mm512_maskz_loadu_ps( \
    _mm512_test_epi32_mask((__m512i)(cond), (__m512i)(cond)), (p)))
/* v with the lanes where cond is set loaded from p (compact rows,
 * _depthwise_fixed.h; AVX2's maskload and blend cost what they saved:
 * paper_mnist 1.016x the whole rows' time) */
#define DW_MERGE_LOAD(v, p, cond) ((VT)_mm512_mask_loadu_ps((__m512)(v), \
    _mm512_test_epi32_mask((__m512i)(cond), (__m512i)(cond)), (p)))
#define DW_STORE_FIRST(p, v, n) _mm512_mask_storeu_ps((p), \
    (__mmask16)((1u << (n)) - 1), (__m512)(v))
#define HT dw_f32
#define IHT dw_fi32
#define HL 8
#define QT dw_f16
#define IQT dw_fi16
#define QL 4
#define MASKS_MID (dw_f_masks + 16)
#define NM(name) dw_##name##_avx512_f
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef HT
#undef IHT
#undef HL
#undef QT
#undef IQT
#undef QL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST

#define T double
#define IT int64_t
#define VT dw_d64
#define IVT dw_di64
#define VL 8
#define DW_MLOAD(p, cond) ((VT)_mm512_maskz_loadu_pd( \
    _mm512_test_epi64_mask((__m512i)(cond), (__m512i)(cond)), (p)))
#define DW_MERGE_LOAD(v, p, cond) ((VT)_mm512_mask_loadu_pd((__m512d)(v), \
    _mm512_test_epi64_mask((__m512i)(cond), (__m512i)(cond)), (p)))
#define DW_STORE_FIRST(p, v, n) _mm512_mask_storeu_pd((p), \
    (__mmask8)((1u << (n)) - 1), (__m512d)(v))
#define HT dw_d32
#define IHT dw_di32
#define HL 4
#define QT dw_d16
#define IQT dw_di16
#define QL 2
#define MASKS_MID (dw_d_masks + 8)
#define NM(name) dw_##name##_avx512_d
#include "_depthwise_impl.h"
#undef T
#undef VT
#undef IVT
#undef VL
#undef HT
#undef IHT
#undef HL
#undef QT
#undef IQT
#undef QL
#undef MASKS_MID
#undef NM
#undef IT
#undef DW_MLOAD
#undef DW_MERGE_LOAD
#undef DW_STORE_FIRST
#pragma GCC pop_options

#define DW_DISPATCH(name, sfx, T)                                              \
    static void dw_##name##_##sfx(int isa, DW_ARGS_##name(T))                  \
    {                                                                          \
        if (isa >= DW_ISA_AVX512)                                              \
            dw_##name##_avx512_##sfx(DW_PASS_##name);                          \
        else if (isa >= DW_ISA_AVX2)                                           \
            dw_##name##_avx2_##sfx(DW_PASS_##name);                            \
        else                                                                   \
            dw_##name##_portable_##sfx(DW_PASS_##name);                        \
    }
#define DW_DISPATCH_LEN(sfx, T)                                                \
    static dws dw_panel_chunks_##sfx(int isa, const dw_geom *g, dws mult)      \
    {                                                                          \
        return isa >= DW_ISA_AVX512 ? dw_panel_chunks_avx512_##sfx(g, mult)    \
             : isa >= DW_ISA_AVX2 ? dw_panel_chunks_avx2_##sfx(g, mult)        \
             : dw_panel_chunks_portable_##sfx(g, mult);                        \
    }
#define DW_DISPATCH_PATH(name, sfx)                                            \
    static int dw_##name##_##sfx(int isa, const dw_geom *g, dws M)             \
    {                                                                          \
        return isa >= DW_ISA_AVX512 ? dw_##name##_avx512_##sfx(g, M)           \
             : isa >= DW_ISA_AVX2 ? dw_##name##_avx2_##sfx(g, M)               \
             : dw_##name##_portable_##sfx(g, M);                               \
    }
#else
#define DW_DISPATCH(name, sfx, T)                                              \
    static void dw_##name##_##sfx(int isa, DW_ARGS_##name(T))                  \
    { (void)isa; dw_##name##_portable_##sfx(DW_PASS_##name); }
#define DW_DISPATCH_LEN(sfx, T)                                                \
    static dws dw_panel_chunks_##sfx(int isa, const dw_geom *g, dws mult)      \
    { (void)isa; return dw_panel_chunks_portable_##sfx(g, mult); }
#define DW_DISPATCH_PATH(name, sfx)                                            \
    static int dw_##name##_##sfx(int isa, const dw_geom *g, dws M)             \
    { (void)isa; return dw_##name##_portable_##sfx(g, M); }
#endif

DW_DISPATCH(fwd, f, float)
DW_DISPATCH(fwd, d, double)
DW_DISPATCH(fwd_multi, f, float)
DW_DISPATCH(fwd_multi, d, double)
DW_DISPATCH(fwd_panels, f, float)
DW_DISPATCH(fwd_panels, d, double)
DW_DISPATCH_LEN(f, float)
DW_DISPATCH_LEN(d, double)
DW_DISPATCH_PATH(multi_path, f)
DW_DISPATCH_PATH(multi_path, d)
DW_DISPATCH_PATH(fwd_path, f)
DW_DISPATCH_PATH(fwd_path, d)
DW_DISPATCH(igrad_strided, f, float)
DW_DISPATCH(igrad_strided, d, double)
DW_DISPATCH(wgrad, f, float)
DW_DISPATCH(wgrad, d, double)

#endif
