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
from fastconv._kernels._index_map cimport build_row_table, scatter_add_columns, ROW_FIELDS

import numpy as np


def conv2d_input_grad(const floating[:, :, ::1] grad,
                      const floating[:, ::1] weight,
                      floating[:, :, :, ::1] grad_x,
                      floating[:, ::1] workspace,
                      floating[:, ::1] packed,
                      Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                      Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_top, Py_ssize_t pad_left,
                      Py_ssize_t dil_h, Py_ssize_t dil_w,
                      Py_ssize_t groups, Py_ssize_t tile_cols,
                      Py_ssize_t channel_blocks, Py_ssize_t images, bint flip,
                      bint pointwise, int num_threads):
    """grad_x (N, C, H, W) = the input gradient of grad (N, K, Ho*Wo)
    through weight (K, C/groups*R*S). grad_x need not be initialised: each
    work item clears its own slice just before adding into it, while it is
    about to be in cache anyway (a separate np.zeros pass over the whole
    gradient cost 1.3x on depthwise layers).

    workspace: (num_threads, >= ceil(C/groups / channel_blocks)*R*S*tile_cols*images).
    images > 1 (only with tile_cols = Ho*Wo): images per GEMM, with packed
    (num_threads, >= K/groups*Ho*Wo*images) holding their gradients.
    pointwise (1x1, stride 1, no padding): the product is grad_x itself, so
    each GEMM writes straight into it (no buffer, no scatter, no zeroing).
    """
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], n_rows = weight.shape[1]
    cdef Py_ssize_t cols = grad.shape[2], Ho = cols // Wo, taps = R * S
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t n_tiles = (cols + tile_cols - 1) // tile_cols
    cdef Py_ssize_t xs_n = C * H * W, xs_c = H * W
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef floating *x0 = &grad_x[0, 0, 0, 0]
    cdef Py_ssize_t n_batches = (N + images - 1) // images
    cdef Py_ssize_t item, n, g, block, c_lo, c_hi, block_rows, tile, start, width
    cdef Py_ssize_t batch, count, i, k
    cdef floating *pack
    cdef floating *buf
    cdef floating *x_group
    cdef const floating *w_block
    cdef const floating *g_block

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, W, 1, flip)
        for item in prange(n_batches * groups * channel_blocks, schedule="dynamic",
                           num_threads=num_threads):
            batch = item // (groups * channel_blocks)
            g = (item // channel_blocks) % groups
            block = item % channel_blocks
            c_lo = block * c_group // channel_blocks
            c_hi = (block + 1) * c_group // channel_blocks
            block_rows = (c_hi - c_lo) * taps
            # W^T restricted to this block's channels: columns c_lo*R*S... of
            # the group's filters, transposed by the GEMM, not copied
            w_block = &weight[g * k_group, c_lo * taps]
            buf = &workspace[threadid(), 0]
            if images > 1:
                n = batch * images
                count = N - n if N - n < images else images
                # images side by side: row k of the packed matrix is
                # grad[n, k, :] | grad[n+1, k, :] | ...
                pack = &packed[threadid(), 0]
                for i in range(count):
                    memset(x0 + (n + i) * xs_n + (g * c_group + c_lo) * xs_c, 0,
                           (c_hi - c_lo) * xs_c * sizeof(floating))
                pack_rows(pack, &grad[n, g * k_group, 0], k_group, count, K * cols, cols, cols)
                gemm_rowmajor_op(True, False, <int> block_rows, <int> (count * cols),
                                 <int> k_group, w_block, <int> n_rows,
                                 pack, <int> (count * cols), 0.0, buf, <int> (count * cols))
                for i in range(count):
                    scatter_add_columns(x0 + (n + i) * xs_n + g * c_group * xs_c,
                                        &table[c_lo * taps, 0], block_rows, Wo,
                                        stride_h * W, stride_w, 0, cols, buf + i * cols,
                                        count * cols)
                continue
            n = batch
            x_group = x0 + n * xs_n + g * c_group * xs_c
            if not pointwise:
                memset(x_group + c_lo * xs_c, 0, (c_hi - c_lo) * xs_c * sizeof(floating))
            for tile in range(n_tiles):
                start = tile * tile_cols
                width = cols - start
                if width > tile_cols:
                    width = tile_cols
                g_block = &grad[n, g * k_group, start]
                if pointwise:
                    gemm_rowmajor_op(True, False, <int> (c_hi - c_lo), <int> width,
                                     <int> k_group, w_block, <int> n_rows,
                                     g_block, <int> cols, 0.0, x_group + c_lo * xs_c + start,
                                     <int> xs_c)
                else:
                    gemm_rowmajor_op(True, False, <int> block_rows, <int> width,
                                     <int> k_group, w_block, <int> n_rows,
                                     g_block, <int> cols, 0.0, buf, <int> width)
                    scatter_add_columns(x_group, &table[c_lo * taps, 0], block_rows, Wo,
                                        stride_h * W, stride_w, start, start + width,
                                        buf, width)
