# Block arithmetic and buffer alignment shared by the kernels that cut
# their work into blocks and panels (fused, direct, winograd).

from cython cimport floating
from libc.stdint cimport uintptr_t

cdef enum:
    # Panels start on 64-byte boundaries (one cache line, one zmm): each
    # buffer has this many bytes of slack for the aligned offset.
    ALIGN_BYTES = 64


# (the modules are compiled with cdivision: C's truncating division, so the
# -(-a // b) idiom would be wrong on C integers)
cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t _round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


cdef inline floating *_aligned(floating *p) noexcept nogil:
    """p rounded up to the next ALIGN_BYTES boundary."""
    return <floating *> ((<uintptr_t> p + (ALIGN_BYTES - 1)) & ~(<uintptr_t> (ALIGN_BYTES - 1)))


cdef inline Py_ssize_t _panel_width(Py_ssize_t nvalid, Py_ssize_t nr, Py_ssize_t lanes) noexcept nogil:
    """Width of the micro-panel holding nvalid (<= nr) columns: nr, or for a
    partial one the fewest whole vectors (lanes columns each) that hold
    them, run by a narrow kernel (lanes 0: the ISA has none)."""
    if nvalid >= nr or lanes == 0:
        return nr
    return _round_up(nvalid, lanes)
