"""Streaming accumulator: a loss over data that arrives in batches, or lives in pieces on
several machines.

>>> import numpy as np, fastloss
>>> loss = fastloss.MeanSquaredError()
>>> acc = loss.accumulator()
>>> acc.update([0.0, 1.0], [0.5, 1.0])
>>> acc.update([2.0], [0.0])
>>> acc.result() == loss([0.0, 1.0, 2.0], [0.5, 1.0, 0.0])
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..losses import Loss
from ._batch import BatchResult, run_batch
from ._exact import ExactSum

__all__ = ["Accumulator", "accumulator"]

_STATE_VERSION = 1


class Accumulator:
    """Adds up a loss batch by batch: ``update`` per batch, ``result`` at the end, ``merge``
    to combine accumulators built elsewhere (processes, machines); it pickles.

    Each batch runs the loss's kernel once and contributes three numbers: ``Σ w·l`` (float64),
    ``Σ w`` (the ``"mean"`` normaliser: for sparse cross-entropy ``Σ sample_weight ·
    class_weight[label]`` over non-ignored samples) and the number of non-ignored losses (the
    ``"sum_over_batch_size"`` normaliser). The float sums are kept *exactly* (Shewchuk
    partials), so the result is the same for any batch order and any merge order, and equals
    one call over the concatenated data up to the rounding inside each batch's kernel sum
    (within 1e-12 relative).

    Batches are consecutive pieces of the data along its sample axis: the first axis of
    ``y_pred`` (the second when a cross-entropy's class axis is the first). Every other axis
    must be the same in all batches, as it would have to be for one concatenated call.

    For ``reduction="none"`` the accumulator keeps each batch's per-sample losses ``w·l``
    and :meth:`result` returns them concatenated along the sample axis; :meth:`update` also
    returns the batch's per-sample losses for every reduction when ``per_sample=True``, so a
    caller that streams them elsewhere need not keep them.
    """

    def __init__(self, loss: Loss) -> None:
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be a fastloss.Loss instance, got {type(loss).__name__}")
        self._loss = loss
        self._total = ExactSum()
        self._weight_sum = ExactSum()
        self._count = 0
        self._pieces: list[np.ndarray] = []  # per-sample losses, reduction="none" only
        self._tail: tuple[int, ...] | None = None  # y_pred's shape without the sample axis
        self._n_updates = 0

    # ------------------------------------------------------------------ the three calls

    def update(
        self,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        per_sample: bool = False,
    ) -> np.ndarray | None:
        """Add one batch. Validation is that of a normal call of the loss (nothing is added
        when it raises). Returns the batch's per-sample losses ``w·l`` when ``per_sample``
        is true (else None)."""
        pred = np.asarray(y_pred) if not isinstance(y_pred, np.ndarray) else y_pred
        tail = self._check_tail(pred)
        keep = self._loss.reduction == "none"
        part = run_batch(self._loss, y_true, pred, sample_weight, per_sample=keep or per_sample)
        self._add_part(part)
        self._tail = tail
        return part.per_sample if per_sample else None

    def result(self) -> float | np.ndarray:
        """The loss value over everything added so far: a float for ``"mean"``, ``"sum"``
        and ``"sum_over_batch_size"`` (0.0 when the normaliser is 0, as for one call), the
        concatenated per-sample losses for ``"none"``."""
        reduction = self._loss.reduction
        if reduction == "none":
            return self._concatenated()
        return self.value(reduction)

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s batches to this accumulator (``other`` is unchanged) and return
        ``self``. Both must come from equal losses. For ``"none"`` the per-sample losses of
        ``other`` are appended after this accumulator's own."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"can only merge another Accumulator, got {type(other).__name__}")
        if not _same_loss(self._loss, other._loss):
            raise ValueError(
                f"cannot merge accumulators of different losses: {self._loss!r} and {other._loss!r}"
            )
        if self._tail is not None and other._tail is not None and self._tail != other._tail:
            raise ValueError(
                f"cannot merge accumulators of differently shaped data: samples of shape "
                f"{self._tail} and {other._tail}"
            )
        self._total.merge(other._total)
        self._weight_sum.merge(other._weight_sum)
        self._count += other._count
        self._pieces.extend(other._pieces)
        self._tail = self._tail if self._tail is not None else other._tail
        self._n_updates += other._n_updates
        return self

    # ------------------------------------------------------------------ what it holds

    @property
    def loss(self) -> Loss:
        """The loss this accumulator adds up."""
        return self._loss

    @property
    def total(self) -> float:
        """``Σ w·l`` over everything added (the ``"sum"`` value)."""
        return self._total.value

    @property
    def weight_sum(self) -> float:
        """``Σ w`` over non-ignored entries (the ``"mean"`` normaliser)."""
        return self._weight_sum.value

    @property
    def count(self) -> int:
        """The number of non-ignored losses (the ``"sum_over_batch_size"`` normaliser)."""
        return self._count

    @property
    def n_updates(self) -> int:
        """How many batches were added (including those of merged accumulators)."""
        return self._n_updates

    def value(self, reduction: str | None = None) -> float:
        """The reduced value for ``reduction`` (default: the loss's own; ``"none"`` is not a
        reduced value). One accumulator answers every reduction."""
        reduction = self._loss.reduction if reduction is None else reduction
        total = self.total
        if reduction == "sum":
            return total
        if reduction == "mean":
            norm = self.weight_sum
        elif reduction == "sum_over_batch_size":
            norm = float(self._count)
        else:
            raise ValueError(
                f"reduction must be 'mean', 'sum' or 'sum_over_batch_size' for a reduced "
                f"value, got {reduction!r}"
            )
        return 0.0 if norm == 0.0 else total / norm

    def copy(self) -> Accumulator:
        """An independent accumulator with the same content."""
        new = Accumulator(self._loss)
        return new.merge(self)

    # ------------------------------------------------------------------ internals

    def _add_part(self, part: BatchResult) -> None:
        """Add one batch's kernel result (no shape bookkeeping: fastloss.dask adds blocks
        that are not stacked along one axis)."""
        self._total.add(part.total)
        self._weight_sum.add(part.weight_sum)
        self._count += part.count
        if self._loss.reduction == "none":
            self._pieces.append(part.per_sample)
        self._n_updates += 1

    def _check_tail(self, pred: np.ndarray) -> tuple[int, ...] | None:
        axis = self._sample_axis(pred.ndim)
        if axis is None:
            return None
        tail = pred.shape[:axis] + pred.shape[axis + 1 :]
        if self._tail is not None and tail != self._tail:
            raise ValueError(
                f"y_pred of shape {pred.shape} does not continue the earlier batches: "
                f"apart from the sample axis ({axis}) their shape was {self._tail}"
            )
        return tail

    def _sample_axis(self, ndim: int) -> int | None:
        """The axis batches are stacked along: y_pred's first, or its second when a
        cross-entropy's class axis is the first."""
        if ndim == 0:
            return None
        axis = getattr(self._loss, "axis", None)
        if axis is not None and ndim >= 2 and axis % ndim == 0:
            return 1
        return 0

    def _concatenated(self) -> np.ndarray:
        if not self._pieces:
            return np.zeros(0)
        if self._pieces[0].ndim == 0:
            return np.concatenate([p.reshape(-1) for p in self._pieces])
        return np.concatenate(self._pieces, axis=0)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "loss": self._loss,
            "total": self._total,
            "weight_sum": self._weight_sum,
            "count": self._count,
            "pieces": self._pieces,
            "tail": self._tail,
            "n_updates": self._n_updates,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported Accumulator pickle version {state.get('version')!r}")
        self._loss = state["loss"]
        self._total = state["total"]
        self._weight_sum = state["weight_sum"]
        self._count = state["count"]
        self._pieces = state["pieces"]
        self._tail = state["tail"]
        self._n_updates = state["n_updates"]

    def __repr__(self) -> str:
        return (
            f"Accumulator({self._loss!r}, total={self.total!r}, weight_sum={self.weight_sum!r}, "
            f"count={self._count}, n_updates={self._n_updates})"
        )


def _same_loss(a: Loss, b: Loss) -> bool:
    same = a == b
    return same is True


def accumulator(loss: Loss) -> Accumulator:
    """A fresh :class:`Accumulator` for ``loss`` (what ``loss.accumulator()`` returns)."""
    return Accumulator(loss)
