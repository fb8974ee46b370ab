"""Cython kernels: nogil, fused float/double, no Python objects in the hot loops."""
