"""How many threads a call may use."""

from __future__ import annotations

import functools
import os

__all__ = ["default_n_threads", "resolve_n_threads"]


def _usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / cgroup CPU affinity
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def default_n_threads() -> int:
    """Usable cores (CPU affinity), capped by ``OMP_NUM_THREADS`` when it is set.

    Read once, at the first call that needs it, as OpenMP itself reads ``OMP_NUM_THREADS``
    once; ``default_n_threads.cache_clear()`` makes the next call read them again.
    """
    n = _usable_cores()
    env = os.environ.get("OMP_NUM_THREADS", "")
    # OMP_NUM_THREADS may be a list ("4,2") for nested levels; the first entry is ours.
    first = env.split(",")[0].strip()
    if first.isdigit() and int(first) >= 1:
        n = min(n, int(first))
    return max(n, 1)


#: More threads than this are never started (results do not depend on the count anyway).
MAX_THREADS = 1024


def resolve_n_threads(n_threads: int | None) -> int:
    """``n_threads`` if given (already validated ≥ 1, at most :data:`MAX_THREADS`), else
    :func:`default_n_threads`."""
    return default_n_threads() if n_threads is None else min(n_threads, MAX_THREADS)
