/* The direct lowering's tile kernel (direct.pyx), portable C.
 *
 * The convolution as oneDNN's direct kernels and XNNPACK's indirect GEMM
 * compute it, on the NCHW input in place: a tile is up to MR output pixels
 * (any pixels, each given by its offset into the input) by NR filters; per
 * valid kernel tap and input channel, each pixel's input value is
 * broadcast and multiplied into NR filters' weights, loaded as vectors from
 * a packed panel. An element of the stretched matrix at (channel, tap,
 * pixel) is at x + channel * x_channel + tap_off[tap] + pix[pixel]: the
 * index map is separable, so no panel of B is ever gathered. The taps are
 * those valid for every pixel of the tile (direct.pyx groups the pixels by
 * which taps fall in the padding), so padding is skipped, not multiplied:
 * on ResNet-50's 7x7 maps that is 18 % of a GEMM lowering's work.
 *
 * Contract (every ISA's kernel):
 *   m           pixels in the tile, 1..MR
 *   x           the input of this group and channel block
 *   pix         m offsets (elements) of the pixels' first tap into x
 *   x_channel   elements between input channels
 *   channels    input channels to sum over
 *   tap_off     ntaps offsets (elements) of the valid taps
 *   tap_panel   ntaps offsets (elements) of those taps' first rows in the
 *               panel
 *   panel       packed weights: rows of NR filters, one per (tap, channel)
 *   panel_channel  elements between a tap's rows of consecutive channels
 *   tile        MR x NR accumulators, row j = pixel j (aligned to the
 *               vector): read when !first, written
 * The loop runs the taps outer and the channels inner: each tap's weights
 * one run of the panel, its input offset stepped by the channel stride, no
 * index loads in the inner loop (in one process, fp32, 2 threads, against
 * channels outer: ResNet-50 5b 0.95x, 4b 0.93x, 2a 0.89x the time).
 */
#ifndef FASTCONV_DIRECT_GENERIC_H
#define FASTCONV_DIRECT_GENERIC_H

#include <stddef.h>

#ifndef FC_INLINE
#define FC_INLINE static inline __attribute__((always_inline))
#endif

/* Portable blocking: 4 pixels x 16 (float32) or 8 (float64) filters, plain
 * arrays the compiler vectorises along the filters with whatever the
 * target's baseline has (SSE2 on x86-64: 4 vectors of 4 floats per pixel). */
#define FC_DIRECT_GENERIC_MR 4
#define FC_DIRECT_GENERIC_NR_F32 16
#define FC_DIRECT_GENERIC_NR_F64 8

/* A kernel's switch over the pixels of a tile (m <= MR): one copy of the
 * loop per count, so a tile's last pixels are not computed on duplicates
 * (ResNet-50 5b's classes of 8 pixels: 6 + 2). NAME##_body(M, ...) is the
 * loop, called with the kernel's own argument names. */
/* (two levels: MR is expanded before it is pasted) */
#define FC_DIRECT_CASES(MR, NAME) FC_DIRECT_CASES_(MR, NAME)
#define FC_DIRECT_CASES_(MR, NAME) FC_DIRECT_CASES_##MR(NAME)
#define FC_DIRECT_CASE(NAME, M) case M: NAME##_body(M, x, pix, x_channel, channels,       \
    tap_off, tap_panel, ntaps, panel, panel_channel, tile, first); break;
#define FC_DIRECT_CASES_6(NAME) FC_DIRECT_CASE(NAME, 6) FC_DIRECT_CASE(NAME, 5)            \
    FC_DIRECT_CASE(NAME, 4) FC_DIRECT_CASE(NAME, 3) FC_DIRECT_CASE(NAME, 2)                \
    default: FC_DIRECT_CASE(NAME, 1)

#define FC_DIRECT_CASES_4(NAME) FC_DIRECT_CASE(NAME, 4) FC_DIRECT_CASE(NAME, 3)            \
    FC_DIRECT_CASE(NAME, 2) default: FC_DIRECT_CASE(NAME, 1)
#define FC_DIRECT_CASES_8(NAME) FC_DIRECT_CASE(NAME, 8) FC_DIRECT_CASE(NAME, 7)            \
    FC_DIRECT_CASES_6(NAME)
