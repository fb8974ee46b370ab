/* The Winograd lowering's transforms and work item (winograd.pyx).
 *
 * F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks", 2016; interpolation points 0, +-1, +-2, infinity): a 4x4 block
 * of outputs of a 3x3 stride-1 correlation is
 *
 *     Y = A^T [ (G g G^T) .* (B^T d B) ] A          (d: the 6x6 input tile)
 *
 * so per input channel and filter 36 multiplies make 16 outputs, not 144.
 * Summed over channels, the product .* becomes 36 independent GEMMs, one
 * per point xi of the 6x6 transform domain:
 *
 *     M[xi] (filters x tiles) = U[xi] (filters x channels) @ V[xi] (channels x tiles)
 *
 * which run on the fused lowering's micro-kernels (_fused_*.h): U
 * transformed into filter rows of Cg values per point, read
 * in place as the micro-kernel's A (lda = Cg; writing it as packed MR-row
 * panels scattered each filter's values over 36 points and cost more than
 * the in-place reads), V written by the input transform straight into the
 * micro-kernel's B layout (channel rows of PW tiles, ldb = PW: no packing
 * pass), M a stack of MR x PW tiles. The output may have any strides (a
 * dilated convolution's phases are strided views).
 *
 * The work runs in one of two orders (winograd.pyx picks by the plan):
 *
 * weights kept (fw_item): U of every filter transformed once per call; a
 * work item is (group, micro-panel of PW <= NR consecutive tiles of the
 * batch, chunk of filters):
 *   1. gather each channel's 6x6 input tiles (zero padding by bounds
 *      checks; the interior ones without) into d[36][PW], transform (lanes
 *      = tiles, so each row of the transform is one vector operation) into
 *      V[xi][c][PW] (fw_panel_input);
 *   2. per block of KB filters (M's 36 x KB x PW in L2): the 36 GEMMs, then
 *      the output transform of each filter's tiles, the bias added, stored
 *      into out (tiles cut at the bottom and right edges) (fw_panel_output).
 *
 * input kept (fw_filters_item; few tiles against many weights): V of every
 * panel transformed once per call (fw_panel_input, items of channels); a
 * work item is a block of filters, which transforms its own U into the
 * thread's workspace (36 x block x Cg: ~2 MB, in L2 and L3, never all of
 * U in memory) and runs step 2 for every panel.
 *
 * The transforms are loops over lanes in vectors of the ISA's width (GCC /
 * Clang vector extensions, compiled with the target attribute of the fused
 * kernels; scalar C elsewhere); the item is defined once per ISA
 * (fw_item_*) and calls the micro-kernel of that ISA through a pointer.
 *
 * Arithmetic: the points 0, +-1, +-2 keep the transforms' coefficients small
 * (at most 8 in A, 5 in B^T, 1/24 in G); float32 errors measured against
 * float64 stay ~1e-5 of the output's magnitude at 512 channels (tests'
 * tolerance: 1e-4).
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

#include <stddef.h>
#include <string.h>
#include "_fused_kernels.h"

#define FW_M 4        /* outputs per tile side */
#define FW_A 6        /* input tile side: FW_M + 3 - 1 */
#define FW_POINTS 36  /* FW_A * FW_A GEMMs */
#define FW_MAX_NR 64  /* bound of the lane tables on the stack (fused MAX_NR) */
#define FW_WEIGHT_BLOCK 8  /* filters whose taps fw_weights gathers at once */
#define FW_WEIGHT_AHEAD 8  /* channels ahead fw_weights prefetches */
#define FW_TAPS_PAD 16     /* elements past each row of fw_weights' taps */
#if defined(__GNUC__) || defined(__clang__)
#define FW_PREFETCH(p) __builtin_prefetch(p)
#else
#define FW_PREFETCH(p) ((void)(p))
#endif

/* The transforms' lane loops are functions of their own, so that their
 * restrict pointers hold: inlined, GCC could not tell the rows of one
 * scratch buffer apart and left the loops scalar. */
#if defined(__GNUC__) || defined(__clang__)
#define FW_NOINLINE __attribute__((noinline))
#else
#define FW_NOINLINE
#endif

/* The geometry an item reads (elements, not bytes). */
typedef struct {
    ptrdiff_t H, W, Ho, Wo, Cg, Kg, K;
    ptrdiff_t ys_n, ys_k, ys_h, ys_w;             /* the output's strides */
    ptrdiff_t xs_n, xs_c, xs_h, xs_w;
    ptrdiff_t pad_top, pad_left;
    ptrdiff_t tiles_w, tiles_per_image, tiles;   /* tiles: of the batch */
    ptrdiff_t mr, kpanels, kb;                   /* kb: filters per M block (mr multiple) */
} fw_geometry;

/* The lane tables of tiles [t0, t0 + nt) of the batch: each tile's input
 * offset (its 6x6 tile's top-left at x + off; image row row, column col;
 * inside: all 36 values in the image) and, in an array of strides (o_n,
 * o_h, o_w) (the output, or the output gradient), the offset of its 4x4
 * block and how many of its rows and columns are inside (cut at the edges). */
