"""Timing: medians of repeated samples, with nothing but the call inside the timer.

The caller has already run the call once (it is verified before it is timed), so JIT
compilation, lazy imports and the first touch of output pages are over before the first
sample. Short calls are looped inside a sample so that a sample lasts at least
``MIN_SAMPLE_S`` and the timer's resolution does not matter; the reported time is per call.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "measure", "MIN_SAMPLE_S"]

MIN_SAMPLE_S = 2e-3
_MAX_CALLS_PER_SAMPLE = 100_000


@dataclass
class Timing:
    """Per-call seconds of each sample (a sample averages ``calls_per_sample`` calls)."""

    times: list[float]
    calls_per_sample: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0 for fewer than 4 samples)."""
        if len(self.times) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4)
        return (q3 - q1) / self.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "iqr_rel": self.spread,
            "samples": len(self.times),
            "calls_per_sample": self.calls_per_sample,
            "times_s": self.times,
        }


def _sample(call: Callable[[], Any], number: int) -> float:
    clock = time.perf_counter
    if number == 1:
        start = clock()
        call()
        return clock() - start
    start = clock()
    for _ in range(number):
        call()
    return (clock() - start) / number


def measure(
    call: Callable[[], Any],
    *,
    repeat: int | None = None,
    reset: Callable[[], Any] | None = None,
    budget_s: float = 0.6,
    min_samples: int = 3,
    max_samples: int = 15,
) -> Timing:
    """Time ``call`` (already warmed up).

    ``repeat``: exactly that many samples; None: at most ``max_samples``, stopping once
    ``budget_s`` has been spent and ``min_samples`` taken (or, for a call slower than the
    budget, once twice the budget has been spent: at least one sample). ``reset`` runs before each
    sample, outside the timer (it restores an input that the call overwrites in place).
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if reset is not None:
            reset()
        first = _sample(call, 1)
        number = 1
        if first < MIN_SAMPLE_S:
            number = min(_MAX_CALLS_PER_SAMPLE, math.ceil(MIN_SAMPLE_S / max(first, 1e-9)))
        times: list[float] = [] if number > 1 else [first]
        wanted = repeat if repeat is not None else max_samples
        started = time.perf_counter() - first
        while len(times) < wanted:
            if repeat is None and times:
                spent = time.perf_counter() - started
                # Past the budget with enough samples, or a call so slow that the minimum
                # number of samples would take more than twice the budget.
                if spent > budget_s and (len(times) >= min_samples or spent > 2 * budget_s):
                    break
            if reset is not None:
                reset()
            times.append(_sample(call, number))
        return Timing(times, number)
    finally:
        if gc_was_enabled:
            gc.enable()
