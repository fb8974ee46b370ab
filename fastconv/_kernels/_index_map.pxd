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

from libc.string cimport memcpy, memset
from cython cimport floating

# Columns of the row table.
cdef enum:
    ROW_OFFSET = 0
    ROW_OH_LO = 1
    ROW_OH_HI = 2
    ROW_OW_LO = 3
    ROW_OW_HI = 4
    ROW_FIELDS = 5


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
    Py_ssize_t row_step, col_step   # elements between adjacent output rows / columns
    Py_ssize_t *table               # rows x ROW_FIELDS, built by build_row_table


cdef inline int init_index_map(IndexMap *m, tuple args, Py_ssize_t[:, ::1] table,
                               Py_ssize_t *shape, Py_ssize_t *strides, Py_ssize_t itemsize,
                               Py_ssize_t cols) except -1:
    """Fill m for a tensor of `shape` (N, C, H, W) with byte `strides` and an
    output of `cols` positions, and build the row table into `table` (an
    empty table leaves m.table NULL, for kernels that never read it).

    args: (R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
    groups, flip), the order of fastconv._params.ConvGeometry.index_args.
    """
    cdef Py_ssize_t R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups
    cdef bint flip
    R, S, Wo, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, flip = args
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
    m.row_step = stride_h * m.xs_h
    m.col_step = stride_w * m.xs_w
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


cdef inline void _walk_columns(floating *x_group, const Py_ssize_t *table,
                               Py_ssize_t n_rows, Py_ssize_t Wo,
                               Py_ssize_t out_row_step, Py_ssize_t out_col_step,
                               Py_ssize_t col_start, Py_ssize_t col_stop,
                               floating *tile, Py_ssize_t ld_tile, bint scatter) noexcept nogil:
    """The one walk over columns [col_start, col_stop) of a stretched matrix,
    row by row, in runs of columns that share an output row, so that each run
    is one bounds decision and one strided copy. gather (scatter False): copy
    the input elements into `tile` (n_rows x width, leading dimension
    ld_tile), zeros where the padding is. scatter: the adjoint, add each
    element of `tile` into the input element it came from, dropping padding.

    out_row_step / out_col_step: input elements between adjacent output rows /
    columns (stride_h * xs_h, stride_w * xs_w). Constant column steps 1 and 2
    (stride 2: downsampling layers) get their own loops, which the compiler
    vectorises, unlike the general step.
    """
    cdef Py_ssize_t r, col, oh, ow, run, ow_end, a, b, t, n
    cdef const Py_ssize_t *row
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
            # [a, b): the columns of this run whose tap lands inside the input
            if oh < row[ROW_OH_LO] or oh >= row[ROW_OH_HI]:
                a = ow_end
                b = ow_end
            else:
                a = row[ROW_OW_LO] if row[ROW_OW_LO] > ow else ow
                b = row[ROW_OW_HI] if row[ROW_OW_HI] < ow_end else ow_end
                if a > ow_end:
                    a = ow_end
                if b < a:
                    b = a
            n = b - a
            if not scatter:
                if a > ow:
                    memset(t_run, 0, (a - ow) * sizeof(floating))
                if ow_end > b:
                    memset(t_run + (b - ow), 0, (ow_end - b) * sizeof(floating))
            if n > 0:
                x_run = x_group + row[ROW_OFFSET] + oh * out_row_step + a * out_col_step
                if scatter:
                    if out_col_step == 1:
                        for t in range(n):
                            x_run[t] += t_run[a - ow + t]
                    elif out_col_step == 2:
                        for t in range(n):
                            x_run[2 * t] += t_run[a - ow + t]
                    else:
                        for t in range(n):
                            x_run[t * out_col_step] += t_run[a - ow + t]
                elif out_col_step == 1:
                    memcpy(t_run + (a - ow), x_run, n * sizeof(floating))
                elif out_col_step == 2:
                    for t in range(n):
                        t_run[a - ow + t] = x_run[2 * t]
                else:
                    for t in range(n):
                        t_run[a - ow + t] = x_run[t * out_col_step]
            t_run += run
            col += run


cdef inline void gather_columns(const floating *x_group, const Py_ssize_t *table,
                                Py_ssize_t n_rows, Py_ssize_t Wo,
                                Py_ssize_t out_row_step, Py_ssize_t out_col_step,
                                Py_ssize_t col_start, Py_ssize_t col_stop,
                                floating *tile, Py_ssize_t ld_tile) noexcept nogil:
    """Write columns [col_start, col_stop) of the stretched matrix into `tile`
    (n_rows x (col_stop - col_start), row-major with leading dimension
    ld_tile: several images' columns can sit side by side in one buffer)."""
    # the walk only reads x_group when gathering
    _walk_columns(<floating *> x_group, table, n_rows, Wo, out_row_step, out_col_step,
                  col_start, col_stop, tile, ld_tile, False)


cdef inline void scatter_add_columns(floating *x_group, const Py_ssize_t *table,
                                     Py_ssize_t n_rows, Py_ssize_t Wo,
                                     Py_ssize_t out_row_step, Py_ssize_t out_col_step,
                                     Py_ssize_t col_start, Py_ssize_t col_stop,
                                     const floating *tile, Py_ssize_t ld_tile) noexcept nogil:
    """The adjoint of gather_columns: add each element of `tile` (columns
    [col_start, col_stop) of a stretched matrix) into the input element it was
    gathered from; elements that came from the padding are dropped. Inputs
    shared by several columns (overlapping windows) receive the sum. Not safe
    for two threads on the same image: callers split work by image."""
    # the walk only reads the tile when scattering
    _walk_columns(x_group, table, n_rows, Wo, out_row_step, out_col_step,
                  col_start, col_stop, <floating *> tile, ld_tile, True)
