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
                   ptrdiff_t kc, const float *a, const float *b, ptrdiff_t b_step,
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
        b += b_step;
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
                   ptrdiff_t kc, const double *a, const double *b, ptrdiff_t b_step,
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
        b += b_step;
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
 * the weights read in place, lda apart. ldb == the kernel's width (NV
 * vectors): a packed micro-panel of B; other ldb: B's rows read in place, ldb
 * apart (a pointwise layer's channel rows of x; see _fused_generic.h). Each
 * case is its own specialised copy of the body, so the packed cases keep
 * their constant steps. */
#define FC_DEFINE_AVX512(NAME, T, SUF, MR, NV)                                        \
static FC_AVX512_TARGET void NAME(ptrdiff_t kc, const T *a, ptrdiff_t lda, const T *b,      \
                               ptrdiff_t ldb, T *c, ptrdiff_t ldc, int first,          \
                               const T *bias)                                          \
{                                                                                      \
    const ptrdiff_t packed = (ptrdiff_t)(64 / sizeof(T)) * NV;                          \
    if (lda == 0 && ldb == packed)                                                     \
        fc_avx512_##SUF##_body(MR, NV, 1, MR, kc, a, b, packed, c, ldc, first, bias);  \
    else if (lda == 0)                                                                 \
        fc_avx512_##SUF##_body(MR, NV, 1, MR, kc, a, b, ldb, c, ldc, first, bias);     \
    else if (ldb == packed)                                                            \
        fc_avx512_##SUF##_body(MR, NV, lda, 1, kc, a, b, packed, c, ldc, first, bias); \
    else fc_avx512_##SUF##_body(MR, NV, lda, 1, kc, a, b, ldb, c, ldc, first, bias);   \
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

/* Narrow kernels, the same MR with 1 or 2 vectors of columns, for the last
 * micro-panel of a column block when it is mostly padding (fused.pyx packs
 * that panel narrower): ResNet-50 5b_3x3's 8 x 49 = 392 columns are 8
 * panels of 48 and one of 8 valid, 10 % of its multiply-adds on padding
 * with the full tile, 2 % with a 16-column one. */
#if FC_AVX512_NV_F32 > 1
FC_DEFINE_AVX512(fc_ukr_avx512_f32_nv1, float, f32, FC_AVX512_MR_F32, 1)
#else
#define fc_ukr_avx512_f32_nv1 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX512_NV_F32 > 2
FC_DEFINE_AVX512(fc_ukr_avx512_f32_nv2, float, f32, FC_AVX512_MR_F32, 2)
#else
#define fc_ukr_avx512_f32_nv2 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX512_NV_F64 > 1
FC_DEFINE_AVX512(fc_ukr_avx512_f64_nv1, double, f64, FC_AVX512_MR_F64, 1)
#else
#define fc_ukr_avx512_f64_nv1 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif
#if FC_AVX512_NV_F64 > 2
FC_DEFINE_AVX512(fc_ukr_avx512_f64_nv2, double, f64, FC_AVX512_MR_F64, 2)
#else
#define fc_ukr_avx512_f64_nv2 0  /* none: the full tile (fc_ukr_narrow_*) */
#endif

/* Packing a micro-panel (contract in _fused_generic.h). Unit column step
 * (stride 1, contiguous rows: every 3x3 stride-1 layer): a row of the panel
 * is NV registers, zeroed, into which each segment's valid columns are
 * merged by masked loads (masked-off lanes neither load nor fault); the
 * masks make the padding zeros, so a row is ns*NV loads and NV full stores,
 * no scalar tails. ResNet-50 2a_3x3 (64 filters: the packing is amortised
 * least): packing took 22 % of the run as a scalar-copy Cython loop, 13 %
 * now, and the layer went from 89 to 97 GFLOP/s. Column step 2: the
 * stride-2 packer (FC_DEFINE_AVX512_PACK_STEP2, below), or where it declines
 * the strided packer that follows, which takes the other steps too. */
#ifndef FC_PACK_AHEAD
/* Software prefetch distance of the packing, in table rows: consecutive
 * rows read different channel planes / taps, which the hardware prefetcher
 * does not follow; 8 rows ahead gained 1-2 % on ResNet-50 2a (4: less, 16:
 * the same). */
#define FC_PACK_AHEAD 8
#endif
/* Packing strided columns (col_step != 1: stride 2 and up, strided views;
 * same contract). Lane l of a segment reads p[l * col_step], p the lane-0
 * address of the segment's run. Stride 2 (every stride-2 layer on
 * contiguous rows): the 2*LANES input elements under a vector are two
 * masked loads (only the segment's run enabled: masked-off lanes neither
 * load nor fault, and load zeros) and one two-source permute that keeps the
 * even ones, OR-ed into the row;
 * other steps: one masked gather per vector. The portable loop, which ran
 * these before, took 20 % of ResNet-50 3a_3x3/2's run and 23 % of the
 * stem's (perf, one thread). A vector whose lanes a segment misses is
 * skipped (a branch per vector, unlike the unit-step packer: two loads and
 * a permute each): 3a 3x3/2 0.945-0.96x, the stem 0.96-1.02x (interleaved
 * A/B, fp32, 2 threads); the stem's packing 18 -> 16.8 % by perf. */
/* bits [a, b) of a 64-bit mask (clipped to 0..63) */
static inline unsigned long long fc_bit_range64(ptrdiff_t a, ptrdiff_t b)
{
    if (a < 0) a = 0;
    if (b > 64) b = 64;
    if (b <= a) return 0;
    return (b == 64 ? ~0ull : (1ull << b) - 1u) & ~((1ull << a) - 1u);
}

/* The source masks of panel lanes [lo, hi) at column step 2, one per vector
 * v of nv (bit e: load element e of the 2*lanes under the vector, from lane
 * 0's input element + 2*lanes*v): input elements [2lo, 2hi - 1), the odd
 * ones between inside the same run, so one contiguous range of bits (no
 * per-vector bit spreading: that cost more than the loads). */
static inline void fc_step2_masks(ptrdiff_t lo, ptrdiff_t hi, int nv, int lanes,
                                  unsigned int *sv)
{
    const unsigned long long src0 = fc_bit_range64(2 * lo, 2 * hi - 1);
    const unsigned long long src1 = fc_bit_range64(2 * lo - 64, 2 * hi - 65);
    int v;
    for (v = 0; v < nv; v++) {
        const int o = 2 * lanes * v;
        sv[v] = (unsigned int)(o < 64 ? src0 >> o : src1 >> (o - 64))
                & (unsigned int)((1ull << (2 * lanes)) - 1);
    }
}

/* The permute index that keeps the even elements of two vectors (lanes:
 * 16 floats or 8 doubles per vector): lane i <- element 2i of (lo, hi). */
FC_INLINE FC_AVX512_TARGET __m512i fc_avx512_even_index(int lanes)
{
    return lanes == 16
        ? _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
        : _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
}

/* acc | the even elements of p[0 .. 2*LANES), those outside src (bit e:
 * load p[e]) zero */
FC_INLINE FC_AVX512_TARGET __m512 fc_avx512_even_f32(__m512 acc, unsigned int src, const float *p,
                                                     __m512i even)
{
    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)src, p);
    __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(src >> 16), p + 16);
    /* an integer OR: _mm512_or_ps is AVX-512DQ */
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(acc),
        _mm512_castps_si512(_mm512_permutex2var_ps(lo, even, hi))));
}

