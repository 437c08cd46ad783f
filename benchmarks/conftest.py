"""Shared set-up of the pytest-benchmark suite.

Every loss × dtype × size (× class count for cross-entropy) is a *case*; each ``bench_*.py``
file times one family of methods on every case, in every mode:

* ``bench_fastloss.py`` – fastloss on every available backend (the NumPy reference backend is
  the ``numpy`` one), modes ``value``, ``value_and_grad`` (into a preallocated ``out=``) and
  ``inplace`` (``out=y_pred``);
* ``bench_baselines.py`` – plain NumPy written the way a user would (value, value_and_grad)
  and the memory-bandwidth floor (``np.sum`` for value, ``np.copyto`` for the others);
* ``bench_peers.py`` – PyTorch, JAX and scikit-learn when installed (skipped otherwise).

Each benchmark's group is ``"<loss> <dtype> <size> <shape> <mode>"``, so
``--benchmark-compare`` and ``--benchmark-group-by=group`` (the default) put every method of
one case and mode side by side; ``extra_info`` has the loss, method, backend, dtype, shape,
mode, class count, threads and the bytes a fused pass must move.

Every method's result is checked against the NumPy reference backend before it is timed;
the check's call is also the warm-up, so JIT compilation and first-touch page faults are never
measured. Timings are never asserted.

The normal test run (``--benchmark-disable`` in ``pyproject.toml``) runs each benchmark once
as a smoke test. The ~256 MiB cases exist only when benchmarks are enabled
(``--benchmark-enable``) or ``FASTLOSS_BENCH_LARGE=1`` (``FASTLOSS_BENCH_LARGE=0`` leaves them
out of an enabled run). A real run, for example::

    pytest benchmarks --benchmark-enable --benchmark-only -k "float32 and not tiny" \\
        --benchmark-save=mine
    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-compare
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

import fastloss
from fastloss._threads import default_n_threads
from fastloss.bench.cases import DTYPES, LOSSES, SyntheticData, make_problem
from fastloss.bench.methods import (
    FastlossMethod,
    Method,
    Reference,
    Unsupported,
    check,
)

CLASS_COUNTS = (10, 1000, 32000)
TINY_ROWS = 64
MEDIUM_ELEMENTS = 1 << 20  # 4 MiB of float32: leaves L1/L2, stays in the last-level cache
LARGE_BYTES = 256 << 20  # the prediction alone: far beyond the caches (on most machines)
ELEMENTWISE_WIDTH = 1024  # elementwise shapes: (rows, 1024)
_DATA_CACHE_BYTES = 1536 << 20


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    loss: str
    dtype: str
    size: str  # "tiny", "medium", "large"
    shape: tuple[int, ...]

    @property
    def id(self) -> str:
        classes = f"-C{self.shape[-1]}" if LOSSES[self.loss].cross_entropy else ""
        return f"{self.loss}-{self.dtype}{classes}-{self.size}"

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.shape))


def _shapes(cross_entropy: bool, dtype: str, include_large: bool):
    itemsize = np.dtype(dtype).itemsize
    sizes = ["tiny", "medium"] + (["large"] if include_large else [])
    widths = CLASS_COUNTS if cross_entropy else (ELEMENTWISE_WIDTH,)
    for size in sizes:
        for width in widths:
            if size == "tiny":
                rows = TINY_ROWS
                width = width if cross_entropy else 10  # the (64, 10) training batch
            elif size == "medium":
                rows = MEDIUM_ELEMENTS // width
                if rows <= TINY_ROWS:
                    continue  # a tiny batch of this many classes is already medium-sized
            else:
                rows = max(1, LARGE_BYTES // (width * itemsize))
            yield size, (rows, width)


def all_cases(include_large: bool) -> list[Case]:
    """Every case, ordered so that cases sharing a data set (same shape and dtype) are
    neighbours: the data is generated once for all the losses that use it."""
    cases = []
    for cross_entropy in (False, True):
        for dtype in DTYPES:
            for size, shape in _shapes(cross_entropy, dtype, include_large):
                for spec in LOSSES.values():
                    if spec.cross_entropy == cross_entropy:
                        cases.append(Case(spec.name, dtype, size, shape))
    return cases


def large_enabled(config: pytest.Config) -> bool:
    env = os.environ.get("FASTLOSS_BENCH_LARGE", "").strip()
    if env:
        return env not in ("0", "false", "no")
    disabled = config.getoption("benchmark_disable", False) and not config.getoption(
        "benchmark_enable", False
    )
    return not disabled


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = "on" if large_enabled(config) else "off (--benchmark-enable or FASTLOSS_BENCH_LARGE=1)"
    return [f"fastloss benchmarks: backends {', '.join(fastloss.available_backends())}; "
            f"~256 MiB cases {state}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = all_cases(large_enabled(metafunc.config))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Within each benchmark file, run case by case (all methods and modes of a case
    together), so each data set is generated once and large ones are not all alive at once."""
    order = {c.id: i for i, c in enumerate(all_cases(True))}

    def key(item: pytest.Item) -> tuple:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("case") if callspec is not None else None
        return (str(item.path), order.get(case.id, -1) if isinstance(case, Case) else -1)

    bench_items = [i for i in items if i.path.name.startswith("bench_")]
    if bench_items:
        positions = [n for n, i in enumerate(items) if i.path.name.startswith("bench_")]
        for n, item in zip(positions, sorted(bench_items, key=key), strict=True):
            items[n] = item


