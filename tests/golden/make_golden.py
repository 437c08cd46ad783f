"""Generate the golden files in this folder from PyTorch and Keras 3.

Run from the repository root (needs torch and keras, which are *not* fastloss dependencies;
nothing else imports them)::

    pip install torch==2.13.0 keras
    python tests/golden/make_golden.py

The output is deterministic (fixed seeds, fixed zip timestamps), so re-running it with the
same torch/keras/numpy versions reproduces the files byte for byte.

File layout
-----------
Each ``<group>.npz`` holds many cases. ``__meta__`` is a JSON string::

    {"versions": {"torch": ..., "keras": ..., "numpy": ..., "keras_backend": "torch"},
     "notes": [...],
     "cases": [{"name", "loss", "options", "array_options", "inputs", "reductions",
                "dtype", "source", "composed", "note"}, ...]}

* ``loss`` is the name of the fastloss function (``fastloss.<loss>``);
* ``options`` are its scalar keyword options; ``array_options`` names the array-valued ones
  (``class_weight``, ``pos_weight``) stored as ``<case>/<option>``;
* ``inputs`` lists the stored input arrays: ``<case>/y_true``, ``<case>/y_pred`` and
  optionally ``<case>/sample_weight`` (passed as ``sample_weight=``);
* for each fastloss reduction ``r`` in ``reductions``: ``<case>/value/<r>`` (0-d float64 for
  the scalar reductions, the per-element / per-sample array for ``"none"``) and
  ``<case>/grad/<r>``, the gradient of that value with respect to ``y_pred`` (for ``"none"``:
  of the sum of the returned array), both from torch autograd;
* ``composed`` maps a reduction to how it was built when the peer has no direct equivalent
  (e.g. a ``sample_weight`` for torch's cross-entropy, which has none); the per-element /
  per-sample losses are always the peer's own.

Groups
------
``torch_ce``        ``F.cross_entropy`` from logits: sparse labels (``ignore_index``, ``weight``,
                    ``label_smoothing`` and all their combinations, multi-dimensional inputs)
                    and soft-probability targets; extreme logits (±1e4, ±1e30); float32.
``torch_bce``       ``F.binary_cross_entropy_with_logits`` (``pos_weight`` along the last
                    axis, ``weight``); smoothing applied to the target as Keras defines it.
``torch_regression`` ``F.mse_loss``, ``F.l1_loss``, ``F.huber_loss(delta=...)``.
``keras_prob``      Keras 3 loss classes from probabilities (``from_logits=False``), float32
                    and float64 inputs, ``reduction=None`` (per element for BCE, per sample
                    for CCE / sparse CCE; ``sample_weight`` multiplied in) and the reduced
                    values ``"sum"``, ``"sum_over_batch_size"`` and ``"mean_with_sample_weight"``
                    (stored as fastloss ``"mean"``: ``Σ w·l / Σ w``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: gradients via torch autograd

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TORCH_REDUCTIONS = ("mean", "sum", "none")
VERSIONS = {
    "torch": torch.__version__,
    "keras": keras.__version__,
    "keras_backend": keras.backend.backend(),
    "numpy": np.__version__,
}
EPS = 1e-7  # Keras' backend.epsilon() and fastloss' default eps
assert keras.backend.backend() == "torch"
assert keras.config.epsilon() == EPS


def rng_for(name: str) -> np.random.Generator:
    """A generator per case, so adding a case never changes the others."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def clip_bounds(dtype) -> tuple[float, float]:
    """The clip bounds in the input dtype, as fastloss and Keras compute them."""
    dt = np.dtype(dtype).type
    lo, hi = dt(EPS), dt(1) - dt(EPS)
    # Keras' torch backend clips with Python floats, which torch casts to the tensor dtype.
    assert hi == dt(1.0 - EPS) and lo == dt(EPS)
    return float(lo), float(hi)


class Group:
    """One ``.npz`` file: many cases."""

    def __init__(self, filename: str, notes: list[str]):
        self.filename = filename
        self.notes = notes
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []

    def add(self, name, loss, *, y_true, y_pred, expected, options=None, array_options=None,
            sample_weight=None, source, composed=None, note=""):
        assert not any(c["name"] == name for c in self.cases), name
        options = dict(options or {})
        array_options = dict(array_options or {})
        inputs = {"y_true": y_true, "y_pred": y_pred}
        if sample_weight is not None:
            inputs["sample_weight"] = sample_weight
        for key, arr in {**inputs, **array_options}.items():
            self.arrays[f"{name}/{key}"] = np.asarray(arr)
        for red, (value, grad) in expected.items():
            value = np.asarray(value)
            if red != "none":
                value = value.astype(np.float64)
            grad = np.asarray(grad)
            assert grad.shape == np.shape(y_pred) and grad.dtype == np.asarray(y_pred).dtype
            self.arrays[f"{name}/value/{red}"] = value
            self.arrays[f"{name}/grad/{red}"] = grad
        self.cases.append({
            "name": name,
            "loss": loss,
            "options": options,
            "array_options": sorted(array_options),
            "inputs": sorted(inputs),
            "reductions": list(expected),
            "dtype": str(np.asarray(y_pred).dtype),
            "source": source,
            "composed": composed or {},
            "note": note,
        })

    def save(self) -> Path:
        meta = {"versions": VERSIONS, "notes": self.notes, "cases": self.cases}
        entries = {"__meta__": np.array(json.dumps(meta, indent=1, sort_keys=True)), **self.arrays}
        path = HERE / self.filename
        # np.savez stamps the current time into the zip; write it with a fixed one instead.
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, arr in entries.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array(arr, order="C"), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        return path


