/* Kernels for one fixed kernel size RR x SS (3x3, 5x5, 7x7), included by
 * _depthwise_impl.h with RR and SS defined (column stride 1, contiguous
 * input rows). Without masked loads they cover the bulk of a plane, the
 * rectangle of output rows where every kernel row is inside the input and
 * columns [A, B) where every kernel column is; the generic kernels do the
 * borders. With masked loads (AVX-512, AVX2) they take the whole plane:
 *  - forward: tiles of output rows and vectors (fwd_tiles: a kernel
 *    column's weights in registers, padded rows read from a zero row,
 *    every column through masks) where rows share their input rows
 *    (stride = dilation); otherwise, and for AVX2's 3x3, row blocks
 *    (DW_ROWS_BLOCK) with masked border columns, rows in the padding by
 *    fwd_border_row; stride 2 in both directions (dilation 1, AVX-512)
 *    as tiles of its own (fwd_tiles_s2), reached from the generic entry
 *    (fixed-size kernels otherwise need column stride 1);
 *  - weight gradient: whole rows in blocks of 4, 2 and 1 output rows
 *    (wgrad_narrow, wgrad_wide), padded rows from the zero row.
 * With the sizes known the tap loops unroll and no per-row bookkeeping is
 * left. The scalar border columns of the generic kernel (serial FMA chains)
 * cost as much as the whole vectorised interior: CPU time of the
 * mobilenet_dw_3x3 forward on one thread (float32, AVX-512, thread_time,
 * best of 15, on a shared machine): generic kernel 4.2 ms, fixed-size
 * interior 3.7 ms, fixed-size with masked borders 2.1 ms; weight gradient
 * 4.0 ms -> 2.7 ms. */

/* the tiles (fwd_tiles) where loads can be masked: with AVX-512, every
 * size; with AVX2 5x5 and 7x7 only (its masked loads made every 3x3 tile
 * slower than the row blocks' plain loads: mobilenet_dw_3x3 0.53 -> 0.87
 * ms, float32, 2 threads) */
#undef DW_TILES
#if defined(DW_MLOAD) && (defined(QT) || RR >= 5)
#define DW_TILES 1
#endif

#define DW_FIX3(name, r, s) NM(name##_##r##x##s)
#define DW_FIX2(name, r, s) DW_FIX3(name, r, s)
#define DW_FIX(name) DW_FIX2(name, RR, SS)

/* wt[r*SS + s]: the tap of geometric kernel row r and column s (w reversed
 * for flip) */
DW_INLINE void DW_FIX(tap_weights)(const dw_geom *g, const T *w, T *wt)
{
    for (int r = 0; r < RR; r++)
        for (int s = 0; s < SS; s++)
            wt[r * SS + s] = g->flip ? w[(RR - 1 - r) * SS + (SS - 1 - s)] : w[r * SS + s];
}

/* columns [OW, OW + NV*L) of row oh: every tap in registers, one store */
#define DW_FIXED_BLOCK(TYPE, L, NV, OW) do {                                   \
    const dws o_ = (OW);                                                       \
    TYPE acc_[NV];                                                             \
    _Pragma("GCC unroll 4")                                                    \
    for (int k_ = 0; k_ < (NV); k_++)                                          \
        acc_[k_] = (TYPE){0} + bias;                                           \
    _Pragma("GCC unroll 7")                                                    \
    for (int r_ = 0; r_ < RR; r_++) {                                          \
        const T *q_ = p + (r_ * dh * xs_h + o_);                               \
        _Pragma("GCC unroll 7")                                                \
        for (int s_ = 0; s_ < SS; s_++) {                                      \
            const TYPE wv_ = (TYPE){0} + wt[r_][s_];                           \
            _Pragma("GCC unroll 4")                                            \
            for (int k_ = 0; k_ < (NV); k_++)                                  \
                acc_[k_] += wv_ * DW_LOAD(TYPE, q_ + s_ * dw + k_ * (L));      \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 4")                                                    \
    for (int k_ = 0; k_ < (NV); k_++)                                          \
        DW_STORE(orow + o_ + k_ * (L), acc_[k_]);                              \
} while (0)

#ifdef DW_MLOAD
/* the column masks' terms as vectors: each lane's index (iota), zero, and
 * the input's width */
#define DW_COLUMN_LANES(g)                                                     \
    IVT iota, zero = {0}, width = zero + (IT)(g)->W;                           \
    for (int l_ = 0; l_ < VL; l_++)                                            \
        iota[l_] = l_
/* COND[s]: the lanes of columns [OW, OW + VL) whose input column under
 * kernel column s is inside the input (DW_COLUMN_LANES in scope) */
#define DW_COLUMN_MASKS(COND, OW) do {                                         \
    _Pragma("GCC unroll 7")                                                    \
    for (int s_ = 0; s_ < SS; s_++) {                                          \
        const IVT c_ = iota + (IT)((OW) - pl + s_ * dw);                       \
        (COND)[s_] = (c_ >= zero) & (c_ < width);                              \
    }                                                                          \
} while (0)
/* the same, limited to the first N lanes (those stored: a row's last vector) */
#define DW_COLUMN_MASKS_FIRST(COND, OW, N) do {                                \
    const IVT first_ = iota < (IT)(N);                                         \
    DW_COLUMN_MASKS(COND, OW);                                                 \
    _Pragma("GCC unroll 7")                                                    \
    for (int s_ = 0; s_ < SS; s_++)                                            \
        (COND)[s_] &= first_;                                                  \
} while (0)
#endif


#ifdef DW_MLOAD
/* columns [OW, OW + NV*VL) of ROWS output rows from oh (ROWS = 4 or 2 only
 * where the stride equals the dilation, so that input row t of the block is
 * kernel row t of row oh, t - 1 of row oh + 1, ...): each input vector is
 * loaded once for every row it meets; LOADX(q, t, s) loads the vector of
 * input row t and kernel column s, STOREX(p, v) stores a result. Why rows: a block of one vector and one row is one chain of
 * RR*SS dependent FMAs (4 cycles each), and MobileNet's 56-column rows are
 * an edge block at each end and a 2-vector block between. Measured against
 * single-row blocks (AVX-512, float32, 2 threads, fresh processes
 * alternated): mobilenet_dw_3x3 0.85 -> 0.63 ms with pairs of rows, 0.47-0.53
 * ms with 4 (one thread 1.76 -> 1.10); 5x5 on 96 x 28 x 28 0.52 -> 0.29,
 * 7x7 on 64 x 56 x 56 2.43 -> 1.56; AVX2 likewise (mobilenet 0.81 -> 0.63).
 * Each output's sum keeps the order of one row at a time (bias, then the
 * taps by kernel row and column). */