# --------------------------------------------------------------------------- data


_data: dict[tuple, SyntheticData] = {}
_references: dict[tuple, Reference] = {}


def _data_for(case: Case) -> SyntheticData:
    key = (case.shape, case.dtype)
    if key not in _data:
        # Keep recently used data sets while they fit; a new large one evicts the rest.
        while _data and sum(d.nbytes for d in _data.values()) + _estimate(case) > _DATA_CACHE_BYTES:
            _data.pop(next(iter(_data)))
        _data[key] = SyntheticData(case.shape, case.dtype)
    else:
        _data[key] = _data.pop(key)  # most recently used last
    return _data[key]


def _estimate(case: Case) -> int:
    return 3 * math.prod(case.shape) * np.dtype(case.dtype).itemsize


def _reference(case: Case, problem, mode: str) -> Reference:
    kind = "value" if mode == "value" else "grad"
    key = (case, kind)
    if key not in _references:
        prepared = FastlossMethod("numpy").prepare(problem, "value" if kind == "value" else
                                                   "value_and_grad", default_n_threads())
        _references[key] = Reference.from_result(*prepared.run_once())
    return _references[key]


# --------------------------------------------------------------------------- the fixture


@pytest.fixture
def run_benchmark(benchmark, request):
    """``run_benchmark(case, method, mode)``: check ``method`` against the reference on
    ``case``, then time it with pytest-benchmark (once, when benchmarks are disabled)."""

    def run(case: Case, method: Method, mode: str, role: str = "") -> None:
        problem = make_problem(LOSSES[case.loss], _data_for(case))
        threads = default_n_threads()
        try:
            prepared = method.prepare(problem, mode, threads)
        except Unsupported as exc:
            pytest.skip(str(exc))
        start = time.perf_counter()
        value, grad = prepared.run_once()  # warm-up: JIT, lazy imports, first touch of outputs
        once = time.perf_counter() - start
        if prepared.output is not None:
            disagreement = check(_reference(case, problem, mode), value, grad, problem.dtype)
            if disagreement is not None:
                pytest.fail(f"{method.name} on {case.id} ({mode}): {disagreement}")

        benchmark.group = f"{case.loss} {case.dtype} {case.size} {case.shape_text} {mode}"
        benchmark.extra_info.update(
            loss=case.loss, method=method.name, kind=method.kind, role=role or method.kind,
            backend=method.backend, dtype=case.dtype, size=case.size, shape=list(case.shape),
            n_classes=problem.n_classes, mode=mode, n_threads=threads,
            bytes_moved=problem.bytes_moved(mode), note=prepared.note,
        )
        if prepared.reset is None:
            benchmark(prepared.call)
        else:
            # In place: restore the prediction before every round, outside the timer.
            max_time = float(request.config.getoption("benchmark_max_time", 1.0))
            min_rounds = int(request.config.getoption("benchmark_min_rounds", 5))
            rounds = max(min_rounds, min(10_000, math.ceil(max_time / max(once, 1e-7))))
            benchmark.pedantic(prepared.call, setup=prepared.reset, rounds=rounds)

    return run
