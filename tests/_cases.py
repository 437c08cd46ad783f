"""Random problems for every loss and option combination, shared by the property tests.

A case is ``(name, options, y_true, y_pred, sample_weight)``; ``make_loss`` turns it into a
loss instance on a given backend. Inputs stay away from the points where a loss is not
differentiable (|r| = δ for Huber, r = 0 for MAE, the clipping bounds for probabilities), so
finite differences are meaningful.
"""

from __future__ import annotations

import itertools

import numpy as np

import fastloss

REDUCTIONS = ("mean", "sum", "sum_over_batch_size", "none")


def _elementwise_pred(kind: str, rng: np.random.Generator, shape) -> np.ndarray:
    if kind == "bce_prob":
        return rng.uniform(0.05, 0.95, shape)
    return rng.normal(0.0, 2.0, shape)


def _option_grid(name: str):
    """Every combination of the loss-specific options worth covering."""
    if name in ("mse", "mae"):
        return [{}]
    if name == "huber":
        return [{"delta": 0.7}, {"delta": 2.0}]
    if name == "bce":
        return [
            {"from_logits": fl, "label_smoothing": ls, "pos_weight": pw}
            for fl, ls, pw in itertools.product((True, False), (0.0, 0.2), (None, "vector"))
        ]
    grid = []
    sparse = name == "sparse_cce"
    for fl, ls, cw in itertools.product((True, False), (0.0, 0.15), (None, "vector")):
        opts = {"from_logits": fl, "label_smoothing": ls, "class_weight": cw}
        grid.append(opts)
        if sparse:
            grid.append({**opts, "ignore_index": -100})
    return grid


LOSS_NAMES = ("mse", "mae", "huber", "bce", "cce", "sparse_cce")


def all_option_sets():
    """(name, options) for every loss and option combination (with placeholder vectors)."""
    return [(name, opts) for name in LOSS_NAMES for opts in _option_grid(name)]


def case_id(name: str, opts: dict) -> str:
    bits = [name] + [f"{k}={v}" for k, v in opts.items() if v not in (None, 0.0, False)]
    return "-".join(bits)


def make_case(
    name: str,
    opts: dict,
    rng: np.random.Generator,
    *,
    n: int = 7,
    c: int = 5,
    dtype=np.float64,
    weighted: bool = False,
):
    """Concrete (options, y_true, y_pred, sample_weight) for ``name``/``opts``."""
    opts = dict(opts)
    if name in ("mse", "mae", "huber", "bce"):
        shape = (n, c)
        if name == "bce":
            kind = "bce_logits" if opts.get("from_logits") else "bce_prob"
            y_true = rng.uniform(0, 1, shape)
            y_true[rng.uniform(size=shape) < 0.5] = 1.0
            y_true[rng.uniform(size=shape) < 0.3] = 0.0
            if opts.get("pos_weight") == "vector":
                opts["pos_weight"] = rng.uniform(0.5, 3.0, c)
        else:
            kind = name
            y_true = rng.normal(0.0, 2.0, shape)
        y_pred = _elementwise_pred(kind, rng, shape)
        if name == "mae":  # keep |r| away from 0 where |·| has no derivative
            r = y_pred - y_true
            y_pred = np.where(np.abs(r) < 0.05, y_pred + 0.1, y_pred)
        if name == "huber":  # keep |r| away from δ
            d = opts["delta"]
            r = y_pred - y_true
            y_pred = np.where(np.abs(np.abs(r) - d) < 0.05, y_pred + 0.15, y_pred)
        sw = rng.uniform(0.0, 2.0, shape) if weighted else None
    else:
        shape = (n, c)
        if opts.get("class_weight") == "vector":
            opts["class_weight"] = rng.uniform(0.2, 2.0, c)
        if opts.get("from_logits"):
            y_pred = rng.normal(0.0, 3.0, shape)
        else:
            y_pred = rng.uniform(0.1, 1.0, shape)  # unnormalised: the loss renormalises
        if name == "cce":
            raw = rng.exponential(1.0, shape)
            y_true = raw / raw.sum(axis=1, keepdims=True)
        else:
            y_true = rng.integers(0, c, n)
            if opts.get("ignore_index") is not None:
                y_true[rng.uniform(size=n) < 0.3] = opts["ignore_index"]
                y_true[0] = 0  # at least one sample counts
        sw = rng.uniform(0.0, 2.0, n) if weighted else None
    return opts, y_true, y_pred.astype(dtype), sw


def make_loss(
    name: str,
    opts: dict,
    *,
    reduction: str = "mean",
    backend: str | None = None,
    n_threads: int | None = None,
) -> fastloss.Loss:
    return fastloss.get(name, **opts, reduction=reduction, backend=backend, n_threads=n_threads)


def tolerances(dtype) -> dict[str, float]:
    """How close a backend must be to the float64 reference.

    float64: every backend computes in float64, differing only by the rounding of exp/log
    (a few ulps) and summation order. float32: a native backend may compute the elementwise
    math in float32 (≈ 6e-8 relative per operation, a few operations per element).
    """
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-10, "atol": 1e-13}
    return {"rtol": 2e-5, "atol": 2e-6}


def assert_close(actual, expected, dtype, scale: float = 1.0) -> None:
    """allclose with the dtype's tolerances; ``atol`` is relative to ``scale``."""
    tol = tolerances(dtype)
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)
