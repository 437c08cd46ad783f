"""Bad input gets a clear error naming the argument, and nothing is modified."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss


def _frozen(*arrays):
    return [a.copy() for a in arrays]


def _unchanged(before, *arrays):
    for b, a in zip(before, arrays, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (
            lambda: fastloss.MeanSquaredError(reduction="avg"),
            ValueError,
            r"reduction.*'mean'.*'none'.*'avg'",
        ),
        (
            lambda: fastloss.MeanSquaredError(backend="fortran"),
            ValueError,
            r"backend.*'cython'.*'numpy'",
        ),
        (lambda: fastloss.MeanSquaredError(n_threads=0), ValueError, "n_threads"),
        (lambda: fastloss.MeanSquaredError(n_threads=1.5), TypeError, "n_threads"),
        (lambda: fastloss.MeanSquaredError(n_threads=True), TypeError, "n_threads"),
        (lambda: fastloss.Huber(delta=0.0), ValueError, r"delta must be in \(0"),
        (lambda: fastloss.Huber(delta=-1), ValueError, "delta"),
        (lambda: fastloss.Huber(delta="1"), TypeError, "delta"),
        (
            lambda: fastloss.BinaryCrossEntropy(label_smoothing=1.0),
            ValueError,
            r"label_smoothing must be in \[0",
        ),
        (lambda: fastloss.BinaryCrossEntropy(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (lambda: fastloss.BinaryCrossEntropy(eps=0.5), ValueError, r"eps must be in \(0"),
        (lambda: fastloss.BinaryCrossEntropy(eps=0.0), ValueError, "eps"),
        (lambda: fastloss.BinaryCrossEntropy(from_logits="yes"), TypeError, "from_logits"),
        (
            lambda: fastloss.CategoricalCrossEntropy(class_weight=[[1.0, 2.0]]),
            ValueError,
            "class_weight must be 1-D",
        ),
        (lambda: fastloss.CategoricalCrossEntropy(class_weight=["a"]), TypeError, "class_weight"),
        (lambda: fastloss.CategoricalCrossEntropy(axis=1.0), TypeError, "axis"),
        (
            lambda: fastloss.SparseCategoricalCrossEntropy(class_weight=[1.0, np.inf]),
            ValueError,
            "class_weight must be finite",
        ),
        (
            lambda: fastloss.SparseCategoricalCrossEntropy(ignore_index=1.5),
            TypeError,
            "ignore_index",
        ),
        (
            lambda: fastloss.get("hinge"),
            ValueError,
            r"unknown loss name 'hinge'.*'mse'.*'sparse_cce'",
        ),
        (lambda: fastloss.set_backend("gpu"), ValueError, r"backend must be one of"),
    ],
)
def test_bad_options_raise(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_shape_mismatch_names_both_shapes(backend):
    t, p = np.zeros((3, 2)), np.zeros((3, 1))
    before = _frozen(t, p)
    with pytest.raises(ValueError, match=r"y_true \(3, 2\) and y_pred \(3, 1\)"):
        fastloss.MeanSquaredError(backend=backend).value_and_grad(t, p)
    with pytest.raises(ValueError, match=r"y_true \(3, 2\) and y_pred \(3, 1\)"):
        fastloss.CategoricalCrossEntropy(backend=backend)(t, p)
    with pytest.raises(ValueError, match=r"without the class axis.*\(3,\).*y_true \(4,\)"):
        fastloss.SparseCategoricalCrossEntropy(backend=backend)(np.zeros(4, int), np.zeros((3, 2)))
    _unchanged(before, t, p)


def test_size_one_class_axis_of_labels_is_squeezed(backend):
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend=backend)
    assert loss([[2], [0]], x) == loss([2, 0], x)
    along0 = fastloss.SparseCategoricalCrossEntropy(from_logits=True, axis=0, backend=backend)
    assert along0([[1, 0, 0]], x) == along0([1, 0, 0], x)


@pytest.mark.parametrize("bad_label", [5, -1, 99])
def test_out_of_range_labels_name_position_value_and_c(backend, bad_label):
    x = np.zeros((2, 3, 5))
    y = np.zeros((2, 3), dtype=np.int64)
    y[1, 2] = bad_label
    out = np.full_like(x, 7.0)
    before = _frozen(x, y, out)
    loss = fastloss.SparseCategoricalCrossEntropy(backend=backend)
    with pytest.raises(ValueError, match=rf"label {bad_label} at index \(1, 2\).*\[0, 5\).*C=5"):
        loss.value_and_grad(y, x, out=out)
    _unchanged(before, x, y, out)


def test_ignore_index_is_allowed_but_other_negatives_are_not(backend):
    x = np.zeros((3, 4))
    loss = fastloss.SparseCategoricalCrossEntropy(ignore_index=-100, backend=backend)
    loss([0, -100, 3], x)
    with pytest.raises(ValueError, match=r"label -1 at index \(1,\).*ignore_index=-100"):
        loss([0, -1, 3], x)


@pytest.mark.parametrize("labels", [[0.0, 1.0], [True, False], ["a", "b"]])
def test_non_integer_labels_are_a_type_error(backend, labels):
    with pytest.raises(TypeError, match="y_true must hold integer class labels"):
        fastloss.sparse_categorical_cross_entropy(labels, np.zeros((2, 3)), backend=backend)


def test_non_numeric_arrays_are_a_type_error(backend):
    with pytest.raises(TypeError, match="y_pred must hold real numbers"):
        fastloss.mse([0.0], ["x"], backend=backend)
    with pytest.raises(TypeError, match="y_true must hold real numbers"):
        fastloss.mse([1j], [0.0], backend=backend)
    with pytest.raises(TypeError, match="sample_weight must hold real numbers"):
        fastloss.mse([0.0], [0.0], ["w"], backend=backend)


def test_class_weight_of_wrong_length(backend):
    loss = fastloss.SparseCategoricalCrossEntropy(class_weight=[1.0, 2.0], backend=backend)
    with pytest.raises(
        ValueError,
        match=r"class_weight must have one entry per class, shape \(3,\), got shape \(2,\)",
    ):
        loss([0], np.zeros((1, 3)))


def test_pos_weight_not_broadcastable(backend):
    loss = fastloss.BinaryCrossEntropy(pos_weight=[1.0, 2.0, 3.0], backend=backend)
    with pytest.raises(
        ValueError, match=r"pos_weight of shape \(3,\) cannot be broadcast.*\(4, 2\)"
    ):
        loss(np.zeros((4, 2)), np.full((4, 2), 0.5))


def test_sample_weight_not_broadcastable(backend):
    with pytest.raises(
        ValueError, match=r"sample_weight of shape \(3,\) cannot be broadcast.*\(4, 2\)"
    ):
        fastloss.mse(np.zeros((4, 2)), np.zeros((4, 2)), np.ones(3), backend=backend)
    with pytest.raises(
        ValueError, match=r"sample_weight of shape \(3,\).*per-sample loss shape \(4,\)"
    ):
        fastloss.sparse_categorical_cross_entropy(
            [0] * 4, np.ones((4, 2)), np.ones(3), backend=backend
        )


@pytest.mark.parametrize("axis", [2, -3])
def test_axis_out_of_range(backend, axis):
    loss = fastloss.CategoricalCrossEntropy(axis=axis, backend=backend)
    with pytest.raises(
        ValueError, match=rf"axis {axis} is out of range for y_pred with 2 dimension"
    ):
        loss(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="class axis"):
        fastloss.CategoricalCrossEntropy(backend=backend)(1.0, 1.0)


def _read_only():
    ro = np.zeros((3, 2))
    ro.setflags(write=False)
    return ro


OUT_CASES = {
    "list": ([[0.0] * 2] * 3, TypeError, "out must be a numpy.ndarray"),
    "shape": (
        np.zeros((2, 3)),
        ValueError,
        r"out must have the gradient's shape \(3, 2\) and dtype float64, got shape \(2, 3\)",
    ),
    "dtype": (
        np.zeros((3, 2), np.float32),
        ValueError,
        "dtype float64, got shape .* dtype float32",
    ),
    "fortran": (np.zeros((2, 3)).T, ValueError, "out must be C-contiguous"),
    "read-only": (_read_only(), ValueError, "out must be writable"),
    "overlaps y_true": ("y_true", ValueError, "out must not overlap y_true"),
    "overlaps y_pred": ("y_pred_view", ValueError, "overlaps y_pred without being y_pred"),
}


@pytest.mark.parametrize("case", OUT_CASES)
def test_bad_out_raises_and_changes_nothing(backend, case):
    out, error, match = OUT_CASES[case]
    big = np.arange(8.0).reshape(4, 2)
    y_pred = big[:3]
    y_true = np.ones((3, 2))
    if isinstance(out, str):
        out = y_true if out == "y_true" else big[1:]
    before = _frozen(y_true, y_pred, big)
    with pytest.raises(error, match=match):
        fastloss.MeanSquaredError(backend=backend).value_and_grad(y_true, y_pred, out=out)
    _unchanged(before, y_true, y_pred, big)


def test_in_place_requires_canonical_y_pred(backend):
    x = np.zeros((3, 2), np.float16)
    with pytest.raises(ValueError, match="dtype float32, got .* float16"):
        fastloss.MeanSquaredError(backend=backend).grad(np.zeros((3, 2)), x, out=x)


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("FASTLOSS_BACKEND", "tpu")
    with pytest.raises(ValueError, match="FASTLOSS_BACKEND.*'numpy'.*'tpu'"):
        fastloss.mse([0.0], [1.0])


@pytest.mark.parametrize("in_place", [False, True], ids=["new-gradient", "in-place"])
@pytest.mark.parametrize("bad_label", [10, -1])
def test_bad_labels_in_the_training_loop_call(backend, in_place, bad_label):
    """The common (n, C) float32 + int64-labels call takes a shortcut through validation;
    its errors must be the same, and an in-place call must leave y_pred untouched."""
    x = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    y = np.arange(64, dtype=np.int64) % 10
    y[37] = bad_label
    before = _frozen(x, y)
    loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend=backend)
    with pytest.raises(ValueError, match=rf"label {bad_label} at index \(37,\).*\[0, 10\)"):
        loss.value_and_grad(y, x, out=x if in_place else None)
    with pytest.raises(ValueError, match=rf"label {bad_label} at index \(37,\)"):
        loss(y, x)
    _unchanged(before, x, y)


def test_review_findings_stay_fixed(backend):
    # Non-native byte order keeps the (native) float32 dtype; float16 of either order → float32.
    for dt in (">f4", ">f2", "<f2"):
        grad = fastloss.MeanSquaredError(backend=backend).grad(np.zeros(2), np.ones(2, dt))
        assert grad.dtype == np.float32, dt
    # Labels that overlap y_pred may not be overwritten by an in-place gradient.
    p = np.zeros((2, 2))
    p.view(np.int64).reshape(-1)[1] = 1
    labels = p.view(np.int64).reshape(-1)[:2]
    before = labels.copy()
    loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend=backend)
    with pytest.raises(ValueError, match="out must not overlap y_true"):
        loss.value_and_grad(labels, p, out=p)
    np.testing.assert_array_equal(labels, before)
    # Any n_threads >= 1 is allowed, however large.
    assert fastloss.mse(np.zeros(10), np.ones(10), n_threads=2**63, backend=backend) == 1.0
    with pytest.raises(TypeError, match="y_true must be an integer array-like"):
        fastloss.sparse_categorical_cross_entropy([[0], [0, 1]], np.ones((2, 3)), backend=backend)
    for option in ("delta", "label_smoothing", "eps"):
        cls = fastloss.Huber if option == "delta" else fastloss.BinaryCrossEntropy
        with pytest.raises(ValueError, match=option):
            cls(**{option: 10**400})
