"""One batch through a loss's kernel: the totals an accumulator adds up, and optionally the
per-sample losses and a gradient with a scale fixed from outside (the global normaliser).

``Loss._parts`` gives ``(Σ w·l, Σ w, count)``. Streaming scoring also needs the per-sample
losses ``w·l`` from the *same* kernel pass (writing them costs nothing extra; summing them
again in the output dtype would lose the float64 total), and distributed gradients need the
kernel to scale by a normaliser that only the whole data set knows. Both are one call of
the backend with ``loss_out`` / ``grad_out`` and ``scale`` set on the job, so this module
builds the job through the loss's own validation (``Loss._plan``) exactly as a normal call
does and runs it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validation as v
from .._threads import resolve_n_threads
from ..backends import resolve_backend
from ..losses import Loss


@dataclass(slots=True)
class BatchResult:
    total: float  # Σ w·l (float64)
    weight_sum: float  # Σ w over non-ignored entries: the "mean" normaliser
    count: int  # number of non-ignored losses: the "sum_over_batch_size" normaliser
    per_sample: np.ndarray | None = None  # w·l, shaped like the per-sample loss
    grad: np.ndarray | None = None  # grad_scale · ∂(Σ w·l)/∂y_pred, y_pred's shape and dtype


def run_batch(
    loss: Loss,
    y_true: Any,
    y_pred: Any,
    sample_weight: Any = None,
    *,
    per_sample: bool = False,
    grad_scale: float | None = None,
) -> BatchResult:
    """Validate one batch with ``loss``'s rules and run its kernel once.

    ``per_sample``: also return ``w·l`` per element/sample (the ``"none"`` output).
    ``grad_scale``: also return the gradient of ``grad_scale · Σ w·l``.
    """
    y_true, y_pred, sample_weight = _aligned(y_true), _aligned(y_pred), _aligned(sample_weight)
    if not per_sample and grad_scale is None:
        total, weight_sum, count = loss._parts(y_true, y_pred, sample_weight)
        return BatchResult(float(total), float(weight_sum), int(count))
    backend = resolve_backend(loss.backend)
    pred = v.as_prediction(y_pred)
    plan = loss._plan(y_true, pred, sample_weight)
    job = plan.job
    job.n_threads = resolve_n_threads(loss.n_threads)
    grad = None
    if grad_scale is not None:
        grad = loss._gradient_buffer(plan, None)
        job.grad_out = grad
        job.scale = float(grad_scale)
    if per_sample:
        job.loss_out = np.empty(job.pred.shape[0], dtype=pred.dtype)
    total = loss._run(backend, job)
    return BatchResult(
        total=float(total),
        weight_sum=float(plan.weight_sum),
        count=int(plan.count),
        per_sample=job.loss_out.reshape(plan.loss_shape) if per_sample else None,
        grad=loss._gradient_result(plan, grad, None) if grad is not None else None,
    )


def _aligned(x: Any) -> Any:
    """``x``, or an aligned copy of it when it is a misaligned array. Streamed data can be
    misaligned: an ``.npz`` member mapped in place starts wherever the zip put it, and dask
    hands workers arrays that view message frames at any offset. NumPy accepts those, but
    native kernels want every element at a multiple of its size."""
    if isinstance(x, np.ndarray) and not x.flags.aligned:
        return x.copy()
    return x
