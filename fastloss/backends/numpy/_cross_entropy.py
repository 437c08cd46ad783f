"""Reference (sparse) categorical cross-entropy in float64 NumPy.

The formulas are those of :class:`fastloss.backends._jobs.CrossEntropyJob`: one routine for
sparse and soft targets, for logits and probabilities; sparse labels become one-hot target
coefficients here (O(n·C) memory is fine for an oracle).
"""

from __future__ import annotations

import numpy as np

from .._jobs import CrossEntropyJob


def _coefficients(job: CrossEntropyJob, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Target coefficients ``κ_j·t'_j`` per row, and the mask of ignored rows."""
    if job.labels is not None:
        ignored = job.labels == job.ignore_index
        t = np.zeros((n, c))
        rows = np.flatnonzero(~ignored)
        t[rows, job.labels[rows]] = 1.0
    else:
        ignored = np.zeros(n, dtype=bool)
        t = job.target.astype(np.float64)
    eps = job.smoothing
    if eps:
        t = t * (1.0 - eps) + eps / c
    if job.class_weight is not None:
        t = t * job.class_weight
    return t, ignored


def _from_logits(x: np.ndarray, coef: np.ndarray):
    m = np.max(x, axis=1, keepdims=True)
    # z = 0 where x == m: identical to x - m for a finite max, and the limit for a +inf max.
    z = np.where(x == m, 0.0, x - m)
    e = np.exp(z)
    s = np.sum(e, axis=1, keepdims=True)
    w = np.sum(coef, axis=1, keepdims=True)
    loss = w[:, 0] * np.log(s[:, 0]) - np.sum(np.where(coef == 0, 0.0, coef * z), axis=1)
    grad = w * (e / s) - coef
    # Rows without a limit: all -inf (softmax undefined) or several +inf entries.
    undefined = (m[:, 0] == -np.inf) | ((m[:, 0] == np.inf) & (s[:, 0] > 1.0))
    if undefined.any():
        loss[undefined] = np.nan
        grad[undefined] = np.nan
    return loss, grad


def _from_probabilities(p: np.ndarray, coef: np.ndarray, lo: float, hi: float):
    # Keras 3: renormalise along the class axis, then clip to [lo, hi].
    s = np.sum(p, axis=1, keepdims=True)
    q = p / s
    qc = np.clip(q, lo, hi)
    loss = -np.sum(coef * np.log(qc), axis=1)
    outside = (q < lo) | (q > hi)
    g = np.where(outside, 0.0, -coef / qc)
    # Chain rule through q = p / S: ∂q_k/∂p_j = (δ_kj - q_k) / S.
    grad = (g - np.sum(g * q, axis=1, keepdims=True)) / s
    return loss, grad


def cross_entropy(job: CrossEntropyJob) -> float:
    """Run one :class:`CrossEntropyJob` (see :mod:`fastloss.backends._jobs`)."""
    x = job.pred.astype(np.float64)
    n, c = x.shape
    with np.errstate(all="ignore"):
        coef, ignored = _coefficients(job, n, c)
        if job.from_logits:
            loss, grad = _from_logits(x, coef)
        else:
            loss, grad = _from_probabilities(x, coef, job.clip_lo, job.clip_hi)
        if job.weight is not None:
            loss = job.weight * loss
            grad = job.weight[:, None] * grad
        # Ignored rows contribute exactly nothing, even where their prediction is NaN.
        loss = np.where(ignored, 0.0, loss)
        if job.loss_out is not None:
            job.loss_out[...] = loss
        if job.grad_out is not None:
            job.grad_out[...] = np.where(ignored[:, None], 0.0, job.scale * grad)
    return float(np.sum(loss))
