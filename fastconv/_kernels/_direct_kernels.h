/* Dispatch of the direct lowering's tile kernels (direct.pyx): the ISA codes
 * and availability test of _fused_kernels.h (0 generic, 1 avx2, 2 avx512). */
#ifndef FASTCONV_DIRECT_KERNELS_H
#define FASTCONV_DIRECT_KERNELS_H

#include <stddef.h>
#include "_fused_kernels.h"
#include "_direct_generic.h"
#if FC_HAVE_X86_KERNELS
#include "_direct_avx2.h"
#include "_direct_avx512.h"
#endif

typedef void (*fc_direct_f32_t)(ptrdiff_t, const float *, const ptrdiff_t *, ptrdiff_t,
                                ptrdiff_t, const ptrdiff_t *, const ptrdiff_t *, ptrdiff_t,
                                const float *, ptrdiff_t, float *, int);
typedef void (*fc_direct_f64_t)(ptrdiff_t, const double *, const ptrdiff_t *, ptrdiff_t,
                                ptrdiff_t, const ptrdiff_t *, const ptrdiff_t *, ptrdiff_t,
                                const double *, ptrdiff_t, double *, int);

/* Every function below takes `tile`: FC_DIRECT_WIDE, or where the ISA has
 * them (AVX-512) FC_DIRECT_NARROW (14 pixels x 2 vectors, for few filters)
 * or FC_DIRECT_MEDIUM (8 pixels x 3 vectors, for filter counts that 48
 * divides better than 64); an ISA with one tile takes its only tile. */
enum { FC_DIRECT_WIDE = 0, FC_DIRECT_NARROW = 1, FC_DIRECT_MEDIUM = 2 };

/* whether the ISA has narrow and medium tiles */
static inline int fc_direct_has_narrow(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return 1;
#endif
    return 0;
}

/* pixels per tile */
static inline int fc_direct_mr(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512)
        return tile == FC_DIRECT_NARROW ? FC_DIRECT_AVX512N_MR
               : tile == FC_DIRECT_MEDIUM ? FC_DIRECT_AVX512M_MR : FC_DIRECT_AVX512_MR;
    if (isa == FC_ISA_AVX2) return FC_DIRECT_AVX2_MR;
#endif
    return FC_DIRECT_GENERIC_MR;
}

/* filters per tile */
static inline int fc_direct_nr(int isa, int is_double, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512 && tile == FC_DIRECT_NARROW)
        return is_double ? FC_DIRECT_AVX512N_NR_F64 : FC_DIRECT_AVX512N_NR_F32;
    if (isa == FC_ISA_AVX512 && tile == FC_DIRECT_MEDIUM)
        return is_double ? FC_DIRECT_AVX512M_NR_F64 : FC_DIRECT_AVX512M_NR_F32;
    if (isa == FC_ISA_AVX512) return is_double ? FC_DIRECT_AVX512_NR_F64 : FC_DIRECT_AVX512_NR_F32;
    if (isa == FC_ISA_AVX2) return is_double ? FC_DIRECT_AVX2_NR_F64 : FC_DIRECT_AVX2_NR_F32;
#endif
    return is_double ? FC_DIRECT_GENERIC_NR_F64 : FC_DIRECT_GENERIC_NR_F32;
}

static inline fc_direct_f32_t fc_direct_f32(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return tile == FC_DIRECT_NARROW ? fc_direct_avx512n_f32
           : tile == FC_DIRECT_MEDIUM ? fc_direct_avx512m_f32 : fc_direct_avx512_f32;
    if (isa == FC_ISA_AVX2) return fc_direct_avx2_f32;
#endif
    return fc_direct_generic_f32;
}

static inline fc_direct_f64_t fc_direct_f64(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return tile == FC_DIRECT_NARROW ? fc_direct_avx512n_f64
           : tile == FC_DIRECT_MEDIUM ? fc_direct_avx512m_f64 : fc_direct_avx512_f64;
    if (isa == FC_ISA_AVX2) return fc_direct_avx2_f64;
#endif
    return fc_direct_generic_f64;
}

/* The ISA's transposing pack of a weight panel (w, rows, nf, depth, taps,
 * flip, tap_rows, panel), or NULL: direct.pyx's portable loop */
typedef void (*fc_direct_pack_f32_t)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     int, ptrdiff_t, float *);
typedef void (*fc_direct_pack_f64_t)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     int, ptrdiff_t, double *);

static inline fc_direct_pack_f32_t fc_direct_pack_f32(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return tile == FC_DIRECT_NARROW ? fc_direct_pack_avx512n_f32
           : tile == FC_DIRECT_MEDIUM ? fc_direct_pack_avx512m_f32 : fc_direct_pack_avx512_f32;
#endif
    return NULL;
}

