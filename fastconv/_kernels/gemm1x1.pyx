# 1x1 convolution with stride 1 and no padding needs no lowering: each
# channel plane of the image already is a row of the stretched matrix, so
# out[n] (K x H*W) = weight (K x C, per group) @ x[n] viewed as (C x H*W),
# with the channel stride of x as GEMM's leading dimension. The caller
# guarantees every channel plane is contiguous (xs_w == 1, xs_h == W) and,
# with several channels per group, that planes do not overlap (xs_c >= H*W).

from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._blas cimport gemm_rowmajor
from fastconv._kernels._output cimport start_block


def conv2d_gemm1x1(const floating[:, :, :, :] x,
                   const floating[:, ::1] weight,
                   const floating[::1] bias,
                   floating[:, :, ::1] out,
                   Py_ssize_t groups, int num_threads):
    """out[n] = weight @ x[n].reshape(C, H*W) (+ bias); no workspace."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Py_ssize_t K = weight.shape[0], cols = out.shape[2]
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, n, g
    cdef floating *block
    cdef floating beta
    # With one channel per group the channel stride never steps inside a GEMM
    # (it may even be 0 for a broadcast input), but BLAS still wants ld >= cols.
    cdef int ld_x = <int> (xs_c if c_group > 1 else cols)

    with nogil:
        for item in prange(N * groups, schedule="dynamic", num_threads=num_threads):
            n = item // groups
            g = item - n * groups
            block = &out[n, g * k_group, 0]
            beta = start_block(block, cols, k_group, cols,
                               bias_ptr + g * k_group if bias_ptr != NULL else NULL)
            gemm_rowmajor(<int> k_group, <int> cols, <int> c_group,
                          &weight[g * k_group, 0], <int> c_group,
                          x0 + n * xs_n + g * c_group * xs_c, ld_x,
                          beta, block, <int> cols)
