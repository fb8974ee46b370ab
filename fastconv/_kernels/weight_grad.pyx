# The weight gradient of a convolution:
#     grad_w (K x C/groups*R*S, per group) = sum over n of grad_y[n] @ im2col(x[n])^T
# The stretched matrix is gathered a tile of columns at a time (all Ho*Wo
# columns: the stretch lowering; fewer: mapped) and each tile's GEMM adds its
# share of the sum, grad_y[n][:, tile] @ tile^T, into an accumulator.
#
# Every thread adds into its own accumulator (thread 0 into grad_w itself),
# and the accumulators are summed into grad_w at the end in thread order.
# Work items (image, group, tile) are dealt to threads by a static schedule,
# so which thread adds which term, and the order of the final sum, depend only
# on the thread count: the result is bitwise reproducible for a given count.
#
# Small images make shallow GEMMs (depth Ho*Wo: 49 or 196 on ResNet's last
# stages) that read and write the whole accumulator for little work; several
# images' stretched matrices are then gathered side by side and their
# gradients packed alike, so that one GEMM sums over all their columns.

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy

from fastconv._kernels._blas cimport gemm_rowmajor_op
from fastconv._kernels._index_map cimport build_row_table, gather_columns, ROW_FIELDS

import numpy as np


def conv2d_weight_grad(const floating[:, :, :, :] x,
                       const floating[:, :, ::1] grad,
                       floating[:, ::1] grad_w,
                       floating[:, ::1] accumulators,
                       floating[:, ::1] workspace,
                       floating[:, ::1] packed,
                       Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left,
                       Py_ssize_t dil_h, Py_ssize_t dil_w,
                       Py_ssize_t groups, Py_ssize_t tile_cols, Py_ssize_t images,
                       bint flip, bint pointwise, int num_threads):
    """grad_w (K, C/groups*R*S), zeroed by the caller, = the weight gradient
    for input x (N, C, H, W; any strides) and output gradient grad (N, K, Ho*Wo).

    accumulators: (num_threads - 1, K*C/groups*R*S), zeroed.
    workspace: (num_threads, >= C/groups*R*S*tile_cols*images).
    images > 1 (only with tile_cols = Ho*Wo): images per GEMM, with packed
    (num_threads, >= K/groups*Ho*Wo*images) holding their gradients.
    pointwise (1x1, stride 1, no padding; x's planes contiguous): the input
    is its own stretched matrix and is read in place, no gather.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_w.shape[0], n_rows = grad_w.shape[1]
    cdef Py_ssize_t cols = grad.shape[2], Ho = cols // Wo
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t n_tiles = (cols + tile_cols - 1) // tile_cols
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef Py_ssize_t size = K * n_rows, chunk = 4096
    cdef Py_ssize_t n_batches = (N + images - 1) // images
    cdef Py_ssize_t item, n, g, tile, start, width, t, i, lo, hi, thread, count, k
    cdef const floating *x_group
    cdef const floating *columns
    cdef floating *buf
    cdef floating *pack
    cdef floating *acc
    cdef floating *total
    cdef int ld_columns

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        for item in prange(n_batches * groups * n_tiles, schedule="static",
                           num_threads=num_threads):
            n = item // (groups * n_tiles)
            g = (item // n_tiles) % groups
            tile = item % n_tiles
            start = tile * tile_cols
            width = cols - start
            if width > tile_cols:
                width = tile_cols
            thread = threadid()
            acc = &grad_w[0, 0] if thread == 0 else &accumulators[thread - 1, 0]
            if images > 1:
                n = n * images
                count = N - n if N - n < images else images
                buf = &workspace[thread, 0]
                pack = &packed[thread, 0]
                for i in range(count):
                    gather_columns(x0 + (n + i) * xs_n + g * c_group * xs_c, &table[0, 0],
                                   n_rows, Wo, stride_h * xs_h, stride_w * xs_w, 0, cols,
                                   buf + i * cols, count * cols)
                for k in range(k_group):
                    for i in range(count):
                        memcpy(pack + (k * count + i) * cols, &grad[n + i, g * k_group + k, 0],
                               cols * sizeof(floating))
                gemm_rowmajor_op(False, True, <int> k_group, <int> n_rows, <int> (count * cols),
                                 pack, <int> (count * cols), buf, <int> (count * cols), 1.0,
                                 acc + g * k_group * n_rows, <int> n_rows)
                continue
            x_group = x0 + n * xs_n + g * c_group * xs_c
            if pointwise:
                columns = x_group + start
                ld_columns = <int> xs_c
            else:
                buf = &workspace[thread, 0]
                gather_columns(x_group, &table[0, 0], n_rows, Wo, stride_h * xs_h,
                               stride_w * xs_w, start, start + width, buf, width)
                columns = buf
                ld_columns = <int> width
            gemm_rowmajor_op(False, True, <int> k_group, <int> n_rows, <int> width,
                             &grad[n, g * k_group, start], <int> cols,
                             columns, ld_columns, 1.0, acc + g * k_group * n_rows,
                             <int> n_rows)
        # the reduction, split over chunks of grad_w; each element sums the
        # accumulators in thread order
        if accumulators.shape[0] > 0:
            total = &grad_w[0, 0]
            for lo in prange(0, size, chunk, schedule="static", num_threads=num_threads):
                hi = lo + chunk if lo + chunk < size else size
                for t in range(accumulators.shape[0]):
                    acc = &accumulators[t, 0]
                    for i in range(lo, hi):
                        total[i] += acc[i]
