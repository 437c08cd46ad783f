"""Live comparisons with PyTorch (skipped when torch is not installed).

Hypothesis draws the structure of a problem (shapes, class axis, every option, reduction set,
dtype, extreme values); a NumPy generator seeded by hypothesis draws the numbers. Each example
is compared, on every available backend, with torch for every reduction torch has, values and
gradients (torch autograd), through the function, ``grad`` and ``value_and_grad``.

* ``F.cross_entropy`` (sparse labels with ``ignore_index`` / ``weight`` / ``label_smoothing``
  in every combination, soft-probability targets, class axis anywhere) and
  ``F.binary_cross_entropy_with_logits`` (``pos_weight``, ``weight``) for ``from_logits=True``;
* ``F.mse_loss``, ``F.l1_loss``, ``F.huber_loss``;
* probabilities (``from_logits=False``): Keras 3's torch-backend formulas written with torch
  ops (clip to ``[eps, 1-eps]`` in the input dtype; CCE renormalises then clips), with
  fastloss' class / positive weights, so that every option combination gets a gradient check
  against autograd.

torch has no ``sample_weight`` for these losses, nor fastloss' ``"mean"`` = ``Σ w·l / Σ w`` for
a weighted BCE: where a sample weight is drawn, the expected reductions are composed from
torch's ``reduction="none"`` output by fastloss' documented rules (and torch's own ``"mean"``
is used wherever it has the same meaning). ``Σ w = 0`` gives 0 and a zero gradient (torch's
NaN). Tolerances are those of ``test_golden.py`` (see there).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastloss  # noqa: E402

BACKENDS = fastloss.available_backends()
TOLERANCES = {"float64": (1e-12, 1e-14), "float32": (1e-5, 1e-6)}
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,  # writes nothing into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXTREMES = np.array([1e4, -1e4, 1e30, -1e30, 750.0, -750.0, 40.0, -40.0])
DTYPES = st.sampled_from([np.float64, np.float64, np.float32])


def assert_close(actual, expected, dtype, what, term=0.0):
    """``|a - e| <= rtol·|e| + atol·max(max|e|, term)``, ``term`` broadcast to the shape.

    ``term`` is the magnitude of the terms an entry is computed from, where the result can be
    much smaller than they are: a gradient ``W·softmax_j - c_j`` or ``(1-t)·σ(x) - π·t·σ(-x)``,
    a loss ``W·log(Σe^z) - Σ c·z`` near 0. Both sides lose digits to cancellation relative
    to the terms, not to the result: torch's BCE gradient for a saturated float32 logit is
    2e-7 where the exact value (fastloss') is -1e-17, and its float32 log-sum-exp of
    ``1 + 4e-4`` is off by 3e-8 in a loss of 4e-4.
    """
    rtol, atol = TOLERANCES[np.dtype(dtype).name]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected))), 0.0) if expected.size else 0.0
    scale = np.maximum(scale, np.broadcast_to(term, expected.shape))
    bad = ~(np.abs(actual - expected) <= rtol * np.abs(expected) + atol * scale)
    if bad.any():
        i = tuple(np.argwhere(bad)[0]) if expected.ndim else ()
        pytest.fail(f"{what}: {int(bad.sum())}/{bad.size} entries out of tolerance, e.g. at "
                    f"{i}: got {actual[i]!r}, expected {expected[i]!r} (scale {scale[i]:.3g})")


def torch_value_grad(fn, x: np.ndarray, red: str):
    """``fn(tensor)`` and the gradient of it (of its sum for ``"none"``) w.r.t. ``x``."""
    xt = torch.tensor(x, requires_grad=True)
    v = fn(xt)
    (v.sum() if red == "none" else v).backward()
    value = v.detach().numpy().copy()
    return (value if red == "none" else float(value)), xt.grad.numpy().copy()


def check_api(loss_name, options, y_true, y_pred, sample_weight, expected, backend):
    """``expected``: ``{reduction: (value, grad, value_term, grad_term)}`` (see
    :func:`assert_close`); checks the function, the class' ``grad`` and ``value_and_grad``."""
    dtype = y_pred.dtype
    y_pred_before = y_pred.copy()
    cls = fastloss.get(loss_name, **options).__class__
    for red, (value, grad, vterm, gterm) in expected.items():
        what = f"{loss_name}({options}, reduction={red!r}, backend={backend!r})"
        got = getattr(fastloss, loss_name)(y_true, y_pred, sample_weight, reduction=red,
                                           backend=backend, **options)
        if red == "none":
            assert isinstance(got, np.ndarray) and got.dtype == dtype, (what, got)
        else:
            assert isinstance(got, float), (what, type(got))
        assert_close(got, value, dtype, what + " value", vterm)
        loss = cls(reduction=red, backend=backend, **options)
        g = loss.grad(y_true, y_pred, sample_weight)
        assert g.dtype == dtype and g.shape == y_pred.shape, what
        assert_close(g, grad, dtype, what + " grad", gterm)
        v2, g2 = loss.value_and_grad(y_true, y_pred, sample_weight)
        assert_close(v2, value, dtype, what + " value_and_grad value", vterm)
        assert_close(g2, grad, dtype, what + " value_and_grad grad", gterm)
    np.testing.assert_array_equal(y_pred, y_pred_before)


def _reduce(none_fn, x, normalisers: dict, terms=(0.0, 0.0), *, native=None):
    """Expected ``(value, grad, value_term, grad_term)`` for each reduction from torch's
    per-entry losses ``none_fn(x)``.

    ``normalisers`` maps a reduction other than ``"none"``/``"sum"`` to its divisor (0 → the
    value is 0 with a zero gradient); ``native`` maps reductions to torch callables to use
    instead (torch's own reduction, where it has fastloss' meaning); ``terms``: the magnitude
    of the weighted terms of each unreduced loss (loss-shaped) and of each gradient entry
    (broadcastable to ``x``), see :func:`assert_close`.
    """
    native = native or {}
    vterm, gterm = (np.asarray(a, dtype=np.float64) for a in terms)
    gterm = np.broadcast_to(gterm, x.shape)
    out = {}
    for red in ("none", "sum", *normalisers):
        d = normalisers.get(red, 1.0)
        value, grad = _expected(none_fn, x, red, d, native)
        if red == "none":
            out[red] = (value, grad, vterm, gterm)
        else:
            out[red] = (value, grad, float(vterm.sum()) / d if d else 0.0,
                        gterm / d if d else 0.0 * gterm)
    return out


def _expected(none_fn, x, red, d, native):
    if red in native:
        return torch_value_grad(native[red], x, red)
    if red == "none":
        return torch_value_grad(none_fn, x, red)
    if red == "sum":
        return torch_value_grad(lambda t: none_fn(t).sum(), x, red)
    if d == 0:
        return (0.0, np.zeros_like(x))
    return torch_value_grad(lambda t: none_fn(t).sum() / d, x, red)


@st.composite
def class_problems(draw, soft: bool):
    """A cross-entropy problem in torch's layout (N, C, *extra) and where fastloss' class
    axis goes."""
    seed = draw(st.integers(0, 2**32 - 1))
    one_d = not soft and draw(st.integers(0, 9)) == 0
    c = draw(st.integers(1, 6))
    if one_d:
        shape = (c,)
    else:
        extra = draw(st.lists(st.integers(1, 3), max_size=2))
        shape = (draw(st.integers(1, 6)), c, *extra)
    ndim = len(shape)
    pos = 0 if one_d else draw(st.integers(0, ndim - 1))  # fastloss class axis position
    axis = draw(st.sampled_from([pos, pos - ndim]))
    return {
        "seed": seed,
        "shape": shape,
        "pos": pos,
        "axis": axis,
        "dtype": draw(DTYPES),
        "scale": draw(st.sampled_from([0.1, 1.0, 5.0, 30.0])),
        "extreme": draw(st.booleans()),
        "class_weight": draw(st.sampled_from([None, "positive", "with_zero"])),
        "smoothing": draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 0.95])),
        "sample_weight": draw(st.sampled_from([None, "full", "broadcast", "scalar"])),
    }


