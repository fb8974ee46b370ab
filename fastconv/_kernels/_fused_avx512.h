/* AVX-512 micro-kernels of the fused lowering (see _fused_generic.h for the
 * contract). Compiled with __attribute__((target("avx512f,avx512vl,fma"))),
 * so the package needs no -march flag; fused.pyx calls them only when
 * __builtin_cpu_supports reports avx512f and avx512vl.
 *
 * Register blocking (broadcast-A orientation, as in _fused_avx2.h): NR
 * output columns along NV zmm vectors, MR filters broadcast from the packed
 * weights (the broadcast folds into the FMA's memory operand, {1to16}).
 * 32 zmm registers hold MR*NV accumulators + NV b vectors: MR*NV + NV <= 31.
 * Per depth step: NV loads, MR broadcasts, MR*NV FMAs.
 *
 * Zen 4 runs a 512-bit FMA as two 256-bit halves (1 zmm FMA per cycle, the
 * same FLOPs as AVX2's 2 ymm FMAs); AVX-512 still wins by its 32 registers:
 * a bigger tile, fewer loads per FMA. Measured (one thread, CPU time, float32,
 * GFLOP/s on ResNet-50 2a_3x3 / 4b_3x3 / 5b_3x3 / VGG-16 3_2):
 *     8 x 48 (24 accumulators)   90 / 92 / 82 / 101   <- default
 *    12 x 32 (24)                79 / 89 / 85 /  98
 *    14 x 32 (28)                79 / 79 / 81 /  98
 *     6 x 64 (24)                79 / 92 / 81 / 105
 *    16 x 16 (16)                78 / 79 / 74 /  97
 * (AVX2 4 x 24 on the same layers: 77 / 90 / 86 / 90.) 8 rows divide every
 * filter count of the layer list, and 48 columns = 3 vectors keep 3 loads
 * per 24 FMAs. The kernel alone, in cache: 117 GFLOP/s (~97 % of the core's
 * peak), so what the convolution loses is packing and edges. float64: 8 x 24
 * (8 x 3 vectors of 8) beat 12 x 16 (50 vs 44 GFLOP/s on 2a; dgemm: 53).
 */
#ifndef FASTCONV_FUSED_AVX512_H
#define FASTCONV_FUSED_AVX512_H

#include <immintrin.h>
#include <stddef.h>

#define FC_AVX512_TARGET __attribute__((target("avx512f,avx512vl,fma")))
#ifndef FC_INLINE
#define FC_INLINE static inline __attribute__((always_inline))
#endif

FC_INLINE FC_AVX512_TARGET void
fc_avx512_f32_body(const int MR, const int NV, ptrdiff_t a_row, ptrdiff_t a_step,
                   ptrdiff_t kc, const float *a, const float *b,
                   float *c, ptrdiff_t ldc, int first, const float *bias)
{
    __m512 acc[16][4];
    int i, v;
    ptrdiff_t k;
#pragma GCC unroll 16
    for (i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) {
            _mm_prefetch((const char *)(c + i * ldc + 16 * v), _MM_HINT_T0);
            acc[i][v] = _mm512_setzero_ps();
        }
    }
#pragma GCC unroll 2
    for (k = 0; k < kc; k++) {
        __m512 bv[4];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + v * 16);
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * a_row]);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += a_step;
        b += 16 * NV;
    }
#pragma GCC unroll 16
    for (i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        if (!first) {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                _mm512_storeu_ps(ci + 16 * v, _mm512_add_ps(_mm512_loadu_ps(ci + 16 * v), acc[i][v]));
        } else if (bias) {
            __m512 bi = _mm512_set1_ps(bias[i]);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm512_storeu_ps(ci + 16 * v, _mm512_add_ps(acc[i][v], bi));
        } else {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm512_storeu_ps(ci + 16 * v, acc[i][v]);
        }
    }
}

FC_INLINE FC_AVX512_TARGET void
fc_avx512_f64_body(const int MR, const int NV, ptrdiff_t a_row, ptrdiff_t a_step,
                   ptrdiff_t kc, const double *a, const double *b,
                   double *c, ptrdiff_t ldc, int first, const double *bias)
{
    __m512d acc[16][4];
    int i, v;
    ptrdiff_t k;
#pragma GCC unroll 16
    for (i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) {
            _mm_prefetch((const char *)(c + i * ldc + 8 * v), _MM_HINT_T0);
            acc[i][v] = _mm512_setzero_pd();
        }
    }