FC_INLINE FC_AVX512_TARGET __m512d fc_avx512_even_f64(__m512d acc, unsigned int src, const double *p,
                                                      __m512i even)
{
    __m512d lo = _mm512_maskz_loadu_pd((__mmask8)src, p);
    __m512d hi = _mm512_maskz_loadu_pd((__mmask8)(src >> 8), p + 8);
    return _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(acc),
        _mm512_castpd_si512(_mm512_permutex2var_pd(lo, even, hi))));
}

FC_INLINE FC_AVX512_TARGET __m512 fc_avx512_gather_f32(__m512 acc, __mmask16 m, const float *p,
                                                       ptrdiff_t step)
{
    __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                       12, 13, 14, 15),
                                     _mm512_set1_epi32((int)step));
    return _mm512_mask_i32gather_ps(acc, m, idx, p, 4);
}

FC_INLINE FC_AVX512_TARGET __m512d fc_avx512_gather_f64(__m512d acc, __mmask8 m, const double *p,
                                                        ptrdiff_t step)
{
    __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                     _mm256_set1_epi32((int)step));
    return _mm512_mask_i32gather_pd(acc, m, idx, p, 8);
}

#define FC_DEFINE_AVX512_PACK_STRIDED(NAME, T, VT, LANES, MASKT, ZERO, STORE, EVEN, GATHER) \
FC_INLINE FC_AVX512_TARGET void NAME##_strided_body(const int NV, const int STEP2,          \
        T *panel, ptrdiff_t nr, ptrdiff_t kcb, const ptrdiff_t *table, const T *x_group,    \
        const ptrdiff_t *segs, int ns, ptrdiff_t col_step)                                  \
{                                                                                           \
    const __m512i even = fc_avx512_even_index(LANES);                                       \
    const int lines = NV * LANES * (int)sizeof(T) * (STEP2 ? 2 : 1) / 64;                   \
    ptrdiff_t r, a, b;                                                                      \
    int s, v;                                                                               \
    for (r = 0; r < kcb; r++) {                                                             \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                                   \
        VT acc[4];                                                                          \
        if (r + FC_PACK_AHEAD < kcb) { /* as in the unit-step packer below */               \
            const char *ahead = (const char *)(x_group + segs[FC_SEG_BASE]                  \
                + segs[FC_SEG_OW] * col_step                                                \
                + row[FC_PACK_AHEAD * FC_ROW_FIELDS + FC_ROW_OFFSET]);                      \
            for (v = 0; v <= lines; v++) _mm_prefetch(ahead + 64 * v, _MM_HINT_T0);         \
        }                                                                                   \
        for (v = 0; v < NV; v++) acc[v] = ZERO();                                           \
        for (s = 0; s < ns; s++) {                                                          \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                                \
            ptrdiff_t lo, hi;                                                               \
            unsigned long long m;                                                           \
            const T *p;                                                                     \
            if (!fc_valid_range(row, seg, &a, &b)) continue;                                \
            lo = seg[FC_SEG_POS] + (a - seg[FC_SEG_OW]);                                    \
            hi = lo + (b - a);                                                              \
            p = x_group + (seg[FC_SEG_BASE] + row[FC_ROW_OFFSET] + (a - lo) * col_step);    \
            if (STEP2) {                                                                    \
                unsigned int sv[4];                                                         \
                fc_step2_masks(lo, hi, NV, LANES, sv);                                      \
                for (v = 0; v < NV; v++)                                                    \
                    if (sv[v]) /* a vector the segment misses: skip its 2 loads */          \
                        acc[v] = EVEN(acc[v], sv[v], p + 2 * LANES * v, even);              \
                continue;                                                                   \
            }                                                                               \
            m = fc_bit_range64(lo, hi);                                                     \
            for (v = 0; v < NV; v++) {                                                      \
                MASKT mv = (MASKT)(m >> (v * LANES));                                       \
                if (mv) /* a gather costs even when masked off */                           \
                    acc[v] = GATHER(acc[v], mv, p + v * LANES * col_step, col_step);        \
            }                                                                               \
        }                                                                                   \
        for (v = 0; v < NV; v++) STORE(panel + r * nr + v * LANES, acc[v]);                 \
    }                                                                                       \
}                                                                                           \
/* 1 if it packed the panel, 0 for the portable loop (other NR; steps whose */            \
/* gather offsets would not fit 32 bits) */                                                 \
static FC_AVX512_TARGET int NAME##_strided(T *panel, ptrdiff_t nr, ptrdiff_t kcb,          \
        const ptrdiff_t *table, const T *x_group, const ptrdiff_t *segs, int ns,            \
        ptrdiff_t col_step)                                                                 \
{                                                                                           \
    const int step2 = col_step == 2;                                                        \
    if (col_step > 0x7fffffff / 64 || col_step < -(0x7fffffff / 64)) return 0;             \
    if (nr == LANES) {                                                                      \
        if (step2) NAME##_strided_body(1, 1, panel, nr, kcb, table, x_group, segs, ns, col_step); \
        else NAME##_strided_body(1, 0, panel, nr, kcb, table, x_group, segs, ns, col_step); \
    } else if (nr == 2 * LANES) {                                                           \
        if (step2) NAME##_strided_body(2, 1, panel, nr, kcb, table, x_group, segs, ns, col_step); \
        else NAME##_strided_body(2, 0, panel, nr, kcb, table, x_group, segs, ns, col_step); \
    } else if (nr == 3 * LANES) {                                                           \
        if (step2) NAME##_strided_body(3, 1, panel, nr, kcb, table, x_group, segs, ns, col_step); \
        else NAME##_strided_body(3, 0, panel, nr, kcb, table, x_group, segs, ns, col_step); \
    } else if (nr == 4 * LANES) {                                                           \
        if (step2) NAME##_strided_body(4, 1, panel, nr, kcb, table, x_group, segs, ns, col_step); \
        else NAME##_strided_body(4, 0, panel, nr, kcb, table, x_group, segs, ns, col_step); \
    } else {                                                                                \
        return 0;                                                                           \
    }                                                                                       \
    return 1;                                                                               \
}

