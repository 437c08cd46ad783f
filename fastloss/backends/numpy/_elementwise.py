"""Reference elementwise losses (MSE, MAE, Huber, BCE) in float64 NumPy.

Each ``_<kind>`` function returns ``(loss, dloss/dp)`` as float64 arrays; the formulas are
those of :class:`fastloss.backends._jobs.ElementwiseJob`. Everything is computed in float64
whatever the input dtype, so this backend is the oracle the native ones are tested against.
"""

from __future__ import annotations

import numpy as np

from .._jobs import ElementwiseJob


def _times(coef: np.ndarray, term: np.ndarray) -> np.ndarray:
    """``coef · term`` where a zero coefficient counts as 0 even if ``term`` is infinite."""
    return np.where(coef == 0, 0.0, coef * term)


def _squared(p, t, job):
    r = p - t
    return r * r, 2.0 * r


def _absolute(p, t, job):
    r = p - t
    return np.abs(r), np.sign(r)


def _huber(p, t, job):
    d = job.delta
    r = p - t
    a = np.abs(r)
    loss = np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))
    # np.clip propagates NaN, and equals r inside [-δ, δ] and ±δ outside.
    return loss, np.clip(r, -d, d)


def _smoothed(t, job):
    eps = job.smoothing
    return t * (1.0 - eps) + 0.5 * eps if eps else t


def _pos(job):
    return 1.0 if job.pos_weight is None else job.pos_weight


def _bce_logits(x, t, job):
    # Written symmetrically, l = (1-t')·softplus(x) + π·t'·softplus(-x), so that neither the
    # loss nor the gradient cancels catastrophically for large |x| with t' in {0, 1}
    # (the textbook σ(x) - t loses all digits of σ(x) ≈ 1e-14 when computed as 1 - σ(-x)).
    # softplus(±x) = max(±x, 0) + log1p(e) and σ(±x) share e = exp(-|x|) ≤ 1 (no overflow).
    t = _smoothed(t, job)
    neg = 1.0 - t
    pos = _pos(job) * t
    e = np.exp(-np.abs(x))
    tail = np.log1p(e)
    loss = _times(neg, np.maximum(x, 0.0) + tail) + _times(pos, np.maximum(-x, 0.0) + tail)
    big = 1.0 / (1.0 + e)  # σ(|x|)
    small = e * big  # σ(-|x|)
    positive = x >= 0
    grad = neg * np.where(positive, big, small) - pos * np.where(positive, small, big)
    return loss, grad


def _bce_prob(p, t, job):
    t = _smoothed(t, job)
    pos = _pos(job) * t
    neg = 1.0 - t
    q = np.clip(p, job.clip_lo, job.clip_hi)
    # log1p(-q) is log(1 - q) without the rounding of 1 - q (exact here anyway for q ≥ lo).
    loss = -(pos * np.log(q) + neg * np.log1p(-q))
    grad = neg / (1.0 - q) - pos / q
    outside = (p < job.clip_lo) | (p > job.clip_hi)
    return loss, np.where(outside, 0.0, grad)


_KERNELS = {
    "squared": _squared,
    "absolute": _absolute,
    "huber": _huber,
    "bce_logits": _bce_logits,
    "bce_prob": _bce_prob,
}


def elementwise(job: ElementwiseJob) -> float:
    """Run one :class:`ElementwiseJob` (see :mod:`fastloss.backends._jobs`)."""
    p = job.pred.astype(np.float64)
    t = job.target.astype(np.float64)
    with np.errstate(all="ignore"):
        loss, dloss = _KERNELS[job.kind](p, t, job)
        if job.weight is not None:
            loss = job.weight * loss
            dloss = job.weight * dloss
        if job.loss_out is not None:
            job.loss_out[...] = loss
        if job.grad_out is not None:
            job.grad_out[...] = job.scale * dloss
    return float(np.sum(loss))
