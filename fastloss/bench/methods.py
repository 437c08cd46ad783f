"""The things that are timed on a :class:`~fastloss.bench.cases.Problem`: fastloss on each
backend, the plain-NumPy baseline and the floor (peers live in :mod:`fastloss.bench.peers`),
and the check that a method's result agrees with the reference before it is timed.

A method turns a problem into a :class:`Prepared`: a zero-argument call to time, an optional
``reset`` (run before each sample, outside the timer) and a way to read ``(value, gradient)``
back from the call's result for the check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import Problem, floor_call

__all__ = [
    "FastlossMethod",
    "FloorMethod",
    "Method",
    "NumpyMethod",
    "Prepared",
    "Reference",
    "Unsupported",
    "check",
]


class Unsupported(Exception):
    """This method cannot run this problem/mode; the message says why (shown as a skip)."""


@dataclass
class Prepared:
    call: Callable[[], Any]
    output: Callable[[Any], tuple[float | None, np.ndarray | None]] | None = None
    reset: Callable[[], Any] | None = None
    note: str = ""  # e.g. "allocates its gradient", shown next to the row

    def run_once(self) -> tuple[float | None, np.ndarray | None]:
        """One call from fresh inputs: its ``(value, gradient)``, or ``(None, None)`` for a
        call with nothing to check (the floor)."""
        if self.reset is not None:
            self.reset()
        result = self.call()
        return (None, None) if self.output is None else self.output(result)


class Method:
    """Something to time: ``name`` is shown in tables, ``kind`` is one of ``floor``,
    ``baseline``, ``fastloss``, ``peer``."""

    name: str
    kind: str
    backend: str | None = None

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _value_grad(result: Any) -> tuple[float, np.ndarray]:
    value, grad = result
    return float(value), grad


def _value_only(result: Any) -> tuple[float, None]:
    return float(result), None


class FastlossMethod(Method):
    """fastloss on one backend. ``value_and_grad`` writes into an ``out=`` buffer allocated
    (and first touched) ahead, as a training loop does; ``inplace`` writes the gradient over
    a working copy of the prediction, restored before each sample."""

    kind = "fastloss"

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = f"fastloss {backend}"

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        loss = problem.spec.make(backend=self.backend, n_threads=n_threads)
        t, p = problem.y_true, problem.y_pred
        if mode == "value":
            return Prepared(lambda: loss(t, p), _value_only)
        if mode == "value_and_grad":
            out = np.empty_like(p)
            return Prepared(lambda: loss.value_and_grad(t, p, out=out), _value_grad)
        work = np.empty_like(p)
        return Prepared(lambda: loss.value_and_grad(t, work, out=work), _value_grad,
                        reset=lambda: np.copyto(work, p), note="in place")


class NumpyMethod(Method):
    """The loss written in plain NumPy, the way a user would (:mod:`fastloss.bench.cases`).
    It has no in-place form: in ``inplace`` mode it allocates its gradient as usual."""

    kind = "baseline"
    name = "numpy"

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        formula, t, p = problem.spec.numpy_formula, problem.y_true, problem.y_pred
        if mode == "value":
            return Prepared(lambda: formula(t, p, False), lambda r: (r[0], None))
        note = "allocates" if mode == "inplace" else ""
        return Prepared(lambda: formula(t, p, True), _value_grad, note=note)


class FloorMethod(Method):
    """``np.copyto`` (gradient modes) or ``np.sum`` (value only) of the same bytes."""

    kind = "floor"
    name = "floor"

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        call, label = floor_call(problem, mode)
        return Prepared(call, None, note=label)


# --------------------------------------------------------------------------- verification

_WINDOW = 1 << 16  # gradient elements compared at the start, middle and end


def _windows(grad: np.ndarray) -> list[np.ndarray]:
    flat = np.asarray(grad).reshape(-1)
    if flat.size <= 3 * _WINDOW:
        return [flat.copy()]
    mid = flat.size // 2
    return [flat[:_WINDOW].copy(), flat[mid : mid + _WINDOW].copy(), flat[-_WINDOW:].copy()]


@dataclass
class Reference:
    """The reference result (the NumPy reference backend), kept small: the value and three
    windows of the gradient, so that checking a 256 MiB gradient costs almost nothing."""

    value: float
    grad_windows: list[np.ndarray] | None
    grad_size: int

    @classmethod
    def from_result(cls, value: float, grad: np.ndarray | None) -> Reference:
        if grad is None:
            return cls(float(value), None, 0)
        return cls(float(value), _windows(grad), int(np.size(grad)))


def _tolerance(dtype: np.dtype) -> float:
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-9


def check(ref: Reference, value: float | None, grad: np.ndarray | None,
          dtype: np.dtype) -> str | None:
    """None if ``(value, grad)`` agrees with ``ref`` to the dtype's tolerance, else a short
    description of the first disagreement."""
    tol = _tolerance(dtype)
    if (value is None or not np.isfinite(value)
            or abs(value - ref.value) > tol * max(abs(ref.value), 1e-30)):
        return f"value {value!r} differs from the reference {ref.value!r}"
    if ref.grad_windows is None:
        return None
    if grad is None or np.size(grad) != ref.grad_size:
        shape = None if grad is None else np.shape(grad)
        return f"gradient of shape {shape} does not match the reference's {ref.grad_size} elements"
    for got, want in zip(_windows(grad), ref.grad_windows, strict=True):
        got = got.astype(np.float64)
        want = want.astype(np.float64)
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        err = np.abs(got - want)
        bad = ~(err <= tol * scale + tol * np.abs(want))  # NaN counts as bad
        if bad.any():
            i = int(np.argmax(bad))
            return f"gradient element differs: {got[i]!r} vs reference {want[i]!r}"
    return None
