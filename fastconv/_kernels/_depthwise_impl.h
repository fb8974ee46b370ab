/* The depthwise kernels, once per element type and instruction set: included
 * by _depthwise.h with T (element), VT (the ISA's native vector of T), HT and
 * QT (half and quarter width, defined only where at least 16 bytes), IVT/IHT/
 * IQT (integer vectors of the same sizes, for masks), VL/HL/QL (their lane
 * counts), MASKS_MID (a mask table: zeros before, all-ones from there) and
 * NM(name) (the name with its ISA and type suffixes). */

/* ------------------------------------------------------------------------ */
/* Forward: one output plane from M input planes (M > 1 only for the input   */
/* gradient, where the M filters of one input channel meet in one plane).    */
/*   out[oh, ow] = bias + sum_j sum_{r,s} wt_j(r, s) * in_j[...]              */
/* ------------------------------------------------------------------------ */

/* the first n (0 < n < VL) lanes of vector v to p: a masked store where the
 * ISA has one (AVX-512), else lane by lane. A memcpy of n elements was a
 * call to memmove, 7 % of EfficientNet's 5x5/2 depthwise forward (perf: its
 * 28-column rows end in 12 lanes of a vector). */
#ifndef DW_STORE_FIRST
#define DW_STORE_FIRST(p, v, n) do {                                           \
    const VT first_v_ = (v);                                                   \
    T *first_p_ = (p);                                                         \
    const dws first_n_ = (n);                                                  \
    for (dws first_i_ = 0; first_i_ < first_n_; first_i_++)                    \
        first_p_[first_i_] = first_v_[first_i_];                               \
} while (0)
#endif

/* whether the kernel is one the fixed-size kernels are built for (3x3,
 * 5x5, 7x7) */
DW_INLINE int NM(fixed_kernel)(const dw_geom *g)
{
    return g->R == g->S && (g->R == 3 || g->R == 5 || g->R == 7);
}

/* whether the input's rows are no wider than the zero row, which the
 * fixed-size kernels read for rows in the padding */
DW_INLINE int NM(zero_row_fits)(const dw_geom *g)
{
    return g->W * (dws)sizeof(T) <= DW_ZERO_ROW_BYTES;
}

/* input row ih of the plane at in, or the zero row where ih is in the
 * padding (the fixed-size kernels' tiles and whole-row weight gradients
 * load only lanes of columns [0, W) from it) */
DW_INLINE const T *NM(row_or_zero)(const dw_geom *g, const T *in, dws ih)
{
    return ih >= 0 && ih < g->H ? in + ih * g->xs_h : (const T *)dw_zero_row;
}

/* input rows i0, i0 + step, ... below i1, columns [c0, c1) clipped to the
 * row, asked for into the cache (the tiles' next rows, a tile's columns at
 * a time) */
DW_INLINE void NM(prefetch_columns)(const dw_geom *g, const T *in, dws i0, dws i1, dws step,
                                    dws c0, dws c1)
{
    c0 = c0 > 0 ? c0 : 0;
    c1 = c1 < g->W ? c1 : g->W;
    for (dws i = i0; i < i1 && c0 < c1; i += step) {
        const T *q = in + i * g->xs_h;
        for (dws c = c0; c < c1; c += 64 / (dws)sizeof(T))
            __builtin_prefetch(q + c, 0, 3);
        __builtin_prefetch(q + c1 - 1, 0, 3);
    }
}

/* rows of the fixed-size kernels' tiles (_depthwise_fixed.h, DW_TILE), of
 * one vector (N) and of two (W): ROWS x NV accumulators, RR weights, NV
 * masks and NV input vectors in the ISA's registers */
#ifdef QT
#define DW_TILE_N0 14
#define DW_TILE_N1 7
#define DW_TILE_N2 4
#define DW_TILE_W0 7
#define DW_TILE_W1 4
#define DW_TILE_W2 2
#else
#define DW_TILE_N0 8
#define DW_TILE_N1 4
#define DW_TILE_N2 2
#define DW_TILE_W0 4
#define DW_TILE_W1 2
#define DW_TILE_W2 1
#endif
#define RR 3
#define SS 3
#include "_depthwise_fixed.h"
#undef RR
#undef SS
#define RR 5
#define SS 5
#include "_depthwise_fixed.h"
#undef RR
#undef SS
#define RR 7
#define SS 7
#include "_depthwise_fixed.h"
#undef RR
#undef SS
#undef DW_TILE_N0
#undef DW_TILE_N1
#undef DW_TILE_N2
#undef DW_TILE_W0
#undef DW_TILE_W1
#undef DW_TILE_W2

/* the narrowest vector of this ISA: rows of fewer interior columns are scalar */
#if defined(QT)
#define DW_MIN_LANES QL
#elif defined(HT)
#define DW_MIN_LANES HL
#else
#define DW_MIN_LANES VL
#endif

/* One block of output columns [ow0, ow0 + NB*L) of row oh (NB = 1, 2 or
 * 4), every tap accumulated in registers and stored once: R*S*NB loads and
 * FMAs per store. Only for columns where every kernel column is inside the
 * input (the interior [A, B)), contiguous input rows and stride 1. Four
 * vectors are four independent chains of FMAs. Why: a chain adds one FMA
 * per tap, and an FMA's result is ready after 4 cycles on Zen 4 (4-5 on
 * Intel cores) while the core starts one 512-bit FMA per cycle, so two
 * chains left half of each cycle's FMAs unused: QuartzNet's 1-D depthwise
 * layer (33 taps, 368 output columns) ran at ~50 GFLOP/s a core. Each
 * output column's sum has the same order whatever NB. */
#define DW_FWD_BLOCK(TYPE, L, NB, OW) do {                                     \
    const dws ow0_ = (OW);                                                     \
    TYPE a_[4];                                                                \
    _Pragma("GCC unroll 4")                                                    \
    for (int b_ = 0; b_ < (NB); b_++)                                          \
        a_[b_] = (TYPE){0} + bias;                                             \
    for (dws j_ = 0; j_ < M; j_++) {                                           \
        for (dws r_ = r_lo; r_ < r_hi; r_++) {                                 \
            const T *p_ = in + j_ * in_plane + ((base + r_ * dh) * xs_h + ow0_ - pl); \
            const T *wr_ = w + j_ * w_plane + wr0 + r_ * wdr;                  \
            for (dws s_ = 0; s_ < S; s_++) {                                   \
                const T wv_ = wr_[s_ * wds];                                   \
                _Pragma("GCC unroll 4")                                        \
                for (int b_ = 0; b_ < (NB); b_++)                              \
                    a_[b_] += wv_ * DW_LOAD(TYPE, p_ + s_ * dw + b_ * (L));    \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 4")                                                    \
    for (int b_ = 0; b_ < (NB); b_++)                                          \
        DW_STORE(orow + ow0_ + b_ * (L), a_[b_]);                              \
} while (0)

/* The taps of one kernel row (weights WR, tap s at WR[s * wds]) into the
 * four accumulators A0..A3 of a block of 4 vectors of VL lanes, where the
 * block's tap s reads P + DIR*s (DIR = 1, or -1: taps reversed) and the
 * row is longer than a vector (S > VL). Tap s + VL of a block reads the
 * vector that tap s read for the next block, so the taps go in VL groups
 * (s0, s0 + VL, ...), each sliding a window of four loaded vectors, one new
 * load per tap: 4 + T - 1 loads for 4T FMAs, where one load per FMA (almost
 * all of them across two cache lines) bound DW_FWD_BLOCK. QuartzNet's 33
 * taps: 81 loads for 132 FMAs, not 132. The sums run in another order than
 * DW_FWD_BLOCK's (each column's stays fixed). */
#define DW_SLIDE4(P, WR, DIR, A0, A1, A2, A3) do {                             \
    for (dws s0_ = 0; s0_ < VL; s0_++) {                                       \
        const T *q_ = (P) + (DIR) * s0_;                                       \
        VT x0_ = DW_LOAD(VT, q_), x1_ = DW_LOAD(VT, q_ + VL);                  \
        VT x2_ = DW_LOAD(VT, q_ + 2 * VL), x3_ = DW_LOAD(VT, q_ + 3 * VL);     \
        for (dws s_ = s0_;; s_ += VL) {                                        \
            const T wv_ = (WR)[s_ * wds];                                      \
            A0 += wv_ * x0_;                                                   \
            A1 += wv_ * x1_;                                                   \
            A2 += wv_ * x2_;                                                   \
            A3 += wv_ * x3_;                                                   \
            if (s_ + VL >= S)                                                  \
                break;                                                         \
            q_ += (DIR) * VL;                                                  \
            if ((DIR) > 0) {                                                   \
                x0_ = x1_;                                                     \
                x1_ = x2_;                                                     \
                x2_ = x3_;                                                     \
                x3_ = DW_LOAD(VT, q_ + 3 * VL);                                \
            } else {                                                           \
                x3_ = x2_;                                                     \
                x2_ = x1_;                                                     \
                x1_ = x0_;                                                     \
                x0_ = DW_LOAD(VT, q_);                                         \
            }                                                                  \
        }                                                                      \
    }                                                                          \
} while (0)

/* DW_FWD_BLOCK(VT, VL, 4, OW) by DW_SLIDE4 (S > VL, column dilation 1) */
#define DW_FWD_BLOCK4_LONG(OW) do {                                            \
    const dws ow0_ = (OW);                                                     \
    VT a0_ = (VT){0} + bias, a1_ = a0_, a2_ = a0_, a3_ = a0_;                   \
    for (dws j_ = 0; j_ < M; j_++)                                             \
        for (dws r_ = r_lo; r_ < r_hi; r_++)                                   \
            DW_SLIDE4(in + j_ * in_plane + ((base + r_ * dh) * xs_h + ow0_ - pl), \
                      w + j_ * w_plane + wr0 + r_ * wdr, 1, a0_, a1_, a2_, a3_); \
    DW_STORE(orow + ow0_, a0_);                                                \
    DW_STORE(orow + ow0_ + VL, a1_);                                           \
    DW_STORE(orow + ow0_ + 2 * VL, a2_);                                       \
    DW_STORE(orow + ow0_ + 3 * VL, a3_);                                       \
} while (0)

/* One output column, any strides: the valid kernel columns of this column
 * are one interval (two divisions), then a sum per kernel row, added up:
 * the rows' chains of dependent adds overlap (one chain of R*S adds made a
 * 7x7 global depthwise layer, one column per plane, latency-bound). */
#define DW_FWD_COLUMN(OW) do {                                                 \
    const dws cb_ = (OW) * sw - pl;                                            \
    const dws s_lo_ = dw_first(cb_, dw, S);                                    \
    const dws s_hi_ = dw_end(cb_, dw, W, S);                                   \
    T acc_ = bias;                                                             \
    for (dws j_ = 0; j_ < M; j_++) {                                           \
        for (dws r_ = r_lo; r_ < r_hi; r_++) {                                 \
            const T *p_ = in + j_ * in_plane + (base + r_ * dh) * xs_h;        \
            const T *wr_ = w + j_ * w_plane + wr0 + r_ * wdr;                  \
            T row_ = 0;                                                        \
            for (dws s_ = s_lo_; s_ < s_hi_; s_++)                             \
                row_ += wr_[s_ * wds] * p_[(cb_ + s_ * dw) * xs_w];            \
            acc_ += row_;                                                      \
        }                                                                      \
    }                                                                          \
    orow[OW] = acc_;                                                           \
} while (0)

/* keep the last `rem` lanes of a product of L lanes, as a bit mask (a NaN or
 * infinity in the lanes already counted must not leak in, as 0 * inf would) */
#define DW_MASKED(TYPE, ITYPE, L, PROD, REM) \
    ((TYPE)((ITYPE)(PROD) & DW_LOAD(ITYPE, MASKS_MID - (L) + (REM))))

/* the lanes of v added in a fixed order, halving (a loop over the lanes
 * went through the stack). Not inlined: inlined, its view of v's halves in
 * memory kept the caller's accumulator on the stack through the loop */
static __attribute__((noinline)) T NM(hsum)(VT v)
{
#if defined(QT)
    HT lo, hi;
    QT q, qhi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (char *)&v + sizeof lo, sizeof hi);
    lo += hi;
    memcpy(&q, &lo, sizeof q);
    memcpy(&qhi, (char *)&lo + sizeof q, sizeof qhi);
    q += qhi;
