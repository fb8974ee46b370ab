# col2im: the adjoint of im2col. Every element of a stretched matrix is added
# back into the input element it was gathered from (through the same index
# map, _index_map.pxd), so overlapping windows sum and padding is dropped.
# It is the second half of an input gradient: grad_x = col2im(W^T @ grad_y).

from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._index_map cimport build_row_table, scatter_add_columns, ROW_FIELDS

import numpy as np


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
           Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_top, Py_ssize_t pad_left,
           Py_ssize_t dil_h, Py_ssize_t dil_w, int num_threads):
    """x[n] += col2im(cols[n]); cols (N, C*R*S, Ho*Wo) and x (N, C, H, W),
    both C-contiguous. One image per thread: no two threads ever add into the
    same element."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n_rows = cols.shape[1], n_cols = cols.shape[2], Ho = n_cols // Wo
    cdef Py_ssize_t xs_n = C * H * W, xs_c = H * W, xs_h = W, xs_w = 1
    cdef Py_ssize_t cs_n = n_rows * n_cols
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *c0 = &cols[0, 0, 0]
    cdef Py_ssize_t n
    with nogil:
        build_row_table(&table[0, 0], C, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, False)
        for n in prange(N, schedule="static", num_threads=num_threads):
            scatter_add_columns(x0 + n * xs_n, &table[0, 0], n_rows, Wo,
                                stride_h * xs_h, stride_w * xs_w, 0, n_cols,
                                c0 + n * cs_n, n_cols)
