# Whether the kernels were built with OpenMP, and OpenMP's own thread default
# (which honours OMP_NUM_THREADS). Without OpenMP every prange runs serially.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCONV_HAVE_OPENMP 1
    static int fastconv_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTCONV_HAVE_OPENMP 0
    static int fastconv_omp_max_threads(void) { return 1; }
    #endif
    """
    int FASTCONV_HAVE_OPENMP
    int fastconv_omp_max_threads() noexcept nogil


def openmp_enabled():
    """True if the kernels were compiled with OpenMP support."""
    return bool(FASTCONV_HAVE_OPENMP)


def omp_max_threads():
    """omp_get_max_threads() (1 without OpenMP)."""
    return fastconv_omp_max_threads()