def autograd(fn, y_pred: np.ndarray, reductions) -> dict:
    """``{reduction: (value, grad)}`` with ``fn(x, reduction)`` a torch expression."""
    out = {}
    for red in reductions:
        x = torch.tensor(y_pred, requires_grad=True)
        v = fn(x, red)
        (v.sum() if red == "none" else v).backward()
        value = v.detach().numpy().copy()
        out[red] = (value if red == "none" else float(value), x.grad.numpy().copy())
    return out


# --------------------------------------------------------------------------------------
# torch: cross-entropy from logits
# --------------------------------------------------------------------------------------

def torch_ce_group() -> Group:
    g = Group("torch_ce.npz", [
        "values and gradients of torch.nn.functional.cross_entropy on the logits (float64 "
        "unless the case's dtype says otherwise); reductions mean/sum/none (torch has no "
        "sum_over_batch_size)",
        "class_weight = torch weight; ignore_index = torch ignore_index; inputs with more than "
        "2 dimensions have the class axis at 1 (torch's layout) and use fastloss axis=1",
        "sample_weight cases: torch reduction='none' times sample_weight, summed; 'mean' "
        "divided by sum(sample_weight * class_weight[label]) over non-ignored samples "
        "(sparse) or sum(sample_weight) (soft targets), fastloss' documented normalisers",
        "all-ignored case: torch's 'mean' is 0/0 = nan; the stored value is fastloss' "
        "documented 0.0 with a zero gradient (see the case note)",
    ])

    def sparse(name, *, n=7, c=5, extra=(), ignore_index=None, n_ignored=0, cw=None,
               ls=0.0, dtype=np.float64, scale=3.0, logits=None, labels=None, sw=False,
               note=""):
        rng = rng_for(name)
        shape = (n, c, *extra)
        x = rng.normal(0.0, scale, shape) if logits is None else np.asarray(logits, float)
        x = x.astype(dtype)
        lab_shape = (x.shape[0], *x.shape[2:])
        y = rng.integers(0, x.shape[1], lab_shape) if labels is None else np.asarray(labels)
        y = y.astype(np.int64)
        if n_ignored:
            flat = y.reshape(-1)
            flat[rng.choice(flat.size, n_ignored, replace=False)] = ignore_index
        weight = None if cw is None else np.asarray(cw, dtype=np.float64)
        swt = rng.uniform(0.0, 2.5, lab_shape) if sw else None
        tw = None if weight is None else torch.tensor(weight, dtype=torch.from_numpy(x).dtype)
        kw = {"weight": tw, "label_smoothing": ls}
        if ignore_index is not None:
            kw["ignore_index"] = ignore_index
        yt = torch.from_numpy(y)
        composed = {}
        if swt is None:
            fn = lambda xx, red: F.cross_entropy(xx, yt, reduction=red, **kw)  # noqa: E731
        else:
            st = torch.from_numpy(swt).to(torch.from_numpy(x).dtype)
            valid = yt != (ignore_index if ignore_index is not None else -100)
            kappa = torch.ones_like(st) if tw is None else tw[torch.where(valid, yt, 0)]
            norm = (st * kappa * valid).sum()

            def fn(xx, red):
                wl = st * F.cross_entropy(xx, yt, reduction="none", **kw)
                return {"none": wl, "sum": wl.sum(), "mean": wl.sum() / norm}[red]

            composed = {
                "none": "sample_weight * cross_entropy(reduction='none')",
                "sum": "sum(sample_weight * cross_entropy(reduction='none'))",
                "mean": "sum(sample_weight * l) / sum(sample_weight * weight[label] * valid)",
            }
        expected = autograd(fn, x, TORCH_REDUCTIONS)
        options = {"from_logits": True, "label_smoothing": ls}
        if ignore_index is not None:
            options["ignore_index"] = ignore_index
        if x.ndim > 2:
            options["axis"] = 1
        g.add(name, "sparse_categorical_cross_entropy", y_true=y, y_pred=x,
              expected=expected, options=options,
              array_options={} if weight is None else {"class_weight": weight},
              sample_weight=swt, source="torch.nn.functional.cross_entropy",
              composed=composed, note=note)

    cw5 = [0.5, 2.0, 1.0, 3.0, 0.25]
    sparse("sparse.plain")
    sparse("sparse.ignore_m100", ignore_index=-100, n_ignored=3)
    sparse("sparse.ignore_in_range", ignore_index=1, labels=[1, 0, 1, 2, 4, 3, 1],
           note="ignore_index is a valid class id (1): those samples are ignored")
    sparse("sparse.cw", cw=cw5)
    sparse("sparse.cw_zero", cw=[0.0, 2.0, 1.0, 0.0, 1.5], labels=[0, 1, 3, 2, 4, 0, 1],
           note="zero class weights")
    sparse("sparse.smooth", ls=0.1)
    sparse("sparse.cw_ignore", cw=cw5, ignore_index=-100, n_ignored=2)
    sparse("sparse.smooth_ignore", ls=0.2, ignore_index=-100, n_ignored=3)
    sparse("sparse.smooth_cw", ls=0.3, cw=cw5)
    sparse("sparse.smooth_cw_ignore", ls=0.25, cw=cw5, ignore_index=-100, n_ignored=3,
           note="smoothing + ignored targets + class weights (wrong in old PyTorch)")
    sparse("sparse.smooth_cw_ignore_in_range", ls=0.15, cw=cw5, ignore_index=2,
           labels=[2, 0, 1, 2, 4, 3, 2], note="ignore_index=2 is a class that also has a "
           "weight: it still counts in the smoothing term of the other samples")
    sparse("sparse.smooth_cw_ignore_3d", n=3, c=4, extra=(5,), ls=0.2,
           cw=[1.5, 0.5, 2.0, 1.0], ignore_index=-1, n_ignored=4,
           note="input (N, C, d); fastloss axis=1")
    sparse("sparse.smooth_cw_ignore_4d", n=2, c=3, extra=(2, 3), ls=0.1,
           cw=[0.7, 1.3, 2.2], ignore_index=-100, n_ignored=3,
           note="input (N, C, d1, d2); fastloss axis=1")
    sparse("sparse.c1", n=4, c=1, ls=0.1, note="a single class")
    sparse("sparse.smooth_cw_ignore_f32", ls=0.25, cw=cw5, ignore_index=-100, n_ignored=3,
           dtype=np.float32, note="float32 (torch computes in float32)")
    sparse("sparse.smooth_cw_ignore_sw", ls=0.2, cw=cw5, ignore_index=-100, n_ignored=2,
           sw=True)
    sparse("sparse.smooth_sw_3d", n=3, c=4, extra=(2,), ls=0.1, sw=True)
    big = [
        [1e4, -1e4, 0.0, 5.0, -3.0],
        [-1e4, 1e4, 1e4, 0.0, 1.0],
        [1e30, -1e30, 0.0, 1.0, 2.0],
        [-1e30, -1e30, -1e30, -1e30, -1e30],
        [1e30, 1e30, -1e30, 0.0, 0.0],
        [-1e30, 3.0, 1e30, -1e4, 1e4],
        [50.0, -50.0, 700.0, -700.0, 0.0],
        [1e30, 1e30, 1e30, 1e30, 1e30],
    ]
    lab_big = [1, 0, 1, 2, 2, 0, 3, 4]
    sparse("sparse.extreme", logits=big, labels=lab_big)
    sparse("sparse.extreme_smooth_cw_ignore", logits=big, labels=[1, 0, -100, 2, 2, 0, 3, 4],
           ls=0.1, cw=cw5, ignore_index=-100)
    sparse("sparse.extreme_f32", logits=big, labels=lab_big, ls=0.1, cw=cw5,
           dtype=np.float32)

    # All ignored: torch's mean is nan (0/0); fastloss documents 0.0 and a zero gradient.
    name = "sparse.all_ignored"
    x = rng_for(name).normal(0, 2, (3, 4))
    y = np.full(3, -100, dtype=np.int64)
    exp = autograd(lambda xx, red: F.cross_entropy(xx, torch.from_numpy(y), reduction=red,
                                                   label_smoothing=0.1), x, ("sum", "none"))
    assert np.isnan(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y)).item())
    exp["mean"] = (0.0, np.zeros_like(x))
    g.add(name, "sparse_categorical_cross_entropy", y_true=y, y_pred=x, expected=exp,
          options={"from_logits": True, "label_smoothing": 0.1, "ignore_index": -100},
          source="torch.nn.functional.cross_entropy", composed={
              "mean": "fastloss spec: 0.0 and zero gradient (torch returns nan)"},
          note="every target ignored")

    def soft(name, *, n=6, c=5, extra=(), cw=None, ls=0.0, dtype=np.float64, logits=None,
             target="dirichlet", sw=False, note=""):
        rng = rng_for(name)
        x = rng.normal(0.0, 3.0, (n, c, *extra)) if logits is None else np.asarray(logits)
        x = x.astype(dtype)
        shape = x.shape
        if target == "dirichlet":
            t = np.moveaxis(rng.dirichlet(np.ones(shape[1]), (shape[0], *shape[2:])), -1, 1)
        elif target == "onehot_mixed":  # some one-hot rows, some soft, an all-zero row
            t = np.moveaxis(rng.dirichlet(np.ones(shape[1]) * 0.5, (shape[0], *shape[2:])),
                            -1, 1)
            t[0] = 0.0
            t[0, 1] = 1.0
            t[1] = 0.0
        else:  # arbitrary nonnegative, not normalised
            t = rng.uniform(0.0, 2.0, shape)
        t = t.astype(dtype)
        weight = None if cw is None else np.asarray(cw, dtype=np.float64)
        tdtype = torch.from_numpy(x).dtype
        tw = None if weight is None else torch.tensor(weight, dtype=tdtype)
        tt = torch.from_numpy(t)
        kw = {"weight": tw, "label_smoothing": ls}
        composed = {}
        if not sw:
            fn = lambda xx, red: F.cross_entropy(xx, tt, reduction=red, **kw)  # noqa: E731
            swt = None
        else:
            swt = rng.uniform(0.0, 2.5, (shape[0], *shape[2:]))
            st = torch.from_numpy(swt).to(tdtype)

            def fn(xx, red):
                wl = st * F.cross_entropy(xx, tt, reduction="none", **kw)
                return {"none": wl, "sum": wl.sum(), "mean": wl.sum() / st.sum()}[red]

            composed = {
                "none": "sample_weight * cross_entropy(reduction='none')",
                "sum": "sum(sample_weight * cross_entropy(reduction='none'))",
                "mean": "sum(sample_weight * l) / sum(sample_weight)",
            }
        options = {"from_logits": True, "label_smoothing": ls}
        if x.ndim > 2:
            options["axis"] = 1
        g.add(name, "categorical_cross_entropy", y_true=t, y_pred=x,
              expected=autograd(fn, x, TORCH_REDUCTIONS), options=options,
              array_options={} if weight is None else {"class_weight": weight},
              sample_weight=swt, source="torch.nn.functional.cross_entropy (probability "
              "targets)", composed=composed, note=note)

    soft("soft.plain")
    soft("soft.cw", cw=cw5)
    soft("soft.smooth", ls=0.2)
    soft("soft.smooth_cw", ls=0.15, cw=cw5, target="onehot_mixed",
         note="one-hot, soft and all-zero target rows")
    soft("soft.smooth_cw_unnormalised", ls=0.3, cw=cw5, target="uniform",
         note="targets are arbitrary nonnegative numbers, rows not summing to 1")
    soft("soft.smooth_cw_3d", n=3, c=4, extra=(3,), ls=0.1, cw=[2.0, 0.5, 1.0, 1.5],
         note="input (N, C, d); fastloss axis=1")
    soft("soft.smooth_cw_f32", ls=0.1, cw=cw5, dtype=np.float32)
    soft("soft.smooth_cw_sw", ls=0.1, cw=cw5, sw=True)
    soft("soft.extreme_smooth_cw", logits=big, ls=0.1, cw=cw5, n=len(big),
         target="onehot_mixed")
    return g


