"""The Numba backend: fused parallel JIT kernels for every loss, compiled for the host CPU.

Implements the backend contract of :mod:`fastloss.backends._jobs` (``name``,
:func:`elementwise`, :func:`cross_entropy`). Importing this package imports Numba —
``import fastloss`` never does; the registry imports it on first use. There are two parallel
kernels (elementwise losses, cross-entropy), each compiled on first use for the float type
of the call and cached on disk (see :mod:`._runtime` for the cache, thread and warning
policy), and a serial loop that checks and counts sparse labels for the shortcut
(:mod:`._labels`); :func:`warmup` compiles (or loads) all five signatures ahead of time. Numba is
imported, and its compiler readied, without SciPy (:mod:`._startup`): with a warm cache a
fresh process's first call, ``import fastloss`` included, takes about half a second.

Files: :mod:`._math` (vectorisable ``exp``/``log``/``log1p``), :mod:`._intrinsics` (the few
LLVM operations Numba does not spell), :mod:`._elementwise` (MSE, MAE, Huber, BCE),
:mod:`._cross_entropy` (categorical and sparse categorical CE), :mod:`._labels`,
:mod:`._runtime`, :mod:`._startup`.
"""

from __future__ import annotations

import os
import time

from ._startup import import_numba, load_registries

numba = import_numba()  # before any other module of this package imports it

from .._shortcut import job_shortcuts  # noqa: E402
from . import _labels, _runtime  # noqa: E402
from ._cross_entropy import cross_entropy, cross_entropy_unchecked  # noqa: E402
from ._cross_entropy import kernel_signatures as _ce_signatures  # noqa: E402
from ._elementwise import elementwise  # noqa: E402
from ._elementwise import kernel_signatures as _elementwise_signatures  # noqa: E402
from ._labels import kernel_signatures as _labels_signatures  # noqa: E402
from ._runtime import FastlossNumbaWarning  # noqa: E402

name = "numba"

# The shortcuts of fastloss.backends._jobs, as Python checks around the job entries: a
# canonical training-loop call skips the general path's validation and canonicalisation.
# (the labels, as a read-only view made once, go to the label check and to the kernel;
# without ignore_index and with no output of the caller's, the kernel checks them itself)
elementwise_shortcut, cross_entropy_shortcut = job_shortcuts(
    elementwise, cross_entropy, _labels.count_kept, _runtime.read_only, cross_entropy_unchecked
)

__all__ = [
    "FastlossNumbaWarning",
    "cross_entropy",
    "cross_entropy_shortcut",
    "elementwise",
    "elementwise_shortcut",
    "name",
    "warmup",
]


def _signatures():
    return [*_elementwise_signatures(), *_ce_signatures(), *_labels_signatures()]


def _compile_signature(index: int) -> float:
    """Compile (or load) kernel signature ``index``; seconds taken. Runs in warmup workers."""
    what, kernel, args = _signatures()[index]
    load_registries()
    start = time.perf_counter()
    kernel.compile(tuple(numba.typeof(a) for a in args))
    return time.perf_counter() - start


def warmup(verbose: bool = False, processes: int | None = None) -> int:
    """Compile (or load from the on-disk cache) every kernel signature of this backend now.

    A cold compile of everything takes about 35 s of CPU, once per machine and Numba
    version (the cache lives next to the sources, or in ``NUMBA_CACHE_DIR``); with a warm
    cache it takes well under a second. When the cache is usable the signatures are compiled
    in up to ``processes`` worker processes (default: one per usable core, at most 4) and
    then loaded here, which divides the cold time by the core count; ``processes=1``
    compiles in this process. Returns the number of signatures ready (5: two kernels, two
    float types, and the sparse shortcut's label check).

    >>> import fastloss.backends.numba as nb
    >>> nb.warmup() > 0
    True
    """
    load_registries()
    signatures = _signatures()
    if processes is None:
        processes = min(
            len(signatures),
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1),
        )
    if _runtime.CACHE and processes > 1 and not _all_cached(signatures):
        # (compiling in workers pays off only for what is not on disk yet)
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            for (what, _, _), seconds in zip(
                signatures, pool.map(_compile_signature, range(len(signatures))), strict=True
            ):
                if verbose:
                    print(f"fastloss numba warmup: {what}: compiled in {seconds:.2f} s")
    for index, (what, _, _) in enumerate(signatures):
        seconds = _compile_signature(index)  # from the cache if a worker compiled it
        if verbose:
            print(f"fastloss numba warmup: {what}: ready in {seconds:.2f} s")
    return len(signatures)


def _all_cached(signatures) -> bool:
    """Whether every signature is compiled in this process or in the on-disk cache."""
    for _, kernel, args in signatures:
        sig = tuple(numba.typeof(a) for a in args)
        if sig in kernel.overloads:
            continue
        try:  # Numba's own cache lookup (private: on any surprise, assume not cached)
            if kernel._cache.load_overload(sig, kernel.targetctx) is None:
                return False
        except Exception:
            return False
    return True
