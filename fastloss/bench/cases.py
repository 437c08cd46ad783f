"""What is benchmarked: the six losses, their synthetic data, the plain-NumPy baselines and
the memory-bandwidth floor.

This module is the one source of truth for each loss's straightforward-NumPy formula and for
how many bytes a call must move; ``fastloss bench`` and the pytest-benchmark suite in
``benchmarks/`` both use it.

Bytes moved: a fused value-and-gradient call must read the prediction and the target once and
write the gradient once; a value-only call reads both and writes nothing. The *floor* is the
cheapest NumPy operation that moves the same bytes: ``np.copyto`` of ``(read + written) / 2``
bytes for the gradient modes (a copy reads and writes its size), ``np.sum`` over ``read``
bytes for value only. A kernel at 1.0 × floor runs at the machine's memory bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fastloss

__all__ = [
    "DEFAULT_SHAPE",
    "DTYPES",
    "LOSSES",
    "MODES",
    "LossSpec",
    "Problem",
    "SyntheticData",
    "floor_call",
    "make_problem",
    "parse_shape",
    "resolve_loss_name",
]

#: The default problem: 8192 rows of 1000 classes (32 MiB of float32 per array, about 100 MiB
#: touched per call), far beyond the per-core caches and small enough that the slow NumPy
#: rows (the reference backend above all) keep a default run well under a minute on 2 cores.
#: ``--shape 65536,1000`` is the 256 MiB problem of the design notes.
DEFAULT_SHAPE: tuple[int, ...] = (8192, 1000)
DTYPES: tuple[str, ...] = ("float32", "float64")
#: ``inplace``: value_and_grad with the gradient written over the prediction (``out=y_pred``).
MODES: tuple[str, ...] = ("value", "value_and_grad", "inplace")

Formula = Callable[[np.ndarray, np.ndarray, bool], tuple[float, "np.ndarray | None"]]


# --------------------------------------------------------------------------- NumPy baselines
# Written the way a user writes them from a textbook or a framework's docs: whole-array
# expressions, temporaries allocated on every call, the mean's 1/n folded into the gradient.
# Each returns ``(value, grad or None)``; ``want_grad=False`` is the scoring (value-only) path.


def _numpy_mse(t: np.ndarray, p: np.ndarray, want_grad: bool):
    r = p - t
    value = np.mean(r**2)
    return float(value), (2 * r / r.size if want_grad else None)


def _numpy_mae(t: np.ndarray, p: np.ndarray, want_grad: bool):
    r = p - t
    value = np.mean(np.abs(r))
    return float(value), (np.sign(r) / r.size if want_grad else None)


def _numpy_huber(t: np.ndarray, p: np.ndarray, want_grad: bool, delta: float = 1.0):
    r = p - t
    a = np.abs(r)
    value = np.mean(np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)))
    return float(value), (np.clip(r, -delta, delta) / r.size if want_grad else None)


def _numpy_bce_logits(t: np.ndarray, x: np.ndarray, want_grad: bool):
    # The stable form from the TensorFlow docs; the gradient is sigmoid(x) - t.
    value = np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))
    return float(value), ((1 / (1 + np.exp(-x)) - t) / x.size if want_grad else None)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _numpy_cce_logits(t: np.ndarray, x: np.ndarray, want_grad: bool):
    c = x.shape[-1]
    x, t = x.reshape(-1, c), t.reshape(-1, c)
    log_p = _log_softmax(x)
    value = -np.mean(np.sum(t * log_p, axis=1))
    if not want_grad:
        return float(value), None
    return float(value), (np.exp(log_p) - t) / x.shape[0]


def _numpy_sparse_cce_logits(y: np.ndarray, x: np.ndarray, want_grad: bool):
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1)
    rows = np.arange(x.shape[0])
    log_p = _log_softmax(x)
    value = -np.mean(log_p[rows, y])
    if not want_grad:
        return float(value), None
    grad = np.exp(log_p)
    grad[rows, y] -= 1
    grad /= x.shape[0]
    return float(value), grad


# --------------------------------------------------------------------------- the losses


@dataclass(frozen=True)
class LossSpec:
    """One benchmarked loss: how to build it, its data, and its plain-NumPy formula."""

    name: str  # fastloss.get() name
    title: str  # for tables and plots
    target: str  # "regression" | "binary" | "onehot" | "labels"
    numpy_formula: Formula
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def cross_entropy(self) -> bool:
        """Whether ``y_pred`` has a class axis (the last one)."""
        return self.target in ("onehot", "labels")

    def make(self, backend: str | None = None, n_threads: int | None = None) -> fastloss.Loss:
        """The fastloss loss object with this spec's options."""
        return fastloss.get(self.name, backend=backend, n_threads=n_threads, **self.options)


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("mse", "MSE", "regression", _numpy_mse),
        LossSpec("mae", "MAE", "regression", _numpy_mae),
        LossSpec("huber", "Huber (δ=1)", "regression", _numpy_huber, {"delta": 1.0}),
        LossSpec("bce", "BCE (logits)", "binary", _numpy_bce_logits, {"from_logits": True}),
        LossSpec("cce", "CCE (logits)", "onehot", _numpy_cce_logits, {"from_logits": True}),
        LossSpec("sparse_cce", "sparse CCE (logits)", "labels", _numpy_sparse_cce_logits,
                 {"from_logits": True}),
    )
}


