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
from fastconv._kernels._index_map cimport IndexMap, init_index_map
from fastconv._kernels._output cimport start_block


def conv2d_batched(const floating[:, :, :, :] x,
                   const floating[:, ::1] weight,
                   const floating[::1] bias,
                   floating[:, :, ::1] out,
                   Py_ssize_t[:, ::1] table,
                   floating[:, ::1] workspace,
                   floating[:, ::1] product,
                   tuple index_args, Py_ssize_t images, int num_threads):
    """The contract of conv2d_mapped (mapped.pyx), with `images` images per GEMM.

    workspace: (num_threads, >= C/groups*R*S * images*Ho*Wo), the stretched
    matrices. product: (num_threads, >= K/groups * images*Ho*Wo), the GEMM
    result before it is copied into `out`.
    """
    cdef IndexMap m
    init_index_map(&m, index_args, table, &x.shape[0], &x.strides[0], sizeof(floating),
                   out.shape[2])
    cdef Py_ssize_t K = weight.shape[0], k_group = K // m.groups, cols = m.cols
    cdef Py_ssize_t n_blocks = (m.N + images - 1) // images
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, first, count, g, width
    cdef floating *buf
    cdef floating *block
    cdef floating beta

    for item in prange(n_blocks * m.groups, schedule="dynamic", num_threads=num_threads,
                       nogil=True):
        first = (item // m.groups) * images
        g = item % m.groups
        count = m.N - first
        if count > images:
            count = images
        width = count * cols
        buf = &workspace[threadid(), 0]
        block = &product[threadid(), 0]
        gather_images(&m, &x[first, g * m.c_group, 0, 0], count, 0, cols, buf)
        beta = start_block(block, width, k_group, width,
                           bias_ptr + g * k_group if bias_ptr != NULL else NULL)
        gemm_rowmajor(<int> k_group, <int> width, <int> m.rows,
                      &weight[g * k_group, 0], <int> m.rows,
                      buf, <int> width, beta, block, <int> width)
        unpack_rows(&out[first, g * k_group, 0], block, k_group, count, K * cols, cols, cols)
