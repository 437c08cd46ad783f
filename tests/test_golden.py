"""Golden values from PyTorch and Keras 3, checked on every available backend.

The ``.npz`` files under ``tests/golden/`` are written by ``tests/golden/make_golden.py``
(the only code that imports torch/keras); their layout is described there. Each case gives
inputs, options and, for each reduction, the peer's value and its gradient with respect to
``y_pred``. Each is checked through the public API: the function (``fastloss.<loss>``), and
the class' ``grad`` and ``value_and_grad``.

Tolerances (``|actual - expected| <= rtol·|expected| + atol·scale``, where ``scale`` is the
largest ``|expected|`` of the array, or a scalar's own magnitude):

* float64: ``rtol = 1e-12``, ``atol = 1e-14``. The peers compute in float64 too; what remains
  are rounding differences between two float64 evaluations (a few ulp of the terms) and
  cancellation in the peer. The latter is why ``atol`` exists: torch's BCE-with-logits value
  ``(1-t)·x + π'·(log1p(e^-|x|) + max(-x, 0))`` loses digits for negative ``x`` (x = -11.3:
  1.73583963275e-05 instead of the exact 1.73583963283e-05 that fastloss returns, a relative
  error of 4e-11 but 6e-17 of the array's scale), and its gradient ``σ(x)·(…) - π·t`` returns
  0 instead of -4e-18 for a saturated logit. Measured with the NumPy backend: every entry is
  within ``2e-13`` relative or ``1e-16·scale`` absolute; ``atol`` leaves room for the native
  backends' ~1-ulp ``exp``/``log`` and their summation order, and does not loosen any entry of
  the order of the scale, which ``rtol`` governs.
* float32: ``rtol = 1e-5``, ``atol = 1e-6``. float32 peers compute in float32 (smoothing, the
  renormalisation ``p / Σp``, ``log``, the reductions), fastloss in float64 rounded once, so
  the peer carries several float32 rounding errors (ulp 6e-8) per term, amplified where a
  result is a difference of nearly equal terms. Measured: at most 2e-6 relative. The clip
  decisions, which must be exact, are checked separately: for BCE from probabilities the
  gradient must be exactly 0 where the peer's is 0 (clipped) and only there; and the
  ``bce.special.float32`` case has ``p = 0.99999994`` (the float32 above ``1 - 1e-7``), whose
  value differs by 0.18 between the float32 bound ``1 - 2^-23`` and a float64 ``1 - 1e-7``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fastloss

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))
BACKENDS = fastloss.available_backends()

CLASSES = {
    "mse": fastloss.MeanSquaredError,
    "mae": fastloss.MeanAbsoluteError,
    "huber": fastloss.Huber,
    "binary_cross_entropy": fastloss.BinaryCrossEntropy,
    "categorical_cross_entropy": fastloss.CategoricalCrossEntropy,
    "sparse_categorical_cross_entropy": fastloss.SparseCategoricalCrossEntropy,
}
TOLERANCES = {"float64": (1e-12, 1e-14), "float32": (1e-5, 1e-6)}


def _load():
    """``[(group, case, arrays)]`` for every case of every golden file."""
    out = []
    for path in GOLDEN_FILES:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        for case in meta["cases"]:
            prefix = case["name"] + "/"
            mine = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
            out.append((path.stem, case, mine, meta["versions"]))
    return out


CASES = _load()
PARAMS = [
    pytest.param(case, arrays, red, id=f"{group}:{case['name']}[{red}]")
    for group, case, arrays, _ in CASES
    for red in case["reductions"]
]


def test_golden_files_present_and_small():
    names = {p.name for p in GOLDEN_FILES}
    assert names >= {"torch_ce.npz", "torch_bce.npz", "torch_regression.npz",
                     "keras_prob.npz"}, names
    assert sum(p.stat().st_size for p in GOLDEN_FILES) < 1 << 20
    for group, _, _, versions in CASES:
        assert versions["torch"] and (group.startswith("torch") or versions["keras"])


def _options(case, arrays, red, backend):
    opts = dict(case["options"])
    for key in case["array_options"]:
        opts[key] = arrays[key]
    return {**opts, "reduction": red, "backend": backend}


def _sample_weight(arrays):
    return arrays.get("sample_weight")


def _check_close(actual, expected, dtype, what):
    rtol, atol = TOLERANCES[dtype]
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = rtol * np.abs(expected.astype(np.float64)) + atol * scale
    bad = ~(err <= bound)
    if bad.any():
        idx = np.argwhere(bad)[:5] if expected.ndim else [()]
        detail = "; ".join(
            f"{tuple(i)}: got {actual[tuple(i)]!r}, expected {expected[tuple(i)]!r}" for i in idx
        )
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} entries out of tolerance "
                    f"(rtol={rtol}, atol={atol}·{scale:.3g}): {detail}")


def _check_value(value, expected, case, red, what):
    dtype = case["dtype"]
    if red == "none":
        assert isinstance(value, np.ndarray), (what, type(value))
        assert value.dtype == np.dtype(dtype), (what, value.dtype)
    else:
        assert isinstance(value, float), (what, type(value))
    _check_close(value, expected, dtype, what)


def _check_grad(grad, expected, case, what):
    assert isinstance(grad, np.ndarray) and grad.dtype == np.dtype(case["dtype"]), what
    _check_close(grad, expected, case["dtype"], what)
    if case["loss"] == "binary_cross_entropy" and not case["options"].get("from_logits"):
        # The clip bounds in the input dtype decide exactly where the gradient vanishes.
        np.testing.assert_array_equal(grad == 0, expected == 0, err_msg=f"{what}: clipping")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("case", "arrays", "red"), PARAMS)
def test_function_value(case, arrays, red, backend):
    fn = getattr(fastloss, case["loss"])
    y_true, y_pred = arrays["y_true"].copy(), arrays["y_pred"].copy()
    value = fn(y_true, y_pred, _sample_weight(arrays), **_options(case, arrays, red, backend))
    _check_value(value, arrays[f"value/{red}"], case, red, f"fastloss.{case['loss']}")
    # Inputs are never modified.
    np.testing.assert_array_equal(y_pred, arrays["y_pred"])
    np.testing.assert_array_equal(y_true, arrays["y_true"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("case", "arrays", "red"), PARAMS)
def test_class_grad_and_value_and_grad(case, arrays, red, backend):
    loss = CLASSES[case["loss"]](**_options(case, arrays, red, backend))
    y_true, y_pred, sw = arrays["y_true"], arrays["y_pred"], _sample_weight(arrays)
    expected_value, expected_grad = arrays[f"value/{red}"], arrays[f"grad/{red}"]
    name = type(loss).__name__
    _check_grad(loss.grad(y_true, y_pred, sw), expected_grad, case, f"{name}.grad")
    value, grad = loss.value_and_grad(y_true, y_pred, sw)
    _check_value(value, expected_value, case, red, f"{name}.value_and_grad value")
    _check_grad(grad, expected_grad, case, f"{name}.value_and_grad grad")
    _check_value(loss(y_true, y_pred, sw), expected_value, case, red, f"{name}.__call__")
