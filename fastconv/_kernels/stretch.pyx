# Explicit-stretching lowering: for each (image, group), build the whole
# stretched (im2col) matrix of C/groups*R*S rows by Ho*Wo columns in a
# per-thread buffer, then one GEMM writes the output block.
#
# Work items are (image, group) pairs spread over OpenMP threads; the caller
# keeps BLAS single-threaded while num_threads > 1 (and lets BLAS thread when
# there are fewer items than threads, calling with num_threads=1).

from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blas cimport gemm_rowmajor
from fastconv._kernels._index_map cimport build_row_table, gather_columns, ROW_FIELDS
from fastconv._kernels._output cimport start_block

import numpy as np


def conv2d_stretch(const floating[:, :, :, :] x,
                   const floating[:, ::1] weight,
                   const floating[::1] bias,
                   floating[:, :, ::1] out,
                   floating[:, ::1] workspace,
                   Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                   Py_ssize_t stride_h, Py_ssize_t stride_w,
                   Py_ssize_t pad_top, Py_ssize_t pad_left,
                   Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, bint flip, int num_threads):
    """out[n] (K x Ho*Wo) = weight (K x C/g*R*S, per group) @ im2col(x[n]) (+ bias).

    x: (N, C, H, W), any strides. weight: (K, C/groups*R*S). bias: (K,) or
    empty. out: (N, K, Ho*Wo). workspace: (num_threads, >= C/groups*R*S*Ho*Wo).
    flip: reverse the kernel spatially (through the index map, not a copy).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], n_rows = weight.shape[1]
    cdef Py_ssize_t cols = out.shape[2], Ho = cols // Wo
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, n, g
    cdef floating *buf
    cdef floating *block
    cdef floating beta

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        for item in prange(N * groups, schedule="dynamic", num_threads=num_threads):
            n = item // groups
            g = item - n * groups
            buf = &workspace[threadid(), 0]
            gather_columns(x0 + n * xs_n + g * c_group * xs_c, &table[0, 0],
                           n_rows, Wo, stride_h * xs_h, stride_w * xs_w,
                           0, cols, buf)
            block = &out[n, g * k_group, 0]
            beta = start_block(block, cols, k_group, cols,
                               bias_ptr + g * k_group if bias_ptr != NULL else NULL)
            gemm_rowmajor(<int> k_group, <int> cols, <int> n_rows,
                          &weight[g * k_group, 0], <int> n_rows,
                          buf, <int> cols, beta, block, <int> cols)


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
                           stride_h * xs_h, stride_w * xs_w, 0, n_cols, &cols[n, 0, 0])