#define DW_ROWS_BLOCK(NV, ROWS, OW, LOADX, STOREX) do {                                \
    const dws o_ = (OW);                                                       \
    VT acc_[4][4];                                                             \
    _Pragma("GCC unroll 4")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++) {                                      \
        _Pragma("GCC unroll 4")                                                \
        for (int k_ = 0; k_ < (NV); k_++)                                      \
            acc_[i_][k_] = bv;                                                 \
    }                                                                          \
    _Pragma("GCC unroll 10")                                                   \
    for (int t_ = 0; t_ < RR + (ROWS) - 1; t_++) {                             \
        const T *q_ = p + (t_ * dh * xs_h + o_);                               \
        _Pragma("GCC unroll 7")                                                \
        for (int s_ = 0; s_ < SS; s_++) {                                      \
            _Pragma("GCC unroll 4")                                            \
            for (int k_ = 0; k_ < (NV); k_++) {                                \
                const VT x_ = LOADX(q_ + s_ * dw + k_ * VL, t_, s_);           \
                _Pragma("GCC unroll 4")                                        \
                for (int i_ = 0; i_ < (ROWS); i_++)                            \
                    if (t_ - i_ >= 0 && t_ - i_ < RR)                          \
                        acc_[i_][k_] += DW_TAP(t_ - i_, s_) * x_;              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 4")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++) {                                      \
        _Pragma("GCC unroll 4")                                                \
        for (int k_ = 0; k_ < (NV); k_++)                                      \
            STOREX(orow + i_ * Wo + o_ + k_ * VL, acc_[i_][k_]);               \
    }                                                                          \
} while (0)
#define DW_ROWS_PLAIN(q, t, s) DW_LOAD(VT, (q))
/* columns in the padding masked off */
#define DW_ROWS_MASKED(q, t, s) DW_MLOAD((q), cond_[s])
/* rows narrower than a vector: their first Wo lanes */
#define DW_ROWS_NARROW(p, v) DW_STORE_FIRST((p), (v), Wo)
/* the block of NV vectors on this pass's rows (4, 2 or 1) */
#define DW_ROWS_ANY(NV, OW, LOADX, STOREX) do {                                \
    if (rows == 4)                                                             \
        DW_ROWS_BLOCK(NV, 4, OW, LOADX, STOREX);                               \
    else if (rows == 2)                                                        \
        DW_ROWS_BLOCK(NV, 2, OW, LOADX, STOREX);                               \
    else                                                                       \
        DW_ROWS_BLOCK(NV, 1, OW, LOADX, STOREX);                               \
} while (0)
#endif

#ifdef DW_MLOAD
/* Output row oh whose kernel rows [t_lo, t_hi) are the ones inside the
 * input (a row at the top or bottom, in the padding): the rest are skipped,
 * not loaded masked off. Columns in chunks of up to 4 vectors (as many
 * chains of FMAs), each vector's lanes masked by its columns (in the padding, or past
 * Wo: computed from nothing and not stored). Why its own loop: as blocks of
 * one vector over all RR kernel rows, 7x7 on 64 x 56 x 56 took 3.7 ms (one
 * thread), against 3.1 with the generic kernels for these rows. */
DW_INLINE void DW_FIX(fwd_border_row_body)(const dw_geom *g, const T *p, const T *wt,
                                           T bias, T *orow, int t_lo, int t_hi, const int NV)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, pl = g->pl, dh = g->dh, dw = g->dw;
    DW_COLUMN_LANES(g);
    for (dws ow = 0; ow < Wo; ow += NV * VL) {
        IVT cond_[4][SS];
        VT acc_[4];
        _Pragma("GCC unroll 4")
        for (int k = 0; k < NV; k++) {
            DW_COLUMN_MASKS_FIRST(cond_[k], ow + k * VL, Wo - ow - k * VL);
            acc_[k] = (VT){0} + bias;
        }
        for (int t = t_lo; t < t_hi; t++) {
            const T *q = p + (t * dh * xs_h + ow);
            _Pragma("GCC unroll 7")
            for (int s = 0; s < SS; s++) {
                const VT wv = (VT){0} + wt[t * SS + s];
                _Pragma("GCC unroll 4")
                for (int k = 0; k < NV; k++)
                    acc_[k] += wv * DW_MLOAD(q + s * dw + k * VL, cond_[k][s]);
            }
        }
        _Pragma("GCC unroll 4")
        for (int k = 0; k < NV; k++) {
            const dws n = Wo - ow - k * VL;
            if (n >= VL)
                DW_STORE(orow + ow + k * VL, acc_[k]);
            else if (n > 0)
                DW_STORE_FIRST(orow + ow + k * VL, acc_[k], n);
        }
    }
}
/* chunks of as many vectors as the row needs, up to 4 */
static __attribute__((noinline)) void DW_FIX(fwd_border_row)(const dw_geom *g, const T *p,
                                                            const T *wt, T bias, T *orow,
                                                            int t_lo, int t_hi)
{
    const dws vectors = (g->Wo + VL - 1) / VL;
    if (vectors >= 3)
        DW_FIX(fwd_border_row_body)(g, p, wt, bias, orow, t_lo, t_hi, 4);
    else if (vectors == 2)
        DW_FIX(fwd_border_row_body)(g, p, wt, bias, orow, t_lo, t_hi, 2);
    else
        DW_FIX(fwd_border_row_body)(g, p, wt, bias, orow, t_lo, t_hi, 1);
}
#endif

#ifdef DW_TILES
/* ROWS output rows from oh x NV vectors of columns from ow (a tile):
 * kernel column s outer, its RR weights broadcast into registers and its NV
 * column masks (lanes whose input column is in [0, W)) made once; then each
 * input row t of the tile (rowp[t]: the zero row where t is in the padding
 * or past the input) loaded as NV masked vectors, each meeting the rows of
 * the tile it is a kernel row of. ROWS x NV independent chains; loads per
 * FMA: (RR + (ROWS + RR - 1) NV) / (ROWS RR NV). Each output's sum runs
 * bias, then the taps by kernel column and row, whatever the tile. */
#define DW_TILE(ROWS, NV) do {                                                 \
    VT acc_[ROWS][NV];                                                         \
    _Pragma("GCC unroll 14")                                                   \
    for (int i_ = 0; i_ < (ROWS); i_++) {                                      \
        _Pragma("GCC unroll 2")                                                \
        for (int k_ = 0; k_ < (NV); k_++)                                      \
            acc_[i_][k_] = bv;                                                 \
    }                                                                          \
    _Pragma("GCC unroll 7")                                                    \
    for (int s_ = 0; s_ < SS; s_++) {                                          \
        VT w_[RR];                                                             \
        IVT cond_[NV];                                                         \
        _Pragma("GCC unroll 7")                                                \
        for (int r_ = 0; r_ < RR; r_++)                                        \
            w_[r_] = wt[r_ * SS + s_] - (VT){0};                               \
        _Pragma("GCC unroll 2")                                                \
        for (int k_ = 0; k_ < (NV); k_++) {                                    \
            const IVT c_ = iota + (IT)(c0 + s_ * dw + k_ * VL);                \
            cond_[k_] = (c_ >= zero) & (c_ < width);                           \
        }                                                                      \
        _Pragma("GCC unroll 20")                                               \
        for (int t_ = 0; t_ < (ROWS) + RR - 1; t_++) {                         \
            const T *q_ = rowp[t_] + (c0 + s_ * dw);                           \
            VT x_[NV];                                                         \
            _Pragma("GCC unroll 2")                                            \
            for (int k_ = 0; k_ < (NV); k_++)                                  \
                x_[k_] = DW_MLOAD(q_ + k_ * VL, cond_[k_]);                    \
            _Pragma("GCC unroll 14")                                           \
            for (int i_ = 0; i_ < (ROWS); i_++) {                              \
                if (t_ - i_ >= 0 && t_ - i_ < RR) {                            \
                    _Pragma("GCC unroll 2")                                    \
                    for (int k_ = 0; k_ < (NV); k_++)                          \
                        acc_[i_][k_] += w_[t_ - i_] * x_[k_];                  \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    for (int i_ = 0; i_ < rows_valid; i_++) {                                  \
        T *o_ = orow + i_ * Wo + ow;                                           \
        _Pragma("GCC unroll 2")                                                \
        for (int k_ = 0; k_ < (NV); k_++) {                                    \
            const dws n_ = Wo - ow - k_ * VL;                                  \
            if (n_ >= VL)                                                      \
                DW_STORE(o_ + k_ * VL, acc_[i_][k_]);                          \
            else if (n_ > 0)                                                   \
                DW_STORE_FIRST(o_ + k_ * VL, acc_[i_][k_], n_);                \
        }                                                                      \
    }                                                                          \
} while (0)

#define DW_TILE_FN3(name, r, s, rows, nv) NM(name##_##r##x##s##_##rows##x##nv)
#define DW_TILE_FN2(name, r, s, rows, nv) DW_TILE_FN3(name, r, s, rows, nv)
#define DW_TILE_FN(rows, nv) DW_TILE_FN2(tile, RR, SS, rows, nv)
#define DW_DEFINE_TILE(ROWS, NV)                                               \
static __attribute__((noinline)) void DW_TILE_FN(ROWS, NV)(                    \
    const dw_geom *g, const T *const *rowp, const T *wt, T bias, T *orow,      \
    dws ow, int rows_valid)                                                    \
{                                                                              \
    const dws Wo = g->Wo, dw = g->dw, c0 = ow - g->pl;                         \
    const VT bv = (VT){0} + bias;                                              \
    DW_COLUMN_LANES(g);                                                        \
    DW_TILE(ROWS, NV);                                                         \
}
#define DW_DEFINE_TILE2(ROWS, NV) DW_DEFINE_TILE(ROWS, NV)
DW_DEFINE_TILE2(DW_TILE_N0, 1)
DW_DEFINE_TILE2(DW_TILE_N1, 1)
DW_DEFINE_TILE2(DW_TILE_N2, 1)
DW_DEFINE_TILE2(DW_TILE_W0, 2)
DW_DEFINE_TILE2(DW_TILE_W1, 2)
DW_DEFINE_TILE2(DW_TILE_W2, 2)
#undef DW_DEFINE_TILE
#undef DW_DEFINE_TILE2

/* rows of the tiles for a plane of Ho rows, among `sizes` (descending): the
 * tallest whose rows computed (ceil(Ho / R) R: the last tile overlaps or
 * runs past Ho) are within 1/8 of the fewest */
DW_INLINE int DW_FIX(tile_rows)(dws Ho, const int *sizes, int n)
{
    dws best = 0;
    for (int j = 0; j < n; j++) {
        const dws rows = (Ho + sizes[j] - 1) / sizes[j] * sizes[j];
        if (!best || rows < best)
            best = rows;
    }
    for (int j = 0; j < n; j++)
        if ((Ho + sizes[j] - 1) / sizes[j] * sizes[j] * 8 <= best * 9)
            return sizes[j];
    return sizes[n - 1];
}

/* A row of tiles of R output rows from oh (sh = dh: fwd_tiles; sh = 2, dh
 * = 1: fwd_tiles_s2): its input rows, dh apart from row oh*sh - pt, the
 * padded ones the zero row, into rowp ((R - 1) * sh / dh + RR of them), and
 * the next row of tiles' new input rows [*pf0, *pf1) (dh apart, inside the
 * input), which the caller asks for a tile's columns at a time. Why: a row
 * of tiles reads R + RR - 1 rows at once (2R + RR - 2 at stride 2), more
 * streams than the hardware followed: float64 mobilenet_dw_3x3 (input and
 * output 26 MB each, past L3) 1.54 ms without, 1.07 with, 0.99 with the row
 * blocks; float32 0.62 -> 0.455 (row blocks 0.456). Asking for the output
 * rows too (for writing) made float64 0.99 and float32 0.50, EfficientNet's
 * 5x5 0.29 -> 0.33: not kept. (A first version split the rows into a part
 * per tile with divisions: up to 15 % of a 28 x 28 plane's time.) */
DW_INLINE void DW_FIX(tile_row_inputs)(const dw_geom *g, const T *in, dws oh, int R,
                                       const T **rowp, dws *pf0, dws *pf1)
{
    const dws dh = g->dh, top = oh * g->sh - g->pt;
    const int n = (R - 1) * (int)(g->sh / dh) + RR;
    for (int t = 0; t < n; t++)
        rowp[t] = NM(row_or_zero)(g, in, top + t * dh);
    dws first = top + n * dh, end = top + R * g->sh + n * dh;
    if (first < 0)   /* (deep padding) the first row >= 0 of the sequence */
        first += (-first + dh - 1) / dh * dh;
    *pf0 = first;
    *pf1 = end < g->H ? end : g->H;
}

/* The whole plane as tiles (see DW_TILE), where rows are shared (stride =
 * dilation): rows of tiles of R rows (chosen by tile_rows from Ho), each
 * row of tiles across the plane in pairs of vectors (one vector where Wo <=
 * VL). Why: the row blocks (DW_ROWS_BLOCK) broadcast a weight from memory
 * at every FMA, kept 4-8 chains, and left the padded rows to fwd_border_row
 * and rows of two vectors to a kernel of their own (fwd_chunk, since
 * removed with its second set of accumulators, DW_SPLIT); the tiles hold a
 * kernel column's weights in registers, keep 14-16 chains, and take padded
 * rows as zero rows and every column through masks. Float32, 2 threads,
 * AVX-512, builds
 * alternated: ConvNeXt-T's 7x7 (8 x 96 x 56 x 56) 1.32 -> 0.69 ms,
 * EfficientNet-B0's 5x5 (240 x 28 x 28) 0.43 -> 0.30, MobileNetV2's 3x3 on
 * 576 x 14 x 14 0.19 -> 0.146, mobilenet_dw_3x3 0.41 -> 0.38; AVX2 7x7
 * 1.95 -> 1.50, 5x5 0.72 -> 0.58. */
static __attribute__((noinline)) void DW_FIX(fwd_tiles)(const dw_geom *g, const T *in,
                                                       const T *w, T bias, T *out)
{
    T wt[RR * SS];
    DW_FIX(tap_weights)(g, w, wt);
    static const int narrow[] = {DW_TILE_N0, DW_TILE_N1, DW_TILE_N2};
    static const int wide[] = {DW_TILE_W0, DW_TILE_W1, DW_TILE_W2};
    const dws Ho = g->Ho, Wo = g->Wo;
    const int two = Wo > VL;
    const int R = two ? DW_FIX(tile_rows)(Ho, wide, 3) : DW_FIX(tile_rows)(Ho, narrow, 3);
    const T *rowp[DW_TILE_N0 + RR - 1];
    /* the input columns a tile reads past its first */
    const dws span = (two ? 2 : 1) * VL + (SS - 1) * g->dw;
    for (dws oh = 0; oh < Ho; oh += R) {
        if (oh + R > Ho && Ho >= R)
            oh = Ho - R;   /* the last tile overlaps the one before: same values */
        const int rows_valid = Ho - oh < R ? (int)(Ho - oh) : R;
        dws pf0, pf1;
        DW_FIX(tile_row_inputs)(g, in, oh, R, rowp, &pf0, &pf1);
        T *orow = out + oh * Wo;
        for (dws ow = 0; ow < Wo;) {
            if (Wo > VL && Wo - ow <= VL)
                ow = Wo - 2 * VL;   /* one vector left: overlap, same values */
            NM(prefetch_columns)(g, in, pf0, pf1, g->dh, ow - g->pl, ow - g->pl + span);
            if (Wo > VL) {
                if (R == DW_TILE_W0)
                    DW_TILE_FN(DW_TILE_W0, 2)(g, rowp, wt, bias, orow, ow, rows_valid);
                else if (R == DW_TILE_W1)
                    DW_TILE_FN(DW_TILE_W1, 2)(g, rowp, wt, bias, orow, ow, rows_valid);
                else
                    DW_TILE_FN(DW_TILE_W2, 2)(g, rowp, wt, bias, orow, ow, rows_valid);
                ow += 2 * VL;
            } else {
                if (R == DW_TILE_N0)
                    DW_TILE_FN(DW_TILE_N0, 1)(g, rowp, wt, bias, orow, ow, rows_valid);
                else if (R == DW_TILE_N1)
                    DW_TILE_FN(DW_TILE_N1, 1)(g, rowp, wt, bias, orow, ow, rows_valid);
                else
                    DW_TILE_FN(DW_TILE_N2, 1)(g, rowp, wt, bias, orow, ow, rows_valid);
                ow += VL;
            }
        }
    }
}
#endif

#if defined(DW_MLOAD) && defined(QT)
/* Stride 2 in both directions, dilation 1 (EfficientNet's and MobileNet's
 * downsampling depthwise layers): ROWS output rows from oh x one vector of
 * columns from ow. Output row i reads input rows 2 i + r, so input row t
 * of the tile meets kernel row t - 2 i of row i; its vector for kernel
 * column s is the even lanes of two masked loads from column 2 ow - pl + s
 * (one two-source permute). Kernel column s outer, its weights in
 * registers, as DW_TILE; each output's sum runs bias, then the taps by
 * kernel column and row. */
#define DW_TILE_S2(ROWS) do {                                                  \
    VT acc_[ROWS];                                                             \
    _Pragma("GCC unroll 8")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++)                                        \
        acc_[i_] = bv;                                                         \
    _Pragma("GCC unroll 7")                                                    \
    for (int s_ = 0; s_ < SS; s_++) {                                          \
        VT w_[RR];                                                             \
        _Pragma("GCC unroll 7")                                                \
        for (int r_ = 0; r_ < RR; r_++)                                        \
            w_[r_] = wt[r_ * SS + s_] - (VT){0};                               \
        const IVT c_ = iota + (IT)(c0 + s_);                                   \
        const IVT lo_ = (c_ >= zero) & (c_ < width);                           \
        const IVT hi_ = (c_ + (IT)VL >= zero) & (c_ + (IT)VL < width);         \
        _Pragma("GCC unroll 20")                                               \
        for (int t_ = 0; t_ < 2 * ((ROWS) - 1) + RR; t_++) {                   \
            const T *q_ = rowp[t_] + (c0 + s_);                                \
            const VT a_ = DW_MLOAD(q_, lo_), b_ = DW_MLOAD(q_ + VL, hi_);      \
            const VT x_ = DW_SHUFFLE2(VT, IVT, VL, a_, b_, 2 * i_);            \
            _Pragma("GCC unroll 8")                                            \
            for (int i_ = 0; i_ < (ROWS); i_++)                                \
                if (t_ - 2 * i_ >= 0 && t_ - 2 * i_ < RR)                      \
                    acc_[i_] += w_[t_ - 2 * i_] * x_;                          \
        }                                                                      \
    }                                                                          \
    const dws n_ = Wo - ow;                                                    \
    for (int i_ = 0; i_ < rows_valid; i_++) {                                  \
        if (n_ >= VL)                                                          \
            DW_STORE(orow + i_ * Wo + ow, acc_[i_]);                           \
        else                                                                   \
            DW_STORE_FIRST(orow + i_ * Wo + ow, acc_[i_], n_);                 \
    }                                                                          \
} while (0)

#define DW_DEFINE_TILE_S2(ROWS)                                                \
static __attribute__((noinline)) void DW_TILE_FN(ROWS, s2)(                    \
    const dw_geom *g, const T *const *rowp, const T *wt, T bias, T *orow,      \
    dws ow, int rows_valid)                                                    \
{                                                                              \
    const dws Wo = g->Wo, c0 = 2 * ow - g->pl;                                 \
    const VT bv = (VT){0} + bias;                                              \
    DW_COLUMN_LANES(g);                                                        \
    DW_TILE_S2(ROWS);                                                          \
}
DW_DEFINE_TILE_S2(8)
DW_DEFINE_TILE_S2(7)
DW_DEFINE_TILE_S2(4)
DW_DEFINE_TILE_S2(2)
#undef DW_DEFINE_TILE_S2
#undef DW_TILE_S2

/* The whole plane as stride-2 tiles (DW_TILE_S2): rows of tiles of 8, 7, 4
 * or 2 rows (tile_rows), one vector of columns each. Why: the padded bands
 * (fwd_band) split every input row into its two phases on the stack first,
 * 40 % of the kernel's time. Float32, 2 threads, builds alternated, bands
 * -> tiles: EfficientNet-B0's 5x5/2 (8 x 144 x 56 x 56) 0.545 -> 0.357 ms,
 * a 3x3/2 on 8 x 96 x 112 x 112 1.68 -> 0.95, a 7x7/2 on 96 x 56 x 56
 * 0.48 -> 0.37; float64 1.12 -> 1.00 and 3.46 -> 2.15. Tiles of 4 rows
 * (4 chains) took 0.44 on the 5x5/2, 7 rows 0.36; without the prefetch
 * the planes that do not stay in L3 were slower than the bands (3x3/2
 * 1.68 -> 2.3 ms, float64 5x5/2 1.12 -> 1.8). */
static __attribute__((noinline)) void DW_FIX(fwd_tiles_s2)(const dw_geom *g, const T *in,
                                                          const T *w, T bias, T *out)
{
    static const int sizes[] = {8, 7, 4, 2};
    const dws Ho = g->Ho, Wo = g->Wo;
    const int R = DW_FIX(tile_rows)(Ho, sizes, 4);
    T wt[RR * SS];
    DW_FIX(tap_weights)(g, w, wt);
    const T *rowp[2 * 7 + RR];
    for (dws oh = 0; oh < Ho; oh += R) {
        if (oh + R > Ho && Ho >= R)
            oh = Ho - R;   /* the last tile overlaps the one before: same values */
        const int rows_valid = Ho - oh < R ? (int)(Ho - oh) : R;
        dws pf0, pf1;
        DW_FIX(tile_row_inputs)(g, in, oh, R, rowp, &pf0, &pf1);
        T *orow = out + oh * Wo;
        for (dws ow = 0; ow < Wo; ow += VL) {
            NM(prefetch_columns)(g, in, pf0, pf1, 1, 2 * ow - g->pl,
                                 2 * ow - g->pl + 2 * VL + SS - 1);
            if (R == 8)
                DW_TILE_FN(8, s2)(g, rowp, wt, bias, orow, ow, rows_valid);
            else if (R == 7)
                DW_TILE_FN(7, s2)(g, rowp, wt, bias, orow, ow, rows_valid);
            else if (R == 4)
                DW_TILE_FN(4, s2)(g, rowp, wt, bias, orow, ow, rows_valid);
            else
                DW_TILE_FN(2, s2)(g, rowp, wt, bias, orow, ow, rows_valid);
        }
    }
}
#endif

/* Output rows [oh_lo, oh_hi). With masked loads, whole rows, those in the
 * padding and those narrower than a vector too (their blocks masked by rows
 * and columns): the caller passes every row. Without, columns [A, B) only
 * (B - A >= the narrowest vector) of rows where every kernel row is inside
 * the input. Returns whether it did whole rows. */
static __attribute__((noinline)) int DW_FIX(fwd)(const dw_geom *g, const T *in,
                                                 const T *w, T bias, T *out, dws A,
                                                 dws B, dws oh_lo, dws oh_hi)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, sh = g->sh, pt = g->pt, pl = g->pl;
    const dws dh = g->dh, dw = g->dw, n = B - A;
    T wt[RR][SS];
    DW_FIX(tap_weights)(g, w, &wt[0][0]);
#ifdef DW_MLOAD
    DW_COLUMN_LANES(g);
    {
        /* 3x3: the weights in 9 registers; larger kernels broadcast theirs
         * from memory at each FMA (an operand of the FMA, where 25 or 49
         * vectors copied to the stack took a full-width load each: 7x7 on
         * 64 x 56 x 56, one thread, 2.35 -> 2.0 ms) */
#if RR == 3
        VT wv[RR][SS];
        for (int r = 0; r < RR; r++)
            for (int s = 0; s < SS; s++)
                wv[r][s] = wt[r][s] - (VT){0};
#define DW_TAP(r, s) wv[r][s]
#else
#define DW_TAP(r, s) (wt[r][s] - (VT){0})
#endif
        const VT bv = (VT){0} + bias;
        const dws H = g->H;
        /* rows oh and oh + 1 share RR - 1 input rows where the stride
         * equals the dilation */
        const int pairs = sh == dh;
        for (dws oh = oh_lo; oh < oh_hi;) {
            int rows = !pairs ? 1 : oh_hi - oh >= 4 ? 4 : oh_hi - oh >= 2 ? 2 : 1;
            const dws top = oh * sh - pt;   /* the input row of the block's row 0 */
            const int inside = top >= 0 && top + (RR + rows - 2) * dh < H;
            /* rows that meet the padding go one at a time, and the blocks
             * of 4 start after them. Why: blocks of 4 from row 0 (its
             * padding row masked) took 2x the time on mobilenet_dw_3x3 (one
             * thread, 1.0 -> 2.2 ms; the 1152 planes do not stay in L2)
             * and 1.25x on 32 x 112 x 112, though the same on the smaller
             * MobileFaceNet layer: not understood, measured. */
            if (!inside)
                rows = 1;
            const T *p = in + (top * xs_h - pl);
            T *orow = out + oh * Wo;
            dws ow = 0;
            if (Wo >= VL && inside) {
                while (ow < Wo) {
                    if (ow + VL > Wo)
                        ow = Wo - VL;   /* the last block overlaps, same values */
                    if (ow >= A && ow + 2 * VL <= B) {
                        DW_ROWS_ANY(2, ow, DW_ROWS_PLAIN, DW_STORE);
                        ow += 2 * VL;
                    } else if (ow >= A && ow + VL <= B) {
                        DW_ROWS_ANY(1, ow, DW_ROWS_PLAIN, DW_STORE);
                        ow += VL;
                    } else {
                        IVT cond_[SS];
                        DW_COLUMN_MASKS(cond_, ow);
                        DW_ROWS_ANY(1, ow, DW_ROWS_MASKED, DW_STORE);
                        ow += VL;
                    }
                }
            } else if (inside) {
                /* rows narrower than a vector: one block a row, stored masked */
                IVT cond_[SS];
                DW_COLUMN_MASKS(cond_, 0);
                DW_ROWS_ANY(1, 0, DW_ROWS_MASKED, DW_ROWS_NARROW);
            } else {
                const int t_lo = dw_first(top, dh, RR), t_hi = dw_end(top, dh, H, RR);
                DW_FIX(fwd_border_row)(g, p, &wt[0][0], bias, orow, t_lo, t_hi);
            }
            oh += rows;
        }
        return 1;
    }
#endif
    for (dws oh = oh_lo; oh < oh_hi; oh++) {
        const T *p = in + ((oh * sh - pt) * xs_h - pl);
        T *orow = out + oh * Wo;
        dws ow = A;
        if (n >= VL) {
            for (; B - ow >= 4 * VL; ow += 4 * VL)
                DW_FIXED_BLOCK(VT, VL, 4, ow);
            if (B - ow >= 2 * VL) {
                DW_FIXED_BLOCK(VT, VL, 2, ow);
                ow += 2 * VL;
            }
            if (B - ow >= VL) {
                DW_FIXED_BLOCK(VT, VL, 1, ow);
                ow += VL;
            }
            /* the rest: a block ending at B, rewriting a few columns with
             * the same values */
            if (ow < B)
                DW_FIXED_BLOCK(VT, VL, 1, B - VL);
#ifdef HT
        } else if (n >= HL) {
            DW_FIXED_BLOCK(HT, HL, 1, A);
            if (A + HL < B)
                DW_FIXED_BLOCK(HT, HL, 1, B - HL);
#endif
#ifdef QT
        } else if (n >= QL) {
            DW_FIXED_BLOCK(QT, QL, 1, A);
            if (A + QL < B)
                DW_FIXED_BLOCK(QT, QL, 1, B - QL);
#endif
        }
    }
    return 0;
}

/* Several output planes of one input plane (a channel multiplier m > 1:
 * the m filters of an input channel, such as a first layer with C = 1 and
 * 32 filters): each input vector is loaded once and meets all MB filters,
 * MB accumulators per column vector, the weights broadcast from memory.
 * One plane at a time loads every input vector once per filter, and the
 * loads, not the FMAs, bound it: paper_mnist (C = 1, 32 filters, 26 x 26
 * outputs, float32, AVX-512, 2 threads) took 0.46 ms one plane at a time,
 * 2.4x PyTorch's time (see depthwise.pyx for the measured blocks). */
/* columns [OW, OW + VL) of rows oh and, if ROWS == 2, oh + 1 of all MB
 * planes; LOADX(q, s) loads the input vector of kernel column s from q.
 * Two rows share every weight: a weight vector loaded from the stack meets
 * two input vectors (memory operands, not FMAs, bound this loop). */
#define DW_MULTI_BLOCK(OW, ROWS, LOADX) do {                                   \
    const dws o_ = (OW);                                                       \
    VT acc_[2][DW_FWD_BLOCK_MAX];                                                  \
    _Pragma("GCC unroll 2")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++) {                                      \
        _Pragma("GCC unroll 8")                                                \
        for (int m_ = 0; m_ < MB; m_++)                                        \
            acc_[i_][m_] = (VT){0} + bs[m_];                                   \
    }                                                                          \
    for (dws j_ = 0; j_ < M; j_++) {                                           \
        const T *pj_ = p + j_ * in_plane;                                      \
        const T *wj_ = wt + j_ * (RR * SS * MB);                               \
        _Pragma("GCC unroll 7")                                                \
        for (int r_ = 0; r_ < RR; r_++) {                                      \
            const T *q_ = pj_ + (r_ * dh * xs_h + o_);                         \
            _Pragma("GCC unroll 7")                                            \
            for (int s_ = 0; s_ < SS; s_++) {                                  \
                VT xv_[2];                                                     \
                _Pragma("GCC unroll 2")                                        \
                for (int i_ = 0; i_ < (ROWS); i_++)                            \
                    xv_[i_] = LOADX(q_ + i_ * row_step + s_ * dw, s_);         \
                _Pragma("GCC unroll 8")                                        \
                for (int m_ = 0; m_ < MB; m_++) {                              \
                    _Pragma("GCC unroll 2")                                    \
                    for (int i_ = 0; i_ < (ROWS); i_++)                        \
                        acc_[i_][m_] += xv_[i_] * wj_[(r_ * SS + s_) * MB + m_]; \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 2")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++) {                                      \
        _Pragma("GCC unroll 8")                                                \
        for (int m_ = 0; m_ < MB; m_++)                                        \
            DW_STORE(orow + i_ * Wo + m_ * o_step + o_, acc_[i_][m_]);         \
    }                                                                          \
} while (0)
#define DW_MULTI_PLAIN(q, s) DW_LOAD(VT, (q))
#define DW_MULTI_MASKED(q, s) DW_MLOAD((q), cond_[s])

#define DW_FIXM3(name, r, s, mb) NM(name##_##r##x##s##_##mb)
#define DW_FIXM2(name, r, s, mb) DW_FIXM3(name, r, s, mb)
#define DW_FIXM(name, mb) DW_FIXM2(name, RR, SS, mb)

#ifdef DW_MLOAD
/* A block of ROWS rows at column ow that meets the zero padding: its lanes
 * there are masked off the loads (they read nothing). A function of its
 * own: inlined, its masks took the registers of the plain blocks' loop,
 * whose accumulators then spilled (paper_mnist, 8 planes a block, 0.28 ->
 * 0.21 ms a call). */
DW_INLINE void DW_FIX(fwd_multi_edge_body)(const dw_geom *g, const T *p, dws in_plane,
                                           dws M, T *orow, dws o_step, dws ow, int rows,
                                           const T *wt, const T *bs, const int MB)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, pl = g->pl, dh = g->dh, dw = g->dw;
    const dws row_step = g->sh * xs_h;
    DW_COLUMN_LANES(g);
    IVT cond_[SS];
    DW_COLUMN_MASKS(cond_, ow);
    if (rows == 2)
        DW_MULTI_BLOCK(ow, 2, DW_MULTI_MASKED);
    else
        DW_MULTI_BLOCK(ow, 1, DW_MULTI_MASKED);
}
#define DW_DEFINE_FWD_MULTI_EDGE(MBV)                                            \
static __attribute__((noinline)) void DW_FIXM(fwd_multi_edge, MBV)(              \
    const dw_geom *g, const T *p, dws in_plane, dws M, T *orow, dws o_step,     \
    dws ow, int rows, const T *wt, const T *bs)                                 \
{                                                                                \
    DW_FIX(fwd_multi_edge_body)(g, p, in_plane, M, orow, o_step, ow, rows, wt,  \
                                bs, MBV);                                       \
}
DW_DEFINE_FWD_MULTI_EDGE(4)
DW_DEFINE_FWD_MULTI_EDGE(2)
#endif

#ifdef DW_MERGE_LOAD
/* Compact rows. Where every output column of rows [oh_lo, oh_hi) is
 * interior (no column padding: a "valid" layer such as paper_mnist), a
 * plane's outputs are one run of Ho x Wo positions and the vectors run
 * across the ends of rows: paper_mnist's 26 x 26 outputs take 42.25 vectors
 * of 16 per plane where whole rows take 2 a row (52, the second one redoing
 * 6 columns). A vector meeting the end of a row reads each kernel tap twice,
 * its lanes of row oh from row oh's input and the rest merged in from row
 * oh + 1's (a masked load), and is stored whole, unmasked. AVX-512 only
 * (_depthwise.h). paper_mnist, float32, over whole rows: 0.78x the time
 * with 8 images (one thread, the output in L2), 0.93-0.96x with its 64
 * images (2 threads, fresh processes alternated; the 5.5 MB output then
 * streams to L3 and bounds it), float64 0.92x. Wide rows were tried first
 * (the input's row pitch as the row length, one load per tap, the extra
 * columns computed and dropped by masked stores): 1.12x the whole rows'
 * time with unmasked stores, 1.4x with the masked ones (one thread), for
 * 11 % fewer vectors. */

/* whether compact rows take more than 10 % fewer vectors than whole rows.
 * Input rows that overlap (a row pitch xs_h below W, as a sliding-window
 * view has) are left to whole rows: the load of a vector's lanes past a row
 * end, from that row, reaches VL - 1 columns beyond it, which lie in the
 * next input row only if the rows are at least W apart. */
DW_INLINE int DW_FIX(compact_pays)(const dw_geom *g, dws A, dws B, dws oh_lo, dws oh_hi)
{
    const dws Wo = g->Wo, rows = oh_hi - oh_lo;
    if (A != 0 || B != Wo || Wo < VL || rows < 2 || g->xs_h < g->W)
        return 0;
    const dws compact = (rows * Wo + VL - 1) / VL;
    const dws whole = rows * ((Wo + VL - 1) / VL);
    return 10 * compact < 9 * whole;
}

/* NV vectors of all MB planes at compact positions J, J + VL: vector u's
 * first lane at row row_[u], column col_[u] (relative to oh_lo) */
#define DW_COMPACT_BLOCK(J, NV) do {                                           \
    const T *src_[2], *next_[2];                                               \
    IVT cond_[2];                                                              \
    VT acc_[2][DW_FWD_BLOCK_MAX];                                              \
    _Pragma("GCC unroll 2")                                                    \
    for (int u_ = 0; u_ < (NV); u_++) {                                        \
        src_[u_] = base + (row_[u_] * P + col_[u_]);                           \
        next_[u_] = base + ((row_[u_] + 1) * P + col_[u_] - Wo);               \
        cond_[u_] = iota >= (IT)(Wo - col_[u_]);                               \
        _Pragma("GCC unroll 8")                                                \
        for (int m_ = 0; m_ < MB; m_++)                                        \
            acc_[u_][m_] = (VT){0} + bs[m_];                                   \
    }                                                                          \
    for (dws j_ = 0; j_ < M; j_++) {                                           \
        const T *wj_ = wt + j_ * (RR * SS * MB);                               \
        _Pragma("GCC unroll 7")                                                \
        for (int r_ = 0; r_ < RR; r_++) {                                      \
            const dws roff_ = j_ * in_plane + r_ * dh * xs_h;                  \
            _Pragma("GCC unroll 7")                                            \
            for (int s_ = 0; s_ < SS; s_++) {                                  \
                VT xv_[2];                                                     \
                _Pragma("GCC unroll 2")                                        \
                for (int u_ = 0; u_ < (NV); u_++)                              \
                    xv_[u_] = DW_MERGE_LOAD(DW_LOAD(VT, src_[u_] + roff_ + s_ * dw), \
                                            next_[u_] + roff_ + s_ * dw, cond_[u_]); \
                _Pragma("GCC unroll 8")                                        \
                for (int m_ = 0; m_ < MB; m_++) {                              \
                    _Pragma("GCC unroll 2")                                    \
                    for (int u_ = 0; u_ < (NV); u_++)                          \
                        acc_[u_][m_] += xv_[u_] * wj_[(r_ * SS + s_) * MB + m_]; \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    _Pragma("GCC unroll 2")                                                    \
    for (int u_ = 0; u_ < (NV); u_++) {                                        \
        _Pragma("GCC unroll 8")                                                \
        for (int m_ = 0; m_ < MB; m_++)                                        \
            DW_STORE(out + (m_ * o_step + (J) + u_ * VL), acc_[u_][m_]);       \
    }                                                                          \
} while (0)

/* rows [oh_lo, oh_hi) of the MB planes as compact rows (compact_pays said
 * so); the last vector ends at the last output, overlapping the one before
 * (same values) */
DW_INLINE void DW_FIX(fwd_multi_compact_body)(const dw_geom *g, const T *in, dws in_plane,
                                              dws M, const T *wt, const T *bs, T *planes,
                                              dws o_step, dws oh_lo, dws oh_hi, const int MB)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, dh = g->dh, dw = g->dw;
    const dws P = g->sh * xs_h, total = (oh_hi - oh_lo) * Wo;
    const T *base = in + ((oh_lo * g->sh - g->pt) * xs_h - g->pl);
    T *out = planes + oh_lo * Wo;
    IVT iota;
    dws j = 0, row_[2], col_[2];
    for (int l = 0; l < VL; l++)
        iota[l] = l;
    row_[0] = 0;
    col_[0] = 0;
    for (; j + 2 * VL <= total; j += 2 * VL) {
        row_[1] = row_[0];
        col_[1] = col_[0];
        dw_step_position(&row_[1], &col_[1], VL, Wo);
        DW_COMPACT_BLOCK(j, 2);
        row_[0] = row_[1];
        col_[0] = col_[1];
        dw_step_position(&row_[0], &col_[0], VL, Wo);
    }
    if (j < total) {
        if (j + VL < total) {
            DW_COMPACT_BLOCK(j, 1);
            j += VL;
        }
        j = total - VL;
        row_[0] = j / Wo;
        col_[0] = j - row_[0] * Wo;
        DW_COMPACT_BLOCK(j, 1);
    }
}
#define DW_DEFINE_FWD_MULTI_COMPACT(MBV)                                         \
static __attribute__((noinline)) void DW_FIXM(fwd_multi_compact, MBV)(           \
    const dw_geom *g, const T *in, dws in_plane, dws M, const T *wt,            \
    const T *bs, T *out, dws o_step, dws oh_lo, dws oh_hi)                      \
{                                                                                \
    DW_FIX(fwd_multi_compact_body)(g, in, in_plane, M, wt, bs, out, o_step,     \
                                   oh_lo, oh_hi, MBV);                          \
}
DW_DEFINE_FWD_MULTI_COMPACT(4)
DW_DEFINE_FWD_MULTI_COMPACT(2)
#endif

/* Output rows [oh_lo, oh_hi) (every kernel row inside the input) of the MB
 * planes out + m*o_step, each the sum over M input planes in + j*in_plane
 * (M > 1: a grouped convolution's channels per group, at most
 * DW_GROUP_MAX_PLANES) of the plane correlated with filter
 * w + m*w_step + j*w_plane, plus bias[m] (NULL: none).
 * Returns 2 if it did whole rows (compact rows, or masked loads and
 * Wo >= VL), 1 if columns
 * [A, B) only (B - A >= VL), 0 if nothing (narrower rows: the caller goes
 * plane by plane). Column blocks are single vectors, the last one of a run
 * overlapping the one before (same values); rows go in pairs. */
DW_INLINE int DW_FIX(fwd_multi_body)(const dw_geom *g, const T *in, dws in_plane, dws M,
                                     const T *w, dws w_step, dws w_plane, const T *bias,
                                     T *out, dws o_step, dws A, dws B, dws oh_lo, dws oh_hi,
                                     const int MB)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, sh = g->sh, pt = g->pt, pl = g->pl;
    const dws dh = g->dh, dw = g->dw, row_step = sh * xs_h;
    /* tap (r, s) of plane j for filter m at wt[(j*RR*SS + r*SS + s)*MB + m]:
     * a tap's MB broadcasts from one base register */
    T wt[DW_GROUP_MAX_PLANES * RR * SS * 4];
    T bs[DW_FWD_BLOCK_MAX];
    dws oh;
    for (int m = 0; m < MB; m++) {
        for (dws j = 0; j < M; j++)
            for (int r = 0; r < RR; r++)
                for (int s = 0; s < SS; s++)
                    wt[(j * RR * SS + r * SS + s) * MB + m] = w[m * w_step + j * w_plane
                        + (g->flip ? (RR - 1 - r) * SS + (SS - 1 - s) : r * SS + s)];
        bs[m] = bias ? bias[m] : 0;
    }
#ifdef DW_MERGE_LOAD
    if (DW_FIX(compact_pays)(g, A, B, oh_lo, oh_hi)) {
        if (MB == 4)
            DW_FIXM(fwd_multi_compact, 4)(g, in, in_plane, M, wt, bs, out, o_step, oh_lo, oh_hi);
        else
            DW_FIXM(fwd_multi_compact, 2)(g, in, in_plane, M, wt, bs, out, o_step, oh_lo, oh_hi);
        return 2;
    }
#endif
#ifdef DW_MLOAD
    if (Wo >= VL) {
        for (oh = oh_lo; oh < oh_hi; oh += 2) {
            const T *p = in + ((oh * sh - pt) * xs_h - pl);
            T *orow = out + oh * Wo;
            for (dws ow = 0; ow < Wo; ow += VL) {
                if (ow + VL > Wo)
                    ow = Wo - VL;   /* the last block overlaps, same values */
                const int rows = oh + 1 < oh_hi ? 2 : 1;
                if (ow < A || ow + VL > B) {
                    if (MB == 4)
                        DW_FIXM(fwd_multi_edge, 4)(g, p, in_plane, M, orow, o_step, ow, rows, wt, bs);
                    else
                        DW_FIXM(fwd_multi_edge, 2)(g, p, in_plane, M, orow, o_step, ow, rows, wt, bs);
                } else if (rows == 2) {
                    DW_MULTI_BLOCK(ow, 2, DW_MULTI_PLAIN);
                } else {
                    DW_MULTI_BLOCK(ow, 1, DW_MULTI_PLAIN);
                }
            }
        }
        return 2;
    }
#endif
    if (B - A < VL)
        return 0;
    for (oh = oh_lo; oh < oh_hi; oh += 2) {
        const T *p = in + ((oh * sh - pt) * xs_h - pl);
        T *orow = out + oh * Wo;
        for (dws ow = A; ow < B; ow += VL) {
            if (ow + VL > B)
                ow = B - VL;
            if (oh + 1 < oh_hi)
                DW_MULTI_BLOCK(ow, 2, DW_MULTI_PLAIN);
            else
                DW_MULTI_BLOCK(ow, 1, DW_MULTI_PLAIN);
        }
    }
    return 1;
}

#define DW_DEFINE_FWD_MULTI(MBV)                                                 \
static __attribute__((noinline)) int DW_FIXM(fwd_multi, MBV)(                    \
    const dw_geom *g, const T *in, dws in_plane, dws M, const T *w, dws w_step, \
    dws w_plane, const T *bias, T *out, dws o_step, dws A, dws B, dws oh_lo,    \
    dws oh_hi)                                                                  \
{                                                                                \
    return DW_FIX(fwd_multi_body)(g, in, in_plane, M, w, w_step, w_plane, bias, \
                                  out, o_step, A, B, oh_lo, oh_hi, MBV);        \
}
DW_DEFINE_FWD_MULTI(4)
DW_DEFINE_FWD_MULTI(2)

#ifdef DW_MLOAD
/* The weight gradient's columns [OW, OW + VL) of ROWS output rows from oh
 * of image img: input row t (xt_[t]) meets kernel row t of row oh, t - 1
 * of row oh + 1, ... (ROWS > 1 only where the stride equals the dilation),
 * each of its SS vectors loaded once for all rows. MASKED: x loaded through
 * COND[s] (lanes whose input column is in the padding off, and those
 * outside KEEP), the gradient through KEEP (lanes past Wo, or counted by
 * the block before, off): those lanes are zero in both factors, so that
 * their products are exact zeros whatever the data (no 0 * inf). Each
 * accumulator takes the rows' products in row order. */
#define DW_WGRAD_TILE(ROWS, OW, MASKED, KEEP, COND, S0, S1) do {               \
    const dws o_ = (OW);                                                       \
    VT g_[ROWS];                                                               \
    _Pragma("GCC unroll 4")                                                    \
    for (int i_ = 0; i_ < (ROWS); i_++)                                        \
        g_[i_] = (MASKED) ? DW_MLOAD(gp_ + i_ * Wo + o_, (KEEP))               \
                          : DW_LOAD(VT, gp_ + i_ * Wo + o_);                   \
    _Pragma("GCC unroll 10")                                                   \
    for (int t_ = 0; t_ < RR + (ROWS) - 1; t_++) {                             \
        _Pragma("GCC unroll 7")                                                \
        for (int s_ = (S0); s_ < (S1); s_++) {                                 \
            const T *q_ = xt_[t_] + s_ * dw + o_;                              \
            const VT xv_ = (MASKED) ? DW_MLOAD(q_, (COND)[s_]) : DW_LOAD(VT, q_); \
            _Pragma("GCC unroll 4")                                            \
            for (int i_ = 0; i_ < (ROWS); i_++)                                \
                if (t_ - i_ >= 0 && t_ - i_ < RR)                              \
                    acc[t_ - i_][s_] += g_[i_] * xv_;                          \
        }                                                                      \
    }                                                                          \
} while (0)

/* ROWS output rows from oh of image img, every column: the input rows'
 * pointers (the zero row for rows in the padding), then blocks of VL
 * columns, the last one ending at Wo; a row narrower than a vector
 * (NARROW: Wo <= VL) is one block, first and last at once (first, last:
 * their masks, made once) */
#define DW_WGRAD_ROWS(ROWS, NARROW, S0, S1) do {                               \
    const T *xt_[RR + (ROWS) - 1];                                             \
    const T *gp_ = grad + (img * g_n + oh * Wo);                               \
    _Pragma("GCC unroll 10")                                                   \
    for (int t_ = 0; t_ < RR + (ROWS) - 1; t_++) {                             \
        xt_[t_] = NM(row_or_zero)(g, x + img * xs_n, oh * sh - pt + t_ * dh) - pl; \
    }                                                                          \
    if (NARROW) {                                                              \
        DW_WGRAD_TILE(ROWS, 0, 1, keep_first, first, S0, S1);                  \
    } else {                                                                   \
        DW_WGRAD_TILE(ROWS, 0, 1, zero - 1, first, S0, S1);                    \
        for (dws ow_ = VL; ow_ + VL < Wo; ow_ += VL) {                         \
            if (ow_ >= A && ow_ + VL <= B) {                                   \
                DW_WGRAD_TILE(ROWS, ow_, 0, zero - 1, first, S0, S1);          \
            } else {                                                           \
                IVT cond_[SS];                                                 \
                DW_COLUMN_MASKS(cond_, ow_);                                   \
                DW_WGRAD_TILE(ROWS, ow_, 1, zero - 1, cond_, S0, S1);          \
            }                                                                  \
        }                                                                      \
        DW_WGRAD_TILE(ROWS, Wo - VL, 1, keep_last, last, S0, S1);              \
    }                                                                          \
} while (0)

/* every row of every image, in blocks of 4 and 2 rows where the stride
 * equals the dilation (narrow rows apart: in one loop with the others, the
 * accumulators went to the stack in places, MobileNetV2's 14 x 14 0.148 ->
 * 0.163 ms) */
#define DW_WGRAD_ALL_ROWS(NARROW, S0, S1) do {                                 \
    for (dws img = 0; img < N; img++) {                                        \
        dws oh = oh_lo;                                                        \
        if (sh == dh) {                                                        \
            for (; oh + 3 < oh_hi; oh += 4)                                    \
                DW_WGRAD_ROWS(4, NARROW, S0, S1);                              \
            for (; oh + 1 < oh_hi; oh += 2)                                    \
                DW_WGRAD_ROWS(2, NARROW, S0, S1);                              \
        }                                                                      \
        for (; oh < oh_hi; oh++)                                               \
            DW_WGRAD_ROWS(1, NARROW, S0, S1);                                  \
    }                                                                          \
} while (0)
#endif

/* part[r*SS + s] = acc[r][s]'s lanes added in order. The taps unrolled and
 * each vector stored before its lanes are added: a lane loop over
 * acc[r][s] kept every accumulator on the stack, and the row loops stored
 * them there after each FMA (perf). */
#define DW_WGRAD_REDUCE(PART, S0, S1) do {                                     \
    _Pragma("GCC unroll 7")                                                    \
    for (int r_ = 0; r_ < RR; r_++) {                                          \
        _Pragma("GCC unroll 7")                                                \
        for (int s_ = (S0); s_ < (S1); s_++) {                                 \
            T lanes_[VL], total_ = 0;                                          \
            DW_STORE(lanes_, acc[r_][s_]);                                     \
            for (int l_ = 0; l_ < VL; l_++)                                    \
                total_ += lanes_[l_];                                          \
            (PART)[r_ * SS + s_] = total_;                                     \
        }                                                                      \
    }                                                                          \
} while (0)

