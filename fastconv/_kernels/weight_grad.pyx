# The weight gradient of a convolution:
#     grad_w (K x C/groups*R*S, per group) = sum over n of grad_y[n] @ im2col(x[n])^T
# The stretched matrix is gathered a tile of columns at a time (all Ho*Wo
# columns: the stretch lowering; fewer: mapped) and each tile's GEMM adds its
# share of the sum, grad_y[n][:, tile] @ tile^T, into an accumulator.
#
# Two ways to share the work between threads, chosen by the planner:
# * by images (filter_blocks = 1): every thread adds its images' terms into
#   its own accumulator (thread 0 into grad_w itself), and the accumulators are
#   summed into grad_w at the end in thread order. Work items (images, group,
#   tile) are dealt by a static schedule, so which thread adds which term, and
#   the order of the final sum, depend only on the thread count: the result
#   is bitwise reproducible for a given count.
# * by filters (filter_blocks > 1), when an accumulator would be larger than
#   the stretched matrices of the whole batch (many filters, small maps:
#   ResNet-50's 7x7 layers): each thread computes whole rows of grad_w over
#   all images, gathering the columns itself. No accumulators, no reduction,
#   and the same bits for any thread count; the gather is repeated per thread.
#
# Small images make shallow GEMMs (depth Ho*Wo: 49 or 196 on ResNet's last
# stages) that read and write the whole accumulator for little work; several
# images' stretched matrices are then gathered side by side and their
# gradients packed alike, so that one GEMM sums over all their columns.

from cython cimport floating
from cython.parallel cimport prange, threadid
from fastconv._kernels._blas cimport gemm_rowmajor_op
from fastconv._kernels._images cimport gather_images, pack_rows
from fastconv._kernels._index_map cimport build_row_table, ROW_FIELDS

import numpy as np


cdef inline void _add_terms(const floating *x_group, Py_ssize_t xs_n, Py_ssize_t xs_c,
                            const floating *grad_rows, Py_ssize_t grad_image, Py_ssize_t cols,
                            const Py_ssize_t *table, Py_ssize_t n_rows, Py_ssize_t Wo,
                            Py_ssize_t row_step, Py_ssize_t col_step,
                            Py_ssize_t n, Py_ssize_t count, Py_ssize_t start, Py_ssize_t width,
                            Py_ssize_t filters, bint pointwise,
                            floating *buf, floating *pack, floating *out) noexcept nogil:
    """out (filters x n_rows, leading dimension n_rows) += the gradient rows
    starting at grad_rows (one per filter, images n..n+count-1, columns
    [start, start+width)) times the transposed stretched columns they meet.
    Several images (count > 1, whole images only) are laid side by side in
    buf and pack so that one GEMM sums over all their columns."""
    cdef Py_ssize_t depth = count * width
    cdef const floating *a
    cdef const floating *b
    cdef Py_ssize_t lda, ldb
    if pointwise:  # the input is its own stretched matrix (count is 1)
        b = x_group + n * xs_n + start
        ldb = xs_c
    else:
        gather_images(x_group + n * xs_n, xs_n, count, table, n_rows, Wo, row_step, col_step,
                      start, width, buf)
        b = buf
        ldb = depth
    if count == 1:
        a = grad_rows + n * grad_image + start
        lda = cols
    else:
        pack_rows(pack, grad_rows + n * grad_image + start, filters, count, grad_image, cols,
                  width)
        a = pack
        lda = depth
    gemm_rowmajor_op(False, True, <int> filters, <int> n_rows, <int> depth, a, <int> lda,
                     b, <int> ldb, 1.0, out, <int> n_rows)


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
                       Py_ssize_t filter_blocks, bint flip, bint pointwise, int num_threads):
    """grad_w (K, C/groups*R*S), zeroed by the caller, = the weight gradient
    for input x (N, C, H, W; any strides) and output gradient grad (N, K, Ho*Wo).

    accumulators: (num_threads - 1, K*C/groups*R*S), zeroed, when
    filter_blocks is 1 (work split by images); none are used otherwise.
    workspace: (num_threads, >= C/groups*R*S*tile_cols*images).
    images > 1 (only with tile_cols = Ho*Wo): images per GEMM, with packed
    (num_threads, >= ceil(K/groups / filter_blocks)*Ho*Wo*images) holding
    their gradients.
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
    cdef const floating *grad0 = &grad[0, 0, 0]
    cdef Py_ssize_t size = K * n_rows, chunk = 4096, grad_image = K * cols
    cdef Py_ssize_t n_batches = (N + images - 1) // images
    cdef Py_ssize_t item, n, g, tile, start, width, t, i, lo, hi, thread, count
    cdef Py_ssize_t block, k_lo, k_hi, batch
    cdef floating *acc
    cdef floating *total

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        if filter_blocks > 1:
            for item in prange(groups * filter_blocks, schedule="static",
                               num_threads=num_threads):
                g = item // filter_blocks
                block = item % filter_blocks
                k_lo = g * k_group + block * k_group // filter_blocks
                k_hi = g * k_group + (block + 1) * k_group // filter_blocks
                thread = threadid()
                for batch in range(n_batches):
                    n = batch * images
                    count = N - n if N - n < images else images
                    for tile in range(n_tiles):
                        start = tile * tile_cols
                        width = cols - start if cols - start < tile_cols else tile_cols
                        _add_terms(x0 + g * c_group * xs_c, xs_n, xs_c, grad0 + k_lo * cols,
                                   grad_image, cols, &table[0, 0], n_rows, Wo,
                                   stride_h * xs_h, stride_w * xs_w, n, count, start, width,
                                   k_hi - k_lo, pointwise, &workspace[thread, 0],
                                   &packed[thread, 0], &grad_w[k_lo, 0])
        else:
            for item in prange(n_batches * groups * n_tiles, schedule="static",
                               num_threads=num_threads):
                n = (item // (groups * n_tiles)) * images
                count = N - n if N - n < images else images
                g = (item // n_tiles) % groups
                start = (item % n_tiles) * tile_cols
                width = cols - start if cols - start < tile_cols else tile_cols
                thread = threadid()
                acc = &grad_w[0, 0] if thread == 0 else &accumulators[thread - 1, 0]
                _add_terms(x0 + g * c_group * xs_c, xs_n, xs_c, grad0 + g * k_group * cols,
                           grad_image, cols, &table[0, 0], n_rows, Wo,
                           stride_h * xs_h, stride_w * xs_w, n, count, start, width,
                           k_group, pointwise, &workspace[thread, 0], &packed[thread, 0],
                           acc + g * k_group * n_rows)
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