FC_DEFINE_AVX512_PACK_STRIDED(fc_pack_avx512_f32, float, __m512, 16, __mmask16,
                              _mm512_setzero_ps, _mm512_storeu_ps, fc_avx512_even_f32,
                              fc_avx512_gather_f32)
FC_DEFINE_AVX512_PACK_STRIDED(fc_pack_avx512_f64, double, __m512d, 8, __mmask8,
                              _mm512_setzero_pd, _mm512_storeu_pd, fc_avx512_even_f64,
                              fc_avx512_gather_f64)

/* Packing stride-2 columns with the lane masks found once per micro-panel
 * (same contract as the segment packer, plus S, the kernel's width, and
 * ks0, the kernel column of the first row: table rows are (channel, kernel
 * row, kernel column), so row r has kernel column (ks0 + r) % S). Which
 * lanes of a segment a row reads depends only on its kernel column (the
 * row's output column range) once its output row is inside the input, so
 * the per-vector source masks are built for the S columns first, and a row
 * is one output-row test per segment, then the same loads and permutes as
 * the segment packer, which spent its time on the range arithmetic per
 * (row, segment): about 34 cycles per row of the stem's 48-column panels
 * (3 channels x 7 x 7 taps, 2 segments), a quarter of the layer's run
 * (perf). 0: not packed (more masks than the stack holds, or a width
 * that is not 1-4 whole vectors), the caller packs it the usual way. */