static inline void fw_tile_lanes(const fw_geometry *geo, ptrdiff_t t0, ptrdiff_t nt,
                                 ptrdiff_t o_n, ptrdiff_t o_h, ptrdiff_t o_w, ptrdiff_t *off,
                                 ptrdiff_t *row, ptrdiff_t *col, unsigned char *inside,
                                 ptrdiff_t *o_off, ptrdiff_t *o_rows, ptrdiff_t *o_cols)
{
    ptrdiff_t l;
    for (l = 0; l < nt; l++) {
        ptrdiff_t t = t0 + l, n = t / geo->tiles_per_image, r = t % geo->tiles_per_image;
        ptrdiff_t oh = r / geo->tiles_w * FW_M, ow = r % geo->tiles_w * FW_M;
        row[l] = oh - geo->pad_top;
        col[l] = ow - geo->pad_left;
        off[l] = n * geo->xs_n + row[l] * geo->xs_h + col[l] * geo->xs_w;
        inside[l] = row[l] >= 0 && row[l] + FW_A <= geo->H && col[l] >= 0
                    && col[l] + FW_A <= geo->W;
        o_off[l] = n * o_n + oh * o_h + ow * o_w;
        o_rows[l] = geo->Ho - oh < FW_M ? geo->Ho - oh : FW_M;
        o_cols[l] = geo->Wo - ow < FW_M ? geo->Wo - ow : FW_M;
    }
}

/* One transform over lanes: o[r*os + l] = sum_q T[r][q] * s[q*ss + l] for
 * l < n, T one of B^T (6x6), A^T (4x6), G (6x3). The bodies are written
 * once for a type V, then run on vectors of the ISA's width (GCC/Clang
 * vector extensions: the loops are vector code whatever the compiler's
 * alias analysis makes of the strides; auto-vectorised, they ran scalar)
 * and on the scalar tail. LD/ST: V's load and store at a T pointer. */
#define FW_BODY_BT(V, LD, ST)                                                     \
    {                                                                             \
        V s0 = LD(s + l), s1 = LD(s + ss + l), s2 = LD(s + 2 * ss + l);            \
        V s3 = LD(s + 3 * ss + l), s4 = LD(s + 4 * ss + l), s5 = LD(s + 5 * ss + l); \
        ST(o + l, s0 * 4 - s2 * 5 + s4);                                          \
        ST(o + os + l, s3 + s4 - (s1 + s2) * 4);                                  \
        ST(o + 2 * os + l, (s1 - s2) * 4 - s3 + s4);                              \
        ST(o + 3 * os + l, (s3 - s1) * 2 - s2 + s4);                              \
        ST(o + 4 * os + l, (s1 - s3) * 2 - s2 + s4);                              \
        ST(o + 5 * os + l, s1 * 4 - s3 * 5 + s5);                                 \
    }

#define FW_BODY_AT(V, LD, ST)                                                     \
    {                                                                             \
        V s1 = LD(s + ss + l), s2 = LD(s + 2 * ss + l);                           \
        V s3 = LD(s + 3 * ss + l), s4 = LD(s + 4 * ss + l);                       \
        V p12 = s1 + s2, m12 = s1 - s2, p34 = s3 + s4, m34 = s3 - s4;             \
        ST(o + l, LD(s + l) + p12 + p34);                                         \
        ST(o + os + l, m12 + m34 * 2);                                            \
        ST(o + 2 * os + l, p12 + p34 * 4);                                        \
        ST(o + 3 * os + l, m12 + m34 * 8 + LD(s + 5 * ss + l));                   \
    }

/* G's rows by multiplications with the reciprocals (a division per element
 * made the weight transform ~4 ms of ResNet-50 4b_3x3's call) */
#define FW_BODY_G(V, LD, ST)                                                      \
    {                                                                             \
        V g0 = LD(s + l), g1 = LD(s + ss + l), g2 = LD(s + 2 * ss + l);            \
        V even = g0 + g2, outer = g0 * fw_24th + g2 * fw_6th;                     \
        ST(o + l, g0 * fw_4th);                                                   \
        ST(o + os + l, (even + g1) * -fw_6th);                                    \
        ST(o + 2 * os + l, (g1 - even) * fw_6th);                                 \
        ST(o + 3 * os + l, outer + g1 * fw_12th);                                 \
        ST(o + 4 * os + l, outer - g1 * fw_12th);                                 \
        ST(o + 5 * os + l, g2);                                                   \
    }

/* The weight gradient's transforms (F(3x3, 4x4), the transpose of the
 * forward's: dW = G^T [ (A h A^T) .* (B^T d B) ] G for a 4x4 tile h of the
 * output gradient and the 6x6 input tile d; A = (A^T)^T): A (6 from 4)
 * and G^T (3 from 6). */
#define FW_BODY_A(V, LD, ST)                                                      \
    {                                                                             \
        V s0 = LD(s + l), s1 = LD(s + ss + l), s2 = LD(s + 2 * ss + l);            \
        V s3 = LD(s + 3 * ss + l), even = s0 + s2 * 4, odd = s1 * 2 + s3 * 8;     \
        ST(o + l, s0);                                                            \
        ST(o + os + l, s0 + s1 + s2 + s3);                                        \
        ST(o + 2 * os + l, s0 - s1 + s2 - s3);                                    \
        ST(o + 3 * os + l, even + odd);                                           \
        ST(o + 4 * os + l, even - odd);                                           \
        ST(o + 5 * os + l, s3);                                                   \
    }

