# The index map of im2col, shared by the stretch and mapped lowerings.
#
# Element (row, col) of the stretched matrix of one image and one group, with
# row = (c, kr, ks) and col = (oh, ow), is the input element
#     x[c, oh*sh + kr*dh - pad_top, ow*sw + ks*dw - pad_left]
# or zero where that falls in the padding. The map factors into
#   * a ROW TABLE, one entry per row: the element offset of (c, kr*dh - pad_top,
#     ks*dw - pad_left) and the range of output rows oh and output columns ow
#     for which that kernel tap lands inside the input (the padding bounds);
#   * a COLUMN MAP, (oh, ow) -> oh*sh*stride_h + ow*sw*stride_w, which is affine
#     and needs no table.
# Zero padding is therefore decided per (row, output row) by two comparisons
# and per run of output columns by a precomputed interval: no padded copy of
# the input, no per-element bounds test, and the input may have any strides.
#
# Other padding modes (reflect, replicate, circular, symmetric) reuse the same
# intervals: inside them nothing changes; a tap outside the input reads the
# element the mode folds its coordinate onto (fold_index) instead of a zero,
# and the adjoint (scatter) adds into that element. Only the few columns at
# the edges of a run, and the rows of the top/bottom padding, take that path.

from libc.string cimport memcpy, memset
from cython cimport floating

# Columns of the row table.
cdef enum:
    ROW_OFFSET = 0
    ROW_OH_LO = 1
    ROW_OH_HI = 2
    ROW_OW_LO = 3
    ROW_OW_HI = 4
    ROW_DH = 5          # kr*dh - pad_top: the tap's input row at output row 0
    ROW_DW = 6          # ks*dw - pad_left: its input column at output column 0
    ROW_FIELDS = 7

# Padding modes, in the order of fastconv._params.PADDING_MODES.
cdef enum:
    PAD_ZEROS = 0
    PAD_REFLECT = 1     # d c b | a b c d | c b a   (np.pad "reflect", PyTorch "reflect")
    PAD_REPLICATE = 2   # a a a | a b c d | d d d   (np.pad "edge")
    PAD_CIRCULAR = 3    # b c d | a b c d | a b c   (np.pad "wrap", SciPy boundary="wrap")
    PAD_SYMMETRIC = 4   # c b a | a b c d | d c b   (np.pad "symmetric", SciPy boundary="symm")


cdef inline Py_ssize_t fold_index(Py_ssize_t i, Py_ssize_t n, int mode) noexcept nogil:
    """The index in [0, n) that coordinate i (outside it) reads under a
    padding mode. Reflections repeat with period 2(n-1) (2n for symmetric),
    so padding wider than the input folds again, as np.pad does."""
    cdef Py_ssize_t period
    if mode == PAD_REPLICATE:
        return 0 if i < 0 else n - 1
    if mode == PAD_CIRCULAR:
        period = n
    elif mode == PAD_REFLECT:
        if n == 1:
            return 0
        period = 2 * (n - 1)
    else:
        period = 2 * n
    i = i % period      # C remainder: may be negative
    if i < 0:
        i += period
    if i >= n:
        i = period - i if mode == PAD_REFLECT else period - 1 - i
    return i


cdef inline Py_ssize_t _first_valid(Py_ssize_t shift, Py_ssize_t stride,
                                    Py_ssize_t limit) noexcept nogil:
    # smallest o >= 0 with o*stride + shift >= 0, capped at limit
    cdef Py_ssize_t o = 0
    if shift < 0:
        o = (-shift + stride - 1) // stride
    return o if o < limit else limit


cdef inline Py_ssize_t _end_valid(Py_ssize_t shift, Py_ssize_t stride,
                                  Py_ssize_t size, Py_ssize_t limit) noexcept nogil:
    # smallest o >= 0 with o*stride + shift >= size, capped at limit
    cdef Py_ssize_t o = 0
    if size - shift > 0:
        o = (size - shift + stride - 1) // stride
    return o if o < limit else limit


