/* AVX-512 instantiation of the direct tile kernel (_direct_vector.h; the
 * contract is in _direct_generic.h). Compiled with target attributes, called
 * only where __builtin_cpu_supports reports avx512f and avx512vl.
 *
 * Register blocking: 6 pixels x 4 zmm of filters (64 float32 or 32 float64
 * filters): 24 accumulators, 4 weight vectors and a broadcast in 32
 * registers; per (channel, tap) 4 vector loads and 6 broadcasts for 24
 * FMAs. Measured (prototype, fp32, 2 threads, ms for ResNet-50 5b / 4b / 3b
 * / 2a 3x3, the weights' packing included): 6 x 4 vectors 11.1 / 8.3 / 8.7
 * / 9.7; 8 x 3 vectors 9.7 / 8.8 / 9.2 / 13.1 (48 filters split 64 badly);
 * 7 x 4 (oneDNN's 28 accumulators) 11.4 / 8.4 / 8.7 / 9.9.
 *
 * Narrow tiles, for groups of at most 32 float32 (16 float64) filters: 14
 * pixels x 2 zmm, 28 accumulators (oneDNN's count), 2 weight vectors and a
 * broadcast in 31 registers; per (channel, tap) 2 vector loads and 14
 * broadcasts for 28 FMAs. With 32 filters the wide tile computes 32
 * zero-padded ones beside them: DeepSpeech2's 21x11/2 layer (32 -> 32
 * channels) took 54.7-57.1 ms wide and 26.2-26.6 narrow (fused 39-41),
 * its 41x11/2 first layer 14.2-14.8 and 8.5-9.2 (fp32, 2 threads, the two
 * builds alternated in one session). 14 pixels rather than 12 (Zen 5,
 * processes alternated, fp32, 2 threads): DeepSpeech2 conv2 forward
 * 11.7-12.0 -> 11.0-11.8 ms, conv1 2.78-3.18 -> 2.77-3.07; their gradients,
 * paper_mnist's and MTCNN's the same within noise; no FMA reads the stack.
 *
 * Medium tiles, for groups of 33-48 filters (65-96, ...: wherever 48-filter
 * blocks pad fewer zeros than 64-filter ones): 8 pixels x 3 zmm, 24
 * accumulators again; per (channel, tap) 3 vector loads and 8 broadcasts
 * for 24 FMAs. Inception's 5x5 input gradient (48 filters over 64
 * channels) computed 16 zero filters in every wide tile.
 */
#ifndef FASTCONV_DIRECT_AVX512_H
#define FASTCONV_DIRECT_AVX512_H

#include <immintrin.h>
#include "_direct_vector.h"
#include "_fused_avx512.h"   /* fc_transpose16_f32, fc_transpose8_f64 */

/* GCC 12's global common subexpression elimination left the narrow tile's
 * unit-stride loop (then 12 pixels) one register short: 24 accumulators, 2 weight
 * vectors and a broadcast fit 32 zmm, but the copies it made around the tap
 * loop spilled an accumulator, whose FMA then went through the stack every
 * iteration (a load, the FMA, a store; 53 % of the kernel's samples on
 * DeepSpeech2's input gradient, perf). The narrow tile is compiled without
 * the pass; the others, which did not spill, keep it (all tiles without it:
 * ResNet-50 3a 3x3/2 2-3 % slower in one A/B, within noise in another).
 * Clang has no per-function optimize attribute. */
#define FC_DIRECT_AVX512_TARGET __attribute__((target("avx512f,avx512vl,fma")))
#if defined(__GNUC__) && !defined(__clang__)
#define FC_DIRECT_AVX512N_TARGET __attribute__((target("avx512f,avx512vl,fma"), optimize("no-gcse")))
#else
#define FC_DIRECT_AVX512N_TARGET FC_DIRECT_AVX512_TARGET
#endif
#ifndef FC_DIRECT_AVX512_MR
#define FC_DIRECT_AVX512_MR 6
#define FC_DIRECT_AVX512_NV 4
#endif
#define FC_DIRECT_AVX512_NR_F32 (16 * FC_DIRECT_AVX512_NV)
#define FC_DIRECT_AVX512_NR_F64 (8 * FC_DIRECT_AVX512_NV)
#define FC_DIRECT_AVX512N_MR 14
#define FC_DIRECT_AVX512N_NV 2
#define FC_DIRECT_AVX512N_NR_F32 (16 * FC_DIRECT_AVX512N_NV)
#define FC_DIRECT_AVX512N_NR_F64 (8 * FC_DIRECT_AVX512N_NV)
#define FC_DIRECT_AVX512M_MR 8
#define FC_DIRECT_AVX512M_NV 3
#define FC_DIRECT_AVX512M_NR_F32 (16 * FC_DIRECT_AVX512M_NV)
#define FC_DIRECT_AVX512M_NR_F64 (8 * FC_DIRECT_AVX512M_NV)