# --------------------------------------------------------------------------------------
# torch: binary cross-entropy with logits
# --------------------------------------------------------------------------------------

def torch_bce_group() -> Group:
    g = Group("torch_bce.npz", [
        "values and gradients of torch.nn.functional.binary_cross_entropy_with_logits "
        "(float64 unless the case's dtype says otherwise)",
        "pos_weight is broadcast along the last axis, torch weight = fastloss sample_weight",
        "torch's reduction='mean' divides by the number of elements, also with a weight: it "
        "is stored as fastloss 'sum_over_batch_size'; fastloss 'mean' (sum(w*l)/sum(w)) is "
        "composed as torch's 'sum' / sum(broadcast weight) and only stored for weighted cases "
        "(without weights torch's mean is stored as 'mean')",
        "label smoothing: the target is smoothed as Keras defines it, t*(1-e) + e/2, before "
        "calling torch",
    ])

    def bce(name, *, shape=(6, 4), target="binary", pw=None, w=None, ls=0.0,
            dtype=np.float64, logits=None, y=None, note=""):
        rng = rng_for(name)
        x = rng.normal(0.0, 3.0, shape) if logits is None else np.asarray(logits, float)
        x = x.astype(dtype)
        shape = x.shape
        if y is not None:
            t = np.asarray(y, float)
        elif target == "binary":
            t = (rng.uniform(size=shape) < 0.5).astype(float)
        else:
            t = rng.uniform(0, 1, shape)
            t[rng.uniform(size=shape) < 0.3] = 1.0
            t[rng.uniform(size=shape) < 0.2] = 0.0
        t = t.astype(dtype)
        tdtype = torch.from_numpy(x).dtype
        ts = torch.from_numpy(t)
        if ls:
            ts = ts * (1.0 - ls) + 0.5 * ls
        pwa = None if pw is None else np.asarray(pw, dtype=np.float64)
        wa = None if w is None else np.asarray(w, dtype=np.float64)
        kw = {
            "pos_weight": None if pwa is None else torch.tensor(pwa, dtype=tdtype),
            "weight": None if wa is None else torch.tensor(wa, dtype=tdtype),
        }

        def fn(xx, red):
            return F.binary_cross_entropy_with_logits(xx, ts, reduction=red, **kw)

        composed = {}
        if wa is None:
            expected = autograd(fn, x, TORCH_REDUCTIONS)
        else:
            wsum = float(np.broadcast_to(wa, shape).sum())
            expected = autograd(fn, x, ("sum", "none"))
            expected["sum_over_batch_size"] = autograd(fn, x, ("mean",))["mean"]
            expected["mean"] = autograd(lambda xx, red: fn(xx, "sum") / wsum, x, ("mean",))[
                "mean"]
            composed = {"sum_over_batch_size": "torch reduction='mean' (divides by numel)",
                        "mean": "torch reduction='sum' / sum(broadcast weight)"}
        options = {"from_logits": True, "label_smoothing": ls}
        g.add(name, "binary_cross_entropy", y_true=t, y_pred=x, expected=expected,
              options=options,
              array_options={} if pwa is None else {"pos_weight": pwa},
              sample_weight=wa, source="torch.nn.functional.binary_cross_entropy_with_logits",
              composed=composed, note=note)

    pw4 = [0.5, 2.0, 1.0, 3.5]
    bce("plain")
    bce("soft", target="soft")
    bce("pos_weight", target="soft", pw=pw4)
    bce("weight", target="soft", w=rng_for("w").uniform(0, 2, (6, 4)))
    bce("weight_broadcast", target="soft", w=rng_for("wb").uniform(0, 2, (6, 1)),
        note="weight (N, 1) broadcast over the last axis")
    bce("pos_weight_weight", target="soft", pw=pw4, w=rng_for("pww").uniform(0, 2, (6, 4)))
    bce("smooth", target="binary", ls=0.2)
    bce("smooth_pos_weight_weight", target="soft", ls=0.1, pw=pw4,
        w=rng_for("spww").uniform(0, 2, (6, 4)))
    bce("pos_weight_3d", shape=(2, 3, 4), target="soft", pw=pw4,
        note="pos_weight (K,) broadcast along the last axis of a 3-d input")
    bce("pos_weight_scalar", target="soft", pw=[2.5], note="pos_weight of shape (1,)")
    bce("smooth_pos_weight_f32", target="soft", ls=0.1, pw=pw4, dtype=np.float32)
    xs = np.array([0.0, 1.0, -1.0, 40.0, -40.0, 750.0, -750.0, 1e4, -1e4, 1e30, -1e30])
    ys = np.array([0.0, 1.0, 0.3])
    ext_x = np.tile(xs, (3, 1))
    ext_y = np.repeat(ys[:, None], len(xs), axis=1)
    bce("extreme", logits=ext_x, y=ext_y)
    bce("extreme_pos_weight", logits=ext_x, y=ext_y, pw=np.linspace(0.5, 3.0, len(xs)))
    bce("extreme_smooth_pos_weight_weight", logits=ext_x, y=ext_y, ls=0.1,
        pw=np.linspace(0.5, 3.0, len(xs)), w=rng_for("ew").uniform(0, 2, ext_x.shape))
    bce("extreme_f32", logits=ext_x, y=ext_y, pw=np.linspace(0.5, 3.0, len(xs)),
        dtype=np.float32)
    return g


