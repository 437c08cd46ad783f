"""Everything around the kernels that is not arithmetic: caching, threads, warnings.

Caching
    Kernels are compiled with ``cache=True`` when Numba can find a writable cache directory
    for this package (``NUMBA_CACHE_DIR``, the package's ``__pycache__``, or the user-wide
    cache dir); otherwise a :class:`FastlossNumbaWarning` is issued once and the kernels are
    compiled in memory only. Numba invalidates a cached kernel when *its own* source file
    changes, not when a function it calls changes; every kernel therefore closes over
    :data:`SOURCE_STAMP`, a hash of all the source files of this package, which Numba
    folds into the cache key (it hashes the closure variables of a cached function).

Threads
    :func:`run` sets Numba's thread count for the calling thread to the job's ``n_threads``
    (clamped to Numba's pool size and to a ``threadpoolctl`` limit — a controller for Numba's
    pool is registered with threadpoolctl when it is installed — and to 1 below
    :data:`SERIAL_WORK`) and restores the previous value afterwards; a call with a single
    block of work, or an elementwise call below :data:`SERIAL_WORK`, runs the kernel's serial
    branch, without a parallel region, and leaves the count alone. The count is
    Numba's per-thread mask, so calls from several Python threads at once do not disturb each
    other. Numba's ``omp`` layer sets the OpenMP thread count of the thread that launches its
    pool to the pool size; the first :func:`run` launches the pool and restores the previous
    value in every OpenMP runtime loaded in the process, so other OpenMP code (the Cython
    backend, PyTorch) keeps honouring ``OMP_NUM_THREADS``. If Numba fell back to its
    ``workqueue`` layer, which is not safe to enter from several threads at once, a warning
    is issued once and calls are serialised with a lock.

Start-up
    The first :func:`run` loads Numba's compiler registries before anything else, through
    :func:`._startup.load_registries`, which leaves SciPy out (its import was half of what
    a cached first call cost).

Fork: as with any OpenMP program, a process that ``fork()``s after a parallel kernel ran may
hang in the child when the child runs a kernel; use the ``spawn`` or ``forkserver``
start method.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ._startup import load_registries

try:  # the unchecked C entry points behind numba.{get,set}_num_threads (0.1 µs, not 0.8 µs)
    from numba.np.ufunc.parallel import _get_num_threads, _set_num_threads
except ImportError:  # pragma: no cover - a Numba without them
    _get_num_threads, _set_num_threads = numba.get_num_threads, numba.set_num_threads

__all__ = [
    "CACHE",
    "ones",
    "read_only",
    "scalars",
    "SERIAL_WORK",
    "SOURCE_STAMP",
    "FastlossNumbaWarning",
    "run",
    "threads_for",
]


class FastlossNumbaWarning(RuntimeWarning):
    """A degraded but working configuration of the Numba backend (no cache, workqueue)."""


def _source_stamp() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            digest.update(name.encode())
            with open(os.path.join(here, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def _cache_probe() -> None:  # a function living next to the kernels, for the check below
    pass


def _cache_available() -> bool:
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(_cache_probe)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        warnings.warn(
            "fastloss: no writable cache directory for the Numba backend "
            f"({exc}); its kernels will be compiled in every process. Set NUMBA_CACHE_DIR "
            "to a writable directory to cache them.",
            FastlossNumbaWarning,
            stacklevel=2,
        )
        return False
    return True


#: Hash of this package's sources, closed over by every kernel (part of its cache key).
SOURCE_STAMP: str = _source_stamp()
#: Whether kernels are compiled with ``cache=True``.
CACHE: bool = _cache_available()

#: Below this many elements of work a call runs on one thread. Measured on the 2-core
#: development machine (float32, value and gradient, thread wake-up included): a second
#: thread pays off from two elementwise blocks (4096 elements: 9 µs instead of 13 µs).
SERIAL_WORK = 4096

_pool_size: int = numba.config.NUMBA_NUM_THREADS
_limit: int | None = None  # set by threadpoolctl through _NumbaController
_launched = False
_launch_lock = threading.Lock()
_call_lock: threading.Lock | None = None  # only with the workqueue layer


def read_only(a):
    """A read-only view of the input array ``a``.

    Numba types a read-only array differently from a writable one, so a kernel compiled for
    writable inputs would compile again (seconds) for a read-only or memory-mapped one. The
    kernels therefore always receive their inputs read-only (a view costs 0.4 µs; an array
    that is read-only already is passed as it is): one signature per float type, whatever
    the caller's arrays.
    """
    if not a.flags.writeable:
        return a  # (read-only already: typed the same)
    view = a.view()
    view.flags.writeable = False
    return view


def _frozen(a):
    a.flags.writeable = False
    return a


# Memos of the per-call constants below (keyed by the bits of their inputs, so that -0.0 and
# 0.0 stay apart); cleared when full, so a long run with ever new options stays bounded.
_MEMO_SIZE = 256
_scalars_memo: dict[tuple, tuple] = {}
_ones_memo: dict[tuple, np.ndarray] = {}
_PACKERS = {k: struct.Struct(f"{k}d").pack for k in range(1, 9)}


def scalars(dtype: np.dtype, values: tuple[float, ...]) -> tuple:
    """``values`` (at most 8 floats) as a tuple of ``dtype`` scalars: a kernel's parameter
    tuple. Memoised by dtype and the values' bits: converting four floats to NumPy scalars
    costs about 1 µs, a good part of a small call."""
    key = (dtype, _PACKERS[len(values)](*values))
    hit = _scalars_memo.get(key)
    if hit is None:
        t = dtype.type
        hit = tuple([t(v) for v in values])
        if len(_scalars_memo) >= _MEMO_SIZE:
            _scalars_memo.clear()
        _scalars_memo[key] = hit
    return hit


def ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only array of ``n`` ones of ``dtype``, shared between calls (memoised)."""
    key = (dtype, n)
    hit = _ones_memo.get(key)
    if hit is None:
        hit = _frozen(np.ones(n, dtype))
        if len(_ones_memo) >= _MEMO_SIZE:
            _ones_memo.clear()
        _ones_memo[key] = hit
    return hit


