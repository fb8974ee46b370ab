/* AVX2 + FMA instantiation of the direct tile kernel (_direct_vector.h; the
 * contract is in _direct_generic.h). Compiled with target attributes, called
 * only where __builtin_cpu_supports reports avx2 and fma.
 *
 * Register blocking: 6 pixels x 2 ymm of filters (16 float32 or 8 float64
 * filters): 12 accumulators, 2 weight vectors and a broadcast in the 16
 * registers (oneDNN's AVX2 direct kernels block the same way); per
 * (channel, tap) 2 vector loads and 6 broadcasts for 12 FMAs.
 */
#ifndef FASTCONV_DIRECT_AVX2_H
#define FASTCONV_DIRECT_AVX2_H

#include <immintrin.h>
#include "_direct_vector.h"

#define FC_DIRECT_AVX2_TARGET __attribute__((target("avx2,fma")))
#define FC_DIRECT_AVX2_MR 6
#define FC_DIRECT_AVX2_NV 2
#define FC_DIRECT_AVX2_NR_F32 (8 * FC_DIRECT_AVX2_NV)
#define FC_DIRECT_AVX2_NR_F64 (4 * FC_DIRECT_AVX2_NV)

typedef float fc_direct_v8sf __attribute__((vector_size(32)));
typedef double fc_direct_v4df __attribute__((vector_size(32)));

FC_DIRECT_VECTOR_DEFINE(fc_direct_avx2_f32, float, fc_direct_v8sf, FC_DIRECT_AVX2_TARGET,
                        6, FC_DIRECT_AVX2_NV)
FC_DIRECT_VECTOR_DEFINE(fc_direct_avx2_f64, double, fc_direct_v4df, FC_DIRECT_AVX2_TARGET,
                        6, FC_DIRECT_AVX2_NV)

/* The weight gradient's lanes kernel (_direct_vector.h): 3 taps x 3
 * filters, 9 accumulators + 3 vectors of the output gradient + the
 * input's and the tail's mask, within the 16 registers. */
#define FC_DIRECT_AVX2_LANES_MR 3
#define FC_DIRECT_AVX2_LANES_NF 3
FC_INLINE FC_DIRECT_AVX2_TARGET fc_direct_v8sf fc_direct_lanes_loadz_avx2_f32(int n,
                                                                          const float *p)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}
FC_INLINE FC_DIRECT_AVX2_TARGET fc_direct_v4df fc_direct_lanes_loadz_avx2_f64(int n,
                                                                          const double *p)
{
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lane));
}
FC_DIRECT_LANES_DEFINE(fc_direct_lanes_avx2_f32, float, fc_direct_v8sf, FC_DIRECT_AVX2_TARGET,
                       8, FC_DIRECT_AVX2_LANES_MR, FC_DIRECT_AVX2_LANES_NF,
                       fc_direct_lanes_loadz_avx2_f32)
FC_DIRECT_LANES_DEFINE(fc_direct_lanes_avx2_f64, double, fc_direct_v4df, FC_DIRECT_AVX2_TARGET,
                       4, FC_DIRECT_AVX2_LANES_MR, FC_DIRECT_AVX2_LANES_NF,
                       fc_direct_lanes_loadz_avx2_f64)

/* Storing a tile whose m <= 8 pixels are consecutive in the output
 * (direct.pyx's _store_tile has the contract: out[f * out_filter + j] =
 * tile[j * nr + f] + bias[f], f < nf, j < m; bias may be NULL): 8 filters at
 * a time, the 8 x 8 block (pixels x filters; rows past m zero) transposed in
 * registers, each filter's m pixels one to three stores. The portable loop
 * stores element by element, every one to another output row: the ResNet-50
 * stem (3 channels, so little arithmetic per output) spent 23 % of its
 * direct run there (perf), 6 % now, with direct.pyx prefetching the tile's
 * output rows while it computes; the stem's direct time 0.95x, 3a 3x3/2
 * 0.99x (new build over old, processes alternated, 2 threads). AVX's masked
 * store in place of the 4/2/1-lane stores left it at 15 %. Float32; AVX
 * (used on AVX2 and AVX-512 CPUs). */
/* lanes [0, m) of v to out, m <= 8, in 4-, 2- and 1-lane stores: AVX's
 * masked store (vmaskmovps) is microcoded and slow on AMD */
static inline FC_DIRECT_AVX2_TARGET void fc_direct_store_lanes(float *out, __m256 v, ptrdiff_t m)
{
    __m128 part = _mm256_castps256_ps128(v);
    if (m == 8) {
        _mm256_storeu_ps(out, v);
        return;
    }
    if (m >= 4) {
        _mm_storeu_ps(out, part);
        out += 4;
        m -= 4;
        part = _mm256_extractf128_ps(v, 1);
    }
    if (m >= 2) {
        _mm_storel_pi((__m64 *)out, part);
        out += 2;
        m -= 2;
        part = _mm_movehl_ps(part, part);
    }
    if (m) _mm_store_ss(out, part);
}

static FC_DIRECT_AVX2_TARGET void fc_direct_store_avx2_f32(const float *tile, ptrdiff_t m,
                                                         ptrdiff_t nr, ptrdiff_t nf,
                                                         float *out, ptrdiff_t out_filter,
                                                         const float *bias)
{
    ptrdiff_t f0 = 0, f, j;
    for (; f0 + 8 <= nf; f0 += 8) {
        __m256 r[8], t[8], u[8];
        for (j = 0; j < 8; j++)
            r[j] = j < m ? _mm256_loadu_ps(tile + j * nr + f0) : _mm256_setzero_ps();
        for (j = 0; j < 8; j += 2) {
            t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
            t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
        }
        for (j = 0; j < 8; j += 4) {
            u[j] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
            u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
            u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
            u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (f = 0; f < 4; f++) {   /* filter f: lanes 0-3 from u[f], 4-7 from u[f + 4] */
            r[f] = _mm256_permute2f128_ps(u[f], u[f + 4], 0x20);
            r[f + 4] = _mm256_permute2f128_ps(u[f], u[f + 4], 0x31);
        }
        for (f = 0; f < 8; f++) {
            __m256 v = bias ? _mm256_add_ps(r[f], _mm256_set1_ps(bias[f0 + f])) : r[f];
            fc_direct_store_lanes(out + (f0 + f) * out_filter, v, m);
        }
    }
    for (; f0 < nf; f0++) {
        const float b = bias ? bias[f0] : 0.0f;
        for (j = 0; j < m; j++) out[f0 * out_filter + j] = tile[j * nr + f0] + b;
    }
}

#endif
