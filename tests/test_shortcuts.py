"""The backends' shortcuts (a canonical unweighted call checked, allocated and run in one go,
see "Shortcuts" in fastloss.backends._jobs): compiled in the Cython backend, the Python
checks of fastloss.backends._shortcut around the job entries in the Numba backend.

* Where a call is canonical the shortcut takes it, and its result is bitwise the general
  path's, for every loss, option, dtype, reduction, entry point, ``out`` form and thread
  count, small and large (multi-threaded) inputs, NaN/inf included.
* Where anything is not canonical the shortcut declines (or is not even called) and the
  call ends exactly as on the general path: the same result, or the same error, with
  nothing modified.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from _cases import REDUCTIONS, make_case, make_loss

import fastloss
from fastloss.backends import get_backend

#: The backends that offer shortcuts (the NumPy reference has none: every call builds a job).
WITH_SHORTCUTS = ("cython", "numba")

SHORTCUTS = ("elementwise_shortcut", "cross_entropy_shortcut")


@pytest.fixture(params=WITH_SHORTCUTS)
def b(request):
    """The name of a backend with shortcuts (skipped where it is not available)."""
    if request.param not in fastloss.available_backends():
        pytest.skip(f"the {request.param} backend is not available")
    return request.param


@pytest.fixture
def shortcuts(monkeypatch, b):
    """Spies on the shortcuts: ``calls`` records, per call, whether it took the call (True) or
    declined (False); ``general()`` is a context in which there are none."""
    module = get_backend(b)
    calls: list[bool] = []

    def spy(real):
        def wrapped(*args):
            result = real(*args)
            calls.append(result is not None)
            return result

        return wrapped

    for name in SHORTCUTS:
        monkeypatch.setattr(module, name, spy(getattr(module, name)))

    @contextlib.contextmanager
    def general():
        with monkeypatch.context() as m:
            for name in SHORTCUTS:
                m.setattr(module, name, None)
            yield

    class Shortcuts:
        pass

    s = Shortcuts()
    s.calls, s.general = calls, general
    return s


def _bits(x):
    """A result (a float, an array or None) as exact bits."""
    if x is None:
        return None
    a = np.asarray(x)
    return (type(x).__name__, a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def _outcome(call, *args):
    """What ``call(*args)`` gives: its result as bits, or its error's type and message."""
    try:
        result = call(*args)
    except Exception as exc:  # noqa: BLE001 - the error itself is the outcome compared
        return ("raised", type(exc), str(exc))
    if isinstance(result, tuple):
        return ("returned", *(_bits(r) for r in result))
    return ("returned", _bits(result))


def _with_specials(name, y_pred, rng):
    """y_pred with a few NaN and ±inf entries (whole rows for cross-entropy)."""
    y_pred = y_pred.copy()
    n = y_pred.shape[0]
    rows = rng.choice(n, size=min(n, 4), replace=False)
    for row, value in zip(rows, (np.nan, np.inf, -np.inf, np.inf), strict=False):
        if name in ("cce", "sparse_cce") and row % 2:
            y_pred[row, :] = value
        else:
            y_pred[row, rng.integers(y_pred.shape[1])] = value
    return y_pred


CANONICAL = [
    ("mse", {}),
    ("mae", {}),
    ("huber", {"delta": 0.7}),
    ("bce", {"from_logits": True, "label_smoothing": 0.2}),
    ("bce", {"from_logits": False}),
    ("cce", {"from_logits": True, "label_smoothing": 0.15}),
    ("cce", {"from_logits": False}),
    ("sparse_cce", {"from_logits": True}),
    ("sparse_cce", {"from_logits": False, "label_smoothing": 0.15}),
    ("sparse_cce", {"from_logits": True, "ignore_index": -100}),
    ("sparse_cce", {"from_logits": True, "ignore_index": 3}),  # a valid class, ignored
]
# (n, C): the training-loop call, one row, and sizes that run on several threads in blocks
# with a remainder (the thresholds are 8192/16384 elements, blocks 4096 elements).
SIZES = {"small": (64, 10), "one-row": (1, 7), "big": (10_007, 10), "wide": (131, 1_000)}


