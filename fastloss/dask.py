"""Losses over Dask arrays: when the data does not fit one machine.

Needs the optional extra ``dask[distributed]`` (``pip install 'fastloss[dask]'``);
``import fastloss`` never imports dask.

The arrays are chunked along their sample axes; a cross-entropy's class axis must be (and
is made, with a rechunk) one chunk. Every block goes once through the loss's kernel on the
worker that holds it and becomes a small :class:`~fastloss.scoring.Accumulator`; the
accumulators are combined by a tree reduction of ``merge``. Only accumulators (a few dozen
bytes each) move between workers: the data is never gathered. Because the accumulator
keeps its float64 sums exactly, the value does not depend on the tree's shape or on which
worker finishes first: it is identical across runs, and equal to one call over the whole
data within 1e-12 relative (only the rounding inside each block's kernel sum differs).

>>> import dask.array as da, numpy as np, fastloss, fastloss.dask
>>> y = da.from_array(np.arange(6.0), chunks=2)
>>> fastloss.dask.value(fastloss.MeanSquaredError(), y, y + 1.0)
1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import dask.array as da
    from dask.delayed import Delayed, delayed
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastloss.dask needs dask: pip install 'fastloss[dask]' (dask[array,distributed])"
    ) from exc

from . import _validation as v
from .losses import Loss
from .scoring._accumulator import Accumulator
from .scoring._batch import run_batch

__all__ = ["accumulate", "grad", "value", "value_and_grad"]

_LETTERS = "abcdefghijklmnopqrstuvwxy"  # blockwise indices; "z" is the class axis


class _Layout:
    """The inputs as aligned dask arrays in the kernel's layout (class axis last)."""

    def __init__(self, loss: Loss, y_true: Any, y_pred: Any, sample_weight: Any) -> None:
        _check_loss(loss)
        pred = da.asarray(y_pred)
        if pred.dtype.kind not in "fiub":
            raise TypeError(f"y_pred must hold real numbers, got dtype {pred.dtype}")
        self.pred_dtype = v.compute_dtype(pred.dtype)
        self.orig_shape = pred.shape
        self.axis: int | None = None
        self.pos_weight: da.Array | None = None
        if loss._elementwise:
            self.loss = loss
            target = _array(y_true, "y_true")
            if target.shape != pred.shape:
                raise ValueError(
                    f"y_true and y_pred must have the same shape, got y_true {target.shape} "
                    f"and y_pred {pred.shape}"
                )
            self.pred = pred
            self.target = target.rechunk(pred.chunks)
            self.sample_shape = pred.shape
            self.sample_chunks = pred.chunks
            # pos_weight broadcasts to the whole of y_pred: each block needs its own slice.
            pw = getattr(loss, "pos_weight", None)
            if pw is not None:
                try:
                    if np.broadcast_shapes(pw.shape, pred.shape) != pred.shape:
                        raise ValueError
                except ValueError:
                    raise ValueError(
                        f"pos_weight of shape {pw.shape} cannot be broadcast to y_pred's shape "
                        f"{pred.shape}"
                    ) from None
                # Broadcast lazily, block by block: a broadcast NumPy view would be
                # materialised at full size when the graph is sent to the workers.
                self.pos_weight = da.broadcast_to(da.from_array(pw), pred.shape).rechunk(
                    pred.chunks
                )
        else:
            if pred.ndim == 0:
                raise ValueError("y_pred must have a class axis (ndim >= 1), got a scalar")
            axis = v.check_axis(loss.axis, pred.ndim)
            self.axis = axis
            # The kernels want the class axis last and whole; a copy of the loss with axis=-1
            # runs on the blocks (same options otherwise, so the same values).
            self.loss = type(loss)(**{**loss.get_config(), "axis": -1})
            moved = pred if axis == pred.ndim - 1 else da.moveaxis(pred, axis, -1)
            moved = moved.rechunk({moved.ndim - 1: -1})
            self.pred = moved
            self.sample_shape = moved.shape[:-1]
            self.sample_chunks = moved.chunks[:-1]
            target = _array(y_true, "y_true")
            if loss._sparse:
                squeezed = pred.shape[:axis] + (1,) + pred.shape[axis + 1 :]
                if target.shape == squeezed and target.shape != self.sample_shape:
                    target = target.reshape(self.sample_shape)
                if target.shape != self.sample_shape:
                    raise ValueError(
                        f"y_true must have y_pred's shape without the class axis, "
                        f"{self.sample_shape} (or {squeezed}), got y_true {target.shape} and "
                        f"y_pred {pred.shape} with axis={axis}"
                    )
                self.target = target.rechunk(self.sample_chunks)
            else:
                if target.shape != pred.shape:
                    raise ValueError(
                        f"y_true and y_pred must have the same shape, got y_true "
                        f"{target.shape} and y_pred {pred.shape}"
                    )
                if axis != pred.ndim - 1:
                    target = da.moveaxis(target, axis, -1)
                self.target = target.rechunk(moved.chunks)
        self.weight = None
        if sample_weight is not None:
            w = _array(sample_weight, "sample_weight")
            what = "loss (= y_pred)" if loss._elementwise else "per-sample loss"
            try:
                if np.broadcast_shapes(w.shape, self.sample_shape) != self.sample_shape:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"sample_weight of shape {w.shape} cannot be broadcast to the {what} shape "
                    f"{self.sample_shape}"
                ) from None
            self.weight = da.broadcast_to(w, self.sample_shape).rechunk(self.sample_chunks)

    # blockwise index strings
    @property
    def sample_ind(self) -> str:
        return _LETTERS[: len(self.sample_shape)]

    @property
    def pred_ind(self) -> str:
        return self.sample_ind if self.axis is None else self.sample_ind + "z"

    @property
    def target_ind(self) -> str:
        return self.pred_ind if self.target.ndim == self.pred.ndim else self.sample_ind

    def blockwise(self, func: Any, out_ind: str, dtype: Any, **kwargs: Any) -> da.Array:
        args: list[Any] = [self.target, self.target_ind, self.pred, self.pred_ind]
        if self.weight is not None:
            args += [self.weight, self.sample_ind]
        if self.pos_weight is not None:
            args += [self.pos_weight, self.pred_ind]
        return da.blockwise(
            func,
            out_ind,
            *args,
            dtype=dtype,
            concatenate=True,
            loss=self.loss,
            has_weight=self.weight is not None,
            **kwargs,
        )

    def block_triples(self) -> list[tuple[Any, Any, Any, Any]]:
        """The aligned ``(y_true, y_pred, weight, pos_weight)`` blocks as Delayed objects."""
        t_blocks = self.target.to_delayed()
        p_blocks = self.pred.to_delayed()
        w_blocks = None if self.weight is None else self.weight.to_delayed()
        pw_blocks = None if self.pos_weight is None else self.pos_weight.to_delayed()
        triples = []
        for idx in np.ndindex(*(len(c) for c in self.sample_chunks)):
            p_idx = idx if self.axis is None else idx + (0,)
            t_idx = p_idx if self.target.ndim == self.pred.ndim else idx
            triples.append(
                (
                    t_blocks[t_idx],
                    p_blocks[p_idx],
                    None if w_blocks is None else w_blocks[idx],
                    None if pw_blocks is None else pw_blocks[p_idx],
                )
            )
        return triples


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a fastloss.Loss instance, got {type(loss).__name__}")