cdef inline void build_row_table(Py_ssize_t *table, Py_ssize_t channels,
                                 Py_ssize_t R, Py_ssize_t S,
                                 Py_ssize_t H, Py_ssize_t W,
                                 Py_ssize_t Ho, Py_ssize_t Wo,
                                 Py_ssize_t stride_h, Py_ssize_t stride_w,
                                 Py_ssize_t pad_top, Py_ssize_t pad_left,
                                 Py_ssize_t dil_h, Py_ssize_t dil_w,
                                 Py_ssize_t xs_c, Py_ssize_t xs_h,
                                 Py_ssize_t xs_w, bint flip) noexcept nogil:
    # flip (mathematical convolution) pairs weight row (c, kr, ks) with input
    # tap (R-1-kr, S-1-ks): the kernel is reversed in the map, not copied.
    cdef Py_ssize_t c, kr, ks, dh, dw, lo, hi
    cdef Py_ssize_t *row = table
    for c in range(channels):
        for kr in range(R):
            dh = ((R - 1 - kr) if flip else kr) * dil_h - pad_top
            for ks in range(S):
                dw = ((S - 1 - ks) if flip else ks) * dil_w - pad_left
                row[ROW_OFFSET] = c * xs_c + dh * xs_h + dw * xs_w
                row[ROW_DH] = dh
                row[ROW_DW] = dw
                lo = _first_valid(dh, stride_h, Ho)
                hi = _end_valid(dh, stride_h, H, Ho)
                row[ROW_OH_LO] = lo
                row[ROW_OH_HI] = hi if hi > lo else lo
                lo = _first_valid(dw, stride_w, Wo)
                hi = _end_valid(dw, stride_w, W, Wo)
                row[ROW_OW_LO] = lo
                row[ROW_OW_HI] = hi if hi > lo else lo
                row += ROW_FIELDS


cdef struct IndexMap:
    # Everything a kernel needs to walk the stretched matrix of one (image,
    # group) of an NCHW tensor through the index map, set up once per call by
    # init_index_map (one place instead of one copy per kernel).
    Py_ssize_t N, C, H, W           # the tensor the map reads (x) or adds into (grad_x)
    Py_ssize_t xs_n, xs_c, xs_h, xs_w   # its element strides (any sign, 0 allowed)
    Py_ssize_t groups, c_group      # channel groups; channels per group
    Py_ssize_t taps, rows           # R*S; rows of the stretched matrix of a group (c_group*taps)
    Py_ssize_t Ho, Wo, cols         # output positions (columns of the stretched matrix)
    Py_ssize_t stride_h, stride_w   # the convolution's strides
    Py_ssize_t row_step, col_step   # elements between adjacent output rows / columns
    int padding_mode                # PAD_ZEROS, PAD_REFLECT, ...
    Py_ssize_t *table               # rows x ROW_FIELDS, built by build_row_table


cdef inline int init_index_map(IndexMap *m, tuple args, Py_ssize_t[:, ::1] table,
                               Py_ssize_t *shape, Py_ssize_t *strides, Py_ssize_t itemsize,
                               Py_ssize_t cols) except -1:
    """Fill m for a tensor of `shape` (N, C, H, W) with byte `strides` and an
    output of `cols` positions, and build the row table into `table` (an
    empty table leaves m.table NULL, for kernels that never read it).

    args: (R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
    groups, flip, padding_mode), the order of
    fastconv._params.ConvGeometry.index_args.
    """
    cdef Py_ssize_t R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups
    cdef bint flip
    cdef int padding_mode
    R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, flip, padding_mode = args
    if padding_mode < PAD_ZEROS or padding_mode > PAD_SYMMETRIC:
        raise ValueError(f"unknown padding mode code {padding_mode}")
    m.N, m.C, m.H, m.W = shape[0], shape[1], shape[2], shape[3]
    m.xs_n, m.xs_c = strides[0] // itemsize, strides[1] // itemsize
    m.xs_h, m.xs_w = strides[2] // itemsize, strides[3] // itemsize
    m.groups = groups
    m.c_group = m.C // groups
    m.taps = R * S
    m.rows = m.c_group * m.taps
    m.Wo = Wo
    m.cols = cols
    m.Ho = cols // Wo if Wo > 0 else 0
    m.stride_h, m.stride_w = stride_h, stride_w
    m.row_step = stride_h * m.xs_h
    m.col_step = stride_w * m.xs_w
    m.padding_mode = padding_mode
    m.table = NULL  # no table: for kernels that read the input in place (1x1)
    if table.shape[0] == 0 or m.rows == 0:
        return 0
    if table.shape[0] < m.rows or table.shape[1] != ROW_FIELDS:
        raise ValueError(f"row table of shape ({table.shape[0]}, {table.shape[1]}) is too small for "
                         f"{m.rows} rows of {ROW_FIELDS} fields")
    m.table = &table[0, 0]
    build_row_table(m.table, m.c_group, R, S, m.H, m.W, m.Ho, Wo, stride_h, stride_w,
                    pad_top, pad_left, dil_h, dil_w, m.xs_c, m.xs_h, m.xs_w, flip)
    return 0