def _ids(cases):
    return ["-".join([name] + [f"{k}={v}" for k, v in opts.items()]) for name, opts in cases]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("name", "opts"), CANONICAL, ids=_ids(CANONICAL))
def test_shortcut_is_taken_and_bitwise_equal_to_the_general_path(
    shortcuts, b, name, opts, size, dtype, rng
):
    if size == "wide" and name not in ("cce", "sparse_cce"):
        pytest.skip("the wide case is for cross-entropy")
    n, c = SIZES[size]
    opts, y_true, y_pred, _ = make_case(name, opts, rng, n=n, c=c, dtype=dtype)
    if y_true.dtype.kind == "f":
        y_true = y_true.astype(dtype)  # a target of another dtype is converted: not canonical
    y_pred = _with_specials(name, y_pred, rng)
    for reduction in REDUCTIONS:
        for n_threads in (1, 3) if size in ("big", "wide") else (None,):
            loss = make_loss(name, opts, reduction=reduction, backend=b, n_threads=n_threads)
            for entry in ("value", "grad", "value_and_grad"):
                for out in ("new", "buffer", "in place") if entry != "value" else ("new",):
                    where = (reduction, n_threads, entry, out)
                    shortcuts.calls.clear()
                    taken = _outcome(_call, loss, entry, y_true, y_pred, out)
                    assert shortcuts.calls == [True], where
                    with shortcuts.general():
                        general = _outcome(_call, loss, entry, y_true, y_pred, out)
                    assert taken == general, where


def _call(loss, entry, y_true, y_pred, out):
    """``loss.<entry>`` on a copy of ``y_pred``, the gradient new, into a buffer or in place."""
    p = y_pred.copy()
    if entry == "value":
        return loss(y_true, p)
    buf = {"new": None, "buffer": np.full_like(p, 7.0), "in place": p}[out]
    result = getattr(loss, entry)(y_true, p, out=buf)
    grad = result[1] if entry == "value_and_grad" else result
    assert buf is None or grad is buf
    return result