static inline fc_direct_pack_f64_t fc_direct_pack_f64(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return tile == FC_DIRECT_NARROW ? fc_direct_pack_avx512n_f64
           : tile == FC_DIRECT_MEDIUM ? fc_direct_pack_avx512m_f64 : fc_direct_pack_avx512_f64;
#endif
    return NULL;
}

/* The ISA's store of a tile of at most 8 pixels consecutive in the output
 * (tile, m, nr, nf, out, out_filter, bias), or NULL: direct.pyx's portable
 * loop (float64, the generic ISA, pixels apart) */
typedef void (*fc_direct_store_f32_t)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *,
                                      ptrdiff_t, const float *);

static inline fc_direct_store_f32_t fc_direct_store_f32(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512 || isa == FC_ISA_AVX2) return fc_direct_store_avx2_f32;
#endif
    return NULL;
}

/* The ISA's pack of an input gradient's panel from the forward weights (w,
 * channel_step, nf, channels, taps, reverse, tap_rows, panel; each filter's
 * taps one run, `taps` after the previous filter's), or NULL: direct.pyx's
 * portable loop */
typedef void (*fc_direct_pack_adjoint_f32_t)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                             ptrdiff_t, int, ptrdiff_t, float *);
typedef void (*fc_direct_pack_adjoint_f64_t)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                             ptrdiff_t, int, ptrdiff_t, double *);

static inline fc_direct_pack_adjoint_f32_t fc_direct_pack_adjoint_f32(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512)
        return tile == FC_DIRECT_NARROW ? fc_direct_pack_adjoint_avx512n_f32
               : tile == FC_DIRECT_MEDIUM ? fc_direct_pack_adjoint_avx512m_f32
               : fc_direct_pack_adjoint_avx512_f32;
#endif
    return NULL;
}

static inline fc_direct_pack_adjoint_f64_t fc_direct_pack_adjoint_f64(int isa, int tile)
{
    (void)isa; (void)tile;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512)
        return tile == FC_DIRECT_NARROW ? fc_direct_pack_adjoint_avx512n_f64
               : tile == FC_DIRECT_MEDIUM ? fc_direct_pack_adjoint_avx512m_f64
               : fc_direct_pack_adjoint_avx512_f64;
#endif
    return NULL;
}

/* The weight gradient's lanes kernel (_direct_vector.h has the contract):
 * the function, its lanes (pixels summed apart per tap and filter) and
 * its most taps at a time. */
typedef void (*fc_direct_lanes_f32_t)(ptrdiff_t, ptrdiff_t, const float *, const ptrdiff_t *,
                                      ptrdiff_t, const ptrdiff_t *, const ptrdiff_t *,
                                      ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fc_direct_lanes_f64_t)(ptrdiff_t, ptrdiff_t, const double *, const ptrdiff_t *,
                                      ptrdiff_t, const ptrdiff_t *, const ptrdiff_t *,
                                      ptrdiff_t, const double *, ptrdiff_t, double *, ptrdiff_t);

static inline fc_direct_lanes_f32_t fc_direct_lanes_f32(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_direct_lanes_avx512_f32;
    if (isa == FC_ISA_AVX2) return fc_direct_lanes_avx2_f32;
#endif
    return fc_direct_lanes_generic_f32;
}

static inline fc_direct_lanes_f64_t fc_direct_lanes_f64(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_direct_lanes_avx512_f64;
    if (isa == FC_ISA_AVX2) return fc_direct_lanes_avx2_f64;
#endif
    return fc_direct_lanes_generic_f64;
}

static inline int fc_direct_lanes_width(int isa, int is_double)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return is_double ? 8 : 16;
    if (isa == FC_ISA_AVX2) return is_double ? 4 : 8;
#endif
    return FC_DIRECT_GENERIC_LANES;
}

/* Filters of the lanes kernel's register tile (the ones past a multiple of
 * it run one at a time); the portable loop's is 1. */
static inline int fc_direct_lanes_nf(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return FC_DIRECT_AVX512_LANES_NF;
    if (isa == FC_ISA_AVX2) return FC_DIRECT_AVX2_LANES_NF;
#endif
    return 1;
}

static inline int fc_direct_lanes_mr(int isa)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return FC_DIRECT_AVX512_LANES_MR;
    if (isa == FC_ISA_AVX2) return FC_DIRECT_AVX2_LANES_MR;
#endif
    return FC_DIRECT_GENERIC_MR;
}

#endif
