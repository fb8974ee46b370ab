/* Portable micro-kernels of the fused lowering (plain C99, always built).
 *
 * The micro-kernel contract, shared by every ISA header:
 *
 *   c[i, j] (i < MR, j < NR, row i at c + i*ldc)  =  sum_k A(i, k) * B(k, j)
 *             + bias[i]                              if first (bias may be NULL)
 *   c[i, j] += sum_k A(i, k) * B(k, j)               if !first
 *
 * with A(i, k) = a[k*MR + i] if lda == 0 (an MR-row panel of packed weights,
 * MR values per depth step) or a[i*lda + k] if lda > 0 (MR rows of the weight
 * matrix read in place, lda apart: no packing pass over the weights, which
 * pays where they are large next to the columns, see fused.pyx); B(k, j) =
 * b[k*ldb + j]: with ldb = NR an NR-column micro-panel of the packed
 * (index-mapped) input, with another ldb NR columns of x's rows read in place
 * (a pointwise layer, where x is the stretched matrix: see fused.pyx's
 * _b_in_place_layout); both of depth kc.
 * The sum runs over k in order, starting from zero, and bias (or the old c)
 * is added once at the end: every kernel and every edge path (see fused.pyx)
 * therefore rounds the same way for a given ISA.
 *
 * Register blocking here: MR = 4 filters x NR = 8 (float) or 4 (double)
 * columns. Without -march flags GCC/Clang vectorise the j loop with SSE2
 * (2 x 128-bit vectors per row), so the 4 x 8 float tile is 8 xmm
 * accumulators + 2 xmm of b + 1 broadcast, within SSE2's 16 registers; the
 * compiler keeps acc[][] in registers once both loops are fully unrolled.
 * This kernel is the fallback (other architectures, other compilers) and the
 * reference the ISA kernels are tested against; it is not tuned further.
 */
#ifndef FASTCONV_FUSED_GENERIC_H
#define FASTCONV_FUSED_GENERIC_H

#include <stddef.h>

#if defined(_MSC_VER)
#define FC_RESTRICT __restrict
#else
#define FC_RESTRICT restrict
#endif

#define FC_GENERIC_MR_F32 4
#define FC_GENERIC_NR_F32 8
#define FC_GENERIC_MR_F64 4
#define FC_GENERIC_NR_F64 4

#define FC_DEFINE_GENERIC(NAME, T, MR, NR)                                         \
static void NAME(ptrdiff_t kc, const T *FC_RESTRICT a, ptrdiff_t lda,             \
                 const T *FC_RESTRICT b, ptrdiff_t ldb, T *FC_RESTRICT c,         \
                 ptrdiff_t ldc, int first, const T *FC_RESTRICT bias)             \
{                                                                                  \
    T acc[MR][NR];                                                                 \
    ptrdiff_t k;                                                                   \
    const ptrdiff_t a_row = lda ? lda : 1, a_step = lda ? 1 : MR;                  \
    int i, j;                                                                      \
    for (i = 0; i < MR; i++)                                                       \
        for (j = 0; j < NR; j++)                                                   \
            acc[i][j] = 0;                                                         \
    for (k = 0; k < kc; k++) {                                                     \
        const T *ak = a + k * a_step, *bk = b + k * ldb;                            \
        for (i = 0; i < MR; i++) {                                                 \
            T ai = ak[i * a_row];                                                  \
            for (j = 0; j < NR; j++)                                               \
                acc[i][j] += ai * bk[j];                                           \
        }                                                                          \
    }                                                                              \
    for (i = 0; i < MR; i++) {                                                     \
        T *ci = c + i * ldc;                                                       \
        if (!first) {                                                              \
            for (j = 0; j < NR; j++) ci[j] += acc[i][j];                           \
        } else if (bias) {                                                         \
            T bi = bias[i];                                                        \
            for (j = 0; j < NR; j++) ci[j] = acc[i][j] + bi;                       \
        } else {                                                                   \
            for (j = 0; j < NR; j++) ci[j] = acc[i][j];                            \
        }                                                                          \
    }                                                                              \
}