#define FC_DIRECT_CASES_12(NAME) FC_DIRECT_CASE(NAME, 12) FC_DIRECT_CASE(NAME, 11)         \
    FC_DIRECT_CASE(NAME, 10) FC_DIRECT_CASE(NAME, 9) FC_DIRECT_CASES_8(NAME)
#define FC_DIRECT_CASES_14(NAME) FC_DIRECT_CASE(NAME, 14) FC_DIRECT_CASE(NAME, 13)         \
    FC_DIRECT_CASES_12(NAME)


#define FC_DIRECT_GENERIC_DEFINE(SUF, T, NR)                                              \
FC_INLINE void fc_direct_generic_##SUF##_body(                                            \
    const int M, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    T acc[FC_DIRECT_GENERIC_MR][NR];                                                       \
    const T *p[FC_DIRECT_GENERIC_MR];                                                      \
    int j, f;                                                                              \
    ptrdiff_t c, t;                                                                        \
    for (j = 0; j < M; j++) {                                                              \
        p[j] = x + pix[j];                                                                 \
        for (f = 0; f < NR; f++) acc[j][f] = first ? (T)0 : tile[j * NR + f];              \
    }                                                                                      \
    for (t = 0; t < ntaps; t++) {                                                          \
        const T *w = panel + tap_panel[t];                                                 \
        ptrdiff_t off = tap_off[t];                                                        \
        for (c = 0; c < channels; c++) {                                                   \
            for (j = 0; j < M; j++) {                                                      \
                const T v = p[j][off];                                                     \
                for (f = 0; f < NR; f++) acc[j][f] += v * w[f];                            \
            }                                                                              \
            w += panel_channel;                                                            \
            off += x_channel;                                                              \
        }                                                                                  \
    }                                                                                      \
    for (j = 0; j < M; j++)                                                                \
        for (f = 0; f < NR; f++) tile[j * NR + f] = acc[j][f];                             \
}                                                                                          \
static void fc_direct_generic_##SUF(                                                      \
    ptrdiff_t m, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    switch (m < FC_DIRECT_GENERIC_MR ? m : FC_DIRECT_GENERIC_MR) {                         \
    FC_DIRECT_CASES(4, fc_direct_generic_##SUF)                                            \
    }                                                                                      \
}

FC_DIRECT_GENERIC_DEFINE(f32, float, FC_DIRECT_GENERIC_NR_F32)
FC_DIRECT_GENERIC_DEFINE(f64, double, FC_DIRECT_GENERIC_NR_F64)

/* The weight gradient's lanes kernel (_direct_vector.h has the contract),
 * portable: L = 4 lanes of partial sums per (tap, filter), a loop over the
 * lanes the compiler vectorises; the row's last pixels one at a time. */
#define FC_DIRECT_GENERIC_LANES 4
#define FC_DIRECT_GENERIC_LANES_DEFINE(SUF, T)                                             \
static void fc_direct_lanes_generic_##SUF(                                                \
    ptrdiff_t m, ptrdiff_t nf, const T *x, const ptrdiff_t *pix, ptrdiff_t qc,             \
    const ptrdiff_t *x_row, const ptrdiff_t *g_row, ptrdiff_t nrows, const T *g,           \
    ptrdiff_t g_filter, T *tile, ptrdiff_t tile_taps)                                      \
{                                                                                          \
    enum { L = FC_DIRECT_GENERIC_LANES };                                                  \
    ptrdiff_t f, t, k, j;                                                                  \
    int l;                                                                                 \
    for (f = 0; f < nf; f++)                                                               \
        for (t = 0; t < m; t++) {                                                          \
            T acc[L];                                                                      \
            T *o = tile + (f * tile_taps + t) * L;                                         \
            for (l = 0; l < L; l++) acc[l] = o[l];                                         \
            for (k = 0; k < nrows; k++) {                                                  \
                const T *xr = x + x_row[k] + pix[t], *gr = g + g_row[k] + f * g_filter;    \
                for (j = 0; j + L <= qc; j += L)                                           \
                    for (l = 0; l < L; l++) acc[l] += xr[j + l] * gr[j + l];               \
                for (l = 0; j + l < qc; l++) acc[l] += xr[j + l] * gr[j + l];              \
            }                                                                              \
            for (l = 0; l < L; l++) o[l] = acc[l];                                         \
        }                                                                                  \
}

FC_DIRECT_GENERIC_LANES_DEFINE(f32, float)
FC_DIRECT_GENERIC_LANES_DEFINE(f64, double)

#endif