def _array(x: Any, name: str) -> da.Array:
    arr = da.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


# --------------------------------------------------------------------------- tasks


def _block_loss(loss: Loss, pos_weight: np.ndarray | None) -> Loss:
    """The loss that runs on one block, on a worker: ``loss`` itself, or a copy with the
    block's slice of a ``pos_weight`` that spans the whole array, or a copy whose array
    options (``class_weight``...) are aligned again: a loss unpickled on a worker may hold
    arrays that view a message frame at an odd offset, which native kernels refuse."""
    config = loss.get_config()
    fixed = {
        k: np.array(val)
        for k, val in config.items()
        if isinstance(val, np.ndarray) and not val.flags.aligned
    }
    if pos_weight is not None:
        fixed["pos_weight"] = pos_weight
    return type(loss)(**{**config, **fixed}) if fixed else loss


def _block_accumulator(
    loss: Loss,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    weight: np.ndarray | None,
    pos_weight: np.ndarray | None,
) -> Accumulator:
    acc = Accumulator(loss)
    acc._add_part(run_batch(_block_loss(loss, pos_weight), y_true, y_pred, weight))
    return acc


def _merge_all(*accs: Accumulator) -> Accumulator:
    out = accs[0].copy()
    for acc in accs[1:]:
        out.merge(acc)
    return out


def _extras(rest: tuple[np.ndarray, ...], has_weight: bool) -> tuple[Any, Any]:
    """``(weight, pos_weight)`` blocks from the optional trailing blockwise arguments."""
    weight = rest[0] if has_weight else None
    pos_weight = rest[1 if has_weight else 0] if len(rest) > int(has_weight) else None
    return weight, pos_weight


def _block_per_sample(y_true, y_pred, *rest, loss, has_weight):
    weight, pos_weight = _extras(rest, has_weight)
    return run_batch(
        _block_loss(loss, pos_weight), y_true, y_pred, weight, per_sample=True
    ).per_sample


def _block_grad(y_true, y_pred, *rest, loss, has_weight, scale):
    if scale is None:  # everything ignored or zero-weighted: the gradient is 0
        return np.zeros(y_pred.shape, dtype=v.compute_dtype(y_pred.dtype))
    weight, pos_weight = _extras(rest, has_weight)
    return run_batch(_block_loss(loss, pos_weight), y_true, y_pred, weight, grad_scale=scale).grad


def _scale(acc: Accumulator, reduction: str) -> float | None:
    """The gradient's scale, ``1/normaliser``; None when the normaliser is 0."""
    if reduction in ("sum", "none"):
        return 1.0
    norm = acc.weight_sum if reduction == "mean" else float(acc.count)
    return None if norm == 0.0 else 1.0 / norm


# --------------------------------------------------------------------------- public


