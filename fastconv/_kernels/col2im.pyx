# col2im: the adjoint of im2col. Every element of a stretched matrix is added
# back into the input element it was gathered from (through the same index
# map, _index_map.pxd), so overlapping windows sum and padding is dropped.
# It is the second half of an input gradient: grad_x = col2im(W^T @ grad_y).

from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._index_map cimport IndexMap, init_index_map, scatter_add_columns


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, Py_ssize_t[:, ::1] table,
           tuple index_args, int num_threads):
    """x[n] += col2im(cols[n]); cols (N, C*R*S, Ho*Wo) and x (N, C, H, W),
    both C-contiguous. One image per thread: no two threads ever add into the
    same element. index_args: ConvGeometry.index_args (groups 1, no flip)."""
    cdef IndexMap m
    init_index_map(&m, index_args, table, &x.shape[0], &x.strides[0], sizeof(floating),
                   cols.shape[2])
    cdef Py_ssize_t n
    for n in prange(m.N, schedule="static", num_threads=num_threads, nogil=True):
        scatter_add_columns(&m, &x[n, 0, 0, 0], m.table, m.rows, 0, m.cols, &cols[n, 0, 0],
                            m.cols)
