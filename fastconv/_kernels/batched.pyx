# Explicit stretching of several images per GEMM. When an image has few
# output positions (a 7x7 map has 49), its GEMM is too thin for BLAS's
# micro-kernel: N = 49 columns ran 1.4x slower than the same work as one
# GEMM of 4 x 49 columns (bench/, ResNet-50 conv5). So the stretched matrices
# of `images` consecutive images are gathered side by side into one buffer
# and multiplied at once. The product's columns are image-major, unlike the
# output (image, channel, position), so it lands in a per-thread scratch block
# and is copied out: K*images*Ho*Wo copies against 2*K*C*R*S*images*Ho*Wo
# FLOPs of GEMM.

from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blas cimport gemm_rowmajor
from fastconv._kernels._images cimport gather_images, unpack_rows
from fastconv._kernels._index_map cimport build_row_table, ROW_FIELDS
from fastconv._kernels._output cimport start_block

import numpy as np


def conv2d_batched(const floating[:, :, :, :] x,
                   const floating[:, ::1] weight,
                   const floating[::1] bias,
                   floating[:, :, ::1] out,
                   floating[:, ::1] workspace,
                   floating[:, ::1] product,
                   Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                   Py_ssize_t stride_h, Py_ssize_t stride_w,
                   Py_ssize_t pad_top, Py_ssize_t pad_left,
                   Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, Py_ssize_t images, bint flip,
                   int num_threads):
    """Same contract as conv2d_stretch, with `images` images per GEMM.

    workspace: (num_threads, >= C/groups*R*S * images*Ho*Wo), the stretched
    matrices. product: (num_threads, >= K/groups * images*Ho*Wo), the GEMM
    result before it is copied into `out`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], n_rows = weight.shape[1]
    cdef Py_ssize_t cols = out.shape[2], Ho = cols // Wo
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t n_blocks = (N + images - 1) // images
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, first, count, g, width
    cdef floating *buf
    cdef floating *block
    cdef floating beta

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        for item in prange(n_blocks * groups, schedule="dynamic", num_threads=num_threads):
            first = (item // groups) * images
            g = item % groups
            count = N - first
            if count > images:
                count = images
            width = count * cols
            buf = &workspace[threadid(), 0]
            block = &product[threadid(), 0]
            gather_images(x0 + first * xs_n + g * c_group * xs_c, xs_n, count, &table[0, 0],
                          n_rows, Wo, stride_h * xs_h, stride_w * xs_w, 0, cols, buf)
            beta = start_block(block, width, k_group, width,
                               bias_ptr + g * k_group if bias_ptr != NULL else NULL)
            gemm_rowmajor(<int> k_group, <int> width, <int> n_rows,
                          &weight[g * k_group, 0], <int> n_rows,
                          buf, <int> width, beta, block, <int> width)
            unpack_rows(&out[first, g * k_group, 0], block, k_group, count, K * cols, cols, cols)