# --------------------------------------------------------------------------------------
# torch: regression losses
# --------------------------------------------------------------------------------------

def torch_regression_group() -> Group:
    g = Group("torch_regression.npz", [
        "values and gradients of torch.nn.functional.mse_loss, l1_loss and "
        "huber_loss(delta=...) (float64 unless the case's dtype says otherwise)",
        "sample_weight cases: torch reduction='none' times sample_weight; 'mean' = sum / "
        "sum(broadcast sample_weight)",
    ])

    def reg(name, loss, *, shape=(5, 4), delta=None, dtype=np.float64, special=None,
            sw=None, note=""):
        rng = rng_for(name)
        t = rng.normal(0.0, 2.0, shape)
        p = rng.normal(0.0, 2.0, shape)
        t, p = t.astype(dtype), p.astype(dtype)
        if special is not None:  # residuals exactly at the kinks (0 for MAE, ±delta for Huber)
            r = np.asarray(special, dtype=dtype)
            t.reshape(-1)[: r.size] = np.round(t.reshape(-1)[: r.size], 2)  # exact sums
            p.reshape(-1)[: r.size] = t.reshape(-1)[: r.size] + r
            assert np.all(p.reshape(-1)[: r.size] - t.reshape(-1)[: r.size] == r)
        tt = torch.from_numpy(t)
        tfn = {
            "mse": lambda xx, red: F.mse_loss(xx, tt, reduction=red),
            "mae": lambda xx, red: F.l1_loss(xx, tt, reduction=red),
            "huber": lambda xx, red: F.huber_loss(xx, tt, reduction=red, delta=delta),
        }[loss]
        src = {"mse": "torch.nn.functional.mse_loss", "mae": "torch.nn.functional.l1_loss",
               "huber": f"torch.nn.functional.huber_loss(delta={delta})"}[loss]
        composed = {}
        if sw is None:
            fn = tfn
        else:
            sw = np.asarray(sw, float)
            st = torch.from_numpy(sw).to(tt.dtype)
            wsum = float(np.broadcast_to(sw, shape).sum())

            def fn(xx, red):
                wl = st * tfn(xx, "none")
                return {"none": wl, "sum": wl.sum(), "mean": wl.sum() / wsum}[red]

            composed = {"none": "sample_weight * loss(reduction='none')",
                        "sum": "sum(sample_weight * l)", "mean": "sum(w * l) / sum(w)"}
        options = {} if delta is None else {"delta": delta}
        g.add(name, loss, y_true=t, y_pred=p, expected=autograd(fn, p, TORCH_REDUCTIONS),
              options=options, sample_weight=sw, source=src, composed=composed, note=note)

    reg("mse.plain", "mse")
    reg("mse.1d", "mse", shape=(9,))
    reg("mse.f32", "mse", dtype=np.float32)
    reg("mse.sw", "mse", sw=rng_for("msw").uniform(0, 2, (5, 1)))
    reg("mae.plain", "mae", special=[0.0, 0.0, 1.0, -1.0], note="residuals exactly 0")
    reg("mae.f32", "mae", dtype=np.float32, special=[0.0, 0.5])
    reg("mae.sw_3d", "mae", shape=(2, 3, 4), sw=rng_for("asw").uniform(0, 2, (2, 3, 4)))
    reg("huber.default", "huber", delta=1.0, special=[1.0, -1.0, 0.0, 0.5, -2.0],
        note="residuals exactly ±delta")
    reg("huber.delta0.5", "huber", delta=0.5, special=[0.5, -0.5, 0.25])
    reg("huber.delta2.5", "huber", delta=2.5, special=[2.5, -2.5, 4.0])
    reg("huber.delta1.5_f32", "huber", delta=1.5, dtype=np.float32, special=[1.5, -1.5])
    reg("huber.delta0.7_sw", "huber", delta=0.7, sw=rng_for("hsw").uniform(0, 2, (4,)),
        note="sample_weight (K,) broadcast over the rows")
    return g