typedef float fc_direct_v16sf __attribute__((vector_size(64)));
typedef double fc_direct_v8df __attribute__((vector_size(64)));

FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512_f32, float, fc_direct_v16sf, FC_DIRECT_AVX512_TARGET,
                        FC_DIRECT_AVX512_MR, FC_DIRECT_AVX512_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512_f64, double, fc_direct_v8df, FC_DIRECT_AVX512_TARGET,
                        FC_DIRECT_AVX512_MR, FC_DIRECT_AVX512_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512n_f32, float, fc_direct_v16sf, FC_DIRECT_AVX512N_TARGET,
                        FC_DIRECT_AVX512N_MR, FC_DIRECT_AVX512N_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512n_f64, double, fc_direct_v8df, FC_DIRECT_AVX512N_TARGET,
                        FC_DIRECT_AVX512N_MR, FC_DIRECT_AVX512N_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512m_f32, float, fc_direct_v16sf, FC_DIRECT_AVX512_TARGET,
                        FC_DIRECT_AVX512M_MR, FC_DIRECT_AVX512M_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx512m_f64, double, fc_direct_v8df, FC_DIRECT_AVX512_TARGET,
                        FC_DIRECT_AVX512M_MR, FC_DIRECT_AVX512M_NV)

/* The weight gradient's lanes kernel (_direct_vector.h): 6 taps x 4
 * filters, 24 accumulators + 4 vectors of the output gradient + the
 * input's, 29 of the 32 registers; per vector of pixels 10 loads for 24
 * FMAs. Stand-alone on paper_mnist's weight gradient (one thread): 6 x 4
 * 157-161 us, 9 x 2 184 us, 9 x 3 (31 registers) 207 us. */
