"""Branch-free polynomial ``exp``, ``log`` and ``log1p`` that LLVM vectorises.

Numba ≥ 0.62 has no SVML: ``math.exp`` in a loop is a scalar libm call, 4–5× slower than the
whole fused kernel should be. These functions use only ``+ − × fma``, compares/selects and
integer bit operations in the float's own width (see :mod:`._intrinsics`), so a loop that
calls them becomes SIMD code. Verified with ``inspect_asm``/``inspect_llvm`` (Numba 0.68,
LLVM 22, AVX-512 host): the loops of ``tests/backends/test_numba_kernels.py`` and of the
kernels compile to ``<16 x float>``/``<8 x double>`` bodies (``vfmadd…ps/pd`` on ``zmm``,
``ymm`` without the 512-bit preference) with no call left in them. Each function has a
float32 and a float64 implementation, chosen by the argument's type; call them only from
jitted code.

Accuracy, max error in ulps of the correctly rounded result, measured against NumPy in
float64 (float32 results: every 4099th float32 bit pattern plus specials) or long double
(float64 results: dense log-spaced grids over the whole range plus specials), including
subnormal results, overflow, ±0, ±inf and NaN, which match NumPy exactly:

==================  ============  ============
function            float32       float64
==================  ============  ============
exp                 1.05          1.05
exp_nonpositive     1.05          1.03
log                 0.92          0.77
log1p               0.92          0.83
log1p_unit          0.93 [#]_     0.83 (log1p)
==================  ============  ============

.. [#] on its domain ``[0, 1]``, measured over every float32 of it.

Method (fdlibm / Cephes lineage):

* ``exp(x)``: ``k = round(x·log2 e)`` with the ``1.5·2^(p-1)`` shifter (the integer lands in
  the low mantissa bits: no float→int conversion, so NaN stays harmless), Cody–Waite
  ``r = x − k·ln2_hi − k·ln2_lo`` (``|r| ≤ ½ln2``), ``e^r = 1 + r + r²·Q(r)`` with a near-minimax
  ``Q`` (degree 4 for float32, 9 for float64; fitted with ``mpmath.chebyfit``), then ``·2^k``
  by building exponent fields. ``x`` is first clamped to where the result is not already
  0 or inf; the clamps are written so that NaN passes through.
* ``log(u)``: ``u = 2^k·m`` with ``m ∈ [√½, √2)``, ``f = m − 1``; float32:
  ``log(1+f) = f − f²/2 + f³·P(f)`` (``P`` near-minimax, degree 7, no division); float64: the
  fdlibm form ``s = f/(2+f)``, ``log(1+f) = f − hfsq + s·(hfsq + R(s²))``. Subnormal ``u`` is
  scaled up first.
* ``log1p(x)``: where ``u = 1 ⊕ x`` lies in ``[√½, √2)`` the core runs on ``f = x`` itself
  (exact, no correction); elsewhere ``log1p(x) = log(u) + c·(1/u)`` with ``c = x − (u − 1)``
  the rounding error of ``u`` (exact for ``|x| ≤ 1`` by Fast2Sum, below ``ulp(u)`` beyond;
  there ``|log1p(x)| > 0.34`` and only the first-order correction matters). ``c·(1/u)``
  rather than ``c/u`` so that a caller that also needs ``1/(1+x)`` (the sigmoid next to the
  softplus in binary cross-entropy) shares one division with it: LLVM merges the two.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from ._intrinsics import (
    HELPER_OPTIONS,
    fma,
    helper,
    scale_by_pow2,
    scale_by_pow2_nonpositive,
    split_exponent,
)

__all__ = ["exp", "exp_nonpositive", "log", "log1p", "log1p_unit"]

_f32 = np.float32
_f64 = np.float64
_INF32, _NAN32 = _f32(np.inf), _f32(np.nan)
_INF64, _NAN64 = _f64(np.inf), _f64(np.nan)


def exp(x):
    """``e^x`` for a float32 or float64 scalar, in jitted code (see the module docstring)."""
    raise NotImplementedError("fastloss.backends.numba._math.exp is for jitted code only")


def exp_nonpositive(x):
    """``e^x`` for ``x ≤ 0`` or NaN (``-inf`` gives 0), in jitted code.

    Every exponential in the losses has a non-positive argument (``exp(z)`` with
    ``z = x − max``, ``exp(−|x|)``), so they use this cheaper scaling
    (:func:`._intrinsics.scale_by_pow2_nonpositive`: two fewer multiplications and no
    split of ``k``); the result is bitwise identical to :func:`exp` on that domain.
    """
    raise NotImplementedError("for jitted code only")


def log(x):
    """Natural logarithm of a float32 or float64 scalar, in jitted code."""
    raise NotImplementedError("for jitted code only")


def log1p(x):
    """``log(1 + x)`` for a float32 or float64 scalar, in jitted code."""
    raise NotImplementedError("for jitted code only")


def log1p_unit(x):
    """``log(1 + x)`` for ``0 ≤ x ≤ 1`` or NaN (NaN gives NaN), in jitted code: the
    ``log1p(exp(−|x|))`` of a softplus. Outside that domain the result is meaningless.

    float32: both halves of the domain reduce exactly, with no division and no exponent
    split: ``x < ½`` runs the core on ``f = x``; ``x ≥ ½`` uses ``log(1+x) = ln2 + log(1+f)``
    with ``f = (x − 1)/2 ∈ [−¼, 0]`` (``x − 1`` is exact by Sterbenz, halving is exact), for
    which the core polynomial is refitted on ``[−¼, ½]``. float64: :func:`log1p`.
    """
    raise NotImplementedError("for jitted code only")


# --------------------------------------------------------------------------------------------
# exp

# float32: Cephes ln2 split (ln2_hi has 9 significant bits, so k·ln2_hi is exact).
_E32_SHIFT = _f32(12582912.0)  # 1.5 * 2**23
_E32_LOG2E = _f32(1.44269504088896341)
_E32_LN2_HI = _f32(0.693359375)
_E32_LN2_LO = _f32(-2.12194440e-4)
_E32_HI = _f32(89.0)  # e^89 > FLT_MAX: overflows to inf
_E32_LO = _f32(-104.0)  # e^-104 < FLT_TRUE_MIN / 2: rounds to 0
_E32_Q = tuple(
    _f32(c)
    for c in (
        0.0013926184037700295,
        0.008363178931176662,
        0.041666556149721146,
        0.16666576266288757,
        0.5,
    )
)
# float64: fdlibm ln2 split (ln2_hi has 32 significant bits).
_E64_SHIFT = _f64(6755399441055744.0)  # 1.5 * 2**52
_E64_LOG2E = _f64(1.4426950408889634)
_E64_LN2_HI = _f64(6.93147180369123816490e-01)
_E64_LN2_LO = _f64(1.90821492927058770002e-10)
_E64_HI = _f64(710.0)
_E64_LO = _f64(-746.0)
_E64_Q = tuple(
    _f64(c)
    for c in (
        2.510038549551032e-08,
        2.7620088445409746e-07,
        2.7557268459997064e-06,
        2.4801521295954376e-05,
        0.00019841269863053618,
        0.0013888888917213717,
        0.008333333333330062,
        0.04166666666662413,
        0.16666666666666669,
        0.5000000000000001,
    )
)


@helper
def _horner(c, x):
    """``c[0]·x^(n-1) + … + c[n-1]`` by Horner's rule with fma (tuple unrolled at compile time)."""
    acc = c[0]
    for i in range(1, len(c)):
        acc = fma(acc, x, c[i])
    return acc