def _logits(p, rng):
    x = rng.normal(0.0, p["scale"], p["shape"])
    if p["extreme"]:
        mask = rng.uniform(size=x.shape) < 0.3
        x[mask] = rng.choice(EXTREMES, int(mask.sum()))
    return x.astype(p["dtype"])


def _class_weight(p, rng, c):
    if p["class_weight"] is None:
        return None
    cw = rng.uniform(0.1, 3.0, c)
    if p["class_weight"] == "with_zero":
        cw[rng.integers(0, c)] = 0.0
    return cw


def _sample_weight(p, rng, loss_shape):
    kind = p["sample_weight"]
    if kind is None:
        return None
    if kind == "scalar":
        return np.float64(rng.uniform(0.5, 2.0))
    if kind == "broadcast" and len(loss_shape) >= 1:
        shape = (loss_shape[0],) + (1,) * (len(loss_shape) - 1)
        return rng.uniform(0.0, 2.0, shape)
    return rng.uniform(0.0, 2.0, loss_shape)


def _to_fastloss(a, p):
    """Move the class axis of a torch-layout array to fastloss' position."""
    return a if len(p["shape"]) == 1 else np.moveaxis(a, 1, p["pos"])


def _row_term(row, shape):
    """A per-sample term (loss-shaped) broadcast along the class axis 1 (torch layout)."""
    row = np.asarray(row, dtype=np.float64)
    return np.broadcast_to(row if len(shape) == 1 else np.expand_dims(row, 1), shape)


