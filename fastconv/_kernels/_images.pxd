# Several small images side by side in one matrix, so that one GEMM covers
# them all (a GEMM over 49 or 196 columns is too thin for BLAS): the stretched
# matrices of `count` images, or rows of their gradients or outputs, laid out
# as [image 0 | image 1 | ...] in every row. Used by the batched forward pass
# and both gradients.

from libc.string cimport memcpy
from cython cimport floating

from fastconv._kernels._index_map cimport IndexMap, gather_columns


cdef inline void gather_images(const IndexMap *m, const floating *x_first, Py_ssize_t count,
                               Py_ssize_t start, Py_ssize_t width,
                               floating *side_by_side) noexcept nogil:
    """Columns [start, start+width) of the stretched matrices (all m.rows
    rows) of `count` images (m.xs_n elements apart from x_first), side by
    side: m.rows x count*width."""
    cdef Py_ssize_t i
    for i in range(count):
        gather_columns(m, x_first + i * m.xs_n, m.table, m.rows, start, start + width,
                       side_by_side + i * width, count * width)


cdef inline void pack_rows(floating *side_by_side, const floating *first_row,
                           Py_ssize_t rows, Py_ssize_t count, Py_ssize_t image_step,
                           Py_ssize_t row_step, Py_ssize_t width) noexcept nogil:
    """side_by_side (rows x count*width), row r = row r of image 0 | of image 1 | ...
    (images image_step elements apart, rows row_step apart, width elements each)."""
    cdef Py_ssize_t r, i
    for r in range(rows):
        for i in range(count):
            memcpy(side_by_side + (r * count + i) * width, first_row + i * image_step + r * row_step,
                   width * sizeof(floating))


cdef inline void unpack_rows(floating *first_row, const floating *side_by_side,
                             Py_ssize_t rows, Py_ssize_t count, Py_ssize_t image_step,
                             Py_ssize_t row_step, Py_ssize_t width) noexcept nogil:
    """The inverse of pack_rows: each image's share of every row back in place."""
    cdef Py_ssize_t r, i
    for r in range(rows):
        for i in range(count):
            memcpy(first_row + i * image_step + r * row_step, side_by_side + (r * count + i) * width,
                   width * sizeof(floating))
