# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compile-time switches shared by the kernels (fused "tag" types: each specialisation of a
kernel is compiled separately, so an ``if Mode is WithGrad`` costs nothing at run time)."""

# Value only, or value and gradient: a value-only call computes no derivative and writes
# nothing but the (optional) per-sample losses.
cdef struct ValueOnly:
    char unused

cdef struct WithGrad:
    char unused

ctypedef fused Mode:
    ValueOnly
    WithGrad

# Cross-entropy targets: integer labels, or a soft target row per sample.
cdef struct Sparse:
    char unused

cdef struct Soft:
    char unused

ctypedef fused Target:
    Sparse
    Soft
