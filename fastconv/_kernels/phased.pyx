# The phased input gradient's own kernel: writing one phase of the input
# gradient (every sy-th row from y0, every sx-th column from x0) from the
# contiguous output of the phase's stride-1 forward pass, or zeros where no
# tap of the kernel lands on the phase. The forward kernels (fused, direct,
# winograd, depthwise) store contiguous rows; this is the strided half.
#
# Threads over the (image, channel) planes: numpy.copyto of a stride-2 phase
# of ResNet-50 3a's input gradient (8 x 128 x 56 x 56) took 1.8-8 ms for the
# four phases, one thread, against the ~10 ms of arithmetic it follows.

from cython cimport floating
from cython.parallel cimport prange


def scatter_phase(const floating[:, :, ::1] phase, floating[:, :, :, ::1] out,
                  Py_ssize_t y0, Py_ssize_t sy, Py_ssize_t x0, Py_ssize_t sx,
                  int num_threads):
    """out[n, c, y0::sy, x0::sx] = phase[n, c] (its rows of len(range(x0,
    W, sx)) elements, C-contiguous), for every image n and channel c."""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t rows = (H - y0 + sy - 1) // sy if H > y0 else 0
    cdef Py_ssize_t cols = (W - x0 + sx - 1) // sx if W > x0 else 0
    cdef Py_ssize_t plane, i, j
    cdef const floating *src
    cdef floating *dst
    if phase.shape[0] != N or phase.shape[1] != C or phase.shape[2] != rows * cols:
        raise ValueError(f"phase has shape {tuple(phase.shape)[:3]}, expected "
                         f"{(N, C, rows * cols)} for out {tuple(out.shape)[:4]}")
    for plane in prange(N * C, schedule="static", num_threads=num_threads, nogil=True):
        for i in range(rows):
            src = &phase[plane // C, plane % C, i * cols]
            dst = &out[plane // C, plane % C, y0 + i * sy, 0]
            for j in range(cols):
                dst[x0 + j * sx] = src[j]


def clear_phase(floating[:, :, :, ::1] out, Py_ssize_t y0, Py_ssize_t sy, Py_ssize_t x0,
                Py_ssize_t sx, int num_threads):
    """out[n, c, y0::sy, x0::sx] = 0: a phase no tap of the kernel reaches."""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t plane, i, j
    cdef floating *dst
    for plane in prange(N * C, schedule="static", num_threads=num_threads, nogil=True):
        i = y0
        while i < H:
            dst = &out[plane // C, plane % C, i, 0]
            j = x0
            while j < W:
                dst[j] = 0
                j = j + sx
            i = i + sy


cdef enum:
    PHASE_ROW_BLOCK = 16   # rows of out per item (see phase_filters)


def phase_filters(const floating[:, :, :, ::1] weight, floating[:, ::1] out,
                  Py_ssize_t groups, Py_ssize_t first_row, Py_ssize_t row_step,
                  Py_ssize_t rows, Py_ssize_t first_col, Py_ssize_t col_step,
                  Py_ssize_t cols, bint flip, int num_threads):
    """The filters of one phase's forward pass: out[g*Cg + c, (k*rows + i)
    * cols + j] = w[g*Kg + k, c, r, s] with the taps r = first_row + (rows-1-i)
    * row_step, s = first_col + (cols-1-j) * col_step (of the kernel reversed
    first if flip): each group's weights transposed, the phase's taps
    reversed. weight (K, C/groups, R, S); out (C, K/groups*rows*cols).

    Threads over blocks of PHASE_ROW_BLOCK of out's rows, each filter's
    weights of a block's channels read as one run (a filter's channels are
    adjacent). numpy.copyto of the same strided view took 2-3 ms per phase
    on a 512 x 256 x 4 x 4 kernel (DCGAN); one row at a time (each read 16
    KiB from the last) 0.9 ms, in blocks 0.8 ms."""
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t R = weight.shape[2], S = weight.shape[3]
    cdef Py_ssize_t Kg = K // groups, total = groups * Cg
    cdef Py_ssize_t block, row, k, i, j, r, s, g, c
    cdef floating *dst
    if out.shape[0] != total or out.shape[1] != Kg * rows * cols:
        raise ValueError(f"out has shape {tuple(out.shape)[:2]}, expected "
                         f"{(total, Kg * rows * cols)}")
    for block in prange(0, total, PHASE_ROW_BLOCK, schedule="static",
                        num_threads=num_threads, nogil=True):
        for k in range(Kg):
            for row in range(block, min(block + PHASE_ROW_BLOCK, total)):
                g = row // Cg
                c = row % Cg
                dst = &out[row, 0]
                for i in range(rows):
                    r = first_row + (rows - 1 - i) * row_step
                    if flip:
                        r = R - 1 - r
                    for j in range(cols):
                        s = first_col + (cols - 1 - j) * col_step
                        if flip:
                            s = S - 1 - s
                        dst[(k * rows + i) * cols + j] = weight[g * Kg + k, c, r, s]
