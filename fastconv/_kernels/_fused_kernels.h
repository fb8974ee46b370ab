/* Micro-kernel dispatch of the fused lowering (fused.pyx).
 *
 * ISA codes: 0 = generic (portable C, always built), 1 = avx2 (AVX2 + FMA),
 * 2 = avx512 (AVX-512F/VL + FMA). The x86 kernels are compiled with GCC/Clang
 * target attributes, so the package is built without -march flags and still
 * runs on CPUs without these instruction sets; fc_isa_available() asks the
 * CPU (and, through libgcc, whether the OS saves the wide registers) at run
 * time. Other compilers and architectures build the portable kernel only
 * (as does -DFC_NO_X86_KERNELS, e.g. for a compiler without AVX-512 intrinsics).
 */
#ifndef FASTCONV_FUSED_KERNELS_H
#define FASTCONV_FUSED_KERNELS_H

#include <stddef.h>
#include "_fused_generic.h"

#if !defined(FC_NO_X86_KERNELS) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FC_HAVE_X86_KERNELS 1
#include "_fused_avx2.h"
#include "_fused_avx512.h"
#else
#define FC_HAVE_X86_KERNELS 0
#endif

#define FC_ISA_GENERIC 0
#define FC_ISA_AVX2 1
#define FC_ISA_AVX512 2

/* (kc, a, lda, b, ldb, c, ldc, first, bias): the contract in _fused_generic.h */
typedef void (*fc_ukr_f32_t)(ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t,
                             float *, ptrdiff_t, int, const float *);
typedef void (*fc_ukr_f64_t)(ptrdiff_t, const double *, ptrdiff_t, const double *, ptrdiff_t,
                             double *, ptrdiff_t, int, const double *);

typedef void (*fc_pack_f32_t)(float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, const float *,
                              const ptrdiff_t *, int, ptrdiff_t);
typedef void (*fc_pack_f64_t)(double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, const double *,
                              const ptrdiff_t *, int, ptrdiff_t);

/* Prefetch `rows` rows of `bytes` bytes each, `stride` bytes apart, from p.
 * Reading (for_write 0), into L2: the rows of the next micro-panel of B read
 * in place (fused.pyx's _run_item spreads them over the micro-kernel calls
 * of the current one). Those rows are one per input channel, a channel
 * plane apart, which the hardware prefetcher does not follow (64 channels:
 * 64 streams). Fused's time, new build over old, processes alternated, best
 * of 3-4, float32: ResNet-50 2b 1x1 (256 channels) 0.86 on 2 threads, 0.83
 * on one; 2a 1x1 (64) 0.99 / 0.96; 4b 1x1 (1024, 14x14) 0.99 / 0.99. Into
 * L1 instead: 2b 0.93 / 0.90, the others the same (a panel of 256 rows is
 * 48 KiB, more than L1). Writing (for_write 1), into L1 with write intent
 * (prefetchw where the compiler targets it, else an ordinary prefetch): a
 * direct tile's output rows, one per filter, fetched while it computes
 * (direct.pyx). */
static inline void fc_prefetch_rows(const void *p, ptrdiff_t stride, ptrdiff_t rows,
                                    ptrdiff_t bytes, int for_write)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *row = (const char *)p;
    ptrdiff_t r, o;
    for (r = 0; r < rows; r++, row += stride) {
        /* every line of the row; the last byte: an unaligned row's last line */
        if (for_write) {
            for (o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 1, 3);
            __builtin_prefetch(row + bytes - 1, 1, 3);
        } else {
            for (o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 0, 2);
            __builtin_prefetch(row + bytes - 1, 0, 2);
        }
    }
#else
    (void)p; (void)stride; (void)rows; (void)bytes; (void)for_write;
#endif
}