def _fastloss_expected(exp, p):
    """Torch's gradients are in torch's layout; fastloss' in its own."""
    return {r: (v, np.ascontiguousarray(_to_fastloss(g, p)), vt, _to_fastloss(gt, p))
            for r, (v, g, vt, gt) in exp.items()}


# ------------------------------------------------------------------ cross-entropy, logits


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=class_problems(soft=False), ignore=st.sampled_from([None, -100, -1, "in_range"]),
       n_ignored=st.sampled_from([0, 1, "all"]))
def test_sparse_cross_entropy_logits(backend, p, ignore, n_ignored):
    rng = np.random.default_rng(p["seed"])
    x = _logits(p, rng)
    shape = p["shape"]
    c = shape[0] if len(shape) == 1 else shape[1]
    lab_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    y = rng.integers(0, c, lab_shape).astype(np.int64)
    ignore_index = None
    if ignore is not None:
        ignore_index = int(rng.integers(0, c)) if ignore == "in_range" else ignore
        if n_ignored == "all":
            y[...] = ignore_index
        elif n_ignored and y.size:
            y.reshape(-1)[rng.integers(0, y.size)] = ignore_index
    cw = _class_weight(p, rng, c)
    sw = _sample_weight(p, rng, lab_shape)
    tdt = torch.from_numpy(x).dtype
    kw = {
        "weight": None if cw is None else torch.tensor(cw, dtype=tdt),
        "ignore_index": -100 if ignore_index is None else ignore_index,
        "label_smoothing": p["smoothing"],
    }
    yt = torch.from_numpy(y)
    swt = None if sw is None else torch.tensor(sw, dtype=tdt)

    def none_fn(t):
        l = F.cross_entropy(t, yt, reduction="none", **kw)  # noqa: E741
        return l if swt is None else l * swt

    valid = np.ones(lab_shape, bool) if ignore_index is None else y != ignore_index
    kappa = np.ones(lab_shape) if cw is None else cw[np.where(valid, y, 0)]
    w = np.broadcast_to(1.0 if sw is None else sw, lab_shape)
    norm = float(np.sum(w * kappa * valid))
    native = {}
    if sw is None and norm > 0:  # torch's own weighted mean
        native["mean"] = lambda t: F.cross_entropy(t, yt, reduction="mean", **kw)
    eps = p["smoothing"]
    big_w = kappa * (1 - eps) + eps / c * (c if cw is None else cw.sum())  # Σ_j c_j per row
    term = np.abs(w * big_w * valid)
    exp = _reduce(none_fn, x, {"mean": norm}, (term, _row_term(term, shape)), native=native)
    options = {"from_logits": True, "label_smoothing": p["smoothing"], "axis": p["axis"]}
    if cw is not None:
        options["class_weight"] = cw
    if ignore_index is not None:
        options["ignore_index"] = ignore_index
    check_api("sparse_categorical_cross_entropy", options, y,
              np.ascontiguousarray(_to_fastloss(x, p)), sw, _fastloss_expected(exp, p), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=class_problems(soft=True), target=st.sampled_from(["dirichlet", "onehot", "any"]))