#define FW_BODY_GT(V, LD, ST)                                                     \
    {                                                                             \
        V s1 = LD(s + ss + l), s2 = LD(s + 2 * ss + l);                          \
        V s3 = LD(s + 3 * ss + l), s4 = LD(s + 4 * ss + l);                       \
        V p12 = (s1 + s2) * fw_6th, m12 = (s2 - s1) * fw_6th;                     \
        ST(o + l, LD(s + l) * fw_4th - p12 + (s3 + s4) * fw_24th);                \
        ST(o + os + l, m12 + (s3 - s4) * fw_12th);                                \
        ST(o + 2 * os + l, (s3 + s4) * fw_6th - p12 + LD(s + 5 * ss + l));        \
    }

#define FW_SCALAR_LD(p) (*(p))
#define FW_SCALAR_ST(p, v) (*(p) = (v))

#if defined(__GNUC__) || defined(__clang__)
#define FW_HAVE_VECTORS 1
/* V of BYTES bytes of T, loadable from any T-aligned address */
#define FW_VECTOR_TYPE(NAME, T, BYTES) \
    typedef T NAME __attribute__((vector_size(BYTES), aligned(sizeof(T))));
#else
#define FW_HAVE_VECTORS 0
#endif

/* fw_<name>_<SUF>(s, ss, o, os, n): one transform (BODY) over n lanes, in
 * vectors of the type VT (VL lanes) then scalars. */
#if FW_HAVE_VECTORS
#define FW_LANE_FUNCTION(NAME, SUF, T, TARGET, VT, VL, BODY)                      \
static FW_NOINLINE TARGET void fw_##NAME##_##SUF(const T *s, ptrdiff_t ss, T *o,  \
                                                 ptrdiff_t os, ptrdiff_t n)        \
{                                                                                 \
    const T fw_4th = (T)0.25, fw_6th = (T)(1.0 / 6), fw_12th = (T)(1.0 / 12);     \
    const T fw_24th = (T)(1.0 / 24);                                              \
    ptrdiff_t l = 0;                                                              \
    (void)fw_4th; (void)fw_6th; (void)fw_12th; (void)fw_24th;                     \
    for (; l + VL <= n; l += VL)                                                  \
        BODY(VT, *(const VT *), FW_VECTOR_ST_##SUF)                               \
    for (; l < n; l++) BODY(T, FW_SCALAR_LD, FW_SCALAR_ST)                        \
}
#else
#define FW_LANE_FUNCTION(NAME, SUF, T, TARGET, VT, VL, BODY)                      \
static void fw_##NAME##_##SUF(const T *s, ptrdiff_t ss, T *o, ptrdiff_t os, ptrdiff_t n) \
{                                                                                 \
    const T fw_4th = (T)0.25, fw_6th = (T)(1.0 / 6), fw_12th = (T)(1.0 / 12);     \
    const T fw_24th = (T)(1.0 / 24);                                              \
    ptrdiff_t l;                                                                  \
    (void)fw_4th; (void)fw_6th; (void)fw_12th; (void)fw_24th;                     \
    for (l = 0; l < n; l++) BODY(T, FW_SCALAR_LD, FW_SCALAR_ST)                   \
}
#endif

/* FW_DEFINE(SUF, T, TARGET, VT, VL): the transforms and the item of one
 * dtype and ISA (VT: its vector type of VL lanes). */
#define FW_DEFINE(SUF, T, TARGET, VT, VL)                                        \
FW_LANE_FUNCTION(bt, SUF, T, TARGET, VT, VL, FW_BODY_BT)                           \
FW_LANE_FUNCTION(at, SUF, T, TARGET, VT, VL, FW_BODY_AT)                           \
FW_LANE_FUNCTION(g, SUF, T, TARGET, VT, VL, FW_BODY_G)                             \
FW_LANE_FUNCTION(a, SUF, T, TARGET, VT, VL, FW_BODY_A)                             \
FW_LANE_FUNCTION(gt, SUF, T, TARGET, VT, VL, FW_BODY_GT)                           \
                                                                                   \
/* U = G g G^T of filter rows: for each of m filters (filter i's channel c's \
 * 9 taps at g + i*filter_step + c*channel_step, reversed if flip) over n     \
 * channels, row i of each point's matrix (point xi at u + xi*point_step, rows \
 * n apart: the micro-kernel reads MR of them in place, lda = n), and rows   \
 * m .. rows-1 zero (the filters that pad the last MR rows). The forward      \
 * pass's filters are rows of the weights (filter_step = Cg*9, channel_step   \
 * = 9); the input gradient's (the adjoint's) are its columns, read in place  \
 * (filter_step = 9, channel_step = Cg*9 of the original weights), so no     \
 * transposed copy is made. The taps are gathered FW_WEIGHT_BLOCK filters at  \
 * a time, channel by channel (the block's taps of a channel are one run of   \
 * the adjoint's row): gathered per filter, the adjoint's 9 taps of each      \
 * channel came from rows 18 KB apart (ResNet-50 5b_3x3) and the gather took   \
 * 30 % of the input gradient's call (perf), the page and line walks again    \
 * for every filter. tmp: 9*FW_WEIGHT_BLOCK*(n + FW_TAPS_PAD) + 18*n. */                       \
static TARGET void fw_weights_##SUF(const T *g, ptrdiff_t filter_step,          \
                                    ptrdiff_t channel_step, ptrdiff_t m,           \
                                    ptrdiff_t rows, ptrdiff_t n, int flip, T *u,   \
                                    ptrdiff_t point_step, T *tmp)                  \
{                                                                                  \
    /* the taps' rows n + FW_TAPS_PAD apart: n apart (512 channels: 2 KB), the   \
     * gather's 72 rows fell into 2 sets of the L1 cache */                       \
    const ptrdiff_t ts = n + FW_TAPS_PAD;                                          \
    T *taps = tmp, *half = tmp + 9 * FW_WEIGHT_BLOCK * ts;                         \
    ptrdiff_t t, c, i, i0, ib;                                                     \
    for (i0 = 0; i0 < m; i0 += FW_WEIGHT_BLOCK) {                                  \
        ib = m - i0 < FW_WEIGHT_BLOCK ? m - i0 : FW_WEIGHT_BLOCK;                  \
        for (c = 0; c < n; c++) {                                                  \
            const T *src = g + i0 * filter_step + c * channel_step;                \
            if (c + FW_WEIGHT_AHEAD < n) /* rows apart: no hardware prefetch */    \
                for (t = 0; t < ib * 9 * (ptrdiff_t)sizeof(T); t += 64)            \
                    FW_PREFETCH((const char *)(src + FW_WEIGHT_AHEAD * channel_step) + t); \
            for (i = 0; i < ib; i++)                                               \
                for (t = 0; t < 9; t++)                                            \
                    taps[(i * 9 + t) * ts + c] = src[i * filter_step + (flip ? 8 - t : t)]; \
        }                                                                          \
        for (i = 0; i < ib; i++) {                                                 \
            const T *tap = taps + i * 9 * ts;                                      \
            /* half[r][s] = (G g)[r][s]: G down each of the 3 columns */           \
            for (t = 0; t < 3; t++) fw_g_##SUF(tap + t * ts, 3 * ts, half + t * n, 3 * n, n); \
            /* (G g G^T)[r][q], point 6r + q: G along each of the 6 rows */        \
            for (t = 0; t < 6; t++)                                                \
                fw_g_##SUF(half + 3 * t * n, n, u + (i0 + i) * n + 6 * t * point_step, \
                           point_step, n);                                         \
        }                                                                          \
    }                                                                              \
    if (rows > m) /* the filters that pad the last MR rows: zeros */               \
        for (t = 0; t < FW_POINTS; t++)                                            \
            memset(u + t * point_step + m * n, 0, (size_t)((rows - m) * n) * sizeof(T)); \
}                                                                                  \
                                                                                   \
