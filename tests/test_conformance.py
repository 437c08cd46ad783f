"""The conformance suite: every backend agrees with the NumPy reference, for every loss,
option combination, reduction and dtype, and has the contract's structural properties
(fused == separate, in place == out of place, thread-count independence, inputs untouched).

Backends are picked up from ``fastloss.available_backends()``, so a new backend inherits
the whole suite.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cases import REDUCTIONS, all_option_sets, assert_close, case_id, make_case, make_loss

OPTION_SETS = all_option_sets()
IDS = [case_id(name, opts) for name, opts in OPTION_SETS]


def _scale(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    return float(np.max(np.abs(finite))) if finite.size else 1.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_backend_matches_reference(backend, name, opts, weighted, dtype, rng):
    check_matches_reference(backend, name, opts, weighted, dtype, rng)


def check_matches_reference(backend, name, opts, weighted, dtype, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=33, c=7, dtype=dtype, weighted=weighted)
    for reduction in REDUCTIONS:
        ref = make_loss(name, opts, reduction=reduction, backend="numpy")
        got = make_loss(name, opts, reduction=reduction, backend=backend)
        v_ref, g_ref = ref.value_and_grad(y_true, y_pred, sw)
        v_got, g_got = got.value_and_grad(y_true, y_pred, sw)
        assert g_got.dtype == y_pred.dtype and g_got.shape == y_pred.shape
        assert_close(v_got, v_ref, dtype, scale=_scale(v_ref))
        assert_close(g_got, g_ref, dtype, scale=_scale(g_ref))
        if reduction == "none":
            assert isinstance(v_got, np.ndarray) and v_got.dtype == y_pred.dtype
        else:
            assert type(v_got) is float


@pytest.mark.parametrize("flaw", ["value", "gradient", "per-sample"])
def test_suite_catches_a_backend_that_is_slightly_wrong(monkeypatch, flaw, rng):
    """The comparison above can fail: a backend off by 1e-7 relative is caught."""
    import types

    import fastloss.backends as registry
    from fastloss.backends import numpy as reference

    def skewed(kernel):
        def run(job):
            total = kernel(job)
            if flaw == "gradient" and job.grad_out is not None:
                job.grad_out[...] *= 1 + 1e-7
            if flaw == "per-sample" and job.loss_out is not None:
                job.loss_out[...] *= 1 + 1e-7
            return total * (1 + 1e-7) if flaw == "value" else total

        return run

    broken = types.SimpleNamespace(
        name="broken",
        elementwise=skewed(reference.elementwise),
        cross_entropy=skewed(reference.cross_entropy),
    )
    monkeypatch.setitem(registry._loaded, "numba", broken)
    monkeypatch.setattr(registry, "_available", ("numba", "numpy"))
    for name, opts in [("mse", {}), ("sparse_cce", {"from_logits": True})]:
        with pytest.raises(AssertionError):
            check_matches_reference("numba", name, opts, True, np.float64, rng)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_value_and_grad_equals_separate_calls(backend, name, opts, dtype, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=40, c=6, dtype=dtype, weighted=True)
    for reduction in REDUCTIONS:
        loss = make_loss(name, opts, reduction=reduction, backend=backend)
        value, grad = loss.value_and_grad(y_true, y_pred, sw)
        np.testing.assert_array_equal(grad, loss.grad(y_true, y_pred, sw))
        # The same kernel sums the same float64 terms in the same order.
        np.testing.assert_array_equal(loss(y_true, y_pred, sw), value)
        np.testing.assert_array_equal(loss.loss(y_true, y_pred, sw), value)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_in_place_and_out_buffer_match_fresh_result(backend, name, opts, reduction, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=20, c=5, weighted=True)
    loss = make_loss(name, opts, reduction=reduction, backend=backend)
    value, grad = loss.value_and_grad(y_true, y_pred, sw)

    out = np.full_like(y_pred, np.nan)
    value_out, grad_out = loss.value_and_grad(y_true, y_pred, sw, out=out)
    assert grad_out is out
    np.testing.assert_array_equal(out, grad)
    np.testing.assert_array_equal(value_out, value)

    buf = y_pred.copy()
    value_in, grad_in = loss.value_and_grad(y_true, buf, sw, out=buf)
    assert grad_in is buf
    np.testing.assert_array_equal(buf, grad)
    np.testing.assert_array_equal(value_in, value)

    assert loss.grad(y_true, y_pred, sw, out=out) is out
    np.testing.assert_array_equal(out, grad)


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_inputs_are_never_modified(backend, name, opts, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=20, c=5, weighted=True)
    copies = [a.copy() for a in (y_true, y_pred, sw)]
    option_copies = {k: np.copy(val) for k, val in opts.items() if isinstance(val, np.ndarray)}
    for reduction in REDUCTIONS:
        loss = make_loss(name, opts, reduction=reduction, backend=backend)
        loss.value_and_grad(y_true, y_pred, sw)
        loss(y_true, y_pred, sw)
        loss.grad(y_true, y_pred, sw)
    for before, after in zip(copies, (y_true, y_pred, sw), strict=True):
        np.testing.assert_array_equal(before, after)
    for key, before in option_copies.items():
        np.testing.assert_array_equal(before, opts[key])


# Large enough that a native backend goes multi-threaded (its small-input threshold is far
# below these sizes), with a length that is not a multiple of any plausible block size.
_BIG = {"elementwise": (123_457, 3), "ce_small_c": (40_013, 10), "ce_large_c": (1_031, 1_000)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("name", "opts", "size"),
    [
        ("mse", {}, "elementwise"),
        ("huber", {"delta": 1.0}, "elementwise"),
        ("bce", {"from_logits": True, "label_smoothing": 0.1}, "elementwise"),
        ("sparse_cce", {"from_logits": True, "ignore_index": -100}, "ce_small_c"),
        ("cce", {"from_logits": True, "label_smoothing": 0.1, "class_weight": "vector"},
         "ce_small_c"),
        ("cce", {"from_logits": False, "label_smoothing": 0.1}, "ce_small_c"),
        ("sparse_cce", {"from_logits": True, "class_weight": "vector"}, "ce_large_c"),
    ],
)
def test_result_independent_of_n_threads(backend, name, opts, size, dtype, rng):
    n, c = _BIG[size]
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=n, c=c, dtype=dtype, weighted=True)
    results = []
    for n_threads in (1, 2, 3, 8):
        loss = make_loss(name, opts, reduction="mean", backend=backend, n_threads=n_threads)
        none = make_loss(name, opts, reduction="none", backend=backend, n_threads=n_threads)
        results.append((*loss.value_and_grad(y_true, y_pred, sw), none(y_true, y_pred, sw)))
    for value, grad, per_sample in results[1:]:
        assert value == results[0][0]  # bitwise, not approximately
        np.testing.assert_array_equal(grad, results[0][1])
        np.testing.assert_array_equal(per_sample, results[0][2])


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_results_identical_across_runs(backend, name, opts, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=3_001, c=5, weighted=True)
    loss = make_loss(name, opts, backend=backend)
    first = loss.value_and_grad(y_true, y_pred, sw)
    for _ in range(3):
        again = loss.value_and_grad(y_true, y_pred, sw)
        assert again[0] == first[0]
        np.testing.assert_array_equal(again[1], first[1])
