# The input gradient of a convolution, also the transposed convolution:
#     grad_x[n] = col2im(W^T @ grad_y[n])   (per group)
# The product W^T @ grad_y is the stretched matrix of the gradient; it is made
# a tile of columns at a time in a per-thread buffer and each tile is added
# back into grad_x through the index map (scatter_add_columns, the adjoint of
# the gather of the forward pass). One tile of all Ho*Wo columns is the stretch
# lowering (GEMM, then col2im of the whole matrix); narrower tiles are the
# mapped one, which never holds the whole matrix.
#
# Overlapping windows make tiles of one image add into the same input
# elements, so two threads must never scatter the same (image, channel): work
# items are (image, group, block of input channels), each owning its slice of
# grad_x, and tiles are walked in order inside an item. The result is the
# same whatever the thread count or schedule. Channel blocks exist so that a
# batch smaller than the thread count still gives every thread work (rows of
# W^T belonging to different channels scatter into different planes).
#
# Small images (few output positions) make thin GEMMs, as in the forward pass
# (batched.pyx): several images' gradients are then packed side by side into
# one (K/groups x images*Ho*Wo) matrix, one GEMM makes all their stretched
# gradients, and each image's columns are scattered into its own plane.

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memset

from fastconv._kernels._blas cimport gemm_rowmajor_op
from fastconv._kernels._images cimport pack_rows
from fastconv._kernels._index_map cimport (IndexMap, init_index_map, scatter_add_columns,
                                            ROW_FIELDS)


def conv2d_input_grad(const floating[:, :, ::1] grad,
                      const floating[:, ::1] weight,
                      floating[:, :, :, ::1] grad_x,
                      Py_ssize_t[:, ::1] table,
                      floating[:, ::1] workspace,
                      floating[:, ::1] packed,
                      tuple index_args, Py_ssize_t tile_cols,
                      Py_ssize_t channel_blocks, Py_ssize_t images,
                      bint pointwise, int num_threads):
    """grad_x (N, C, H, W) = the input gradient of grad (N, K, Ho*Wo)
    through weight (K, C/groups*R*S). grad_x need not be initialised: each
    work item clears its own slice just before adding into it, while it is
    about to be in cache anyway (a separate np.zeros pass over the whole
    gradient cost 1.3x on depthwise layers).

    table: the row table (>= C/groups*R*S rows; may be empty when pointwise).
    workspace: (num_threads, >= ceil(C/groups / channel_blocks)*R*S*tile_cols*images).
    images > 1 (only with tile_cols = Ho*Wo): images per GEMM, with packed
    (num_threads, >= K/groups*Ho*Wo*images) holding their gradients.
    pointwise (1x1, stride 1, no padding): the product is grad_x itself, so
    each GEMM writes straight into it (no buffer, no scatter, no zeroing).
    index_args: ConvGeometry.index_args.
    """
    cdef IndexMap m
    init_index_map(&m, index_args, table, &grad_x.shape[0], &grad_x.strides[0],
                   sizeof(floating), grad.shape[2])
    cdef Py_ssize_t K = weight.shape[0], n_rows = weight.shape[1], cols = m.cols
    cdef Py_ssize_t k_group = K // m.groups, taps = m.taps, plane = m.xs_c
    cdef Py_ssize_t n_tiles = (cols + tile_cols - 1) // tile_cols
    cdef Py_ssize_t n_batches = (m.N + images - 1) // images
    cdef Py_ssize_t item, n, g, block, c_lo, c_hi, block_rows, tile, start, width
    cdef Py_ssize_t batch, count, i
    cdef floating *pack
    cdef floating *buf
    cdef floating *x_group
    cdef const floating *w_block
    cdef const floating *g_block

    for item in prange(n_batches * m.groups * channel_blocks, schedule="dynamic",
                       num_threads=num_threads, nogil=True):
        batch = item // (m.groups * channel_blocks)
        g = (item // channel_blocks) % m.groups
        block = item % channel_blocks
        c_lo = block * m.c_group // channel_blocks
        c_hi = (block + 1) * m.c_group // channel_blocks
        block_rows = (c_hi - c_lo) * taps
        # W^T restricted to this block's channels: columns c_lo*R*S... of
        # the group's filters, transposed by the GEMM, not copied
        w_block = &weight[g * k_group, c_lo * taps]
        buf = &workspace[threadid(), 0]
        if images > 1:
            n = batch * images
            count = m.N - n if m.N - n < images else images
            # images side by side: row k of the packed matrix is
            # grad[n, k, :] | grad[n+1, k, :] | ...
            pack = &packed[threadid(), 0]
            for i in range(count):
                memset(&grad_x[n + i, g * m.c_group + c_lo, 0, 0], 0,
                       (c_hi - c_lo) * plane * sizeof(floating))
            pack_rows(pack, &grad[n, g * k_group, 0], k_group, count, K * cols, cols, cols)
            gemm_rowmajor_op(True, False, <int> block_rows, <int> (count * cols),
                             <int> k_group, w_block, <int> n_rows,
                             pack, <int> (count * cols), 0.0, buf, <int> (count * cols))
            for i in range(count):
                scatter_add_columns(&m, &grad_x[n + i, g * m.c_group, 0, 0],
                                    m.table + c_lo * taps * ROW_FIELDS, block_rows, 0, cols,
                                    buf + i * cols, count * cols)
            continue
        n = batch
        x_group = &grad_x[n, g * m.c_group, 0, 0]
        if not pointwise:
            memset(x_group + c_lo * plane, 0, (c_hi - c_lo) * plane * sizeof(floating))
        for tile in range(n_tiles):
            start = tile * tile_cols
            width = cols - start
            if width > tile_cols:
                width = tile_cols
            g_block = &grad[n, g * k_group, start]
            if pointwise:
                gemm_rowmajor_op(True, False, <int> (c_hi - c_lo), <int> width,
                                 <int> k_group, w_block, <int> n_rows,
                                 g_block, <int> cols, 0.0, x_group + c_lo * plane + start,
                                 <int> plane)
            else:
                gemm_rowmajor_op(True, False, <int> block_rows, <int> width,
                                 <int> k_group, w_block, <int> n_rows,
                                 g_block, <int> cols, 0.0, buf, <int> width)
                scatter_add_columns(&m, x_group, m.table + c_lo * taps * ROW_FIELDS, block_rows,
                                    start, start + width, buf, width)