def test_soft_cross_entropy_logits(backend, p, target):
    rng = np.random.default_rng(p["seed"])
    x = _logits(p, rng)
    shape = p["shape"]
    c = shape[1]
    samples = (shape[0], *shape[2:])
    if target == "dirichlet":
        t = np.moveaxis(rng.dirichlet(np.ones(c), samples), -1, 1)
    elif target == "onehot":
        t = np.moveaxis(np.eye(c)[rng.integers(0, c, samples)], -1, 1)
    else:  # nonnegative, rows not summing to 1, some all-zero
        t = rng.uniform(0.0, 2.0, shape) * (rng.uniform(size=shape) < 0.7)
    t = t.astype(p["dtype"])
    cw = _class_weight(p, rng, c)
    sw = _sample_weight(p, rng, samples)
    tdt = torch.from_numpy(x).dtype
    kw = {"weight": None if cw is None else torch.tensor(cw, dtype=tdt),
          "label_smoothing": p["smoothing"]}
    tt = torch.from_numpy(t)
    swt = None if sw is None else torch.tensor(sw, dtype=tdt)

    def none_fn(z):
        l = F.cross_entropy(z, tt, reduction="none", **kw)  # noqa: E741
        return l if swt is None else l * swt

    norm = float(np.sum(np.broadcast_to(1.0 if sw is None else sw, samples)))
    native = {}
    if sw is None:
        native["mean"] = lambda z: F.cross_entropy(z, tt, reduction="mean", **kw)
    eps = p["smoothing"]
    kappa = 1.0 if cw is None else cw.reshape((c,) + (1,) * (len(shape) - 2))
    big_w = ((t * (1 - eps) + eps / c) * kappa).sum(axis=1)  # Σ_j c_j per sample
    term = np.abs(np.broadcast_to(1.0 if sw is None else sw, samples) * big_w)
    exp = _reduce(none_fn, x, {"mean": norm}, (term, _row_term(term, shape)), native=native)
    options = {"from_logits": True, "label_smoothing": p["smoothing"], "axis": p["axis"]}
    if cw is not None:
        options["class_weight"] = cw
    check_api("categorical_cross_entropy", options, np.ascontiguousarray(_to_fastloss(t, p)),
              np.ascontiguousarray(_to_fastloss(x, p)), sw, _fastloss_expected(exp, p), backend)


# ------------------------------------------------------------------ elementwise


@st.composite
def elementwise_problems(draw):
    return {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "shape": tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))),
        "dtype": draw(DTYPES),
        "scale": draw(st.sampled_from([0.1, 1.0, 5.0, 30.0])),
        "extreme": draw(st.booleans()),
        "weight": draw(st.sampled_from([None, "full", "last", "first", "scalar"])),
    }