#define DW_Q_LANES QL
#elif defined(HT)
    HT q, hi;
    memcpy(&q, &v, sizeof q);
    memcpy(&hi, (char *)&v + sizeof q, sizeof hi);
    q += hi;
#define DW_Q_LANES HL
#else
    VT q = v;      /* the portable build's 16-byte vector */
#define DW_Q_LANES VL
#endif
#if DW_Q_LANES == 4
    return (q[0] + q[2]) + (q[1] + q[3]);
#else
    return q[0] + q[1];
#endif
#undef DW_Q_LANES
}

/* acc plus the lane-wise products of n >= 1 contiguous elements of a and
 * b: whole vectors, then the last 1..VL elements as one vector ending at n,
 * masked (no branch: its mask depends on n alone, so a caller's loop over
 * kernel rows loads it once; a branch and a mask per row made narrow
 * columns 13 % slower). Masked-off lanes read nothing: they may lie before
 * a plane. The portable build, without masked loads, masks the counted
 * lanes off the product, or (n < VL) adds a scalar sum into lane 0. */
DW_INLINE VT NM(dot_acc)(VT acc, const T *a, const T *b, dws n)
{
    dws k = 0;
    for (; n - k > VL; k += VL)
        acc += DW_LOAD(VT, a + k) * DW_LOAD(VT, b + k);
#ifdef DW_MLOAD
    const IVT keep = DW_LOAD(IVT, MASKS_MID - VL + (n - k));
    acc += DW_MLOAD(a + n - VL, keep) * DW_MLOAD(b + n - VL, keep);
#else
    if (n >= VL) {
        acc += DW_MASKED(VT, IVT, VL, DW_LOAD(VT, a + n - VL) * DW_LOAD(VT, b + n - VL),
                         n - k);
    } else {
        T tail = 0;
        for (; k < n; k++)
            tail += a[k] * b[k];
        acc[0] += tail;
    }
#endif
    return acc;
}

/* DW_FWD_COLUMN where the kernel row's valid taps and their inputs are both
 * contiguous (column dilation and input step 1, no flip): per kernel row,
 * vector products (dot_acc), summed across lanes once. Why: the scalar
 * column is a chain of dependent adds per kernel row; a 7x7 global
 * depthwise layer (MobileFaceNet's GDC, 8 x 512 x 7x7 -> 1x1, float32, one
 * thread, AVX-512) spent 76 % of its 230 us there. */
#define DW_FWD_COLUMN_VEC(OW) do {                                             \
    const dws cb_ = (OW) * sw - pl;                                            \
    const dws s_lo_ = dw_first(cb_, 1, S);                                     \
    const dws e_ = dw_end(cb_, 1, W, S), n_ = e_ > s_lo_ ? e_ - s_lo_ : 0;    \
    VT acc_ = (VT){0};                                                         \
    for (dws j_ = 0; n_ > 0 && j_ < M; j_++) {                                 \
        const T *p_ = in + j_ * in_plane + (base + r_lo * dh) * xs_h + cb_ + s_lo_; \
        const T *wr_ = w + j_ * w_plane + r_lo * S + s_lo_;                    \
        for (dws r_ = r_lo; r_ < r_hi; r_++, p_ += dh * xs_h, wr_ += S)        \
            acc_ = NM(dot_acc)(acc_, wr_, p_, n_);                             \
    }                                                                          \
    orow[OW] = bias + NM(hsum)(acc_);                                          \
} while (0)
/* a column of the contiguous rows' path (fwd_rows, `fast`) */
#define DW_FAST_COLUMN(OW) do {                                                \
    if (vec_columns)                                                           \
        DW_FWD_COLUMN_VEC(OW);                                                 \
    else                                                                       \
        DW_FWD_COLUMN(OW);                                                     \
} while (0)

/* The rows of one output plane from M input planes, except what a
 * fixed-size kernel made already: the interior columns [A, B) of rows
 * [fx_lo, fx_hi), or (fx_full) those whole rows. */
