"""Validation and canonicalisation of user arguments, done once at the public boundary.

Every error names the argument and says what was expected. Nothing here modifies an input:
conversions make copies only where the input is not already in canonical form.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

REDUCTIONS = ("mean", "sum", "sum_over_batch_size", "none")
_INT64 = np.iinfo(np.int64)


# --------------------------------------------------------------------------- options


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (any ``numbers.Integral``) and not a bool. The exact
    type is tested first: the ABC test costs ~0.5 µs, most of building a loss."""
    return type(value) is int or (
        not isinstance(value, bool) and isinstance(value, numbers.Integral)
    )


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (any ``numbers.Real``) and not a bool."""
    return (
        type(value) is float
        or type(value) is int
        or (not isinstance(value, bool) and isinstance(value, numbers.Real))
    )


def check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}"
        )
    return reduction  # type: ignore[return-value]


def check_n_threads(n_threads: object) -> int | None:
    if n_threads is None:
        return None
    if not is_int(n_threads):
        raise TypeError(f"n_threads must be None or an int >= 1, got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be None or an int >= 1, got {n_threads!r}")
    return int(n_threads)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_float(value: object, name: str, low: float, high: float, *, closed_low: bool) -> float:
    """A real number in ``[low, high)`` (``closed_low``) or ``(low, high)``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # a Python int beyond the float range
        v = float("inf") if value > 0 else float("-inf")
    inside = (low <= v if closed_low else low < v) and v < high
    if not inside:
        bracket = "[" if closed_low else "("
        raise ValueError(f"{name} must be in {bracket}{low}, {high}), got {value!r}")
    return v


def check_axis(axis: int, ndim: int) -> int:
    """``axis`` (an int, checked when the loss was made) normalised to ``[0, ndim)``."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for y_pred with {ndim} dimension(s)")
    return axis % ndim


def check_ignore_index(value: object) -> int | None:
    if value is None:
        return None
    if not is_int(value):
        raise TypeError(f"ignore_index must be None or an int, got {value!r}")
    if not _INT64.min <= value <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64, got {value!r}")
    return int(value)


def as_weight_vector(value: object, name: str) -> np.ndarray | None:
    """An optional float64 weight array (``class_weight``, ``pos_weight``), read-only."""
    if value is None:
        return None
    arr = _as_real(value, name, np.float64)
    arr = np.array(
        arr, dtype=np.float64, copy=True
    )  # our own copy: later edits by the caller don't leak in
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------- arrays


def _as_real(value: object, name: str, dtype: np.dtype | type | None = None) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a numeric array-like: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr if dtype is None else arr.astype(dtype, copy=False)


def canonical(arr: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """``arr`` as a C-contiguous, aligned array (what a kernel may assume); no copy when it
    already is one. Misaligned arrays (views at odd byte offsets, some memory maps and
    ``.npz`` members, buffers from other processes) are copied."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    return out if out.flags.aligned else out.copy()


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a prediction is computed in: float32/float64 kept (in native byte order),
    float16 → float32, other floats (long double) and integers and bools → float64."""
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_prediction(y_pred: object) -> np.ndarray:
    """``y_pred`` as an array of its compute dtype (no copy when it already is one)."""
    arr = _as_real(y_pred, "y_pred")
    dt = compute_dtype(arr.dtype)
    return arr if arr.dtype == dt else arr.astype(dt)


def as_target(y_true: object, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Float targets of exactly ``shape``, converted to the prediction's dtype."""
    arr = _as_real(y_true, "y_true")
    if arr.shape != shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true {arr.shape} and y_pred {shape}"
        )
    return arr.astype(dtype, copy=False)


def as_labels(
    y_true: object,
    sample_shape: tuple[int, ...],
    pred_shape: tuple[int, ...],
    axis: int,
    n_classes: int,
    ignore_index: int | None,
) -> np.ndarray:
    """Integer labels shaped like the samples, range-checked, as flat C-ordered int64."""
    try:
        arr = np.asarray(y_true)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"y_true must be an integer array-like: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"y_true must hold integer class labels for sparse cross-entropy, got dtype "
            f"{arr.dtype} (use categorical_cross_entropy for one-hot or soft targets)"
        )
    if arr.shape != sample_shape:
        squeezable = arr.shape == pred_shape[:axis] + (1,) + pred_shape[axis + 1 :]
        if not squeezable:
            raise ValueError(
                f"y_true must have y_pred's shape without the class axis, "
                f"{sample_shape} (or {pred_shape[:axis] + (1,) + pred_shape[axis + 1 :]}), "
                f"got y_true {arr.shape} and y_pred {pred_shape} with axis={axis}"
            )
        arr = arr.reshape(sample_shape)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        bad = (arr < 0) | (arr >= n_classes)
        if ignore_index is not None:
            bad &= arr != ignore_index
    else:
        bad = None
    if bad is not None and bad.any():
        pos = np.unravel_index(int(np.argmax(bad)), arr.shape)
        where = tuple(int(i) for i in pos)
        hint = "" if ignore_index is None else f" or equal to ignore_index={ignore_index}"
        raise ValueError(
            f"y_true has label {arr[where]} at index {where}; labels must be in "
            f"[0, {n_classes}){hint} (y_pred has C={n_classes} classes along its axis)"
        )
    return canonical(arr, np.int64).reshape(-1)


def broadcast_weight(
    weight: object, shape: tuple[int, ...], what: str, name: str = "sample_weight"
) -> np.ndarray | None:
    """A weight (``sample_weight``, ``pos_weight``) broadcast (NumPy rules) to ``shape``, as
    flat C-ordered float64."""
    if weight is None:
        return None
    arr = _as_real(weight, name, np.float64)
    try:
        full = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} cannot be broadcast to the {what} shape {shape}"
        ) from None
    return canonical(full).reshape(-1)


def check_class_weight(class_weight: np.ndarray | None, n_classes: int) -> None:
    if class_weight is not None and class_weight.shape != (n_classes,):
        raise ValueError(
            f"class_weight must have one entry per class, shape ({n_classes},), "
            f"got shape {class_weight.shape}"
        )


def check_out(
    out: object,
    shape: tuple[int, ...],
    dtype: np.dtype,
    y_pred: np.ndarray,
    others: tuple[object, ...],
) -> np.ndarray:
    """``out`` must be a writable C-contiguous array of the gradient's shape and dtype that is
    either ``y_pred`` itself or overlaps no input."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out must have the gradient's shape {shape} and dtype {dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out must be writable (got a read-only array)")
    if not out.flags.aligned:
        raise ValueError("out must be aligned to its dtype (got a view at an odd byte offset)")
    if np.may_share_memory(out, y_pred):
        same = (
            out.__array_interface__["data"][0] == y_pred.__array_interface__["data"][0]
            and out.strides == y_pred.strides
        )
        if not same:
            raise ValueError("out overlaps y_pred without being y_pred itself")
    for other in others:
        if isinstance(other, np.ndarray) and np.may_share_memory(out, other):
            raise ValueError("out must not overlap y_true or sample_weight")
    return out


@functools.lru_cache(maxsize=64)
def clip_bounds(dtype: np.dtype, eps: float) -> tuple[float, float]:
    """``[eps, 1 - eps]`` computed in the prediction's dtype, as Keras does."""
    t = dtype.type
    return float(t(eps)), float(t(1) - t(eps))