FC_DEFINE_GENERIC(fc_ukr_generic_f32, float, FC_GENERIC_MR_F32, FC_GENERIC_NR_F32)
FC_DEFINE_GENERIC(fc_ukr_generic_f64, double, FC_GENERIC_MR_F64, FC_GENERIC_NR_F64)

/* Packing one NR-wide micro-panel of B through the index map.
 *
 * table: kcb rows of the row table of _index_map.pxd (FC_ROW_FIELDS values
 * per row, in its order: offset, oh_lo, oh_hi, ow_lo, ow_hi). segs: ns
 * segments of the micro-panel's columns that share an image and an output
 * row (fused.pyx's _pack_b finds them once per micro-panel), FC_SEG_FIELDS
 * values each: element offset of (image, output row) from x_group, the
 * output row oh, the first output column ow, the length, and the position in
 * the micro-panel. Row r of the panel (nr values at panel + r*nr) gets
 * x_group[base + offset + ow'*col_step] for the columns whose tap lands in
 * the input (oh_lo <= oh < oh_hi, ow_lo <= ow' < ow_hi), zero elsewhere and
 * past the last segment.
 *
 * The constants mirror _index_map.pxd; fused.pyx checks them at import. */
#define FC_ROW_FIELDS 7
#define FC_ROW_OFFSET 0
#define FC_ROW_OH_LO 1
#define FC_ROW_OH_HI 2
#define FC_ROW_OW_LO 3
#define FC_ROW_OW_HI 4
#define FC_SEG_FIELDS 5
#define FC_SEG_BASE 0
#define FC_SEG_OH 1
#define FC_SEG_OW 2
#define FC_SEG_LEN 3
#define FC_SEG_POS 4

/* the columns [*a, *b) of a segment whose kernel column (one table row's)
 * is inside the input, whatever its output row; 0 if none */
static inline int fc_column_range(const ptrdiff_t *row, const ptrdiff_t *seg,
                                  ptrdiff_t *a, ptrdiff_t *b)
{
    ptrdiff_t ow = seg[FC_SEG_OW], end = ow + seg[FC_SEG_LEN];
    *a = row[FC_ROW_OW_LO] > ow ? row[FC_ROW_OW_LO] : ow;
    *b = row[FC_ROW_OW_HI] < end ? row[FC_ROW_OW_HI] : end;
    return *b > *a;
}

/* the columns [*a, *b) of a segment inside the input for one table row;
 * 0 if none */
static inline int fc_valid_range(const ptrdiff_t *row, const ptrdiff_t *seg,
                                 ptrdiff_t *a, ptrdiff_t *b)
{
    ptrdiff_t oh = seg[FC_SEG_OH];
    if (oh < row[FC_ROW_OH_LO] || oh >= row[FC_ROW_OH_HI]) return 0;
    return fc_column_range(row, seg, a, b);
}

#define FC_DEFINE_GENERIC_PACK(NAME, T)                                            \
static void NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb, const ptrdiff_t *table,  \
                 const T *x_group, const ptrdiff_t *segs, int ns,                  \
                 ptrdiff_t col_step)                                               \
{                                                                                  \
    ptrdiff_t r, j, a, b;                                                          \
    int s;                                                                         \
    for (r = 0; r < kcb; r++) {                                                    \
        const ptrdiff_t *row = table + r * FC_ROW_FIELDS;                          \
        T *d = panel + r * nr;                                                     \
        for (j = 0; j < nr; j++) d[j] = 0;                                         \
        for (s = 0; s < ns; s++) {                                                 \
            const ptrdiff_t *seg = segs + s * FC_SEG_FIELDS;                       \
            const T *src;                                                          \
            T *dst;                                                                \
            if (!fc_valid_range(row, seg, &a, &b)) continue;                       \
            src = x_group + seg[FC_SEG_BASE] + row[FC_ROW_OFFSET] + a * col_step; \
            dst = d + seg[FC_SEG_POS] + (a - seg[FC_SEG_OW]);                      \
            if (col_step == 1)                                                     \
                for (j = 0; j < b - a; j++) dst[j] = src[j];                       \
            else                                                                   \
                for (j = 0; j < b - a; j++) dst[j] = src[j * col_step];            \
        }                                                                          \
    }                                                                              \
}