/* 1 if this build has the kernel and this CPU can run it */
static inline int fc_isa_available(int isa)
{
    if (isa == FC_ISA_GENERIC) return 1;
#if FC_HAVE_X86_KERNELS
    __builtin_cpu_init();
    if (isa == FC_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == FC_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
               && __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* register blocking of each kernel: MR filters x NR columns */
static inline int fc_mr(int isa, int is_double)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return is_double ? FC_AVX512_MR_F64 : FC_AVX512_MR_F32;
    if (isa == FC_ISA_AVX2) return is_double ? FC_AVX2_MR_F64 : FC_AVX2_MR_F32;
#endif
    return is_double ? FC_GENERIC_MR_F64 : FC_GENERIC_MR_F32;
}

static inline int fc_nr(int isa, int is_double)
{
    (void)isa;
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return is_double ? FC_AVX512_NR_F64 : FC_AVX512_NR_F32;
    if (isa == FC_ISA_AVX2) return is_double ? FC_AVX2_NR_F64 : FC_AVX2_NR_F32;
#endif
    return is_double ? FC_GENERIC_NR_F64 : FC_GENERIC_NR_F32;
}

/* Columns per vector of the kernel's tile, the width step of its narrow
 * kernels (fc_ukr_narrow_*); the generic kernel has none: its NR. */
static inline int fc_lanes(int isa, int is_double)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return is_double ? 8 : 16;
    if (isa == FC_ISA_AVX2) return is_double ? 4 : 8;
#endif
    return fc_nr(isa, is_double);
}

/* The kernel with the same MR and nv vectors of columns (nv * fc_lanes),
 * 0 < nv < NR / fc_lanes: a narrow panel at the end of a column block.
 * NULL where the build has none (fused.pyx then uses the full tile). */
#define FC_NARROW(NAME, NV_MAX, nv) \
    ((nv) == 1 && (NV_MAX) > 1 ? NAME##_nv1 : (nv) == 2 && (NV_MAX) > 2 ? NAME##_nv2 : NULL)

static inline fc_ukr_f32_t fc_ukr_narrow_f32(int isa, int nv)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return FC_NARROW(fc_ukr_avx512_f32, FC_AVX512_NV_F32, nv);
    if (isa == FC_ISA_AVX2) return FC_NARROW(fc_ukr_avx2_f32, FC_AVX2_NV_F32, nv);
#endif
    (void)isa; (void)nv;
    return NULL;
}

static inline fc_ukr_f64_t fc_ukr_narrow_f64(int isa, int nv)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return FC_NARROW(fc_ukr_avx512_f64, FC_AVX512_NV_F64, nv);
    if (isa == FC_ISA_AVX2) return FC_NARROW(fc_ukr_avx2_f64, FC_AVX2_NV_F64, nv);
#endif
    (void)isa; (void)nv;
    return NULL;
}

/* The weight gradient's transposing pack of B^T, one micro-panel and a run
 * of segments (fused.pyx's _pack_bt); NULL: the portable loop there. */
typedef int (*fc_pack_bt_f32_t)(float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, const float *,
                                const ptrdiff_t *, const ptrdiff_t *, const ptrdiff_t *,
                                const ptrdiff_t *, const ptrdiff_t *, int, ptrdiff_t);
typedef int (*fc_pack_bt_f64_t)(double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, const double *,
                                const ptrdiff_t *, const ptrdiff_t *, const ptrdiff_t *,
                                const ptrdiff_t *, const ptrdiff_t *, int, ptrdiff_t);

static inline fc_pack_bt_f32_t fc_pack_bt_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_bt_avx512_f32;
#endif
    (void)isa;
    return NULL;
}

static inline fc_pack_bt_f64_t fc_pack_bt_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_bt_avx512_f64;
#endif
    (void)isa;
    return NULL;
}

static inline fc_ukr_f32_t fc_ukr_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_ukr_avx512_f32;
    if (isa == FC_ISA_AVX2) return fc_ukr_avx2_f32;
#endif
    (void)isa;
    return fc_ukr_generic_f32;
}

static inline fc_ukr_f64_t fc_ukr_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_ukr_avx512_f64;
    if (isa == FC_ISA_AVX2) return fc_ukr_avx2_f64;
#endif
    (void)isa;
    return fc_ukr_generic_f64;
}

static inline fc_pack_f32_t fc_pack_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_avx512_f32;
    if (isa == FC_ISA_AVX2) return fc_pack_avx2_f32;
#endif
    (void)isa;
    return fc_pack_generic_f32;
}