/* d[36][pw] <- the 6x6 input tiles of nt lanes (channel at x_c; lane l's      \
 * top-left at x_c + off[l], image row row[l], column col[l]; zeros outside    \
 * the image and past nt), then V = B^T d B into v + xi*v_step. */                \
static inline TARGET void fw_input_##SUF(const fw_geometry *geo, const T *x_c,     \
        const ptrdiff_t *off, const ptrdiff_t *row, const ptrdiff_t *col,          \
        const unsigned char *inside, ptrdiff_t nt, ptrdiff_t pw, T *d, T *tmp,     \
        T *v, ptrdiff_t v_step)                                                    \
{                                                                                  \
    const ptrdiff_t xs_h = geo->xs_h, xs_w = geo->xs_w;                            \
    ptrdiff_t l, i, j;                                                             \
    for (l = 0; l < nt; l++) {                                                     \
        const T *p = x_c + off[l];                                                 \
        if (inside[l]) {                                                           \
            for (i = 0; i < FW_A; i++)                                             \
                for (j = 0; j < FW_A; j++)                                         \
                    d[(i * FW_A + j) * pw + l] = p[i * xs_h + j * xs_w];           \
        } else {                                                                   \
            for (i = 0; i < FW_A; i++) {                                           \
                int row_in = row[l] + i >= 0 && row[l] + i < geo->H;               \
                for (j = 0; j < FW_A; j++)                                         \
                    d[(i * FW_A + j) * pw + l] =                                   \
                        row_in && col[l] + j >= 0 && col[l] + j < geo->W           \
                        ? p[i * xs_h + j * xs_w] : (T)0;                           \
            }                                                                      \
        }                                                                          \
    }                                                                              \
    for (i = 0; i < FW_POINTS; i++)                                                \
        for (l = nt; l < pw; l++) d[i * pw + l] = 0;                               \
    for (j = 0; j < FW_A; j++) fw_bt_##SUF(d + j * pw, FW_A * pw, tmp + j * pw, FW_A * pw, pw); \
    for (i = 0; i < FW_A; i++)                                                     \
        fw_bt_##SUF(tmp + i * FW_A * pw, pw, v + i * FW_A * v_step, v_step, pw);   \
}                                                                                  \
                                                                                   \
/* Y = A^T M A of one filter (m + xi*m_step, pw lanes) into y[16][pw]. */          \
static inline TARGET void fw_output_##SUF(const T *m, ptrdiff_t m_step, ptrdiff_t pw, \
                                          T *tmp, T *y)                            \
{                                                                                  \
    ptrdiff_t i, j;                                                                \
    for (j = 0; j < FW_A; j++) fw_at_##SUF(m + j * m_step, FW_A * m_step, tmp + j * pw, FW_A * pw, pw); \
    for (i = 0; i < FW_M; i++) fw_at_##SUF(tmp + i * FW_A * pw, pw, y + i * FW_M * pw, pw, pw); \
}                                                                                  \
                                                                                   \
