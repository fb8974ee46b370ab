# Preparing a block of the output for a GEMM that accumulates into it.

from cython cimport floating


cdef inline floating start_block(floating *out, Py_ssize_t ld_out,
                                 Py_ssize_t n_rows, Py_ssize_t n_cols,
                                 const floating *bias) noexcept nogil:
    """Fill the block with the bias (one value per row) and return the GEMM beta
    that keeps it (1), or return 0 when there is no bias (bias == NULL): GEMM
    then overwrites the block, so it need not be cleared first."""
    cdef Py_ssize_t i, j
    cdef floating value
    cdef floating *row
    if bias == NULL:
        return 0.0
    for i in range(n_rows):
        value = bias[i]
        row = out + i * ld_out
        for j in range(n_cols):
            row[j] = value
    return 1.0
