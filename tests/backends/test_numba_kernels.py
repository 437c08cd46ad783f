"""The Numba backend's kernels, driven directly with jobs and checked against the NumPy oracle.

Organised by property: the polynomial ``exp``/``log``/``log1p`` against NumPy over their whole
range; every kind and option of both entry points against the reference (values, gradients,
per-sample losses, ±inf/NaN, block boundaries, both paths of cross-entropy); in place ==
out of place == value-only, bitwise; bitwise identical results for 1, 2, 3 and 7 threads;
and the runtime behaviour (lazy import, cache fallback, threads, warmup, vectorised code).

The first run compiles every kernel (tens of seconds, cached on disk for the next runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import fastloss.backends.numba as nb  # noqa: E402
from fastloss.backends import numpy as reference  # noqa: E402
from fastloss.backends._jobs import (  # noqa: E402
    ELEMENTWISE_KINDS,
    CrossEntropyJob,
    ElementwiseJob,
)
from fastloss.backends.numba import (  # noqa: E402
    _cross_entropy,
    _elementwise,
    _math,
    _runtime,
    _startup,
)
from fastloss.backends.numba._intrinsics import (  # noqa: E402
    row_sums64,
    row_sums64_pick,
    transpose_rows,
    transpose_rows_max,
    transpose_rows_sum64,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", autouse=True)
def _kernels_compiled():
    """Compile (or load) every kernel first: with a cold cache warmup() compiles them in one
    worker process per core, which halves this file's first run on two cores."""
    nb.warmup()
DTYPES = (np.float32, np.float64)
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-6}, np.float64: {"rtol": 1e-10, "atol": 1e-13}}


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(
        actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True
    )


def _scale(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    finite = np.abs(x[np.isfinite(x)])
    return float(finite.max()) if finite.size else 1.0


def run_both(backend_call, make_job):
    """(value, grad, loss_out) for the reference and the numba backend on fresh buffers."""
    out = []
    for backend in (reference, nb):
        job = make_job()
        value = backend_call(backend)(job)
        out.append((value, job.grad_out, job.loss_out))
    return out


# ------------------------------------------------------------------------------------------
# exp / log / log1p


def _vectorised(fn):
    @numba.njit(cache=True, error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    return apply


_APPLY = {name: _vectorised(getattr(_math, name)) for name in ("exp", "exp_nonpositive", "log",
                                                               "log1p", "log1p_unit")}
_NUMPY = {"exp": np.exp, "exp_nonpositive": np.exp, "log": np.log, "log1p": np.log1p,
          "log1p_unit": np.log1p}


def _float32_sweep() -> np.ndarray:
    """Every 4099th float32 bit pattern: all exponents, both signs, subnormals, inf, NaN."""
    bits = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45, -1e-45,
                         88.72283, 88.72284, -87.33655, -103.97, -104.0, 3.4e38], np.float32)
    return np.concatenate([bits.view(np.float32), specials])


def _float64_sweep() -> np.ndarray:
    pos = np.geomspace(5e-324, 1.7e308, 400_001)
    return np.concatenate([pos, -pos, np.linspace(-750, 712, 200_001), np.linspace(-1, 1, 100_001),
                           [0.0, -0.0, np.inf, -np.inf, np.nan, 709.782712893384,
                            709.7827128933841, -745.1332191019411, -745.2, -1.0]])


def _ulp_error(got: np.ndarray, exact: np.ndarray, dtype) -> float:
    """Max |got − exact| in ulps of the correctly rounded result, over finite results."""
    with np.errstate(over="ignore"):
        rounded = exact.astype(dtype)
    finite = np.isfinite(rounded) & np.isfinite(got)
    ulp = np.spacing(np.maximum(np.abs(rounded[finite]), np.finfo(dtype).smallest_normal))
    err = np.abs(got[finite].astype(exact.dtype) - exact[finite]) / ulp.astype(exact.dtype)
    return float(err.max()) if err.size else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["exp", "exp_nonpositive", "log", "log1p"])
