"""The Cython backend's kernels against the NumPy reference backend, job by job.

Every instruction-set build that this CPU can run (baseline x86-64, AVX2, AVX-512) is tested
directly, not only the one the package picks. Properties, each a test:

* value, gradient and per-sample losses match the reference for every kind and option,
  including ±inf, NaN, ±1e30 logits, empty inputs and C = 1 (float64 to ~1e-12, float32 to
  a few float32 ulps: the float32 kernels compute in float32);
* an in-place gradient (grad_out is pred) equals the out-of-place one;
* the results are bitwise identical for n_threads = 1, 2, 3, 7;
* importing the extensions leaves the floating-point environment alone (no flush-to-zero);
* the vectorised exp/log/log1p are within 1.5 ulp of correctly rounded over the whole range
  (measured maximum 1.01 ulp: see fastloss.backends.cython), and so are the cheaper log q
  and log(1 - q) over q in [0, 1];
* BCE from probabilities clips exactly where the float64 test ``lo <= p <= hi`` says;
* concurrent calls from several Python threads give the single-threaded results;
* malformed jobs raise instead of reaching native code.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastloss.backends import numpy as reference
from fastloss.backends._jobs import ELEMENTWISE_KINDS, CrossEntropyJob, ElementwiseJob

cython_backend = pytest.importorskip("fastloss.backends.cython")

_BASE = importlib.import_module("fastloss.backends.cython._kernels")


def _isa_modules():
    level = _BASE.cpu_level()
    mods = []
    pairs = zip(cython_backend.ISA_NAMES, cython_backend.ISA_MODULES, strict=True)
    for lvl, (isa, module) in enumerate(pairs):
        if lvl > level:
            break
        try:
            mods.append(
                pytest.param(importlib.import_module(f"fastloss.backends.cython.{module}"), id=isa)
            )
        except ImportError:
            pass
    return mods


ISA = _isa_modules()
DTYPES = [np.float64, np.float32]
THREADS = (1, 2, 3, 7)


# ---- comparison helpers -----------------------------------------------------------------------


def _tol(dtype):
    # float32 kernels do their math in float32: a few ulps per element, and cancellation in
    # gradients such as σ(x) - t is absolute, so an absolute tolerance too.
    return (1e-11, 1e-12) if dtype == np.float64 else (3e-5, 3e-6)


def assert_close(got, ref, dtype, what):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, what
    nan_got, nan_ref = np.isnan(got), np.isnan(ref)
    assert np.array_equal(nan_got, nan_ref), (
        f"{what}: NaN at {np.flatnonzero(nan_got != nan_ref)[:5]}"
    )
    inf_ref = np.isinf(ref)
    assert np.array_equal(np.isinf(got), inf_ref), f"{what}: inf mismatch"
    assert np.array_equal(got[inf_ref], ref[inf_ref]), f"{what}: inf sign mismatch"
    fin = ~(nan_ref | inf_ref)
    rtol, atol = _tol(dtype)
    scale = max(1.0, float(np.max(np.abs(ref[fin]), initial=0.0))) if what == "value" else 1.0
    np.testing.assert_allclose(got[fin], ref[fin], rtol=rtol, atol=atol * scale, err_msg=what)


def _run(impl, job_cls, fn, **kw):
    """Run a job on ``impl``, with fresh grad/loss outputs; returns (value, grad, loss)."""
    pred = kw["pred"]
    grad = np.full_like(pred, np.nan) if kw.pop("with_grad", True) else None
    loss = np.full(pred.shape[0], np.nan, pred.dtype) if kw.pop("with_loss", True) else None
    job = job_cls(grad_out=grad, loss_out=loss, **kw)
    value = getattr(impl, fn)(job)
    assert isinstance(value, float)
    return value, grad, loss


def _compare(mod, job_cls, fn, dtype, **kw):
    got = _run(mod, job_cls, fn, **kw)
    ref = _run(reference, job_cls, fn, **kw)
    assert_close(got[0], ref[0], dtype, "value")
    assert_close(got[1], ref[1], dtype, "grad")
    assert_close(got[2], ref[2], dtype, "loss_out")
    return got


# ---- data -------------------------------------------------------------------------------------

SPECIAL = [np.inf, -np.inf, np.nan, 1e30, -1e30, 0.0, -0.0, 40.0, -40.0, 100.0, -100.0]


def _elementwise_data(kind, n, dtype, rng, specials=True):
    if kind == "bce_prob":
        p = rng.random(n)
        p[rng.random(n) < 0.1] = 0.0
        p[rng.random(n) < 0.1] = 1.0
        p[rng.random(n) < 0.05] = 1e-7
    else:
        p = rng.standard_normal(n) * 4
    if kind.startswith("bce"):
        t = np.where(rng.random(n) < 0.5, rng.integers(0, 2, n), rng.random(n)).astype(float)
    else:
        t = rng.standard_normal(n) * 4
        t[: n // 10] = p[: n // 10]  # r = 0 exactly
    if specials and n >= 3 * len(SPECIAL):
        idx = rng.choice(n, 3 * len(SPECIAL), replace=False)
        vals = SPECIAL * 3
        if kind == "bce_prob":
            vals = [np.nan, -0.5, 1.5, 0.0, 1.0, 1e-7, 1 - 1e-7, np.inf] * 4
            idx = idx[: len(vals)]
        p[idx[: len(vals)]] = vals[: len(idx)]
    return p.astype(dtype), t.astype(dtype)


# ---- elementwise ------------------------------------------------------------------------------


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ELEMENTWISE_KINDS)
def test_elementwise_matches_reference(mod, dtype, kind):
    rng = np.random.default_rng(hash((kind, np.dtype(dtype).name)) % 2**32)
    for n in (0, 1, 5, 17, 1023, 1024, 1025, 2500):
        p, t = _elementwise_data(kind, n, dtype, rng)
        w = rng.random(n) * 2
        pw = rng.random(n) * 3
        for options in (
            {},
            {"weight": w, "scale": 0.37},
            {"weight": w, "pos_weight": pw, "smoothing": 0.2, "delta": 0.5},
            {"pos_weight": pw, "smoothing": 0.1},
            {"clip_lo": 1e-3, "clip_hi": 1 - 1e-3, "smoothing": 1.0, "delta": 2.0},
        ):
            if not kind.startswith("bce"):
                options = {k: v for k, v in options.items() if k not in ("pos_weight", "smoothing")}
            _compare(
                mod, ElementwiseJob, "elementwise", dtype, kind=kind, pred=p, target=t, **options
            )


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_prob_clip_test_is_the_float64_one(mod, dtype):
    """The kernel compares p with the bounds in the input dtype (bounds rounded outwards,
    see _kernels.pyx): the elements just inside and just outside bounds that the dtype
    cannot represent get a gradient exactly where the float64 test ``lo <= p <= hi`` says."""
    for lo, hi in ((1e-3, 1 - 1e-3), (0.1, 0.9), (float(np.float32(0.1)), float(np.float32(0.9)))):
        near = []
        for b in (lo, hi):
            c = dtype(b)
            near += [c, np.nextafter(c, dtype(0)), np.nextafter(c, dtype(1))]
        p = np.array(near * 4, dtype)
        t = np.repeat(np.array([0.0, 1.0, 0.3, 0.7], dtype), len(near))
        _, g, _ = _compare(mod, ElementwiseJob, "elementwise", dtype, kind="bce_prob", pred=p,
                           target=t, clip_lo=lo, clip_hi=hi)
        inside = (p.astype(np.float64) >= lo) & (p.astype(np.float64) <= hi)
        np.testing.assert_array_equal(g != 0, inside)


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("kind", ELEMENTWISE_KINDS)
def test_elementwise_value_only_writes_nothing_and_agrees(mod, kind):
    rng = np.random.default_rng(1)
    p, t = _elementwise_data(kind, 3000, np.float32, rng)
    before = p.copy()
    v_only, _, _ = _run(
        mod,
        ElementwiseJob,
        "elementwise",
        kind=kind,
        pred=p,
        target=t,
        with_grad=False,
        with_loss=False,
    )
    v_full, _, _ = _run(mod, ElementwiseJob, "elementwise", kind=kind, pred=p, target=t)
    np.testing.assert_array_equal(p, before)
    assert v_only == v_full or (np.isnan(v_only) and np.isnan(v_full))


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ELEMENTWISE_KINDS)
def test_elementwise_in_place_equals_out_of_place(mod, dtype, kind):
    rng = np.random.default_rng(2)
    p, t = _elementwise_data(kind, 5000, dtype, rng)
    w = rng.random(5000)
    v, g, _ = _run(
        mod,
        ElementwiseJob,
        "elementwise",
        kind=kind,
        pred=p,
        target=t,
        weight=w,
        scale=0.5,
        n_threads=2,
    )
    q = p.copy()
    v_in = mod.elementwise(
        ElementwiseJob(kind=kind, pred=q, target=t, weight=w, scale=0.5, grad_out=q, n_threads=2)
    )
    assert v_in == v or (np.isnan(v) and np.isnan(v_in))
    np.testing.assert_array_equal(q, g)


def test_bce_logits_confident_correct_logit_has_zero_loss():
    for mod in (p.values[0] for p in ISA):
        for dtype in DTYPES:
            p = np.array([np.inf, -np.inf, 1e30, -1e30], dtype)
            t = np.array([1.0, 0.0, 1.0, 0.0], dtype)
            v, g, lo = _run(mod, ElementwiseJob, "elementwise", kind="bce_logits", pred=p, target=t)
            assert v == 0.0
            np.testing.assert_array_equal(g, 0.0)
            np.testing.assert_array_equal(lo, 0.0)


# ---- cross-entropy ----------------------------------------------------------------------------


def _ce_data(n, c, dtype, rng, from_logits, specials):
    if from_logits:
        x = rng.standard_normal((n, c)) * 3
        if specials and n >= 8:
            x[0] = -np.inf  # no limit: NaN
            x[1, :] = 0.0
            x[1, 0] = np.inf  # single +inf: well defined
            if c > 1:
                x[2, :2] = np.inf  # several +inf: NaN
                x[4, 1] = -np.inf  # -inf in one class
            x[3, -1] = np.nan
            x[5] *= 1e29  # ±1e30 logits
            x[6, 0] = 1e30
    else:
        x = rng.random((n, c)) + 0.01
        if specials and n >= 8:
            x[0, 0] = 0.0
            x[1, :] = 0.0
            x[1, -1] = 1.0
            x[3, -1] = np.nan
            x[5] /= x[5].sum()
    labels = rng.integers(0, c, n)
    target = rng.random((n, c))
    target /= target.sum(axis=1, keepdims=True)
    if n >= 8:
        target[2] = np.eye(c)[0]
    return x.astype(dtype), labels, target.astype(dtype)


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "soft"])
def test_cross_entropy_matches_reference(mod, dtype, from_logits, sparse):
    rng = np.random.default_rng(hash((from_logits, sparse, np.dtype(dtype).name)) % 2**32)
    # C around the flat/row-wise switch (64) and the 16-lane sums; n across block boundaries
    # (a block is 4096 // C rows).
    for n, c in (
        (0, 3),
        (1, 1),
        (9, 1),
        (50, 2),
        (70, 10),
        (300, 17),
        (130, 63),
        (70, 64),
        (40, 100),
        (9, 1000),
        (2, 5000),
    ):
        for specials in (False, True):
            x, labels, target = _ce_data(n, c, dtype, rng, from_logits, specials)
            ignore = -100 if c < 3 else 2  # ignore_index inside [0, C) too
            if sparse and n:
                labels[rng.random(n) < 0.2] = ignore
            common = dict(
                from_logits=from_logits,
                pred=x,
                ignore_index=ignore,
                labels=labels if sparse else None,
                target=None if sparse else target,
            )
            for options in (
                {},
                {"weight": rng.random(n) * 2, "scale": 0.3},
                {"class_weight": rng.random(c) * 2, "smoothing": 0.1},
                {
                    "class_weight": np.where(rng.random(c) < 0.3, 0.0, 1.0),
                    "weight": rng.random(n),
                    "smoothing": 0.05 if sparse else 0.0,
                    "clip_lo": 1e-4,
                    "clip_hi": 0.9,
                },
            ):
                _compare(mod, CrossEntropyJob, "cross_entropy", dtype, **common, **options)


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("c", [10, 1000])
def test_cross_entropy_in_place_equals_out_of_place(mod, from_logits, c):
    rng = np.random.default_rng(3)
    x, labels, _ = _ce_data(200, c, np.float32, rng, from_logits, True)
    labels[::5] = -1
    v, g, lo = _run(
        mod,
        CrossEntropyJob,
        "cross_entropy",
        from_logits=from_logits,
        pred=x,
        labels=labels,
        scale=0.1,
        n_threads=2,
    )
    y = x.copy()
    lo_in = np.empty(200, np.float32)
    v_in = mod.cross_entropy(
        CrossEntropyJob(
            from_logits=from_logits,
            pred=y,
            labels=labels,
            scale=0.1,
            grad_out=y,
            loss_out=lo_in,
            n_threads=2,
        )
    )
    assert v_in == v or (np.isnan(v) and np.isnan(v_in))
    np.testing.assert_array_equal(y, g)
    np.testing.assert_array_equal(lo_in, lo)


def _label_row_probabilities(c, dtype, rng):
    """Probabilities whose rows hit both sides of the regular/irregular split of the
    probabilities kernel (a row of sparse labels is its label's class alone when S is finite
    and nonzero): rows of specials first, then random rows over several blocks."""
    n = 3 * (4096 // c) + 7
    x = rng.random((n, c)) + 0.01
    y = rng.integers(0, c, n)
    y[:20] = 0
    off = 1  # a class other than the label (0) in the special rows
    x[1, :3] = [1.0, -1.0, 0.0]  # S = 0: irregular
    x[2, 0] = np.inf  # +inf at the label
    x[3, off] = np.inf  # +inf off the label
    x[4, off] = np.nan  # NaN off the label: the whole row NaN
    x[5, off] = -np.inf
    x[6, 0] = 0.0  # q below lo at the label
    x[7, off] = 0.0  # q below lo off the label
    x[8, 1:] = 1e-9  # q above hi at the label
    x[9, :] = 1e-9
    x[9, off] = 1.0  # q above hi off the label
    x[10, off] = -0.5  # q < 0 off the label
    x[11, 0] = -0.5  # q < 0 at the label
    x[12, :] = 0.0
    x[12, 0] = 1.0  # a one-hot prediction
    x[13, :] = 1.0  # q = 1/C
    y[14] = 2 % c  # zero class weight at the label (with that option): Σ g q = 0
    x[15, :] = 0.0  # S = 0, all zero
    x[16, :] = -x[16, :]  # S < 0: regular
    if dtype == np.float64 and c >= 10:
        # S = 2e-300 exactly (±1e300 in the same partial sum of lane_sum and of np.sum), and
        # x_4/S overflows: its 0·inf makes the general loop's gradient NaN
        x[17, :] = 0.0
        x[17, [1, 3]] = 1e-300
        y[17] = 1
        x[17, 4] = 1e300
        x[17, 20 if c > 20 else 6] = -1e300
        with np.errstate(over="ignore"):
            assert np.sum(x[17]) == 2e-300 and np.isinf(x[17, 4] / np.sum(x[17]))
    x[18, 0] = 1e30  # q_y ≈ 1
    return x.astype(dtype), y


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [3, 10, 12, 15, 40, 1000])
def test_probabilities_label_row_is_the_general_loop(mod, dtype, c):
    """Sparse labels take the label-only specialisation in regular rows; one-hot dense
    targets the general loop (every class's g_j and Σ g q). Bitwise the same results,
    for each thread count and in place, and close to the reference. Value only (C < 16:
    the label's term, or for dense targets one log per row where every row of a block is
    regular with at most one nonzero c_j; blocks of irregular rows, of a row of two
    nonzero targets and of an all-zero target row here), the same value and row losses.
    (Dense float32 with even C < 16 in the AVX-512 build: fl_short_onehot_rows' pair
    gathers, 409 and 341 rows per block, so its vector and remainder rows both.)"""
    rng = np.random.default_rng(11 + c)
    x, y = _label_row_probabilities(c, dtype, rng)
    onehot = np.eye(c, dtype=dtype)[y]
    rows = max(1, 4096 // c)   # rows per block
    mixed = onehot.copy()
    mixed[rows + 3] = 0.0      # block 1: a row without a nonzero target
    mixed[-3, 0] = 0.5         # the last block: a row with two
    kappa0 = rng.random(c) + 0.5
    kappa0[2 % c] = 0.0
    for options in (
        {"clip_lo": 1e-7, "clip_hi": 1 - 1e-7},
        {"clip_lo": 1e-4, "clip_hi": 0.9, "weight": rng.random(len(y)) * 2, "scale": 0.3},
        {"clip_lo": 1e-7, "clip_hi": 1 - 1e-7, "class_weight": kappa0},
        {},  # lo = 0: log q̂ may be -inf, the general loop everywhere
    ):
        dense = _bits(
            _compare(mod, CrossEntropyJob, "cross_entropy", dtype, from_logits=False,
                     pred=x, target=onehot, **options)
        )
        results = {
            _bits(_run(mod, CrossEntropyJob, "cross_entropy", from_logits=False, pred=x,
                       labels=y, n_threads=nt, **options))
            for nt in (1, 2, 3)
        }
        assert results == {dense}, options
        _compare(mod, CrossEntropyJob, "cross_entropy", dtype, from_logits=False, pred=x,
                 labels=y, **options)
        # Dense targets, value only: the same bits up to the sign of a NaN (IEEE 754 leaves
        # it unspecified, and GCC may compute -w·s as -(w·s), vectorised or not).
        mixed_ref = _run(mod, CrossEntropyJob, "cross_entropy", from_logits=False, pred=x,
                         target=mixed, **options)
        dense_ref = _run(mod, CrossEntropyJob, "cross_entropy", from_logits=False, pred=x,
                         target=onehot, **options)
        for nt in (1, 2, 3):
            v_only, _, l_only = _run(mod, CrossEntropyJob, "cross_entropy", from_logits=False,
                                     pred=x, labels=y, with_grad=False, n_threads=nt, **options)
            got = (np.float64(v_only).tobytes(), l_only.tobytes())
            assert got == (dense[0], dense[2]), (options, nt)
            for target, ref in ((onehot, dense_ref), (mixed, mixed_ref)):
                v_only, _, l_only = _run(mod, CrossEntropyJob, "cross_entropy",
                                         from_logits=False, pred=x, target=target,
                                         with_grad=False, n_threads=nt, **options)
                assert _nan_bits(v_only, l_only) == _nan_bits(ref[0], ref[2]), (options, nt)
        xin = x.copy()
        v_in = mod.cross_entropy(
            CrossEntropyJob(from_logits=False, pred=xin, labels=y, grad_out=xin, **options)
        )
        assert (np.float64(v_in).tobytes(), xin.tobytes()) == dense[:2]


def _small_c_logits(n, c, dtype, rng):
    """Logits for the small-class path with specials in several blocks and in the last,
    partial one (its rows past the last whole vector group too)."""
    x = rng.standard_normal((n, c)) * 3
    x[5] = -np.inf  # no limit: NaN
    x[300] = rng.standard_normal(c)
    x[300, c // 2] = np.inf  # single +inf: well defined
    x[n - 2] = 0.0
    x[n - 2, 0] = np.inf
    if c > 1:
        x[301, :2] = np.inf  # several +inf: NaN
        x[n - 15, -1] = -np.inf  # -inf in one class
    x[600, -1] = np.nan
    x[n - 1, 0] = np.nan
    x[257] *= 1e29  # ±1e30 logits
    return x.astype(dtype)


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "soft"])
@pytest.mark.parametrize("c", [1, 3, 10, 37, 63])
def test_small_class_logits_path(mod, dtype, sparse, c):
    """C < 64 from logits takes the transposed block path (128 rows a block, rows in the
    vector lanes): 6 whole blocks and a partial one of 77 rows (not a multiple of any vector
    width), specials in several blocks, ignored labels, smoothing, class and sample weights.
    Matches the reference; bitwise the same for every thread count, in place and value only."""
    rng = np.random.default_rng(c)
    n = 6 * 128 + 77
    x = _small_c_logits(n, c, dtype, rng)
    labels = rng.integers(0, c, n)
    ignore = 1 if c > 1 else -100  # ignore_index inside [0, C)
    labels[rng.random(n) < 0.2] = ignore
    labels[[300, n - 2]] = c // 2, 0  # the +inf class
    target = rng.random((n, c))
    target /= target.sum(axis=1, keepdims=True)
    for options in (
        {},
        {
            "class_weight": np.where(rng.random(c) < 0.2, 0.0, rng.random(c) * 2),
            "weight": rng.random(n) * 2,
            "smoothing": 0.1,
            "scale": 0.3,
        },
    ):
        common = dict(
            from_logits=True,
            pred=x,
            ignore_index=ignore,
            labels=labels if sparse else None,
            target=None if sparse else target.astype(dtype),
            **options,
        )
        results = [
            _compare(mod, CrossEntropyJob, "cross_entropy", dtype, n_threads=nt, **common)
            for nt in THREADS
        ]
        for got in results[1:]:
            assert _bits(got) == _bits(results[0])
        value, grad, loss = results[0]
        y = x.copy()
        lo_in = np.empty(n, dtype)
        kw = {**common, "pred": y}
        v_in = mod.cross_entropy(CrossEntropyJob(grad_out=y, loss_out=lo_in, n_threads=2, **kw))
        assert _bits((v_in, y, lo_in)) == _bits((value, grad, loss))
        v_only = mod.cross_entropy(CrossEntropyJob(n_threads=3, **common))
        assert np.float64(v_only).tobytes() == np.float64(value).tobytes()


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 10, 17])
def test_small_class_groups_equal_the_remainder_rows(mod, dtype, c):
    """The small-class block's exp step takes 16 rows at a time (on AVX-512 for float32 a
    code of its own, _fastmath.h fl_exp_group_sums_f32 and the paired-class transpose) and
    the rows past the last whole group with the portable loop. The same rows in a whole
    group and in the remainder give the same row losses and gradient bit for bit: exps
    across the range down to underflow (-87.3 .. -104 and below), -inf, +inf, NaN."""
    rng = np.random.default_rng(100 + c)
    k = 15  # rows of the remainder: the last block has 16 + 15 rows
    head = rng.standard_normal((k, c)) * 3
    head[0] = -rng.random(c) * 110  # the exp's underflow range
    head[1] = -(rng.random(c) * 20 + 86)
    head[2, 0] = 0.0
    head[2, 1:] = np.linspace(-103.0, -105.0, c - 1)
    head[3] = -np.inf
    head[4, 0] = np.inf
    head[5, -1] = np.nan
    head[6, 0] = -np.inf
    head[7] *= 1e29
    head[8] = -rng.random(c) * 1e-30
    head[9, : min(2, c)] = np.inf
    x = np.concatenate([head, rng.standard_normal((1, c)), head]).astype(dtype)
    n = 2 * k + 1
    labels = rng.integers(0, c, k)
    labels = np.concatenate([labels, [0], labels])
    target = rng.random((k, c))
    target /= target.sum(axis=1, keepdims=True)
    target = np.concatenate([target, target[:1], target]).astype(dtype)
    for sparse, smoothing in ((True, 0.0), (True, 0.1), (False, 0.0)):
        grad = np.empty_like(x)
        loss = np.empty(n, dtype)
        job = CrossEntropyJob(
            from_logits=True, pred=x, labels=labels if sparse else None,
            target=None if sparse else target, grad_out=grad, loss_out=loss,
            smoothing=smoothing,
        )
        mod.cross_entropy(job)
        assert loss[:k].tobytes() == loss[k + 1 :].tobytes()
        assert grad[:k].tobytes() == grad[k + 1 :].tobytes()


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1000, 4099])
def test_streamed_gradient_equals_in_place(mod, dtype, c):
    """A separate gradient of >= 64 MiB is written with streaming stores: same bits.
    C = 4099: one row per block, whose sparse gradient is scaled straight into the output
    (stream_scale; rows not aligned, labels also in the first and last lanes)."""
    rng = np.random.default_rng(9)
    n = (64 << 20) // (c * np.dtype(dtype).itemsize) + 1
    x = rng.standard_normal((n, c)).astype(dtype)
    labels = rng.integers(0, c, n)
    labels[1::11] = 0
    labels[2::11] = c - 1
    labels[::7] = -1
    g = np.full_like(x, np.nan)
    lo = np.empty(n, dtype)
    v = mod.cross_entropy(
        CrossEntropyJob(
            from_logits=True,
            pred=x,
            labels=labels,
            grad_out=g,
            loss_out=lo,
            scale=1 / n,
            n_threads=2,
        )
    )
    lo_in = np.empty(n, dtype)
    v_in = mod.cross_entropy(
        CrossEntropyJob(
            from_logits=True,
            pred=x,
            labels=labels,
            grad_out=x,
            loss_out=lo_in,
            scale=1 / n,
            n_threads=2,
        )
    )
    assert v == v_in
    np.testing.assert_array_equal(g, x)
    np.testing.assert_array_equal(lo, lo_in)


@pytest.mark.parametrize("mod", ISA)
def test_cross_entropy_value_only_writes_nothing_and_agrees(mod):
    rng = np.random.default_rng(4)
    for c in (10, 1000):
        x, labels, _ = _ce_data(300, c, np.float32, rng, True, True)
        before = x.copy()
        v_only, _, _ = _run(
            mod,
            CrossEntropyJob,
            "cross_entropy",
            from_logits=True,
            pred=x,
            labels=labels,
            with_grad=False,
            with_loss=False,
        )
        v_full, _, _ = _run(
            mod, CrossEntropyJob, "cross_entropy", from_logits=True, pred=x, labels=labels
        )
        np.testing.assert_array_equal(x, before)
        assert v_only == v_full or (np.isnan(v_only) and np.isnan(v_full))


# ---- determinism and threads ------------------------------------------------------------------


def _nan_bits(value, loss):
    """The bits of a value and row losses, every NaN as np.nan."""
    value, loss = np.float64(value), loss.copy()
    loss[np.isnan(loss)] = np.nan
    return (np.float64(np.nan) if np.isnan(value) else value).tobytes(), loss.tobytes()


def _bits(result):
    value, grad, loss = result
    return (
        np.float64(value).tobytes(),
        None if grad is None else grad.tobytes(),
        None if loss is None else loss.tobytes(),
    )


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
def test_result_independent_of_n_threads(mod, dtype):
    rng = np.random.default_rng(5)
    n = 100_003
    jobs = []
    for kind in ELEMENTWISE_KINDS:
        p, t = _elementwise_data(kind, n, dtype, rng, specials=False)
        # each combination of weight / pos_weight has its own compiled loop
        options = [{"weight": rng.random(n), "scale": 1 / n}, {}]
        if kind.startswith("bce"):
            pw = rng.random(n) * 3
            options += [{"pos_weight": pw}, {"weight": rng.random(n), "pos_weight": pw}]
        for opts in options:
            jobs.append(
                (ElementwiseJob, "elementwise", dict(kind=kind, pred=p, target=t, **opts))
            )
    for from_logits in (True, False):
        for c in (10, 300):
            x, labels, target = _ce_data(n // c, c, dtype, rng, from_logits, False)
            jobs.append(
                (
                    CrossEntropyJob,
                    "cross_entropy",
                    dict(from_logits=from_logits, pred=x, labels=labels, smoothing=0.1),
                )
            )
            jobs.append(
                (
                    CrossEntropyJob,
                    "cross_entropy",
                    dict(from_logits=from_logits, pred=x, target=target),
                )
            )
    for job_cls, fn, kw in jobs:
        results = {_bits(_run(mod, job_cls, fn, n_threads=nt, **kw)) for nt in THREADS}
        assert len(results) == 1, (fn, kw.get("kind", kw.get("from_logits")))


@pytest.mark.parametrize("mod", ISA)
def test_concurrent_calls_from_python_threads(mod):
    rng = np.random.default_rng(6)
    jobs = []
    for i in range(8):
        if i % 2:
            p, t = _elementwise_data(ELEMENTWISE_KINDS[i % 5], 60_000, np.float32, rng, False)
            jobs.append(
                (
                    ElementwiseJob,
                    "elementwise",
                    dict(kind=ELEMENTWISE_KINDS[i % 5], pred=p, target=t, n_threads=2),
                )
            )
        else:
            x, labels, _ = _ce_data(300, 200, np.float32, rng, True, False)
            jobs.append(
                (
                    CrossEntropyJob,
                    "cross_entropy",
                    dict(from_logits=True, pred=x, labels=labels, n_threads=2),
                )
            )

    def run(job):
        job_cls, fn, kw = job
        return _bits(_run(mod, job_cls, fn, **kw))

    expected = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(run, jobs * 2)) == expected * 2


# ---- floating-point environment and math accuracy ---------------------------------------------


def test_import_leaves_fp_environment_alone():
    """No flush-to-zero / denormals-are-zero after importing every build (fresh process)."""
    # The subprocess must import the same fastloss as this process (the installed one in CI,
    # where the source tree next to the working directory has no compiled extension).
    root = os.path.dirname(os.path.dirname(os.path.dirname(cython_backend.__file__)))
    code = f"import sys; sys.path.insert(0, {os.path.dirname(root)!r})\n" + textwrap.dedent(
        """
        import importlib, numpy as np
        tiny = np.float32(1e-40)
        assert tiny * np.float32(1) != 0 and np.float64(5e-324) * 1.0 != 0
        from fastloss.backends.cython import _kernels
        before = _kernels.mxcsr()
        for m in ("_kernels", "_kernels_avx2", "_kernels_avx512"):
            try:
                importlib.import_module("fastloss.backends.cython." + m)
            except ImportError:
                pass
        import fastloss.backends.cython
        assert _kernels.mxcsr() == before, (hex(before), hex(_kernels.mxcsr()))
        assert before == -1 or before & 0x8040 == 0, hex(before)   # FTZ, DAZ off
        assert tiny * np.float32(1) == tiny and np.float64(5e-324) * 1.0 != 0
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _ulp_error(got, x, fn, dtype, exact=None):
    """Max error of got in ulps of the correctly rounded result of ``np.<fn>`` (or of
    ``exact``), and special-value mismatches."""
    with np.errstate(all="ignore"):
        exact = (exact or getattr(np, fn))(x.astype(np.longdouble))
        rounded = exact.astype(dtype)
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    finite = np.isfinite(rounded)
    bad_special = ~same & ~finite
    sel = ~same & finite
    ulp = np.spacing(np.abs(rounded[sel])).astype(np.longdouble)
    err = np.abs(got[sel].astype(np.longdouble) - exact[sel]) / ulp
    return float(err.max()) if err.size else 0.0, int(
        bad_special.sum() + (~np.isfinite(got[sel])).sum()
    )


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["exp", "exp_nonpos", "log", "log1p"])
def test_fast_math_accurate_over_the_whole_range(mod, dtype, fn):
    rng = np.random.default_rng(7)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    x = rng.integers(0, np.iinfo(bits).max, 400_000, dtype=bits, endpoint=True).view(dtype)
    info = np.finfo(dtype)
    special = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            1.0,
            -1.0,
            info.smallest_subnormal,
            -info.smallest_subnormal,
            info.tiny,
            info.max,
            -info.max,
        ],
        dtype,
    )
    lim = 110.0 if dtype == np.float32 else 750.0
    dense = [
        rng.uniform(-lim, lim, 200_000),  # exp: overflow and subnormal results
        rng.uniform(-1, 1, 100_000),  # log1p near 0 and -1
        10.0 ** rng.uniform(-45 if dtype == np.float32 else -320, 0, 100_000),
    ]
    x = np.concatenate([x, special, *(d.astype(dtype) for d in dense)])
    if fn == "exp_nonpos":
        x = -np.abs(x)  # its domain
    err, bad = _ulp_error(mod.math_apply(fn, x), x, "exp" if fn == "exp_nonpos" else fn, dtype)
    assert bad == 0
    assert err < 1.5, f"{fn} {np.dtype(dtype).name}: {err:.3f} ulp"


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_pieces_accurate_on_their_domain(mod, dtype):
    """log1p(e) and 1/(1+e) for e = exp(-|x|) in [0, 1], as the BCE-from-logits kernel uses."""
    rng = np.random.default_rng(8)
    tiny = -45 if dtype == np.float32 else -320
    e = np.concatenate(
        [
            rng.random(300_000),
            10.0 ** rng.uniform(tiny, 0, 200_000),
            [0.0, 1.0, np.nan, np.finfo(dtype).smallest_subnormal],
        ]
    ).astype(dtype)
    for fn, exact in (("log1p_unit", np.log1p), ("inv1p_unit", lambda v: 1 / (1 + v))):
        got = mod.math_apply(fn, e)
        with np.errstate(all="ignore"):
            ref = exact(e.astype(np.longdouble))
        rounded = ref.astype(dtype)
        same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
        assert same[~np.isfinite(rounded)].all()
        sel = ~same
        err = np.abs(got[sel].astype(np.longdouble) - ref[sel]) / np.spacing(
            np.abs(rounded[sel])
        ).astype(np.longdouble)
        assert float(err.max(initial=0)) < 2.5, fn