/* the taps of kernel columns [S0, S1), all rows: their accumulators from
 * zero, then their part. 7x7 goes in three passes over the data (columns
 * 0-2, 3-4, 5-6; 21 accumulators at most, with 4 gradient vectors and an
 * input vector in 32 registers): in one pass its 49 accumulators went to
 * the stack and back around the FMAs (ConvNeXt-T's 7x7, float32, 2
 * threads: 1.35-1.84 ms depending on how the compiler placed them). */
#define DW_WGRAD_PASS(NARROW, S0, S1) do {                                     \
    VT acc[RR][SS];                                                            \
    _Pragma("GCC unroll 7")                                                    \
    for (int r_ = 0; r_ < RR; r_++) {                                          \
        _Pragma("GCC unroll 7")                                                \
        for (int s_ = (S0); s_ < (S1); s_++)                                   \
            acc[r_][s_] = (VT){0};                                             \
    }                                                                          \
    DW_WGRAD_ALL_ROWS(NARROW, S0, S1);                                         \
    DW_WGRAD_REDUCE(part, S0, S1);                                             \
} while (0)
#if RR < 7
#define DW_WGRAD_PASSES(NARROW) DW_WGRAD_PASS(NARROW, 0, SS)
#else
#define DW_WGRAD_PASSES(NARROW) do {                                           \
    DW_WGRAD_PASS(NARROW, 0, 3);                                               \
    DW_WGRAD_PASS(NARROW, 3, 5);                                               \
    DW_WGRAD_PASS(NARROW, 5, 7);                                               \
} while (0)
#endif