FC_DEFINE_GENERIC_PACK(fc_pack_generic_f32, float)
FC_DEFINE_GENERIC_PACK(fc_pack_generic_f64, double)

/* Packing one micro-panel when the columns of an image are linear in the
 * input ("linear" columns: unit column step and an output row step equal to
 * the output width, i.e. stride 1 with the input as wide as the output, as
 * in every "same" 3x3 layer). Column (oh, ow) of image n then reads
 * x_group[n*xs_n + oh*Wo + ow + offset]: the lanes of a micro-panel that
 * share an image are one contiguous run of the input, whatever their output
 * rows, and only which lanes fall in the padding depends on the tap.
 *
 * bases: ns values, the element offset from x_group of lane 0 of segment s
 * (a segment: the panel's columns of one image); masks: ns * taps lane masks
 * (bit l: lane l of the panel reads segment s at tap t, i.e. its tap is in
 * the input), computed once per micro-panel by fused.pyx's _pack_b. Row r of
 * the panel is table row r, tap (tap0 + r) % taps: lane l gets
 * x_group[bases[s] + offset + l] where bit l of masks[s*taps + tap] is set,
 * zero elsewhere. One mask test per lane, no range arithmetic per row: the
 * segment packer above spends its time there on small maps (ResNet-50 4b,
 * 14x14: 4-5 segments per 48-column panel).
 *
 * Where x's rows are further apart than Wo (stride 1 without "same"
 * padding, e.g. "valid" layers, or a view of wider rows), fused.pyx makes a
 * segment one output row of an image instead, its lanes again one run of
 * the input: the same packer. MTCNN's first layer (3 channels, "valid"
 * 3x3, 46-wide output: 2-3 rows per panel): packing 17.7 -> 12.2 % of the
 * run, the layer 1.575 -> 1.49-1.52 ms (fp32, one thread). */
#define FC_DEFINE_GENERIC_PACK_LINEAR(NAME, T)                                     \
static void NAME(T *panel, ptrdiff_t nr, ptrdiff_t kcb, const ptrdiff_t *table,  \
                 const T *x_group, const ptrdiff_t *bases,                         \
                 const unsigned long long *masks, int ns, int taps, int tap0)      \
{                                                                                  \
    ptrdiff_t r, l;                                                                \
    int s, t = tap0;                                                               \
    for (r = 0; r < kcb; r++) {                                                    \
        const T *row_src = x_group + table[r * FC_ROW_FIELDS + FC_ROW_OFFSET];     \
        T *d = panel + r * nr;                                                     \
        for (l = 0; l < nr; l++) d[l] = 0;                                         \
        for (s = 0; s < ns; s++) {                                                 \
            unsigned long long m = masks[s * taps + t];                            \
            const T *p = row_src + bases[s];                                       \
            for (l = 0; m; l++, m >>= 1)                                           \
                if (m & 1u) d[l] = p[l];                                           \
        }                                                                          \
        if (++t == taps) t = 0;                                                    \
    }                                                                              \
}

FC_DEFINE_GENERIC_PACK_LINEAR(fc_pack_linear_generic_f32, float)
FC_DEFINE_GENERIC_PACK_LINEAR(fc_pack_linear_generic_f64, double)

/* Packing weights (A): m <= mr filter rows (w: the first, leading dimension
 * ld) x kcb depth steps into d: for each step, mr values (zeros past m). */
#define FC_DEFINE_GENERIC_PACK_A(NAME, T)                                          \
static void NAME(const T *w, ptrdiff_t ld, ptrdiff_t m, ptrdiff_t mr,             \
                 ptrdiff_t kcb, T *d)                                              \
{                                                                                  \
    ptrdiff_t k, r;                                                                \
    for (k = 0; k < kcb; k++, d += mr) {                                           \
        for (r = 0; r < m; r++) d[r] = w[r * ld + k];                              \
        for (; r < mr; r++) d[r] = 0;                                              \
    }                                                                              \
}

FC_DEFINE_GENERIC_PACK_A(fc_pack_a_generic_f32, float)
FC_DEFINE_GENERIC_PACK_A(fc_pack_a_generic_f64, double)

#endif /* FASTCONV_FUSED_GENERIC_H */