cdef inline void _fold_columns(const IndexMap *m, floating *x_line, Py_ssize_t dw,
                               Py_ssize_t ow_lo, Py_ssize_t ow_hi, floating *t_run,
                               bint scatter) noexcept nogil:
    """Output columns [ow_lo, ow_hi) of one row of a stretched matrix whose
    taps fall in the padding: each reads (or, scattering, adds into) the
    element of input row x_line (its column 0) that the padding mode folds
    it onto; dw is the tap's column offset (ROW_DW)."""
    cdef Py_ssize_t t
    cdef floating *x_elem
    for t in range(ow_hi - ow_lo):
        x_elem = x_line + fold_index((ow_lo + t) * m.stride_w + dw, m.W, m.padding_mode) * m.xs_w
        if scatter:
            x_elem[0] += t_run[t]
        else:
            t_run[t] = x_elem[0]


cdef inline void _walk_columns(const IndexMap *m, floating *x_group,
                               const Py_ssize_t *table, Py_ssize_t n_rows,
                               Py_ssize_t col_start, Py_ssize_t col_stop,
                               floating *tile, Py_ssize_t ld_tile, bint scatter,
                               bint folded) noexcept nogil:
    """The one walk over columns [col_start, col_stop) of a stretched matrix,
    row by row, in runs of columns that share an output row, so that each run
    is one bounds decision and one strided copy. gather (scatter False): copy
    the input elements into `tile` (n_rows x width, leading dimension
    ld_tile), zeros where the padding is. scatter: the adjoint, add each
    element of `tile` into the input element it came from, dropping padding.
    folded (a padding mode other than zeros): a tap in the padding reads
    (adds into) the element fold_index maps it to.

    scatter and folded are constants at every call (gather_columns,
    scatter_add_columns), so the compiler makes one copy of the loop per
    combination: the zero-padded walk carries no test of the mode (a single
    loop testing it per run gathered 1.1-1.3x slower on ResNet layers).

    table: rows of the row table (m.table, or a slice of it). Constant column
    steps 1 and 2 (stride 2: downsampling layers) get their own loops, which
    the compiler vectorises, unlike the general step.
    """
    # the map's fields in locals: the stores into the tile may alias *m for
    # the compiler (extensions build with -fno-strict-aliasing), and reloading
    # them after every store made the walk 1.4-1.9x slower (im2col, 1 thread)
    cdef Py_ssize_t Wo = m.Wo, col_step = m.col_step, row_step = m.row_step
    cdef Py_ssize_t r, col, oh, ow, run, ow_end, a, b, t, n, ih
    cdef bint inside_rows
    cdef const Py_ssize_t *row
    cdef floating *x_line
    cdef floating *x_run
    cdef floating *t_run
    for r in range(n_rows):
        row = table + r * ROW_FIELDS
        t_run = tile + r * ld_tile
        col = col_start
        while col < col_stop:
            oh = col // Wo
            ow = col - oh * Wo
            run = Wo - ow
            if run > col_stop - col:
                run = col_stop - col
            ow_end = ow + run
            # x_line: where output column 0 of this run's tap reads
            x_line = x_group + row[ROW_OFFSET] + oh * row_step
            inside_rows = row[ROW_OH_LO] <= oh < row[ROW_OH_HI]
            # [a, b): the columns of this run whose tap lands inside the input
            if not inside_rows and not folded:
                a = ow_end
                b = ow_end
            else:
                if not inside_rows:
                    # the input row the padding mode folds this one onto
                    ih = oh * m.stride_h + row[ROW_DH]
                    x_line += (fold_index(ih, m.H, m.padding_mode) - ih) * m.xs_h
                a = row[ROW_OW_LO] if row[ROW_OW_LO] > ow else ow
                b = row[ROW_OW_HI] if row[ROW_OW_HI] < ow_end else ow_end
                if a > ow_end:
                    a = ow_end
                if b < a:
                    b = a
            n = b - a
            if not folded:
                if not scatter:
                    if a > ow:
                        memset(t_run, 0, (a - ow) * sizeof(floating))
                    if ow_end > b:
                        memset(t_run + (b - ow), 0, (ow_end - b) * sizeof(floating))
            elif a > ow or ow_end > b:  # the columns in the padding, one folded element each
                x_line -= row[ROW_DW] * m.xs_w   # column 0 of the input row
                _fold_columns(m, x_line, row[ROW_DW], ow, a, t_run, scatter)
                _fold_columns(m, x_line, row[ROW_DW], b, ow_end, t_run + (b - ow), scatter)
                x_line += row[ROW_DW] * m.xs_w
            if n > 0:
                x_run = x_line + a * col_step
                if scatter:
                    if col_step == 1:
                        for t in range(n):
                            x_run[t] += t_run[a - ow + t]
                    elif col_step == 2:
                        for t in range(n):
                            x_run[2 * t] += t_run[a - ow + t]
                    else:
                        for t in range(n):
                            x_run[t * col_step] += t_run[a - ow + t]
                elif col_step == 1:
                    memcpy(t_run + (a - ow), x_run, n * sizeof(floating))
                elif col_step == 2:
                    for t in range(n):
                        t_run[a - ow + t] = x_run[2 * t]
                else:
                    for t in range(n):
                        t_run[a - ow + t] = x_run[t * col_step]
            t_run += run
            col += run