@helper
def _exp_f32_reduce(x):
    """``(e^r, t)`` with ``x = k·ln2 + r``; ``t`` carries ``k`` in its low mantissa bits."""
    x = _E32_LO if x < _E32_LO else x  # NaN compares false: passes through
    t = fma(x, _E32_LOG2E, _E32_SHIFT)
    k = t - _E32_SHIFT
    r = fma(-k, _E32_LN2_HI, x)
    r = fma(-k, _E32_LN2_LO, r)
    return fma(r * r, _horner(_E32_Q, r), r) + _f32(1.0), t


@helper
def _exp_f64_reduce(x):
    x = _E64_LO if x < _E64_LO else x
    t = fma(x, _E64_LOG2E, _E64_SHIFT)
    k = t - _E64_SHIFT
    r = fma(-k, _E64_LN2_HI, x)
    r = fma(-k, _E64_LN2_LO, r)
    return fma(r * r, _horner(_E64_Q, r), r) + _f64(1.0), t


def _exp_f32(x):
    p, t = _exp_f32_reduce(_E32_HI if x > _E32_HI else x)
    return scale_by_pow2(p, t, _E32_SHIFT)


def _exp_f64(x):
    p, t = _exp_f64_reduce(_E64_HI if x > _E64_HI else x)
    return scale_by_pow2(p, t, _E64_SHIFT)