/* V of one panel: the input tiles of tiles [t0, t0 + nt) of the batch     \
 * (a micro-panel pw wide), channels [c0, c1) of the group, transformed into   \
 * v + xi*Cg*pw + c*pw (the micro-kernel's B, ldb = pw). ws: 72*pw. */        \
static TARGET void fw_panel_input_##SUF(const fw_geometry *geo, const T *x_group, \
        ptrdiff_t t0, ptrdiff_t nt, ptrdiff_t pw, ptrdiff_t c0, ptrdiff_t c1, T *v, \
        T *ws)                                                                     \
{                                                                                  \
    ptrdiff_t off[FW_MAX_NR], row[FW_MAX_NR], col[FW_MAX_NR], yoff[FW_MAX_NR];     \
    ptrdiff_t yrows[FW_MAX_NR], ycols[FW_MAX_NR];                                  \
    unsigned char inside[FW_MAX_NR];                                               \
    ptrdiff_t c;                                                                   \
    fw_tile_lanes(geo, t0, nt, geo->ys_n, geo->ys_h, geo->ys_w, off, row, col, inside, \
                  yoff, yrows, ycols);                                             \
    for (c = c0; c < c1; c++)                                                      \
        fw_input_##SUF(geo, x_group + c * geo->xs_c, off, row, col, inside, nt, pw, \
                       ws, ws + FW_POINTS * pw, v + c * pw, geo->Cg * pw);         \
}                                                                                  \
                                                                                   \
/* The GEMMs and the output of one panel (tiles [t0, t0 + nt), pw wide, its V  \
 * at v) for filters [f0, f1) of the group (f0 a multiple of MR), KB filters  \
 * at a time: M[xi] = U[xi] @ V[xi] (filter f's row of point xi at             \
 * u + xi*u_point + (f - f0)*Cg, rows zero up to a multiple of MR), then      \
 * A^T M A of each filter's tiles plus its bias, stored into out (tiles cut at \
 * the bottom and right edges). ws: 36*kb*pw + 52*pw. */                       \
static TARGET void fw_panel_output_##SUF(const fw_geometry *geo, const T *u,       \
        ptrdiff_t u_point, const T *v, const T *bias, T *out_group, ptrdiff_t t0,  \
        ptrdiff_t nt, ptrdiff_t pw, ptrdiff_t f0, ptrdiff_t f1,                    \
        void (*ukr)(ptrdiff_t, const T *, ptrdiff_t, const T *, ptrdiff_t, T *,   \
                    ptrdiff_t, int, const T *), T *ws)                            \
{                                                                                  \
    ptrdiff_t off[FW_MAX_NR], row[FW_MAX_NR], col[FW_MAX_NR], yoff[FW_MAX_NR];     \
    ptrdiff_t yrows[FW_MAX_NR], ycols[FW_MAX_NR];                                  \
    unsigned char inside[FW_MAX_NR];                                               \
    const ptrdiff_t Cg = geo->Cg, mr = geo->mr, kb = geo->kb;                      \
    const ptrdiff_t v_step = Cg * pw, m_step = kb * pw;                            \
    T *mbuf = ws, *tmp = mbuf + FW_POINTS * m_step, *y = tmp + FW_POINTS * pw;     \
    ptrdiff_t l, b0, b1, xi, p, f, i, j;                                           \
    fw_tile_lanes(geo, t0, nt, geo->ys_n, geo->ys_h, geo->ys_w, off, row, col, inside, \
                  yoff, yrows, ycols);                                             \
    for (b0 = f0; b0 < f1; b0 += kb) {                                             \
        b1 = b0 + kb < f1 ? b0 + kb : f1;                                          \
        for (xi = 0; xi < FW_POINTS; xi++)                                         \
            for (p = b0; p < b1; p += mr)                                          \
                ukr(Cg, u + xi * u_point + (p - f0) * Cg, Cg, v + xi * v_step, pw, \
                    mbuf + xi * m_step + (p - b0) * pw, pw, 1, NULL);              \
        for (f = b0; f < b1; f++) {                                                \
            T *dst = out_group + f * geo->ys_k, beta = bias ? bias[f] : (T)0;      \
            fw_output_##SUF(mbuf + (f - b0) * pw, m_step, pw, tmp, y);             \
            for (l = 0; l < nt; l++)                                               \
                for (i = 0; i < yrows[l]; i++)                                     \
                    for (j = 0; j < ycols[l]; j++)                                 \
                        dst[yoff[l] + i * geo->ys_h + j * geo->ys_w] =                     \
                            y[(i * FW_M + j) * pw + l] + beta;                             \
        }                                                                          \
    }                                                                              \
}                                                                                  \
                                                                                   \
/* One work item of the weights-kept order: group grp, tiles [t0, t0 + nt) of  \
 * the batch in a micro-panel pw wide (ukr: the micro-kernel of that width),    \
 * filters [f0, f1) of the group: its V, then its GEMMs and output. u: the    \
 * group's U (fw_weights, MR-padded rows of kpanels*MR filters); ws: this      \
 * thread's workspace (winograd.pyx's buffer_sizes), aligned. */              \
