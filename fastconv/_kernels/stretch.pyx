# Explicit stretching: the whole stretched (im2col) matrix of C/groups*R*S
# rows by Ho*Wo columns. `im2col` builds it for a batch (the fully connected
# view of a convolution); `conv2d_stretch` builds it per image and group in a
# per-thread buffer and does one GEMM per image and group.

from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._index_map cimport build_row_table, gather_columns, ROW_FIELDS

import numpy as np

from fastconv._kernels.mapped import conv2d_mapped


def conv2d_stretch(x, weight, bias, out, workspace, Py_ssize_t R, Py_ssize_t S,
                   Py_ssize_t Wo, Py_ssize_t stride_h, Py_ssize_t stride_w,
                   Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t dil_h,
                   Py_ssize_t dil_w, Py_ssize_t groups, bint flip, int num_threads):
    """out[n] (K x Ho*Wo) = weight (K x C/g*R*S, per group) @ im2col(x[n]) (+ bias).

    x: (N, C, H, W), any strides. weight: (K, C/groups*R*S). bias: (K,) or
    empty. out: (N, K, Ho*Wo). workspace: (num_threads, >= C/groups*R*S*Ho*Wo).
    flip: reverse the kernel spatially (through the index map, not a copy).

    The whole stretched matrix is a single tile of Ho*Wo columns: the tiled
    kernel then gathers each image's (and group's) entire im2col matrix into
    the buffer and does one GEMM per image and group, which is exactly this
    lowering. Keeping one loop means both lowerings share every line that
    computes a result.
    """
    conv2d_mapped(x, weight, bias, out, workspace, R, S, Wo, stride_h, stride_w,
                  pad_top, pad_left, dil_h, dil_w, groups, out.shape[2], flip, num_threads)


def im2col(const floating[:, :, :, :] x, floating[:, :, ::1] cols,
           Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_top, Py_ssize_t pad_left,
           Py_ssize_t dil_h, Py_ssize_t dil_w, int num_threads):
    """cols[n] (C*R*S x Ho*Wo) = the stretched matrix of x[n]; x any strides."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n_rows = cols.shape[1], n_cols = cols.shape[2], Ho = n_cols // Wo
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef Py_ssize_t n
    with nogil:
        build_row_table(&table[0, 0], C, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, False)
        for n in prange(N, schedule="static", num_threads=num_threads):
            gather_columns(x0 + n * xs_n, &table[0, 0], n_rows, Wo,
                           stride_h * xs_h, stride_w * xs_w, 0, n_cols, &cols[n, 0, 0], n_cols)