static void NM(fwd_rows)(const dw_geom *g, const T *in, dws in_plane, dws M,
                         const T *w, dws w_plane, T bias, T *out,
                         dws fx_lo, dws fx_hi, int fx_full)
{
    const dws H = g->H, W = g->W, xs_h = g->xs_h, xs_w = g->xs_w;
    const dws Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, pl = g->pl, dh = g->dh, dw = g->dw;
    /* tap (r, s) of plane j is w[j*w_plane + wr0 + r*wdr + s*wds]: flip
     * walks the filter backwards instead of copying it reversed */
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    const int fast = (sw == 1 && xs_w == 1);
    const int vec_columns = dw == 1 && !g->flip;
    dws A, B;
    dws lo[DW_MAX_S], hi[DW_MAX_S];
    const int cached = S <= DW_MAX_S;
    dw_interior_columns(g, &A, &B);
    if (!fast && cached) {
        for (dws s = 0; s < S; s++) {
            lo[s] = dw_first(s * dw - pl, sw, Wo);
            hi[s] = dw_end(s * dw - pl, sw, W, Wo);
            if (hi[s] < lo[s])
                hi[s] = lo[s];
        }
    }
    for (dws oh = 0; oh < Ho; oh++) {
        T *orow = out + oh * Wo;
        const dws base = oh * sh - pt;       /* input row of kernel row 0 */
        if (fx_full && oh >= fx_lo && oh < fx_hi) {
            oh = fx_hi - 1;   /* those rows are made: skip them at once */
            continue;
        }
        const dws r_lo = dw_first(base, dh, R);
        dws r_hi = dw_end(base, dh, H, R);
        if (r_hi < r_lo)
            r_hi = r_lo;
        if (fast) {
            const dws n = B - A;
            if (oh >= fx_lo && oh < fx_hi) {
                /* interior done */
            } else if (n >= VL) {
                dws ow = A;
                if (S > VL && dw == 1)
                    for (; B - ow >= 4 * VL; ow += 4 * VL)
                        DW_FWD_BLOCK4_LONG(ow);
                for (; B - ow >= 4 * VL; ow += 4 * VL)
                    DW_FWD_BLOCK(VT, VL, 4, ow);
                if (B - ow >= 2 * VL) {
                    DW_FWD_BLOCK(VT, VL, 2, ow);
                    ow += 2 * VL;
                }
                if (B - ow >= VL) {
                    DW_FWD_BLOCK(VT, VL, 1, ow);
                    ow += VL;
                }
                /* the rest: one block ending at B, overlapping columns
                 * already written with the same values (same sums in the
                 * same order), cheaper than a scalar tail */
                if (ow < B)
                    DW_FWD_BLOCK(VT, VL, 1, B - VL);
#ifdef HT
            } else if (n >= HL) {      /* narrow images (14x14, 7x7) */
                DW_FWD_BLOCK(HT, HL, 1, A);
                if (A + HL < B)
                    DW_FWD_BLOCK(HT, HL, 1, B - HL);
#endif
#ifdef QT
            } else if (n >= QL) {
                DW_FWD_BLOCK(QT, QL, 1, A);
                if (A + QL < B)
                    DW_FWD_BLOCK(QT, QL, 1, B - QL);
#endif
            } else {
                for (dws ow = A; ow < B; ow++)
                    DW_FAST_COLUMN(ow);
            }
            for (dws ow = 0; ow < A; ow++)
                DW_FAST_COLUMN(ow);
            for (dws ow = B; ow < Wo; ow++)
                DW_FAST_COLUMN(ow);
        } else if (cached) {
            /* strided columns: one pass per tap over its valid run of
             * output columns, the row staying in L1 */
            const dws step = sw * xs_w;
            for (dws ow = 0; ow < Wo; ow++)
                orow[ow] = bias;
            for (dws j = 0; j < M; j++) {
                for (dws r = r_lo; r < r_hi; r++) {
                    const T *p = in + j * in_plane + (base + r * dh) * xs_h;
                    const T *wr = w + j * w_plane + wr0 + r * wdr;
                    for (dws s = 0; s < S; s++) {
                        const dws m = hi[s] - lo[s];
                        const T wv = wr[s * wds];
                        const T *src = p + (lo[s] * sw + s * dw - pl) * xs_w;
                        T *o = orow + lo[s];
                        if (step == 2) {        /* constant steps vectorize */
                            for (dws i = 0; i < m; i++)
                                o[i] += wv * src[2 * i];
                        } else if (step == -1) {
                            for (dws i = 0; i < m; i++)
                                o[i] += wv * src[-i];
                        } else {
                            for (dws i = 0; i < m; i++)
                                o[i] += wv * src[i * step];
                        }
                    }
                }
            }
        } else {
            for (dws ow = 0; ow < Wo; ow++)
                DW_FWD_COLUMN(ow);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Padded bands (fwd_band): the input rows a band of output rows needs are   */
/* copied once into a buffer on the thread's stack, the padding as zeros and */
/* the columns split by phase (padded column q*sw + p at p*LP + q), so that  */
/* every output column, border or not, whatever the column stride, dilation  */
/* or input column step, reads tap s of a row as one vector load at a fixed  */
/* offset; the taps of up to 4 vectors accumulate in registers (two chains   */
/* each) and are stored once. It takes what the fixed-size kernels do not:   */
/* column strides, other kernel sizes, column padding of 1-D kernels, the    */
/* input gradient's wide padding. Why: fwd_rows does border columns one at a */
/* time (a chain of R*S dependent adds each) and column strides as one       */
/* read-modify-write pass over the output row per tap. One thread, float32, */
/* AVX-512, fwd_rows -> fwd_band: EfficientNet's 5x5/2 depthwise (8x144x56x56)*/
/* 6.29 -> 3.37 ms; input gradients (stride 1: this kernel over the padded    */
/* gradient) of a 33-tap 1-D layer 2.70 -> 1.13 ms, of a 7x7 global depthwise */
/* 1.12 -> 0.49 ms.                                                          */
/* ------------------------------------------------------------------------ */

/* elements per phase of a buffered row: Wo columns, the kernel's reach, and
 * a vector more, so that a vector from any column < Wo stays inside; a
 * multiple of VL */
DW_INLINE dws NM(band_row_len)(const dw_geom *g)
{
    return (g->Wo + (g->S - 1) * g->dw / g->sw + 2 * VL - 1) / VL * VL;
}

/* output rows per band, 0 when one output row's input rows (of all M planes)
 * do not fit in DW_BAND_BYTES or the kernel is wider or taller than
 * DW_BAND_MAX_S */
DW_INLINE dws NM(band_rows)(const dw_geom *g, dws M)
{
    const dws per_row = M * g->sw * NM(band_row_len)(g);
    const dws fit = DW_BAND_BYTES / (dws)sizeof(T) / per_row;
    const dws reach = (g->R - 1) * g->dh + 1;
    if (g->S > DW_BAND_MAX_S || g->R > DW_BAND_MAX_S || fit < reach)
        return 0;
    return 1 + (fit - reach) / g->sh;
}

/* zeros over n elements at dst (aligned, n a multiple of VL) */
DW_INLINE void NM(band_clear)(T *dst, dws n)
{
    for (dws q = 0; q < n; q += VL)
        DW_STORE(dst + q, (VT){0});
}

/* input row `src` (W elements a step xs_w apart) into its sw phases of LP
 * elements at dst (aligned, LP a multiple of VL), padded with zeros: the
 * phases cleared by vectors, then the row's elements copied in (a copy
 * loop per element and its zeroing took a third of a 7x7 plane's time) */
static void NM(band_fill)(const dw_geom *g, const T *src, dws LP, T *dst)
{
    const dws sw = g->sw, pl = g->pl, W = g->W, xs_w = g->xs_w;
    NM(band_clear)(dst, sw * LP);
    if (sw == 2 && xs_w == 1 && W > 1) {
        /* both phases in one pass over the row, a vector of pairs at a
         * time (input column iw goes to phase (iw + pl) % 2, column
         * (iw + pl) / 2: DW_SPLIT_PAIRS); a phase at a time, each element
         * alone, it was half of EfficientNet's 5x5/2 depthwise forward
         * (perf): one thread 3.07 ->
         * 2.62 ms; both changes, 2 threads, builds alternated: forward
         * 1.39-1.44 -> 1.04-1.16 ms, 3x3/2 on 96x112x112 3.07-3.17 ->
         * 2.45-2.60 */
        const dws a = pl & 1;                 /* first column of a pair */
        const dws c0 = (a + pl) / 2;
        /* (phase columns past LP are never read: cut, as dw_end does) */
        const dws pairs = (W - a) / 2 < LP - c0 ? (W - a) / 2 : LP - c0;
        T *d0 = dst + c0, *d1 = dst + LP + c0;
        const T *sp = src + a;
        if (a)
            dst[LP + (pl - 1) / 2] = src[0];  /* column 0 alone, phase 1 */
        dws k = 0;
        for (; k + VL <= pairs; k += VL)
            DW_SPLIT_PAIRS(VT, IVT, VL, sp + 2 * k, d0 + k, d1 + k);
#if defined(HT)
        if (k + HL <= pairs) {
            DW_SPLIT_PAIRS(HT, IHT, HL, sp + 2 * k, d0 + k, d1 + k);
            k += HL;
        }
#endif
#if defined(QT)
        if (k + QL <= pairs) {
            DW_SPLIT_PAIRS(QT, IQT, QL, sp + 2 * k, d0 + k, d1 + k);
            k += QL;
        }
#endif
        for (; k < pairs; k++) {
            d0[k] = sp[2 * k];
            d1[k] = sp[2 * k + 1];
        }
        if (a + 2 * pairs < W && c0 + pairs < LP)   /* the last column alone, phase 0 */
            d0[pairs] = sp[2 * pairs];
        return;
    }
    for (dws p = 0; p < sw; p++) {
        T *d = dst + p * LP;
        /* [qa, qb): phase columns q with 0 <= q*sw + p - pl < W */
        const dws qa = dw_first(p - pl, sw, LP), qb = dw_end(p - pl, sw, W, LP);
        if (qb <= qa)
            continue;
        const T *sp = src + (qa * sw + p - pl) * xs_w;
        const dws step = sw * xs_w;
        if (step == 1)
            memcpy(d + qa, sp, (size_t)(qb - qa) * sizeof(T));
        else if (step == 2)
            for (dws q = qa; q < qb; q++)
                d[q] = sp[2 * (q - qa)];
        else
            for (dws q = qa; q < qb; q++)
                d[q] = sp[(q - qa) * step];
    }
}

/* the sums of accumulators E and O (NB vectors) to columns AT on of row
 * orow, a vector past WIDTH stored in part */
#define DW_BAND_STORE(NB, AT, WIDTH, E, O) do {                                \
    _Pragma("GCC unroll 4")                                                    \
    for (int b_ = 0; b_ < (NB); b_++) {                                        \
        const VT sum_ = E[b_] + O[b_];                                         \
        if ((AT) + (b_ + 1) * VL <= (WIDTH))                                   \
            DW_STORE(orow + (AT) + b_ * VL, sum_);                             \
        else                                                                   \
            DW_STORE_FIRST(orow + (AT) + b_ * VL, sum_, (WIDTH) - (AT) - b_ * VL); \
    }                                                                          \
} while (0)

/* NB vectors of output columns from column AT of row orow (WIDTH columns)
 * from the buffered rows of a band (fwd_band, igrad_band): for the nr
 * kernel rows of this output row, kernel row r0 + k*r_step reading
 * buffered row o0 + k*o_step of each plane (steps, not a list: a list read
 * per row made fwd_band 10 % slower), every plane and tap, two
 * accumulators per vector (even and odd kernel columns), the first
 * starting at BIAS; a vector past WIDTH (WIDTH < VL) is stored in part.
 * (SC: the taps per kernel row as a constant, which DW_BAND_BLOCK_S2 takes;
 * this block reads S.) */
#define DW_BAND_BLOCK(NB, AT, WIDTH, BIAS, SC) do {                            \
    VT e_[NB], o_[NB];                                                         \
    _Pragma("GCC unroll 4")                                                    \
    for (int b_ = 0; b_ < (NB); b_++) {                                        \
        e_[b_] = (VT){0} + (BIAS);                                             \
        o_[b_] = (VT){0};                                                      \
    }                                                                          \
    for (dws k_ = 0; k_ < nr; k_++) {                                          \
        for (dws j_ = 0; j_ < M; j_++) {                                       \
            const T *row_ = buf + (j_ * nrows + o0 + k_ * o_step) * rowstep + (AT); \
            const T *wr_ = w + j_ * w_plane + wr0 + (r0 + k_ * r_step) * wdr;  \
            dws s_ = 0;                                                        \
            for (; s_ + 1 < S; s_ += 2) {                                      \
                const T w0_ = wr_[s_ * wds], w1_ = wr_[(s_ + 1) * wds];        \
                const T *p0_ = row_ + off[s_], *p1_ = row_ + off[s_ + 1];      \
                _Pragma("GCC unroll 4")                                        \
                for (int b_ = 0; b_ < (NB); b_++) {                            \
                    e_[b_] += w0_ * DW_LOAD(VT, p0_ + b_ * VL);                \
                    o_[b_] += w1_ * DW_LOAD(VT, p1_ + b_ * VL);                \
                }                                                              \
            }                                                                  \
            if (s_ < S) {                                                      \
                const T w0_ = wr_[s_ * wds];                                   \
                const T *p0_ = row_ + off[s_];                                 \
                _Pragma("GCC unroll 4")                                        \
                for (int b_ = 0; b_ < (NB); b_++)                              \
                    e_[b_] += w0_ * DW_LOAD(VT, p0_ + b_ * VL);                \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    DW_BAND_STORE(NB, AT, WIDTH, e_, o_);                                      \
} while (0)

/* The WIDTH columns of row orow by DW_BAND_BLOCK: 4 vectors at a time,
 * then the 1 to 4 that hold the rest in one block, its last vector stored
 * in part (a buffered row holds a vector from any column < WIDTH). Why one
 * block: each block is a pass over every tap with two accumulator chains
 * per vector, so a lone vector waits on the FMA latency. EfficientNet's
 * 5x5/2 depthwise (28 output columns) forward, fp32, AVX-512, one thread:
 * as 1 + 1 vectors (the second ending at WIDTH) 3.30 ms, as one block of
 * 2 3.07 ms. */
/* DW_BAND_BLOCK(4, ...) by DW_SLIDE4 where tap s reads column off[0] +
 * DIR*s (DIR = 1: the forward pass at unit column stride and dilation; -1:
 * the input gradient's band, its taps reversed) and kernel rows are longer
 * than a vector. */
#define DW_BAND_BLOCK4_LONG(AT, BIAS, DIR) do {                                \
    VT a0_ = (VT){0} + (BIAS), a1_ = a0_, a2_ = a0_, a3_ = a0_;                 \
    for (dws k_ = 0; k_ < nr; k_++)                                            \
        for (dws j_ = 0; j_ < M; j_++)                                         \
            DW_SLIDE4(buf + (j_ * nrows + o0 + k_ * o_step) * rowstep + (AT) + off[0], \
                      w + j_ * w_plane + wr0 + (r0 + k_ * r_step) * wdr, DIR,  \
                      a0_, a1_, a2_, a3_);                                     \
    DW_STORE(orow + (AT), a0_);                                                \
    DW_STORE(orow + (AT) + VL, a1_);                                           \
    DW_STORE(orow + (AT) + 2 * VL, a2_);                                       \
    DW_STORE(orow + (AT) + 3 * VL, a3_);                                       \
} while (0)

/* columns [C, WIDTH) by BLOCK (DW_BAND_BLOCK or DW_BAND_BLOCK_S2): 4
 * vectors at a time, then the rest in one block */
#define DW_BAND_COLUMNS(BLOCK, C, WIDTH, BIAS, SC) do {                        \
    for (; (C) + 4 * VL <= (WIDTH); (C) += 4 * VL)                             \
        BLOCK(4, C, WIDTH, BIAS, SC);                                          \
    if ((C) + 3 * VL < (WIDTH))                                                \
        BLOCK(4, C, WIDTH, BIAS, SC);                                          \
    else if ((C) + 2 * VL < (WIDTH))                                           \
        BLOCK(3, C, WIDTH, BIAS, SC);                                          \
    else if ((C) + VL < (WIDTH))                                               \
        BLOCK(2, C, WIDTH, BIAS, SC);                                          \
    else if ((C) < (WIDTH))                                                    \
        BLOCK(1, C, WIDTH, BIAS, SC);                                          \
} while (0)

#define DW_BAND_ROW(WIDTH, BIAS) do {                                          \
    dws c_ = 0;                                                                \
    if (S > VL && off[1] - off[0] == 1)                                        \
        for (; c_ + 4 * VL <= (WIDTH); c_ += 4 * VL)                           \
            DW_BAND_BLOCK4_LONG(c_, BIAS, 1);                                  \
    else if (S > VL && off[1] - off[0] == -1)                                  \
        for (; c_ + 4 * VL <= (WIDTH); c_ += 4 * VL)                           \
            DW_BAND_BLOCK4_LONG(c_, BIAS, -1);                                 \
    DW_BAND_COLUMNS(DW_BAND_BLOCK, c_, WIDTH, BIAS, 0);                        \
} while (0)

/* Column stride 2 without column dilation, SC (a constant: 3, 5 or 7) taps
 * per kernel row: tap s reads phase s % 2 at column s / 2 of the block, so
 * each phase's vectors from the block's (aligned) start, NB and as many as
 * its last tap's column reaches, are loaded once per kernel row, and every
 * tap's vector is one of them or a shift of two
 * (DW_SHUFFLE2: valignd / vpermt2ps with AVX-512). DW_BAND_BLOCK
 * loads each tap's vector from its column, a 64-byte load across two cache
 * lines for every tap past the first of a phase. One thread, float32,
 * AVX-512, builds alternated, best of 4: EfficientNet's 5x5/2 depthwise
 * forward (8 x 144 x 56x56) 1.24 -> 1.16 ms, 3x3/2 on 8 x 96 x 112x112 3.91
 * -> 3.69 ms. The same accumulators and order of adds as DW_BAND_BLOCK:
 * the same bits (compared, both ISAs and types). */
#define DW_S2_TAP(NB, SC, PH, C, ACC) do {                                     \
    if (2 * (C) + (PH) < (SC)) {                                               \
        const T wv_ = wr_[(2 * (C) + (PH)) * wds];                             \
        _Pragma("GCC unroll 4")                                                \
        for (int b_ = 0; b_ < (NB); b_++) {                                    \
            /* column C: vector C / VL on, shifted by C % VL lanes */          \
            VT x_ = phase_[b_ + (C) / VL];                                     \
            if ((C) % VL > 0) {                                                \
                x_ = DW_SHUFFLE2(VT, IVT, VL, x_, phase_[b_ + (C) / VL + 1],   \
                                 i_ + (C) % VL);                               \
            }                                                                  \
            ACC[b_] += wv_ * x_;                                               \
        }                                                                      \
    }                                                                          \
} while (0)

#define DW_S2_PHASE(NB, SC, PH, ACC) do {                                      \
    /* the vectors its taps reach: NB and the last column's, (SC-1-PH)/2 */    \
    enum { NV_ = (NB) + (((SC) - 1 - (PH)) / 2 + VL - 1) / VL };               \
    VT phase_[NV_];                                                            \
    _Pragma("GCC unroll 8")                                                    \
    for (int b_ = 0; b_ < NV_; b_++)                                           \
        phase_[b_] = DW_LOAD(VT, row_ + (PH) * LP + b_ * VL);                  \
    DW_S2_TAP(NB, SC, PH, 0, ACC);                                             \
    DW_S2_TAP(NB, SC, PH, 1, ACC);                                             \
    DW_S2_TAP(NB, SC, PH, 2, ACC);                                             \
    DW_S2_TAP(NB, SC, PH, 3, ACC);                                             \
} while (0)

#define DW_BAND_BLOCK_S2(NB, AT, WIDTH, BIAS, SC) do {                         \
    VT e_[NB], o_[NB];                                                         \
    _Pragma("GCC unroll 4")                                                    \
    for (int b_ = 0; b_ < (NB); b_++) {                                        \
        e_[b_] = (VT){0} + (BIAS);                                             \
        o_[b_] = (VT){0};                                                      \
    }                                                                          \
    for (dws k_ = 0; k_ < nr; k_++) {                                          \
        for (dws j_ = 0; j_ < M; j_++) {                                       \
            const T *row_ = buf + (j_ * nrows + o0 + k_ * o_step) * rowstep + (AT); \
            const T *wr_ = w + j_ * w_plane + wr0 + (r0 + k_ * r_step) * wdr;  \
            DW_S2_PHASE(NB, SC, 0, e_);                                        \
            DW_S2_PHASE(NB, SC, 1, o_);                                        \
        }                                                                      \
    }                                                                          \
    DW_BAND_STORE(NB, AT, WIDTH, e_, o_);                                      \
} while (0)