#ifdef DW_MLOAD
/* part (as DW_FIX(wgrad)) over whole rows, input rows in the padding read
 * from the zero row, the first and last blocks' column masks made once; for
 * rows narrower than a vector (NARROW) and wider ones apart: in one
 * function the 7x7's accumulators went to the stack in other places
 * (ConvNeXt-T's 7x7 1.32 -> 1.69 ms, float32, 2 threads), and with the
 * narrow rows' test in each block MobileNetV2's 14 x 14 took 0.160 ms
 * against 0.135. Why whole rows: rows narrower than a vector made their
 * masks and the range of kernel rows inside the input anew each row:
 * MobileNetV2's 3x3 on 576 x 14 x 14 took 0.29 ms, PyTorch 0.19. */
#define DW_DEFINE_WGRAD_WHOLE(NAME, NARROW)                                    \
static __attribute__((noinline)) void DW_FIX(NAME)(                            \
    const dw_geom *g, const T *x, dws xs_n, const T *grad, dws g_n, dws N,     \
    dws A, dws B, dws oh_lo, dws oh_hi, T *part)                               \
{                                                                              \
    const dws Wo = g->Wo, sh = g->sh, pt = g->pt, pl = g->pl;                  \
    const dws dh = g->dh, dw = g->dw;                                          \
    DW_COLUMN_LANES(g);                                                        \
    IVT first[SS], last[SS];                                                   \
    /* lanes of the first block (< Wo) and of the last, counted once */        \
    const IVT keep_first = iota < (IT)Wo;                                      \
    const IVT keep_last = Wo % VL ? DW_LOAD(IVT, MASKS_MID - VL + (Wo % VL))   \
                                  : zero - 1;                                  \
    DW_COLUMN_MASKS(first, 0);                                                 \
    DW_COLUMN_MASKS(last, Wo - VL);                                            \
    _Pragma("GCC unroll 7")                                                    \
    for (int s = 0; s < SS; s++) {                                             \
        first[s] &= keep_first;                                                \
        last[s] &= keep_last;                                                  \
    }                                                                          \
    DW_WGRAD_PASSES(NARROW);                                                   \
}
DW_DEFINE_WGRAD_WHOLE(wgrad_narrow, 1)
DW_DEFINE_WGRAD_WHOLE(wgrad_wide, 0)
#undef DW_DEFINE_WGRAD_WHOLE
#endif