def threads_for(n_threads: int, work: int) -> int:
    """The thread count a call with ``work`` elements and ``job.n_threads`` runs on."""
    if work < SERIAL_WORK:
        return 1
    limit = _pool_size if _limit is None else _limit
    return max(1, min(n_threads, limit, _pool_size))


def _openmp_runtimes() -> list[ctypes.CDLL]:
    """The OpenMP runtimes loaded in this process (Linux; e.g. the system libgomp that Numba's
    ``omp`` layer uses, and PyTorch's own copy)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    runtimes = []
    for path in sorted(paths):
        if os.path.basename(path).startswith(("libgomp", "libomp", "libiomp")):
            try:
                lib = ctypes.CDLL(path)
                lib.omp_get_max_threads.restype = ctypes.c_int
                lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            except (OSError, AttributeError):
                continue
            runtimes.append(lib)
    return runtimes


def _launch() -> None:
    """Start Numba's pool once, undo its change of the OpenMP thread count, check the layer."""
    global _launched, _call_lock
    load_registries()
    with _launch_lock:
        if _launched:
            return
        try:
            import numba.np.ufunc.omppool  # noqa: F401  (loads the OpenMP runtime, no threads yet)
        except ImportError:
            pass
        runtimes = _openmp_runtimes()
        before = [lib.omp_get_max_threads() for lib in runtimes]
        numba.get_num_threads()  # launches the pool
        for lib, count in zip(runtimes, before, strict=True):
            if lib.omp_get_max_threads() != count:
                lib.omp_set_num_threads(count)
        if numba.threading_layer() == "workqueue":
            _call_lock = threading.Lock()
            warnings.warn(
                "fastloss: Numba is using its 'workqueue' threading layer (neither TBB nor "
                "OpenMP was found), which is not thread-safe; Numba-backend calls from "
                "several threads will run one at a time.",
                FastlossNumbaWarning,
                stacklevel=3,
            )
        _launched = True


def run(
    kernel: Callable[..., Any], args: tuple[Any, ...], n_threads: int, parallel: bool = True
) -> Any:
    """Call ``kernel(*args, n_threads)`` on ``n_threads`` Numba threads, then restore the
    previous count (kernels size their per-thread scratch by their last argument), and
    return what it returns.

    ``parallel=False`` says the call has a single block of work, which the kernels run
    without a parallel region: the thread count is then left alone (switching it and back
    costs more than the whole call, ~7 µs, because OpenMP resizes its team)."""
    if not _launched:
        _launch()
    if not parallel:
        n_threads = 1
        if _call_lock is None:
            return kernel(*args, n_threads)
        with _call_lock:
            return kernel(*args, n_threads)
    # Numba's thread count is per calling thread (a thread-local mask), so concurrent calls
    # from several Python threads do not disturb each other.
    previous = _get_num_threads()
    if previous != n_threads:
        _set_num_threads(n_threads)  # 1 <= n_threads <= pool size (threads_for)
    try:
        if _call_lock is None:
            return kernel(*args, n_threads)
        with _call_lock:
            return kernel(*args, n_threads)
    finally:
        if previous != n_threads:
            _set_num_threads(previous)


def _register_threadpoolctl() -> None:
    """Let ``threadpoolctl.threadpool_limits`` limit Numba's pool (a no-op without it)."""
    try:
        import threadpoolctl
    except ImportError:
        return
    register = getattr(threadpoolctl, "register", None)
    base = getattr(threadpoolctl, "LibController", None)
    if register is None or base is None:
        return

    class NumbaController(base):
        """threadpoolctl view of Numba's pool: the limit applies to fastloss's kernels."""

        user_api = "numba"
        internal_api = "numba"
        filename_prefixes = ("omppool", "tbbpool", "workqueue")

        def get_num_threads(self) -> int:
            return _pool_size if _limit is None else _limit

        def set_num_threads(self, num_threads: int) -> None:
            global _limit
            _limit = max(1, int(num_threads))

        def get_version(self) -> str:
            return numba.__version__

        def set_additional_attributes(self) -> None:
            try:
                self.threading_layer = numba.threading_layer()
            except ValueError:
                self.threading_layer = None

    register(NumbaController)


_register_threadpoolctl()