#define FC_STEP2_MAX_MASKS 1024
#define FC_DEFINE_AVX512_PACK_STEP2(NAME, T, VT, LANES, ZERO, STORE, EVEN)                 \
FC_INLINE FC_AVX512_TARGET void NAME##_body(const int NV, T *panel, ptrdiff_t nr,         \
        ptrdiff_t kcb, const ptrdiff_t *table, const T *x_group, const ptrdiff_t *segs,     \
        int ns, ptrdiff_t S, ptrdiff_t ks0, const unsigned int *masks)                      \
{                                                                                           \
    const __m512i even = fc_avx512_even_index(LANES);                                       \
    const int lines = NV * LANES * (int)sizeof(T) * 2 / 64;                                 \
    ptrdiff_t r, ks = ks0;                                                                  \
    int s, v;                                                                               \
    for (r = 0; r < kcb; r++) {                                                             \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                                   \
        VT acc[4];                                                                          \
        if (r + FC_PACK_AHEAD < kcb) { /* as in the unit-step packer */                     \
            const char *ahead = (const char *)(x_group + segs[FC_SEG_BASE]                  \
                + segs[FC_SEG_OW] * 2 + row[FC_PACK_AHEAD * FC_ROW_FIELDS + FC_ROW_OFFSET]); \
            for (v = 0; v <= lines; v++) _mm_prefetch(ahead + 64 * v, _MM_HINT_T0);         \
        }                                                                                   \
        for (v = 0; v < NV; v++) acc[v] = ZERO();                                           \
        for (s = 0; s < ns; s++) {                                                          \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                                \
            const unsigned int *sv = masks + (s * S + ks) * NV;                             \
            const T *p;                                                                     \
            if (seg[FC_SEG_OH] < row[FC_ROW_OH_LO] || seg[FC_SEG_OH] >= row[FC_ROW_OH_HI])   \
                continue;                                                                   \
            /* lane 0's input element: masked-off lanes neither load nor fault */           \
            p = x_group + (seg[FC_SEG_BASE] + row[FC_ROW_OFFSET]                            \
                           + 2 * (seg[FC_SEG_OW] - seg[FC_SEG_POS]));                       \
            for (v = 0; v < NV; v++)                                                        \
                if (sv[v]) acc[v] = EVEN(acc[v], sv[v], p + 2 * LANES * v, even);           \
        }                                                                                   \
        for (v = 0; v < NV; v++) STORE(panel + r * nr + v * LANES, acc[v]);                 \
        if (++ks == S) ks = 0;                                                              \
    }                                                                                       \
}                                                                                           \
static FC_AVX512_TARGET int NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb,                    \
        const ptrdiff_t *table, const T *x_group, const ptrdiff_t *segs, int ns,            \
        ptrdiff_t S, ptrdiff_t ks0)                                                         \
{                                                                                           \
    unsigned int masks[FC_STEP2_MAX_MASKS];                                                 \
    const int NV = (int)(nr / LANES);                                                       \
    ptrdiff_t r, a, b;                                                                      \
    int s;                                                                                  \
    if (nr % LANES || NV < 1 || NV > 4 || (ptrdiff_t)ns * S * NV > FC_STEP2_MAX_MASKS)     \
        return 0;                                                                           \
    /* per (segment, kernel column): the column range alone (the output row */            \
    /* is tested per row) */                                                                \
    for (r = 0; r < S && r < kcb; r++) {                                                    \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                                   \
        const ptrdiff_t ks = (ks0 + r) % S;                                                 \
        for (s = 0; s < ns; s++) {                                                          \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                                \
            ptrdiff_t lo = 0, hi = 0;                                                       \
            if (fc_column_range(row, seg, &a, &b)) {                                        \
                lo = seg[FC_SEG_POS] + (a - seg[FC_SEG_OW]);                                \
                hi = lo + (b - a);                                                          \
            }                                                                               \
            fc_step2_masks(lo, hi, NV, LANES, masks + (s * S + ks) * NV);                   \
        }                                                                                   \
    }                                                                                       \
    switch (NV) {                                                                           \
    case 1: NAME##_body(1, panel, nr, kcb, table, x_group, segs, ns, S, ks0, masks); break; \
    case 2: NAME##_body(2, panel, nr, kcb, table, x_group, segs, ns, S, ks0, masks); break; \
    case 3: NAME##_body(3, panel, nr, kcb, table, x_group, segs, ns, S, ks0, masks); break; \
    default: NAME##_body(4, panel, nr, kcb, table, x_group, segs, ns, S, ks0, masks); break; \
    }                                                                                       \
    return 1;                                                                               \
}