/* part[r*SS + s] = the weight gradient's sum over output rows [oh_lo, oh_hi)
 * and columns [A, B) (B - A >= VL) of all N images, for geometric tap (r, s);
 * with masked loads and inputs no wider than the zero row, over every
 * column of those rows, which may be any (wgrad_narrow, wgrad_wide: returns
 * 1, whole rows).
 * Each output row's gradient vector is loaded once and meets all RR*SS
 * shifted input vectors: RR*SS independent accumulators. */
static __attribute__((noinline)) int DW_FIX(wgrad)(const dw_geom *g, const T *x, dws xs_n,
                                                   const T *grad, dws g_n, dws N, dws A,
                                                   dws B, dws oh_lo, dws oh_hi, T *part)
{
    const dws xs_h = g->xs_h, Wo = g->Wo, sh = g->sh, pt = g->pt, pl = g->pl;
    const dws dh = g->dh, dw = g->dw, n = B - A;
    const IVT mask = DW_LOAD(IVT, MASKS_MID - VL + (n % VL));
    VT acc[RR][SS];
    for (int r = 0; r < RR; r++)
        for (int s = 0; s < SS; s++)
            acc[r][s] = (VT){0};
#ifdef DW_MLOAD
    if (NM(zero_row_fits)(g)) {
        if (Wo <= VL)
            DW_FIX(wgrad_narrow)(g, x, xs_n, grad, g_n, N, A, B, oh_lo, oh_hi, part);
        else
            DW_FIX(wgrad_wide)(g, x, xs_n, grad, g_n, N, A, B, oh_lo, oh_hi, part);
        return 1;
    }
#endif
    for (dws img = 0; img < N; img++) {
        for (dws oh = oh_lo; oh < oh_hi; oh++) {
            const T *gp = grad + (img * g_n + oh * Wo + A);
            const T *xp = x + (img * xs_n + (oh * sh - pt) * xs_h + A - pl);
            dws i = 0;
            for (; i + VL <= n; i += VL) {
                const VT gv = DW_LOAD(VT, gp + i);
                _Pragma("GCC unroll 7")
                for (int r = 0; r < RR; r++) {
                    _Pragma("GCC unroll 7")
                    for (int s = 0; s < SS; s++)
                        acc[r][s] += gv * DW_LOAD(VT, xp + (r * dh * xs_h + s * dw + i));
                }
            }
            if (i < n) {
                /* the vector ending at B; the lanes counted above masked
                 * off the products (a bit mask: inf or NaN there must not
                 * leak in, as 0 * inf would) */
                const VT gv = DW_LOAD(VT, gp + n - VL);
                _Pragma("GCC unroll 7")
                for (int r = 0; r < RR; r++) {
                    _Pragma("GCC unroll 7")
                    for (int s = 0; s < SS; s++)
                        acc[r][s] += (VT)((IVT)(gv * DW_LOAD(VT, xp + (r * dh * xs_h + s * dw
                                                                        + n - VL)))
                                          & mask);
                }
            }
        }
    }
    DW_WGRAD_REDUCE(part, 0, SS);
    return 0;
}

#undef DW_FIX
#undef DW_FIX2
#undef DW_FIX3
#undef DW_FIXED_BLOCK
#undef DW_ROWS_BLOCK
#undef DW_ROWS_PLAIN
#undef DW_ROWS_MASKED
#undef DW_ROWS_NARROW
#undef DW_ROWS_ANY
#undef DW_TAP
#undef DW_WGRAD_TILE
#undef DW_WGRAD_ROWS
#undef DW_WGRAD_ALL_ROWS
#undef DW_WGRAD_REDUCE
#undef DW_WGRAD_PASS
#undef DW_WGRAD_PASSES
#undef DW_COLUMN_LANES
#undef DW_COLUMN_MASKS
#undef DW_COLUMN_MASKS_FIRST
#undef DW_MULTI_BLOCK
#undef DW_MULTI_PLAIN
#undef DW_MULTI_MASKED
#undef DW_DEFINE_FWD_MULTI_EDGE
#undef DW_FIXM
#undef DW_FIXM2
#undef DW_FIXM3
#undef DW_DEFINE_FWD_MULTI
#undef DW_COMPACT_BLOCK
#undef DW_DEFINE_FWD_MULTI_COMPACT
