/* The direct lowering's tile kernel for the x86 instruction sets, written
 * once with GCC/Clang vector extensions and instantiated per ISA (with its
 * target attribute and register blocking) by _direct_avx512.h and
 * _direct_avx2.h. Same contract and loop as the portable kernel in
 * _direct_generic.h: MR pixels x NV vectors of filters held in registers
 * over the whole channel block, per (channel, tap) NV vector loads of the
 * packed weights and one broadcast of each pixel's input value (the
 * compiler folds it into the FMA's memory operand or a vbroadcastss).
 *
 * A full tile whose pixels are evenly spaced in x (1, 2 or 4 elements: one
 * output row at stride 1, 2 or 4) takes NAME##_tile with that STEP, reading them from
 * one pointer at fixed offsets. Why: through MR pointers (then 12 in
 * AVX-512's narrow tile) the loop ran out of general registers, reloading pointers
 * and spilling accumulators around every tap (perf); DeepSpeech2's first
 * layer (1 channel, 41x11/2, 32 filters; fp32, AVX-512) took 15.2 ms on one
 * thread, 12.0 ms evenly spaced, and on two threads 8.1-8.8 against
 * 6.6-8.1 (the two builds alternated). AlexNet's 11x11/4 6.55 -> 6.19 ms,
 * ResNet-50 3a 3x3/2 9.82 -> 9.25, Inception 5x5 7.16 -> 6.82. A partial
 * tile (m < MR) of consecutive elements takes the STEP 1 loop too: the
 * weight gradient's tiles (direct.pyx) are a kernel row's taps, 11 of the
 * narrow tile's 14 on DeepSpeech2, 5 and 6 of the wide tile's 6 on AlexNet.
 */
#ifndef FASTCONV_DIRECT_VECTOR_H
#define FASTCONV_DIRECT_VECTOR_H

#include <stddef.h>
#include "_direct_generic.h"   /* FC_DIRECT_CASES: one loop per pixel count */

/* Evenly spaced tiles prefetch their pixels' input FC_DIRECT_PF channels
 * ahead (the first and last pixel's lines): the channel loop steps a plane
 * at a time (12.5 KB on wav2vec 2.0's 1-D layers), past a page, where the
 * hardware prefetcher does not follow, and each step's broadcasts waited on
 * a miss (perf: the samples after the last broadcast of a step). Processes
 * alternated, fp32, 2 threads, direct: wav2vec 2.0 conv1 26.4 -> 24.0 ms,
 * 512 -> 128 filters 8.7-9.0 -> 6.3-6.5, ArcFace's 3x3/2 5.0-5.3 -> 4.9-5.0,
 * DeepSpeech2 conv2 11.7 -> 11.4; 2, 4 and 8 channels ahead the same;
 * ResNet-50 3a and 4a 3x3/2, AlexNet, Inception 5x5 and the weight
 * gradients within noise. Not where the block has no channel that far. */
#ifndef FC_DIRECT_PF
#define FC_DIRECT_PF 4
#endif
#ifndef FC_INLINE
#define FC_INLINE static inline __attribute__((always_inline))
#endif

/* NAME(m, ...): the kernel; NAME##_body(M, ...) its loop for M pixels, read
 * through their own pointers; NAME##_tile(M, STEP, ...) the same loop, and
 * with STEP > 0 the pixels STEP elements apart from pix[0] */