#define FC_DIRECT_AVX512_LANES_MR 6
#define FC_DIRECT_AVX512_LANES_NF 4
FC_INLINE FC_DIRECT_AVX512_TARGET fc_direct_v16sf fc_direct_lanes_loadz_avx512_f32(int n,
                                                                               const float *p)
{
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
FC_INLINE FC_DIRECT_AVX512_TARGET fc_direct_v8df fc_direct_lanes_loadz_avx512_f64(int n,
                                                                              const double *p)
{
    return _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
}
FC_DIRECT_LANES_DEFINE(fc_direct_lanes_avx512_f32, float, fc_direct_v16sf,
                       FC_DIRECT_AVX512_TARGET, 16, FC_DIRECT_AVX512_LANES_MR,
                       FC_DIRECT_AVX512_LANES_NF, fc_direct_lanes_loadz_avx512_f32)
FC_DIRECT_LANES_DEFINE(fc_direct_lanes_avx512_f64, double, fc_direct_v8df,
                       FC_DIRECT_AVX512_TARGET, 8, FC_DIRECT_AVX512_LANES_MR,
                       FC_DIRECT_AVX512_LANES_NF, fc_direct_lanes_loadz_avx512_f64)

/* Packing a panel (direct.pyx's _pack_panel has the contract and the
 * portable loop): nf <= NR filter rows of `depth` = channels x taps
 * weights, `rows` apart, into rows of NR filters (zeros past nf), row
 * tap * tap_rows + channel, the taps reversed if flip. LANES filters x LANES depth steps are LANES masked
 * loads along the weight rows, one register transpose and LANES stores.
 * The portable loop wrote each element alone, NR apart: 15 % of ResNet-50
 * 5b's run (perf), its 512 x 4608 weights packed every call. */
#define FC_DIRECT_AVX512_PACK(NAME, T, VEC, LANES, NR, MASK, LOADZ, STORE, TRANSPOSE)      \
static FC_DIRECT_AVX512_TARGET void NAME(const T *w, ptrdiff_t rows, ptrdiff_t nf,         \
                                         ptrdiff_t depth, ptrdiff_t taps, int flip,       \
                                         ptrdiff_t tap_rows, T *panel)                    \
{                                                                                          \
    VEC r[LANES];                                                                          \
    ptrdiff_t d0, f0;                                                                      \
    int i;                                                                                 \
    /* LANES weight rows at a time, along their whole depth: LANES streams */         \
    /* for the prefetcher, not NR (NR rows at a time: 11 % of ResNet-50 5b) */         \
    for (f0 = 0; f0 < NR; f0 += LANES) {                                                   \
        for (d0 = 0; d0 < depth; d0 += LANES) {                                            \
            const int nd = depth - d0 < LANES ? (int)(depth - d0) : LANES;                 \
            const MASK m = (MASK)((1u << nd) - 1u);                                        \
            for (i = 0; i < LANES; i++)                                                    \
                r[i] = LOADZ(f0 + i < nf ? m : (MASK)0, w + (f0 + i) * rows + d0);         \
            TRANSPOSE(r);                                                                  \
            for (i = 0; i < nd; i++) {                                                     \
                const ptrdiff_t c = (d0 + i) / taps, t = d0 + i - c * taps;                \
                const ptrdiff_t row = (flip ? taps - 1 - t : t) * tap_rows + c;            \
                STORE(panel + row * NR + f0, r[i]);                                        \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}

/* The input gradient's panel, packed from the forward weights (direct.pyx's
 * _pack_strided has the contract and the portable loop): a filter's taps
 * are `taps` apart from the next filter's, so a panel row (one channel, one
 * tap, LANES filters) is a gather at stride taps from one run of the
 * forward row, which the run's first touch brings into L1. The portable
 * loop took 29 % of ResNet-50 4b's input gradient (perf). */
#define FC_DIRECT_AVX512_PACK_ADJOINT(NAME, T, VEC, LANES, NR, MASK, IDX, INDEX, GATHER,   \
                                      STORE, ZERO)                                        \
static FC_DIRECT_AVX512_TARGET void NAME(const T *w, ptrdiff_t channel_step, ptrdiff_t nf, \
                                         ptrdiff_t channels, ptrdiff_t taps, int reverse, \
                                         ptrdiff_t tap_rows, T *panel)                    \
{                                                                                          \
    const IDX index = INDEX;                                                               \
    ptrdiff_t c, f0, t;                                                                    \
    for (c = 0; c < channels; c++) {                                                       \
        const T *run = w + c * channel_step;                                               \
        for (f0 = 0; f0 < NR; f0 += LANES) {                                               \
            const ptrdiff_t left = nf - f0;                                                \
            const MASK m = left >= LANES ? (MASK)~0u                                       \
                           : (left > 0 ? (MASK)((1u << left) - 1u) : (MASK)0);             \
            for (t = 0; t < taps; t++) {                                                   \
                const ptrdiff_t row = (reverse ? taps - 1 - t : t) * tap_rows + c;         \
                STORE(panel + row * NR + f0, GATHER(ZERO, m, index, run + f0 * taps + t)); \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}

#define FC_DIRECT_GATHER_F32(zero, m, index, p) _mm512_mask_i32gather_ps(zero, m, index, p, 4)
#define FC_DIRECT_GATHER_F64(zero, m, index, p) _mm512_mask_i32gather_pd(zero, m, index, p, 8)

FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512_f32, float, __m512, 16, FC_DIRECT_AVX512_NR_F32,
                      __mmask16, _mm512_maskz_loadu_ps, _mm512_store_ps, fc_transpose16_f32)
FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512_f64, double, __m512d, 8, FC_DIRECT_AVX512_NR_F64,
                      __mmask8, _mm512_maskz_loadu_pd, _mm512_store_pd, fc_transpose8_f64)
FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512n_f32, float, __m512, 16, FC_DIRECT_AVX512N_NR_F32,
                      __mmask16, _mm512_maskz_loadu_ps, _mm512_store_ps, fc_transpose16_f32)
FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512n_f64, double, __m512d, 8, FC_DIRECT_AVX512N_NR_F64,
                      __mmask8, _mm512_maskz_loadu_pd, _mm512_store_pd, fc_transpose8_f64)
FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512m_f32, float, __m512, 16, FC_DIRECT_AVX512M_NR_F32,
                      __mmask16, _mm512_maskz_loadu_ps, _mm512_store_ps, fc_transpose16_f32)
FC_DIRECT_AVX512_PACK(fc_direct_pack_avx512m_f64, double, __m512d, 8, FC_DIRECT_AVX512M_NR_F64,
                      __mmask8, _mm512_maskz_loadu_pd, _mm512_store_pd, fc_transpose8_f64)

/* (an index vector of lane * taps: taps is only known at the call) */
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512_f32, float, __m512, 16,
    FC_DIRECT_AVX512_NR_F32, __mmask16, __m512i,
    _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                       _mm512_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F32, _mm512_store_ps, _mm512_setzero_ps())
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512_f64, double, __m512d, 8,
    FC_DIRECT_AVX512_NR_F64, __mmask8, __m256i,
    _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F64, _mm512_store_pd, _mm512_setzero_pd())
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512n_f32, float, __m512, 16,
    FC_DIRECT_AVX512N_NR_F32, __mmask16, __m512i,
    _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                       _mm512_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F32, _mm512_store_ps, _mm512_setzero_ps())
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512n_f64, double, __m512d, 8,
    FC_DIRECT_AVX512N_NR_F64, __mmask8, __m256i,
    _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F64, _mm512_store_pd, _mm512_setzero_pd())
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512m_f32, float, __m512, 16,
    FC_DIRECT_AVX512M_NR_F32, __mmask16, __m512i,
    _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                       _mm512_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F32, _mm512_store_ps, _mm512_setzero_ps())
FC_DIRECT_AVX512_PACK_ADJOINT(fc_direct_pack_adjoint_avx512m_f64, double, __m512d, 8,
    FC_DIRECT_AVX512M_NR_F64, __mmask8, __m256i,
    _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32((int)taps)),
    FC_DIRECT_GATHER_F64, _mm512_store_pd, _mm512_setzero_pd())

#endif
