"""The public surface: names, aliases, backend selection, configuration, docs, import cost."""

from __future__ import annotations

import doctest
import importlib.resources
import inspect
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastloss
import fastloss.backends
import fastloss.losses

CLASSES = {
    "mse": fastloss.MeanSquaredError,
    "mae": fastloss.MeanAbsoluteError,
    "huber": fastloss.Huber,
    "binary_cross_entropy": fastloss.BinaryCrossEntropy,
    "categorical_cross_entropy": fastloss.CategoricalCrossEntropy,
    "sparse_categorical_cross_entropy": fastloss.SparseCategoricalCrossEntropy,
}
ALIASES = {
    "bce": "binary_cross_entropy",
    "cce": "categorical_cross_entropy",
    "sparse_cce": "sparse_categorical_cross_entropy",
}


@pytest.mark.parametrize("name", list(CLASSES) + list(ALIASES))
def test_get_returns_the_named_class_with_options(name):
    cls = CLASSES[ALIASES.get(name, name)]
    loss = fastloss.get(name, reduction="sum", n_threads=2)
    assert type(loss) is cls and loss.reduction == "sum" and loss.n_threads == 2


@pytest.mark.parametrize("name", list(CLASSES))
def test_function_equals_class(backend, name, rng):
    fn = getattr(fastloss, name)
    cls = CLASSES[name]
    x = rng.uniform(0.1, 0.9, (6, 4))
    if name == "sparse_categorical_cross_entropy":
        y = rng.integers(0, 4, 6)
    else:
        y = rng.uniform(0, 1, (6, 4))
    sw = rng.uniform(0, 1, 6 if "categorical" in name else (6, 4))
    for reduction in ("mean", "none"):
        expected = cls(reduction=reduction, backend=backend)(y, x, sw)
        np.testing.assert_array_equal(fn(y, x, sw, reduction=reduction, backend=backend), expected)


def test_functions_take_the_class_options_as_keywords():
    for name, cls in CLASSES.items():
        fn_params = inspect.signature(getattr(fastloss, name)).parameters
        cls_params = inspect.signature(cls.__init__).parameters
        options = [p for p in cls_params if p not in ("self", "kwargs")]
        for option in options + ["reduction", "backend", "n_threads", "sample_weight"]:
            assert option in fn_params, (name, option)
    assert fastloss.huber([0.0], [3.0], delta=2.0, reduction="sum") == 4.0


def test_config_round_trip_repr_and_equality():
    loss = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, class_weight=[1.0, 2.0], ignore_index=-100, reduction="sum"
    )
    clone = type(loss)(**loss.get_config())
    assert clone == loss and clone is not loss
    assert clone != fastloss.SparseCategoricalCrossEntropy(from_logits=True)
    assert "ignore_index=-100" in repr(loss) and "class_weight=array([1.0, 2.0])" in repr(loss)


def test_options_are_copied_so_later_edits_do_not_leak_in():
    cw = np.array([1.0, 2.0])
    loss = fastloss.CategoricalCrossEntropy(class_weight=cw)
    cw[0] = 100.0
    assert loss.class_weight[0] == 1.0


def test_backend_selection_precedence(monkeypatch):
    default = fastloss.available_backends()[0]
    seen = []
    original = fastloss.backends.get_backend

    def spy(name):
        seen.append(name)
        return original(name)

    monkeypatch.setattr(fastloss.backends, "get_backend", spy)
    mse = fastloss.MeanSquaredError()
    mse([0.0], [1.0])
    assert seen[-1] == default
    monkeypatch.setenv("FASTLOSS_BACKEND", "numpy")
    mse([0.0], [1.0])
    assert seen[-1] == "numpy"
    monkeypatch.delenv("FASTLOSS_BACKEND")
    try:
        fastloss.set_backend("numpy")
        mse([0.0], [1.0])
        assert seen[-1] == "numpy"
        with fastloss.use_backend(default):
            mse([0.0], [1.0])
            assert seen[-1] == default
            fastloss.MeanSquaredError(backend="numpy")([0.0], [1.0])
            assert seen[-1] == "numpy"  # the explicit argument wins
        mse([0.0], [1.0])
        assert seen[-1] == "numpy"
    finally:
        fastloss.set_backend(None)


def test_available_backends_fastest_first():
    names = fastloss.available_backends()
    assert names[-1] == "numpy"
    order = fastloss.backends.BACKEND_NAMES
    assert list(names) == sorted(names, key=order.index)


def test_installed_package_has_every_backend():
    """An installed fastloss (not this source tree) must have built its extension and found
    numba, a hard dependency: a silent fallback to NumPy would hide a broken build."""
    installed = pathlib.Path(fastloss.__file__).resolve().parent
    source = pathlib.Path(__file__).resolve().parent.parent / "fastloss"
    if installed == source.resolve():
        pytest.skip("running against the source tree, not an installed fastloss")
    if (source / "backends" / "numba").is_dir():
        assert "numba" in fastloss.available_backends()
    setup_py = (source.parent / "setup.py").read_text()
    if "Extension(" in setup_py:
        assert "cython" in fastloss.available_backends()


def test_import_does_not_import_numba():
    code = (
        "import sys, time; import numpy; t = time.perf_counter(); import fastloss; "
        "dt = time.perf_counter() - t; fastloss.mse([0.0], [1.0], backend='numpy'); "
        "print('numba' in sys.modules, dt)"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTLOSS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=pathlib.Path(fastloss.__file__).parent.parent,
    )
    imported, seconds = out.stdout.split()
    assert imported == "False"
    print(f"import fastloss took {float(seconds) * 1e3:.1f} ms on top of numpy")  # informative


def test_py_typed_marker_is_shipped():
    assert importlib.resources.files("fastloss").joinpath("py.typed").is_file()


PUBLIC = [getattr(fastloss, name) for name in fastloss.__all__ if name != "LOSS_NAMES"]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: getattr(o, "__name__", str(o)))
def test_every_public_name_has_a_docstring_with_an_example(obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{obj} needs an example"
    if obj in CLASSES.values() or getattr(obj, "__name__", "") in CLASSES:
        assert "l =" in doc or "l = " in inspect.getdoc(CLASSES.get(obj.__name__, obj)), obj


@pytest.mark.parametrize("module", [fastloss, fastloss.losses, fastloss.backends])
def test_docstring_examples_run(module):
    with fastloss.use_backend("numpy"):
        result = doctest.testmod(
            module,
            extraglobs={"fastloss": fastloss, "np": np},
            optionflags=doctest.NORMALIZE_WHITESPACE,
        )
    assert result.attempted > 0 and result.failed == 0


def test_warmup_runs():
    fastloss.warmup()