#pragma GCC unroll 2
    for (k = 0; k < kc; k++) {
        __m512d bv[4];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) bv[v] = _mm512_loadu_pd(b + v * 8);
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            __m512d ai = _mm512_set1_pd(a[i * a_row]);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_pd(ai, bv[v], acc[i][v]);
        }
        a += a_step;
        b += 8 * NV;
    }
#pragma GCC unroll 16
    for (i = 0; i < MR; i++) {
        double *ci = c + i * ldc;
        if (!first) {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                _mm512_storeu_pd(ci + 8 * v, _mm512_add_pd(_mm512_loadu_pd(ci + 8 * v), acc[i][v]));
        } else if (bias) {
            __m512d bi = _mm512_set1_pd(bias[i]);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm512_storeu_pd(ci + 8 * v, _mm512_add_pd(acc[i][v], bi));
        } else {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm512_storeu_pd(ci + 8 * v, acc[i][v]);
        }
    }
}

/* lda == 0: a packed panel (MR values per depth step); lda > 0: MR rows of
 * the weights read in place, lda apart (see _fused_generic.h). Each case is
 * its own specialised copy of the body. */
#define FC_DEFINE_AVX512(NAME, T, SUF, MR, NV)                                        \
static FC_AVX512_TARGET void NAME(ptrdiff_t kc, const T *a, ptrdiff_t lda, const T *b, \
                                  T *c, ptrdiff_t ldc, int first, const T *bias)     \
{                                                                                    \
    if (lda == 0) fc_avx512_##SUF##_body(MR, NV, 1, MR, kc, a, b, c, ldc, first, bias); \
    else fc_avx512_##SUF##_body(MR, NV, lda, 1, kc, a, b, c, ldc, first, bias);        \
}

/* -DFC_AVX512_MR_F32=12 -DFC_AVX512_NV_F32=2 etc. build another tile */
#ifndef FC_AVX512_MR_F32
#define FC_AVX512_MR_F32 8
#define FC_AVX512_NV_F32 3
#endif
#ifndef FC_AVX512_MR_F64
#define FC_AVX512_MR_F64 8
#define FC_AVX512_NV_F64 3
#endif
#define FC_AVX512_NR_F32 (16 * FC_AVX512_NV_F32)
#define FC_AVX512_NR_F64 (8 * FC_AVX512_NV_F64)

FC_DEFINE_AVX512(fc_ukr_avx512_f32, float, f32, FC_AVX512_MR_F32, FC_AVX512_NV_F32)
FC_DEFINE_AVX512(fc_ukr_avx512_f64, double, f64, FC_AVX512_MR_F64, FC_AVX512_NV_F64)

/* Packing a micro-panel (contract in _fused_generic.h). Unit column step
 * (stride 1, contiguous rows: every 3x3 stride-1 layer): a row of the panel
 * is NV registers, zeroed, into which each segment's valid columns are
 * merged by masked loads (masked-off lanes neither load nor fault); the
 * masks make the padding zeros, so a row is ns*NV loads and NV full stores,
 * no scalar tails. ResNet-50 2a_3x3 (64 filters: the packing is amortised
 * least): packing took 22 % of the run as a scalar-copy Cython loop, 13 %
 * now, and the layer went from 89 to 97 GFLOP/s. Other column steps (stride
 * 2, strided views): the portable loop. */
#ifndef FC_PACK_AHEAD
/* Software prefetch distance of the packing, in table rows: consecutive
 * rows read different channel planes / taps, which the hardware prefetcher
 * does not follow; 8 rows ahead gained 1-2 % on ResNet-50 2a (4: less, 16:
 * the same). */
