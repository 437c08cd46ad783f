# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Elementwise losses: one ``nogil`` scalar function per loss, one block loop applying it.

Each loss is a struct holding its parameters; the structs form the fused type ``Loss``, so
``elementwise_block[Loss, Mode, floating]`` is compiled once per combination with the loss
inlined and its selects if-converted, and GCC vectorises the loop (see ``_fastmath.h`` for
why exp/log1p vectorise). The math runs in the input dtype (float32 in, float32 math, as in
every deep-learning framework); loss values are accumulated in float64.

The formulas are those of :class:`fastloss.backends._jobs.ElementwiseJob`; ``r = p - t``.

Constants in float math are written ``<floating>1``: Cython emits a bare ``1`` next to a
float as the double ``1.0``, which silently turns float32 arithmetic into float64.
"""

from cython cimport floating

from fastloss.backends.cython._fastmath cimport exp_nonpos, lane_sum, log1p_, log1p_unit, log_
from fastloss.backends.cython._modes cimport Mode, WithGrad


# ---- the losses and their parameters -----------------------------------------------------

cdef struct Squared:
    char unused

cdef struct Absolute:
    char unused

cdef struct Huber:
    double delta

cdef struct BceLogits:
    double smoothing

cdef struct BceProb:
    double smoothing
    double lo       # clip bounds, compared in float64 like the reference
    double hi

ctypedef fused Loss:
    Squared
    Absolute
    Huber
    BceLogits
    BceProb

# ---- scalar functions: loss l(p, t), derivative ∂l/∂p into d[0] -----------------------------

cdef inline floating squared(floating p, floating t, floating* d) noexcept nogil:
    """l = r², ∂l/∂p = 2r."""
    cdef floating r = p - t
    d[0] = r + r
    return r * r


cdef inline floating absolute(floating p, floating t, floating* d) noexcept nogil:
    """l = |r|, ∂l/∂p = sign(r): 0 at r = 0, NaN for NaN r (as np.sign)."""
    cdef floating r = p - t
    d[0] = 1 if r > 0 else (-1 if r < 0 else r)
    return r if r >= 0 else -r


cdef inline floating huber(floating p, floating t, floating delta, floating* d) noexcept nogil:
    """l = ½r² if |r| ≤ δ else δ(|r| - ½δ), ∂l/∂p = clip(r, -δ, δ) (NaN stays NaN)."""
    cdef floating r = p - t
    cdef floating a = r if r >= 0 else -r
    d[0] = delta if r > delta else (-delta if r < -delta else r)
    return <floating>0.5 * r * r if a <= delta else delta * (a - <floating>0.5 * delta)


cdef inline floating smoothed(floating t, floating smoothing) noexcept nogil:
    """t' = t(1-ε) + ε/2 (exactly t for ε = 0)."""
    return t * (<floating>1 - smoothing) + <floating>0.5 * smoothing


cdef inline floating bce_logits(floating x, floating t, floating smoothing, floating pos_weight,
                                floating* d) noexcept nogil:
    """l = (1-t')·softplus(x) + π·t'·softplus(-x), ∂l/∂x = (1-t')·σ(x) - π·t'·σ(-x).

    With e = exp(-|x|) ≤ 1 nothing overflows: softplus(±x) = max(±x, 0) + log1p(e) and
    σ(x) = 1/(1+e) for x ≥ 0, e/(1+e) otherwise (one division for both σ(x) and σ(-x)).
    A term whose coefficient is 0 counts as 0 even where its softplus is +inf (x = ±inf),
    so a perfectly confident correct logit has loss 0. NaN x gives NaN through e.
    """
    cdef floating tp = smoothed(t, smoothing)
    cdef floating neg = <floating>1 - tp
    cdef floating pos = pos_weight * tp
    cdef floating e = exp_nonpos(-x if x >= 0 else x)
    cdef floating inv                      # 1/(1+e), from the same division as log1p(e)
    cdef floating lp = log1p_unit(e, &inv)
    cdef floating sp_pos = (x if x > 0 else 0) + lp
    cdef floating sp_neg = (-x if x < 0 else 0) + lp
    cdef floating sig_pos = inv if x >= 0 else e * inv
    cdef floating sig_neg = e * inv if x >= 0 else inv
    d[0] = neg * sig_pos - pos * sig_neg
    return (0 if neg == 0 else neg * sp_pos) + (0 if pos == 0 else pos * sp_neg)


cdef inline floating bce_prob(floating p, floating t, const BceProb* prm, floating pos_weight,
                              floating* d) noexcept nogil:
    """l = -(π·t'·log q + (1-t')·log1p(-q)), q = clip(p, lo, hi);
    ∂l/∂p = (1-t')/(1-q) - π·t'/q inside [lo, hi], 0 outside (NaN p is not outside)."""
    cdef floating tp = smoothed(t, <floating>prm.smoothing)
    cdef floating neg = <floating>1 - tp
    cdef floating pos = pos_weight * tp
    cdef bint below = p < prm.lo
    cdef bint above = p > prm.hi
    cdef floating q = <floating>prm.lo if below else (<floating>prm.hi if above else p)
    d[0] = 0 if below | above else neg / (<floating>1 - q) - pos / q
    return -(pos * log_(q) + neg * log1p_(-q))


cdef inline floating value_and_derivative(const Loss* prm, floating p, floating t,
                                          floating pos_weight, floating* d) noexcept nogil:
    """Compile-time dispatch to the loss's scalar function."""
    if Loss is Squared:
        return squared(p, t, d)
    elif Loss is Absolute:
        return absolute(p, t, d)
    elif Loss is Huber:
        return huber(p, t, <floating>prm.delta, d)
    elif Loss is BceLogits:
        return bce_logits(p, t, <floating>prm.smoothing, pos_weight, d)
    else:
        return bce_prob(p, t, prm, pos_weight, d)


# ---- the one loop ------------------------------------------------------------------------

cdef enum:
    # Elements per block: the unit of work of a thread and of the deterministic reduction
    # (block sums are combined in block order). Its buffers fit in L1 with the inputs.
    EW_BLOCK = 1024


cdef inline double elementwise_block(
    const Loss* prm, const Mode* mode,
    const floating* pred, const floating* target, const double* weight,
    const double* pos_weight, floating* grad, floating* loss_out, double scale, Py_ssize_t n,
) noexcept nogil:
    """Σ w·l over ``n ≤ EW_BLOCK`` elements; writes ``scale·w·∂l/∂p`` (WithGrad) and ``w·l``.

    ``weight`` and ``pos_weight`` always point at n values (a block of ones when the job has
    none). ``grad`` may be ``pred``: each element is read before its gradient is stored at
    the same index, which the vectoriser's alias check allows.
    """
    cdef double lbuf[EW_BLOCK]
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        lbuf[i] = weight[i] * value_and_derivative(
            prm, pred[i], target[i], <floating>pos_weight[i], &d)
        if Mode is WithGrad:
            grad[i] = <floating>(scale * weight[i]) * d
    if loss_out != NULL:
        for i in range(n):
            loss_out[i] = <floating>lbuf[i]
    return lane_sum(lbuf, n)
