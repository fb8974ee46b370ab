# Index-mapped lowering: the stretched matrix is never built. Output columns
# are cut into tiles of `tile_cols`; each tile's columns are gathered through
# the index map (row table + affine column map, see _index_map.pxd) into a
# small per-thread buffer, and that tile's GEMM writes straight into its slice
# of the output (leading dimension Ho*Wo, so no copy-back).
#
# Work items are (image, group, tile) triples, so even a batch of one image
# keeps every OpenMP thread busy while BLAS stays single-threaded. With one
# tile of all Ho*Wo columns this is the stretch lowering: both lowerings run
# this loop (fastconv/_lowerings.py), so they share every line that computes
# a result.

from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blas cimport gemm_rowmajor
from fastconv._kernels._index_map cimport IndexMap, init_index_map, gather_columns, ROW_FIELDS
from fastconv._kernels._output cimport start_block

# The row table's width, for the Python side that allocates every table
# (fastconv/_lowerings.py): the one copy of the number outside the .pxd.
ROW_TABLE_FIELDS = ROW_FIELDS


def conv2d_mapped(const floating[:, :, :, :] x,
                  const floating[:, ::1] weight,
                  const floating[::1] bias,
                  floating[:, :, ::1] out,
                  Py_ssize_t[:, ::1] table,
                  floating[:, ::1] workspace,
                  tuple index_args, Py_ssize_t tile_cols, int num_threads):
    """out[n] (K x Ho*Wo) = weight (K x C/g*R*S, per group) @ im2col(x[n]) (+ bias).

    x: (N, C, H, W), any strides. weight: (K, C/groups*R*S). bias: (K,) or
    empty. out: (N, K, Ho*Wo). table: the row table (>= C/groups*R*S rows).
    workspace: (num_threads, >= C/groups*R*S*tile_cols), one tile per thread.
    index_args: ConvGeometry.index_args (kernel, stride, padding, dilation,
    groups, flip; flip is done by the index map, not by a copy).
    """
    cdef IndexMap m
    init_index_map(&m, index_args, table, &x.shape[0], &x.strides[0], sizeof(floating),
                   out.shape[2])
    cdef Py_ssize_t k_group = weight.shape[0] // m.groups
    cdef Py_ssize_t n_tiles = (m.cols + tile_cols - 1) // tile_cols
    cdef const floating *bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t item, n, g, start, width
    cdef floating *buf
    cdef floating *block
    cdef floating beta

    for item in prange(m.N * m.groups * n_tiles, schedule="dynamic", num_threads=num_threads,
                       nogil=True):
        n = item // (m.groups * n_tiles)
        g = (item // n_tiles) % m.groups
        start = (item % n_tiles) * tile_cols
        width = m.cols - start
        if width > tile_cols:
            width = tile_cols
        buf = &workspace[threadid(), 0]
        gather_columns(&m, &x[n, g * m.c_group, 0, 0], m.table, m.rows, start, start + width,
                       buf, width)
        block = &out[n, g * k_group, start]
        beta = start_block(block, m.cols, k_group, width,
                           bias_ptr + g * k_group if bias_ptr != NULL else NULL)
        gemm_rowmajor(<int> k_group, <int> width, <int> m.rows,
                      &weight[g * k_group, 0], <int> m.rows,
                      buf, <int> width, beta, block, <int> m.cols)