static TARGET void fw_item_##SUF(const fw_geometry *geo, const T *x_group,         \
        const T *u_group, const T *bias, T *out_group, ptrdiff_t t0, ptrdiff_t nt, \
        ptrdiff_t pw, ptrdiff_t f0, ptrdiff_t f1,                                  \
        void (*ukr)(ptrdiff_t, const T *, ptrdiff_t, const T *, ptrdiff_t, T *,   \
                    ptrdiff_t, int, const T *), T *ws)                            \
{                                                                                  \
    T *v = ws, *rest = v + FW_POINTS * geo->Cg * pw;                               \
    fw_panel_input_##SUF(geo, x_group, t0, nt, pw, 0, geo->Cg, v, rest);           \
    fw_panel_output_##SUF(geo, u_group + f0 * geo->Cg, geo->kpanels * geo->mr * geo->Cg, \
                          v, bias, out_group, t0, nt, pw, f0, f1, ukr, rest);      \
}                                                                                  \
                                                                                   \
/* One work item of the input-kept order: filters [f0, f1) of a group (at most \
 * geo->kb, the plan's block, f0 a multiple of MR; filter f's weights at       \
 * w_group + f*filter_step, as                                                 \
 * fw_weights reads them) against every panel of the batch's tiles, whose V   \
 * the threads wrote before (panel p's at v_group + p*36*Cg*NR): the filters'  \
 * U into this thread's workspace (36 x block x Cg, ~2 MB: in its L2 and the   \
 * L3, where the weights-kept order writes all of U to memory and reads it    \
 * again per panel),                                                          \
 * then each panel's GEMMs and output. ukr: the micro-kernel of width nr;     \
 * ukr_last: of the last panel's width pw_last. */                            \
static TARGET void fw_filters_item_##SUF(const fw_geometry *geo, const T *w_group,  \
        ptrdiff_t filter_step, ptrdiff_t channel_step, int flip, const T *v_group,  \
        const T *bias, T *out_group, ptrdiff_t f0, ptrdiff_t f1, ptrdiff_t nr,     \
        ptrdiff_t pw_last,                                                         \
        void (*ukr)(ptrdiff_t, const T *, ptrdiff_t, const T *, ptrdiff_t, T *,   \
                    ptrdiff_t, int, const T *),                                    \
        void (*ukr_last)(ptrdiff_t, const T *, ptrdiff_t, const T *, ptrdiff_t, T *, \
                         ptrdiff_t, int, const T *), T *ws)                        \
{                                                                                  \
    const ptrdiff_t Cg = geo->Cg, m = f1 - f0;                                     \
    const ptrdiff_t rows = (m + geo->mr - 1) / geo->mr * geo->mr;                  \
    const ptrdiff_t u_point = rows * Cg;                                           \
    T *u = ws, *rest = u + FW_POINTS * geo->kb * Cg;                               \
    ptrdiff_t t0;                                                                  \
    fw_weights_##SUF(w_group + f0 * filter_step, filter_step, channel_step, m, rows, \
                     Cg, flip, u, u_point, rest);                                  \
    for (t0 = 0; t0 < geo->tiles; t0 += nr) {                                      \
        const ptrdiff_t nt = geo->tiles - t0 < nr ? geo->tiles - t0 : nr;          \
        const int last = t0 + nr >= geo->tiles;                                    \
        fw_panel_output_##SUF(geo, u, u_point, v_group + t0 / nr * FW_POINTS * Cg * nr, \
                              bias, out_group, t0, nt, last ? pw_last : nr, f0, f1,  \
                              last ? ukr_last : ukr, rest);                        \
    }                                                                              \
}                                                                                  \
                                                                                   \
/* One weight-gradient item: filters [k0, k0 + nk) (nk <= NR, one micro-panel \
 * of B) and channels [c0, c0 + nc) (nc <= the workspace's cb) of a group,     \
 * over every tile of the batch, tb tiles a panel: per panel, the channels'   \
 * input tiles into V[36][cb][tb] (fw_input), the filters' gradient tiles,   \
 * A h A^T, into H[36][tb][NR] (lanes = filters), and 36 GEMMs M[xi] (cb x   \
 * NR) += V[xi] (read in place, lda = tb) @ H[xi] (ldb = NR); then G^T M G     \
 * into dw (rows of the group's filters, Cg*9 apart; taps reversed if flip),   \
 * added to it if accumulate. grad_group: the output gradient's first filter \
 * of the group, strides gs_*. */                                              \