#define DW_BAND_ROW_S2(SC, WIDTH, BIAS) do {                                   \
    dws c_ = 0;                                                                \
    DW_BAND_COLUMNS(DW_BAND_BLOCK_S2, c_, WIDTH, BIAS, SC);                    \
} while (0)

/* whether fwd_band beats fwd_rows on a plane whose interior columns are
 * [A, B): a column stride or step, or border columns (each a scalar chain of
 * up to R*S adds in fwd_rows) more than a vector's share of the interior.
 * On contiguous rows without padding fwd_rows reads the input in place and
 * was faster (one thread, float32, AVX-512: 33-tap 1-D layer 0.93 ms against
 * 1.05, 31-tap 1.14 against 1.32). */
DW_INLINE int NM(band_pays)(const dw_geom *g, dws A, dws B)
{
    return g->sw != 1 || g->xs_w != 1 || (g->Wo - (B - A)) * VL > B - A;
}

/* off[s]: where tap s of a buffered row reads (phase (s*dw) % sw, column
 * (s*dw) / sw), stepped, not divided (a division per tap was a tenth of a
 * 33-tap layer's time) */
DW_INLINE void NM(band_offsets)(const dw_geom *g, dws LP, dws *off)
{
    for (dws s = 0, phase = 0, col = 0; s < g->S; s++) {
        off[s] = phase * LP + col;
        phase += g->dw;
        for (; phase >= g->sw; phase -= g->sw)
            col++;
    }
}

/* the input rows [i0, i1) under output rows [oh0, oh1) (clipped to the
 * input), and of each of the M planes buffered: plane j's row i0 + i at
 * buf + (j*nrows + i) * sw*LP; returns nrows */
DW_INLINE dws NM(band_load)(const dw_geom *g, const T *in, dws in_plane, dws M, dws LP,
                            dws oh0, dws oh1, dws *i0_out, dws *i1_out, T *buf)
{
    dws i0 = oh0 * g->sh - g->pt, i1 = (oh1 - 1) * g->sh - g->pt + (g->R - 1) * g->dh + 1;
    i0 = i0 > 0 ? i0 : 0;
    i1 = i1 < g->H ? i1 : g->H;
    const dws nrows = i1 > i0 ? i1 - i0 : 0;
    for (dws j = 0; j < M; j++)
        for (dws i = 0; i < nrows; i++)
            NM(band_fill)(g, in + j * in_plane + (i0 + i) * g->xs_h, LP,
                          buf + (j * nrows + i) * g->sw * LP);
    *i0_out = i0;
    *i1_out = i1;
    return nrows;
}

/* One output plane from M input planes (see fwd_rows) by padded bands; 0
 * (nothing written) when a band does not fit (see band_rows). */
