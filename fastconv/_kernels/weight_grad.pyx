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
from fastconv._kernels._index_map cimport IndexMap, init_index_map


cdef inline void _add_terms(const IndexMap *m, const floating *x_group,
                            const floating *grad_rows, Py_ssize_t grad_image,
                            Py_ssize_t n, Py_ssize_t count, Py_ssize_t start, Py_ssize_t width,
                            Py_ssize_t filters, bint pointwise,
                            floating *buf, floating *pack, floating *out) noexcept nogil:
    """out (filters x rows, leading dimension rows) += the gradient rows
    starting at grad_rows (one per filter, images n..n+count-1, columns
    [start, start+width)) times the transposed stretched columns they meet.
    Several images (count > 1, whole images only) are laid side by side in
    buf and pack so that one GEMM sums over all their columns."""
    cdef Py_ssize_t depth = count * width
    cdef const floating *a
    cdef const floating *b
    cdef Py_ssize_t lda, ldb
    if pointwise:  # the input is its own stretched matrix (count is 1)
        b = x_group + n * m.xs_n + start
        ldb = m.xs_c
    else:
        gather_images(m, x_group + n * m.xs_n, count, start, width, buf)
        b = buf
        ldb = depth
    if count == 1:
        a = grad_rows + n * grad_image + start
        lda = m.cols
    else:
        pack_rows(pack, grad_rows + n * grad_image + start, filters, count, grad_image, m.cols,
                  width)
        a = pack
        lda = depth
    gemm_rowmajor_op(False, True, <int> filters, <int> m.rows, <int> depth, a, <int> lda,
                     b, <int> ldb, 1.0, out, <int> m.rows)


def conv2d_weight_grad(const floating[:, :, :, :] x,
                       const floating[:, :, ::1] grad,
                       floating[:, ::1] grad_w,
                       floating[:, ::1] accumulators,
                       Py_ssize_t[:, ::1] table,
                       floating[:, ::1] workspace,
                       floating[:, ::1] packed,
                       tuple index_args, Py_ssize_t tile_cols, Py_ssize_t images,
                       Py_ssize_t filter_blocks, bint pointwise, int num_threads):
    """grad_w (K, C/groups*R*S), zeroed by the caller, = the weight gradient
    for input x (N, C, H, W; any strides) and output gradient grad (N, K, Ho*Wo).

    accumulators: (num_threads - 1, K*C/groups*R*S), zeroed, when
    filter_blocks is 1 (work split by images); none are used otherwise.
    table: the row table (>= C/groups*R*S rows; may be empty when pointwise).
    workspace: (num_threads, >= C/groups*R*S*tile_cols*images).
    images > 1 (only with tile_cols = Ho*Wo): images per GEMM, with packed
    (num_threads, >= ceil(K/groups / filter_blocks)*Ho*Wo*images) holding
    their gradients.
    pointwise (1x1, stride 1, no padding; x's planes contiguous): the input
    is its own stretched matrix and is read in place, no gather.
    index_args: ConvGeometry.index_args.
    """
    cdef IndexMap m
    init_index_map(&m, index_args, table, &x.shape[0], &x.strides[0], sizeof(floating),
                   grad.shape[2])
    cdef Py_ssize_t N = m.N, K = grad_w.shape[0], n_rows = m.rows, cols = m.cols
    cdef Py_ssize_t k_group = K // m.groups
    cdef Py_ssize_t n_tiles = (cols + tile_cols - 1) // tile_cols
    cdef Py_ssize_t size = K * n_rows, chunk = 4096, grad_image = K * cols
    cdef Py_ssize_t n_batches = (N + images - 1) // images
    cdef Py_ssize_t item, n, g, tile, start, width, t, i, lo, hi, thread, count
    cdef Py_ssize_t block, k_lo, k_hi, batch
    cdef floating *acc
    cdef floating *total

    with nogil:
        if filter_blocks > 1:
            for item in prange(m.groups * filter_blocks, schedule="static",
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
                        _add_terms(&m, &x[0, g * m.c_group, 0, 0], &grad[0, k_lo, 0],
                                   grad_image, n, count, start, width, k_hi - k_lo, pointwise,
                                   &workspace[thread, 0], &packed[thread, 0], &grad_w[k_lo, 0])
        else:
            for item in prange(n_batches * m.groups * n_tiles, schedule="static",
                               num_threads=num_threads):
                n = (item // (m.groups * n_tiles)) * images
                count = N - n if N - n < images else images
                g = (item // n_tiles) % m.groups
                start = (item % n_tiles) * tile_cols
                width = cols - start if cols - start < tile_cols else tile_cols
                thread = threadid()
                acc = &grad_w[0, 0] if thread == 0 else &accumulators[thread - 1, 0]
                _add_terms(&m, &x[0, g * m.c_group, 0, 0], &grad[0, g * k_group, 0],
                           grad_image, n, count, start, width, k_group, pointwise,
                           &workspace[thread, 0], &packed[thread, 0], acc + g * k_group * n_rows)
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