#define FC_DIRECT_VECTOR_DEFINE(NAME, T, VT, TARGET, MR, NV)                              \
FC_INLINE TARGET void NAME##_tile(                                                        \
    const int M, const ptrdiff_t STEP, const T *x, const ptrdiff_t *pix,                  \
    ptrdiff_t x_channel, ptrdiff_t channels,                                               \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    VT acc[MR][NV];                                                                        \
    const T *p[MR];                                                                        \
    int j, v;                                                                              \
    ptrdiff_t c, t;                                                                        \
    const int ahead = channels > FC_DIRECT_PF;                                             \
    for (j = 0; j < M; j++) {                                                              \
        p[j] = STEP ? x + pix[0] : x + pix[j];                                             \
        for (v = 0; v < NV; v++)                                                           \
            acc[j][v] = first ? (VT){0} : ((const VT *)tile)[j * NV + v];                  \
    }                                                                                      \
    for (t = 0; t < ntaps; t++) {                                                          \
        const T *w = panel + tap_panel[t];                                                 \
        ptrdiff_t off = tap_off[t];                                                        \
        for (c = 0; c < channels; c++) {                                                   \
            VT wv[NV];                                                                     \
            for (v = 0; v < NV; v++) wv[v] = ((const VT *)w)[v];                           \
            if (STEP && ahead) {                                                           \
                __builtin_prefetch(p[0] + off + FC_DIRECT_PF * x_channel);                 \
                __builtin_prefetch(p[0] + off + FC_DIRECT_PF * x_channel + (M - 1) * STEP); \
            }                                                                              \
            for (j = 0; j < M; j++) {                                                      \
                const T xv = STEP ? p[0][off + j * STEP] : p[j][off];                      \
                for (v = 0; v < NV; v++) acc[j][v] += xv * wv[v];                          \
            }                                                                              \
            w += panel_channel;                                                            \
            off += x_channel;                                                              \
        }                                                                                  \
    }                                                                                      \
    for (j = 0; j < M; j++)                                                                \
        for (v = 0; v < NV; v++) ((VT *)tile)[j * NV + v] = acc[j][v];                     \
}                                                                                          \
FC_INLINE TARGET void NAME##_body(                                                        \
    const int M, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    NAME##_tile(M, 0, x, pix, x_channel, channels, tap_off, tap_panel, ntaps, panel,       \
                panel_channel, tile, first);                                               \
}                                                                                          \
FC_INLINE TARGET void NAME##_s1_body(                                                     \
    const int M, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    NAME##_tile(M, 1, x, pix, x_channel, channels, tap_off, tap_panel, ntaps, panel,       \
                panel_channel, tile, first);                                               \
}                                                                                          \
static TARGET void NAME(                                                                   \
    ptrdiff_t m, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    if (m >= 2) {                                                                          \
        /* pixels evenly spaced: consecutive (any count; the weight */                     \
        /* gradient's taps of one kernel row, a row's last pixels), or 2 or */             \
        /* 4 apart (a full tile) */                                                        \
        const ptrdiff_t step = pix[1] - pix[0];                                            \
        const int M = m < MR ? (int)m : MR;                                                \
        int even = step == 1 || (M == MR && (step == 2 || step == 4)), j;                  \
        for (j = 2; j < M && even; j++)                                                    \
            even = pix[j] - pix[j - 1] == step;                                            \
        if (even) {                                                                        \
            if (step == 1)                                                                 \
                switch (M) {                                                               \
                FC_DIRECT_CASES(MR, NAME##_s1)                                             \
                }                                                                          \
            else if (step == 2)                                                            \
                NAME##_tile(MR, 2, x, pix, x_channel, channels, tap_off, tap_panel, ntaps, \
                            panel, panel_channel, tile, first);                            \
            else                                                                           \
                NAME##_tile(MR, 4, x, pix, x_channel, channels, tap_off, tap_panel, ntaps, \
                            panel, panel_channel, tile, first);                            \
            return;                                                                        \
        }                                                                                  \
    }                                                                                      \
    switch (m < MR ? m : MR) {                                                             \
    FC_DIRECT_CASES(MR, NAME)                                                              \
    }                                                                                      \
}

/* The weight gradient's lanes kernel (direct.pyx, _weight_grad_thread with
 * lanes), for stride-1 columns: the output pixels of a row run along the
 * vector lanes, in place in the output gradient and in the chunk's
 * zero-padded input rows, so nothing is packed. A register tile of MR taps
 * x NF filters holds one vector of per-lane partial sums each; per vector
 * of L pixels, NF loads of the output gradient and MR of the input serve
 * MR x NF FMAs, and the row's last pixels take masked loads (LOADZ(n, p):
 * the first n lanes, zeros beyond, nothing read past them). The lanes are
 * added up once, when the pass's tiles are stored.
 * Why: the panel kernel transposes each chunk of the output gradient into
 * rows of NR filters, and where a filter block has few taps that
 * transpose serves few FMAs: on paper_mnist's weight gradient (1 channel,
 * 3x3, 32 filters) the transposing pack took 33 % of the run and the tile
 * 16 % (perf). A stand-alone loop of this kernel (6 taps x 4 filters,
 * AVX-512) summed that layer's weight gradient in 157 us on one thread,
 * 155 GFLOP/s, against the panel kernel's 300 us (5 + 4 taps: 158 us; 6 +
 * 3: 163; 9 x 2 filters: 184).
 *
 * NAME(m, nf, x, pix, qc, x_row, g_row, nrows, g, g_filter, tile,
 * tile_taps): adds, for tap t < m (input offset pix[t]) and filter f < nf
 * (output gradient g + f * g_filter), over rows k < nrows (input row x +
 * x_row[k], output gradient row g + g_row[k]) and pixels j < qc of each,
 * x_row[k][pix[t] + j] * g_row[k][j] into lane j % L of tile[(f *
 * tile_taps + t) * L]. */