static __attribute__((noinline)) int NM(fwd_band)(const dw_geom *g, const T *in, dws in_plane,
                                                  dws M, const T *w, dws w_plane, T bias, T *out)
{
    const dws band = NM(band_rows)(g, M);
    if (!band)
        return 0;
    T buf[DW_BAND_BYTES / sizeof(T)] __attribute__((aligned(64)));
    dws off[DW_BAND_MAX_S];
    const dws H = g->H, Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, dh = g->dh;
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    const dws LP = NM(band_row_len)(g), rowstep = sw * LP;
    /* the taps per kernel row where DW_BAND_BLOCK_S2 takes them (3, 5, 7) */
    const dws s2_taps = sw == 2 && g->dw == 1 ? S : 0;
    NM(band_offsets)(g, LP, off);
    for (dws oh0 = 0; oh0 < Ho; oh0 += band) {
        const dws oh1 = oh0 + band < Ho ? oh0 + band : Ho;
        dws i0, i1;
        const dws nrows = NM(band_load)(g, in, in_plane, M, LP, oh0, oh1, &i0, &i1, buf);
        for (dws oh = oh0; oh < oh1; oh++) {
            T *orow = out + oh * Wo;
            const dws base = oh * sh - pt;
            /* the kernel rows inside the input, and their buffered rows */
            const dws r0 = dw_first(base, dh, R), r_hi = dw_end(base, dh, H, R);
            const dws nr = r_hi > r0 ? r_hi - r0 : 0, r_step = 1;
            const dws o0 = base + r0 * dh - i0, o_step = dh;
            if (s2_taps == 5)
                DW_BAND_ROW_S2(5, Wo, bias);
            else if (s2_taps == 3)
                DW_BAND_ROW_S2(3, Wo, bias);
            else if (s2_taps == 7)
                DW_BAND_ROW_S2(7, Wo, bias);
            else
                DW_BAND_ROW(Wo, bias);
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Grouped planes by padded bands (fwd_band_multi): fwd_band's buffer, filled */
/* once for the M input planes of a group, serves a block of FB of its       */
/* filters, each loaded vector multiplied by FB broadcast weights into FB    */
/* accumulators (FB x NB registers: NB vectors of output columns). It takes  */
/* the grouped layers the fixed-size blocks do not: column strides (ResNeXt's */
/* 3x3/2 layers) and rows narrower than a vector. Plane by plane, fwd_band   */
/* filled the buffer again for every filter and loaded every vector once per */
/* filter: 8 x 256 x 56x56, 32 groups, 3x3/2, float32, 2 threads, AVX-512:   */
/* 11.98 ms, fused 5.26, PyTorch 4.02.                                       */
/* ------------------------------------------------------------------------ */

/* filters per block and vectors per block: FB*NB accumulators, FB weights
 * and NB input vectors in registers (32 with AVX-512, 16 otherwise) */
#undef DW_BM_ACCS
#ifdef QT
#define DW_BM_ACCS 16
#else
#define DW_BM_ACCS 8
#endif

/* FB filters x NB vectors of output columns from column AT of row oh:
 * for each plane j, kernel row and tap, NB vectors loaded once and
 * multiplied by the FB filters' weights (one chain per accumulator: FB*NB
 * >= 4 of them cover the FMA latency); vectors past WIDTH stored in part */
#define DW_BAND_MULTI_BLOCK(FB, NB, AT, WIDTH) do {                            \
    VT acc_[FB][NB];                                                           \
    _Pragma("GCC unroll 8")                                                    \
    for (int f_ = 0; f_ < (FB); f_++) {                                        \
        const T b_ = bm ? bm[f_] : 0;                                          \
        _Pragma("GCC unroll 4")                                                \
        for (int b2_ = 0; b2_ < (NB); b2_++)                                   \
            acc_[f_][b2_] = (VT){0} + b_;                                      \
    }                                                                          \
    for (dws j_ = 0; j_ < M; j_++) {                                           \
        for (dws k_ = 0; k_ < nr; k_++) {                                      \
            const T *row_ = buf + (j_ * nrows + o0 + k_ * dh) * rowstep + (AT); \
            const T *wr_ = wm + j_ * w_plane + wr0 + (r0 + k_) * wdr;          \
            for (dws s_ = 0; s_ < S; s_++) {                                   \
                const T *p_ = row_ + off[s_];                                  \
                const T *ws_ = wr_ + s_ * wds;                                 \
                VT v_[NB];                                                     \
                _Pragma("GCC unroll 4")                                        \
                for (int b2_ = 0; b2_ < (NB); b2_++)                           \
                    v_[b2_] = DW_LOAD(VT, p_ + b2_ * VL);                      \
                _Pragma("GCC unroll 8")                                        \
                for (int f_ = 0; f_ < (FB); f_++) {                            \
                    const T wf_ = ws_[f_ * w_step];                            \
                    _Pragma("GCC unroll 4")                                    \
                    for (int b2_ = 0; b2_ < (NB); b2_++)                       \
                        acc_[f_][b2_] += wf_ * v_[b2_];                        \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 8")                                                    \
    for (int f_ = 0; f_ < (FB); f_++) {                                        \
        T *orow_ = om + f_ * o_step + oh * Wo;                                 \
        _Pragma("GCC unroll 4")                                                \
        for (int b2_ = 0; b2_ < (NB); b2_++) {                                 \
            if ((AT) + (b2_ + 1) * VL <= (WIDTH))                              \
                DW_STORE(orow_ + (AT) + b2_ * VL, acc_[f_][b2_]);              \
            else                                                               \
                DW_STORE_FIRST(orow_ + (AT) + b2_ * VL, acc_[f_][b2_],         \
                               (WIDTH) - (AT) - b2_ * VL);                     \
        }                                                                      \
    }                                                                          \
} while (0)

/* the Wo columns of row oh for FB filters: NB = DW_BM_ACCS / FB (at most
 * 4) vectors at a time, then the 1 to NB vectors left (the last partial)
 * in one block */
#define DW_BAND_MULTI_ROW(FB) do {                                             \
    enum { NB_ = DW_BM_ACCS / (FB) > 4 ? 4 : DW_BM_ACCS / (FB) };              \
    dws c_ = 0;                                                                \
    for (; c_ + NB_ * VL <= Wo; c_ += NB_ * VL)                                \
        DW_BAND_MULTI_BLOCK(FB, NB_, c_, Wo);                                  \
    const dws rem_ = (Wo - c_ + VL - 1) / VL;   /* 0 to NB_, the last partial */ \
    if (NB_ >= 4 && rem_ == 4)                                                 \
        DW_BAND_MULTI_BLOCK(FB, (NB_ >= 4 ? 4 : 1), c_, Wo);                   \
    else if (NB_ >= 3 && rem_ == 3)                                            \
        DW_BAND_MULTI_BLOCK(FB, (NB_ >= 3 ? 3 : 1), c_, Wo);                   \
    else if (NB_ >= 2 && rem_ == 2)                                            \
        DW_BAND_MULTI_BLOCK(FB, (NB_ >= 2 ? 2 : 1), c_, Wo);                   \
    else if (rem_ == 1)                                                        \
        DW_BAND_MULTI_BLOCK(FB, 1, c_, Wo);                                    \
} while (0)

/* Part `part` of `parts` of the input rows [i0, i1) of M planes (in
 * plane-row order) asked for into the cache while the band before them
 * computes, a part before each of its output rows (issued at once, the
 * prefetches waited on the miss buffers). Rows of contiguous or every-other
 * elements; others are left to the hardware. Why: fwd_band_multi's fill
 * waited on each plane's rows, a new stream every few rows. 8 x 256 x
 * 56x56, 32 groups, 3x3/2, float32, one thread: the fill was 46 % of the
 * run (perf), its loads missing, against 1.2 ms to read the whole input
 * (np.sum). With against without (2 threads, out=, builds alternated, best
 * of 5, two runs): that layer 0.83-0.84x the time, 16 channels per group
 * on 28x28 0.75x and 1.25x (noise: the machine drifted 30 % that day). */
DW_INLINE void NM(band_prefetch)(const dw_geom *g, const T *in, dws in_plane, dws M,
                                 dws i0, dws i1, dws part, dws parts)
{
    const dws step = g->xs_w < 0 ? -g->xs_w : g->xs_w;
    if (step > 2 || i1 <= i0)
        return;
    const dws rows = i1 - i0, total = M * rows;
    const dws line = 64 / (dws)sizeof(T), n = (g->W - 1) * step + 1;
    for (dws t = total * part / parts; t < total * (part + 1) / parts; t++) {
        const dws j = t / rows, i = i0 + t % rows;
        const T *row = in + j * in_plane + i * g->xs_h;
        const T *lo = g->xs_w < 0 ? row + (g->W - 1) * g->xs_w : row;
        for (dws e = 0; e < n; e += line)
            __builtin_prefetch(lo + e, 0, 3);
        __builtin_prefetch(lo + n - 1, 0, 3);
    }
}

/* MB output planes, each from M input planes (see fwd_multi), by padded
 * bands; 0 (nothing written) when a band does not fit (see band_rows) */
static __attribute__((noinline)) int NM(fwd_band_multi)(const dw_geom *g, const T *in,
                                                        dws in_plane, dws M, dws MB,
                                                        const T *w, dws w_step, dws w_plane,
                                                        const T *bias, T *out, dws o_step)
{
    const dws band = NM(band_rows)(g, M);
    if (!band)
        return 0;
    T buf[DW_BAND_BYTES / sizeof(T)] __attribute__((aligned(64)));
    dws off[DW_BAND_MAX_S];
    const dws H = g->H, Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, dh = g->dh;
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    const dws LP = NM(band_row_len)(g), rowstep = sw * LP;
    NM(band_offsets)(g, LP, off);
    for (dws oh0 = 0; oh0 < Ho; oh0 += band) {
        const dws oh1 = oh0 + band < Ho ? oh0 + band : Ho;
        dws i0, i1;
        const dws nrows = NM(band_load)(g, in, in_plane, M, LP, oh0, oh1, &i0, &i1, buf);
        /* the next band's new rows, [i1, next) */
        dws next = i1;
        if (oh1 < Ho) {
            const dws n1 = oh1 + band < Ho ? oh1 + band : Ho;
            next = (n1 - 1) * sh - pt + (R - 1) * dh + 1;
            next = next < H ? next : H;
        }
        for (dws oh = oh0; oh < oh1; oh++) {
            NM(band_prefetch)(g, in, in_plane, M, i1, next, oh - oh0, oh1 - oh0);
            const dws base = oh * sh - pt;
            const dws r0 = dw_first(base, dh, R), r_hi = dw_end(base, dh, H, R);
            const dws nr = r_hi > r0 ? r_hi - r0 : 0;
            const dws o0 = base + r0 * dh - i0;
            for (dws m = 0; m < MB;) {
                const T *wm = w + m * w_step, *bm = bias ? bias + m : NULL;
                T *om = out + m * o_step;
                const dws left = MB - m;
                /* 8 filters where a row is one or two vectors (with 32
                 * registers): 4 or 8 accumulators would leave FMA slots idle */
                if (DW_BM_ACCS >= 16 && left >= 8 && Wo <= 2 * VL) {
                    DW_BAND_MULTI_ROW(8);
                    m += 8;
                } else if (left >= 4) {
                    DW_BAND_MULTI_ROW(4);
                    m += 4;
                } else if (left >= 2) {
                    DW_BAND_MULTI_ROW(2);
                    m += 2;
                } else {
                    DW_BAND_MULTI_ROW(1);
                    m += 1;
                }
            }
        }
    }
    return 1;
}

#if defined(DW_MLOAD) && defined(QT)
/* whether the stride-2 tiles (_depthwise_fixed.h, fwd_tiles_s2) take the plane */
DW_INLINE int NM(tiles_s2_fit)(const dw_geom *g)
{
    return g->sh == 2 && g->sw == 2 && g->dh == 1 && g->dw == 1 && g->xs_w == 1
           && NM(fixed_kernel)(g) && NM(zero_row_fits)(g);
}
#endif

/* whether a fixed-size kernel (3x3, 5x5, 7x7) does the interior rows */
DW_INLINE int NM(fixed_size)(const dw_geom *g)
{
    return g->sw == 1 && g->xs_w == 1 && NM(fixed_kernel)(g);
}

/* whether the kernel covers the whole plane, which is contiguous, for one
 * output (a global depthwise layer, as MobileFaceNet's 7x7 GDC): out = one
 * dot product of R*S elements a plane. Why: as columns (fwd_rows) the
 * per-row set-up of such a plane took most of its time (8 x 512 planes of
 * 7x7, float32, one thread, AVX-512: 230 us scalar, 164 us vector columns,
 * 70 us as dot products: calls of 8 images) */
DW_INLINE int NM(global)(const dw_geom *g)
{
    return g->Ho == 1 && g->Wo == 1 && g->H == g->R && g->W == g->S && g->pt == 0
           && g->pl == 0 && g->dh == 1 && g->dw == 1 && g->xs_w == 1 && g->xs_h == g->W
           && !g->flip;
}

/* Which kernel takes a plane of one input plane (M = 1) in fwd:
 * DW_FWD_TILES_S2 (fwd_tiles_s2: stride 2, dilation 1, AVX-512),
 * DW_FWD_TILES (fwd_tiles: the fixed sizes where rows share their input
 * rows, with masked loads; AVX2 5x5 and 7x7 only), else DW_FWD_OTHER (the
 * row blocks, bands and generic kernels). fwd dispatches on it, and the
 * tests ask it (depthwise.pyx, forward_path) that the tiles run. */
static int NM(fwd_path)(const dw_geom *g, dws M)
{
    if (M != 1 || (g->H == 1 && g->W == 1) || NM(global)(g) || !NM(zero_row_fits)(g))
        return DW_FWD_OTHER;
#if defined(DW_MLOAD) && defined(QT)
    if (NM(tiles_s2_fit)(g))
        return DW_FWD_TILES_S2;
#endif
#ifdef DW_MLOAD
#ifdef QT
    const int sizes = 1;
#else
    const int sizes = g->R >= 5;   /* AVX2: see DW_TILES */
#endif
    if (NM(fixed_size)(g) && g->sh == g->dh && sizes)
        return DW_FWD_TILES;
#endif
    return DW_FWD_OTHER;
}

/* One output plane from 1x1 input planes (the input gradient of a global
 * depthwise layer: MobileFaceNet's 7x7 output gradient from one value a
 * plane): output (oh, ow) is the bias plus each input value times the one
 * tap that reaches it (r*dh = pt - oh*sh, s*dw = pl - ow*sw), or the bias
 * alone. Why: fwd_rows made the 7x7 plane 49 scalar columns from a padded
 * 1x1 input, set-up and all (8 x 512 planes, float32, 2 threads: 0.24 ms,
 * PyTorch 0.17). Strides and dilations other than 1 find the tap by
 * division (rare: a strided global layer's gradient). */
static void NM(fwd_point)(const dw_geom *g, const T *in, dws in_plane, dws M, const T *w,
                          dws w_plane, T bias, T *out)
{
    const dws Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    if (g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1) {
        /* tap (pt - oh, pl - ow): no divisions (two per output made this
         * 2x slower than fwd_rows) */
        const dws lo = g->pl - (S - 1) > 0 ? g->pl - (S - 1) : 0;
        const dws hi = g->pl + 1 < Wo ? g->pl + 1 : Wo;
        for (dws oh = 0; oh < Ho; oh++) {
            const dws r = g->pt - oh;
            T *orow = out + oh * Wo;
            if (r < 0 || r >= R || M == 0) {
                for (dws ow = 0; ow < Wo; ow++)
                    orow[ow] = bias;
                continue;
            }
            for (dws ow = 0; ow < lo; ow++)
                orow[ow] = bias;
            for (dws ow = hi; ow < Wo; ow++)
                orow[ow] = bias;
            /* column ow takes tap s = pl - ow; the first plane's products
             * are written, not added to a bias just stored (a wide load of
             * narrow stores that the core could not forward: a third of
             * the time) */
            const T *wt = w + wr0 + r * wdr + g->pl * wds;
            const T x0 = in[0];
            for (dws ow = lo; ow < hi; ow++)
                orow[ow] = bias + x0 * wt[-ow * wds];
            for (dws j = 1; j < M; j++) {
                const T x = in[j * in_plane];
                for (dws ow = lo; ow < hi; ow++)
                    orow[ow] += x * wt[j * w_plane - ow * wds];
            }
        }
        return;
    }
    for (dws oh = 0; oh < Ho; oh++) {
        const dws u = g->pt - oh * g->sh;
        const int row_ok = u >= 0 && u % g->dh == 0 && u / g->dh < R;
        for (dws ow = 0; ow < Wo; ow++) {
            const dws v = g->pl - ow * g->sw;
            T acc = bias;
            if (row_ok && v >= 0 && v % g->dw == 0 && v / g->dw < S) {
                const T *wt = w + wr0 + (u / g->dh) * wdr + (v / g->dw) * wds;
                for (dws j = 0; j < M; j++)
                    acc += in[j * in_plane] * wt[j * w_plane];
            }
            out[oh * Wo + ow] = acc;
        }
    }
}

/* One output plane from M input planes (see fwd_rows). */
static __attribute__((noinline)) void NM(fwd)(const dw_geom *g, const T *in, dws in_plane, dws M,
                            const T *w, dws w_plane, T bias, T *out)
{
    dws A, B, fx_lo = 0, fx_hi = 0;
    int fx_full = 0;
    if (g->H == 1 && g->W == 1) {
        NM(fwd_point)(g, in, in_plane, M, w, w_plane, bias, out);
        return;
    }
    if (NM(global)(g)) {
        VT acc = (VT){0};
        for (dws j = 0; j < M; j++)
            acc = NM(dot_acc)(acc, in + j * in_plane, w + j * w_plane, g->R * g->S);
        out[0] = bias + NM(hsum)(acc);
        return;
    }
#ifdef DW_MLOAD
    const int path = NM(fwd_path)(g, M);
#ifdef QT
    if (path == DW_FWD_TILES_S2) {
        if (g->R == 3)
            NM(fwd_tiles_s2_3x3)(g, in, w, bias, out);
        else if (g->R == 5)
            NM(fwd_tiles_s2_5x5)(g, in, w, bias, out);
        else
            NM(fwd_tiles_s2_7x7)(g, in, w, bias, out);
        return;
    }
#endif
    if (path == DW_FWD_TILES) {
        if (g->R == 5)
            NM(fwd_tiles_5x5)(g, in, w, bias, out);
        else if (g->R == 7)
            NM(fwd_tiles_7x7)(g, in, w, bias, out);
#ifdef QT
        else
            NM(fwd_tiles_3x3)(g, in, w, bias, out);
#endif
        return;
    }
#endif
    dw_interior_columns(g, &A, &B);
#ifdef DW_MLOAD
    /* masked loads: the fixed-size kernels take the whole plane, its padded
     * rows and columns as masked blocks. Why: the generic kernels' border
     * rows and columns are scalar, and took 60 % of a 14 x 14 layer's time
     * (8 x 576 planes, 3x3: 1.42 ms, 6.7x PyTorch's) */
    if (M == 1 && NM(fixed_size)(g)) {
        if (g->R == 3)
            NM(fwd_3x3)(g, in, w, bias, out, A, B, 0, g->Ho);
        else if (g->R == 5)
            NM(fwd_5x5)(g, in, w, bias, out, A, B, 0, g->Ho);
        else
            NM(fwd_7x7)(g, in, w, bias, out, A, B, 0, g->Ho);
        return;
    }
#endif
    if (M == 1 && B - A >= DW_MIN_LANES && NM(fixed_size)(g)) {
        dw_interior_rows(g, &fx_lo, &fx_hi);
        if (fx_hi > fx_lo) {
            if (g->R == 3)
                fx_full = NM(fwd_3x3)(g, in, w, bias, out, A, B, fx_lo, fx_hi);
            else if (g->R == 5)
                fx_full = NM(fwd_5x5)(g, in, w, bias, out, A, B, fx_lo, fx_hi);
            else
                fx_full = NM(fwd_7x7)(g, in, w, bias, out, A, B, fx_lo, fx_hi);
        }
    }
    if (fx_hi > fx_lo || !NM(band_pays)(g, A, B)
        || !NM(fwd_band)(g, in, in_plane, M, w, w_plane, bias, out))
        NM(fwd_rows)(g, in, in_plane, M, w, w_plane, bias, out, fx_lo, fx_hi, fx_full);
}

/* Whether fwd_multi's fixed-size kernels make blocks of planes for this
 * geometry (its interior rows at least): plane by plane, the generic kernels
 * loaded every input vector once per filter and ran a grouped layer at a
 * quarter of the blocks' rate (8 x 512 x 14x14, 16 channels per group,
 * float32, AVX-512). */
static int NM(multi_blocks)(const dw_geom *g)
{
    dws A, B, lo, hi;
    if (!NM(fixed_size)(g))
        return 0;
    dw_interior_rows(g, &lo, &hi);
    dw_interior_columns(g, &A, &B);
#ifdef DW_MLOAD
    if (hi > lo && g->Wo >= VL)
        return 1;
#endif
    return hi > lo && B - A >= VL;
}

/* How fwd_multi makes MB > 1 planes from M input planes each (for the
 * planner's cost model too): DW_MULTI_BLOCKS, the fixed-size kernels'
 * blocks; DW_MULTI_BANDS, fwd_band_multi (grouped, M > 1, where those do
 * not run); DW_MULTI_PLANES, plane by plane. */
static int NM(multi_path)(const dw_geom *g, dws M)
{
    if (M <= DW_GROUP_MAX_PLANES && NM(multi_blocks)(g))
        return DW_MULTI_BLOCKS;
    if (M > 1 && NM(band_rows)(g, M) > 0)
        return DW_MULTI_BANDS;
    return DW_MULTI_PLANES;
}

/* MB output planes out + m*o_step (m < MB), each the sum over M input
 * planes in + j*in_plane of the plane correlated with filter
 * w + m*w_step + j*w_plane, plus bias[m] (bias NULL: none). M = 1: a
 * channel multiplier's filters of one input plane; M > 1: filters of a
 * grouped convolution with M channels per group (or, for its input
 * gradient, M filters per group meeting in MB input channels). The interior
 * rows go through the fixed-size multi-plane kernels in blocks of 4 and 2
 * planes (each input vector loaded once for the block) where M is at most
 * DW_GROUP_MAX_PLANES; the rest, and any plane left over, plane by plane.
 * Grouped planes those kernels do not take run by fwd_band_multi. */
static __attribute__((noinline)) void NM(fwd_multi)(const dw_geom *g, const T *in, dws in_plane,
                                                    dws M, dws MB, const T *w, dws w_step,
                                                    dws w_plane, const T *bias, T *out,
                                                    dws o_step)
{
    dws A, B, fx_lo = 0, fx_hi = 0, m = 0;
    if (MB > 1 && NM(multi_path)(g, M) == DW_MULTI_BANDS
        && NM(fwd_band_multi)(g, in, in_plane, M, MB, w, w_step, w_plane, bias, out, o_step))
        return;
    dw_interior_columns(g, &A, &B);
    if (NM(fixed_size)(g) && M <= DW_GROUP_MAX_PLANES)
        dw_interior_rows(g, &fx_lo, &fx_hi);
    while (m < MB) {
        const dws left = MB - m;
        const T *wm = w + m * w_step, *bm = bias ? bias + m : NULL;
        T *om = out + m * o_step;
        /* blocks of 4 and 2: a multiplier of 8 or more reaches here only
         * with planes narrower than a vector (fwd_panels takes the rest),
         * where the fixed-size kernels do nothing */
        dws block = left >= 4 ? 4 : left >= 2 ? 2 : 1;
        int done = 0;
        const int back = block == 1 && m > 0 && fx_hi > fx_lo;
        if (back) {
            /* one plane left after blocks: a block of 2 with the plane before
             * it, which is written again with the same values (the same sums
             * in the same order), not the generic kernels plane by plane */
            m--;
            wm -= w_step;
            bm = bias ? bias + m : NULL;
            om -= o_step;
            block = 2;
        }
        if (block > 1 && fx_hi > fx_lo) {
#define DW_MULTI_CALL(RS, MBV) NM(fwd_multi_##RS##_##MBV)(g, in, in_plane, M, wm, w_step, \
                                                          w_plane, bm, om, o_step, A, B, \
                                                          fx_lo, fx_hi)
#define DW_MULTI_SIZE(RS) (block == 4 ? DW_MULTI_CALL(RS, 4) : DW_MULTI_CALL(RS, 2))
            if (g->R == 3)
                done = DW_MULTI_SIZE(3x3);
            else if (g->R == 5)
                done = DW_MULTI_SIZE(5x5);
            else
                done = DW_MULTI_SIZE(7x7);
#undef DW_MULTI_SIZE
#undef DW_MULTI_CALL
        }
        if (!done)
            block = left + back;   /* rows too narrow for it: plane by plane */
        for (dws j = 0; j < block; j++) {
            const T b = bm ? bm[j] : 0;
            if (done)
                NM(fwd_rows)(g, in, in_plane, M, wm + j * w_step, w_plane, b, om + j * o_step,
                             fx_lo, fx_hi, done == 2);
            else
                NM(fwd)(g, in, in_plane, M, wm + j * w_step, w_plane, b, om + j * o_step);
        }
        m += block;
    }
}

/* ------------------------------------------------------------------------ */
/* A channel multiplier over gathered taps (fwd_panels). Positions [j0, j0 + */
/* len) of one input plane's output run (Ho*Wo, row after row) are gathered  */
/* once for all of the channel's filters, so that the input under tap t of   */
/* position j0 + q is X[off[t] + q] (zero in the padding); each block of     */
/* filters then reads X with plain vector loads: per vector of VL outputs,   */
/* R*S loads and MB*R*S FMAs whose weight is a broadcast from memory. A GEMM */
/* with K = R*S in effect: no row ends, no border code, any stride, dilation */
/* and padding. The gather, where the row stride is 1, copies the rows under */
/* the chunk once per kernel column (S shifted copies, tap (r, s) at row     */
/* offset r*dh in copy s); otherwise it copies every tap's run. Why: the     */
/* compact rows of the fixed-size kernels (masked loads across row ends, 2   */
/* vectors x 8 filters) ran at 0.66 of the FMA peak on paper_mnist (one      */
/* thread, AVX-512, 5.2 us an image of 32 filters); one vector x 8 filters   */
/* over gathered taps is a loop that ran at 0.93-1.0 of it in isolation.     */
/* ------------------------------------------------------------------------ */

/* whether the gather copies rows once per kernel column (row stride 1 and
 * a chunk of at least 2*VL positions fits): the rows a chunk of `len`
 * positions meets, at most len/Wo + 2 plus (R-1)*dh below, S times */
DW_INLINE dws NM(panel_column_len)(const dw_geom *g)
{
    const dws rows = DW_PANEL_BYTES / (dws)sizeof(T) / (g->S * g->Wo) - 2 - (g->R - 1) * g->dh;
    return g->sh == 1 && rows > 0 ? rows * g->Wo / VL * VL : 0;
}

/* the positions per gathered chunk: a multiple of VL, at least 2*VL, its
 * gather at most DW_PANEL_BYTES; 0 when the plane has fewer than VL
 * outputs or the kernel is too large for it */
static dws NM(panel_len)(const dw_geom *g)
{
    const dws taps = g->R * g->S;
    dws len = NM(panel_column_len)(g);
    if (len < 2 * VL)
        len = DW_PANEL_BYTES / (dws)sizeof(T) / taps / VL * VL;
    return g->Ho * g->Wo >= VL && taps <= DW_PANEL_MAX_TAPS && len >= 2 * VL ? len : 0;
}

/* how many chunks a plane's Ho*Wo positions take for a channel multiplier
 * of `mult` (0: the panels do not apply). They take multipliers from
 * DW_PANEL_MIN_MULT; from 2 where the fixed-size kernels do not run (a
 * column stride, other kernel sizes); from 4 where those meet column
 * padding. Measured on one thread, float32, AVX-512, 16 channels: 3x3 with
 * stride 2 and padding 1, the panels took 0.95x the generic kernel's time
 * with a multiplier of 2, 0.51x with 4, 0.37x with 6; 3x3 with padding 1,
 * 1.1x the fixed-size kernels' time at 2, 0.83x at 4, 0.76x at 6; 3x3
 * without padding (compact rows) 1.25x at 2, 1.1x at 4, 1.0x at 6. */
static dws NM(panel_chunks)(const dw_geom *g, dws mult)
{
    dws A, B;
    dw_interior_columns(g, &A, &B);
    const int padded = A > 0 || B < g->Wo;
    if (mult < 2 || (NM(fixed_size)(g) && mult < (padded ? 4 : DW_PANEL_MIN_MULT)))
        return 0;
    const dws len = NM(panel_len)(g), total = g->Ho * g->Wo;
    return len ? (total + len - 1) / len : 0;
}

/* chunk i's positions [*j0, *j0 + *len): chunks of panel_len, except that a
 * last chunk shorter than VL takes VL positions from the one before (each
 * chunk at least VL long, each position in one chunk) */
DW_INLINE void NM(panel_chunk)(const dw_geom *g, dws i, dws *j0, dws *len)
{
    const dws full = NM(panel_len)(g), total = g->Ho * g->Wo;
    const dws chunks = (total + full - 1) / full, rest = total - (chunks - 1) * full;
    *j0 = i * full;
    *len = i + 1 < chunks ? full : rest;
    if (chunks > 1 && rest < VL) {
        if (i + 2 == chunks)
            *len = full + rest - VL;
        else if (i + 1 == chunks) {
            *j0 = total - VL;
            *len = VL;
        }
    }
}

/* dst[0, n): the input under output columns [ow, ow + n) of input row ih
 * for the kernel column at input offset col0, whose valid output columns
 * are [a, b); zero in the padding. Contiguous runs go by vectors, the last
 * one overlapping the one before. */
DW_INLINE void NM(panel_row)(const dw_geom *g, const T *in, dws ih, dws col0, dws a, dws b,
                             dws ow, dws n, T *dst)
{
    if (ih < 0 || ih >= g->H) {
        for (dws i = 0; i < n; i++)
            dst[i] = 0;
        return;
    }
    /* [lo, hi): the columns of this run inside the input, clipped to the
     * run (padding wider than the kernel puts a past the run's end) */
    dws lo = a > ow ? a : ow;
    if (lo > ow + n)
        lo = ow + n;
    const dws hi = b < ow + n ? b : ow + n;
    const dws step = g->sw * g->xs_w;
    for (dws o = ow; o < lo; o++)
        dst[o - ow] = 0;
    if (hi > lo) {
        const T *src = in + ih * g->xs_h + (lo * g->sw + col0) * g->xs_w;
        T *d = dst + (lo - ow);
        const dws m = hi - lo;
        if (step == 1 && m >= VL) {
            dws i = 0;
            for (; i + VL <= m; i += VL)
                DW_STORE(d + i, DW_LOAD(VT, src + i));
            if (i < m)
                DW_STORE(d + m - VL, DW_LOAD(VT, src + m - VL));
        } else if (step == 2) {
            /* a column stride of 2: a constant step, which the compiler
             * turns into vector loads and a permute of their even lanes */
            for (dws i = 0; i < m; i++)
                d[i] = src[2 * i];
        } else {
            for (dws i = 0; i < m; i++)
                d[i] = src[i * step];
        }
    }
    for (dws o = hi > lo ? hi : lo; o < ow + n; o++)
        dst[o - ow] = 0;
}

/* Gather positions [j0, j0 + len) into X and set off[t], the offset of the
 * tap whose weight is w[t] (flip: the kernel reversed). GCC would turn the
 * short copy loops into calls of memmove (a third of paper_mnist's forward
 * pass): not here. */
static __attribute__((optimize("no-tree-loop-distribute-patterns")))
void NM(panel_gather)(const dw_geom *g, const T *in, dws j0, dws len, T *X, dws *off)
{
    const dws Wo = g->Wo, R = g->R, S = g->S, taps = R * S;
    const dws oh0 = j0 / Wo;
    const int columns = NM(panel_column_len)(g) >= 2 * VL;
    /* one copy per kernel column: rows oh0 - pt onwards, (R-1)*dh more
     * than the chunk's output rows */
    const dws rows = (j0 + len - 1) / Wo - oh0 + 1 + (R - 1) * g->dh;
    for (dws t = 0; t < taps; t++) {
        const dws kt = g->flip ? taps - 1 - t : t, r = kt / S, s = kt % S;
        off[t] = columns ? s * rows * Wo + r * g->dh * Wo + (j0 - oh0 * Wo) : kt * len;
    }
    for (dws t = 0; t < (columns ? S : taps); t++) {
        const dws r = columns ? 0 : t / S, s = columns ? t : t % S;
        const dws col0 = s * g->dw - g->pl;
        dws a = dw_first(col0, g->sw, Wo), b = dw_end(col0, g->sw, g->W, Wo);
        if (b < a)
            b = a;
        if (columns) {
            T *dst = X + s * rows * Wo;
            for (dws i = 0; i < rows; i++)
                NM(panel_row)(g, in, oh0 + i - g->pt, col0, a, b, 0, Wo, dst + i * Wo);
            continue;
        }
        T *dst = X + t * len;
        const dws row0 = r * g->dh - g->pt;
        dws oh = oh0, ow = j0 - oh0 * Wo;
        for (dws q = 0; q < len; oh++, ow = 0) {
            const dws n = Wo - ow < len - q ? Wo - ow : len - q;   /* this row's run */
            NM(panel_row)(g, in, oh * g->sh + row0, col0, a, b, ow, n, dst + q);
            q += n;
        }
    }
}

/* out + m*o_step, positions [0, len) (len >= VL), of MBV filters whose
 * weights for tap t are wt[t*MBV + m] (tap-major: one base register for
 * all of a tap's broadcasts), bias bs[m], from the gathered taps: a vector
 * of positions at a time, the last one ending at len (overlapping, same
 * values) */
#define DW_DEFINE_PANEL_FILTERS(MBV)                                             \
static __attribute__((noinline)) void NM(panel_filters_##MBV)(                  \
    const T *X, const dws *off, dws len, dws taps, const T *wt, const T *bs,     \
    T *out, dws o_step)                                                          \
{                                                                                \
    for (dws q0 = 0; q0 < len; q0 += VL) {                                       \
        const dws q = q0 + VL <= len ? q0 : len - VL;                            \
        const T *xq = X + q;                                                     \
        VT acc[MBV];                                                             \
        _Pragma("GCC unroll 8")                                                  \
        for (int m = 0; m < (MBV); m++)                                          \
            acc[m] = (VT){0} + bs[m];                                            \
        _Pragma("GCC unroll 3")                                                  \
        for (dws t = 0; t < taps; t++) {                                         \
            const VT xv = DW_LOAD(VT, xq + off[t]);                              \
            _Pragma("GCC unroll 8")                                              \
            for (int m = 0; m < (MBV); m++)                                      \
                acc[m] += xv * wt[t * (MBV) + m];                                \
        }                                                                        \
        _Pragma("GCC unroll 8")                                                  \
        for (int m = 0; m < (MBV); m++)                                          \
            DW_STORE(out + m * o_step + q, acc[m]);                              \
    }                                                                            \
}
DW_DEFINE_PANEL_FILTERS(8)
DW_DEFINE_PANEL_FILTERS(4)
DW_DEFINE_PANEL_FILTERS(2)
DW_DEFINE_PANEL_FILTERS(1)
#undef DW_DEFINE_PANEL_FILTERS

/* chunk `chunk` (< panel_chunks(g)) of the MB planes out + m*o_step of one
 * input plane's filters w + m*w_step, biases bias[m] (NULL: none); the
 * output planes hold the whole run, Ho*Wo */
static __attribute__((noinline)) void NM(fwd_panels)(const dw_geom *g, const T *in, dws MB,
                                                     const T *w, dws w_step, const T *bias,
                                                     T *out, dws o_step, dws chunk)
{
    T X[DW_PANEL_BYTES / sizeof(T)] __attribute__((aligned(64)));
    T wt[DW_PANEL_MAX_TAPS * DW_FWD_BLOCK_MAX];
    dws off[DW_PANEL_MAX_TAPS];
    T bs[DW_FWD_BLOCK_MAX];
    const dws taps = g->R * g->S;
    dws j0, len;
    NM(panel_chunk)(g, chunk, &j0, &len);
    NM(panel_gather)(g, in, j0, len, X, off);
    for (dws m = 0; m < MB;) {
        const dws left = MB - m;
        const dws block = left >= DW_FWD_BLOCK_MAX ? DW_FWD_BLOCK_MAX
                        : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        for (dws i = 0; i < block; i++) {
            bs[i] = bias ? bias[m + i] : 0;
            for (dws t = 0; t < taps; t++)
                wt[t * block + i] = w[(m + i) * w_step + t];
        }
        T *om = out + m * o_step + j0;
        if (block == DW_FWD_BLOCK_MAX)
            NM(panel_filters_8)(X, off, len, taps, wt, bs, om, o_step);
        else if (block == 4)
            NM(panel_filters_4)(X, off, len, taps, wt, bs, om, o_step);
        else if (block == 2)
            NM(panel_filters_2)(X, off, len, taps, wt, bs, om, o_step);
        else
            NM(panel_filters_1)(X, off, len, taps, wt, bs, om, o_step);
        m += block;
    }
}

/* ------------------------------------------------------------------------ */
/* Input gradient by scattering (strides > 1): grad_x plane (H x W,          */
/* contiguous) = sum over the M filters j of the transposed correlation of   */
/* grad plane j (Ho x Wo, contiguous). Stride-1 layers use fwd_body instead  */
/* (the gradient is then a correlation with the reversed kernel).            */
/* ------------------------------------------------------------------------ */
/* The input gradient of a strided layer by padded bands (igrad_band): each
 * grad row a band of grad_x rows needs is copied once into the buffer
 * spread out by the column stride (zeros between, and around: grad column
 * ow at sw*ow + X0, X0 = (S-1)*dw), so that grad_x column iw takes tap s
 * from buffer column iw + pl + X0 - s*dw, a vector load per tap as in
 * fwd_band; of the kernel rows only those landing on a grad row (one in
 * sh) are visited. Half of a stride-2 row's products are with the zeros
 * between, but each is a register FMA, where igrad_scatter makes one
 * read-modify-write pass over the grad_x row per tap and grad row (one
 * thread, float32, AVX-512, scatter -> band: EfficientNet's 5x5/2 11.4 ->
 * 4.2 ms, 3x3/2 on 96x112x112 10.2 -> 5.8 ms). 0 when a band does not fit
 * (igrad_scatter then runs). */
DW_INLINE dws NM(igrad_band_row_len)(const dw_geom *g)
{
    return (g->W + g->pl + (g->S - 1) * g->dw + 2 * VL - 1) / VL * VL;
}

static __attribute__((noinline)) int NM(igrad_band)(const dw_geom *g, const T *grad, dws g_plane,
                                                    dws M, const T *w, dws w_plane, T *gx)
{
    const dws H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, pl = g->pl, dh = g->dh, dw = g->dw;
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    const dws rowstep = NM(igrad_band_row_len)(g), X0 = (S - 1) * dw;
    const dws fit = DW_BAND_BYTES / (dws)sizeof(T) / (M * rowstep);
    /* grad_x rows [ih0, ih1) need grad rows [ceil((ih0+pt-(R-1)dh)/sh),
     * floor((ih1-1+pt)/sh)]: at most (ih1-ih0-1+(R-1)dh)/sh + 1 */
    const dws reach = (R - 1) * dh / sh + 1;
    if (S > DW_BAND_MAX_S || R > DW_BAND_MAX_S || fit < reach + 1)
        return 0;
    const dws band = (fit - 1) * sh - (R - 1) * dh;
    if (band < 1)
        return 0;
    T buf[DW_BAND_BYTES / sizeof(T)] __attribute__((aligned(64)));
    dws off[DW_BAND_MAX_S];
    for (dws s = 0; s < S; s++)
        off[s] = pl + X0 - s * dw;
    for (dws ih0 = 0; ih0 < H; ih0 += band) {
        const dws ih1 = ih0 + band < H ? ih0 + band : H;
        /* the grad rows [g0, o1) */
        const dws g0 = dw_first((R - 1) * dh - ih0 - pt, sh, Ho);
        dws o1 = (ih1 - 1 + pt) / sh + 1;
        o1 = o1 < Ho ? o1 : Ho;
        const dws nrows = o1 > g0 ? o1 - g0 : 0;
        for (dws j = 0; j < M; j++) {
            for (dws i = 0; i < nrows; i++) {
                T *d = buf + (j * nrows + i) * rowstep;
                const T *src = grad + j * g_plane + (g0 + i) * Wo;
                NM(band_clear)(d, rowstep);
                if (sw == 1)
                    memcpy(d + X0, src, (size_t)Wo * sizeof(T));
                else
                    for (dws q = 0; q < Wo; q++)
                        d[X0 + q * sw] = src[q];
            }
        }
        for (dws ih = ih0; ih < ih1; ih++) {
            T *orow = gx + ih * W;
            /* kernel rows r with ih + pt - r*dh = oh*sh, oh in [g0, o1):
             * found once per row (a division each), not per vector; they
             * step by the same amount (and oh with them), so the first and
             * the second give the steps */
            dws r0 = 0, r_step = 1, o0 = 0, o_step = 0, nr = 0;
            for (dws r = 0; r < R; r++) {
                const dws u = ih + pt - r * dh;
                if (u < 0 || u % sh || u / sh < g0 || u / sh >= o1)
                    continue;
                if (nr == 0) {
                    r0 = r;
                    o0 = u / sh - g0;
                } else if (nr == 1) {
                    r_step = r - r0;
                    o_step = u / sh - g0 - o0;
                }
                nr++;
            }
            DW_BAND_ROW(W, (T)0);
        }
    }
    return 1;
}

static __attribute__((noinline)) void NM(igrad_scatter)(const dw_geom *g, const T *grad, dws g_plane,
                                      dws M, const T *w, dws w_plane, T *gx)
{
    const dws H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, pl = g->pl, dh = g->dh, dw = g->dw;
    const dws wds = g->flip ? -1 : 1, wdr = g->flip ? -S : S;
    const dws wr0 = g->flip ? R * S - 1 : 0;
    dws lo[DW_MAX_S], hi[DW_MAX_S];
    const int cached = S <= DW_MAX_S;
    if (cached) {
        for (dws s = 0; s < S; s++) {
            lo[s] = dw_first(s * dw - pl, sw, Wo);
            hi[s] = dw_end(s * dw - pl, sw, W, Wo);
        }
    }
    memset(gx, 0, (size_t)(H * W) * sizeof(T));
    for (dws j = 0; j < M; j++) {
        for (dws oh = 0; oh < Ho; oh++) {
            const dws base = oh * sh - pt;
            const dws r_lo = dw_first(base, dh, R);
            const dws r_hi = dw_end(base, dh, H, R);
            const T *grow = grad + j * g_plane + oh * Wo;
            for (dws r = r_lo; r < r_hi; r++) {
                T *xrow = gx + (base + r * dh) * W;
                const T *wr = w + j * w_plane + wr0 + r * wdr;
                for (dws s = 0; s < S; s++) {
                    const dws a = cached ? lo[s] : dw_first(s * dw - pl, sw, Wo);
                    const dws b = cached ? hi[s] : dw_end(s * dw - pl, sw, W, Wo);
                    const T wv = wr[s * wds];
                    T *dst = xrow + (a * sw + s * dw - pl);
                    if (sw == 1) {
                        for (dws i = 0; i < b - a; i++)
                            dst[i] += wv * grow[a + i];
                    } else if (sw == 2) {
                        for (dws i = 0; i < b - a; i++)
                            dst[2 * i] += wv * grow[a + i];
                    } else {
                        for (dws i = 0; i < b - a; i++)
                            dst[i * sw] += wv * grow[a + i];
                    }
                }
            }
        }
    }
}

/* The input gradient of a strided layer (the entry depthwise.pyx calls):
 * by padded bands where a band fits, else by scattering. */
static __attribute__((noinline)) void NM(igrad_strided)(const dw_geom *g, const T *grad,
                                                        dws g_plane, dws M, const T *w,
                                                        dws w_plane, T *gx)
{
    if (!NM(igrad_band)(g, grad, g_plane, M, w, w_plane, gx))
        NM(igrad_scatter)(g, grad, g_plane, M, w, w_plane, gx);
}

/* ------------------------------------------------------------------------ */
/* Weight gradient of one filter over all N images:                          */
/*   gw[tap(r, s)] = sum_n sum_{oh, ow} grad_n[oh, ow] * x_n[oh*sh + r*dh - pt, */
/*                                                      ow*sw + s*dw - pl]  */
/* One tap at a time over the valid rectangle of output positions; vector    */
/* partial sums in registers across all rows and images, reduced in a fixed  */
/* lane order at the end: the same bits whatever thread runs the filter.     */
/* ------------------------------------------------------------------------ */

/* The weight gradient of a strided layer, or of input rows that are not
 * contiguous: each input row is copied once, split into its sw phases
 * (x[p], x[p + sw], ...: one contiguous run per phase p), where kernel
 * column s reads consecutive output columns' inputs contiguously, from
 * phase (s*dw - pl) mod sw; every (kernel row, output row) pair the input
 * row meets then adds a vector dot product per kernel column into that
 * tap's vector of partial sums, kept over all rows and images and reduced
 * in a fixed lane order at the end (the same bits whatever thread runs the
 * filter). A tap's products with x at a stride made wgrad a scalar loop
 * (four partial sums): 5.4 ms for the 3x3/2 layer on 8 x 96 x 112 x 112
 * (float32, 2 threads), 1.3x the mapped lowering's time. 0 where the
 * row's copy or the taps' sums would not fit (wgrad then runs that loop).
 * Its own split, not band_fill's padded phases: on band_fill (zeros
 * around, every tap over all Wo columns) the 3x3/2 layer took 1.15-1.5x
 * the time, even with band_fill's stride 2 in one pass (tried, not kept). */
#define DW_WG_MAX_TAPS 64

static __attribute__((noinline)) int NM(wgrad_phased)(const dw_geom *g, const T *x, dws xs_n,
                                                      const T *grad, dws g_n, dws N, T *gw)
{
    const dws H = g->H, W = g->W, xs_h = g->xs_h, xs_w = g->xs_w;
    const dws Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, pl = g->pl, dh = g->dh, dw = g->dw;
    const dws plen = (W + sw - 1) / sw;     /* elements of the longest phase */
    if (R * S > DW_WG_MAX_TAPS || S > DW_MAX_S || sw * plen > DW_BAND_BYTES / (dws)sizeof(T))
        return 0;
    T buf[DW_BAND_BYTES / sizeof(T)] __attribute__((aligned(64)));
    VT acc[DW_WG_MAX_TAPS];
    T tail[DW_WG_MAX_TAPS];
    /* kernel column s: output columns [lo, lo + n) are inside the input;
     * the first one's input is element src of buf (its phase, its place) */
    dws lo[DW_MAX_S], n_s[DW_MAX_S], src[DW_MAX_S];
    for (dws s = 0; s < S; s++) {
        const dws u = s * dw - pl;
        lo[s] = dw_first(u, sw, Wo);
        n_s[s] = dw_end(u, sw, W, Wo) - lo[s];
        const dws c = lo[s] * sw + u;       /* >= 0 where n_s[s] > 0 */
        src[s] = n_s[s] > 0 ? (c % sw) * plen + c / sw : 0;
    }
    for (dws t = 0; t < R * S; t++) {
        acc[t] = (VT){0};
        tail[t] = 0;
    }
    for (dws img = 0; img < N; img++) {
        for (dws ih = 0; ih < H; ih++) {
            int copied = 0;
            /* the kernel rows r that meet input row ih: oh*sh = ih + pt - r*dh */
            for (dws r = 0; r < R; r++) {
                const dws t = ih + pt - r * dh;
                if (t < 0 || t % sh || t / sh >= Ho)
                    continue;
                if (!copied) {   /* the row split into its phases, once */
                    const T *xr = x + img * xs_n + ih * xs_h;
                    if (sw == 2 && xs_w == 1) {
                        for (dws k = 0; k < W / 2; k++) {
                            buf[k] = xr[2 * k];
                            buf[plen + k] = xr[2 * k + 1];
                        }
                        if (W % 2)
                            buf[W / 2] = xr[W - 1];
                    } else {
                        for (dws p = 0; p < sw; p++)
                            for (dws k = 0; p + k * sw < W; k++)
                                buf[p * plen + k] = xr[(p + k * sw) * xs_w];
                    }
                    copied = 1;
                }
                const T *grow = grad + img * g_n + (t / sh) * Wo;
                for (dws s = 0; s < S; s++) {
                    const dws n = n_s[s];
                    const dws tap = g->flip ? (R - 1 - r) * S + (S - 1 - s) : r * S + s;
                    const T *gp = grow + lo[s];
                    const T *xp = buf + src[s];
                    if (n >= VL) {
                        VT a = acc[tap];
                        dws i = 0;
                        for (; i + VL <= n; i += VL)
                            a += DW_LOAD(VT, gp + i) * DW_LOAD(VT, xp + i);
                        if (i < n)   /* the vector ending at n, counted lanes masked off */
                            a += DW_MASKED(VT, IVT, VL, DW_LOAD(VT, gp + n - VL)
                                           * DW_LOAD(VT, xp + n - VL), n - i);
                        acc[tap] = a;
                    } else {
                        T sum = 0;
                        for (dws i = 0; i < n; i++)
                            sum += gp[i] * xp[i];
                        tail[tap] += sum;
                    }
                }
            }
        }
    }
    for (dws t = 0; t < R * S; t++) {
        T total = 0;
        for (int l = 0; l < VL; l++)
            total += acc[t][l];
        gw[t] = total + tail[t];
    }
    return 1;
}

static __attribute__((noinline)) void NM(wgrad)(const dw_geom *g, const T *x, dws xs_n, const T *grad,
                              dws g_n, dws N, T *gw)
{
    const dws H = g->H, W = g->W, xs_h = g->xs_h, xs_w = g->xs_w;
    const dws Ho = g->Ho, Wo = g->Wo, R = g->R, S = g->S;
    const dws sh = g->sh, sw = g->sw, pt = g->pt, pl = g->pl, dh = g->dh, dw = g->dw;
    const int fast = (sw == 1 && xs_w == 1);
    const dws step = sw * xs_w;
    /* interior columns [A, B) of rows [ex_lo, ex_hi): summed by a fixed-size
     * kernel into part (geometric tap order), skipped below */
    dws A, B;
    dw_interior_columns(g, &A, &B);   /* B >= A even where the kernel is wider than the input */
    dws ex_lo = 0, ex_hi = 0;
    int ex_full = 0;   /* the fixed-size kernel did whole rows */
    T part[49];
    if (!fast && NM(wgrad_phased)(g, x, xs_n, grad, g_n, N, gw))
        return;
#ifdef DW_MLOAD
    /* masked loads: the fixed-size kernel takes every row and column (the
     * generic per-tap loops below were 5x its time on 576 x 14 x 14) */
    if (fast && NM(fixed_kernel)(g) && NM(zero_row_fits)(g)) {
        if (R == 3)
            NM(wgrad_3x3)(g, x, xs_n, grad, g_n, N, A, B, 0, Ho, part);
        else if (R == 5)
            NM(wgrad_5x5)(g, x, xs_n, grad, g_n, N, A, B, 0, Ho, part);
        else
            NM(wgrad_7x7)(g, x, xs_n, grad, g_n, N, A, B, 0, Ho, part);
        for (dws r = 0; r < R; r++)
            for (dws s = 0; s < S; s++)
                gw[g->flip ? (R - 1 - r) * S + (S - 1 - s) : r * S + s] = part[r * S + s];
        return;
    }
#endif
    if (fast && B - A >= VL && NM(fixed_kernel)(g)) {
        ex_lo = dw_first(-pt, sh, Ho);
        ex_hi = dw_end((R - 1) * dh - pt, sh, H, Ho);
        if (ex_hi <= ex_lo)
            ex_lo = ex_hi = 0;
        else if (R == 3)
            ex_full = NM(wgrad_3x3)(g, x, xs_n, grad, g_n, N, A, B, ex_lo, ex_hi, part);
        else if (R == 5)
            ex_full = NM(wgrad_5x5)(g, x, xs_n, grad, g_n, N, A, B, ex_lo, ex_hi, part);
        else
            ex_full = NM(wgrad_7x7)(g, x, xs_n, grad, g_n, N, A, B, ex_lo, ex_hi, part);
    }
    for (dws r = 0; r < R; r++) {
        const dws oh_lo = dw_first(r * dh - pt, sh, Ho);
        const dws oh_hi = dw_end(r * dh - pt, sh, H, Ho);
        for (dws s = 0; s < S; s++) {
            const dws lo = dw_first(s * dw - pl, sw, Wo);
            const dws n = dw_end(s * dw - pl, sw, W, Wo) - lo;
            const dws tap = g->flip ? (R - 1 - r) * S + (S - 1 - s) : r * S + s;
            VT a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
#ifdef HT
            HT h0 = {0}, h1 = {0};
#endif
#ifdef QT
            QT q0 = {0}, q1 = {0};
#endif
            T sc = 0, sc1 = 0, sc2 = 0, sc3 = 0, total = 0;
            if (n > 0) {
                for (dws img = 0; img < N; img++) {
                    for (dws oh = oh_lo; oh < oh_hi; oh++) {
                        if (ex_full && oh == ex_lo && ex_hi > oh) {
                            oh = ex_hi - 1;    /* rows done whole: skip them */
                            continue;
                        }
                        const T *gp = grad + img * g_n + oh * Wo + lo;
                        const T *xp = x + (img * xs_n + (oh * sh + r * dh - pt) * xs_h
                                           + (lo * sw + s * dw - pl) * xs_w);
                        if (!fast) {
                            /* four partial sums: one would be a chain of
                             * dependent adds (stride-2 28x28 float32 layer:
                             * 2.3 ms, slower than the mapped lowering's 1.6) */
                            dws i = 0;
                            for (; i + 4 <= n; i += 4) {
                                sc += gp[i] * xp[i * step];
                                sc1 += gp[i + 1] * xp[(i + 1) * step];
                                sc2 += gp[i + 2] * xp[(i + 2) * step];
                                sc3 += gp[i + 3] * xp[(i + 3) * step];
                            }
                            for (; i < n; i++)
                                sc += gp[i] * xp[i * step];
                        } else if (oh >= ex_lo && oh < ex_hi) {
                            /* only the border columns [lo, A) and [B, lo + n) */
                            for (dws i = 0; i < A - lo; i++)
                                sc += gp[i] * xp[i];
                            for (dws i = B - lo; i < n; i++)
                                sc += gp[i] * xp[i];
                        } else if (n >= VL) {
                            dws i = 0;
                            for (; i + 2 * VL <= n; i += 2 * VL) {
                                a0 += DW_LOAD(VT, gp + i) * DW_LOAD(VT, xp + i);
                                a1 += DW_LOAD(VT, gp + i + VL) * DW_LOAD(VT, xp + i + VL);
                            }
                            if (i + VL <= n) {
                                a2 += DW_LOAD(VT, gp + i) * DW_LOAD(VT, xp + i);
                                i += VL;
                            }
                            /* the tail: the vector ending at n, lanes already
                             * counted masked off (no scalar loop) */
                            if (i < n)
                                a3 += DW_MASKED(VT, IVT, VL, DW_LOAD(VT, gp + n - VL)
                                                * DW_LOAD(VT, xp + n - VL), n - i);
#ifdef HT
                        } else if (n >= HL) {
                            h0 += DW_LOAD(HT, gp) * DW_LOAD(HT, xp);
                            if (n > HL)
                                h1 += DW_MASKED(HT, IHT, HL, DW_LOAD(HT, gp + n - HL)
                                                * DW_LOAD(HT, xp + n - HL), n - HL);
#endif
#ifdef QT
                        } else if (n >= QL) {
                            q0 += DW_LOAD(QT, gp) * DW_LOAD(QT, xp);
                            if (n > QL)
                                q1 += DW_MASKED(QT, IQT, QL, DW_LOAD(QT, gp + n - QL)
                                                * DW_LOAD(QT, xp + n - QL), n - QL);
#endif
                        } else {
                            for (dws i = 0; i < n; i++)
                                sc += gp[i] * xp[i];
                        }
                    }
                }
                a0 += a1;
                a2 += a3;
                a0 += a2;
                for (int l = 0; l < VL; l++)
                    total += a0[l];
#ifdef HT
                h0 += h1;
                for (int l = 0; l < HL; l++)
                    total += h0[l];
#endif
#ifdef QT
                q0 += q1;
                for (int l = 0; l < QL; l++)
                    total += q0[l];
#endif
                total += (sc + sc1) + (sc2 + sc3);
            }
            if (ex_hi > ex_lo)
                total += part[r * S + s];
            gw[tap] = total;
        }
    }
}

#undef DW_FWD_BLOCK
#undef DW_FWD_BLOCK4_LONG
#undef DW_SLIDE4
#undef DW_FWD_COLUMN
#undef DW_FWD_COLUMN_VEC
#undef DW_FAST_COLUMN
#undef DW_BAND_BLOCK
#undef DW_BAND_STORE
#undef DW_BAND_COLUMNS
#undef DW_S2_TAP
#undef DW_S2_PHASE
#undef DW_BAND_BLOCK_S2
#undef DW_BAND_ROW_S2
#undef DW_BAND_BLOCK4_LONG
#undef DW_BAND_ROW
#undef DW_MASKED
#undef DW_MIN_LANES