#define FC_PACK_AHEAD 8
#endif
#define FC_DEFINE_AVX512_PACK(NAME, T, VT, LANES, MASKT, ZERO, MLOAD, STORE, GENERIC)   \
FC_INLINE FC_AVX512_TARGET void NAME##_body(const int NV, T *panel, ptrdiff_t nr, ptrdiff_t kcb,               \
                                  const ptrdiff_t *table, const T *x_group,            \
                                  const ptrdiff_t *segs, int ns, ptrdiff_t col_step)    \
{                                                                                       \
    ptrdiff_t r, a, b;                                                                  \
    int s, v;                                                                           \
    (void)col_step; /* 1: the dispatcher below checked */                            \
    for (r = 0; r < kcb; r++) {                                                         \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                               \
        VT acc[4];                                                                      \
        if (r + FC_PACK_AHEAD < kcb) {                                                  \
            /* the row FC_PACK_AHEAD ahead reads another channel plane or    */         \
            /* tap: fetch its first segment (NV*64 bytes from its start)     */         \
            const char *ahead = (const char *)(x_group + segs[FC_SEG_BASE] + segs[FC_SEG_OW] \
                + row[FC_PACK_AHEAD * FC_ROW_FIELDS + FC_ROW_OFFSET]);                  \
            for (v = 0; v <= NV * LANES * (int)sizeof(T) / 64; v++)                     \
                _mm_prefetch(ahead + 64 * v, _MM_HINT_T0);                              \
        }                                                                               \
        for (v = 0; v < NV; v++) acc[v] = ZERO();                                       \
        for (s = 0; s < ns; s++) {                                                      \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                            \
            ptrdiff_t lo, hi;                                                           \
            unsigned long long m;                                                       \
            const T *p;                                                                 \
            if (!fc_valid_range(row, seg, &a, &b)) continue;                            \
            /* panel lanes [lo, hi) <- p[lo .. hi): one 64-bit lane mask for the */ \
            /* row (NR <= 64), a slice of it per vector, no per-vector branches */   \
            /* (a zero slice loads nothing): 13.1 -> 11.9 % of 2a_3x3 in packing */ \
            lo = seg[FC_SEG_POS] + (a - seg[FC_SEG_OW]);                                \
            hi = lo + (b - a);                                                          \
            m = (hi >= 64 ? ~0ull : (1ull << hi) - 1u) & ~((1ull << lo) - 1u);          \
            p = x_group + (seg[FC_SEG_BASE] + row[FC_ROW_OFFSET] + a - lo);             \
            for (v = 0; v < NV; v++)                                                    \
                acc[v] = MLOAD(acc[v], (MASKT)(m >> (v * LANES)), p + v * LANES);      \
        }                                                                               \
        for (v = 0; v < NV; v++) STORE(panel + r * nr + v * LANES, acc[v]);             \
    }                                                                                   \
} \
static FC_AVX512_TARGET void NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb,                         \
                  const ptrdiff_t *table, const T *x_group,                              \
                  const ptrdiff_t *segs, int ns, ptrdiff_t col_step)                      \
{                                                                                         \
    /* a constant NV keeps the row in registers (a run-time one spilled it) */            \
    if (col_step == 1 && nr == LANES)                                                     \
        NAME##_body(1, panel, nr, kcb, table, x_group, segs, ns, col_step);               \
    else if (col_step == 1 && nr == 2 * LANES)                                            \
        NAME##_body(2, panel, nr, kcb, table, x_group, segs, ns, col_step);               \
    else if (col_step == 1 && nr == 3 * LANES)                                            \
        NAME##_body(3, panel, nr, kcb, table, x_group, segs, ns, col_step);               \
    else if (col_step == 1 && nr == 4 * LANES)                                            \
        NAME##_body(4, panel, nr, kcb, table, x_group, segs, ns, col_step);               \
    else                                                                                  \
        GENERIC(panel, nr, kcb, table, x_group, segs, ns, col_step);                      \
}

FC_DEFINE_AVX512_PACK(fc_pack_avx512_f32, float, __m512, 16, __mmask16, _mm512_setzero_ps,
                      _mm512_mask_loadu_ps, _mm512_storeu_ps, fc_pack_generic_f32)
FC_DEFINE_AVX512_PACK(fc_pack_avx512_f64, double, __m512d, 8, __mmask8, _mm512_setzero_pd,
                      _mm512_mask_loadu_pd, _mm512_storeu_pd, fc_pack_generic_f64)

/* Packing a micro-panel of linear columns (contract in _fused_generic.h):
 * per row, each segment is NV masked loads from one contiguous run, merged
 * into NV registers, and NV stores; no range arithmetic per row. ResNet-50
 * 4b_3x3 (14x14 maps): the segment packer above took 13 % of the layer's
 * run (4-5 segments of one output row per 48-column panel, a range
 * decision and NV masked loads each). */