# --------------------------------------------------------------------------------------
# Keras 3: probabilities
# --------------------------------------------------------------------------------------

KERAS_REDUCTIONS = {  # fastloss name -> Keras reduction
    "none": None,
    "sum": "sum",
    "sum_over_batch_size": "sum_over_batch_size",
    "mean": "mean_with_sample_weight",
}


def keras_autograd(make_loss, y_true, y_pred, sample_weight, *, count, weight_sum):
    """Run a Keras loss class for every reduction; gradient via torch autograd.

    Keras' ``divide_no_nan`` (used by its ``sum_over_batch_size`` and ``mean_with_sample_weight``
    reductions and its mask weights) computes in float32 even for float64 inputs on non-TF
    backends (``dtypes.result_type`` maps float64 to float32). For float64 inputs those two
    reductions are therefore composed as Keras' float64 ``"sum"`` divided by ``count`` (number
    of non-ignored losses) or ``weight_sum`` (``Σ w`` over them); that the composition equals
    Keras' own (float32-rounded) result is asserted.
    """
    out = {}
    composed = {}
    for red, kred in KERAS_REDUCTIONS.items():
        x = torch.tensor(y_pred, requires_grad=True)
        yt = np.asarray(y_true)
        xin = x
        # A fresh copy per call: Keras' apply_mask multiplies a torch sample_weight in place.
        sw = None if sample_weight is None else torch.tensor(np.array(sample_weight))
        v = make_loss(kred)(yt, xin, sample_weight=sw)
        if x.dtype == torch.float64 and red in ("sum_over_batch_size", "mean"):
            divisor = count if red == "sum_over_batch_size" else weight_sum
            native = v.item()
            x = torch.tensor(y_pred, requires_grad=True)
            xin = x
            sw = None if sample_weight is None else torch.tensor(np.array(sample_weight))
            v = make_loss("sum")(yt, xin, sample_weight=sw) / divisor
            assert abs(v.item() - native) <= 1e-6 * abs(native) + 1e-30, (red, v.item(), native)
            composed[red] = f"Keras float64 'sum' / {'count' if red != 'mean' else 'sum(w)'} " \
                            f"(Keras' own {kred!r} is computed in float32)"
        assert v.dtype == x.dtype, (v.dtype, x.dtype)
        (v.sum() if red == "none" else v).backward()
        value = v.detach().numpy().copy()
        out[red] = (value if red == "none" else float(value), x.grad.numpy().copy())
    return out, composed