def _elem_weight(kind, rng, shape):
    if kind is None:
        return None
    if kind == "scalar":
        return np.float64(rng.uniform(0.5, 2.0))
    wshape = {"full": shape, "last": shape[-1:],
              "first": (shape[0],) + (1,) * (len(shape) - 1)}[kind]
    return rng.uniform(0.0, 2.0, wshape)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=elementwise_problems(), target=st.sampled_from(["binary", "soft"]),
       pos_weight=st.sampled_from([None, "last", "one"]),
       smoothing=st.sampled_from([0.0, 0.0, 0.1, 0.6]))
def test_bce_logits(backend, p, target, pos_weight, smoothing):
    rng = np.random.default_rng(p["seed"])
    shape = p["shape"]
    x = rng.normal(0.0, p["scale"], shape)
    if p["extreme"]:
        mask = rng.uniform(size=shape) < 0.4
        x[mask] = rng.choice(EXTREMES, int(mask.sum()))
    x = x.astype(p["dtype"])
    t = (rng.uniform(size=shape) < 0.5).astype(float)
    if target == "soft":
        t = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(size=shape), t)
    t = t.astype(p["dtype"])
    pw = None if pos_weight is None else rng.uniform(0.2, 4.0, {"last": shape[-1:],
                                                                "one": (1,)}[pos_weight])
    w = _elem_weight(p["weight"], rng, shape)
    tdt = torch.from_numpy(x).dtype
    ts = torch.from_numpy(t)
    if smoothing:  # Keras' (and fastloss') definition for binary targets
        ts = ts * (1.0 - smoothing) + 0.5 * smoothing
    kw = {"pos_weight": None if pw is None else torch.tensor(pw, dtype=tdt),
          "weight": None if w is None else torch.tensor(w, dtype=tdt)}

    def torch_fn(red):
        return lambda z: F.binary_cross_entropy_with_logits(z, ts, reduction=red, **kw)

    wsum = float(np.sum(np.broadcast_to(1.0 if w is None else w, shape)))
    # torch's "mean" divides by numel, with or without a weight: fastloss'
    # "sum_over_batch_size"; fastloss' "mean" is Σw·l / Σw.
    native = {"none": torch_fn("none"), "sum": torch_fn("sum"),
              "sum_over_batch_size": torch_fn("mean")}
    if w is None:
        native["mean"] = torch_fn("mean")
    tp = t.astype(np.float64) * (1 - smoothing) + 0.5 * smoothing
    term = ((np.abs(1 - tp) + np.abs((1.0 if pw is None else pw) * tp))
            * np.abs(1.0 if w is None else w))
    exp = _reduce(torch_fn("none"), x, {"mean": wsum, "sum_over_batch_size": x.size},
                  (term, term), native=native)
    options = {"from_logits": True, "label_smoothing": smoothing}
    if pw is not None:
        options["pos_weight"] = pw
    check_api("binary_cross_entropy", options, t, x, w, exp, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=elementwise_problems(), loss=st.sampled_from(["mse", "mae", "huber"]),
       delta=st.sampled_from([1.0, 0.3, 2.5]), kinks=st.booleans())
def test_regression(backend, p, loss, delta, kinks):
    rng = np.random.default_rng(p["seed"])
    shape = p["shape"]
    dt = p["dtype"]
    t = np.round(rng.normal(0.0, p["scale"], shape), 2).astype(dt)
    y = (t + rng.normal(0.0, p["scale"], shape)).astype(dt)
    if kinks:  # residuals exactly 0 and ±delta (exact in binary: delta and t are chosen so)
        y = np.where(rng.uniform(size=shape) < 0.3, t, y)
        r = np.array([delta, -delta], dtype=dt)[rng.integers(0, 2, shape)]
        y = np.where(rng.uniform(size=shape) < 0.3, t + r, y).astype(dt)
    w = _elem_weight(p["weight"], rng, shape)
    tt = torch.from_numpy(t)
    fns = {
        "mse": lambda z, red: F.mse_loss(z, tt, reduction=red),
        "mae": lambda z, red: F.l1_loss(z, tt, reduction=red),
        "huber": lambda z, red: F.huber_loss(z, tt, reduction=red, delta=delta),
    }
    fn = fns[loss]
    wt = None if w is None else torch.tensor(w, dtype=tt.dtype)

    def none_fn(z):
        l = fn(z, "none")  # noqa: E741
        return l if wt is None else l * wt

    wsum = float(np.sum(np.broadcast_to(1.0 if w is None else w, shape)))
    native = {}
    if w is None:
        native = {"mean": lambda z: fn(z, "mean"), "sum_over_batch_size": lambda z: fn(z, "mean")}
    exp = _reduce(none_fn, y, {"mean": wsum, "sum_over_batch_size": y.size}, native=native)
    options = {"delta": delta} if loss == "huber" else {}
    check_api(loss, options, t, y, w, exp, backend)


