/* AVX2 + FMA micro-kernels of the fused lowering (see _fused_generic.h for
 * the contract). Compiled with __attribute__((target("avx2,fma"))), so the
 * package itself needs no -march flag; fused.pyx calls them only when
 * __builtin_cpu_supports says the CPU (and OS) has AVX2 and FMA.
 *
 * Register blocking (broadcast-A orientation): NR output columns lie along
 * NV vectors (the contiguous direction of the output and of B's rows,
 * packed or read in place), and each of the MR filters is broadcast from the
 * packed weights.
 * Per depth step: NV vector loads of b, MR broadcasts, MR*NV FMAs.
 * 16 ymm registers hold MR*NV accumulators + NV b vectors + 1 broadcast, so
 * MR*NV + NV + 1 <= 16: 6x2 (6 x 16 floats: 12 + 2 + 1 = 15) or 4x3
 * (4 x 24 floats: 12 + 3 + 1 = 16). Both keep 12 independent FMA chains,
 * more than the 2 pipes x 4 cycles latency = 8 Zen 4 needs in flight.
 * Measured on Zen 4 (one thread, CPU time, KC=576): 4x3 won, 93 / 88 / 104
 * GFLOP/s on ResNet-50 2a_3x3 / 5b_3x3 / VGG-16 3_2 against 88 / 88 / 104
 * for 6x2 and 75 / 80 / 85 for 8x1; 4 also divides every filter count of
 * the layer list (no edge panels). The kernel alone: 109 GFLOP/s in cache.
 */
#ifndef FASTCONV_FUSED_AVX2_H
#define FASTCONV_FUSED_AVX2_H

#include <immintrin.h>
#include <stddef.h>

#define FC_AVX2_TARGET __attribute__((target("avx2,fma")))
#define FC_INLINE static inline __attribute__((always_inline))

/* float: MR x NV vectors of 8; double: MR x NV vectors of 4 */
FC_INLINE FC_AVX2_TARGET void
fc_avx2_f32_body(const int MR, const int NV, ptrdiff_t a_row, ptrdiff_t a_step,
                 ptrdiff_t kc, const float *a, const float *b, ptrdiff_t b_step,
                 float *c, ptrdiff_t ldc, int first, const float *bias)
{
    __m256 acc[8][4];
    int i, v;
    ptrdiff_t k;
#pragma GCC unroll 8
    for (i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 8 * NV - 1), _MM_HINT_T0);
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    }
#pragma GCC unroll 2
    for (k = 0; k < kc; k++) {
        __m256 bv[4];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + v * 8);
#pragma GCC unroll 8
        for (i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * a_row);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += a_step;
        b += b_step;
    }
#pragma GCC unroll 8
    for (i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        if (!first) {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                _mm256_storeu_ps(ci + 8 * v, _mm256_add_ps(_mm256_loadu_ps(ci + 8 * v), acc[i][v]));
        } else if (bias) {
            __m256 bi = _mm256_broadcast_ss(bias + i);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm256_storeu_ps(ci + 8 * v, _mm256_add_ps(acc[i][v], bi));
        } else {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm256_storeu_ps(ci + 8 * v, acc[i][v]);
        }
    }
}

FC_INLINE FC_AVX2_TARGET void
fc_avx2_f64_body(const int MR, const int NV, ptrdiff_t a_row, ptrdiff_t a_step,
                 ptrdiff_t kc, const double *a, const double *b, ptrdiff_t b_step,
                 double *c, ptrdiff_t ldc, int first, const double *bias)
{
    __m256d acc[8][4];
    int i, v;
    ptrdiff_t k;
#pragma GCC unroll 8
    for (i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 4 * NV - 1), _MM_HINT_T0);
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_pd();
    }
#pragma GCC unroll 2
    for (k = 0; k < kc; k++) {
        __m256d bv[4];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) bv[v] = _mm256_loadu_pd(b + v * 4);
#pragma GCC unroll 8
        for (i = 0; i < MR; i++) {
            __m256d ai = _mm256_broadcast_sd(a + i * a_row);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_pd(ai, bv[v], acc[i][v]);
        }
        a += a_step;
        b += b_step;
    }