def test_polynomial_math_accuracy_over_whole_range(name, dtype):
    """≤ 2 ulp everywhere (measured max ≈ 1.05), and NaN/±inf/0 exactly where NumPy has them:
    subnormal results, overflow, log(0) = −inf, log(<0) = NaN, log1p(−1) = −inf."""
    x = (_float32_sweep() if dtype == np.float32 else _float64_sweep()).astype(dtype)
    if name == "exp_nonpositive":
        x = x[~(x > 0)]
    if dtype == np.float64:
        if np.finfo(np.longdouble).nmant <= 52:
            pytest.skip("no extended precision to judge float64 ulps against")
    with np.errstate(all="ignore"):  # signalling NaNs and overflowing casts are expected
        wide = x.astype(np.longdouble if dtype == np.float64 else np.float64)
        exact = _NUMPY[name](wide)
        expected = exact.astype(dtype)
    got = np.empty_like(x)
    _APPLY[name](x, got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    np.testing.assert_array_equal(got == 0, expected == 0)
    assert _ulp_error(got, exact, dtype) <= 2.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1p_unit_accuracy_on_its_domain(dtype):
    """``log1p_unit`` (softplus's ``log1p(exp(−|x|))``) on ``[0, 1]``: ≤ 2 ulp (measured max
    0.93 over every float32 of the domain), exact at 0, NaN for NaN. float32: every 61st
    bit pattern of ``[0, 1]`` plus both ends and the split point ½ and its neighbours."""
    if dtype == np.float32:
        bits = np.arange(0, int(np.float32(1).view(np.uint32)) + 1, 61, dtype=np.uint32)
        edges = np.array([0.0, 1.0, 0.5, np.nextafter(np.float32(0.5), np.float32(0)),
                          np.nextafter(np.float32(0.5), np.float32(1)), 1e-45], np.float32)
        x = np.concatenate([bits.view(np.float32), edges])
    else:
        if np.finfo(np.longdouble).nmant <= 52:
            pytest.skip("no extended precision to judge float64 ulps against")
        x = np.concatenate([np.geomspace(5e-324, 1.0, 200_001), np.linspace(0, 1, 200_001)])
    got = np.empty_like(x)
    _APPLY["log1p_unit"](x, got)
    exact = np.log1p(x.astype(np.longdouble if dtype == np.float64 else np.float64))
    assert np.all(np.isfinite(got))
    assert got[x == 0].tolist() == [0.0] * int((x == 0).sum())
    assert _ulp_error(got, exact, dtype) <= 2.0
    nan = np.array([np.nan], dtype)
    _APPLY["log1p_unit"](nan, nan)
    assert np.isnan(nan[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_nonpositive_is_exp_on_its_domain(dtype):
    x = (_float32_sweep() if dtype == np.float32 else _float64_sweep()).astype(dtype)
    x = x[~(x > 0)]
    a, b = np.empty_like(x), np.empty_like(x)
    _APPLY["exp"](x, a)
    _APPLY["exp_nonpositive"](x, b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["exp", "log1p", "log1p_unit"])
def test_polynomial_math_vectorises(name):
    """The math compiles to packed SIMD FMA with no calls (the point of the polynomials)."""
    fn = getattr(_math, name)

    @numba.njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    x = np.ones(64, np.float32)
    apply(x, np.empty_like(x))
    asm = apply.inspect_asm(apply.signatures[0])
    packed_fma = [ln for ln in asm.splitlines()
                  if "vfmadd" in ln and "ps" in ln and ("ymm" in ln or "zmm" in ln)]
    from llvmlite import binding

    if "+avx2" not in binding.get_host_cpu_features().flatten() and not packed_fma:
        pytest.skip("no AVX2 on this CPU")
    assert packed_fma


@numba.njit(error_model="numpy")
def _transpose_both(src, dst, dst2, rmax, s64, a64, ahead, n_rows, c):
    transpose_rows_max(src, dst, rmax, ahead, n_rows, c)
    transpose_rows(src, dst2, ahead, n_rows, c)
    row_sums64(src, s64, a64, ahead, n_rows, c)


@numba.njit(error_model="numpy")
def _transpose_more(src, dst, s64, s64b, a64, lab, kappa, xy, ky, ahead, n_rows, c):
    transpose_rows_sum64(src, dst, s64, ahead, n_rows, c)
    row_sums64_pick(src, s64b, a64, lab, kappa, xy, ky, ahead, n_rows, c)


def _class_order_sums(x):
    """``((0 + x_0) + x_1) + …`` per row in float64, and the same of ``|x_j|``."""
    s = np.zeros(x.shape[0])
    a = np.zeros(x.shape[0])
    with np.errstate(invalid="ignore"):
        for j in range(x.shape[1]):
            s = s + x[:, j].astype(np.float64)
            a = a + np.abs(x[:, j].astype(np.float64))
    return s, a


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_rows_gathers_exactly(dtype, rng):
    """The gather transposes of the small-C path: ``dst[j·R + r] = src[r·c + j]`` and the row
    maxima (maxnum: NaN skipped, all-NaN row NaN), and the float64 row sums of ``x_j`` and
    ``|x_j|`` in class order (:func:`row_sums64`, bitwise; NaN and ±inf rows included), for
    every C of the path and row counts around the lane width (the last group partial: its
    masked lanes neither read past the rows nor written past ``R·c`` or ``R``, checked with
    guard values around every array). The same for :func:`transpose_rows_sum64` and
    :func:`row_sums64_pick` (with the labels' entries and class weights)."""
    rng2 = np.random.default_rng(1)
    for c in range(1, _cross_entropy.SMALL_C):
        for n_rows in (1, 7, 8, 15, 16, 17, 33, 100):
            x = rng.normal(size=(n_rows, c)).astype(dtype)
            x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
            if n_rows > 5:
                x[5] = np.nan
            src = np.full(x.size + 40, 1e30, dtype)
            src[20:-20] = x.ravel()
            dst = np.full(x.size + 40, -7.0, dtype)
            dst2 = dst.copy()
            rmax = np.full(n_rows + 40, -7.0, dtype)
            s64 = np.full(n_rows + 40, -7.0)
            a64 = s64.copy()
            ahead = src[:0] if c % 2 else src  # any array, prefetched only
            _transpose_both(src[20:-20], dst[20:-20], dst2[20:-20], rmax[20:-20],
                            s64[20:-20], a64[20:-20], ahead, n_rows, c)
            for out, size in ((dst, x.size), (dst2, x.size), (rmax, n_rows), (s64, n_rows),
                              (a64, n_rows)):
                assert np.all(out[:20] == -7) and np.all(out[20 + size:] == -7)
            s_ref, a_ref = _class_order_sums(x)
            # bitwise (assert_array_equal treats NaN as equal to NaN; -0.0 == 0.0 is
            # checked through the sign bits, of the numbers: a NaN's sign depends on which
            # operand LLVM takes, and IEEE 754 leaves it open)
            np.testing.assert_array_equal(s64[20:-20], s_ref)
            num = ~np.isnan(s_ref)
            np.testing.assert_array_equal(np.signbit(s64[20:-20][num]), np.signbit(s_ref[num]))
            np.testing.assert_array_equal(a64[20:-20], a_ref)
            np.testing.assert_array_equal(dst[20:-20], x.T.ravel())
            np.testing.assert_array_equal(dst2[20:-20], x.T.ravel())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
                np.testing.assert_array_equal(rmax[20:-20], np.nanmax(x, axis=1))
            # the same gathers with the sum folded into the transpose, and with the labels'
            # entries and class weights picked (labels outside [0, c): +0.0, nothing read)
            # (their own generator: the data above stay those the test always drew)
            lab = rng2.integers(0, c, n_rows + 40)
            lab[rng2.uniform(size=lab.size) < 0.2] = -100
            lab[rng2.uniform(size=lab.size) < 0.1] = c
            kappa = rng2.uniform(0.5, 2.0, c + 40).astype(dtype)
            kappa[:20] = kappa[20 + c:] = 1e30  # guards: never read
            dst3 = np.full(x.size + 40, -7.0, dtype)
            s64_2, s64_3, a64_2 = (np.full(n_rows + 40, -7.0) for _ in range(3))
            xy, ky = (np.full(n_rows + 40, -7.0, dtype) for _ in range(2))
            _transpose_more(src[20:-20], dst3[20:-20], s64_2[20:-20], s64_3[20:-20],
                            a64_2[20:-20], lab[20:-20], kappa[20:20 + c], xy[20:-20],
                            ky[20:-20], ahead, n_rows, c)
            for out, size in ((dst3, x.size), (s64_2, n_rows), (s64_3, n_rows),
                              (a64_2, n_rows), (xy, n_rows), (ky, n_rows)):
                assert np.all(out[:20] == -7) and np.all(out[20 + size:] == -7)
            np.testing.assert_array_equal(dst3[20:-20], x.T.ravel())
            for out in (s64_2, s64_3):
                np.testing.assert_array_equal(out[20:-20], s_ref)
                num = ~np.isnan(s_ref)  # (a NaN's sign depends on which operand LLVM takes)
                np.testing.assert_array_equal(np.signbit(out[20:-20][num]),
                                              np.signbit(s_ref[num]))
            np.testing.assert_array_equal(a64_2[20:-20], a_ref)
            rows_lab = lab[20:20 + n_rows]
            inside = (rows_lab >= 0) & (rows_lab < c)
            y = np.where(inside, rows_lab, 0)
            xy_ref = np.where(inside, x[np.arange(n_rows), y], 0.0).astype(dtype)
            ky_ref = np.where(inside, kappa[20:20 + c][y], 0.0).astype(dtype)
            assert xy[20:-20].tobytes() == xy_ref.tobytes()
            assert ky[20:-20].tobytes() == ky_ref.tobytes()


# ------------------------------------------------------------------------------------------
# elementwise

_EDGE = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, 50.0, -50.0, 1e30, -1e30, np.inf, -np.inf,
                  np.nan])


def _elementwise_case(kind, dtype, n, rng, edges=True):
    if kind == "bce_prob":
        p = rng.uniform(-0.1, 1.1, n)
    else:
        p = rng.normal(0.0, 3.0, n)
    if kind.startswith("bce"):
        t = rng.uniform(0.0, 1.0, n)
        t[rng.uniform(size=n) < 0.3] = 1.0
        t[rng.uniform(size=n) < 0.2] = 0.0
    else:
        t = rng.normal(0.0, 3.0, n)
    if edges and n >= 3 * _EDGE.size:
        k = _EDGE.size
        grid_p, grid_t = np.meshgrid(_EDGE, _EDGE if not kind.startswith("bce")
                                     else np.array([0.0, 1.0, 0.5]))
        m = min(grid_p.size, n // 2)
        p[:m] = grid_p.ravel()[:m]
        t[:m] = grid_t.ravel()[:m]
        p[m:m + k] = _EDGE
    return p.astype(dtype), t.astype(dtype)


ELEMENTWISE_OPTIONS = [
    {},
    {"weight": True},
    {"weight": True, "pos_weight": True, "smoothing": 0.1, "delta": 0.7, "clip_lo": 1e-3,
     "clip_hi": 1.0 - 1e-3, "scale": 0.25},
    {"pos_weight": True, "smoothing": 0.2, "delta": 2.0, "clip_lo": 0.0, "clip_hi": 1.0,
     "scale": 3.0},
]


def _elementwise_job_factory(kind, p, t, opts, rng, mode, loss_out):
    n = p.size
    weight = rng.uniform(0.0, 2.0, n) if opts.get("weight") else None
    pos_weight = rng.uniform(0.5, 3.0, n) if opts.get("pos_weight") else None
    kw = {k: v for k, v in opts.items() if k not in ("weight", "pos_weight")}

    def make():
        pred = p.copy()
        grad = {"value": None, "grad": np.full_like(p, np.nan), "inplace": pred}[mode]
        return ElementwiseJob(kind=kind, pred=pred, target=t.copy(), weight=weight,
                              pos_weight=pos_weight, grad_out=grad,
                              loss_out=np.full(n, np.nan, p.dtype) if loss_out else None,
                              n_threads=2, **kw)

    return make


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ELEMENTWISE_KINDS)
def test_elementwise_matches_reference(kind, dtype, rng):
    """Every option set and mode, with ±inf/NaN/huge entries and partial last blocks."""
    block = _elementwise.BLOCK
    for n, opts in [(1, {}), (3 * block + 5, ELEMENTWISE_OPTIONS[0]),
                    (block - 1, ELEMENTWISE_OPTIONS[1]), (2 * block + 1, ELEMENTWISE_OPTIONS[2]),
                    (500, ELEMENTWISE_OPTIONS[3])]:
        p, t = _elementwise_case(kind, dtype, n, rng)
        make = _elementwise_job_factory(kind, p, t, opts, rng, "grad", loss_out=True)
        (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.elementwise, make)
        assert_close(g, g_ref, dtype, scale=_scale(g_ref))
        assert_close(lo, l_ref, dtype, scale=_scale(l_ref))
        if np.isfinite(v_ref):
            assert_close(v, v_ref, dtype, scale=_scale(l_ref) * np.sqrt(n))
        else:
            assert (np.isnan(v) and np.isnan(v_ref)) or v == v_ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ELEMENTWISE_KINDS)