# ------------------------------------------------------------------ probabilities


def _bounds(dtype):
    d = np.dtype(dtype).type
    return float(d(1e-7)), float(d(1) - d(1e-7))


def _special_probs(dtype):
    lo, hi = _bounds(dtype)
    d = np.dtype(dtype).type
    return np.array([0.0, 1.0, lo, hi, np.nextafter(d(lo), d(0)), np.nextafter(d(hi), d(1)),
                     np.nextafter(d(lo), d(1)), np.nextafter(d(hi), d(0)), 1e-12, 0.5])


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=elementwise_problems(), pos_weight=st.sampled_from([None, "last"]),
       smoothing=st.sampled_from([0.0, 0.0, 0.2]), special=st.booleans())
def test_bce_probabilities(backend, p, pos_weight, smoothing, special):
    rng = np.random.default_rng(p["seed"])
    shape = p["shape"]
    dt = p["dtype"]
    q = rng.uniform(0.0, 1.0, shape)
    if special:
        mask = rng.uniform(size=shape) < 0.5
        q[mask] = rng.choice(_special_probs(dt), int(mask.sum()))
    q = q.astype(dt)
    t = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(size=shape),
                 rng.uniform(size=shape) < 0.5).astype(dt)
    pw = None if pos_weight is None else rng.uniform(0.2, 4.0, shape[-1:])
    w = _elem_weight(p["weight"], rng, shape)
    lo, hi = _bounds(dt)
    tdt = torch.from_numpy(q).dtype
    ts = torch.from_numpy(t)
    if smoothing:
        ts = ts * (1.0 - smoothing) + 0.5 * smoothing
    wt = None if w is None else torch.tensor(w, dtype=tdt)
    pwt = None if pw is None else torch.tensor(pw, dtype=tdt)

    def none_fn(z):
        zc = torch.clip(z, lo, hi)  # Keras 3 (torch backend); bounds cast to z's dtype
        if pwt is None:
            l = F.binary_cross_entropy(zc, ts, reduction="none")  # noqa: E741
        else:
            l = -(pwt * ts * torch.log(zc) + (1 - ts) * torch.log1p(-zc))  # noqa: E741
        return l if wt is None else l * wt

    wsum = float(np.sum(np.broadcast_to(1.0 if w is None else w, shape)))
    tp = t.astype(np.float64) * (1 - smoothing) + 0.5 * smoothing
    qc = np.clip(q.astype(np.float64), lo, hi)
    # the gradient -π·t/q + (1-t)/(1-q) cancels where q ≈ t
    gterm = ((np.abs((1.0 if pw is None else pw) * tp) / qc + np.abs(1 - tp) / (1 - qc))
             * np.abs(1.0 if w is None else w))
    exp = _reduce(none_fn, q, {"mean": wsum, "sum_over_batch_size": q.size}, (0.0, gterm))
    options = {"from_logits": False, "label_smoothing": smoothing}
    if pw is not None:
        options["pos_weight"] = pw
    check_api("binary_cross_entropy", options, t, q, w, exp, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(p=class_problems(soft=False), sparse=st.booleans(), special=st.booleans(),
       ignore=st.sampled_from([None, -1]))
def test_cross_entropy_probabilities(backend, p, sparse, special, ignore):
    rng = np.random.default_rng(p["seed"])
    shape = p["shape"]
    dt = p["dtype"]
    one_d = len(shape) == 1
    cax = 0 if one_d else 1
    c = shape[cax]
    samples = tuple(s for i, s in enumerate(shape) if i != cax)
    x = rng.uniform(0.0, 2.5, shape)
    if special:  # exact zeros, ones and one-hot slices: both clip bounds active
        mask = rng.uniform(size=shape) < 0.4
        x[mask] = rng.choice(np.array([0.0, 1.0, 1e-12]), int(mask.sum()))
    x[(x.sum(axis=cax, keepdims=True) == 0).repeat(c, axis=cax)] = 1.0
    x = x.astype(dt)
    if sparse:
        y = rng.integers(0, c, samples).astype(np.int64)
        valid = np.ones(samples, bool)
        if ignore is not None and y.size:
            y.reshape(-1)[rng.integers(0, y.size)] = ignore
            valid = np.asarray(y != ignore)
        onehot = np.moveaxis(np.eye(c)[np.where(valid, y, 0)] * valid[..., None], -1, cax)
        target = onehot.astype(dt)
    else:
        target = np.moveaxis(rng.dirichlet(np.ones(c), samples), -1, cax).astype(dt)
        valid = np.ones(samples, bool)
    cw = _class_weight(p, rng, c)
    sw = _sample_weight(p, rng, samples)
    eps = p["smoothing"]
    lo, hi = _bounds(dt)
    tdt = torch.from_numpy(x).dtype
    tt = torch.from_numpy(target)
    if eps:
        tt = tt * (1.0 - eps) + eps / c
    coef = tt if cw is None else tt * torch.tensor(cw, dtype=tdt).reshape(
        (c,) + (1,) * (len(shape) - cax - 1))
    vt = torch.from_numpy(valid)
    swt = None if sw is None else torch.tensor(sw, dtype=tdt)

    def none_fn(z):
        zq = z / z.sum(dim=cax, keepdim=True)  # Keras 3: renormalise, then clip
        l = -(coef * torch.log(torch.clip(zq, lo, hi))).sum(dim=cax)  # noqa: E741
        l = torch.where(vt, l, torch.zeros((), dtype=tdt))  # noqa: E741
        return l if swt is None else l * swt

    w = np.broadcast_to(1.0 if sw is None else sw, samples)
    if sparse:
        kappa = np.ones(samples) if cw is None else cw[np.where(valid, y, 0)]
        norm = float(np.sum(w * kappa * valid))
    else:
        norm = float(np.sum(w))
    # value: float32 renormalisation rounds q by ~ulp, an absolute error ~ulp·Σc in the loss;
    # gradient: (g_j - Σ_k g_k·q_k) / S with g = -c/q̂ cancels.
    coef_np = np.abs(coef.numpy()) * np.expand_dims(valid, cax)
    s_np = x.astype(np.float64).sum(axis=cax, keepdims=True)
    qc = np.clip(x / s_np, lo, hi)
    vterm = w * coef_np.sum(axis=cax)
    gterm = 2 * np.expand_dims(w, cax) * (coef_np / qc / s_np).sum(axis=cax, keepdims=True)
    exp = _reduce(none_fn, x, {"mean": norm, "sum_over_batch_size": int(valid.sum())},
                  (vterm, gterm))
    options = {"from_logits": False, "label_smoothing": eps, "axis": p["axis"]}
    if cw is not None:
        options["class_weight"] = cw
    if sparse:
        name, y_true = "sparse_categorical_cross_entropy", y
        if ignore is not None:
            options["ignore_index"] = ignore
    else:
        name, y_true = "categorical_cross_entropy", np.ascontiguousarray(_to_fastloss(target, p))
    check_api(name, options, y_true, np.ascontiguousarray(_to_fastloss(x, p)), sw,
              _fastloss_expected(exp, p), backend)
