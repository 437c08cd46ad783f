"""The six losses: classes that bind options, and their functional twins.

Each loss has a value, a gradient with respect to the prediction, and a fused
value-and-gradient computed in one pass by the selected backend. Options are validated when
a loss is created; arrays are validated and canonicalised on every call, once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as v
from ._threads import resolve_n_threads
from .backends import check_backend_name, resolve_backend
from .backends._jobs import CrossEntropyJob, ElementwiseJob

__all__ = [
    "Loss",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "Huber",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "SparseCategoricalCrossEntropy",
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "sparse_categorical_cross_entropy",
    "get",
]

Value = float | np.ndarray


@dataclass(slots=True)
class _Plan:
    """One call, canonicalised: the backend job plus what is needed to reduce and reshape."""

    job: ElementwiseJob | CrossEntropyJob
    pred: np.ndarray  # y_pred as given (converted to its compute dtype)
    loss_shape: tuple[int, ...]  # shape of the per-element / per-sample loss
    weight_sum: float  # Σ w over non-ignored entries: the "mean" normaliser
    count: int  # number of non-ignored entries: the "sum_over_batch_size" normaliser
    axis: int | None = None  # class axis of y_pred (cross-entropy only)


class Loss:
    """Base class: the reduction, the backend and the thread count, and the three calls.

    Subclasses implement ``_plan`` (validate arrays, build the backend job), may implement
    ``_shortcut`` (hand a call to the backend's compiled shortcut, which declines what is not
    canonical) and state their options in ``_options``.

    >>> loss = fastloss.get("mse", reduction="sum")
    >>> isinstance(loss, fastloss.Loss), loss([0.0, 0.0], [1.0, 2.0])
    (True, 5.0)
    """

    _options: ClassVar[tuple[str, ...]] = ()
    _elementwise: ClassVar[bool] = True

    def __init__(
        self,
        *,
        reduction: str = "mean",
        backend: str | None = None,
        n_threads: int | None = None,
    ) -> None:
        self.reduction = v.check_reduction(reduction)
        self.backend = None if backend is None else check_backend_name(backend, "backend")
        self.n_threads = v.check_n_threads(n_threads)

    # ------------------------------------------------------------------ public calls

    def __call__(
        self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> Value:
        """The loss value: a float, or an array of per-element/per-sample losses for
        ``reduction="none"``."""
        return self._evaluate(y_true, y_pred, sample_weight, None, want_grad=False)[0]

    def loss(
        self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> Value:
        """Same as calling the instance: the loss value."""
        return self._evaluate(y_true, y_pred, sample_weight, None, want_grad=False)[0]

    def grad(
        self,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        sample_weight: ArrayLike | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Gradient of the value with respect to ``y_pred`` (same shape and dtype as
        ``y_pred``; for ``reduction="none"`` the gradient of the sum of the losses).

        ``out`` may be a preallocated writable C-contiguous array, or ``y_pred`` itself.
        """
        return self._evaluate(y_true, y_pred, sample_weight, out, want_grad=True, want_value=False)[
            1
        ]

    def value_and_grad(
        self,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        sample_weight: ArrayLike | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[Value, np.ndarray]:
        """``(value, grad)`` computed in one fused pass over the data (see :meth:`grad`)."""
        return self._evaluate(y_true, y_pred, sample_weight, out, want_grad=True)

    def accumulator(self) -> Any:
        """A streaming :class:`fastloss.scoring.Accumulator` for this loss: ``update`` per
        batch, ``result`` at the end, ``merge`` across processes; it pickles.

        >>> acc = fastloss.MeanSquaredError().accumulator()
        >>> acc.update([0.0, 1.0], [0.5, 1.0])
        >>> acc.update([2.0], [0.0])
        >>> acc.result()  # == fastloss.mse([0.0, 1.0, 2.0], [0.5, 1.0, 0.0])
        1.4166666666666667
        """
        from .scoring import Accumulator  # imported on use: scoring imports this module

        return Accumulator(self)

    # ------------------------------------------------------------------ internals

    def _plan(self, y_true: Any, pred: np.ndarray, sample_weight: Any) -> _Plan:
        raise NotImplementedError

    def _parts(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None
    ) -> tuple[float, float, int]:
        """``(Σ w·l, Σ w, count)`` for one batch: what a streaming accumulator adds up."""
        backend = resolve_backend(self.backend)
        plan = self._plan(y_true, v.as_prediction(y_pred), sample_weight)
        plan.job.n_threads = resolve_n_threads(self.n_threads)
        return self._run(backend, plan.job), plan.weight_sum, plan.count

    def _run(self, backend: ModuleType, job: ElementwiseJob | CrossEntropyJob) -> float:
        if self._elementwise:
            return backend.elementwise(job)
        return backend.cross_entropy(job)

    def _normaliser(self, plan: _Plan) -> float:
        if self.reduction == "mean":
            return plan.weight_sum
        if self.reduction == "sum_over_batch_size":
            return float(plan.count)
        return 1.0

    def _shortcut(
        self,
        backend: ModuleType,
        dtype: np.dtype,
        y_true: Any,
        y_pred: np.ndarray,
        out: Any,
        want_value: bool,
        want_grad: bool,
    ) -> tuple[Value, np.ndarray | None] | None:
        """The call through the backend's compiled shortcut (``y_pred`` is an ndarray of
        ``dtype`` float32 or float64, there is no ``sample_weight``), or None for the general
        path; see "Shortcuts" in :mod:`fastloss.backends._jobs`."""
        return None

    def _evaluate(self, y_true, y_pred, sample_weight, out, *, want_grad, want_value=True):
        backend = resolve_backend(self.backend)
        # The training-loop call (canonical arrays, no weights) is done by one compiled
        # function where the backend has one; it declines anything else, which the general
        # path below validates, canonicalises, runs or words the error of.
        if sample_weight is None and type(y_pred) is np.ndarray:
            dtype = y_pred.dtype
            if dtype is _F32 or dtype is _F64:
                result = self._shortcut(backend, dtype, y_true, y_pred, out, want_value, want_grad)
                if result is not None:
                    return result
        pred = v.as_prediction(y_pred)
        if out is not None:
            out = v.check_out(out, pred.shape, pred.dtype, pred, (y_true, sample_weight))
        plan = self._plan(y_true, pred, sample_weight)
        job = plan.job
        norm = self._normaliser(plan)
        none = self.reduction == "none"
        grad = self._gradient_buffer(plan, out) if want_grad else None
        if norm == 0.0:
            # Everything ignored or zero-weighted: the mean is defined as 0 (PyTorch: NaN).
            if grad is not None:
                grad.fill(0)
            return 0.0, self._gradient_result(plan, grad, out)
        job.scale = 1.0 / norm
        job.grad_out = grad
        if none and want_value:
            job.loss_out = np.empty(job.pred.shape[0], dtype=pred.dtype)
        job.n_threads = resolve_n_threads(self.n_threads)
        total = self._run(backend, job)
        value: Value = (
            job.loss_out.reshape(plan.loss_shape) if none and want_value else total / norm
        )
        return value, self._gradient_result(plan, grad, out)

    def _gradient_buffer(self, plan: _Plan, out: np.ndarray | None) -> np.ndarray:
        """Where the kernel writes: ``out`` itself when its layout is the kernel's, else new."""
        shape = plan.job.pred.shape
        if out is not None and (plan.axis is None or plan.axis == plan.pred.ndim - 1):
            return out.reshape(shape)
        return np.empty(shape, dtype=plan.pred.dtype)

    def _gradient_result(self, plan: _Plan, grad: np.ndarray | None, out: np.ndarray | None):
        if grad is None:
            return None
        pred = plan.pred
        if plan.axis is None or plan.axis == pred.ndim - 1:
            if out is not None:
                return out
            return grad if grad.shape == pred.shape else grad.reshape(pred.shape)
        moved = np.moveaxis(pred, plan.axis, -1).shape
        result = np.moveaxis(grad.reshape(moved), -1, plan.axis)
        if out is not None:
            out[...] = result
            return out
        return np.ascontiguousarray(result)

    # ------------------------------------------------------------------ niceties

    def get_config(self) -> dict[str, Any]:
        """The options this loss was created with (``type(loss)(**loss.get_config())``
        recreates it)."""
        names = self._options + ("reduction", "backend", "n_threads")
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(val)}" for k, val in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.get_config(), other.get_config()
        return all(_same(a[k], b[k]) for k in a)

    __hash__ = None  # type: ignore[assignment]