def test_elementwise_modes_agree_bitwise(kind, dtype, rng):
    """In place == into a buffer, value-only == value of value-and-gradient, and value-only
    writes nothing (inputs untouched)."""
    n = 3 * _elementwise.BLOCK + 17
    p, t = _elementwise_case(kind, dtype, n, rng)
    for opts in ELEMENTWISE_OPTIONS:
        results = {}
        for mode in ("grad", "inplace", "value"):
            job = _elementwise_job_factory(kind, p, t, opts, np.random.default_rng(1), mode,
                                           loss_out=mode != "grad")()
            value = nb.elementwise(job)
            results[mode] = (value, job.grad_out, job.loss_out, job.pred, job.target)
        assert results["grad"][0] == results["inplace"][0] or np.isnan(results["grad"][0])
        np.testing.assert_array_equal(results["grad"][1], results["inplace"][1])
        np.testing.assert_array_equal(results["inplace"][2], results["value"][2])
        v_grad, v_value = results["grad"][0], results["value"][0]
        assert v_grad == v_value or (np.isnan(v_grad) and np.isnan(v_value))
        np.testing.assert_array_equal(results["value"][3], p)
        np.testing.assert_array_equal(results["value"][4], t)
        np.testing.assert_array_equal(results["grad"][3], p)


def test_elementwise_multithreaded_call_matches_reference(rng):
    """A size above the serial threshold, so that the call runs on the pool."""
    n = 4 * _runtime.SERIAL_WORK + 3
    for kind in ("squared", "bce_logits"):
        p, t = _elementwise_case(kind, np.float64, n, rng, edges=False)
        make = _elementwise_job_factory(kind, p, t, ELEMENTWISE_OPTIONS[1], rng, "grad", True)
        (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.elementwise, make)
        assert_close(g, g_ref, np.float64, scale=_scale(g_ref))
        assert_close(v, v_ref, np.float64, scale=_scale(l_ref) * np.sqrt(n))


# ------------------------------------------------------------------------------------------
# cross-entropy


