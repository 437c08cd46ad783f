"""The label check of the sparse cross-entropy shortcut, compiled.

:func:`fastloss.backends._shortcut.job_shortcuts` checks a canonical call's labels before
the kernel runs (every label in ``[0, C)`` or ``ignore_index``) and counts the kept ones
(the ``"mean"`` normaliser) where it must: with ``ignore_index``, or where the kernel would
write into the caller's ``out`` (otherwise the kernel checks the labels itself, see
:func:`._cross_entropy.cross_entropy_unchecked`). In NumPy that is two or three
reductions, about 2.3 µs for 64 labels (a tenth of a small call); this loop does it in one
pass for about 0.4 µs, the dispatcher call included.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _runtime
from ._runtime import CACHE, read_only

__all__ = ["COUNT_LABELS", "count_kept", "kernel_signatures"]


@njit(cache=CACHE, nogil=True)
def COUNT_LABELS(labels, n_classes, ignore_index, has_ignore):  # noqa: N802 (a kernel)
    """How many labels are not ``ignore_index`` (when ``has_ignore``), or -1 if a label that
    is not ignored lies outside ``[0, n_classes)`` (as unsigned, a negative label is huge).
    No branch and no early exit, so that the loops vectorise: at 6553600 labels, 2.0 ms
    (2.2 with ``ignore_index``) against 3.7 (4.9) for a loop that returned at the first bad
    label, and 1.8 ms for NumPy's ``max`` alone (one run, one thread)."""
    c = np.uint64(n_classes)
    bad = 0
    if has_ignore:
        kept = 0
        for i in range(labels.size):
            y = labels[i]
            counted = np.int64(y != ignore_index)
            bad |= counted & np.int64(np.uint64(y) >= c)
            kept += counted
    else:
        kept = labels.size
        for i in range(labels.size):
            bad |= np.int64(np.uint64(labels[i]) >= c)
    return -1 if bad else kept


def count_kept(labels: np.ndarray, n_classes: int, ignore_index: int | None) -> int:
    """:func:`fastloss.backends._shortcut.count_kept` (same arguments and result), compiled:
    ``labels`` is a plain int64 1-D array, ``ignore_index`` None or an int64."""
    if not _runtime._launched:
        # this runs before the kernel's first call: ready Numba as that call would (its
        # registries loaded without SciPy, see _runtime), not as Numba's own first load would
        _runtime._launch()
    if ignore_index is None:
        return COUNT_LABELS(read_only(labels), n_classes, -1, False)
    return COUNT_LABELS(read_only(labels), n_classes, ignore_index, True)


def kernel_signatures():
    """``(description, kernel, example arguments)`` of its one signature, for warmup."""
    yield "sparse labels check", COUNT_LABELS, (read_only(np.zeros(1, np.int64)), 1, -1, False)
