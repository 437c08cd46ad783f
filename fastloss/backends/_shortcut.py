"""Shortcuts for a backend that has only the job entries: the canonical-call checks in Python.

The contract is the one stated under "Shortcuts" in :mod:`fastloss.backends._jobs`; the
Cython backend implements it in compiled code (``_kernels.pyx``), and this module implements
the same checks, in the same strict form, for a backend that offers ``elementwise(job)`` and
``cross_entropy(job)`` only (Numba): a canonical call then costs a few attribute tests and
one job instead of the general path's validation and canonicalisation. Anything unusual
returns None, and the general path validates the call and words the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._jobs import CrossEntropyJob, ElementwiseJob

__all__ = ["count_kept", "job_shortcuts"]

# Native-byte-order builtin dtypes are singletons, so ``is`` is an exact test.
_F32, _F64, _I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)

Shortcut = Callable[..., "tuple[Any, np.ndarray | None] | None"]


def _plain(arr: Any, dtype: np.dtype) -> bool:
    """A NumPy array (not a subclass) of ``dtype``, C-contiguous and aligned."""
    if type(arr) is not np.ndarray or arr.dtype is not dtype:
        return False
    flags = arr.flags
    return flags.c_contiguous and flags.aligned


def _float_prediction(y_pred: Any) -> np.dtype | None:
    """``y_pred``'s dtype if it is a plain float32/float64 array (see :func:`_plain`)."""
    if type(y_pred) is not np.ndarray:
        return None
    dtype = y_pred.dtype
    return dtype if (dtype is _F32 or dtype is _F64) and _plain(y_pred, dtype) else None


def _gradient(out: Any, y_true: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
    """A new gradient array, or ``out`` where it is ``y_pred`` itself or a separate writable
    C-contiguous aligned array of its shape and dtype, neither overlapping ``y_true``;
    None (decline) for any other ``out``."""
    if out is None:
        return np.empty(pred.shape, pred.dtype)
    if type(out) is not np.ndarray or not out.flags.writeable:
        return None
    if out is not pred and not (
        _plain(out, pred.dtype) and out.shape == pred.shape and not np.may_share_memory(out, pred)
    ):
        return None
    if np.may_share_memory(out, y_true):
        return None
    return out


def _divides(reduction: str) -> bool | None:
    """Whether ``reduction`` divides by the number of (kept) samples; None if unknown.
    Without weights, "mean" and "sum_over_batch_size" both divide by the count."""
    if reduction == "mean" or reduction == "sum_over_batch_size":
        return True
    if reduction == "sum" or reduction == "none":
        return False
    return None


def count_kept(labels: np.ndarray, n_classes: int, ignore_index: int | None) -> int:
    """How many labels are not ``ignore_index``, or -1 if any other lies outside
    ``[0, n_classes)`` (as unsigned, a negative label is huge)."""
    if ignore_index is None:
        return -1 if labels.view(np.uint64).max() >= n_classes else labels.shape[0]
    kept = labels != ignore_index
    if labels[kept].view(np.uint64).max(initial=0) >= n_classes:
        return -1
    return int(np.count_nonzero(kept))


def job_shortcuts(
    elementwise: Callable[[ElementwiseJob], float],
    cross_entropy: Callable[[CrossEntropyJob], float],
    kept_labels: Callable[[np.ndarray, int, int | None], int] = count_kept,
    labels_input: Callable[[np.ndarray], np.ndarray] | None = None,
    unchecked_labels: Callable[[CrossEntropyJob], float | None] | None = None,
) -> tuple[Shortcut, Shortcut]:
    """``(elementwise_shortcut, cross_entropy_shortcut)`` running the given job entries;
    ``kept_labels`` is :func:`count_kept` or a faster equivalent of the backend's, and
    ``labels_input`` (optional) turns the user's labels into what both it and the job take
    (a view made once per call rather than once per use).

    ``unchecked_labels`` (optional) runs a sparse job whose labels were not checked and of
    which nothing is ignored, and returns None where a label lies outside ``[0, C)`` (the
    kernel checks every label it reads). Without ``ignore_index`` every label is kept (the
    count is ``n``), so the separate pass of ``kept_labels`` is then needed only where the
    kernel would write into the caller's memory before it could notice a bad label
    (``out`` given, in place included: a bad call changes nothing); a call that writes
    only arrays of its own skips it and, for a bad label, declines after the kernel."""

    def elementwise_shortcut(
        y_true,
        y_pred,
        out,
        reduction,
        want_value,
        want_grad,
        n_threads,
        kind,
        delta,
        smoothing,
        clip_lo,
        clip_hi,
    ):
        divides = _divides(reduction)
        dtype = _float_prediction(y_pred)
        if divides is None or dtype is None:
            return None
        if (
            y_pred.ndim < 1
            or y_pred.size == 0
            or not _plain(y_true, dtype)
            or y_true.shape != y_pred.shape
        ):
            return None
        grad = None
        if want_grad:
            grad = _gradient(out, y_true, y_pred)
            if grad is None:
                return None
        n = y_pred.size
        norm = float(n) if divides else 1.0
        losses = np.empty(y_pred.shape, dtype) if want_value and reduction == "none" else None
        job = ElementwiseJob(
            kind,
            y_pred.reshape(-1),
            y_true.reshape(-1),
            None,
            None,
            delta,
            smoothing,
            clip_lo,
            clip_hi,
            1.0 / norm,
            None if grad is None else grad.reshape(-1),
            None if losses is None else losses.reshape(-1),
            n_threads,
        )
        total = elementwise(job)
        return (losses if losses is not None else total / norm), grad

    def cross_entropy_shortcut(
        y_true,
        y_pred,
        out,
        reduction,
        want_value,
        want_grad,
        n_threads,
        from_logits,
        sparse,
        ignore_index,
        smoothing,
        clip_lo,
        clip_hi,
    ):
        divides = _divides(reduction)
        dtype = _float_prediction(y_pred)
        if divides is None or dtype is None or y_pred.ndim != 2:
            return None
        n, c = y_pred.shape
        if n == 0 or c == 0:
            return None
        labels = target = None
        kept = n
        checked = True
        if sparse:
            if not _plain(y_true, _I64) or y_true.shape != (n,):
                return None
            labels = y_true if labels_input is None else labels_input(y_true)
            checked = (
                unchecked_labels is None
                or ignore_index is not None
                or (want_grad and out is not None)
            )
            if checked:
                kept = kept_labels(labels, c, ignore_index)
                if kept <= 0:  # a bad label (the general path names it), or all ignored
                    return None
        else:
            if not _plain(y_true, dtype) or y_true.shape != y_pred.shape:
                return None
            target = y_true
        grad = None
        if want_grad:
            grad = _gradient(out, y_true, y_pred)
            if grad is None:
                return None
        norm = float(kept) if divides else 1.0
        losses = np.empty(n, dtype) if want_value and reduction == "none" else None
        job = CrossEntropyJob(
            from_logits,
            y_pred,
            labels,
            target,
            -1 if ignore_index is None else ignore_index,  # -1: never a valid label
            None,
            None,
            smoothing,
            clip_lo,
            clip_hi,
            1.0 / norm,
            grad,
            losses,
            n_threads,
        )
        if checked:
            total = cross_entropy(job)
        else:
            total = unchecked_labels(job)
            if total is None:  # a label outside [0, C): the general path names it
                return None
        return (losses if losses is not None else total / norm), grad

    return elementwise_shortcut, cross_entropy_shortcut