FC_DEFINE_AVX512_PACK_STEP2(fc_pack_step2_avx512_f32, float, __m512, 16, _mm512_setzero_ps,
                            _mm512_storeu_ps, fc_avx512_even_f32)
FC_DEFINE_AVX512_PACK_STEP2(fc_pack_step2_avx512_f64, double, __m512d, 8, _mm512_setzero_pd,
                            _mm512_storeu_pd, fc_avx512_even_f64)

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
            m = fc_bit_range64(lo, hi);                                                 \
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
    else if (!NAME##_strided(panel, nr, kcb, table, x_group, segs, ns, col_step))         \
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

/* The weight gradient's transposing pack of B^T (fused.pyx's _pack_bt has
 * the contract and the portable loop): one micro-panel's rows (NR table
 * rows) x a run of segments (columns of one output row of one image). A
 * panel row is a table row, a panel column a depth step, so the input runs
 * along the panel's columns: LANES rows x up to LANES columns are LANES
 * masked loads (each row's padding is its mask), one register transpose
 * and one store per column. The portable loop wrote each element alone,
 * NR elements apart (perf: ~1/3 of ResNet-50 3b's weight gradient).
 * Column steps 1 and 2 (stride 2: the strided packer's even-element loads);
 * returns 0 for the portable loop otherwise. */
FC_INLINE FC_AVX512_TARGET void fc_transpose16_f32(__m512 r[16])
{
    __m512 t[16];
    int i, c;
    /* 2x2 blocks of elements, then 4x4 (64-bit pairs), then 128-bit lanes */
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d e = _mm512_castps_pd(t[4 * i + 1]), f = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(e, f));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(e, f));
    }
    for (c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
    for (c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

FC_INLINE FC_AVX512_TARGET void fc_transpose8_f64(__m512d r[8])
{
    __m512d t[8];
    int i, c;
    for (i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (c = 0; c < 2; c++) {
        r[c] = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88);
        r[2 + c] = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xdd);
        r[4 + c] = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
        r[6 + c] = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xdd);
    }
    for (c = 0; c < 2; c++) {
        t[c] = _mm512_shuffle_f64x2(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f64x2(r[c], r[4 + c], 0xdd);
        t[2 + c] = _mm512_shuffle_f64x2(r[2 + c], r[6 + c], 0x88);
        t[6 + c] = _mm512_shuffle_f64x2(r[2 + c], r[6 + c], 0xdd);
    }
    for (i = 0; i < 8; i++) r[i] = t[i];
}

/* panel: the micro-panel (row jrow of depth step k at panel[k*nr + jrow]);
 * rows: its first table row; nvalid: rows that exist (zeros past them);
 * segment s: panel columns seg_off[s] + t, t < seg_run[s], read input row
 * seg_base[s] (+ a table row's offset) from output column seg_ow[s] + t of
 * output row seg_oh[s]. */
#define FC_DEFINE_AVX512_PACK_BT(NAME, T, VT, LANES, MASKT, MLOAD, STORE, TRANSPOSE, ZERO, EVEN) \
static FC_AVX512_TARGET int NAME(T *panel, ptrdiff_t nr, ptrdiff_t nvalid,                \
        const ptrdiff_t *rows, const T *x_group, const ptrdiff_t *seg_base,               \
        const ptrdiff_t *seg_oh, const ptrdiff_t *seg_ow, const ptrdiff_t *seg_off,       \
        const ptrdiff_t *seg_run, int ns, ptrdiff_t col_step)                             \
{                                                                                         \
    const __m512i even = fc_avx512_even_index(LANES);                                     \
    ptrdiff_t rb, t0, lo[LANES], hi[LANES];                                               \
    const T *src[LANES];                                                                  \
    int s, i;                                                                             \
    if ((col_step != 1 && col_step != 2) || nr % LANES) return 0;                         \
    for (rb = 0; rb < nr; rb += LANES) {                                                  \
        for (s = 0; s < ns; s++) {                                                        \
            const ptrdiff_t ow = seg_ow[s], run = seg_run[s], oh = seg_oh[s];             \
            for (i = 0; i < LANES; i++) {                                                 \
                const ptrdiff_t *row = rows + (rb + i) * FC_ROW_FIELDS;                   \
                lo[i] = hi[i] = 0;                                                        \
                src[i] = x_group;                                                         \
                if (rb + i < nvalid && oh >= row[FC_ROW_OH_LO] && oh < row[FC_ROW_OH_HI]) { \
                    lo[i] = row[FC_ROW_OW_LO] > ow ? row[FC_ROW_OW_LO] - ow : 0;          \
                    hi[i] = row[FC_ROW_OW_HI] - ow < run ? row[FC_ROW_OW_HI] - ow : run;  \
                    src[i] = x_group + seg_base[s] + row[FC_ROW_OFFSET] + ow * col_step;  \
                }                                                                         \
            }                                                                             \
            for (t0 = 0; t0 < run; t0 += LANES) {                                         \
                const ptrdiff_t len = run - t0 < LANES ? run - t0 : LANES;                \
                T *d = panel + (seg_off[s] + t0) * nr + rb;                               \
                VT r[LANES];                                                              \
                ptrdiff_t k;                                                              \
                for (i = 0; i < LANES; i++) {                                             \
                    ptrdiff_t a = lo[i] - t0 > 0 ? lo[i] - t0 : 0;                        \
                    ptrdiff_t b = hi[i] - t0 < len ? hi[i] - t0 : len;                    \
                    unsigned int m = (unsigned int)fc_bit_range64(a, b);                  \
                    if (col_step == 1)                                                    \
                        r[i] = MLOAD((MASKT)m, src[i] + t0);                              \
                    else /* stride 2: elements [2a, 2b - 1) of the row's run */           \
                        r[i] = EVEN(ZERO(), (unsigned int)fc_bit_range64(2 * a, 2 * b - 1), \
                                    src[i] + 2 * t0, even);                               \
                }                                                                         \
                TRANSPOSE(r);                                                             \
                for (k = 0; k < len; k++) STORE(d + k * nr, r[k]);                        \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    return 1;                                                                             \
}

FC_DEFINE_AVX512_PACK_BT(fc_pack_bt_avx512_f32, float, __m512, 16, __mmask16,
                         _mm512_maskz_loadu_ps, _mm512_storeu_ps, fc_transpose16_f32,
                         _mm512_setzero_ps, fc_avx512_even_f32)
FC_DEFINE_AVX512_PACK_BT(fc_pack_bt_avx512_f64, double, __m512d, 8, __mmask8,
                         _mm512_maskz_loadu_pd, _mm512_storeu_pd, fc_transpose8_f64,
                         _mm512_setzero_pd, fc_avx512_even_f64)

#endif /* FASTCONV_FUSED_AVX512_H */