cdef inline void gather_columns(const IndexMap *m, const floating *x_group,
                                const Py_ssize_t *table, Py_ssize_t n_rows,
                                Py_ssize_t col_start, Py_ssize_t col_stop,
                                floating *tile, Py_ssize_t ld_tile) noexcept nogil:
    """Write columns [col_start, col_stop) of the stretched matrix (rows
    `table`, n_rows of them, of the map m) into `tile` (n_rows x
    (col_stop - col_start), row-major with leading dimension ld_tile: several
    images' columns can sit side by side in one buffer)."""
    # the walk only reads x_group when gathering
    if m.padding_mode == PAD_ZEROS:
        _walk_columns(m, <floating *> x_group, table, n_rows, col_start, col_stop, tile,
                      ld_tile, False, False)
    else:
        _walk_columns(m, <floating *> x_group, table, n_rows, col_start, col_stop, tile,
                      ld_tile, False, True)


cdef inline void scatter_add_columns(const IndexMap *m, floating *x_group,
                                     const Py_ssize_t *table, Py_ssize_t n_rows,
                                     Py_ssize_t col_start, Py_ssize_t col_stop,
                                     const floating *tile, Py_ssize_t ld_tile) noexcept nogil:
    """The adjoint of gather_columns: add each element of `tile` (columns
    [col_start, col_stop) of a stretched matrix) into the input element it was
    gathered from; elements that came from zero padding are dropped. Inputs
    shared by several columns (overlapping windows, or folded padding) receive
    the sum. Not safe for two threads on the same channel plane: callers split
    work by image or channel."""
    # the walk only reads the tile when scattering
    if m.padding_mode == PAD_ZEROS:
        _walk_columns(m, x_group, table, n_rows, col_start, col_stop, <floating *> tile,
                      ld_tile, True, False)
    else:
        _walk_columns(m, x_group, table, n_rows, col_start, col_stop, <floating *> tile,
                      ld_tile, True, True)
