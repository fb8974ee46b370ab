/* The direct lowering's tile kernel for the x86 instruction sets, written
 * once with GCC/Clang vector extensions and instantiated per ISA (with its
 * target attribute and register blocking) by _direct_avx512.h and
 * _direct_avx2.h. Same contract and loop as the portable kernel in
 * _direct_generic.h: MR pixels x NV vectors of filters held in registers
 * over the whole channel block, per (channel, tap) NV vector loads of the
 * packed weights and one broadcast of each pixel's input value (the
 * compiler folds it into the FMA's memory operand or a vbroadcastss).
 */
#ifndef FASTCONV_DIRECT_VECTOR_H
#define FASTCONV_DIRECT_VECTOR_H

#include <stddef.h>

#ifndef FC_INLINE
#define FC_INLINE static inline __attribute__((always_inline))
#endif

/* NAME(m, ...): the kernel; NAME##_body(M, ...) its loop for M pixels */
#define FC_DIRECT_VECTOR_DEFINE(NAME, T, VT, TARGET, MR, NV)                              \
FC_INLINE TARGET void NAME##_body(                                                        \
    const int M, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    VT acc[MR][NV];                                                                        \
    const T *p[MR];                                                                        \
    int j, v;                                                                              \
    ptrdiff_t c, t;                                                                        \
    for (j = 0; j < M; j++) {                                                              \
        p[j] = x + pix[j];                                                                 \
        for (v = 0; v < NV; v++)                                                           \
            acc[j][v] = first ? (VT){0} : ((const VT *)tile)[j * NV + v];                  \
    }                                                                                      \
    for (t = 0; t < ntaps; t++) {                                                          \
        const T *w = panel + tap_panel[t];                                                 \
        ptrdiff_t off = tap_off[t];                                                        \
        for (c = 0; c < channels; c++) {                                                   \
            VT wv[NV];                                                                     \
            for (v = 0; v < NV; v++) wv[v] = ((const VT *)w)[v];                           \
            for (j = 0; j < M; j++) {                                                      \
                const T xv = p[j][off];                                                    \
                for (v = 0; v < NV; v++) acc[j][v] += xv * wv[v];                          \
            }                                                                              \
            w += panel_channel;                                                            \
            off += x_channel;                                                              \
        }                                                                                  \
    }                                                                                      \
    for (j = 0; j < M; j++)                                                                \
        for (v = 0; v < NV; v++) ((VT *)tile)[j * NV + v] = acc[j][v];                     \
}                                                                                          \
static TARGET void NAME(                                                                   \
    ptrdiff_t m, const T *x, const ptrdiff_t *pix, ptrdiff_t x_channel, ptrdiff_t channels, \
    const ptrdiff_t *tap_off, const ptrdiff_t *tap_panel, ptrdiff_t ntaps,                 \
    const T *panel, ptrdiff_t panel_channel, T *tile, int first)                           \
{                                                                                          \
    /* one copy of the loop per pixel count: a tile's last pixels are not     */           \
    /* computed on duplicates (ResNet-50 5b's classes of 8 pixels: 6 + 2)     */           \
    switch (m < MR ? m : MR) {                                                             \
    FC_DIRECT_CASES(MR, NAME)                                                              \
    }                                                                                      \
}

/* (two levels: MR is expanded before it is pasted) */
#define FC_DIRECT_CASES(MR, NAME) FC_DIRECT_CASES_(MR, NAME)
#define FC_DIRECT_CASES_(MR, NAME) FC_DIRECT_CASES_##MR(NAME)
#define FC_DIRECT_CASE(NAME, M) case M: NAME##_body(M, x, pix, x_channel, channels,       \
    tap_off, tap_panel, ntaps, panel, panel_channel, tile, first); break;
#define FC_DIRECT_CASES_6(NAME) FC_DIRECT_CASE(NAME, 6) FC_DIRECT_CASE(NAME, 5)            \
    FC_DIRECT_CASE(NAME, 4) FC_DIRECT_CASE(NAME, 3) FC_DIRECT_CASE(NAME, 2)                \
    default: FC_DIRECT_CASE(NAME, 1)

#define FC_DIRECT_CASES_8(NAME) FC_DIRECT_CASE(NAME, 8) FC_DIRECT_CASE(NAME, 7)            \
    FC_DIRECT_CASES_6(NAME)
#define FC_DIRECT_CASES_12(NAME) FC_DIRECT_CASE(NAME, 12) FC_DIRECT_CASE(NAME, 11)         \
    FC_DIRECT_CASE(NAME, 10) FC_DIRECT_CASE(NAME, 9) FC_DIRECT_CASES_8(NAME)

#endif
