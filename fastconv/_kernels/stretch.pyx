# Explicit stretching: the whole stretched (im2col) matrix of C/groups*R*S
# rows by Ho*Wo columns. `im2col` builds it for a batch (the fully connected
# view of a convolution); `conv2d_stretch` builds it per image and group in a
# per-thread buffer and does one GEMM per image and group.

from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._index_map cimport IndexMap, init_index_map, gather_columns

from fastconv._kernels.mapped import conv2d_mapped


def conv2d_stretch(x, weight, bias, out, table, workspace, tuple index_args, int num_threads):
    """out[n] (K x Ho*Wo) = weight (K x C/g*R*S, per group) @ im2col(x[n]) (+ bias).

    The arguments of conv2d_mapped, with workspace (num_threads, >=
    C/groups*R*S*Ho*Wo). The whole stretched matrix is a single tile of Ho*Wo
    columns: the tiled kernel then gathers each image's (and group's) entire
    im2col matrix into the buffer and does one GEMM per image and group,
    which is exactly this lowering. Keeping one loop means both lowerings
    share every line that computes a result.
    """
    conv2d_mapped(x, weight, bias, out, table, workspace, index_args, out.shape[2], num_threads)


def im2col(const floating[:, :, :, :] x, floating[:, :, ::1] cols, Py_ssize_t[:, ::1] table,
           tuple index_args, int num_threads):
    """cols[n] (C*R*S x Ho*Wo) = the stretched matrix of x[n]; x any strides.
    index_args: ConvGeometry.index_args with groups 1 and flip False."""
    cdef IndexMap m
    init_index_map(&m, index_args, table, &x.shape[0], &x.strides[0], sizeof(floating),
                   cols.shape[2])
    cdef Py_ssize_t n
    for n in prange(m.N, schedule="static", num_threads=num_threads, nogil=True):
        gather_columns(&m, &x[n, 0, 0, 0], m.table, m.rows, 0, m.cols, &cols[n, 0, 0], m.cols)
