"""The streaming accumulator: batches, merges and pickles give the value of one call."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import fastloss
from fastloss.scoring import Accumulator, accumulator
from fastloss.scoring._exact import ExactSum

REDUCTIONS = ("mean", "sum", "sum_over_batch_size", "none")
RTOL = 1e-12


def _problem(name: str, rng: np.random.Generator, n: int = 403):
    """``(options, y_true, y_pred, sample_weight)`` exercising the loss's options."""
    if name in ("mse", "mae", "huber"):
        opts = {"delta": 0.8} if name == "huber" else {}
        return (
            opts,
            rng.normal(size=(n, 3)),
            rng.normal(size=(n, 3)).astype(np.float32),
            rng.random((n, 1)),
        )
    if name == "bce":
        opts = {"from_logits": True, "label_smoothing": 0.1, "pos_weight": [1.0, 2.0, 0.5]}
        return (
            opts,
            rng.integers(0, 2, (n, 3)).astype(float),
            rng.normal(size=(n, 3)),
            rng.random((n, 3)),
        )
    c = 5
    logits = rng.normal(size=(n, c)) * 3
    cw = rng.random(c) + 0.1
    if name == "cce":
        t = rng.dirichlet(np.ones(c), n)
        return (
            {"from_logits": True, "label_smoothing": 0.2, "class_weight": cw},
            t,
            logits,
            rng.random(n),
        )
    labels = rng.integers(0, c, n)
    labels[rng.random(n) < 0.2] = -100
    opts = {"from_logits": True, "label_smoothing": 0.1, "class_weight": cw, "ignore_index": -100}
    return opts, labels, logits.astype(np.float32), rng.random(n)