def resolve_loss_name(name: str) -> str:
    """The benchmark's name for any name :func:`fastloss.get` accepts; ``ValueError`` if none."""
    key = name.strip().lower()
    if key in LOSSES:
        return key
    if key in fastloss.LOSS_NAMES:
        cls = type(fastloss.get(key))
        for spec in LOSSES.values():
            if type(spec.make()) is cls:
                return spec.name
    raise ValueError(f"unknown loss {name!r} (valid: {', '.join(LOSSES)})")


# --------------------------------------------------------------------------- shapes


def parse_shape(text: str) -> tuple[int, ...]:
    """``"16384,1000"``, ``"16384x1000"``, ``"(64, 10)"`` or ``"1000000"`` → a tuple of
    positive ints; ``ValueError`` otherwise."""
    cleaned = text.strip().strip("()[]").replace("x", ",").replace("X", ",").replace("*", ",")
    parts = [part.strip() for part in cleaned.split(",")]
    if parts and parts[-1] == "":  # "(64,)"
        parts.pop()
    try:
        shape = tuple(int(part.replace("_", "")) for part in parts)
    except ValueError:
        raise ValueError(
            f"bad shape {text!r}: expected positive integers such as 16384,1000"
        ) from None
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"bad shape {text!r}: every dimension must be a positive integer")
    return shape


# --------------------------------------------------------------------------- data


class SyntheticData:
    """Reproducible inputs of one shape and dtype, generated on first use and shared by every
    loss (the prediction array is the same for all of them and is never modified).

    Predictions and regression targets are uniform in ``[-3, 3)`` (uniform draws are several
    times cheaper to generate than normal ones, and the range reaches both branches of Huber
    and the saturated parts of the sigmoid); labels are uniform over the classes.
    """

    _STREAMS = {"prediction": 0, "regression": 1, "binary": 2, "labels": 3}

    def __init__(self, shape: tuple[int, ...], dtype: str | np.dtype, seed: int = 0) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self._arrays: dict[str, np.ndarray] = {}

    def _rng(self, stream: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._STREAMS[stream]])

    def _uniform(self, stream: str) -> np.ndarray:
        a = self._rng(stream).random(self.shape, dtype=self.dtype)
        a *= 6
        a -= 3
        return a

    def prediction(self) -> np.ndarray:
        if "prediction" not in self._arrays:
            self._arrays["prediction"] = self._uniform("prediction")
        return self._arrays["prediction"]

    def target(self, kind: str) -> np.ndarray:
        if kind not in self._arrays:
            self._arrays[kind] = self._make_target(kind)
        return self._arrays[kind]

    def _make_target(self, kind: str) -> np.ndarray:
        if kind == "regression":
            return self._uniform("regression")
        if kind == "binary":
            return self._rng("binary").integers(0, 2, self.shape, dtype=np.int8).astype(self.dtype)
        if kind == "labels":
            return self._rng("labels").integers(0, self.shape[-1], self.shape[:-1], dtype=np.int64)
        if kind == "onehot":
            labels = self.target("labels").reshape(-1)
            onehot = np.zeros(self.shape, dtype=self.dtype)
            onehot.reshape(-1, self.shape[-1])[np.arange(labels.size), labels] = 1
            return onehot
        raise ValueError(f"unknown target kind {kind!r}")

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


@dataclass
class Problem:
    """One loss on one data set: the inputs and the bytes a call must move."""

    spec: LossSpec
    y_true: np.ndarray
    y_pred: np.ndarray  # shared, never modified: in-place runs work on a copy

    @property
    def shape(self) -> tuple[int, ...]:
        return self.y_pred.shape

    @property
    def dtype(self) -> np.dtype:
        return self.y_pred.dtype

    @property
    def n_classes(self) -> int | None:
        return self.shape[-1] if self.spec.cross_entropy else None

    def bytes_read(self) -> int:
        return self.y_pred.nbytes + self.y_true.nbytes

    def bytes_moved(self, mode: str) -> int:
        """Bytes a single pass must read and write in ``mode``."""
        return self.bytes_read() + (0 if mode == "value" else self.y_pred.nbytes)


def make_problem(spec: LossSpec, data: SyntheticData) -> Problem:
    if spec.cross_entropy and len(data.shape) < 2:
        raise ValueError(
            f"{spec.name} needs a shape with a class axis, such as (rows, classes); "
            f"got {data.shape}"
        )
    return Problem(spec, data.target(spec.target), data.prediction())


# --------------------------------------------------------------------------- the floor


def floor_call(problem: Problem, mode: str) -> tuple[Callable[[], Any], str]:
    """The memory-bandwidth floor for ``problem`` in ``mode`` (see the module docstring):
    the call to time and its label. The buffers are written here, so no page is first touched
    inside a measurement."""
    itemsize = problem.dtype.itemsize
    if mode == "value":
        src = np.ones(math.ceil(problem.bytes_read() / itemsize), dtype=problem.dtype)
        return (lambda: np.sum(src)), "np.sum"
    n = math.ceil(problem.bytes_moved(mode) / 2 / itemsize)
    src = np.ones(n, dtype=problem.dtype)
    dst = np.zeros_like(src)
    dst.fill(0)
    return (lambda: np.copyto(dst, src)), "np.copyto"
