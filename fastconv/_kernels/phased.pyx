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