def _splits(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Uneven batch boundaries, including an empty batch."""
    cuts = sorted(set(rng.integers(0, n, 6).tolist()) | {0, n})
    bounds = [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    return bounds + [(n, n)]


def _close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=0, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce", "cce", "sparse_cce"])
def test_batches_equal_one_call(name, reduction, rng):
    opts, t, p, w = _problem(name, rng)
    loss = fastloss.get(name, reduction=reduction, **opts)
    acc = loss.accumulator()
    for a, b in _splits(len(p), rng):
        acc.update(t[a:b], p[a:b], w[a:b])
    want = loss(t, p, w)
    got = acc.result()
    _close(got, want)
    if reduction == "none":
        assert got.dtype == want.dtype and got.shape == want.shape
    else:
        assert isinstance(got, float)


@pytest.mark.parametrize("name", ["mse", "sparse_cce"])
def test_without_weights(name, rng):
    opts, t, p, _ = _problem(name, rng)
    for reduction in REDUCTIONS:
        loss = fastloss.get(name, reduction=reduction, **opts)
        acc = loss.accumulator()
        for a, b in _splits(len(p), rng):
            acc.update(t[a:b], p[a:b])
        _close(acc.result(), loss(t, p))


def test_one_accumulator_answers_every_reduction(rng):
    opts, t, p, w = _problem("sparse_cce", rng)
    acc = fastloss.get("sparse_cce", **opts).accumulator()
    acc.update(t, p, w)
    for reduction in ("mean", "sum", "sum_over_batch_size"):
        _close(
            acc.value(reduction), fastloss.get("sparse_cce", reduction=reduction, **opts)(t, p, w)
        )
    assert acc.count == int(np.count_nonzero(t != -100))
    with pytest.raises(ValueError, match="reduction"):
        acc.value("none")


def test_everything_ignored_gives_zero_mean():
    loss = fastloss.SparseCategoricalCrossEntropy(ignore_index=-1, from_logits=True)
    acc = loss.accumulator()
    acc.update([-1, -1], [[1.0, 2.0], [3.0, 4.0]])
    acc.update(np.zeros(0, dtype=int), np.zeros((0, 2)))
    assert acc.result() == 0.0 and acc.count == 0 and acc.weight_sum == 0.0
    assert (
        fastloss.SparseCategoricalCrossEntropy(ignore_index=-1, reduction="sum_over_batch_size")
        .accumulator()
        .result()
        == 0.0
    )


def test_empty_accumulator():
    assert fastloss.MeanSquaredError().accumulator().result() == 0.0
    none = fastloss.MeanSquaredError(reduction="none").accumulator().result()
    assert isinstance(none, np.ndarray) and none.size == 0


def test_nan_propagates():
    acc = fastloss.MeanSquaredError().accumulator()
    acc.update([0.0], [1.0])
    acc.update([0.0], [np.nan])
    acc.update([0.0], [2.0])
    assert math.isnan(acc.result())


def test_result_independent_of_batch_and_merge_order(rng):
    opts, t, p, w = _problem("bce", rng, n=2000)
    loss = fastloss.get("bce", **opts)
    bounds = [(a, a + 97) for a in range(0, 2000, 97)]
    results = set()
    for order in (bounds, bounds[::-1], [bounds[i] for i in rng.permutation(len(bounds))]):
        acc = loss.accumulator()
        for a, b in order:
            acc.update(t[a:b], p[a:b], w[a:b])
        results.add(acc.result())
    # Merging per-batch accumulators in two different tree shapes.
    parts = []
    for a, b in bounds:
        part = loss.accumulator()
        part.update(t[a:b], p[a:b], w[a:b])
        parts.append(part)
    left = parts[0].copy()
    for part in parts[1:]:
        left.merge(part)
    right = parts[-1].copy()
    for part in reversed(parts[:-1]):
        right.merge(part)
    results |= {left.result(), right.result()}
    assert len(results) == 1  # bitwise identical, not just close
    _close(results.pop(), loss(t, p, w))


def test_merge_combines_and_leaves_other_unchanged(rng):
    opts, t, p, w = _problem("sparse_cce", rng)
    loss = fastloss.get("sparse_cce", reduction="none", **opts)
    a, b = loss.accumulator(), loss.accumulator()
    a.update(t[:100], p[:100], w[:100])
    b.update(t[100:], p[100:], w[100:])
    before = (b.total, b.count, b.n_updates)
    assert a.merge(b) is a
    _close(a.result(), loss(t, p, w))
    assert (b.total, b.count, b.n_updates) == before
    assert a.n_updates == 2


def test_merge_with_itself_doubles(rng):
    acc = fastloss.MeanSquaredError(reduction="sum").accumulator()
    acc.update([0.0, 1.0], [2.0, 3.0])
    acc.merge(acc)
    assert acc.result() == 16.0 and acc.count == 4


def test_merge_rejects_other_losses():
    acc = fastloss.Huber(delta=1.0).accumulator()
    with pytest.raises(ValueError, match="different losses"):
        acc.merge(fastloss.Huber(delta=2.0).accumulator())
    with pytest.raises(ValueError, match="different losses"):
        acc.merge(fastloss.MeanSquaredError().accumulator())
    with pytest.raises(ValueError, match="different losses"):
        acc.merge(fastloss.Huber(delta=1.0, reduction="sum").accumulator())
    with pytest.raises(TypeError, match="Accumulator"):
        acc.merge(3.0)  # type: ignore[arg-type]
    # equal options (even as separate arrays) merge fine
    cw = np.array([1.0, 2.0])
    a = fastloss.CategoricalCrossEntropy(class_weight=cw).accumulator()
    a.merge(fastloss.CategoricalCrossEntropy(class_weight=cw.copy()).accumulator())


def test_pickle_round_trip_mid_stream(rng):
    opts, t, p, w = _problem("sparse_cce", rng)
    for reduction in REDUCTIONS:
        loss = fastloss.get("sparse_cce", reduction=reduction, **opts)
        acc = loss.accumulator()
        acc.update(t[:150], p[:150], w[:150])
        acc = pickle.loads(pickle.dumps(acc))
        acc.update(t[150:], p[150:], w[150:])
        _close(acc.result(), loss(t, p, w))
        assert acc.loss == loss


def test_batches_must_continue_the_same_shape(rng):
    acc = fastloss.MeanSquaredError().accumulator()
    acc.update(np.zeros((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="does not continue"):
        acc.update(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        acc.update(np.zeros((4, 2)), np.ones((4, 3)))
    assert acc.count == 12 and acc.n_updates == 1  # failed updates added nothing
    cce = fastloss.SparseCategoricalCrossEntropy().accumulator()
    cce.update([0], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="does not continue"):
        cce.update([0], [[0.2, 0.3, 0.5]])
    other = fastloss.SparseCategoricalCrossEntropy().accumulator()
    other.update([0], [[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match="differently shaped"):
        cce.merge(other)


def test_class_axis_first_batches_along_second_axis(rng):
    loss = fastloss.CategoricalCrossEntropy(axis=0, from_logits=True, reduction="none")
    t = rng.dirichlet(np.ones(4), 50).T
    p = rng.normal(size=(4, 50))
    acc = loss.accumulator()
    acc.update(t[:, :20], p[:, :20])
    acc.update(t[:, 20:], p[:, 20:])
    _close(acc.result(), loss(t, p))


def test_update_can_return_per_sample_losses(rng):
    opts, t, p, w = _problem("huber", rng)
    loss = fastloss.get("huber", **opts)
    acc = loss.accumulator()
    out = acc.update(t, p, w, per_sample=True)
    _close(out, fastloss.get("huber", reduction="none", **opts)(t, p, w))
    assert acc.update(t, p, w) is None


def test_accumulator_function_and_type_checks():
    loss = fastloss.MeanSquaredError()
    assert isinstance(accumulator(loss), Accumulator)
    assert isinstance(loss.accumulator(), Accumulator)
    with pytest.raises(TypeError, match="Loss"):
        Accumulator("mse")  # type: ignore[arg-type]


def test_uses_the_selected_backend(backend, rng):
    opts, t, p, w = _problem("sparse_cce", rng)
    loss = fastloss.get("sparse_cce", backend=backend, **opts)
    acc = loss.accumulator()
    acc.update(t[:200], p[:200], w[:200])
    acc.update(t[200:], p[200:], w[200:])
    _close(acc.result(), loss(t, p, w))


# --------------------------------------------------------------------------- exact sums


def test_exact_sum_is_correctly_rounded_and_order_free(rng):
    xs = rng.normal(size=3000) * 10.0 ** rng.integers(-30, 30, 3000)
    xs = np.concatenate([xs, -xs[:1000], [1e16, 1.0, -1e16]])
    values = set()
    for order in (xs, xs[::-1], rng.permutation(xs)):
        s = ExactSum()
        for x in order:
            s.add(x)
        values.add(s.value)
    assert values == {math.fsum(xs)}
    a, b = ExactSum(), ExactSum()
    for x in xs[:1500]:
        a.add(x)
    for x in xs[1500:]:
        b.add(x)
    a.merge(b)
    assert a.value == math.fsum(xs)
    assert pickle.loads(pickle.dumps(a)).value == a.value


def test_exact_sum_non_finite():
    s = ExactSum()
    s.add(1.0)
    s.add(math.inf)
    assert s.value == math.inf
    s.add(-math.inf)
    assert math.isnan(s.value)
    t = ExactSum()
    t.add(1.7e308)
    t.add(1.7e308)
    assert t.value == math.inf