def keras_bce(t, p, swt, ls):
    """Per-element Keras BCE from probabilities and its reductions, with gradients.

    ``keras.losses.binary_crossentropy`` averages ``keras.ops.binary_crossentropy`` over the
    last axis with ``ops.mean``, which on non-TF backends computes float64 in float32
    (``dtypes.result_type`` maps float64 to float32). The per-element values therefore come
    from ``keras.ops.binary_crossentropy`` itself, on the target smoothed exactly as
    ``keras.losses.binary_crossentropy`` does (``t * (1 - ls) + 0.5 * ls``), times the sample
    weight; the reductions are torch sums of those in the input dtype. Each is asserted to
    equal Keras' own ``BinaryCrossentropy`` class (on a trailing size-1 axis, so that its mean
    is the identity) to float32 accuracy.
    """
    count = p.size
    weight_sum = count if swt is None else float(np.sum(swt, dtype=np.float64))
    out = {}
    for red, kred in KERAS_REDUCTIONS.items():
        x = torch.tensor(p, requires_grad=True)
        tt = torch.from_numpy(t)
        if ls:
            tt = tt * (1.0 - ls) + 0.5 * ls
        elem = keras.ops.binary_crossentropy(tt, x)
        if swt is not None:
            elem = elem * torch.from_numpy(swt)
        v = {"none": elem, "sum": elem.sum(), "sum_over_batch_size": elem.sum() / count,
             "mean": elem.sum() / weight_sum}[red]
        assert v.dtype == x.dtype
        with torch.no_grad():
            sw = None if swt is None else torch.tensor(np.array(swt))
            native = keras.losses.BinaryCrossentropy(
                label_smoothing=ls, reduction=kred, dtype=str(p.dtype),
            )(t[..., None], torch.from_numpy(p)[..., None], sample_weight=sw)
            np.testing.assert_allclose(v.detach().numpy(), native.numpy(), rtol=2e-6,
                                       atol=1e-6)
        (v.sum() if red == "none" else v).backward()
        value = v.detach().numpy().copy()
        out[red] = (value if red == "none" else float(value), x.grad.numpy().copy())
    composed = {
        "none": "sample_weight * keras.ops.binary_crossentropy(t*(1-ls) + ls/2, p) "
                "(keras.losses' float32 ops.mean over the last axis bypassed)",
        "sum": "torch sum of 'none'",
        "sum_over_batch_size": "torch sum of 'none' / number of elements",
        "mean": "torch sum of 'none' / sum(sample_weight) (or number of elements)",
    }
    return out, composed