@pytest.mark.parametrize("mod", ISA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["log_unit", "log1m_unit"])
def test_probability_logs_accurate_on_their_domain(mod, dtype, fn):
    """log(q) and log(1 - q) for q in [0, 1] (and NaN), as the BCE-from-probabilities kernel
    uses: every bit pattern of [0, 1] uniformly, q near 0 (subnormals included), 1/2 and 1."""
    rng = np.random.default_rng(9)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    one = int(np.array(1, dtype).view(bits))
    info = np.finfo(dtype)
    tiny = -45 if dtype == np.float32 else -320
    q = np.concatenate(
        [
            rng.integers(0, one, 400_000, dtype=bits, endpoint=True).view(dtype),
            rng.random(200_000),
            10.0 ** rng.uniform(tiny, 0, 100_000),
            1 - 10.0 ** rng.uniform(-17, 0, 100_000),
            0.5 + rng.uniform(-1e-3, 1e-3, 50_000),
            [0.0, -0.0, 1.0, 0.5, np.nan, info.smallest_subnormal, info.tiny, 1 - info.epsneg],
        ]
    ).astype(dtype)
    q = q[(q <= 1) | np.isnan(q)]
    exact = {"log_unit": np.log, "log1m_unit": lambda v: np.log1p(-v)}[fn]
    err, bad = _ulp_error(mod.math_apply(fn, q), q, None, dtype, exact=exact)
    assert bad == 0
    assert err < 1.5, f"{fn} {np.dtype(dtype).name}: {err:.3f} ulp"