static inline fc_pack_f64_t fc_pack_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_avx512_f64;
    if (isa == FC_ISA_AVX2) return fc_pack_avx2_f64;
#endif
    (void)isa;
    return fc_pack_generic_f64;
}

/* The stride-2 packer with per-micro-panel lane masks (_fused_avx512.h:
 * panel, nr, kcb, table, x_group, segs, ns, S, ks0; 1 if it packed), or
 * NULL where the ISA has none: the segment packer then. */
typedef int (*fc_pack_step2_f32_t)(float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *,
                                   const float *, const ptrdiff_t *, int, ptrdiff_t, ptrdiff_t);
typedef int (*fc_pack_step2_f64_t)(double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *,
                                   const double *, const ptrdiff_t *, int, ptrdiff_t, ptrdiff_t);

static inline fc_pack_step2_f32_t fc_pack_step2_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_step2_avx512_f32;
#endif
    (void)isa;
    return NULL;
}

static inline fc_pack_step2_f64_t fc_pack_step2_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_step2_avx512_f64;
#endif
    (void)isa;
    return NULL;
}

typedef void (*fc_pack_linear_f32_t)(float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *,
                                     const float *, const ptrdiff_t *,
                                     const unsigned long long *, int, int, int);
typedef void (*fc_pack_linear_f64_t)(double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *,
                                     const double *, const ptrdiff_t *,
                                     const unsigned long long *, int, int, int);

/* The packer of linear columns (_fused_generic.h), or NULL where the ISA
 * has none: AVX2 has no lane-mask loads from a bit mask (its masked loads
 * take a vector of masks), so it keeps the segment packer. */
static inline fc_pack_linear_f32_t fc_pack_linear_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_linear_avx512_f32;
    if (isa == FC_ISA_AVX2) return NULL;
#endif
    (void)isa;
    return fc_pack_linear_generic_f32;
}

static inline fc_pack_linear_f64_t fc_pack_linear_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    if (isa == FC_ISA_AVX512) return fc_pack_linear_avx512_f64;
    if (isa == FC_ISA_AVX2) return NULL;
#endif
    (void)isa;
    return fc_pack_linear_generic_f64;
}

typedef void (*fc_pack_a_f32_t)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                float *);
typedef void (*fc_pack_a_f64_t)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                double *);

static inline fc_pack_a_f32_t fc_pack_a_f32(int isa)
{
#if FC_HAVE_X86_KERNELS
    /* an AVX-512 CPU has AVX2: its MR of 8 is transposed in 256-bit halves */
    if (isa == FC_ISA_AVX512 || isa == FC_ISA_AVX2) return fc_pack_a_avx2_f32;
#endif
    (void)isa;
    return fc_pack_a_generic_f32;
}

static inline fc_pack_a_f64_t fc_pack_a_f64(int isa)
{
#if FC_HAVE_X86_KERNELS
    /* an AVX-512 CPU has AVX2: its MR of 8 is transposed in 256-bit halves */
    if (isa == FC_ISA_AVX512 || isa == FC_ISA_AVX2) return fc_pack_a_avx2_f64;
#endif
    (void)isa;
    return fc_pack_a_generic_f64;
}

/* The kernel for a micro-panel pw columns wide (fused.pyx's _panel_width):
 * the ISA's full tile for NR, its narrow kernel of pw / fc_lanes vectors for
 * a partial panel packed narrower (the forward's columns, the weight
 * gradient's rows). */
static inline fc_ukr_f32_t fc_ukr_width_f32(int isa, ptrdiff_t pw)
{
    if (pw >= fc_nr(isa, 0)) return fc_ukr_f32(isa);
    return fc_ukr_narrow_f32(isa, (int)(pw / fc_lanes(isa, 0)));
}

static inline fc_ukr_f64_t fc_ukr_width_f64(int isa, ptrdiff_t pw)
{
    if (pw >= fc_nr(isa, 1)) return fc_ukr_f64(isa);
    return fc_ukr_narrow_f64(isa, (int)(pw / fc_lanes(isa, 1)));
}

#endif /* FASTCONV_FUSED_KERNELS_H */
