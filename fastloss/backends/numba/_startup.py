"""Loading Numba without SciPy: most of what a cached first call paid before its kernel ran.

In a fresh process whose kernels are all in the on-disk cache, the first call spends its time
in Numba itself: importing it, then loading its compiler's registries (every implementation
module it has), which it does before its first compile or cache load. Two of those steps
import SciPy for nothing these kernels use:

* ``import numba`` imports ``scipy`` to check its version (10-30 ms here);
* the registry ``numba.np.arraymath`` checks at import whether BLAS is available by importing
  ``scipy.linalg.cython_blas``, which took 0.18-0.25 s here with SciPy 1.17 (``scipy.linalg``
  imports SciPy's array-API layer, which imports NumPy's lazily loaded submodules), half of
  a cached first call.

:func:`import_numba` and :func:`load_registries` (run before the first kernel call and by
``warmup``) do those two steps with SciPy hidden from the calling thread only, as if it were
not installed, a configuration Numba supports; other threads import it as usual meanwhile.
Numba's BLAS flag, computed while SciPy was hidden, is replaced by a flag that runs Numba's
own check the first time Numba reads it (when it types ``np.convolve`` or ``np.correlate``),
so code of the user's that Numba compiles later in the process sees SciPy as it is. Nothing
changes when SciPy, Numba or its registries were already loaded, when SciPy is not installed,
or with a Numba newer than :data:`SCIPY_CHECKED_NUMBA`, the newest whose sources were read to
check that these are its only uses of SciPy at import.

This module does not import Numba at import time (it decides how Numba is imported).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType

__all__ = ["SCIPY_CHECKED_NUMBA", "import_numba", "load_registries"]

#: The newest Numba (major, minor) checked to import SciPy only as described above (its
#: ``__init__`` version check and ``numba.np.arraymath``'s BLAS probe); a newer Numba is
#: imported and loaded as usual until it is checked.
SCIPY_CHECKED_NUMBA = (0, 68)

_lock = threading.Lock()
_registries_loaded = False


class _HiddenFromThisThread(importlib.abc.MetaPathFinder):
    """An import finder that fails the import of ``names`` in the thread that created it
    (as if they were not installed) and defers to the other finders everywhere else."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.thread = threading.get_ident()
        self.hid = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names and threading.get_ident() == self.thread:
            self.hid = True
            raise ModuleNotFoundError(f"{fullname} hidden while Numba loads", name=fullname)
        return None


@contextlib.contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[_HiddenFromThisThread]:
    finder = _HiddenFromThisThread(names)
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)


class _DeferredCheck:
    """A flag that runs ``check()`` the first time it is read as a bool."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check
        self._value: bool | None = None

    def __bool__(self) -> bool:
        if self._value is None:
            self._value = bool(self._check())
        return self._value


def _checked(version: str) -> bool:
    try:
        return tuple(int(v) for v in version.split(".")[:2]) <= SCIPY_CHECKED_NUMBA
    except ValueError:
        return False


def import_numba() -> ModuleType:
    """``import numba``, with SciPy hidden from this thread when this Numba was checked."""
    if "numba" in sys.modules or "scipy" in sys.modules:
        import numba

        return numba
    from importlib import metadata  # (Numba imports it too)

    try:
        checked = _checked(metadata.version("numba"))
    except Exception:  # not installed with metadata: import it as usual
        checked = False
    with _hidden(("scipy",) if checked else ()):
        import numba
    return numba


def load_registries() -> None:
    """Load Numba's compiler registries with SciPy hidden from this thread (see above), as
    Numba's first compile or cache load would, in the same order; idempotent."""
    global _registries_loaded
    with _lock:
        if _registries_loaded:
            return
        import numba
        from numba.core import entrypoints
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target

        # Numba's own first step (Dispatcher._compilation_chain_init_hook), done before the
        # hiding so that third-party Numba extensions import whatever they need.
        entrypoints.init_all()
        fresh = "numba.np.arraymath" not in sys.modules
        checked = _checked(numba.__version__)
        # (Numba refreshes under its compiler lock too, so that threads compiling meanwhile
        # never see half-installed registries)
        with global_compiler_lock:
            with _hidden(("scipy", "scipy.linalg") if checked else ()) as finder:
                try:
                    cpu_target.target_context.refresh()
                    loaded = True
                except ImportError:  # a Numba that needs SciPy after all: load them as usual
                    if not finder.hid:
                        raise
                    loaded = False
            if not loaded:
                cpu_target.target_context.refresh()
        _registries_loaded = True
        arraymath = sys.modules.get("numba.np.arraymath")
        if fresh and finder.hid and arraymath is not None:
            check = getattr(arraymath, "_check_blas", None)
            if getattr(arraymath, "_HAVE_BLAS", None) is False and callable(check):
                # computed while SciPy was hidden: Numba checks again when it first asks
                arraymath._HAVE_BLAS = _DeferredCheck(check)