def keras_group() -> Group:
    g = Group("keras_prob.npz", [
        "Keras 3 loss classes (keras.losses.BinaryCrossentropy, CategoricalCrossentropy, "
        "SparseCategoricalCrossentropy) with from_logits=False and dtype = the input dtype, "
        "on the torch backend; gradients via torch autograd through the Keras ops",
        "values are Keras' own: float32 cases are computed by Keras in float32 (fastloss "
        "computes in float64 and rounds), float64 cases in float64",
        "Keras' divide_no_nan (its sum_over_batch_size / mean_with_sample_weight and mask "
        "weights) runs in float32 for float64 inputs on non-TF backends: for float64 cases "
        "those two reductions are Keras' float64 'sum' divided by the count / weight sum "
        "(asserted equal to Keras' own to float32 accuracy); see each case's 'composed'",
        "'none' is Keras reduction=None, per sample, for CCE and sparse CCE (sample_weight "
        "multiplied in, ignored samples 0); for BCE it is per element: sample_weight * "
        "keras.ops.binary_crossentropy on the target smoothed as keras.losses does, because "
        "keras.losses.binary_crossentropy's mean over the last axis runs in float32 for "
        "float64 inputs on non-TF backends (the reductions of BCE are torch sums of these; "
        "all are asserted equal to Keras' BinaryCrossentropy class to float32 accuracy)",
        "'sum' / 'sum_over_batch_size' are Keras' reductions of those values ('sum_over_"
        "batch_size' divides by the number of non-masked entries); fastloss 'mean' is Keras "
        "'mean_with_sample_weight' (sum(w*l) / sum(w), or / number of non-ignored entries "
        "without weights)",
        "sample weights always have the full per-element / per-sample shape (Keras divides by "
        "the sum of the unbroadcast weights)",
        "sparse ignore_index = Keras ignore_class",
        "sparse class_weight: Keras losses have none; these cases pass class_weight[label] "
        "as Keras sample_weight (what Keras' fit(class_weight=...) does), which is fastloss' "
        "definition for sparse targets without smoothing (normaliser sum(class_weight[label]))",
        "sparse label_smoothing: Keras' sparse loss has none; these cases use Keras "
        "CategoricalCrossentropy(label_smoothing) on one_hot(labels), fastloss' definition",
    ])

    for dtype in (np.float64, np.float32):
        keras_cases(g, dtype)
    return g