def _ce_case(from_logits, sparse, dtype, n, c, rng, opts, edges=True):
    if from_logits:
        x = rng.normal(0.0, 3.0, (n, c))
    else:
        x = rng.uniform(0.0, 1.0, (n, c))
    labels = rng.integers(0, c, n)
    target = rng.dirichlet(np.ones(c), n)
    ignore = opts.get("ignore_index", -1)
    if sparse and "ignore_index" in opts:
        labels[rng.uniform(size=n) < 0.2] = ignore
    if edges and n >= 12:
        if from_logits:
            x[0] = -np.inf  # no limit: NaN
            x[1, :2] = np.inf  # two +inf: NaN
            x[2, 0] = np.inf  # one +inf: a limit
            x[3, c // 2] = np.nan
            x[4, :] = -np.inf
            x[4, 0] = 1.0  # one finite entry, the others −inf
            x[5] *= 1e30
            x[6, labels[6] if labels[6] != ignore else 0] = -np.inf  # label at −inf: +inf
            x[7] = 0.0
        else:
            x[0] = 0.0  # S = 0
            x[1, 0] = np.nan
            x[2, 0] = -0.5  # a negative "probability"
            x[3, 0] = 50.0  # far outside [lo, hi] after normalising
            x[4, :] = 1e-30
        target[5] = 0.0
        target[5, 0] = 1.0  # a one-hot soft row
        if sparse:
            labels[8] = ignore
    make_args = {
        "weight": rng.uniform(0.0, 2.0, n) if opts.get("weight") else None,
        "class_weight": rng.uniform(0.0, 2.0, c) if opts.get("class_weight") else None,
    }
    if make_args["class_weight"] is not None:
        make_args["class_weight"][c // 3] = 0.0  # a class with weight 0
    kw = {k: v for k, v in opts.items() if k not in ("weight", "class_weight")}
    return x.astype(dtype), labels, target.astype(dtype), make_args, kw


def _ce_job_factory(from_logits, sparse, x, labels, target, args, kw, mode, loss_out=True):
    n = x.shape[0]

    def make():
        pred = x.copy()
        grad = {"value": None, "grad": np.full_like(x, np.nan), "inplace": pred}[mode]
        return CrossEntropyJob(
            from_logits=from_logits, pred=pred, labels=labels if sparse else None,
            target=None if sparse else target.copy(), grad_out=grad,
            loss_out=np.full(n, np.nan, x.dtype) if loss_out else None, n_threads=2,
            **args, **kw)

    return make


CE_OPTIONS = [
    {},
    {"weight": True, "class_weight": True},
    {"smoothing": 0.1, "weight": True, "scale": 0.5, "clip_lo": 1e-7, "clip_hi": 1.0 - 1e-7},
    {"smoothing": 0.3, "class_weight": True, "ignore_index": -100, "clip_lo": 0.05,
     "clip_hi": 0.6, "scale": 2.0},
]
# C below and above the small-C threshold, and at it
CE_SHAPES = [(40, 2), (300, 10), (37, _cross_entropy.SMALL_C - 1), (29, _cross_entropy.SMALL_C),
             (13, 1000), (25, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "soft"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_cross_entropy_matches_reference(from_logits, sparse, dtype, rng):
    for (n, c), opts in zip(CE_SHAPES * 2, CE_OPTIONS * 3, strict=False):
        if not sparse and "ignore_index" in opts:
            opts = {k: v for k, v in opts.items() if k != "ignore_index"}
        x, labels, target, args, kw = _ce_case(from_logits, sparse, dtype, n, c, rng, opts)
        make = _ce_job_factory(from_logits, sparse, x, labels, target, args, kw, "grad")
        (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
        assert_close(g, g_ref, dtype, scale=_scale(g_ref))
        assert_close(lo, l_ref, dtype, scale=_scale(l_ref))
        assert (np.isnan(v) and np.isnan(v_ref)) or v == v_ref or np.isclose(
            v, v_ref, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * _scale(l_ref) * n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_clean_rows_match_reference_tightly(dtype, rng):
    """Without edge rows the sum is finite and must match at the dtype's tolerance, for both
    the small-C and the row path and several blocks (so several threads)."""
    for (n, c), sparse in [((9_000, 10), True), ((9_000, 10), False), ((300, 200), True),
                           ((300, 200), False)]:
        for opts in CE_OPTIONS[:3]:
            x, labels, target, args, kw = _ce_case(True, sparse, dtype, n, c, rng, opts, False)
            make = _ce_job_factory(True, sparse, x, labels, target, args, kw, "grad")
            (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
            assert_close(g, g_ref, dtype, scale=_scale(g_ref))
            assert_close(v, v_ref, dtype, scale=_scale(l_ref) * np.sqrt(n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "soft"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_cross_entropy_modes_agree_bitwise(from_logits, sparse, dtype, rng):
    for (n, c), opts in zip(CE_SHAPES, CE_OPTIONS + CE_OPTIONS[:2], strict=True):
        if not sparse:
            opts = {k: v for k, v in opts.items() if k != "ignore_index"}
        x, labels, target, args, kw = _ce_case(from_logits, sparse, dtype, n, c, rng, opts)
        results = {}
        for mode in ("grad", "inplace", "value"):
            job = _ce_job_factory(from_logits, sparse, x, labels, target, args, kw, mode)()
            results[mode] = (nb.cross_entropy(job), job.grad_out, job.loss_out, job.pred)
        values = [results[m][0] for m in results]
        assert all(v == values[0] for v in values) or all(np.isnan(values))
        np.testing.assert_array_equal(results["grad"][1], results["inplace"][1])
        np.testing.assert_array_equal(results["grad"][2], results["value"][2])
        np.testing.assert_array_equal(results["value"][3], x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "soft"])
@pytest.mark.parametrize("opts", CE_OPTIONS[:3], ids=["plain", "weights", "smoothing"])
@pytest.mark.parametrize("c", [10, 3, 33])
def test_cross_entropy_small_c_lanes_path(c, opts, sparse, dtype, rng):
    """The small-C (rows in SIMD lanes) path over several blocks and chunks, with edge rows
    (no limit, +inf, NaN, ignored) inside later chunks, at a chunk's first and last row and
    in the last, partial chunk (its rows transposed by vector gathers, a partial group of
    lanes masked off): matches the reference, and is bitwise the same for 1, 2 and 3
    threads, in place and value only; so is the finite sum of the same rows without the
    edge rows."""
    rows = _cross_entropy.rows_per_block(c)
    chunk = max(16, _cross_entropy.LANES_ELEMS // c // 16 * 16)
    n = 2 * rows + 3 * chunk + 7  # neither a multiple of the chunk nor of 16
    x, labels, target, args, kw = _ce_case(True, sparse, dtype, n, c, rng, opts, False)
    for at in (chunk - 1, chunk, rows + chunk + 5, n - 1):
        x[at, min(3, c - 1)] = np.nan
    x[rows - 1] = -np.inf
    x[rows, min(4, c - 1)] = np.inf
    x[n - 2, :2] = np.inf
    x[2 * rows + 1] = 0.0
    if sparse:
        labels[[chunk + 2, rows + 1, n - 3]] = -1
    make = _ce_job_factory(True, sparse, x, labels, target, args, kw, "grad")
    (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
    assert_close(g, g_ref, dtype, scale=_scale(g_ref))
    assert_close(lo, l_ref, dtype, scale=_scale(l_ref))
    assert np.isnan(v) and np.isnan(v_ref)
    finite = np.isfinite(l_ref)
    assert finite.sum() > n - 12
    if sparse:
        assert np.all(lo[labels == -1] == 0) and np.all(g[labels == -1] == 0)
    results = []
    for n_threads in (1, 2, 3):
        for mode in ("grad", "inplace", "value"):
            job = _ce_job_factory(True, sparse, x, labels, target, args, kw, mode)()
            job.n_threads = n_threads
            value = nb.cross_entropy(job)
            results.append((mode, value, job.grad_out, job.loss_out))
    for _mode, value, grad, loss in results:
        assert np.isnan(value)
        np.testing.assert_array_equal(loss, lo)
        if grad is not None:
            np.testing.assert_array_equal(grad, g)
    x, labels, target, args, kw = _ce_case(True, sparse, dtype, n, c, rng, opts, False)
    values = set()
    for n_threads in (1, 2, 3):
        for mode in ("grad", "value"):
            job = _ce_job_factory(True, sparse, x, labels, target, args, kw, mode)()
            job.n_threads = n_threads
            values.add(nb.cross_entropy(job))
    assert len(values) == 1 and np.isfinite(values.pop())


def _probabilities_every_thread_count(sparse, x, labels, target, args, kw, v, g, lo):
    """A probabilities job on 1, 2 and 3 threads, with a gradient, in place and value only,
    gives the value ``v``, the row losses ``lo`` and the gradient ``g`` bit for bit."""
    for n_threads in (1, 2, 3):
        for mode in ("grad", "inplace", "value"):
            job = _ce_job_factory(False, sparse, x, labels, target, args, kw, mode)()
            job.n_threads = n_threads
            value = nb.cross_entropy(job)
            assert value == v or (np.isnan(value) and np.isnan(v))
            assert job.loss_out.tobytes() == lo.tobytes()
            if job.grad_out is not None:
                assert job.grad_out.tobytes() == g.tobytes()


def _probability_rows(c, dtype, n, labels, rng):
    """Probability rows with every kind of row the regular/irregular split tells apart:
    ``S = 0`` (all zero, and ``[1, −1, 0, …]``), ``+inf`` and NaN entries, the label's entry
    below ``lo``/above ``hi`` and another entry so, a negative entry, all ``1e-30``, huge
    entries; and last a row where ``q_j = x_j/S`` overflows, whose index is returned too."""
    x = rng.uniform(0.0, 1.0, (n, c))
    off = (labels + 1) % c

    def at(r):  # a row spread over the blocks and chunks
        return (r * 997) % n

    x[at(1)] = 0.0
    x[at(2)] = 0.0
    x[at(2), :2] = [1.0, -1.0]
    x[at(3), off[at(3)]] = np.inf
    x[at(4), labels[at(4)]] = np.inf
    x[at(5), off[at(5)]] = np.nan
    x[at(6), labels[at(6)]] = 1e-12  # label below lo
    x[at(7), off[at(7)]] = 1e-12  # another entry below lo
    x[at(8), labels[at(8)]] = 1e3  # label above hi
    x[at(9), off[at(9)]] = 1e3
    x[at(10)] = 1e-30
    x[at(11), off[at(11)]] = -0.5
    x[at(12)] = [3e37 if j % 2 else -3e37 for j in range(c)]  # huge entries
    # ±max/2 off the label, 1/16 at it and (C > 3) at the class before it: x_j/S overflows
    # where S = 1/8 (the last row), q_y = 1/2 (q_y = 1 > hi for C = 3). The pair is placed
    # where the sum cancels it first: sequential for C < SMALL_C; vector lanes 0 and 8, then
    # the label's in a later lane or the scalar tail in the row path, C ≥ SMALL_C.
    big = np.finfo(dtype).max / 2
    x[at(13)] = 0.0
    labels[at(13)] = c - 1
    x[at(13), c - 1] = 0.0625
    x[at(13), 0] = big
    x[at(13), min(8, c - 3) if c > 3 else 1] = -big
    if c > 3:
        x[at(13), c - 2] = 0.0625
    return x.astype(dtype), at(13)


PROB_OPTIONS = [
    {"clip_lo": 1e-7, "clip_hi": 1.0 - 1e-7},  # the losses' default
    {"class_weight": "zero at a label", "weight": True, "scale": 0.5, "clip_lo": 1e-7,
     "clip_hi": 1.0 - 1e-7},
    {"ignore_index": -100, "clip_lo": 0.05, "clip_hi": 0.6},
    {"clip_lo": 0.0, "clip_hi": 1.0},  # log 0 possible: every row takes the general loops
    {"smoothing": 0.2, "weight": True},  # smoothing: the general loops
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [3, 10, 64, 1000])
def test_cross_entropy_probabilities_regular_and_irregular_rows(c, dtype, rng):
    """Probabilities with sparse labels: a regular row (``S`` finite and nonzero, every
    ``q_j`` finite) takes only its label's term, the others the general loops (see the module
    docstring of ``_cross_entropy``). Against the reference with every kind of irregular row
    and of label entry; bitwise the same for 1, 2 and 3 threads, value only, in place and out
    of place; and (row path, C ≥ SMALL_C, where the row sum is the same code) bitwise the same
    as the same rows given as a dense one-hot target, which always takes the general loops."""
    n = 3 * _cross_entropy.rows_per_block(c) + 37 if c < 64 else 45
    for opts in PROB_OPTIONS:
        labels = rng.integers(0, c, n)
        x, overflow = _probability_rows(c, dtype, n, labels, rng)
        kw = {k: v for k, v in opts.items() if k not in ("weight", "class_weight")}
        args = {"weight": rng.uniform(0.0, 2.0, n) if opts.get("weight") else None,
                "class_weight": None}
        if opts.get("class_weight"):
            args["class_weight"] = rng.uniform(0.5, 2.0, c)
            args["class_weight"][labels[0]] = 0.0
        if "ignore_index" in opts:
            labels[rng.uniform(size=n) < 0.1] = opts["ignore_index"]
        target = np.zeros((n, c), dtype)
        target[np.arange(n), np.where(labels >= 0, labels, 0)] = 1.0
        make = _ce_job_factory(False, True, x, labels, target, args, kw, "grad")
        (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
        # (not the overflow row: its S depends on the order of the sum, and in float32 x_j/S
        # overflows where the float64 reference's does not)
        ok = np.arange(n) != overflow
        assert_close(g[ok], g_ref[ok], dtype, scale=_scale(g_ref[ok]))
        assert_close(lo[ok], l_ref[ok], dtype, scale=_scale(l_ref))
        assert np.isnan(l_ref).sum() >= 3  # the irregular rows are there
        # the overflow row: a NaN gradient (0·inf in Σ g·q where S = 1/8; S = 0 in an order
        # of the sum that adds 1/16 to ±max/2 first)
        assert np.isnan(g[overflow]).all()
        _probabilities_every_thread_count(True, x, labels, target, args, kw, v, g, lo)
        if "ignore_index" not in opts:
            job = _ce_job_factory(False, False, x, labels, target, args, kw, "grad")()
            value = nb.cross_entropy(job)
            np.testing.assert_array_equal(np.isnan(job.grad_out), np.isnan(g))
            np.testing.assert_array_equal(np.isnan(job.loss_out), np.isnan(lo))
            if c >= _cross_entropy.SMALL_C:
                assert value == v or (np.isnan(value) and np.isnan(v))
                assert job.loss_out.tobytes() == lo.tobytes()
                assert job.grad_out.tobytes() == g.tobytes()
        # the same rows without the irregular ones: a finite value, still thread-independent
        fine = np.isfinite(l_ref) & (np.abs(x).max(axis=1) < 1e30) & ok
        xs, ls = x[fine], labels[fine]
        values = set()
        for n_threads in (1, 2, 3):
            for mode in ("grad", "value"):
                job = _ce_job_factory(False, True, xs, ls, target[fine], args | {
                    "weight": None if args["weight"] is None else args["weight"][fine]},
                    kw, mode)()
                job.n_threads = n_threads
                values.add(nb.cross_entropy(job))
        assert len(values) == 1 and np.isfinite(values.pop())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True], ids=["one-hot", "soft"])
@pytest.mark.parametrize("c", [3, 10, 64, 1000])
def test_cross_entropy_probabilities_dense_targets(c, soft, dtype, rng):
    """Probabilities with dense targets, one-hot or soft (every ``c_j ≠ 0``), on the rows of
    every kind of :func:`_probability_rows` (C < SMALL_C: the small-C dense path, several
    blocks and chunks with remainders; C ≥ SMALL_C: the row path): against the reference,
    and bitwise the same for 1, 2 and 3 threads, value only, in place and out of place."""
    n = 3 * _cross_entropy.rows_per_block(c) + 37 if c < 64 else 45
    for opts in PROB_OPTIONS:
        if "ignore_index" in opts:
            continue  # (sparse labels only)
        labels = rng.integers(0, c, n)
        x, overflow = _probability_rows(c, dtype, n, labels, rng)
        args = {"weight": rng.uniform(0.0, 2.0, n) if opts.get("weight") else None,
                "class_weight": rng.uniform(0.5, 2.0, c) if opts.get("class_weight") else None}
        kw = {k: v for k, v in opts.items() if k not in ("weight", "class_weight")}
        if soft:
            target = rng.uniform(0.05, 1.0, (n, c)).astype(dtype)
        else:
            target = np.zeros((n, c), dtype)
            target[np.arange(n), labels] = 1.0
        make = _ce_job_factory(False, False, x, labels, target, args, kw, "grad")
        (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
        ok = np.arange(n) != overflow  # (see the test above)
        assert_close(g[ok], g_ref[ok], dtype, scale=_scale(g_ref[ok]))
        assert_close(lo[ok], l_ref[ok], dtype, scale=_scale(l_ref))
        assert np.isnan(l_ref).sum() >= 3
        _probabilities_every_thread_count(False, x, labels, target, args, kw, v, g, lo)
        # without the irregular rows: a finite value close to the reference's
        fine = np.isfinite(l_ref) & (np.abs(x).max(axis=1) < 1e30) & ok
        args_f = args | {"weight": None if args["weight"] is None else args["weight"][fine]}
        make = _ce_job_factory(False, False, x[fine], labels[fine], target[fine], args_f, kw,
                               "value")
        (v_ref, _, _), (v, _, _) = run_both(lambda b: b.cross_entropy, make)
        assert np.isfinite(v)
        np.testing.assert_allclose(v, v_ref, rtol=TOL[np.dtype(dtype).type]["rtol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [3, 10, 63])
def test_cross_entropy_probabilities_at_most_one_nonzero_target(c, dtype, rng):
    """Dense targets with at most one nonzero entry per row, of any value (a value-only call
    takes one log per row in a small-C chunk where every row has at most one nonzero entry
    and a finite nonzero ``S``): rows with no nonzero entry, ``−0`` entries, a NaN entry, an
    entry at a class of weight 0, irregular rows, and a row with two nonzero entries (its
    chunk takes the general loops), with and without class weights (one infinite: every
    chunk takes the general loops); value only bitwise as with a gradient, for 1, 2 and 3
    threads, and close to the reference."""
    n = 3 * _cross_entropy.rows_per_block(c) + 37
    labels = rng.integers(0, c, n)
    x, overflow = _probability_rows(c, dtype, n, labels, rng)
    target = np.zeros((n, c), dtype)
    target[np.arange(n), labels] = rng.choice([1.0, 0.25, 3.0], n).astype(dtype)
    target[rng.uniform(size=n) < 0.05] = 0.0  # no nonzero entry
    target[rng.uniform(size=(n, c)) < 0.1] *= -1  # −0 entries, negative ones
    target[(7 * 331) % n, labels[(7 * 331) % n]] = np.nan
    target[(9 * 331) % n, (labels[(9 * 331) % n] + 1) % c] = 0.5  # two nonzero entries
    kappa = rng.uniform(0.5, 2.0, c)
    kappa[labels[11]] = 0.0
    kappa_inf = kappa.copy()
    kappa_inf[(labels[11] + 1) % c] = np.inf
    for class_weight in (None, kappa, kappa_inf):
        for kw in ({"clip_lo": 1e-7, "clip_hi": 1.0 - 1e-7}, {"clip_lo": 0.05, "clip_hi": 0.6}):
            args = {"weight": rng.uniform(0.0, 2.0, n), "class_weight": class_weight}
            make = _ce_job_factory(False, False, x, labels, target, args, kw, "grad")
            with np.errstate(invalid="ignore"):  # (the reference's sum of ±inf row losses)
                (v_ref, g_ref, l_ref), (v, g, lo) = run_both(lambda b: b.cross_entropy, make)
            ok = np.arange(n) != overflow  # (see test_cross_entropy_probabilities_regular_…)
            assert_close(lo[ok], l_ref[ok], dtype, scale=_scale(l_ref))
            assert np.isnan(l_ref).sum() >= 4
            _probabilities_every_thread_count(False, x, labels, target, args, kw, v, g, lo)


def test_read_only_and_empty_inputs_need_no_new_signature(rng, tmp_path):
    """Inputs reach the kernels as read-only views, so read-only or memory-mapped arrays run
    on the already compiled signature (no compile of seconds on a user's first such call);
    empty inputs return 0."""
    p = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(99,))
    p[:] = rng.normal(size=99)
    p.flush()
    p = np.load(tmp_path / "p.npy", mmap_mode="r")
    t = np.zeros(99, np.float32)
    t.flags.writeable = False
    x = rng.normal(size=(30, 4))
    x.flags.writeable = False
    labels = np.zeros(30, np.int64)
    labels.flags.writeable = False
    calls = [
        lambda: nb.elementwise(ElementwiseJob(kind="huber", pred=p, target=t,
                                              grad_out=np.empty(99, np.float32))),
        lambda: nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=labels)),
        lambda: nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=labels,
                                                 grad_out=np.empty((30, 4)))),
    ]
    for call in calls:
        call()  # compiles (or loads) the signatures if no other test did yet
    before = (len(_elementwise.KERNEL.signatures), len(_cross_entropy.KERNEL.signatures))
    for call in calls:
        assert np.isfinite(call())
    writable = rng.normal(size=(30, 4)).astype(np.float32)
    nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=writable, labels=labels))
    nb.elementwise(ElementwiseJob(kind="squared", pred=writable.ravel(), target=writable.ravel()))
    assert (len(_elementwise.KERNEL.signatures), len(_cross_entropy.KERNEL.signatures)) <= (2, 2)
    assert (len(_elementwise.KERNEL.signatures), len(_cross_entropy.KERNEL.signatures)) >= before
    empty = np.zeros(0, np.float32)
    assert nb.elementwise(ElementwiseJob(kind="bce_logits", pred=empty, target=empty,
                                         grad_out=empty.copy())) == 0.0
    assert nb.cross_entropy(CrossEntropyJob(from_logits=False, pred=np.zeros((0, 3)),
                                            target=np.zeros((0, 3)))) == 0.0


def test_cross_entropy_ignored_rows_are_exactly_zero(rng):
    x = rng.normal(size=(50, 7))
    x[::2] = np.nan
    labels = np.where(np.arange(50) % 2 == 0, -100, 3)
    job = CrossEntropyJob(from_logits=True, pred=x, labels=labels, ignore_index=-100,
                          grad_out=np.empty_like(x), loss_out=np.empty(50))
    value = nb.cross_entropy(job)
    assert np.isfinite(value)
    assert np.all(job.grad_out[::2] == 0) and np.all(job.loss_out[::2] == 0)


@pytest.mark.parametrize("offset", [0, 1, 5])
def test_streamed_gradient_is_identical(offset, monkeypatch, rng):
    """Large separate outputs are written with non-temporal stores (64-byte aligned after a
    scalar head): the same numbers as ordinary stores, at any alignment of the output."""
    def grads():
        out = []
        p, t = _elementwise_case("bce_logits", np.float32, 3 * _elementwise.BLOCK + 7,
                                 np.random.default_rng(0))
        for kind in ("squared", "bce_logits"):
            g = np.empty(p.size + offset, np.float32)[offset:]
            nb.elementwise(ElementwiseJob(kind=kind, pred=p, target=t, grad_out=g))
            out.append(g)
        for n, c, smoothing in [(3000, 10, 0.0), (40, 300, 0.0), (40, 300, 0.1)]:
            x = np.random.default_rng(1).normal(size=(n, c)).astype(np.float32)
            x[3, 2] = np.inf
            labels = np.random.default_rng(2).integers(0, c, n)
            labels[5] = -1
            g = np.empty(n * c + offset, np.float32)[offset:].reshape(n, c)
            nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=labels, grad_out=g,
                                             smoothing=smoothing))
            out.append(g)
        return out

    plain = grads()
    monkeypatch.setattr(_elementwise, "STREAM_BYTES", 0)
    monkeypatch.setattr(_cross_entropy, "STREAM_BYTES", 0)
    for a, b in zip(plain, grads(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_streamed_one_hot_gradient_equals_in_place(dtype, offset, monkeypatch, rng):
    """A one-hot logits row (sparse label, no smoothing) of a large separate gradient is
    scaled and streamed straight from the exponentials (``stream_scale``: the label's entry
    patched in its vector): bitwise the gradient of an ordinary or in-place call, at any
    alignment of the output, with the label in the first, last and vector-boundary lanes,
    for C > 2048 (one row per block) and shorter rows, 1 and 2 threads."""
    for n, c in [(7, 4099), (40, 300), (29, _cross_entropy.SMALL_C)]:
        x = rng.normal(0.0, 3.0, (n, c)).astype(dtype)
        labels = rng.integers(0, c, n)
        labels[:5] = [0, c - 1, 15, 16, 17]
        x[1, 2] = np.inf  # one +inf: a limit, through the scratch row
        x[2, c // 2] = np.nan
        labels[3] = -1  # ignored
        x[4] = -np.inf
        weight = rng.uniform(0.0, 2.0, n)
        results = []
        for stream_bytes, mode in [(1 << 62, "grad"), (0, "grad"), (0, "inplace")]:
            monkeypatch.setattr(_cross_entropy, "STREAM_BYTES", stream_bytes)
            for n_threads in (1, 2):
                pred = x.copy()
                g = (pred if mode == "inplace"
                     else np.empty(n * c + offset, dtype)[offset:].reshape(n, c))
                lo = np.empty(n, dtype)
                v = nb.cross_entropy(CrossEntropyJob(
                    from_logits=True, pred=pred, labels=labels, grad_out=g, loss_out=lo,
                    weight=weight, scale=0.5, ignore_index=-1, n_threads=n_threads))
                results.append((v, g, lo))
        v0, g0, lo0 = results[0]
        assert np.isnan(g0[2]).all() and np.isnan(g0[4]).all() and (g0[3] == 0).all()
        for v, g, lo in results[1:]:
            assert v == v0 or (np.isnan(v) and np.isnan(v0))
            np.testing.assert_array_equal(g, g0)
            np.testing.assert_array_equal(lo, lo0)


def _adjacent(arrays, order, n, dtype):
    """Copies of ``arrays`` (name -> 1-D data of length ``n``), those named in ``order`` laid
    out back to back in that order in one buffer, the others allocated on their own."""
    buf = np.empty(len(order) * n + 1, dtype)
    out = {}
    for name, data in arrays.items():
        if name in order:
            k = order.index(name)
            out[name] = buf[k * n:(k + 1) * n]
        else:
            out[name] = np.empty(n, dtype)
        out[name][...] = data
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_placement_of_the_arrays_changes_no_bit(dtype, rng):
    """The same data give the same bits wherever the arrays lie. A vectorised loop that
    stores is guarded by LLVM with a run-time check of the distance between its stored and
    read arrays; a loop that also kept a reassociated sum would add in another order in
    its scalar fallback, taken where an output lies just after an input (closer than one
    unrolled vector iteration, which short arrays can be). Outputs right after inputs
    (and the reverse), for short arrays, a short last block, and short rows."""
    sizes = [3, 8, 13, 24, 31, 33, 63, 65, 2 * _elementwise.BLOCK + 20]
    layouts = [("pred", "loss"), ("target", "loss"), ("loss", "pred"), ("target", "grad"),
               ("pred", "grad", "loss"), ("grad", "target")]
    for kind in ELEMENTWISE_KINDS:
        for n in sizes:
            p, t = _elementwise_case(kind, dtype, n, rng, edges=False)
            w = rng.uniform(0.0, 2.0, n)
            data = {"pred": p, "target": t, "grad": np.zeros(n), "loss": np.zeros(n)}
            seen = None
            for order in [()] + layouts:
                for weight in (None, w):
                    for in_place in (False, True):
                        a = _adjacent(data, order, n, dtype)
                        g = a["pred"] if in_place else a["grad"]
                        v = nb.elementwise(ElementwiseJob(
                            kind=kind, pred=a["pred"], target=a["target"], weight=weight,
                            grad_out=g, loss_out=a["loss"], n_threads=1 + n % 2))
                        got = (weight is None, in_place), (v, g.copy(), a["loss"].copy())
                        if seen is None or got[0] not in seen:
                            seen = {**(seen or {}), got[0]: got[1]}
                            continue
                        ref = seen[got[0]]
                        np.testing.assert_array_equal(v, ref[0], err_msg=f"{kind} {n} {order}")
                        np.testing.assert_array_equal(got[1][1], ref[1])
                        np.testing.assert_array_equal(got[1][2], ref[2])
    for from_logits in (True, False):
        for c in (5, 24, _cross_entropy.SMALL_C, 70):
            n = 4
            x, labels, target, args, kw = _ce_case(from_logits, False, dtype, n, c, rng,
                                                   {"smoothing": 0.1}, edges=False)
            data = {"pred": x.ravel(), "target": target.ravel(), "grad": x.ravel() * 0,
                    "loss": np.zeros(n * c)}
            seen = {}
            for order in [()] + layouts:
                for sparse in (True, False):
                    a = _adjacent(data, order, n * c, dtype)
                    g = a["grad"].reshape(n, c)
                    lo = a["loss"][:n]
                    v = nb.cross_entropy(CrossEntropyJob(
                        from_logits=from_logits, pred=a["pred"].reshape(n, c),
                        labels=labels if sparse else None,
                        target=None if sparse else a["target"].reshape(n, c), grad_out=g,
                        loss_out=lo, n_threads=2, **kw))
                    got = (v, g.copy(), lo.copy())
                    if sparse not in seen:
                        seen[sparse] = got
                        continue
                    ref = seen[sparse]
                    np.testing.assert_array_equal(v, ref[0], err_msg=f"{c} {order}")
                    np.testing.assert_array_equal(got[1], ref[1])
                    np.testing.assert_array_equal(got[2], ref[2])


# ------------------------------------------------------------------------------------------
# threads, determinism, runtime

_THREADS_SCRIPT = textwrap.dedent(
    """
    import ctypes, hashlib, os, sys, warnings
    import numpy as np
    from fastloss.backends._jobs import CrossEntropyJob, ElementwiseJob
    import fastloss.backends.numba as nb
    from fastloss.backends.numba import _runtime
    assert _runtime._pool_size == 7, _runtime._pool_size
    rng = np.random.default_rng(0)
    p = rng.normal(size=300_001).astype(np.float32)
    t = rng.uniform(size=300_001).astype(np.float32)
    w = rng.uniform(size=300_001)
    xs = rng.normal(size=(30_011, 10)); xl = rng.normal(size=(301, 1000)).astype(np.float32)
    ys = rng.integers(0, 10, 30_011); yl = rng.integers(0, 1000, 301)
    def digest(n_threads):
        h = hashlib.sha256()
        for kind in ("squared", "bce_logits"):
            g = np.empty_like(p); lo = np.empty_like(p)
            v = nb.elementwise(ElementwiseJob(kind=kind, pred=p, target=t, weight=w, grad_out=g,
                                              loss_out=lo, n_threads=n_threads))
            h.update(np.float64(v).tobytes()); h.update(g.tobytes()); h.update(lo.tobytes())
        for x, y in ((xs, ys), (xl, yl)):
            g = np.empty_like(x)
            v = nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=y, grad_out=g,
                                                 smoothing=0.0, n_threads=n_threads))
            h.update(np.float64(v).tobytes()); h.update(g.tobytes())
        return h.hexdigest()
    digests = {n: digest(n) for n in (1, 2, 3, 7)}
    assert len(set(digests.values())) == 1, digests
    # numba's omp layer set the OpenMP thread count to its pool size; it was restored
    if os.environ.get("CHECK_OMP") and _runtime.numba.threading_layer() == "omp":
        counts = [lib.omp_get_max_threads() for lib in _runtime._openmp_runtimes()]
        assert counts and all(c == 1 for c in counts), counts
    print("OK")
    """
)


def _run_script(script: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **env}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_result_bitwise_identical_for_1_2_3_7_threads():
    """In a process whose Numba pool has 7 threads (the machine may have fewer cores)."""
    proc = _run_script(_THREADS_SCRIPT, NUMBA_NUM_THREADS="7", OMP_NUM_THREADS="1",
                       CHECK_OMP="1")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_concurrent_calls_from_python_threads(rng):
    """Several Python threads at once (each with its own thread count) get the results of
    serial calls, bitwise."""
    from concurrent.futures import ThreadPoolExecutor

    x = rng.normal(size=(3_001, 37)).astype(np.float32)
    labels = rng.integers(0, 37, 3_001)
    p = rng.normal(size=50_001)

    def call(i):
        g = np.empty_like(x)
        v = nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=labels, grad_out=g,
                                             n_threads=1 + i % 2))
        h = np.empty_like(p)
        u = nb.elementwise(ElementwiseJob(kind="huber", pred=p, target=0 * p, grad_out=h,
                                          n_threads=1 + (i + 1) % 2))
        return v, g, u, h

    serial = call(0)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(16)))
    for v, g, u, h in results:
        assert v == serial[0] and u == serial[2]
        np.testing.assert_array_equal(g, serial[1])
        np.testing.assert_array_equal(h, serial[3])


def test_works_next_to_pytorch_openmp():
    """PyTorch brings its own OpenMP runtime: both run, in either order, in one process."""
    pytest.importorskip("torch")
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from fastloss.backends._jobs import CrossEntropyJob
        import fastloss.backends.numba as nb
        torch.set_num_threads(2)
        a = torch.randn(512, 512)
        x = np.random.default_rng(0).normal(size=(4096, 100))
        labels = np.zeros(4096, np.int64)
        for _ in range(3):
            (a @ a).sum()
            v = nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=labels,
                                                 n_threads=2))
        t = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(labels),
                                              reduction="sum").item()
        assert abs(v - t) <= 1e-9 * abs(t), (v, t)
        print("OK")
        """
    )
    proc = _run_script(script)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_importing_fastloss_does_not_import_numba():
    proc = _run_script(
        "import sys, fastloss, fastloss.backends as b\n"
        "b.available_backends()\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
        "import fastloss.backends.numba\n"
        "assert 'numba' in sys.modules\n"
        "print('OK')")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


_FIRST_CALL_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import numpy as np
    from fastloss.backends._jobs import ElementwiseJob
    import fastloss.backends.numba as nb
    import numba
    if os.environ.get("NUMBA_NEEDS_SCIPY"):  # a Numba whose registries import scipy.linalg
        from numba.core.registry import cpu_target
        context_type = type(cpu_target.target_context)
        original = context_type.refresh
        def refresh(self):
            import scipy.linalg  # noqa: F401
            original(self)
        context_type.refresh = refresh
    x = np.ones(10)
    assert nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=0 * x)) == 10.0
    print("scipy" in sys.modules, "scipy.linalg" in sys.modules)
    # Numba's own BLAS check, whenever it runs, sees SciPy as it is:
    import numba.np.arraymath as arraymath
    try:
        import scipy.linalg.cython_blas  # noqa: F401
        have_blas = True
    except ImportError:
        have_blas = False
    assert bool(getattr(arraymath, "_HAVE_BLAS", have_blas)) == have_blas
    @numba.njit
    def convolve(a, b):  # uses BLAS when Numba found it
        return np.convolve(a, b)
    a, b = np.arange(7.0), np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(convolve(a, b), np.convolve(a, b), rtol=1e-15)
    print("OK")
    """
)