#pragma GCC unroll 8
    for (i = 0; i < MR; i++) {
        double *ci = c + i * ldc;
        if (!first) {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                _mm256_storeu_pd(ci + 4 * v, _mm256_add_pd(_mm256_loadu_pd(ci + 4 * v), acc[i][v]));
        } else if (bias) {
            __m256d bi = _mm256_broadcast_sd(bias + i);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm256_storeu_pd(ci + 4 * v, _mm256_add_pd(acc[i][v], bi));
        } else {
#pragma GCC unroll 4
            for (v = 0; v < NV; v++) _mm256_storeu_pd(ci + 4 * v, acc[i][v]);
        }
    }
}

/* lda == 0: a packed panel; lda > 0: MR weight rows in place; ldb == the
 * kernel's width (NV vectors): a packed micro-panel of B, other ldb: B's rows
 * in place (see _fused_generic.h) */
#define FC_DEFINE_AVX2(NAME, T, SUF, MR, NV)                                        \
static FC_AVX2_TARGET void NAME(ptrdiff_t kc, const T *a, ptrdiff_t lda, const T *b,      \
                               ptrdiff_t ldb, T *c, ptrdiff_t ldc, int first,          \
                               const T *bias)                                          \
{                                                                                      \
    const ptrdiff_t packed = (ptrdiff_t)(32 / sizeof(T)) * NV;                          \
    if (lda == 0 && ldb == packed)                                                     \
        fc_avx2_##SUF##_body(MR, NV, 1, MR, kc, a, b, packed, c, ldc, first, bias);  \
    else if (lda == 0)                                                                 \
        fc_avx2_##SUF##_body(MR, NV, 1, MR, kc, a, b, ldb, c, ldc, first, bias);     \
    else if (ldb == packed)                                                            \
        fc_avx2_##SUF##_body(MR, NV, lda, 1, kc, a, b, packed, c, ldc, first, bias); \
    else fc_avx2_##SUF##_body(MR, NV, lda, 1, kc, a, b, ldb, c, ldc, first, bias);   \
}

/* the defaults (see the top of this file): float 4 x 24, double 4 x 12;
 * -DFC_AVX2_MR_F32=6 -DFC_AVX2_NV_F32=2 etc. build another tile to measure */
#ifndef FC_AVX2_MR_F32
#define FC_AVX2_MR_F32 4
#define FC_AVX2_NV_F32 3
#endif
#ifndef FC_AVX2_MR_F64
#define FC_AVX2_MR_F64 4
#define FC_AVX2_NV_F64 3
#endif
#define FC_AVX2_NR_F32 (8 * FC_AVX2_NV_F32)
#define FC_AVX2_NR_F64 (4 * FC_AVX2_NV_F64)

FC_DEFINE_AVX2(fc_ukr_avx2_f32, float, f32, FC_AVX2_MR_F32, FC_AVX2_NV_F32)
FC_DEFINE_AVX2(fc_ukr_avx2_f64, double, f64, FC_AVX2_MR_F64, FC_AVX2_NV_F64)

/* narrow kernels for a block's last micro-panel (see _fused_avx512.h) */
#if FC_AVX2_NV_F32 > 1
FC_DEFINE_AVX2(fc_ukr_avx2_f32_nv1, float, f32, FC_AVX2_MR_F32, 1)
#else
#define fc_ukr_avx2_f32_nv1 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX2_NV_F32 > 2
FC_DEFINE_AVX2(fc_ukr_avx2_f32_nv2, float, f32, FC_AVX2_MR_F32, 2)
#else
#define fc_ukr_avx2_f32_nv2 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX2_NV_F64 > 1
FC_DEFINE_AVX2(fc_ukr_avx2_f64_nv1, double, f64, FC_AVX2_MR_F64, 1)
#else
#define fc_ukr_avx2_f64_nv1 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX2_NV_F64 > 2
FC_DEFINE_AVX2(fc_ukr_avx2_f64_nv2, double, f64, FC_AVX2_MR_F64, 2)
#else
#define fc_ukr_avx2_f64_nv2 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif

/* Packing a micro-panel (contract in _fused_generic.h), unit column step:
 * as the AVX-512 version (_fused_avx512.h), with vmaskmov loads (masked-off
 * lanes read as zero and do not fault) OR-ed into the row's registers (the
 * segments' lanes are disjoint). Other steps: the portable loop. */
