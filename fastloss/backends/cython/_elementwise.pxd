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

from fastloss.backends.cython._fastmath cimport (
    abs_, exp_nonpos, fl_prefetch_range, fl_prefetch_range_w, lane_sum, log1m_unit, log1p_unit,
    log_unit,
)
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
    double lo       # clip bounds (the values q takes outside them)
    double hi
    # The bounds for the comparisons in the input dtype: lo rounded up, hi rounded down to
    # it (so exact), which makes p < lo_cmp the reference's float64 test p < lo.
    double lo_cmp
    double hi_cmp

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

    With e = exp(-|x|) ≤ 1 nothing overflows: softplus(±x) = max(±x, 0) + log1p(e), so
    l = (1-t' + π·t')·log1p(e) + c·|x| with c = 1-t' for x ≥ 0 and π·t' otherwise (the
    coefficient of the softplus that holds |x|); σ(x) = 1/(1+e) for x ≥ 0, e/(1+e)
    otherwise (one division for both σ(x) and σ(-x)). A term whose coefficient is 0 counts
    as 0 even where its softplus is +inf (x = ±inf, where log1p(e) = 0): c·|x| is 0 for
    c = 0, so a perfectly confident correct logit has loss 0. NaN x gives NaN through e.
    """
    cdef floating tp = smoothed(t, smoothing)
    cdef floating neg = <floating>1 - tp
    cdef floating pos = pos_weight * tp
    cdef floating a = abs_(x)
    cdef bint nonneg = x >= 0
    cdef floating e = exp_nonpos(-a)
    cdef floating inv                      # 1/(1+e), from the same division as log1p(e)
    cdef floating lp = log1p_unit(e, &inv)
    cdef floating c = neg if nonneg else pos
    cdef floating sig_pos = inv if nonneg else e * inv
    cdef floating sig_neg = e * inv if nonneg else inv
    d[0] = neg * sig_pos - pos * sig_neg
    return (neg + pos) * lp + (0 if c == 0 else c * a)


cdef inline floating bce_prob(floating p, floating t, const BceProb* prm, floating pos_weight,
                              floating* d) noexcept nogil:
    """l = -(π·t'·log q + (1-t')·log(1-q)), q = clip(p, lo, hi);
    ∂l/∂p = (1-t')/(1-q) - π·t'/q inside [lo, hi], 0 outside (NaN p is not outside).

    q is in [0, 1] or NaN: the logarithms are the cheaper ones for that domain."""
    cdef floating tp = smoothed(t, <floating>prm.smoothing)
    cdef floating neg = <floating>1 - tp
    cdef floating pos = pos_weight * tp
    cdef floating lo = <floating>prm.lo     # loaded unconditionally: the selects below
    cdef floating hi = <floating>prm.hi     # then vectorise (no conditional load)
    cdef bint below = p < <floating>prm.lo_cmp
    cdef bint above = p > <floating>prm.hi_cmp
    cdef floating q = lo if below else (hi if above else p)
    d[0] = 0 if below | above else neg / (<floating>1 - q) - pos / q
    return -(pos * log_unit(q) + neg * log1m_unit(q))


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
    # Elements per chunk of a block, and how many elements ahead of a chunk the inputs are
    # prefetched before it (see elementwise_block).
    EW_CHUNK = 128
    EW_AHEAD = 1024


cdef inline void elementwise_chunk(
    const Loss* prm, const Mode* mode,
    const floating* pred, const floating* target, const double* weight,
    const double* pos_weight, floating* grad, double* lbuf, double scale,
    Py_ssize_t i0, Py_ssize_t i1, bint weighted, bint pos_weighted,
) noexcept nogil:
    """``lbuf[i] = w·l``, and ``grad[i] = scale·w·∂l/∂p`` (WithGrad), for i in [i0, i1).

    Called with constant ``weighted``/``pos_weighted`` (w and π are 1 where False, and
    their arrays are not read), so GCC compiles one vectorised loop per case: an unweighted
    BCE loop without the loads and conversions of weights runs 1.2x faster (in cache).
    """
    cdef Py_ssize_t i
    cdef floating d
    cdef double w
    for i in range(i0, i1):
        w = weight[i] if weighted else 1
        lbuf[i] = w * value_and_derivative(
            prm, pred[i], target[i], <floating>pos_weight[i] if pos_weighted else 1, &d)
        if Mode is WithGrad:
            grad[i] = <floating>(scale * w) * d


cdef inline double elementwise_block(
    const Loss* prm, const Mode* mode,
    const floating* pred, const floating* target, const double* weight,
    const double* pos_weight, floating* grad, floating* loss_out, double scale, Py_ssize_t n,
    Py_ssize_t n_next,
) noexcept nogil:
    """Σ w·l over ``n ≤ EW_BLOCK`` elements; writes ``scale·w·∂l/∂p`` (WithGrad) and ``w·l``.

    ``weight`` and ``pos_weight`` point at n values, or are NULL for ones (``pos_weight``
    is read by BCE only). ``grad`` may be ``pred``: each element is read before its
    gradient is stored at the same index, which the vectoriser's alias check allows.

    The inputs of the ``n_next`` elements after this block (the block this thread computes
    next, or 0), and the lines of a separate gradient (for writing), are prefetched
    ``EW_AHEAD`` elements ahead, a chunk before each chunk of this block, so that their
    transfer from memory overlaps this block's arithmetic. Measured (AVX-512, float32,
    2^26 elements, one thread, the other core idle): BCE from logits value-only 83 -> 52
    ms (in cache its arithmetic takes 45 ms); prefetching the whole next block at once,
    before the block, gained only 1.1x (the burst of prefetches stalls on the line fill
    buffers), the hardware prefetchers alone keep up only with the cheap losses, and a
    prefetch distance of 2 or 4 blocks or chunks of 64 or 256 were no better. Two threads:
    a gradient prefetched for writing beat non-temporal stores of the block (BCE 0.89x vs
    1.10x the np.copyto floor, MSE 0.82x vs 0.80x) and plain stores (MSE 1.18x).
    """
    cdef double lbuf[EW_BLOCK]
    cdef Py_ssize_t i, c0, c1, p0, p1
    cdef bint pos_weighted = (Loss is BceLogits or Loss is BceProb) and pos_weight != NULL
    c0 = 0
    while c0 < n:
        c1 = min(c0 + <Py_ssize_t>EW_CHUNK, n)
        p0 = c0 + EW_AHEAD
        p1 = min(c1 + EW_AHEAD, n + n_next)
        fl_prefetch_range(pred, sizeof(floating), p0, p1)
        fl_prefetch_range(target, sizeof(floating), p0, p1)
        if weight != NULL:
            fl_prefetch_range(weight, sizeof(double), p0, p1)
        if pos_weighted:
            fl_prefetch_range(pos_weight, sizeof(double), p0, p1)
        if Mode is WithGrad and <const void*>grad != <const void*>pred:
            fl_prefetch_range_w(grad, sizeof(floating), p0, p1)
        # constant flags: one specialised loop each (see elementwise_chunk)
        if weight == NULL and not pos_weighted:
            elementwise_chunk(prm, mode, pred, target, weight, pos_weight, grad, lbuf, scale,
                              c0, c1, False, False)
        elif weight == NULL:
            elementwise_chunk(prm, mode, pred, target, weight, pos_weight, grad, lbuf, scale,
                              c0, c1, False, True)
        elif not pos_weighted:
            elementwise_chunk(prm, mode, pred, target, weight, pos_weight, grad, lbuf, scale,
                              c0, c1, True, False)
        else:
            elementwise_chunk(prm, mode, pred, target, weight, pos_weight, grad, lbuf, scale,
                              c0, c1, True, True)
        c0 = c1
    if loss_out != NULL:
        for i in range(n):
            loss_out[i] = <floating>lbuf[i]
    return lane_sum(lbuf, n)