def test_first_call_does_not_import_scipy():
    """Numba is imported and its registries loaded with SciPy hidden (half of a cached first
    call); Numba's BLAS check still gives its own answer afterwards."""
    proc = _run_script(_FIRST_CALL_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    newer = tuple(numba.version_info.short) > _startup.SCIPY_CHECKED_NUMBA
    assert proc.stdout.split() == ["False", "False", "OK"], (
        f"Numba {numba.__version__} is newer than _startup.SCIPY_CHECKED_NUMBA: check what it "
        "does with SciPy at import, then raise the constant" if newer else proc.stdout
    )


def test_first_public_sparse_call_does_not_import_scipy():
    """The public sparse call checks its labels with a compiled loop before the kernel runs:
    that first load readies Numba the same way (without SciPy)."""
    proc = _run_script(
        "import sys, numpy as np, fastloss\n"
        "loss = fastloss.SparseCategoricalCrossEntropy(from_logits=True, backend='numba')\n"
        "v, g = loss.value_and_grad(np.arange(4) % 3, np.zeros((4, 3), np.float32))\n"
        "assert abs(v - np.log(3)) < 1e-6, v\n"
        "print('scipy' in sys.modules)\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"], proc.stdout


def test_first_call_when_numba_needs_scipy():
    """A Numba whose registries cannot load without SciPy loads them with it."""
    pytest.importorskip("scipy.linalg")
    proc = _run_script(_FIRST_CALL_SCRIPT, NUMBA_NEEDS_SCIPY="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True", "OK"], proc.stdout


def test_first_calls_from_several_threads_while_another_imports_scipy():
    """A fresh process: kernels first called from four threads at once while a fifth imports
    ``scipy.linalg`` (which only the thread loading Numba's registries has hidden)."""
    pytest.importorskip("scipy.linalg")
    script = textwrap.dedent(
        """
        import threading
        import numpy as np
        from fastloss.backends._jobs import ElementwiseJob
        import fastloss.backends.numba as nb
        x = np.ones(10)
        results, errors = [], []
        def call():
            try:
                results.append(nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=0 * x)))
            except Exception as exc:
                errors.append(exc)
        def import_scipy():
            try:
                import scipy.linalg
                results.append(float(scipy.linalg.norm([3.0, 4.0])) * 2)
            except Exception as exc:
                errors.append(exc)
        threads = [threading.Thread(target=f) for f in [call] * 2 + [import_scipy] + [call] * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and results == [10.0] * 5, (results, errors)
        print("OK")
        """
    )
    proc = _run_script(script)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_hidden_import_is_hidden_from_this_thread_only():
    import threading

    finder = _startup._HiddenFromThisThread(("some.module",))
    assert finder.find_spec("other.module") is None and not finder.hid
    seen = []
    thread = threading.Thread(target=lambda: seen.append(finder.find_spec("some.module")))
    thread.start()
    thread.join()
    assert seen == [None] and not finder.hid
    with pytest.raises(ModuleNotFoundError):
        finder.find_spec("some.module")
    assert finder.hid


def test_workqueue_layer_warns_once_and_still_works():
    script = textwrap.dedent(
        """
        import warnings
        import numpy as np
        from fastloss.backends._jobs import ElementwiseJob
        import fastloss.backends.numba as nb
        x = np.ones(100_000)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                v = nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=0 * x,
                                                  n_threads=2))
        assert v == 100_000.0, v
        msgs = [w for w in caught if issubclass(w.category, nb.FastlossNumbaWarning)]
        assert len(msgs) == 1 and "workqueue" in str(msgs[0].message), caught
        print("OK")
        """
    )
    proc = _run_script(script, NUMBA_THREADING_LAYER="workqueue")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_unwritable_cache_warns_and_compiles_uncached(monkeypatch):
    import numba.core.caching as caching

    def no_locator(py_func):
        raise RuntimeError("cannot cache function 'probe': no locator available")

    monkeypatch.setattr(caching, "FunctionCache", no_locator)
    with pytest.warns(nb.FastlossNumbaWarning, match="no writable cache directory"):
        assert _runtime._cache_available() is False


def test_thread_count_clamped_and_small_inputs_serial():
    assert _runtime.threads_for(64, 10**9) == min(64, _runtime._pool_size)
    assert _runtime.threads_for(2, _runtime.SERIAL_WORK - 1) == 1
    assert _runtime.threads_for(1, 10**9) == 1


def test_threadpoolctl_limits_numba_pool():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl without custom controllers")
    x = np.ones(10)
    nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=x))  # pool launched
    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "numba"]
    assert info and info[0]["num_threads"] == _runtime._pool_size
    with threadpoolctl.threadpool_limits(limits=1, user_api="numba"):
        assert _runtime.threads_for(8, 10**9) == 1
    assert _runtime.threads_for(8, 10**9) == min(8, _runtime._pool_size)