FC_INLINE FC_AVX2_TARGET __m256i fc_avx2_lane_mask(ptrdiff_t lo, ptrdiff_t hi, int lanes)
{
    /* all-ones 32-bit (float) or 64-bit (double) lanes i with lo <= i < hi */
    if (lanes == 8) {
        __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32((int)lo - 1));
        __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), idx);
        return _mm256_and_si256(ge, lt);
    } else {
        __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
        __m256i ge = _mm256_cmpgt_epi64(idx, _mm256_set1_epi64x(lo - 1));
        __m256i lt = _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi), idx);
        return _mm256_and_si256(ge, lt);
    }
}

#ifndef FC_PACK_AHEAD
/* software prefetch distance of the packing, in table rows (_fused_avx512.h) */
#define FC_PACK_AHEAD 8
#endif
#define FC_DEFINE_AVX2_PACK(NAME, T, VT, LANES, ZERO, MLOAD, OR, STORE, GENERIC)         \
FC_INLINE FC_AVX2_TARGET void NAME##_body(const int NV, T *panel, ptrdiff_t nr, ptrdiff_t kcb,                 \
                                const ptrdiff_t *table, const T *x_group,              \
                                const ptrdiff_t *segs, int ns, ptrdiff_t col_step)      \
{                                                                                       \
    ptrdiff_t r, a, b;                                                                  \
    int s, v;                                                                           \
    (void)col_step; /* 1: the dispatcher below checked */                            \
    for (r = 0; r < kcb; r++) {                                                         \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                               \
        VT acc[4];                                                                      \
        if (r + FC_PACK_AHEAD < kcb) { /* see _fused_avx512.h */                        \
            const char *ahead = (const char *)(x_group + segs[FC_SEG_BASE] + segs[FC_SEG_OW] \
                + row[FC_PACK_AHEAD * FC_ROW_FIELDS + FC_ROW_OFFSET]);                  \
            for (v = 0; v <= NV * LANES * (int)sizeof(T) / 64; v++)                     \
                _mm_prefetch(ahead + 64 * v, _MM_HINT_T0);                              \
        }                                                                               \
        for (v = 0; v < NV; v++) acc[v] = ZERO();                                       \
        for (s = 0; s < ns; s++) {                                                      \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                            \
            ptrdiff_t lo, hi;                                                           \
            const T *p;                                                                 \
            if (!fc_valid_range(row, seg, &a, &b)) continue;                            \
            lo = seg[FC_SEG_POS] + (a - seg[FC_SEG_OW]);                                \
            hi = lo + (b - a);                                                          \
            p = x_group + (seg[FC_SEG_BASE] + row[FC_ROW_OFFSET] + a - lo);             \
            for (v = 0; v < NV; v++) {                                                  \
                ptrdiff_t l = lo - v * LANES, h = hi - v * LANES;                       \
                if (h <= 0 || l >= LANES) continue;                                     \
                acc[v] = OR(acc[v], MLOAD(p + v * LANES, fc_avx2_lane_mask(l, h, LANES))); \
            }                                                                           \
        }                                                                               \
        for (v = 0; v < NV; v++) STORE(panel + r * nr + v * LANES, acc[v]);             \
    }                                                                                   \
} \
static FC_AVX2_TARGET void NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb,                         \
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

FC_DEFINE_AVX2_PACK(fc_pack_avx2_f32, float, __m256, 8, _mm256_setzero_ps, _mm256_maskload_ps,
                    _mm256_or_ps, _mm256_storeu_ps, fc_pack_generic_f32)
FC_DEFINE_AVX2_PACK(fc_pack_avx2_f64, double, __m256d, 4, _mm256_setzero_pd, _mm256_maskload_pd,
                    _mm256_or_pd, _mm256_storeu_pd, fc_pack_generic_f64)

/* Packing weights, and the weight gradient's G (contract in
 * _fused_generic.h: m <= mr rows, leading dimension ld, x kcb depth steps;
 * for each step its mr values, zeros past m): for mr = 4 or 8 (AVX2's and
 * AVX-512's MR; the AVX-512 path calls these too), 8 steps at a time in
 * float (4 in double), each row one vector load, a register transpose, one
 * store per step pair (float) or step (double). Gathering the mr values of
 * a step cost ~1 cycle a value (the scalar loop ~5): still 1.24x the time
 * of writing each value alone on the stem's weight gradient, whose G is
 * packed for every block of rows. The rest of a block: the portable loop. */