def _misaligned(a):
    """A copy of ``a`` at an odd byte offset (C-contiguous but not aligned)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


class _Sub(np.ndarray):
    pass


def _sparse(b, **opts):
    return fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend=b, **opts)


def _labels(n=64, c=10):
    return np.arange(n, dtype=np.int64) % c


def _logits(n=64, c=10, dtype=np.float32):
    return np.random.default_rng(1).normal(size=(n, c)).astype(dtype)


def _bad_label(value):
    y = _labels()
    y[37] = value
    return y


def _overlapping_labels():
    """Labels that live in the bytes of y_pred (so out=y_pred would overwrite them)."""
    p = np.zeros((64, 10), np.float32)
    labels = p.view(np.int64).reshape(-1)[:64]
    labels[...] = _labels()
    return labels, p


# Each case: (loss, y_true, y_pred, keyword arguments) built fresh per run, and whether the
# shortcut is reached ("declined") or the Python layer already knows it cannot take it
# ("not called"). Every case must end as on the general path (result or error).
FALLBACKS = {
    # labels
    "labels int32": (lambda b: (_sparse(b), _labels().astype(np.int32), _logits(), {}), "declined"),
    "labels (n, 1)": (lambda b: (_sparse(b), _labels()[:, None], _logits(), {}), "declined"),
    "labels strided": (lambda b: (_sparse(b), _labels(128)[::2], _logits(), {}), "declined"),
    "labels big-endian": (
        lambda b: (_sparse(b), _labels().astype(">i8"), _logits(), {}),
        "declined",
    ),
    "labels misaligned": (
        lambda b: (_sparse(b), _misaligned(_labels()), _logits(), {}),
        "declined",
    ),
    "labels list": (lambda b: (_sparse(b), _labels().tolist(), _logits(), {}), "declined"),
    "label == C": (lambda b: (_sparse(b), _bad_label(10), _logits(), {}), "declined"),
    "label -1": (lambda b: (_sparse(b), _bad_label(-1), _logits(), {}), "declined"),
    "label -100, nothing ignored": (
        lambda b: (_sparse(b), _bad_label(-100), _logits(), {}),
        "declined",
    ),
    "label -1, -100 ignored": (
        lambda b: (_sparse(b, ignore_index=-100), _bad_label(-1), _logits(), {}),
        "declined",
    ),
    "label huge": (lambda b: (_sparse(b), _bad_label(2**62), _logits(), {}), "declined"),
    "everything ignored": (
        lambda b: (_sparse(b, ignore_index=-100), np.full(64, -100), _logits(), {}),
        "declined",
    ),
    "labels of another length": (lambda b: (_sparse(b), _labels(63), _logits(), {}), "declined"),
    # predictions
    "y_pred Fortran": (
        lambda b: (_sparse(b), _labels(), np.asfortranarray(_logits()), {}),
        "declined",
    ),
    "y_pred strided": (lambda b: (_sparse(b), _labels(), _logits(c=20)[:, ::2], {}), "declined"),
    "y_pred misaligned": (
        lambda b: (_sparse(b), _labels(), _misaligned(_logits()), {}),
        "declined",
    ),
    "y_pred 3-D": (
        lambda b: (_sparse(b), _labels().reshape(4, 16), _logits().reshape(4, 16, 10), {}),
        "declined",
    ),
    "y_pred 1-D": (lambda b: (_sparse(b), np.int64(3), _logits()[0], {}), "declined"),
    "no samples": (lambda b: (_sparse(b), _labels(0), _logits(0), {}), "declined"),
    "no classes": (lambda b: (_sparse(b), _labels(), _logits(c=0), {}), "declined"),
    "y_pred float16": (
        lambda b: (_sparse(b), _labels(), _logits().astype(np.float16), {}),
        "not called",
    ),
    "y_pred big-endian": (
        lambda b: (_sparse(b), _labels(), _logits().astype(">f4"), {}),
        "not called",
    ),
    "y_pred subclass": (lambda b: (_sparse(b), _labels(), _logits().view(_Sub), {}), "not called"),
    "y_pred list": (lambda b: (_sparse(b), _labels(), _logits().tolist(), {}), "not called"),
    "y_pred int": (
        lambda b: (_sparse(b), _labels(), _labels(640).reshape(64, 10), {}),
        "not called",
    ),
    # options the shortcut does not take
    "sample_weight": (
        lambda b: (_sparse(b), _labels(), _logits(), {"sample_weight": np.ones(64)}),
        "not called",
    ),
    "class_weight": (
        lambda b: (_sparse(b, class_weight=np.ones(10)), _labels(), _logits(), {}),
        "not called",
    ),
    "axis 0": (lambda b: (_sparse(b, axis=0), _labels(10), _logits(), {}), "not called"),
    "pos_weight": (
        lambda b: (
            fastloss.BinaryCrossEntropy(pos_weight=[2.0], backend=b),
            np.ones((64, 10), np.float32),
            _logits(),
            {},
        ),
        "not called",
    ),
    # out
    "out read-only": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _read_only(_logits())}),
        "declined",
    ),
    "out read-only y_pred": (
        lambda b: (_sparse(b), _labels(), p := _read_only(_logits()), {"out": p}),
        "declined",
    ),
    "out Fortran": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": np.asfortranarray(_logits())}),
        "declined",
    ),
    "out misaligned": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _misaligned(_logits())}),
        "declined",
    ),
    "out float64": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _logits(dtype=np.float64)}),
        "declined",
    ),
    "out of another shape": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _logits(c=640)[:1]}),
        "declined",
    ),
    "out list": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _logits().tolist()}),
        "declined",
    ),
    "out subclass": (
        lambda b: (_sparse(b), _labels(), _logits(), {"out": _logits().view(_Sub)}),
        "declined",
    ),
    "out a view of y_pred": (
        lambda b: (_sparse(b), _labels(), p := _logits(), {"out": p[...]}),
        "declined",
    ),
    "out overlapping y_pred": (
        lambda b: (_sparse(b), _labels(), (q := _logits(65))[:64], {"out": q[1:]}),
        "declined",
    ),
    "out overlapping y_true": (
        lambda b: (
            _sparse(b),
            *(lambda lp: (lp[0], _logits(), {"out": lp[1]}))(_overlapping_labels()),
        ),
        "declined",
    ),
    "out=y_pred overlapping y_true": (
        lambda b: (_sparse(b), *(lambda lp: (lp[0], lp[1], {"out": lp[1]}))(_overlapping_labels())),
        "declined",
    ),
    # categorical and elementwise targets
    "cce target float64": (
        lambda b: (
            fastloss.CategoricalCrossEntropy(from_logits=True, backend=b),
            np.eye(10)[_labels()],
            _logits(),
            {},
        ),
        "declined",
    ),
    "cce target of another shape": (
        lambda b: (
            fastloss.CategoricalCrossEntropy(from_logits=True, backend=b),
            np.eye(10, dtype=np.float32)[_labels(63)],
            _logits(),
            {},
        ),
        "declined",
    ),
    "mse target float64": (
        lambda b: (
            fastloss.MeanSquaredError(backend=b),
            _logits(dtype=np.float64),
            _logits(),
            {},
        ),
        "declined",
    ),
    "mse target broadcastable": (
        lambda b: (fastloss.MeanSquaredError(backend=b), _logits()[:1], _logits(), {}),
        "declined",
    ),
    "mse target strided": (
        lambda b: (fastloss.MeanSquaredError(backend=b), _logits(c=20)[:, ::2], _logits(), {}),
        "declined",
    ),
    "mse 0-d": (
        lambda b: (
            fastloss.MeanSquaredError(backend=b),
            np.float32(1),
            np.array(2, np.float32),
            {},
        ),
        "declined",
    ),
    "mse empty": (
        lambda b: (fastloss.MeanSquaredError(backend=b), _logits(0), _logits(0), {}),
        "declined",
    ),
}


@pytest.mark.parametrize("entry", ["value", "value_and_grad"])
@pytest.mark.parametrize("case", FALLBACKS)
def test_anything_not_canonical_ends_as_on_the_general_path(shortcuts, b, case, entry):
    build, reached = FALLBACKS[case]
    if entry == "value" and case.startswith("out"):
        pytest.skip("a value-only call has no out")

    def run():
        loss, y_true, y_pred, kwargs = build(b)
        arrays = [a for a in (y_true, y_pred) if isinstance(a, np.ndarray)]
        before = [a.copy() for a in arrays]
        try:
            if entry == "value":
                return _outcome(lambda: loss(y_true, y_pred, **kwargs))
            return _outcome(lambda: loss.value_and_grad(y_true, y_pred, **kwargs))
        finally:
            out = kwargs.get("out")
            if not (isinstance(out, np.ndarray) and np.may_share_memory(out, y_pred)):
                for old, a in zip(before, arrays, strict=True):  # else the gradient is there
                    np.testing.assert_array_equal(a, old)

    shortcuts.calls.clear()
    got = run()
    assert shortcuts.calls == ([] if reached == "not called" else [False])
    with shortcuts.general():
        expected = run()
    assert got == expected


@pytest.mark.parametrize("in_place", [False, True], ids=["new-gradient", "in-place"])
@pytest.mark.parametrize("bad_label", [10, -1])
def test_a_bad_label_is_named_and_an_in_place_y_pred_left_untouched(
    shortcuts, b, in_place, bad_label
):
    x = _logits()
    y = _bad_label(bad_label)
    before = x.copy()
    with pytest.raises(ValueError, match=rf"label {bad_label} at index \(37,\).*\[0, 10\)"):
        _sparse(b).value_and_grad(y, x, out=x if in_place else None)
    assert shortcuts.calls == [False]
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [3, 10, 64, 300], ids=lambda c: f"C={c}")
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("bad_label", [-1, "C", 2**62, -(2**63)], ids=str)
def test_a_bad_label_found_by_the_kernel_is_named(shortcuts, b, dtype, c, from_logits, bad_label):
    """Without ``ignore_index`` a call that writes nothing of the caller's (value only, or
    a new gradient) may leave the label check to the kernel (the Cython shortcut does): every
    kernel path (small and large C, logits and probabilities, one and several blocks and
    threads) must notice a bad label anywhere, read nothing out of bounds for it, and the
    call must end in the general path's error."""
    bad = c if bad_label == "C" else bad_label
    n = 1000
    rng = np.random.default_rng(2)
    x = rng.random((n, c)).astype(dtype) + dtype(0.01)
    if from_logits:
        x = np.log(x)
    frozen = x.copy()
    for at in (0, 137, n - 1):
        y = rng.integers(0, c, n)
        y[at] = bad
        options = {"from_logits": from_logits, "backend": b, "n_threads": 2 if at == 137 else 1}
        loss = fastloss.SparseCategoricalCrossEntropy(**options)
        per_sample = fastloss.SparseCategoricalCrossEntropy(reduction="none", **options)
        message = rf"label {bad} at index \({at},\).*\[0, {c}\)"
        for call in (loss, loss.value_and_grad, per_sample):
            shortcuts.calls.clear()
            with pytest.raises(ValueError, match=message):
                call(y, x)
            assert shortcuts.calls == [False]
    np.testing.assert_array_equal(x, frozen)