#define FC_DEFINE_AVX512_PACK_LINEAR(NAME, T, VT, LANES, MASKT, ZERO, MLOAD, STORE, GENERIC) \
FC_INLINE FC_AVX512_TARGET void NAME##_body(const int NV, T *panel, ptrdiff_t nr, ptrdiff_t kcb, \
        const ptrdiff_t *table, const T *x_group, const ptrdiff_t *bases,                   \
        const unsigned long long *masks, int ns, int taps, int tap0)                         \
{                                                                                           \
    ptrdiff_t r;                                                                            \
    int s, v, t = tap0;                                                                     \
    for (r = 0; r < kcb; r++) {                                                             \
        const T *row_src = x_group + table[r * FC_ROW_FIELDS + FC_ROW_OFFSET];              \
        VT acc[4];                                                                          \
        if (r + FC_PACK_AHEAD < kcb)                                                        \
            for (v = 0; v <= NV * LANES * (int)sizeof(T) / 64; v++)                         \
                _mm_prefetch((const char *)(x_group + bases[0] + 64 / sizeof(T) * v         \
                    + table[(r + FC_PACK_AHEAD) * FC_ROW_FIELDS + FC_ROW_OFFSET]), _MM_HINT_T0); \
        for (v = 0; v < NV; v++) acc[v] = ZERO();                                           \
        for (s = 0; s < ns; s++) {                                                          \
            unsigned long long m = masks[s * taps + t];                                     \
            const T *p = row_src + bases[s];                                                \
            for (v = 0; v < NV; v++)                                                        \
                acc[v] = MLOAD(acc[v], (MASKT)(m >> (v * LANES)), p + v * LANES);           \
        }                                                                                   \
        for (v = 0; v < NV; v++) STORE(panel + r * nr + v * LANES, acc[v]);                 \
        if (++t == taps) t = 0;                                                             \
    }                                                                                       \
}                                                                                           \
static FC_AVX512_TARGET void NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb, const ptrdiff_t *table, \
        const T *x_group, const ptrdiff_t *bases, const unsigned long long *masks,          \
        int ns, int taps, int tap0)                                                         \
{                                                                                           \
    if (nr == LANES)                                                                        \
        NAME##_body(1, panel, nr, kcb, table, x_group, bases, masks, ns, taps, tap0);       \
    else if (nr == 2 * LANES)                                                               \
        NAME##_body(2, panel, nr, kcb, table, x_group, bases, masks, ns, taps, tap0);       \
    else if (nr == 3 * LANES)                                                               \
        NAME##_body(3, panel, nr, kcb, table, x_group, bases, masks, ns, taps, tap0);       \
    else if (nr == 4 * LANES)                                                               \
        NAME##_body(4, panel, nr, kcb, table, x_group, bases, masks, ns, taps, tap0);       \
    else                                                                                    \
        GENERIC(panel, nr, kcb, table, x_group, bases, masks, ns, taps, tap0);              \
}

FC_DEFINE_AVX512_PACK_LINEAR(fc_pack_linear_avx512_f32, float, __m512, 16, __mmask16,
                             _mm512_setzero_ps, _mm512_mask_loadu_ps, _mm512_storeu_ps,
                             fc_pack_linear_generic_f32)
FC_DEFINE_AVX512_PACK_LINEAR(fc_pack_linear_avx512_f64, double, __m512d, 8, __mmask8,
                             _mm512_setzero_pd, _mm512_mask_loadu_pd, _mm512_storeu_pd,
                             fc_pack_linear_generic_f64)

/* Packing weights (contract in _fused_generic.h): a full panel of mr = 8
 * filters is one 8-lane gather per depth step (the 8 values of a step are
 * ld apart). The scalar loop took ~5 cycles per value (3.7 ms for ResNet-50
 * 5b_3x3's 512 x 4608 weights, 7.5 % of that layer's run); the gathers
 * ~1. Edge panels and other MR: the portable loop. */
static FC_AVX512_TARGET void fc_pack_a_avx512_f32(const float *w, ptrdiff_t ld, ptrdiff_t m,
                                                  ptrdiff_t mr, ptrdiff_t kcb, float *d)
{
    ptrdiff_t k;
    if (m != 8 || mr != 8 || 7 * ld > 0x7fffffff) {
        fc_pack_a_generic_f32(w, ld, m, mr, kcb, d);
        return;
    }
    {
        const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32((int)ld));
        for (k = 0; k < kcb; k++)
            _mm256_storeu_ps(d + 8 * k, _mm256_i32gather_ps(w + k, idx, 4));
    }
}

static FC_AVX512_TARGET void fc_pack_a_avx512_f64(const double *w, ptrdiff_t ld, ptrdiff_t m,
                                                  ptrdiff_t mr, ptrdiff_t kcb, double *d)
{
    ptrdiff_t k;
    if (m != 8 || mr != 8 || 7 * ld > 0x7fffffff) {
        fc_pack_a_generic_f64(w, ld, m, mr, kcb, d);
        return;
    }
    {
        const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32((int)ld));
        for (k = 0; k < kcb; k++)
            _mm512_storeu_pd(d + 8 * k, _mm512_i32gather_pd(idx, w + k, 8));
    }
}

#endif /* FASTCONV_FUSED_AVX512_H */
