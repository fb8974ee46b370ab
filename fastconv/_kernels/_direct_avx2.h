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

#endif
