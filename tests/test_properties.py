"""Mathematical properties of every loss, on every backend: the gradient is the derivative
of the value, weights act as multipliers, reductions are consistent, sparse equals one-hot,
any class axis works, float32 tracks float64, and extreme inputs behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
from _cases import REDUCTIONS, all_option_sets, assert_close, case_id, make_case, make_loss
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss

OPTION_SETS = all_option_sets()
IDS = [case_id(name, opts) for name, opts in OPTION_SETS]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_gradient_matches_finite_differences(backend, name, opts, reduction, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=4, c=3, weighted=True)
    loss = make_loss(name, opts, reduction=reduction, backend=backend)

    def total(p):  # the scalar whose gradient grad() returns
        return float(np.sum(loss(y_true, p, sw)))

    grad = loss.grad(y_true, y_pred, sw)
    numeric = np.empty_like(y_pred)
    for idx in np.ndindex(y_pred.shape):
        h = 1e-6 * max(1.0, abs(y_pred[idx]))
        up, down = y_pred.copy(), y_pred.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (total(up) - total(down)) / (2 * h)
    # Central differences: truncation O(h²·f''') and rounding O(ε·f/h) ≈ 1e-10 relative.
    np.testing.assert_allclose(
        grad, numeric, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(numeric).max())
    )


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_none_summed_equals_sum(backend, name, opts, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=25, c=4, weighted=True)
    per = make_loss(name, opts, reduction="none", backend=backend)
    total = make_loss(name, opts, reduction="sum", backend=backend)
    assert np.isclose(
        np.sum(per(y_true, y_pred, sw), dtype=np.float64), total(y_true, y_pred, sw), rtol=1e-12
    )
    np.testing.assert_allclose(
        per.grad(y_true, y_pred, sw), total.grad(y_true, y_pred, sw), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_weights_act_as_multipliers(backend, name, opts, rng):
    opts, y_true, y_pred, _ = make_case(name, opts, rng, n=12, c=4)
    sparse_like = name in ("cce", "sparse_cce")
    n = y_pred.shape[0]
    counts = rng.integers(0, 4, n if sparse_like else y_pred.shape)
    # An integer weight k on a sample equals k copies of it: check with "sum" and "none".
    per = make_loss(name, opts, reduction="none", backend=backend)
    weighted = per(y_true, y_pred, counts.astype(float))
    np.testing.assert_allclose(weighted, counts * per(y_true, y_pred), rtol=1e-14)
    if sparse_like:
        rep = np.repeat(np.arange(n), counts)
        summed = make_loss(name, opts, reduction="sum", backend=backend)
        assert np.isclose(
            summed(y_true, y_pred, counts.astype(float)),
            summed(y_true[rep], y_pred[rep]),
            rtol=1e-12,
        )
        # The mean is weighted: a constant weight changes nothing.
        mean = make_loss(name, opts, backend=backend)
        assert np.isclose(mean(y_true, y_pred, np.full(n, 3.5)), mean(y_true, y_pred), rtol=1e-12)
    grad = make_loss(name, opts, reduction="sum", backend=backend).grad
    np.testing.assert_allclose(
        grad(y_true, y_pred, counts.astype(float)),
        (counts[:, None] if sparse_like else counts) * grad(y_true, y_pred),
        rtol=1e-13,
        atol=1e-300,
    )


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_sparse_equals_categorical_with_one_hot(backend, from_logits, smoothing, rng):
    n, c = 30, 6
    x = rng.normal(size=(n, c)) if from_logits else rng.uniform(0.05, 1, (n, c))
    labels = rng.integers(0, c, n)
    onehot = np.eye(c)[labels]
    sw = rng.uniform(0, 2, n)
    cw = rng.uniform(0.5, 2, c)
    common = {"from_logits": from_logits, "label_smoothing": smoothing, "backend": backend}
    for reduction in REDUCTIONS:
        sparse = fastloss.SparseCategoricalCrossEntropy(reduction=reduction, **common)
        dense = fastloss.CategoricalCrossEntropy(reduction=reduction, **common)
        vs, gs = sparse.value_and_grad(labels, x, sw)
        vd, gd = dense.value_and_grad(onehot, x, sw)
        np.testing.assert_allclose(vs, vd, rtol=1e-12)
        np.testing.assert_allclose(gs, gd, rtol=1e-12, atol=1e-15)
    # With class weights the per-sample losses agree; only the "mean" normaliser differs
    # (PyTorch: Σ w·κ[label] for labels, Σ w for soft targets).
    sparse = fastloss.SparseCategoricalCrossEntropy(class_weight=cw, reduction="none", **common)
    dense = fastloss.CategoricalCrossEntropy(class_weight=cw, reduction="none", **common)
    np.testing.assert_allclose(sparse(labels, x, sw), dense(onehot, x, sw), rtol=1e-12)
    mean_sparse = fastloss.SparseCategoricalCrossEntropy(class_weight=cw, **common)(labels, x, sw)
    mean_dense = fastloss.CategoricalCrossEntropy(class_weight=cw, **common)(onehot, x, sw)
    per = dense(onehot, x, sw)
    assert np.isclose(mean_sparse, per.sum() / np.sum(sw * cw[labels]), rtol=1e-12)
    assert np.isclose(mean_dense, per.sum() / np.sum(sw), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    axis_seed=st.integers(0, 100),
    sparse=st.booleans(),
    from_logits=st.booleans(),
    in_place=st.booleans(),
)
def test_axis_equals_moveaxis(shape, axis_seed, sparse, from_logits, in_place):
    rng = np.random.default_rng(axis_seed)
    ndim = len(shape)
    axis = axis_seed % ndim - (ndim if axis_seed % 2 else 0)  # negative and positive axes
    x = rng.normal(size=shape) if from_logits else rng.uniform(0.1, 1, shape)
    c = shape[axis]
    moved = np.moveaxis(x, axis, -1)
    if sparse:
        y = rng.integers(0, c, moved.shape[:-1])
        y_moved, cls = y, fastloss.SparseCategoricalCrossEntropy
    else:
        y_moved = rng.uniform(0, 1, moved.shape)
        y = np.moveaxis(y_moved, -1, axis)
        cls = fastloss.CategoricalCrossEntropy
    for backend in fastloss.available_backends():
        for reduction in ("none", "mean"):
            along = cls(from_logits=from_logits, axis=axis, reduction=reduction, backend=backend)
            last = cls(from_logits=from_logits, reduction=reduction, backend=backend)
            v_last, g_last = last.value_and_grad(y_moved, np.ascontiguousarray(moved))
            buf = x.copy()
            v_axis, g_axis = along.value_and_grad(y, buf, out=buf if in_place else None)
            np.testing.assert_allclose(v_axis, v_last, rtol=1e-13)
            np.testing.assert_allclose(
                g_axis, np.moveaxis(g_last, -1, axis), rtol=1e-13, atol=1e-16
            )
            assert g_axis.shape == x.shape and (not in_place or g_axis is buf)


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_float32_close_to_float64(backend, name, opts, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=50, c=5, weighted=True)
    p32 = y_pred.astype(np.float32)
    y32 = y_true.astype(np.float32) if y_true.dtype.kind == "f" else y_true
    loss = make_loss(name, opts, backend=backend)
    v64, g64 = loss.value_and_grad(y32.astype(y_true.dtype), p32.astype(np.float64), sw)
    v32, g32 = loss.value_and_grad(y32, p32, sw)
    assert g32.dtype == np.float32
    assert_close(v32, v64, np.float32, scale=abs(v64))
    assert_close(g32, g64, np.float32, scale=np.abs(g64).max())


def test_other_dtypes_are_converted(backend):
    loss = fastloss.MeanSquaredError(backend=backend)
    g16 = loss.grad(np.zeros(3, np.float16), np.ones(3, np.float16))
    assert g16.dtype == np.float32
    gi = loss.grad([0, 0, 0], np.array([1, 2, 3]))
    assert gi.dtype == np.float64
    np.testing.assert_array_equal(gi, np.array([2, 4, 6]) / 3)
    gb = loss.grad(np.zeros(2), np.array([True, False]))
    assert gb.dtype == np.float64
    labels = np.array([1, 0], dtype=np.uint8)
    for dt in (np.int8, np.uint16, np.int32, np.uint64):
        value = fastloss.sparse_categorical_cross_entropy(
            labels.astype(dt), [[0.0, 1.0], [1.0, 0.0]], from_logits=True, backend=backend
        )
        assert np.isclose(value, np.log1p(np.exp(-1.0)), rtol=1e-14)


def test_accepts_strided_fortran_readonly_memmap_and_array_likes(backend, tmp_path, rng):
    x = rng.normal(size=(9, 6))
    y = rng.integers(0, 6, 9)
    loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend=backend)
    value, grad = loss.value_and_grad(y, x)
    variants = {
        "fortran": np.asfortranarray(x),
        "negative strides": x[::-1, ::-1][::-1, ::-1],
        "list": x.tolist(),
    }
    ro = x.copy()
    ro.setflags(write=False)
    variants["read-only"] = ro
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mm[...] = x
    mm.flush()
    variants["memmap"] = np.load(tmp_path / "x.npy", mmap_mode="r")

    class Wrapper:
        def __array__(self, dtype=None, copy=None):
            return x

    variants["__array__"] = Wrapper()
    for label, variant in variants.items():
        v, g = loss.value_and_grad(y, variant)
        assert v == value, label
        np.testing.assert_array_equal(g, grad, err_msg=label)
    # A strided view (every other column) equals its contiguous copy.
    wide = rng.normal(size=(9, 12))
    strided = wide[:, ::2]
    np.testing.assert_array_equal(loss.grad(y, strided), loss.grad(y, strided.copy()))
    np.testing.assert_array_equal(
        fastloss.Huber(backend=backend).grad(x[::-1], x[::2].repeat(2, axis=0)[:9]),
        fastloss.Huber(backend=backend).grad(x[::-1].copy(), x[::2].repeat(2, axis=0)[:9].copy()),
    )


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` at an odd byte offset (as in some memory maps and pickled buffers)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    out = raw.view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize(("name", "opts"), OPTION_SETS, ids=IDS)
def test_accepts_misaligned_arrays(backend, name, opts, rng):
    opts, y_true, y_pred, sw = make_case(name, opts, rng, n=9, c=4, weighted=True)
    opts = {k: _misaligned(val) if isinstance(val, np.ndarray) else val for k, val in opts.items()}
    loss = make_loss(name, opts, backend=backend)
    value, grad = loss.value_and_grad(y_true, y_pred, sw)
    loss.class_weight = getattr(loss, "class_weight", None)  # as restored by unpickling
    if loss.class_weight is not None:
        loss.class_weight = _misaligned(loss.class_weight)
    v2, g2 = loss.value_and_grad(_misaligned(y_true), _misaligned(y_pred), _misaligned(sw))
    assert v2 == value
    np.testing.assert_array_equal(g2, grad)


# ---------------------------------------------------------------------- extreme inputs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("big", [1e4, 1e30, np.inf])
def test_bce_extreme_logits_give_the_limit(backend, big, dtype):
    if dtype == np.float32 and big == 1e30:
        big = 3e38
    x = np.array([big, big, -big, -big], dtype)
    t = np.array([1.0, 0.0, 1.0, 0.0])
    loss = fastloss.BinaryCrossEntropy(from_logits=True, reduction="none", backend=backend)
    value, grad = loss.value_and_grad(t, x)
    np.testing.assert_array_equal(value[[0, 3]], [0.0, 0.0])
    np.testing.assert_array_equal(grad, np.array([0.0, 1.0, -1.0, 0.0], dtype))
    expected_wrong = np.float64(big) if np.isfinite(big) else np.inf
    np.testing.assert_allclose(value[[1, 2]], [expected_wrong] * 2, rtol=1e-6)
    # With smoothing every target coefficient is positive: still finite for finite logits.
    smooth = fastloss.BinaryCrossEntropy(from_logits=True, label_smoothing=0.1, backend=backend)
    v, g = smooth.value_and_grad(t, x)
    assert np.isfinite(v) == bool(np.isfinite(big)) and np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("big", [1e4, 1e30])
def test_cross_entropy_finite_for_any_finite_logits(backend, big, dtype, rng):
    big = min(big, 1e38) if dtype == np.float32 else big
    x = (rng.choice([-1.0, 1.0], (20, 5)) * big * rng.uniform(0.5, 1, (20, 5))).astype(dtype)
    y = rng.integers(0, 5, 20)
    for smoothing in (0.0, 0.1):
        loss = fastloss.SparseCategoricalCrossEntropy(
            from_logits=True, label_smoothing=smoothing, reduction="none", backend=backend
        )
        value, grad = loss.value_and_grad(y, x)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
        assert np.all(value >= 0)
        # Each gradient row of softmax CE sums to zero (Σ softmax = 1 = Σ t').
        np.testing.assert_allclose(grad.sum(axis=1, dtype=np.float64), 0.0, atol=1e-6)


def test_cross_entropy_infinite_logits(backend):
    inf = np.inf
    x = np.array(
        [
            [inf, 0.0, -inf],  # label 0: limit 0, gradient 0
            [0.0, inf, 1.0],  # label 0: the label's probability → 0: loss inf
            [-inf, -inf, -inf],  # no softmax: NaN
            [inf, inf, 0.0],  # two +inf: no limit, NaN
            [1.0, 2.0, -inf],  # a -inf class with zero target: counts as 0
        ]
    )
    y = np.array([0, 0, 1, 0, 1])
    loss = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, reduction="none", backend=backend
    )
    value, grad = loss.value_and_grad(y, x)
    assert value[0] == 0.0 and np.all(grad[0] == 0.0)
    assert value[1] == inf and np.all(np.isfinite(grad[1]))
    assert np.isnan(value[2]) and np.all(np.isnan(grad[2]))
    assert np.isnan(value[3]) and np.all(np.isnan(grad[3]))
    assert np.isclose(value[4], np.log1p(np.exp(-1.0)), rtol=1e-14)
    np.testing.assert_allclose(grad[4], [1 / (1 + np.e), -1 / (1 + np.e), 0.0], rtol=1e-14)


def test_nan_propagates_and_is_never_an_error(backend):
    x = np.array([[0.0, np.nan], [1.0, 2.0]])
    loss = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, reduction="none", backend=backend
    )
    value, grad = loss.value_and_grad([0, 1], x)
    assert np.isnan(value[0]) and np.all(np.isnan(grad[0]))
    assert np.isfinite(value[1]) and np.all(np.isfinite(grad[1]))
    for name in ("mse", "mae", "huber", "bce"):
        v, g = fastloss.get(name, backend=backend).value_and_grad([0.0, 1.0], [np.nan, 0.5])
        assert np.isnan(v) and np.isnan(g[0]) and np.isfinite(g[1]), name


@pytest.mark.parametrize("reduction", ["mean", "sum_over_batch_size"])
def test_all_ignored_or_zero_weight_gives_zero(backend, reduction):
    x = np.array([[0.0, 5.0], [1.0, -1.0]])
    sparse = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, ignore_index=-1, reduction=reduction, backend=backend
    )
    value, grad = sparse.value_and_grad([-1, -1], x)
    assert value == 0.0 and np.all(grad == 0.0)
    if reduction == "mean":
        v, g = fastloss.MeanSquaredError(backend=backend).value_and_grad(
            [0.0, 1.0], [3.0, 4.0], [0.0, 0.0]
        )
        assert v == 0.0 and np.all(g == 0.0)
    empty_v, empty_g = fastloss.MeanSquaredError(
        reduction=reduction, backend=backend
    ).value_and_grad(np.zeros(0), np.zeros(0))
    assert empty_v == 0.0 and empty_g.shape == (0,)


def test_ignored_rows_contribute_nothing_even_if_nan(backend):
    x = np.array([[np.nan, np.inf], [1.0, 2.0]])
    loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, ignore_index=7, backend=backend)
    value, grad = loss.value_and_grad([7, 1], x)
    assert np.isclose(value, np.log1p(np.exp(-1.0)), rtol=1e-14)
    assert np.all(grad[0] == 0.0)


def test_probability_clipping_bounds_in_input_dtype(backend):
    # float32: the upper bound is float32(1) - float32(1e-7) = 1 - 2**-23 (0.99999988...).
    hi32 = float(np.float32(1) - np.float32(1e-7))
    p = np.array([0.0, 1.0, 0.5, hi32], np.float32)
    t = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    loss = fastloss.BinaryCrossEntropy(reduction="none", backend=backend)
    value, grad = loss.value_and_grad(t, p)
    lo = float(np.float32(1e-7))
    np.testing.assert_allclose(value[:2], [-np.log(lo), -np.log1p(-hi32)], rtol=1e-6)
    # Zero gradient strictly outside [lo, hi]; at the bound itself the derivative passes.
    assert grad[0] == 0.0 and grad[1] == 0.0
    assert grad[3] > 0 and np.isfinite(grad[3])


def test_label_smoothing_formulas(backend):
    x = np.array([[1.0, -0.5, 0.25]])
    eps = 0.3
    smoothed = np.array([[0.0, 1.0, 0.0]]) * (1 - eps) + eps / 3
    ls = np.log(np.exp(x) / np.exp(x).sum())
    expected = -(smoothed * ls).sum()
    got = fastloss.sparse_categorical_cross_entropy(
        [1], x, from_logits=True, label_smoothing=eps, backend=backend
    )
    assert np.isclose(got, expected, rtol=1e-14)
    t_bce = 1.0 * (1 - eps) + eps / 2
    z = 0.7
    expected_bce = -(
        t_bce * np.log(1 / (1 + np.exp(-z))) + (1 - t_bce) * np.log(1 - 1 / (1 + np.exp(-z)))
    )
    got_bce = fastloss.binary_cross_entropy(
        [1.0], [z], from_logits=True, label_smoothing=eps, backend=backend
    )
    assert np.isclose(got_bce, expected_bce, rtol=1e-14)
