# Row-major GEMM over SciPy's BLAS (scipy.linalg.cython_blas), fused over
# float/double.
#
# BLAS is column-major. A row-major M x N matrix is, byte for byte, the
# column-major N x M matrix of its transpose, so the row-major product
#     C (M x N) = A (M x K) . B (K x N)
# is the column-major product C^T = B^T . A^T: call gemm with the operands
# swapped and M and N exchanged. Nothing is transposed or copied.
#
# cython_blas takes no const pointers; read-only inputs are cast here, in one
# place (BLAS never writes to A or B).

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_rowmajor_op(bint trans_a, bint trans_b, int m, int n, int k,
                                  const floating *a, int lda,
                                  const floating *b, int ldb,
                                  floating beta,
                                  floating *c, int ldc) noexcept nogil:
    """c[m, n] = op(a) @ op(b) + beta * c, row-major with leading dims, where
    op(a) is a (m x k) or, with trans_a, the transpose of a stored k x m
    (likewise b: k x n, or n x k with trans_b). A transposed row-major operand
    is an untransposed column-major one, so each flag passes straight through."""
    cdef char op_a = b'T' if trans_a else b'N'
    cdef char op_b = b'T' if trans_b else b'N'
    cdef floating one = 1.0
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&op_b, &op_a, &n, &m, &k, &one,
              <float *> b, &ldb, <float *> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&op_b, &op_a, &n, &m, &k, &one,
              <double *> b, &ldb, <double *> a, &lda, &beta, c, &ldc)


cdef inline void gemm_rowmajor(int m, int n, int k,
                               const floating *a, int lda,
                               const floating *b, int ldb,
                               floating beta,
                               floating *c, int ldc) noexcept nogil:
    """c[m, n] = a[m, k] @ b[k, n] + beta * c, all row-major with leading dims."""
    gemm_rowmajor_op(False, False, m, n, k, a, lda, b, ldb, beta, c, ldc)