# Native-byte-order builtin dtypes are singletons, so ``is`` is an exact (and cheap) test.
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _weight_sum(weight: np.ndarray | None, n: int) -> float:
    """``Σ w``, the ``"mean"`` normaliser (``n`` without weights), in float64."""
    return float(n) if weight is None else float(np.sum(weight))


def _short(value: Any) -> str:
    return f"array({value.tolist()})" if isinstance(value, np.ndarray) else repr(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return a == b


# ---------------------------------------------------------------------- elementwise


_EW_SHAPE = "loss (= y_pred)"  # what elementwise weights broadcast to, for error messages


class _ElementwiseLoss(Loss):
    _kind: ClassVar[str]

    def _plan(self, y_true, pred, sample_weight):
        shape = pred.shape
        target = v.as_target(y_true, pred.dtype, shape)
        weight = v.broadcast_weight(sample_weight, shape, _EW_SHAPE)
        job = ElementwiseJob(
            kind=self._kind,
            pred=v.canonical(pred).reshape(-1),
            target=v.canonical(target).reshape(-1),
            weight=weight,
            pos_weight=self._pos_weight(shape),
        )
        job.delta, job.smoothing, job.clip_lo, job.clip_hi = self._scalars(pred.dtype)
        n = pred.size
        weight_sum = _weight_sum(weight, n)
        return _Plan(job=job, pred=pred, loss_shape=shape, weight_sum=weight_sum, count=n)

    def _shortcut(self, backend, dtype, y_true, y_pred, out, want_value, want_grad):
        shortcut = getattr(backend, "elementwise_shortcut", None)
        if shortcut is None:
            return None
        n_threads = resolve_n_threads(self.n_threads)
        return shortcut(
            y_true,
            y_pred,
            out,
            self.reduction,
            want_value,
            want_grad,
            n_threads,
            self._kind,
            *self._scalars(dtype),
        )

    def _scalars(self, dtype: np.dtype) -> tuple[float, float, float, float]:
        """The job's ``(delta, smoothing, clip_lo, clip_hi)`` for a prediction of ``dtype``."""
        return 1.0, 0.0, 0.0, 1.0

    def _pos_weight(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The job's ``pos_weight`` for a prediction of ``shape``."""
        return None


class MeanSquaredError(_ElementwiseLoss):
    r"""Mean squared error, one loss per element.

    .. math:: l = (p - t)^2, \qquad \partial l / \partial p = 2 (p - t)

    Args:
        reduction: ``"mean"`` (``Σ w·l / Σ w``), ``"sum"``, ``"sum_over_batch_size"``
            (``Σ w·l / n``) or ``"none"`` (``w·l`` per element).
        backend: ``"cython"``, ``"numba"``, ``"numpy"`` or None (the fastest available).
        n_threads: None (all usable cores) or an int ≥ 1.

    Example:
        >>> loss = fastloss.MeanSquaredError()
        >>> loss([0.0, 1.0], [0.5, 1.0])
        0.125
        >>> loss.grad([0.0, 1.0], [0.5, 1.0])
        array([0.5, 0. ])
    """

    _kind = "squared"


class MeanAbsoluteError(_ElementwiseLoss):
    r"""Mean absolute error, one loss per element.

    .. math:: l = |p - t|, \qquad \partial l / \partial p = \operatorname{sign}(p - t)
        \ (0 \text{ at } p = t)

    Args: as :class:`MeanSquaredError`.

    Example:
        >>> fastloss.MeanAbsoluteError(reduction="sum")([0.0, 1.0], [0.5, -1.0])
        2.5
    """

    _kind = "absolute"


class Huber(_ElementwiseLoss):
    r"""Huber loss, one loss per element; ``r = p - t``.

    .. math:: l = \tfrac12 r^2 \text{ if } |r| \le \delta
        \text{ else } \delta(|r| - \tfrac12\delta),
        \qquad \partial l / \partial p = \operatorname{clip}(r, -\delta, \delta)

    Args:
        delta: the threshold ``δ > 0`` between the quadratic and the linear part.
        reduction, backend, n_threads: as :class:`MeanSquaredError`.

    Example:
        >>> fastloss.Huber(delta=1.0)([0.0, 0.0], [0.5, 3.0])
        1.3125
    """

    _kind = "huber"
    _options = ("delta",)

    def __init__(self, delta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delta = v.check_float(delta, "delta", 0.0, float("inf"), closed_low=False)

    def _scalars(self, dtype):
        return self.delta, 0.0, 0.0, 1.0


class BinaryCrossEntropy(_ElementwiseLoss):
    r"""Binary cross-entropy, one loss per element, from logits or probabilities.

    With ``t' = t(1-ε) + ε/2`` (label smoothing ``ε``) and ``π`` = ``pos_weight``:

    .. math::
        \text{logits: } l = (1-t')\,\mathrm{softplus}(x) + \pi t'\,\mathrm{softplus}(-x),
        \quad \partial l/\partial x = (1-t')\sigma(x) - \pi t' \sigma(-x)

        \text{probabilities: } q = \mathrm{clip}(p, \epsilon, 1-\epsilon),
        \quad l = -(\pi t' \log q + (1-t') \log(1-q))

    Logits match ``torch.nn.functional.binary_cross_entropy_with_logits``; probabilities
    match Keras 3 (bounds computed in the input dtype; gradient 0 strictly outside them).

    Args:
        from_logits: whether ``y_pred`` holds logits (True) or probabilities.
        label_smoothing: ``ε`` in ``[0, 1)``.
        pos_weight: weight of the positive term, broadcast to ``y_pred``'s shape.
        eps: the probability clipping bound, in ``(0, 0.5)``.
        reduction, backend, n_threads: as :class:`MeanSquaredError`.

    Example:
        >>> round(fastloss.BinaryCrossEntropy(from_logits=True)([1.0, 0.0], [2.0, -1.0]), 6)
        0.220095
    """

    _kind = "bce_prob"
    _options = ("from_logits", "label_smoothing", "pos_weight", "eps")

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        pos_weight: ArrayLike | None = None,
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.from_logits = v.check_bool(from_logits, "from_logits")
        self.label_smoothing = v.check_float(
            label_smoothing, "label_smoothing", 0.0, 1.0, closed_low=True
        )
        self.pos_weight = v.as_weight_vector(pos_weight, "pos_weight")
        self.eps = v.check_float(eps, "eps", 0.0, 0.5, closed_low=False)
        self._kind = "bce_logits" if self.from_logits else "bce_prob"

    def _scalars(self, dtype):
        lo, hi = v.clip_bounds(dtype, self.eps)
        return 1.0, self.label_smoothing, lo, hi

    def _pos_weight(self, shape):
        return v.broadcast_weight(self.pos_weight, shape, _EW_SHAPE, "pos_weight")

    def _shortcut(self, backend, dtype, y_true, y_pred, out, want_value, want_grad):
        if self.pos_weight is not None:  # broadcast per call: the general path does it
            return None
        return super()._shortcut(backend, dtype, y_true, y_pred, out, want_value, want_grad)


# ---------------------------------------------------------------------- cross-entropy


class _CrossEntropyLoss(Loss):
    _elementwise = False
    _options = ("from_logits", "label_smoothing", "class_weight", "axis", "eps")
    _sparse: ClassVar[bool]

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        class_weight: ArrayLike | None = None,
        axis: int = -1,
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.from_logits = v.check_bool(from_logits, "from_logits")
        self.label_smoothing = v.check_float(
            label_smoothing, "label_smoothing", 0.0, 1.0, closed_low=True
        )
        self.class_weight = v.as_weight_vector(class_weight, "class_weight")
        if self.class_weight is not None and not np.all(np.isfinite(self.class_weight)):
            raise ValueError(f"class_weight must be finite, got {self.class_weight.tolist()}")
        if self.class_weight is not None and self.class_weight.ndim != 1:
            raise ValueError(
                "class_weight must be 1-D (one entry per class), "
                f"got shape {self.class_weight.shape}"
            )
        if not v.is_int(axis):
            raise TypeError(f"axis must be an int, got {axis!r}")
        self.axis = int(axis)  # its range is checked against each y_pred
        self.eps = v.check_float(eps, "eps", 0.0, 0.5, closed_low=False)

    def _plan(self, y_true, pred, sample_weight):
        if pred.ndim == 0:
            raise ValueError("y_pred must have a class axis (ndim >= 1), got a scalar")
        axis = v.check_axis(self.axis, pred.ndim)
        n_classes = pred.shape[axis]
        sample_shape = pred.shape[:axis] + pred.shape[axis + 1 :]
        n = math.prod(sample_shape)
        if n_classes == 0 and n > 0:
            raise ValueError(f"y_pred has no classes along axis {self.axis} (shape {pred.shape})")
        v.check_class_weight(self.class_weight, n_classes)
        last = axis == pred.ndim - 1
        rows = v.canonical(pred if last else np.moveaxis(pred, axis, -1)).reshape(n, n_classes)
        weight = v.broadcast_weight(sample_weight, sample_shape, "per-sample loss")
        job = CrossEntropyJob(
            from_logits=self.from_logits,
            pred=rows,
            weight=weight,
            class_weight=None if self.class_weight is None else v.canonical(self.class_weight),
        )
        job.smoothing, job.clip_lo, job.clip_hi = self._scalars(pred.dtype)
        weight_sum, count = self._targets(job, y_true, pred, axis, sample_shape, last)
        return _Plan(
            job=job,
            pred=pred,
            loss_shape=sample_shape,
            weight_sum=weight_sum,
            count=count,
            axis=axis,
        )

    def _scalars(self, dtype: np.dtype) -> tuple[float, float, float]:
        """The job's ``(smoothing, clip_lo, clip_hi)`` for a prediction of ``dtype``."""
        lo, hi = v.clip_bounds(dtype, self.eps)
        return self.label_smoothing, lo, hi

    def _shortcut(self, backend, dtype, y_true, y_pred, out, want_value, want_grad):
        shortcut = getattr(backend, "cross_entropy_shortcut", None)
        # The shortcut takes (n, C) predictions with the class axis last and no class weights.
        if shortcut is None or self.class_weight is not None or self.axis not in (-1, 1):
            return None
        n_threads = resolve_n_threads(self.n_threads)
        ignore_index = self.ignore_index if self._sparse else None
        return shortcut(
            y_true,
            y_pred,
            out,
            self.reduction,
            want_value,
            want_grad,
            n_threads,
            self.from_logits,
            self._sparse,
            ignore_index,
            *self._scalars(dtype),
        )


class CategoricalCrossEntropy(_CrossEntropyLoss):
    r"""Categorical cross-entropy with one-hot or soft targets; one loss per sample.

    With ``t' = t(1-ε) + ε/C``, class weights ``κ`` and ``c_j = κ_j t'_j``:

    .. math::
        \text{logits: } l = -\sum_j c_j \log\mathrm{softmax}(x)_j,
        \quad \partial l/\partial x_j = (\textstyle\sum_k c_k)\,\mathrm{softmax}(x)_j - c_j

        \text{probabilities: } q = \mathrm{clip}(p / \textstyle\sum_k p_k, \epsilon, 1-\epsilon),
        \quad l = -\sum_j c_j \log q_j

    Logits match ``torch.nn.functional.cross_entropy`` with probability targets (``weight``,
    ``label_smoothing``; ``"mean"`` divides by the number of samples, or by ``Σ
    sample_weight``); probabilities match Keras 3. ``y_true`` has ``y_pred``'s shape.

    Args:
        from_logits: whether ``y_pred`` holds logits (True) or probabilities.
        label_smoothing: ``ε`` in ``[0, 1)``.
        class_weight: one weight per class (PyTorch's ``weight``).
        axis: the class axis of ``y_pred``.
        eps: the probability clipping bound, in ``(0, 0.5)``.
        reduction, backend, n_threads: as :class:`MeanSquaredError`.

    Example:
        >>> loss = fastloss.CategoricalCrossEntropy(from_logits=True)
        >>> round(loss([[0.0, 1.0]], [[0.0, 0.0]]), 6)
        0.693147
    """

    _sparse = False

    def _targets(self, job, y_true, pred, axis, sample_shape, last):
        target = v.as_target(y_true, pred.dtype, pred.shape)
        job.target = v.canonical(target if last else np.moveaxis(target, axis, -1)).reshape(
            job.pred.shape
        )
        n = job.pred.shape[0]
        weight_sum = _weight_sum(job.weight, n)
        return weight_sum, n


class SparseCategoricalCrossEntropy(_CrossEntropyLoss):
    r"""Cross-entropy with integer class labels; one loss per sample.

    Equal to :class:`CategoricalCrossEntropy` with one-hot targets, except for the
    ``"mean"`` normaliser with class weights, which is PyTorch's ``Σ_i w_i κ_{y_i}``:

    .. math:: l = -\sum_j \kappa_j t'_j \log\mathrm{softmax}(x)_j,
        \quad t' = (1-ε)\,\mathrm{onehot}(y) + ε/C

    Matches ``torch.nn.functional.cross_entropy`` with class indices in every combination of
    ``weight``, ``ignore_index``, ``label_smoothing`` and reduction; probabilities match
    Keras 3. ``y_true`` is shaped like ``y_pred`` without the class axis (a size-1 class
    axis is squeezed). Samples labelled ``ignore_index`` weigh 0.

    Args:
        ignore_index: a label value whose samples are ignored, or None.
        from_logits, label_smoothing, class_weight, axis, eps, reduction, backend,
        n_threads: as :class:`CategoricalCrossEntropy`.

    Example:
        >>> loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, ignore_index=-100)
        >>> round(loss([1, -100], [[0.0, 0.0], [5.0, 1.0]]), 6)
        0.693147
    """

    _sparse = True
    _options = _CrossEntropyLoss._options + ("ignore_index",)

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        class_weight: ArrayLike | None = None,
        ignore_index: int | None = None,
        axis: int = -1,
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            label_smoothing=label_smoothing,
            class_weight=class_weight,
            axis=axis,
            eps=eps,
            **kwargs,
        )
        self.ignore_index = v.check_ignore_index(ignore_index)

    def _targets(self, job, y_true, pred, axis, sample_shape, last):
        n_classes = job.pred.shape[1]
        labels = v.as_labels(y_true, sample_shape, pred.shape, axis, n_classes, self.ignore_index)
        job.labels = labels
        if self.ignore_index is None:
            job.ignore_index = -1  # never a valid label: nothing is ignored
            kept = None
            count = labels.shape[0]
        else:
            job.ignore_index = self.ignore_index
            kept = labels != self.ignore_index
            count = int(np.count_nonzero(kept))
        if job.weight is None and self.class_weight is None:
            return float(count), count
        # Σ_i w_i κ_{y_i} over kept samples: PyTorch's "mean" normaliser.
        w = np.ones(labels.shape[0]) if job.weight is None else job.weight
        if self.class_weight is not None:
            safe = labels if kept is None else np.where(kept, labels, 0)
            w = w * self.class_weight[safe]
        if kept is not None:
            w = np.where(kept, w, 0.0)
        return float(np.sum(w)), count


# ---------------------------------------------------------------------- functions


def _common(reduction: str, backend: str | None, n_threads: int | None) -> dict[str, Any]:
    return {"reduction": reduction, "backend": backend, "n_threads": n_threads}


def mse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Mean squared error value; see :class:`MeanSquaredError`.

    >>> fastloss.mse([0.0, 1.0], [0.5, 1.0])
    0.125
    """
    return MeanSquaredError(**_common(reduction, backend, n_threads))(y_true, y_pred, sample_weight)


def mae(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Mean absolute error value; see :class:`MeanAbsoluteError`.

    >>> fastloss.mae([0.0, 1.0], [0.5, -1.0])
    1.25
    """
    return MeanAbsoluteError(**_common(reduction, backend, n_threads))(
        y_true, y_pred, sample_weight
    )


def huber(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    delta: float = 1.0,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Huber loss value; see :class:`Huber`.

    >>> fastloss.huber([0.0, 0.0], [0.5, 3.0], delta=2.0, reduction="sum")
    4.125
    """
    return Huber(delta, **_common(reduction, backend, n_threads))(y_true, y_pred, sample_weight)


def binary_cross_entropy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    pos_weight: ArrayLike | None = None,
    eps: float = 1e-7,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Binary cross-entropy value; see :class:`BinaryCrossEntropy`.

    >>> round(fastloss.binary_cross_entropy([1.0, 0.0], [0.9, 0.2]), 6)
    0.164252
    """
    loss = BinaryCrossEntropy(
        from_logits, label_smoothing, pos_weight, eps, **_common(reduction, backend, n_threads)
    )
    return loss(y_true, y_pred, sample_weight)


def categorical_cross_entropy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    class_weight: ArrayLike | None = None,
    axis: int = -1,
    eps: float = 1e-7,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Categorical cross-entropy value; see :class:`CategoricalCrossEntropy`.

    >>> round(fastloss.categorical_cross_entropy([[0.0, 1.0]], [[0.2, 0.8]]), 6)
    0.223144
    """
    loss = CategoricalCrossEntropy(
        from_logits,
        label_smoothing,
        class_weight,
        axis,
        eps,
        **_common(reduction, backend, n_threads),
    )
    return loss(y_true, y_pred, sample_weight)


def sparse_categorical_cross_entropy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    axis: int = -1,
    eps: float = 1e-7,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> Value:
    """Sparse categorical cross-entropy value; see :class:`SparseCategoricalCrossEntropy`.

    >>> round(fastloss.sparse_categorical_cross_entropy([1], [[0.2, 0.8]]), 6)
    0.223144
    """
    loss = SparseCategoricalCrossEntropy(
        from_logits,
        label_smoothing,
        class_weight,
        ignore_index,
        axis,
        eps,
        **_common(reduction, backend, n_threads),
    )
    return loss(y_true, y_pred, sample_weight)


_NAMES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_cross_entropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "categorical_cross_entropy": CategoricalCrossEntropy,
    "cce": CategoricalCrossEntropy,
    "sparse_categorical_cross_entropy": SparseCategoricalCrossEntropy,
    "sparse_cce": SparseCategoricalCrossEntropy,
}
LOSS_NAMES: tuple[str, ...] = tuple(_NAMES)


def get(name: str, **options: Any) -> Loss:
    """A loss instance by name, with its options.

    Names: ``"mse"``, ``"mae"``, ``"huber"``, ``"binary_cross_entropy"``/``"bce"``,
    ``"categorical_cross_entropy"``/``"cce"``,
    ``"sparse_categorical_cross_entropy"``/``"sparse_cce"`` (and the long forms
    ``"mean_squared_error"``, ``"mean_absolute_error"``).

    >>> fastloss.get("huber", delta=2.0)
    Huber(delta=2.0, reduction='mean', backend=None, n_threads=None)
    """
    cls = _NAMES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown loss name {name!r}; valid names: {', '.join(map(repr, _NAMES))}")
    return cls(**options)
