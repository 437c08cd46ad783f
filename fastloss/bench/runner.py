"""Running a benchmark: for each problem, compute the reference result, then for each method
check its result against the reference (this first call is also its warm-up) and time it.

The reference is fastloss's NumPy reference backend. A method whose result disagrees is not
timed: it is reported as a mismatch (fastloss backends and the NumPy baseline: a bug) or
skipped (a peer that computes something else).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .cases import LossSpec, Problem, SyntheticData, make_problem
from .methods import FastlossMethod, Method, Prepared, Reference, Unsupported, check
from .timing import Timing, measure

__all__ = ["Result", "Settings", "pool_floors", "run_losses", "run_problem", "sweep_rows",
           "sweep_sizes", "sweep_threads", "threaded"]

REFERENCE_BACKEND = "numpy"


@dataclass
class Settings:
    mode: str = "value_and_grad"
    threads: int = 1
    repeat: int | None = None  # None: adaptive (see timing.measure)
    budget_s: float = 0.6  # per method and problem, when repeat is None


@dataclass
class Result:
    """One method on one problem: a timing, or why there is none."""

    loss: str
    method: str
    kind: str
    backend: str | None
    dtype: str
    shape: tuple[int, ...]
    mode: str
    threads: int
    bytes: int
    status: str  # "ok", "skipped", "mismatch", "error"
    timing: Timing | None = None
    message: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median(self) -> float | None:
        return None if self.timing is None else self.timing.median

    @property
    def key(self) -> tuple:
        """Results with the same key are rows of one comparison."""
        return (self.loss, self.dtype, self.shape, self.mode, self.threads)


Progress = Callable[[str], None]


def _is_reference(method: Method) -> bool:
    return method.kind == "fastloss" and method.backend == REFERENCE_BACKEND


def run_problem(problem: Problem, methods: Sequence[Method], settings: Settings,
                progress: Progress | None = None) -> list[Result]:
    """Check and time every method on ``problem``; one :class:`Result` per method, in order."""
    mode, threads = settings.mode, settings.threads
    reference_method = next((m for m in methods if _is_reference(m)), None)
    reference_method = reference_method or FastlossMethod(REFERENCE_BACKEND)
    ref_prepared = reference_method.prepare(problem, mode, threads)
    ref = Reference.from_result(*ref_prepared.run_once())

    def result(method: Method, status: str, **kw: Any) -> Result:
        return Result(
            loss=problem.spec.name, method=method.name, kind=method.kind, backend=method.backend,
            dtype=str(problem.dtype), shape=tuple(problem.shape), mode=mode, threads=threads,
            bytes=problem.bytes_moved(mode), status=status, **kw,
        )

    results = []
    for method in methods:
        if progress is not None:
            progress(f"{problem.spec.name} · {method.name}")
        prepared: Prepared | None = None
        try:
            if method is reference_method:
                prepared = ref_prepared  # ran once already: warm, and equal to itself
            else:
                prepared = method.prepare(problem, mode, threads)
                value, grad = prepared.run_once()
                disagreement = None
                if prepared.output is not None:
                    disagreement = check(ref, value, grad, problem.dtype)
                if disagreement is not None:
                    status = "skipped" if method.kind == "peer" else "mismatch"
                    results.append(result(method, status, message=disagreement,
                                          note=prepared.note))
                    continue
            timing = measure(prepared.call, repeat=settings.repeat, reset=prepared.reset,
                             budget_s=settings.budget_s)
            results.append(result(method, "ok", timing=timing, note=prepared.note))
        except Unsupported as exc:
            results.append(result(method, "skipped", message=str(exc)))
        except Exception as exc:  # a broken backend or peer must not hide the others' results
            status = "skipped" if method.kind == "peer" else "error"
            results.append(result(method, status, message=f"{type(exc).__name__}: {exc}"))
        finally:
            prepared = None  # free its buffers before the next method allocates its own
    return results


def run_losses(specs: Iterable[LossSpec], shape: tuple[int, ...], dtype: str,
               methods: Sequence[Method], settings: Settings,
               progress: Progress | None = None) -> list[Result]:
    """Every loss on one synthetic data set (generated once, shared by the losses)."""
    data = SyntheticData(shape, dtype)
    results: list[Result] = []
    for spec in specs:
        results += run_problem(make_problem(spec, data), methods, settings, progress)
    return pool_floors(results)


def pool_floors(results: list[Result]) -> list[Result]:
    """Give every floor result the samples of all floor results that move the same bytes.

    The floor depends on the bytes moved, not on the loss: MSE, MAE, Huber, BCE and CCE move
    the same bytes, so their floors are one measurement taken at five moments of the run,
    which makes it robust to a burst of load from other processes on a shared machine.
    """
    pools: dict[tuple, list[float]] = {}
    floors = [r for r in results if r.kind == "floor" and r.ok and r.timing is not None]
    for r in floors:
        pools.setdefault((r.bytes, r.dtype, r.mode), []).extend(r.timing.times)
    for r in floors:
        pooled = pools[(r.bytes, r.dtype, r.mode)]
        if len(pooled) > len(r.timing.times):
            r.timing = Timing(list(pooled), r.timing.calls_per_sample)
            r.note += " (pooled)"
    return results


def sweep_sizes(specs: Sequence[LossSpec], shape: tuple[int, ...], dtype: str,
                methods: Sequence[Method], settings: Settings,
                progress: Progress | None = None) -> list[Result]:
    """Time vs problem size: the first axis of ``shape`` from 64 (or less) up to, but not
    including, its value by factors of 4 (the full size is the main run)."""
    results: list[Result] = []
    for n in sweep_rows(shape[0]):
        results += run_losses(specs, (n, *shape[1:]), dtype, methods, settings, progress)
    return results


def sweep_rows(rows: int) -> list[int]:
    """The first-axis lengths of the size sweep below ``rows``: 64, 256, 1024, …"""
    sizes, n = [], min(64, rows)
    while n < rows:
        sizes.append(n)
        n *= 4
    return sizes


def sweep_threads(specs: Sequence[LossSpec], shape: tuple[int, ...], dtype: str,
                  methods: Sequence[Method], settings: Settings, max_threads: int,
                  progress: Progress | None = None) -> list[Result]:
    """Time at 1 … ``max_threads - 1`` threads (``max_threads`` is the main run) of the
    methods that take a thread count."""
    data = SyntheticData(shape, dtype)
    results: list[Result] = []
    for k in range(1, max_threads):
        s = Settings(settings.mode, k, settings.repeat, settings.budget_s)
        for spec in specs:
            results += run_problem(make_problem(spec, data), methods, s, progress)
    return results


def threaded(methods: Iterable[Method]) -> list[Method]:
    """The methods whose speed depends on a thread count."""
    return [m for m in methods
            if (m.kind == "fastloss" and m.backend != REFERENCE_BACKEND)
            or (m.kind == "peer" and getattr(m, "sets_threads", False))]