def accumulate(
    loss: Loss, y_true: Any, y_pred: Any, sample_weight: Any = None, *, split_every: int = 8
) -> Delayed:
    """A lazy :class:`~fastloss.scoring.Accumulator` over the whole arrays: one per block,
    merged in a tree of fan-in ``split_every``. Its ``total``, ``weight_sum``, ``count`` and
    ``value(reduction)`` answer every reduction.

    >>> acc = fastloss.dask.accumulate(fastloss.MeanSquaredError(),
    ...                                da.zeros(4, chunks=2), da.ones(4, chunks=2)).compute()
    >>> acc.total, acc.count
    (4.0, 4)
    """
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    layout = _Layout(loss, y_true, y_pred, sample_weight)
    block = delayed(_block_accumulator, pure=True)
    merge = delayed(_merge_all, pure=True)
    level = [block(layout.loss, t, p, w, pw) for t, p, w, pw in layout.block_triples()]
    while len(level) > 1:
        level = [merge(*level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def value(
    loss: Loss,
    y_true: Any,
    y_pred: Any,
    sample_weight: Any = None,
    *,
    split_every: int = 8,
    compute: bool = True,
) -> float | Delayed | da.Array:
    """The loss value over dask (or NumPy) arrays chunked along the sample axis.

    ``"mean"``, ``"sum"``, ``"sum_over_batch_size"``: a float (computed now on the current
    scheduler, e.g. a ``distributed.Client``), or a Delayed float with ``compute=False``.
    ``"none"``: a lazy dask array of the per-sample losses ``w·l``, chunked like the
    samples of ``y_pred``.

    >>> fastloss.dask.value(fastloss.MeanSquaredError(reduction="sum"),
    ...                     da.zeros(4, chunks=2), da.ones(4, chunks=2))
    4.0
    """
    _check_loss(loss)
    if loss.reduction == "none":
        return _per_sample(loss, y_true, y_pred, sample_weight)
    acc = accumulate(loss, y_true, y_pred, sample_weight, split_every=split_every)
    result = delayed(_reduced, pure=True)(acc, loss.reduction)
    return float(result.compute()) if compute else result


def _reduced(acc: Accumulator, reduction: str) -> float:
    return acc.value(reduction)


def _per_sample(loss: Loss, y_true: Any, y_pred: Any, sample_weight: Any) -> da.Array:
    layout = _Layout(loss, y_true, y_pred, sample_weight)
    return layout.blockwise(_block_per_sample, layout.sample_ind, layout.pred_dtype)


def value_and_grad(
    loss: Loss,
    y_true: Any,
    y_pred: Any,
    sample_weight: Any = None,
    *,
    split_every: int = 8,
    compute: bool = True,
) -> tuple[Any, da.Array]:
    """``(value, gradient)``: the value as :func:`value` gives it, and the gradient with
    respect to ``y_pred`` as a lazy dask array with ``y_pred``'s shape, dtype and chunks
    (a cross-entropy's class axis as one chunk).

    The gradient's scale is ``1/Σw`` (``"mean"``) or ``1/n`` (``"sum_over_batch_size"``),
    which only the whole data set knows: with ``compute=True`` the value (and so the scale)
    is computed now and the gradient's graph just applies the kernel per block; with
    ``compute=False`` the gradient's blocks depend on the lazy reduction.
    For ``"none"`` both are lazy (the gradient is that of the sum of the losses).

    >>> val, g = fastloss.dask.value_and_grad(fastloss.MeanSquaredError(),
    ...                                       da.zeros(4, chunks=2), da.ones(4, chunks=2))
    >>> val, g.compute()
    (1.0, array([0.5, 0.5, 0.5, 0.5]))
    """
    _check_loss(loss)
    layout = _Layout(loss, y_true, y_pred, sample_weight)
    reduction = loss.reduction
    if reduction == "none":
        val: Any = _per_sample(loss, y_true, y_pred, sample_weight)
        scale: Any = 1.0
    elif reduction == "sum":
        val = value(loss, y_true, y_pred, sample_weight, split_every=split_every, compute=compute)
        scale = 1.0
    else:
        acc = accumulate(loss, y_true, y_pred, sample_weight, split_every=split_every)
        if compute:
            acc_now = acc.compute()
            val, scale = acc_now.value(reduction), _scale(acc_now, reduction)
        else:
            val = delayed(_reduced, pure=True)(acc, reduction)
            scale = delayed(_scale, pure=True)(acc, reduction)
    g = layout.blockwise(_block_grad, layout.pred_ind, layout.pred_dtype, scale=scale)
    if layout.axis is not None and layout.axis != len(layout.orig_shape) - 1:
        g = da.moveaxis(g, -1, layout.axis)
    return val, g


def grad(
    loss: Loss, y_true: Any, y_pred: Any, sample_weight: Any = None, *, split_every: int = 8
) -> da.Array:
    """The lazy gradient alone (see :func:`value_and_grad`; the normaliser is computed
    now)."""
    return value_and_grad(loss, y_true, y_pred, sample_weight, split_every=split_every)[1]