def test_numba_thread_count_is_restored():
    before = numba.get_num_threads()
    x = np.ones(10 * _runtime.SERIAL_WORK)
    nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=x, n_threads=1))
    assert numba.get_num_threads() == before


def _elementwise_blocks(kind, p, t, w, pw, dtype, n_threads=2):
    """One call over ``p`` and, block by block, one call per kernel block: (value, gradient,
    losses) of the call and (value summed in block order, gradients, losses) of the blocks."""
    def call(sl):
        m = p[sl].size
        job = ElementwiseJob(kind=kind, pred=p[sl], target=t[sl], weight=w[sl],
                             pos_weight=pw[sl], smoothing=0.1, scale=0.5,
                             grad_out=np.full(m, np.nan, dtype),
                             loss_out=np.full(m, np.nan, dtype), n_threads=n_threads)
        return nb.elementwise(job), job.grad_out, job.loss_out

    whole = call(slice(None))
    block = _elementwise.BLOCK
    parts = [call(slice(lo, lo + block)) for lo in range(0, p.size, block)]
    total = 0.0
    for v, _, _ in parts:
        total += v
    return whole, (total, np.concatenate([g for _, g, _ in parts]),
                   np.concatenate([lo for _, _, lo in parts]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_and_parallel_branches_give_the_bits_of_their_blocks(dtype, rng):
    """An elementwise call of several blocks below SERIAL_WORK runs the kernel's serial
    branch, a larger one the prange branch; both give, bitwise, the gradient and losses of
    one-block calls on each block and the block values summed in block order (so the two
    branches agree with each other), NaN/inf entries included."""
    sizes = (_elementwise.BLOCK + 100, _runtime.SERIAL_WORK - 1, 3 * _elementwise.BLOCK + 17)
    assert _elementwise.BLOCK < sizes[0] < sizes[1] < _runtime.SERIAL_WORK <= sizes[2]
    for n in sizes:
        for kind in ELEMENTWISE_KINDS:
            p, t = _elementwise_case(kind, dtype, n, rng)
            w, pw = rng.uniform(0.0, 2.0, n), rng.uniform(0.5, 3.0, n)
            for n_threads in (1, 2):
                (v, g, lo), (v_b, g_b, lo_b) = _elementwise_blocks(kind, p, t, w, pw, dtype,
                                                                   n_threads)
                np.testing.assert_array_equal(np.float64(v), np.float64(v_b))
                assert g.tobytes() == g_b.tobytes() and lo.tobytes() == lo_b.tobytes(), kind


def test_serial_calls_leave_numba_thread_count_alone(monkeypatch):
    """A call of one block, or an elementwise call below SERIAL_WORK (several blocks), runs
    the serial branch: Numba's thread count is neither read nor set; a parallel call restores
    it."""
    def forbidden(*args):
        raise AssertionError("the thread count was touched")

    n = _runtime.SERIAL_WORK - 1
    assert n > _elementwise.BLOCK
    x = np.ones(10 * _runtime.SERIAL_WORK, np.float32)
    logits = np.ones((5 * _cross_entropy.rows_per_block(10), 10), np.float32)
    labels = np.zeros(logits.shape[0], np.int64)
    with monkeypatch.context() as m:
        m.setattr(_runtime, "_get_num_threads", forbidden)
        m.setattr(_runtime, "_set_num_threads", forbidden)
        for n_threads in (1, 2):
            assert nb.elementwise(ElementwiseJob(kind="squared", pred=x[:100], target=0 * x[:100],
                                                 n_threads=n_threads)) == 100.0
            assert nb.elementwise(ElementwiseJob(kind="squared", pred=x[:n], target=0 * x[:n],
                                                 grad_out=np.empty(n, np.float32),
                                                 n_threads=n_threads)) == n
            assert nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=logits[:64],
                                                    labels=labels[:64],
                                                    n_threads=n_threads)) > 0.0
    if _runtime._pool_size >= 2:
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            nb.elementwise(ElementwiseJob(kind="squared", pred=x, target=x, n_threads=2))
            nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=logits, labels=labels,
                                             n_threads=2))
            assert numba.get_num_threads() == 1
        finally:
            numba.set_num_threads(before)