static TARGET void fw_wgrad_item_##SUF(const fw_geometry *geo, const T *x_group,    \
        const T *grad_group, ptrdiff_t gs_n, ptrdiff_t gs_k, ptrdiff_t gs_h,       \
        ptrdiff_t gs_w, T *dw, ptrdiff_t k0, ptrdiff_t nk, ptrdiff_t c0,           \
        ptrdiff_t nc, ptrdiff_t cb, ptrdiff_t tb, ptrdiff_t nr, int flip,          \
        int accumulate,                                                            \
        void (*ukr)(ptrdiff_t, const T *, ptrdiff_t, const T *, ptrdiff_t, T *,   \
                    ptrdiff_t, int, const T *), T *ws)                            \
{                                                                                  \
    ptrdiff_t off[FW_MAX_NR], row[FW_MAX_NR], col[FW_MAX_NR], goff[FW_MAX_NR];     \
    ptrdiff_t grows[FW_MAX_NR], gcols[FW_MAX_NR];                                  \
    unsigned char inside[FW_MAX_NR];                                               \
    const ptrdiff_t mr = geo->mr, cb_rows = (cb + mr - 1) / mr * mr;               \
    const ptrdiff_t v_step = cb_rows * tb, h_step = tb * nr, m_step = cb_rows * nr; \
    T *v = ws, *h = v + FW_POINTS * v_step, *m = h + FW_POINTS * h_step;           \
    T *d = m + FW_POINTS * m_step, *tmp = d + FW_POINTS * tb;                      \
    T *hg = tmp + FW_POINTS * tb, *ht = hg + 16 * nr, *o = ht + 24 * nr;           \
    const ptrdiff_t rows = geo->Cg * 9;                                            \
    ptrdiff_t t0, nt, pw, l, c, k, i, j, xi, p;                                    \
    for (t0 = 0; t0 < geo->tiles; t0 += tb) {                                      \
        nt = geo->tiles - t0 < tb ? geo->tiles - t0 : tb;                          \
        fw_tile_lanes(geo, t0, nt, gs_n, gs_h, gs_w, off, row, col, inside, goff, grows, \
                      gcols);                                                      \
        /* the transforms over the panel's lanes in whole vectors, not all tb: \
         * the GEMMs read nt of them (ResNet-50 5b: 32 tiles in all, tb 64;   \
         * zeroing and transforming the other 32 took a quarter of its run) */ \
        pw = (nt + VL - 1) / VL * VL;                                              \
        if (pw > tb) pw = tb;                                                      \
        for (c = 0; c < nc; c++)                                                   \
            fw_input_##SUF(geo, x_group + (c0 + c) * geo->xs_c, off, row, col, inside, \
                           nt, pw, d, tmp, v + c * tb, v_step);                    \
        for (l = 0; l < nt; l++) {                                                 \
            const T *src = grad_group + k0 * gs_k + goff[l];                       \
            for (i = 0; i < FW_M; i++)                                             \
                for (j = 0; j < FW_M; j++) {                                       \
                    T *dst = hg + (i * FW_M + j) * nr;                             \
                    if (i < grows[l] && j < gcols[l])                              \
                        for (k = 0; k < nk; k++) dst[k] = src[k * gs_k + i * gs_h + j * gs_w]; \
                    else                                                           \
                        for (k = 0; k < nk; k++) dst[k] = 0;                       \
                    for (k = nk; k < nr; k++) dst[k] = 0;                          \
                }                                                                  \
            /* A down each of the 4 columns, then along each of the 6 rows */     \
            for (j = 0; j < FW_M; j++) fw_a_##SUF(hg + j * nr, FW_M * nr, ht + j * nr, FW_M * nr, nr); \
            for (i = 0; i < FW_A; i++)                                             \
                fw_a_##SUF(ht + i * FW_M * nr, nr, h + i * FW_A * h_step + l * nr, h_step, nr); \
        }                                                                          \
        for (xi = 0; xi < FW_POINTS; xi++)                                         \
            for (p = 0; p < nc; p += mr)                                           \
                ukr(nt, v + xi * v_step + p * tb, tb, h + xi * h_step, nr,         \
                    m + xi * m_step + p * nr, nr, t0 == 0, NULL);                  \
    }                                                                              \
    for (c = 0; c < nc; c++) {                                                     \
        /* G^T down each of the 6 columns, then along each of the 3 rows */       \
        for (j = 0; j < FW_A; j++)                                                 \
            fw_gt_##SUF(m + j * m_step + c * nr, FW_A * m_step, ht + j * nr, FW_A * nr, nr); \
        for (i = 0; i < 3; i++) fw_gt_##SUF(ht + i * FW_A * nr, nr, o + i * 3 * nr, nr, nr); \
        for (k = 0; k < nk; k++) {                                                 \
            T *dst = dw + (k0 + k) * rows + (c0 + c) * 9;                          \
            for (i = 0; i < 9; i++) {                                              \
                T value = o[i * nr + k];                                           \
                if (accumulate) dst[flip ? 8 - i : i] += value;                    \
                else dst[flip ? 8 - i : i] = value;                                \
            }                                                                      \
        }                                                                          \
    }                                                                              \
}


#define FW_NO_TARGET
#if FW_HAVE_VECTORS
/* generic: 16-byte vectors (SSE2, NEON), which divide its NR of 8 floats
 * and 4 doubles */
FW_VECTOR_TYPE(fw_f32x4, float, 16)
FW_VECTOR_TYPE(fw_f64x2, double, 16)
#define FW_VECTOR_ST_generic_f32(p, v) (*(fw_f32x4 *)(p) = (v))
#define FW_VECTOR_ST_generic_f64(p, v) (*(fw_f64x2 *)(p) = (v))
FW_DEFINE(generic_f32, float, FW_NO_TARGET, fw_f32x4, 4)
FW_DEFINE(generic_f64, double, FW_NO_TARGET, fw_f64x2, 2)
#else
FW_DEFINE(generic_f32, float, FW_NO_TARGET, float, 1)
FW_DEFINE(generic_f64, double, FW_NO_TARGET, double, 1)
#endif
#if FC_HAVE_X86_KERNELS
/* the ISA's register width, which divides its narrow kernels' widths */
FW_VECTOR_TYPE(fw_f32x8, float, 32)
FW_VECTOR_TYPE(fw_f64x4, double, 32)
FW_VECTOR_TYPE(fw_f32x16, float, 64)
FW_VECTOR_TYPE(fw_f64x8, double, 64)
#define FW_VECTOR_ST_avx2_f32(p, v) (*(fw_f32x8 *)(p) = (v))
#define FW_VECTOR_ST_avx2_f64(p, v) (*(fw_f64x4 *)(p) = (v))
#define FW_VECTOR_ST_avx512_f32(p, v) (*(fw_f32x16 *)(p) = (v))
#define FW_VECTOR_ST_avx512_f64(p, v) (*(fw_f64x8 *)(p) = (v))
FW_DEFINE(avx2_f32, float, FC_AVX2_TARGET, fw_f32x8, 8)
FW_DEFINE(avx2_f64, double, FC_AVX2_TARGET, fw_f64x4, 4)
FW_DEFINE(avx512_f32, float, FC_AVX512_TARGET, fw_f32x16, 16)
FW_DEFINE(avx512_f64, double, FC_AVX512_TARGET, fw_f64x8, 8)
#endif

