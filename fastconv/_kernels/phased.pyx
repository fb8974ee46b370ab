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

import numpy as np


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
    PHASE_FILTER_BLOCK = 16   # filters per item (see phase_filters)


def phase_filters(const floating[:, :, :, ::1] weight, floating[::1] out,
                  const Py_ssize_t[::1] phase_first, const Py_ssize_t[::1] phase_tap,
                  const Py_ssize_t[::1] phase_at, Py_ssize_t groups, int num_threads):
    """The filters of every phase's forward pass, in one pass over the
    weights (K, C/groups, R, S). Phase p has the taps phase_tap[phase_first[p]
    : phase_first[p + 1]] (each r*S + s, in the order its pass reads them:
    Phased.run works them out, reversed there), n of them; its filters are
    the matrix (C, K/groups * n) at out[phase_at[p]:], element [g*Cg + c,
    k*n + i] = the weight of filter g*Kg + k, channel c, at the phase's tap
    i: each group's weights transposed.

    Threads over blocks of PHASE_FILTER_BLOCK filters; per channel, per
    phase, the block's filters gathered into one run of the phase's row
    (the block's channel slices, read from memory by the first phase, stay
    in L1 for the others). Why all phases at once: phase by phase, every
    pass read the whole kernel again from the L3 (the phases' taps share
    its lines), 70-130 us each on DeepSpeech2's 21x11/2 layer against 10
    us from L2; by blocks of out's rows, each filter's run 9 KiB from the
    last, ResNet-50 4a's 3x3/2 input gradient spent 3.2-3.4 ms of its 14
    here (2 threads)."""
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t R = weight.shape[2], S = weight.shape[3]
    cdef Py_ssize_t Kg = K // groups, phases = phase_at.shape[0]
    cdef Py_ssize_t kblocks = (Kg + PHASE_FILTER_BLOCK - 1) // PHASE_FILTER_BLOCK
    cdef Py_ssize_t item, g, c, k, k0, k1, i, p, n, t
    cdef Py_ssize_t ws_k = weight.strides[0] // sizeof(floating)
    cdef Py_ssize_t ws_c = weight.strides[1] // sizeof(floating)
    cdef Py_ssize_t ws_r = weight.strides[2] // sizeof(floating)
    cdef const floating *w0
    cdef const floating *src
    cdef const Py_ssize_t *taps
    cdef floating *dst
    cdef Py_ssize_t[::1] tap_src
    if groups < 1 or K % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide the {K} filters")
    if phase_first.shape[0] != phases + 1 or phase_first[0] != 0 \
            or phase_first[phases] != phase_tap.shape[0]:
        raise ValueError(f"phase_first ({phase_first.shape[0]} entries) must run from 0 to "
                         f"len(phase_tap) = {phase_tap.shape[0]} in {phases} steps")
    for p in range(phases):
        n = phase_first[p + 1] - phase_first[p]
        if (n < 0 or phase_at[p] < 0 or phase_at[p] > out.shape[0]
                or groups * Cg * Kg * n > out.shape[0] - phase_at[p]):
            raise ValueError(f"phase {p}'s filters ({groups * Cg} x {Kg} * {n} at "
                             f"{phase_at[p]}) do not fit out ({out.shape[0]})")
    for i in range(phase_tap.shape[0]):
        if not 0 <= phase_tap[i] < R * S:
            raise ValueError(f"phase_tap[{i}] = {phase_tap[i]} is not a tap of {R}x{S}")
    if K == 0 or Cg == 0 or phase_tap.shape[0] == 0:
        return
    # each tap's offset in a filter's channel
    tap_src = np.empty(phase_tap.shape[0], np.intp)
    for i in range(phase_tap.shape[0]):
        tap_src[i] = phase_tap[i] // S * ws_r + phase_tap[i] % S
    w0 = &weight[0, 0, 0, 0]
    for item in prange(groups * kblocks, schedule="static", num_threads=num_threads,
                       nogil=True):
        g = item // kblocks
        k0 = (item % kblocks) * PHASE_FILTER_BLOCK
        k1 = min(k0 + PHASE_FILTER_BLOCK, Kg)
        for c in range(Cg):
            for p in range(phases):
                n = phase_first[p + 1] - phase_first[p]
                taps = &tap_src[phase_first[p]]
                dst = &out[phase_at[p] + (g * Cg + c) * Kg * n]
                for k in range(k0, k1):
                    src = w0 + (g * Kg + k) * ws_k + c * ws_c
                    for i in range(n):
                        dst[k * n + i] = src[taps[i]]
