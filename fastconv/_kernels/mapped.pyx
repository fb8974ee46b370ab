# Index-mapped lowering: the stretched matrix is never built. Output columns
# are cut into tiles of `tile_cols`; each tile's columns are gathered through
# the index map (row table + affine column map, see _index_map.pxd) into a
# small per-thread buffer, and that tile's GEMM writes straight into its slice
# of the output (leading dimension Ho*Wo, so no copy-back).
#
# Work items are (image, group, tile) triples, so even a batch of one image
# keeps every OpenMP thread busy while BLAS stays single-threaded. With one
# tile of all Ho*Wo columns this is the stretch lowering (stretch.pyx).

from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blas cimport gemm_rowmajor
from fastconv._kernels._index_map cimport build_row_table, gather_columns, ROW_FIELDS
from fastconv._kernels._output cimport start_block

import numpy as np


def conv2d_mapped(const floating[:, :, :, :] x,
                  const floating[:, ::1] weight,
                  const floating[::1] bias,
                  floating[:, :, ::1] out,
                  floating[:, ::1] workspace,
                  Py_ssize_t R, Py_ssize_t S, Py_ssize_t Wo,
                  Py_ssize_t stride_h, Py_ssize_t stride_w,
                  Py_ssize_t pad_top, Py_ssize_t pad_left,
                  Py_ssize_t dil_h, Py_ssize_t dil_w,
                  Py_ssize_t groups, Py_ssize_t tile_cols, bint flip,
                  int num_threads):
    """Same contract as conv2d_stretch, with workspace (num_threads, >=
    C/groups*R*S*tile_cols): the buffer holds one tile, not one image."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], n_rows = weight.shape[1]
    cdef Py_ssize_t cols = out.shape[2], Ho = cols // Wo
    cdef Py_ssize_t c_group = C // groups, k_group = K // groups
    cdef Py_ssize_t n_tiles = (cols + tile_cols - 1) // tile_cols
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t xs_n = x.strides[0] // itemsize, xs_c = x.strides[1] // itemsize
    cdef Py_ssize_t xs_h = x.strides[2] // itemsize, xs_w = x.strides[3] // itemsize
    cdef Py_ssize_t[:, ::1] table = np.empty((n_rows, ROW_FIELDS), dtype=np.intp)
    cdef const floating *x0 = &x[0, 0, 0, 0]
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, n, g, tile, start, width
    cdef floating *buf
    cdef floating *block
    cdef floating beta

    with nogil:
        build_row_table(&table[0, 0], c_group, R, S, H, W, Ho, Wo,
                        stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        xs_c, xs_h, xs_w, flip)
        for item in prange(N * groups * n_tiles, schedule="dynamic", num_threads=num_threads):
            n = item // (groups * n_tiles)
            g = (item // n_tiles) % groups
            tile = item % n_tiles
            start = tile * tile_cols
            width = cols - start
            if width > tile_cols:
                width = tile_cols
            buf = &workspace[threadid(), 0]
            gather_columns(x0 + n * xs_n + g * c_group * xs_c, &table[0, 0],
                           n_rows, Wo, stride_h * xs_h, stride_w * xs_w,
                           start, start + width, buf, width)
            block = &out[n, g * k_group, start]
            beta = start_block(block, cols, k_group, width,
                               bias_ptr + g * k_group if bias_ptr != NULL else NULL)
            gemm_rowmajor(<int> k_group, <int> width, <int> n_rows,
                          &weight[g * k_group, 0], <int> n_rows,
                          buf, <int> width, beta, block, <int> cols)