def _exp_nonpositive_f32(x):
    p, t = _exp_f32_reduce(x)
    return scale_by_pow2_nonpositive(p, t, _E32_SHIFT)


def _exp_nonpositive_f64(x):
    p, t = _exp_f64_reduce(x)
    return scale_by_pow2_nonpositive(p, t, _E64_SHIFT)


# --------------------------------------------------------------------------------------------
# log, log1p

# float32: musl logf's ln2 split; P near-minimax for (log(1+f) - f + f²/2) / f³ on [√½-1, √2-1].
_L32_LN2_HI = _f32(6.9313812256e-01)
_L32_LN2_LO = _f32(9.0580006145e-06)
_L32_P = tuple(
    _f32(c)
    for c in (
        -0.0790274366736412,
        0.12622319161891937,
        -0.12998183071613312,
        0.14214496314525604,
        -0.166412815451622,
        0.20001044869422913,
        -0.25000306963920593,
        0.3333333134651184,
    )
)
# log1p_unit, float32: P near-minimax (Lawson) for (log(1+f) - f + f²/2) / f³ on [-1/4, 1/2],
# weighted for the relative error of log(1+f): 0.08 ulp in exact arithmetic.
_L1U32_P = tuple(
    _f32(c)
    for c in (
        -0.04507480077566311,
        0.10463022185876958,
        -0.13161193592988235,
        0.14478395003787897,
        -0.166473121749121,
        0.19990861225061002,
        -0.2500009584141484,
        0.3333344911277433,
    )
)
_L32_TINY = _f32(1.17549435e-38)  # FLT_MIN: below it, scale up by 2^25 first
_L32_UP = _f32(33554432.0)  # 2**25
# float64: fdlibm e_log.c
_L64_LN2_HI = _f64(6.93147180369123816490e-01)
_L64_LN2_LO = _f64(1.90821492927058770002e-10)
_L64_LG = tuple(
    _f64(c)
    for c in (
        6.666666666666735130e-01,
        3.999999999940941908e-01,
        2.857142874366239149e-01,
        2.222219843214978396e-01,
        1.818357216161805012e-01,
        1.531383769920937332e-01,
        1.479819860511658591e-01,
    )
)
_L64_TINY = _f64(2.2250738585072014e-308)
_L64_UP = _f64(18014398509481984.0)  # 2**54


@helper
def _log_f32_poly(f, k, c, p):
    """``k·ln2 + log(1 + f) + c`` with ``log(1+f) = f − f²/2 + f³·P(f)``, ``P`` the coefficients
    ``p``; ``c`` is a small correction term."""
    z = f * f
    y = fma(f * z, _horner(p, f), fma(k, _L32_LN2_LO, c))
    return fma(k, _L32_LN2_HI, (y - _f32(0.5) * z) + f)