def keras_cases(g: Group, dtype) -> None:
    """The Keras cases for one input dtype."""
    tag = np.dtype(dtype).name
    lo, hi = clip_bounds(dtype)
    dt = np.dtype(dtype).type
    kd = tag

    # --- BCE -------------------------------------------------------------------------
    specials = np.array([
        0.0, 1.0, 1e-12, 1.0 - 1e-12, 0.5, 0.25,
        lo, np.nextafter(dt(lo), dt(0)), np.nextafter(dt(lo), dt(1)),
        hi, np.nextafter(dt(hi), dt(1)), np.nextafter(dt(hi), dt(0)),
    ], dtype=dtype)

    def bce(name, *, ls=0.0, target="binary", pred="random", sw=False, shape=(5, 4),
            note=""):
        name = f"bce.{name}.{tag}"
        rng = rng_for(name)
        if pred == "random":
            p = rng.uniform(0.02, 0.98, shape)
        else:  # the special values against targets 0, 1 and 0.3
            p = np.tile(specials, (3, 1))
            shape = p.shape
        if pred == "special":
            t = np.repeat(np.array([0.0, 1.0, 0.3])[:, None], shape[1], axis=1)
        elif target == "binary":
            t = (rng.uniform(size=shape) < 0.5).astype(float)
        else:
            t = rng.uniform(0, 1, shape)
        p, t = p.astype(dtype), t.astype(dtype)
        swt = rng.uniform(0.0, 2.0, shape).astype(dtype) if sw else None

        expected, composed = keras_bce(t, p, swt, ls)
        g.add(name, "binary_cross_entropy", y_true=t, y_pred=p, expected=expected,
              options={"from_logits": False, "label_smoothing": ls}, sample_weight=swt,
              source="keras.ops.binary_crossentropy (smoothing as keras.losses)",
              composed=composed, note=note)

    bce("random")
    bce("soft_target", target="soft")
    bce("special", pred="special", note="0, 1, near 0/1 and the clip bounds "
        "in the input dtype with their neighbours; targets 0, 1, 0.3")
    bce("special_smooth", pred="special", ls=0.2)
    bce("smooth_sw", ls=0.1, target="soft", sw=True)

    # --- CCE -------------------------------------------------------------------------
    degenerate = np.array([
        [1.0, 0.0, 0.0, 0.0],
        [1.0 - 1e-9, 1e-9, 0.0, 0.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.7, 0.3, 0.0, 0.0],
        [3.0, 1.0, 0.5, 0.5],
        [1e-12, 1e-12, 1e-12, 1.0],
    ])

    def cce(name, *, ls=0.0, pred="random", target="soft", sw=False, shape=(6, 4),
            axis=-1, note=""):
        name = f"cce.{name}.{tag}"
        rng = rng_for(name)
        if pred == "random":
            p = rng.uniform(0.01, 2.5, shape)  # rows not summing to 1: renormalised
        else:
            p = degenerate
            shape = p.shape
        if target == "soft":
            t = np.moveaxis(rng.dirichlet(np.ones(shape[axis]),
                                          tuple(np.delete(shape, axis))), -1, axis)
        else:
            t = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
        p, t = p.astype(dtype), t.astype(dtype)
        swt = rng.uniform(0.0, 2.0, tuple(np.delete(shape, axis))).astype(dtype) \
            if sw else None

        def make(kred):
            return keras.losses.CategoricalCrossentropy(label_smoothing=ls, axis=axis,
                                                        reduction=kred, dtype=kd)

        options = {"from_logits": False, "label_smoothing": ls}
        if axis != -1:
            options["axis"] = axis
        n = p.size // shape[axis]
        expected, composed = keras_autograd(
            make, t, p, swt, count=n,
            weight_sum=n if swt is None else float(np.sum(swt, dtype=np.float64)))
        g.add(name, "categorical_cross_entropy", y_true=t, y_pred=p, expected=expected,
              options=options, sample_weight=swt,
              source="keras.losses.CategoricalCrossentropy", composed=composed, note=note)

    cce("random")
    cce("onehot", target="onehot")
    cce("degenerate", pred="degenerate", note="rows with zeros, near-ones and "
        "unnormalised rows: both clip bounds active")
    cce("degenerate_smooth", pred="degenerate", ls=0.1, target="onehot")
    cce("smooth_sw", ls=0.2, sw=True)
    if dtype == np.float64:
        # Keras' smoothing uses shape[-1] as the class count whatever the axis, so only
        # the unsmoothed loss is comparable with another class axis.
        cce("axis1_3d", shape=(3, 4, 2), axis=1, sw=True, note="class axis 1 of a "
            "(3, 4, 2) input, no smoothing")

    # --- sparse CCE ------------------------------------------------------------------
    def scce(name, *, pred="random", ignore=None, n_ignored=0, sw=False, cw=None,
             ls=0.0, labels_col=False, shape=(7, 4), note=""):
        name = f"sparse.{name}.{tag}"
        rng = rng_for(name)
        p = rng.uniform(0.01, 2.5, shape) if pred == "random" else degenerate
        shape = p.shape
        y = rng.integers(0, shape[-1], shape[:-1]).astype(np.int64)
        if n_ignored:
            y[rng.choice(y.size, n_ignored, replace=False)] = ignore
        p = p.astype(dtype)
        swt = rng.uniform(0.0, 2.0, shape[:-1]).astype(dtype) if sw else None
        valid = y != ignore if ignore is not None else np.ones(y.shape, bool)
        kw_sw = swt
        cw_note = {}
        if cw is not None:
            cwa = np.asarray(cw, float)
            kappa = np.where(valid, cwa[np.where(valid, y, 0)], 0.0).astype(dtype)
            kw_sw = kappa if swt is None else kappa * swt
            cw_note = {"class_weight": "Keras sample_weight = sample_weight * "
                                       "class_weight[label]"}
        yk = y[:, None] if labels_col else y
        count = int(valid.sum())
        wsum = float(np.sum(np.where(valid, 1.0 if kw_sw is None else kw_sw, 0.0),
                            dtype=np.float64))
        if ls:
            assert ignore is None and cw is None
            onehot = np.eye(shape[-1], dtype=dtype)[y]

            def make(kred):
                return keras.losses.CategoricalCrossentropy(label_smoothing=ls,
                                                            reduction=kred, dtype=kd)

            expected, composed = keras_autograd(make, onehot, p, kw_sw, count=count,
                                                weight_sum=wsum)
            source = "keras.losses.CategoricalCrossentropy on one_hot(labels)"
        else:
            def make(kred):
                return keras.losses.SparseCategoricalCrossentropy(
                    ignore_class=ignore, reduction=kred, dtype=kd)

            expected, composed = keras_autograd(make, yk, p, kw_sw, count=count,
                                                weight_sum=wsum)
            source = "keras.losses.SparseCategoricalCrossentropy"
        options = {"from_logits": False, "label_smoothing": ls}
        if ignore is not None:
            options["ignore_index"] = ignore
        g.add(name, "sparse_categorical_cross_entropy", y_true=yk, y_pred=p,
              expected=expected, options=options,
              array_options={} if cw is None else {"class_weight": np.asarray(cw, float)},
              sample_weight=swt, source=source, composed={**composed, **cw_note},
              note=note)

    scce("random")
    scce("degenerate", pred="degenerate")
    scce("labels_column", labels_col=True, note="labels of shape (N, 1)")
    scce("ignore", ignore=-1, n_ignored=2)
    scce("ignore_sw", ignore=-1, n_ignored=3, sw=True)
    scce("cw_ignore_sw", ignore=-1, n_ignored=2, sw=True, cw=[0.5, 2.0, 1.0, 3.0])
    scce("cw", cw=[0.5, 2.0, 0.0, 3.0], note="a zero class weight")
    scce("smooth", ls=0.1)
    scce("smooth_degenerate_sw", pred="degenerate", ls=0.2, sw=True)


def main() -> None:
    total = 0
    for make in (torch_ce_group, torch_bce_group, torch_regression_group, keras_group):
        group = make()
        path = group.save()
        size = path.stat().st_size
        total += size
        print(f"{path.name}: {len(group.cases)} cases, {size} bytes")
    print(f"total {total} bytes; versions {VERSIONS}")


if __name__ == "__main__":
    main()
