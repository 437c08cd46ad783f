"""The contract between the public API and every backend.

The public layer (:mod:`fastloss._validation`) validates and canonicalises the user's
arguments once and hands a backend one *job*. A backend implements two entry points,

``elementwise(job: ElementwiseJob) -> float``
    MSE, MAE, Huber and binary cross-entropy (logits or probabilities);
``cross_entropy(job: CrossEntropyJob) -> float``
    categorical and sparse categorical cross-entropy (logits or probabilities),

each of which, in **one pass** over the prediction,

* returns ``Σ_i w_i · l_i`` as a Python float accumulated in float64, where ``l_i`` is the
  per-element (elementwise) or per-sample (cross-entropy) loss and ``w_i`` the weight
  (1 when ``job.weight`` is None). Ignored samples (sparse labels equal to
  ``job.ignore_index``) contribute exactly 0, whatever their prediction;
* if ``job.grad_out`` is not None, writes ``scale · w_i · ∂l_i/∂pred`` into it (ignored rows
  get 0). ``grad_out`` may be the very same array as ``job.pred`` (in-place gradient): a
  kernel must read what it needs of an element / row before it overwrites it;
* if ``job.loss_out`` is not None, writes ``w_i · l_i`` into it (ignored rows get 0).

The result must not depend on ``job.n_threads`` (bitwise): reduce in fixed-size blocks
whose boundaries do not depend on the thread count and combine the block sums in order.

Everything a kernel receives is canonical, so a kernel needs no checks of its own beyond
what is stated here:

* ``pred`` is 1-D ``(n,)`` (elementwise) or 2-D ``(n, C)`` (cross-entropy, class axis last),
  C-contiguous, float32 or float64;
* ``target`` has ``pred``'s shape and dtype; ``labels`` is int64 ``(n,)`` and every entry
  is in ``[0, C)`` or equal to ``ignore_index`` (checked before the kernel runs);
* ``weight`` is None or float64 ``(n,)``; ``pos_weight`` is None or float64 ``(n,)``;
  ``class_weight`` is None or float64 ``(C,)``; all C-contiguous;
* ``grad_out`` is None or has ``pred``'s shape and dtype, C-contiguous, writable, and is
  either ``pred`` itself or does not overlap any input; ``loss_out`` is None or ``(n,)``
  in ``pred``'s dtype, C-contiguous, writable, overlapping nothing;
* ``n_threads`` is an int ≥ 1; ``scale`` is a finite float.

The formulas (and the treatment of ±inf/NaN) are stated on each job class below and, with
code, in the NumPy reference backend (:mod:`fastloss.backends.numpy`), which is the oracle
the native backends are tested against.

Shortcuts (optional)
--------------------
For a small batch, building and validating a job in Python costs several times the
kernel. A backend may therefore also offer (optional: absent or None means none)

``elementwise_shortcut(y_true, y_pred, out, reduction, want_value, want_grad, n_threads,
kind, delta, smoothing, clip_lo, clip_hi)`` and ``cross_entropy_shortcut(y_true, y_pred,
out, reduction, want_value, want_grad, n_threads, from_logits, sparse, ignore_index,
smoothing, clip_lo, clip_hi)``

(all positional, the options as in the jobs, ``n_threads`` resolved), which the public layer
calls first for a call without ``sample_weight``, ``pos_weight`` or ``class_weight`` (and,
for cross-entropy, the class axis last). A shortcut takes the user's arrays as they are:
when the call is canonical — plain C-contiguous aligned native float32/float64 arrays of
the required shapes, labels int64 and in range, ``out`` ``y_pred`` itself or a separate
buffer of its shape and dtype overlapping no input, at least one element (or kept sample) —
it allocates what is needed, runs the same kernel as the job entry and returns
``(value, grad)`` exactly as the general path would (bitwise); otherwise it returns None
and must not raise, write or allocate anything the caller sees: the general path then
validates the call, and words any error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ElementwiseJob", "CrossEntropyJob", "ELEMENTWISE_KINDS"]

#: Elementwise loss kinds a backend must implement.
ELEMENTWISE_KINDS = ("squared", "absolute", "huber", "bce_logits", "bce_prob")


@dataclass(slots=True)
class ElementwiseJob:
    """One call of an elementwise loss; ``r = p - t``.

    ===========  ===========================================  ===============================
    kind         loss ``l(p, t)``                             ``∂l/∂p``
    ===========  ===========================================  ===============================
    squared      ``r²``                                       ``2r``
    absolute     ``|r|``                                      ``sign(r)`` (0 at r = 0)
    huber        ``½r²`` if ``|r| ≤ δ`` else ``δ(|r| - ½δ)``  ``clip(r, -δ, δ)``
    bce_logits   ``(1-t')·softplus(p) + π·t'·softplus(-p)``   ``(1-t')·σ(p) - π·t'·σ(-p)``
    bce_prob     ``-(π·t'·log q + (1-t')·log(1-q))``          ``-(π·t'/q - (1-t')/(1-q))``
                 with ``q = clip(p, lo, hi)``                 inside ``[lo, hi]``, else 0
    ===========  ===========================================  ===============================

    ``t' = t(1-ε) + ε/2`` (``ε = smoothing``), ``π`` = ``pos_weight`` (1 when None),
    ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``. For ``bce_logits`` a term whose
    coefficient (``1-t'`` or ``π·t'``) is 0 counts as 0 even when its softplus is infinite,
    so ``p = +inf, t = 1`` gives loss 0 and gradient 0. ``bce_prob``'s "outside" test is
    ``p < lo or p > hi`` (NaN is not outside, so it propagates).
    """

    kind: str
    pred: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    pos_weight: np.ndarray | None = None
    delta: float = 1.0
    smoothing: float = 0.0
    clip_lo: float = 0.0
    clip_hi: float = 1.0
    scale: float = 1.0
    grad_out: np.ndarray | None = None
    loss_out: np.ndarray | None = None
    n_threads: int = 1


@dataclass(slots=True)
class CrossEntropyJob:
    """One call of a (sparse) categorical cross-entropy over rows ``x`` of ``pred``.

    Target coefficients per row: ``c_j = κ_j · t'_j`` with ``κ`` = ``class_weight``
    (1 when None) and ``t' = t(1-ε) + ε/C``; for sparse labels ``t = onehot(label)``.
    ``W = Σ_j c_j``.

    * logits: ``m = max_j x_j``, ``z_j = x_j - m`` (``z_j = 0`` where ``x_j == m``, which
      makes a single ``+inf`` logit well defined), ``s = Σ_j exp(z_j)``;
      ``l = W·log(s) - Σ_j c_j·z_j`` (a term with ``c_j = 0`` counts as 0) and
      ``∂l/∂x_j = W·exp(z_j)/s - c_j``. A row whose maximum is ``-inf`` (all ``-inf``) or
      that has several ``+inf`` entries has no limit: its loss and gradient are NaN.
    * probabilities: ``S = Σ_j x_j``, ``q_j = x_j / S``, ``q̂_j = clip(q_j, lo, hi)``;
      ``l = -Σ_j c_j·log(q̂_j)``; with ``g_j = -c_j/q̂_j`` where ``lo ≤ q_j ≤ hi`` (not
      "outside", see :class:`ElementwiseJob`) and 0 outside,
      ``∂l/∂x_j = (g_j - Σ_k g_k·q_k) / S``.

    Exactly one of ``labels`` (sparse) and ``target`` (categorical) is set.
    """

    from_logits: bool
    pred: np.ndarray
    labels: np.ndarray | None = None
    target: np.ndarray | None = None
    ignore_index: int = -1
    weight: np.ndarray | None = None
    class_weight: np.ndarray | None = None
    smoothing: float = 0.0
    clip_lo: float = 0.0
    clip_hi: float = 1.0
    scale: float = 1.0
    grad_out: np.ndarray | None = None
    loss_out: np.ndarray | None = None
    n_threads: int = 1