@helper
def _log_f32_core(f, k, c):
    """``k·ln2 + log(1 + f) + c`` for ``1 + f ∈ [√½, √2)``; ``c`` is a small correction term."""
    return _log_f32_poly(f, k, c, _L32_P)


@helper
def _log_f64_core(f, k, c):
    lg = _L64_LG
    hfsq = _f64(0.5) * f * f
    s = f / (_f64(2.0) + f)
    z = s * s
    w = z * z
    t1 = w * fma(w, fma(w, lg[5], lg[3]), lg[1])
    t2 = z * fma(w, fma(w, fma(w, lg[6], lg[4]), lg[2]), lg[0])
    y = fma(s, hfsq + (t1 + t2), fma(k, _L64_LN2_LO, c))
    return fma(k, _L64_LN2_HI, (y - hfsq) + f)


@helper
def _log_special(x, r, inf, nan):
    """The IEEE special cases of ``log``: ``log(0) = -inf``, ``log(inf) = inf``, NaN for
    negative and NaN arguments; ``r`` otherwise (``inf``, ``nan`` in ``x``'s type)."""
    r = -inf if x == 0 else r
    r = x if x == inf else r
    return r if x >= 0 else nan


def _log_f32(x):
    tiny = x < _L32_TINY
    m, k = split_exponent(x * _L32_UP if tiny else x)
    k = k - _f32(25.0) if tiny else k
    return _log_special(x, _log_f32_core(m - _f32(1.0), k, _f32(0.0)), _INF32, _NAN32)


def _log_f64(x):
    tiny = x < _L64_TINY
    m, k = split_exponent(x * _L64_UP if tiny else x)
    k = k - _f64(54.0) if tiny else k
    return _log_special(x, _log_f64_core(m - _f64(1.0), k, _f64(0.0)), _INF64, _NAN64)


def _log1p_f32(x):
    u = x + _f32(1.0)
    m, k = split_exponent(u)
    near = k == _f32(0.0)  # 1 + x in [√½, √2): f = x exactly, no correction
    c = _f32(0.0) if near else (x - (u - _f32(1.0))) * (_f32(1.0) / u)
    f = x if near else m - _f32(1.0)
    return _log_special(u, _log_f32_core(f, k, c), _INF32, _NAN32)


def _log1p_f64(x):
    u = x + _f64(1.0)
    m, k = split_exponent(u)
    near = k == _f64(0.0)  # 1 + x in [√½, √2): f = x exactly, no correction
    c = _f64(0.0) if near else (x - (u - _f64(1.0))) * (_f64(1.0) / u)
    f = x if near else m - _f64(1.0)
    return _log_special(u, _log_f64_core(f, k, c), _INF64, _NAN64)


def _log1p_unit_f32(x):
    hi = x >= _f32(0.5)  # NaN: false, and f = x carries it through
    f = fma(x, _f32(0.5), _f32(-0.5)) if hi else x
    k = _f32(1.0) if hi else _f32(0.0)
    return _log_f32_poly(f, k, _f32(0.0), _L1U32_P)


# Division by zero must give inf/NaN as in NumPy, not raise ZeroDivisionError.
_JIT = HELPER_OPTIONS


def _by_type(f32_impl, f64_impl):
    def typer(x):
        if x == types.float32:
            return f32_impl
        if x == types.float64:
            return f64_impl
        return None

    return typer


overload(exp, jit_options=_JIT)(_by_type(_exp_f32, _exp_f64))
overload(exp_nonpositive, jit_options=_JIT)(_by_type(_exp_nonpositive_f32, _exp_nonpositive_f64))
overload(log, jit_options=_JIT)(_by_type(_log_f32, _log_f64))
overload(log1p, jit_options=_JIT)(_by_type(_log1p_f32, _log1p_f64))
overload(log1p_unit, jit_options=_JIT)(_by_type(_log1p_unit_f32, _log1p_f64))
