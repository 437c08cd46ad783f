# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=False
"""The kernels of ``_kernels.pyx``, compiled for AVX512 (see setup.py); the package imports
this module instead of ``_kernels`` only on CPUs that support it."""

include "_kernels.pyx"