static FC_AVX2_TARGET void fc_pack_a_avx2_f32(const float *w, ptrdiff_t ld, ptrdiff_t m,
                                              ptrdiff_t mr, ptrdiff_t kcb, float *d)
{
    ptrdiff_t k = 0;
    int i, c;
    if (mr == 4 || mr == 8) {
        for (; k + 8 <= kcb; k += 8, d += 8 * mr) {
            __m256 r[8], s[8];
            for (i = 0; i < mr; i++)
                r[i] = i < m ? _mm256_loadu_ps(w + i * ld + k) : _mm256_setzero_ps();
            /* s[i + c]: rows i..i+3 of step c (low lane) and of step c + 4 (high) */
            for (i = 0; i < mr; i += 4) {
                const __m256 t0 = _mm256_unpacklo_ps(r[i], r[i + 1]);
                const __m256 t1 = _mm256_unpackhi_ps(r[i], r[i + 1]);
                const __m256 t2 = _mm256_unpacklo_ps(r[i + 2], r[i + 3]);
                const __m256 t3 = _mm256_unpackhi_ps(r[i + 2], r[i + 3]);
                s[i] = _mm256_shuffle_ps(t0, t2, 0x44);
                s[i + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);
                s[i + 2] = _mm256_shuffle_ps(t1, t3, 0x44);
                s[i + 3] = _mm256_shuffle_ps(t1, t3, 0xEE);
            }
            if (mr == 4) {          /* steps 0-1, 2-3, 4-5, 6-7 */
                _mm256_storeu_ps(d, _mm256_permute2f128_ps(s[0], s[1], 0x20));
                _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(s[2], s[3], 0x20));
                _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(s[0], s[1], 0x31));
                _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s[2], s[3], 0x31));
            } else {                /* step c: rows 0-3 from s[c], rows 4-7 from s[c + 4] */
                for (c = 0; c < 4; c++) {
                    _mm256_storeu_ps(d + 8 * c, _mm256_permute2f128_ps(s[c], s[c + 4], 0x20));
                    _mm256_storeu_ps(d + 8 * (c + 4),
                                     _mm256_permute2f128_ps(s[c], s[c + 4], 0x31));
                }
            }
        }
    }
    fc_pack_a_generic_f32(w + k, ld, m, mr, kcb - k, d);
}

static FC_AVX2_TARGET void fc_pack_a_avx2_f64(const double *w, ptrdiff_t ld, ptrdiff_t m,
                                              ptrdiff_t mr, ptrdiff_t kcb, double *d)
{
    ptrdiff_t k = 0;
    int i, c;
    if (mr == 4 || mr == 8) {
        for (; k + 4 <= kcb; k += 4, d += 4 * mr) {
            for (i = 0; i < mr; i += 4) {   /* rows i..i+3: a 4x4 transpose */
                __m256d r[4], t0, t1, t2, t3;
                for (c = 0; c < 4; c++)
                    r[c] = i + c < m ? _mm256_loadu_pd(w + (i + c) * ld + k) : _mm256_setzero_pd();
                t0 = _mm256_unpacklo_pd(r[0], r[1]);
                t1 = _mm256_unpackhi_pd(r[0], r[1]);
                t2 = _mm256_unpacklo_pd(r[2], r[3]);
                t3 = _mm256_unpackhi_pd(r[2], r[3]);
                _mm256_storeu_pd(d + i, _mm256_permute2f128_pd(t0, t2, 0x20));
                _mm256_storeu_pd(d + mr + i, _mm256_permute2f128_pd(t1, t3, 0x20));
                _mm256_storeu_pd(d + 2 * mr + i, _mm256_permute2f128_pd(t0, t2, 0x31));
                _mm256_storeu_pd(d + 3 * mr + i, _mm256_permute2f128_pd(t1, t3, 0x31));
            }
        }
    }
    fc_pack_a_generic_f64(w + k, ld, m, mr, kcb - k, d);
}

#endif /* FASTCONV_FUSED_AVX2_H */