# ---- safety -----------------------------------------------------------------------------------


def test_malformed_jobs_raise():
    mod = cython_backend.kernels
    p = np.zeros(10, np.float32)
    with pytest.raises(ValueError):
        mod.elementwise(ElementwiseJob(kind="squared", pred=p, target=np.zeros(10)))
    with pytest.raises(ValueError):
        mod.elementwise(ElementwiseJob(kind="squared", pred=p, target=np.zeros(9, np.float32)))
    with pytest.raises(ValueError):
        mod.elementwise(
            ElementwiseJob(kind="squared", pred=p, target=p, grad_out=np.zeros(20, np.float32)[::2])
        )
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        mod.elementwise(ElementwiseJob(kind="squared", pred=p, target=p, grad_out=ro))
    with pytest.raises(ValueError):
        mod.elementwise(ElementwiseJob(kind="cubic", pred=p, target=p))
    x = np.zeros((4, 3), np.float32)
    for bad in (3, -2, 10**12):
        with pytest.raises(ValueError, match="labels"):
            mod.cross_entropy(
                CrossEntropyJob(
                    from_logits=True,
                    pred=x,
                    labels=np.array([0, 1, bad, 2]),
                    grad_out=np.empty_like(x),
                )
            )
    with pytest.raises(ValueError):
        mod.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=np.zeros(4, np.int32)))
    with pytest.raises(ValueError):
        mod.cross_entropy(
            CrossEntropyJob(
                from_logits=True, pred=x, labels=np.zeros(4, np.int64), class_weight=np.ones(4)
            )
        )
    with pytest.raises(ValueError):
        mod.cross_entropy(CrossEntropyJob(from_logits=True, pred=x))


def test_backend_module_is_the_compiled_extension():
    assert cython_backend.name == "cython"
    assert cython_backend.isa in cython_backend.ISA_NAMES
    assert cython_backend.kernels.__file__.endswith((".so", ".pyd"))
    assert cython_backend.elementwise is cython_backend.kernels.elementwise