def test_which_backends_have_shortcuts():
    for name in fastloss.available_backends():
        module = get_backend(name)
        for shortcut in SHORTCUTS:
            assert (getattr(module, shortcut, None) is not None) == (name in WITH_SHORTCUTS)


def _label_pass_counter(b, monkeypatch):
    """() -> how many separate label passes the backend's cross-entropy shortcut has made so
    far: the Cython module's own count, or, for Numba, a count around the label check that
    fastloss.backends._shortcut's shortcut is built with (a fresh pair, swapped in)."""
    module = get_backend(b)
    if b == "cython":
        return module.kernels.label_passes
    from fastloss.backends import _shortcut
    from fastloss.backends.numba import _labels, _runtime

    passes = []

    def counted(*args):
        passes.append(args)
        return _labels.count_kept(*args)

    _, ce = _shortcut.job_shortcuts(
        module.elementwise,
        module.cross_entropy,
        counted,
        _runtime.read_only,
        module.cross_entropy_unchecked,
    )
    monkeypatch.setattr(module, "cross_entropy_shortcut", ce)
    return lambda: len(passes)


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_the_labels_get_a_pass_of_their_own_only_where_needed(monkeypatch, b, from_logits):
    """A separate pass over the labels (check and count) before the kernel is needed only
    with ``ignore_index`` (the count is the normaliser) or where the kernel writes into the
    caller's memory (``out``: a bad call must change nothing). Everywhere else the kernel
    checks the labels it reads, and the pass (about an eighth of a value-only call at
    (6553600, 10)) must not come back unnoticed."""
    passes = _label_pass_counter(b, monkeypatch)
    rng = np.random.default_rng(5)
    x = rng.random((300, 10)).astype(np.float32) + np.float32(0.01)
    y = rng.integers(0, 10, 300)
    options = {"from_logits": from_logits, "backend": b}
    loss = fastloss.SparseCategoricalCrossEntropy(**options)
    out = np.empty_like(x)
    without_pass = [
        lambda: loss(y, x),
        lambda: loss.value_and_grad(y, x),
        lambda: loss.grad(y, x),
        lambda: fastloss.SparseCategoricalCrossEntropy(reduction="none", **options)(y, x),
    ]
    with_pass = [
        lambda: loss.value_and_grad(y, x, out=out),
        lambda: loss.grad(y, x, out=out),
        lambda: fastloss.SparseCategoricalCrossEntropy(ignore_index=3, **options)(y, x),
        lambda: fastloss.SparseCategoricalCrossEntropy(ignore_index=3, **options)
        .value_and_grad(y, x),
    ]
    for calls, extra in ((without_pass, 0), (with_pass, 1)):
        for call in calls:
            before = passes()
            call()
            assert passes() - before == extra
    # and the result is the general path's (which always checks the labels first)
    taken = loss.value_and_grad(y, x)
    with monkeypatch.context() as m:
        m.setattr(get_backend(b), "cross_entropy_shortcut", None)
        general = loss.value_and_grad(y, x)
    assert [_bits(r) for r in taken] == [_bits(r) for r in general]