#define FC_DIRECT_LANES_DEFINE(NAME, T, VT, TARGET, L, MR, NF, LOADZ)                      \
FC_INLINE TARGET VT NAME##_load(const T *p)                                               \
{                                                                                          \
    VT v;                                                                                  \
    __builtin_memcpy(&v, p, sizeof v);                                                     \
    return v;                                                                              \
}                                                                                          \
FC_INLINE TARGET void NAME##_block(                                                       \
    const int M, const int NFB, const T *x, const ptrdiff_t *pix, ptrdiff_t qc,            \
    const ptrdiff_t *x_row, const ptrdiff_t *g_row, ptrdiff_t nrows, const T *g,           \
    ptrdiff_t g_filter, T *tile, ptrdiff_t tile_taps)                                      \
{                                                                                          \
    VT acc[MR][NF], gv[NF], xv;                                                            \
    int t, f;                                                                              \
    ptrdiff_t k, j;                                                                        \
    for (f = 0; f < NFB; f++)                                                              \
        for (t = 0; t < M; t++) acc[t][f] = NAME##_load(tile + (f * tile_taps + t) * L);   \
    for (k = 0; k < nrows; k++) {                                                          \
        const T *xr = x + x_row[k], *gr = g + g_row[k];                                    \
        for (j = 0; j + L <= qc; j += L) {                                                 \
            for (f = 0; f < NFB; f++) gv[f] = NAME##_load(gr + f * g_filter + j);          \
            for (t = 0; t < M; t++) {                                                      \
                xv = NAME##_load(xr + pix[t] + j);                                         \
                for (f = 0; f < NFB; f++) acc[t][f] += xv * gv[f];                         \
            }                                                                              \
        }                                                                                  \
        if (j < qc) {                                                                      \
            const int n = (int)(qc - j);                                                   \
            for (f = 0; f < NFB; f++) gv[f] = LOADZ(n, gr + f * g_filter + j);             \
            for (t = 0; t < M; t++) {                                                      \
                xv = LOADZ(n, xr + pix[t] + j);                                            \
                for (f = 0; f < NFB; f++) acc[t][f] += xv * gv[f];                         \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    for (f = 0; f < NFB; f++)                                                              \
        for (t = 0; t < M; t++)                                                            \
            __builtin_memcpy(tile + (f * tile_taps + t) * L, &acc[t][f], sizeof(VT));      \
}                                                                                          \
FC_INLINE TARGET void NAME##_taps(                                                        \
    const int M, ptrdiff_t nf, const T *x, const ptrdiff_t *pix, ptrdiff_t qc,             \
    const ptrdiff_t *x_row, const ptrdiff_t *g_row, ptrdiff_t nrows, const T *g,           \
    ptrdiff_t g_filter, T *tile, ptrdiff_t tile_taps)                                      \
{                                                                                          \
    /* NF filters at a time, then one at a time */                                        \
    ptrdiff_t f0 = 0;                                                                      \
    for (; f0 + NF <= nf; f0 += NF)                                                        \
        NAME##_block(M, NF, x, pix, qc, x_row, g_row, nrows, g + f0 * g_filter, g_filter,  \
                     tile + f0 * tile_taps * L, tile_taps);                                \
    for (; f0 < nf; f0++)                                                                  \
        NAME##_block(M, 1, x, pix, qc, x_row, g_row, nrows, g + f0 * g_filter, g_filter,   \
                     tile + f0 * tile_taps * L, tile_taps);                                \
}                                                                                          \
static TARGET void NAME(                                                                   \
    ptrdiff_t m, ptrdiff_t nf, const T *x, const ptrdiff_t *pix, ptrdiff_t qc,             \
    const ptrdiff_t *x_row, const ptrdiff_t *g_row, ptrdiff_t nrows, const T *g,           \
    ptrdiff_t g_filter, T *tile, ptrdiff_t tile_taps)                                      \
{                                                                                          \
    /* MR taps at a time (the caller's tiles have at most MR) */                          \
    ptrdiff_t t0;                                                                          \
    for (t0 = 0; t0 < m; t0 += MR) {                                                       \
        const ptrdiff_t mt = m - t0 < MR ? m - t0 : MR;                                    \
        T *tile_t0 = tile + t0 * L;                                                        \
        switch (mt) {                                                                      \
        FC_DIRECT_LANES_CASES(MR, NAME)                                                    \
        }                                                                                  \
    }                                                                                      \
}

#define FC_DIRECT_LANES_CASE(NAME, M) case M: NAME##_taps(M, nf, x, pix + t0, qc, x_row,   \
    g_row, nrows, g, g_filter, tile_t0, tile_taps); break;
#define FC_DIRECT_LANES_CASES(MR, NAME) FC_DIRECT_LANES_CASES_(MR, NAME)
#define FC_DIRECT_LANES_CASES_(MR, NAME) FC_DIRECT_LANES_CASES_##MR(NAME)
#define FC_DIRECT_LANES_CASES_3(NAME) FC_DIRECT_LANES_CASE(NAME, 3)                        \
    FC_DIRECT_LANES_CASE(NAME, 2) default: FC_DIRECT_LANES_CASE(NAME, 1)
#define FC_DIRECT_LANES_CASES_6(NAME) FC_DIRECT_LANES_CASE(NAME, 6)                        \
    FC_DIRECT_LANES_CASE(NAME, 5) FC_DIRECT_LANES_CASE(NAME, 4) FC_DIRECT_LANES_CASES_3(NAME)

#endif