typedef void (*fw_item_f32_t)(const fw_geometry *, const float *, const float *, const float *,
                              float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                              fc_ukr_f32_t, float *);
typedef void (*fw_item_f64_t)(const fw_geometry *, const double *, const double *,
                              const double *, double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                              ptrdiff_t, ptrdiff_t, fc_ukr_f64_t, double *);
typedef void (*fw_wgrad_item_f32_t)(const fw_geometry *, const float *, const float *, ptrdiff_t,
                                    ptrdiff_t, ptrdiff_t, ptrdiff_t, float *, ptrdiff_t,
                                    ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                    ptrdiff_t, int, int, fc_ukr_f32_t, float *);
typedef void (*fw_wgrad_item_f64_t)(const fw_geometry *, const double *, const double *, ptrdiff_t,
                                    ptrdiff_t, ptrdiff_t, ptrdiff_t, double *, ptrdiff_t,
                                    ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                    ptrdiff_t, int, int, fc_ukr_f64_t, double *);
typedef void (*fw_weights_f32_t)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, int, float *, ptrdiff_t, float *);
typedef void (*fw_weights_f64_t)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, int, double *, ptrdiff_t, double *);
typedef void (*fw_panel_input_f32_t)(const fw_geometry *, const float *, ptrdiff_t, ptrdiff_t,
                                     ptrdiff_t, ptrdiff_t, ptrdiff_t, float *, float *);
typedef void (*fw_panel_input_f64_t)(const fw_geometry *, const double *, ptrdiff_t, ptrdiff_t,
                                     ptrdiff_t, ptrdiff_t, ptrdiff_t, double *, double *);
typedef void (*fw_filters_item_f32_t)(const fw_geometry *, const float *, ptrdiff_t, ptrdiff_t,
                                      int, const float *, const float *, float *, ptrdiff_t,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, fc_ukr_f32_t,
                                      fc_ukr_f32_t, float *);
typedef void (*fw_filters_item_f64_t)(const fw_geometry *, const double *, ptrdiff_t, ptrdiff_t,
                                      int, const double *, const double *, double *, ptrdiff_t,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, fc_ukr_f64_t,
                                      fc_ukr_f64_t, double *);

static inline fw_item_f32_t fw_item_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_item_avx512_f32;
    if (isa == FC_ISA_AVX2) return fw_item_avx2_f32;
#endif
    (void)isa;
    return fw_item_generic_f32;
}

static inline fw_item_f64_t fw_item_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_item_avx512_f64;
    if (isa == FC_ISA_AVX2) return fw_item_avx2_f64;
#endif
    (void)isa;
    return fw_item_generic_f64;
}

static inline fw_wgrad_item_f32_t fw_wgrad_item_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_wgrad_item_avx512_f32;
    if (isa == FC_ISA_AVX2) return fw_wgrad_item_avx2_f32;
#endif
    (void)isa;
    return fw_wgrad_item_generic_f32;
}

static inline fw_wgrad_item_f64_t fw_wgrad_item_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_wgrad_item_avx512_f64;
    if (isa == FC_ISA_AVX2) return fw_wgrad_item_avx2_f64;
#endif
    (void)isa;
    return fw_wgrad_item_generic_f64;
}

static inline fw_weights_f32_t fw_weights_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_weights_avx512_f32;
    if (isa == FC_ISA_AVX2) return fw_weights_avx2_f32;
#endif
    (void)isa;
    return fw_weights_generic_f32;
}

static inline fw_weights_f64_t fw_weights_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_weights_avx512_f64;
    if (isa == FC_ISA_AVX2) return fw_weights_avx2_f64;
#endif
    (void)isa;
    return fw_weights_generic_f64;
}

static inline fw_panel_input_f32_t fw_panel_input_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_panel_input_avx512_f32;
    if (isa == FC_ISA_AVX2) return fw_panel_input_avx2_f32;
#endif
    (void)isa;
    return fw_panel_input_generic_f32;
}

static inline fw_panel_input_f64_t fw_panel_input_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_panel_input_avx512_f64;
    if (isa == FC_ISA_AVX2) return fw_panel_input_avx2_f64;
#endif
    (void)isa;
    return fw_panel_input_generic_f64;
}

static inline fw_filters_item_f32_t fw_filters_item_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_filters_item_avx512_f32;
    if (isa == FC_ISA_AVX2) return fw_filters_item_avx2_f32;
#endif
    (void)isa;
    return fw_filters_item_generic_f32;
}

static inline fw_filters_item_f64_t fw_filters_item_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fw_filters_item_avx512_f64;
    if (isa == FC_ISA_AVX2) return fw_filters_item_avx2_f64;
#endif
    (void)isa;
    return fw_filters_item_generic_f64;
}

#endif /* FASTCONV_WINOGRAD_H */
