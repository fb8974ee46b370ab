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


cdef inline void gather_columns(const floating *x_group, const Py_ssize_t *table,
                                Py_ssize_t n_rows, Py_ssize_t Wo,
                                Py_ssize_t out_row_step, Py_ssize_t out_col_step,
                                Py_ssize_t col_start, Py_ssize_t col_stop,
                                floating *tile, Py_ssize_t ld_tile) noexcept nogil:
    """Write columns [col_start, col_stop) of the stretched matrix into `tile`
    (n_rows x (col_stop - col_start), row-major with leading dimension
    ld_tile: several images' columns can sit side by side in one buffer).

    out_row_step / out_col_step are the input-element steps between adjacent
    output rows / columns (stride_h * xs_h, stride_w * xs_w). The columns are
    walked in runs that share an output row, so each run is one bounds
    decision and one strided copy.
    """
    cdef Py_ssize_t r, col, oh, ow, run, ow_end, a, b, t
    cdef const Py_ssize_t *row
    cdef const floating *src
    cdef floating *dst
    for r in range(n_rows):
        row = table + r * ROW_FIELDS
        dst = tile + r * ld_tile
        col = col_start
        while col < col_stop:
            oh = col // Wo
            ow = col - oh * Wo
            run = Wo - ow
            if run > col_stop - col:
                run = col_stop - col
            ow_end = ow + run
            if oh < row[ROW_OH_LO] or oh >= row[ROW_OH_HI]:
                memset(dst, 0, run * sizeof(floating))
            else:
                a = row[ROW_OW_LO] if row[ROW_OW_LO] > ow else ow
                b = row[ROW_OW_HI] if row[ROW_OW_HI] < ow_end else ow_end
                if a > ow_end:
                    a = ow_end
                if b < a:
                    b = a
                if a > ow:
                    memset(dst, 0, (a - ow) * sizeof(floating))
                if b > a:
                    src = x_group + row[ROW_OFFSET] + oh * out_row_step + a * out_col_step
                    if out_col_step == 1:
                        memcpy(dst + (a - ow), src, (b - a) * sizeof(floating))
                    elif out_col_step == 2:
                        # stride 2 (downsampling layers): a constant step the
                        # compiler can vectorize, unlike the general case
                        for t in range(b - a):
                            dst[a - ow + t] = src[2 * t]
                    else:
                        for t in range(b - a):
                            dst[a - ow + t] = src[t * out_col_step]
                if ow_end > b:
                    memset(dst + (b - ow), 0, (ow_end - b) * sizeof(floating))
            dst += run
            col += run


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
    cdef Py_ssize_t r, col, oh, ow, run, ow_end, a, b, t
    cdef const Py_ssize_t *row
    cdef floating *dst
    cdef const floating *src
    for r in range(n_rows):
        row = table + r * ROW_FIELDS
        src = tile + r * ld_tile
        col = col_start
        while col < col_stop:
            oh = col // Wo
            ow = col - oh * Wo
            run = Wo - ow
            if run > col_stop - col:
                run = col_stop - col
            ow_end = ow + run
            if row[ROW_OH_LO] <= oh < row[ROW_OH_HI]:
                a = row[ROW_OW_LO] if row[ROW_OW_LO] > ow else ow
                b = row[ROW_OW_HI] if row[ROW_OW_HI] < ow_end else ow_end
                if b > a:
                    dst = x_group + row[ROW_OFFSET] + oh * out_row_step + a * out_col_step
                    # constant steps (stride 1 and 2) vectorize; see gather_columns
                    if out_col_step == 1:
                        for t in range(b - a):
                            dst[t] += src[a - ow + t]
                    elif out_col_step == 2:
                        for t in range(b - a):
                            dst[2 * t] += src[a - ow + t]
                    else:
                        for t in range(b - a):
                            dst[t * out_col_step] += src[a - ow + t]
            src += run
            col += run