def test_compiled_label_check_matches_numpy(rng):
    """The sparse shortcut's compiled label check gives what the NumPy one gives: the kept
    count, or -1 for a label outside [0, C) that is not ignored (read-only labels too)."""
    from fastloss.backends._shortcut import count_kept
    from fastloss.backends.numba import _labels

    big = np.iinfo(np.int64)
    cases = [np.arange(10), np.array([big.min, 3]),
             np.array([3, big.max]), np.array([-1, 0, 9]), np.array([0, 10, 1])]
    for _ in range(30):
        y = rng.integers(-3, 13, rng.integers(1, 200))
        cases.append(y)
        cases.append(np.clip(y, 0, 9))
    frozen = np.arange(10)
    frozen.flags.writeable = False
    cases.append(frozen)
    for y in cases:
        for ignore in (None, -1, -100, 3, 10, big.min, big.max):
            expected = count_kept(y, 10, ignore)
            assert _labels.count_kept(y, 10, ignore) == expected, (y, ignore)
    assert len(_labels.COUNT_LABELS.signatures) == 1  # read-only and writable alike


def test_memoised_constants_keep_signed_zeros_apart():
    f32 = np.dtype(np.float32)
    plus, minus = _runtime.scalars(f32, (1.0, 0.0)), _runtime.scalars(f32, (1.0, -0.0))
    assert not np.signbit(plus[1]) and np.signbit(minus[1])
    assert all(type(v) is np.float32 for v in plus + minus)
    assert _runtime.scalars(f32, (1.0, 0.0)) is plus  # memoised
    ones = _runtime.ones(7, f32)
    assert ones.dtype == f32 and not ones.flags.writeable and np.all(ones == 1)


def test_warmup_readies_every_kernel():
    assert nb.warmup(processes=1) == 5  # two kernels, float32 and float64; the label check
    for kernel in (_elementwise.KERNEL, _cross_entropy.KERNEL):
        assert len(kernel.signatures) >= 2


def test_no_warning_in_a_normal_call(rng):
    x = rng.normal(size=(10, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.cross_entropy(CrossEntropyJob(from_logits=True, pred=x, labels=np.zeros(10, np.int64)))
