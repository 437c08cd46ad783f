"""Backend registry and selection.

A backend is a module with a ``name``, two functions, ``elementwise(job)`` and
``cross_entropy(job)``, and two optional shortcuts, ``elementwise_shortcut`` and
``cross_entropy_shortcut`` (absent or None where it has none), that follow the contract in
:mod:`fastloss.backends._jobs`.
Backends are imported lazily, on first use, so ``import fastloss`` never imports numba.

Selection order for a call: the loss's ``backend=`` argument, else the innermost
:func:`use_backend` context, else :func:`set_backend`, else the ``FASTLOSS_BACKEND``
environment variable, else the fastest available (cython, then numba, then numpy).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from collections.abc import Iterator
from types import ModuleType

__all__ = [
    "BACKEND_NAMES",
    "available_backends",
    "check_backend_name",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

#: Every backend fastloss knows, fastest first: the module that implements it and the
#: module (extension or third-party package) whose presence makes it available.
_REGISTRY: dict[str, tuple[str, str]] = {
    "cython": ("fastloss.backends.cython", "fastloss.backends.cython._kernels"),
    "numba": ("fastloss.backends.numba", "numba"),
    "numpy": ("fastloss.backends.numpy", "numpy"),
}
BACKEND_NAMES: tuple[str, ...] = tuple(_REGISTRY)

_loaded: dict[str, ModuleType] = {}
_global_choice: str | None = None
_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastloss_backend", default=None
)
_available: tuple[str, ...] | None = None


def _spec_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can run here, fastest first.

    Checks that each backend's code and its dependency are installed without importing
    them (so numba is not imported by this call).

    >>> "numpy" in fastloss.available_backends()
    True
    """
    global _available
    if _available is None:
        _available = tuple(
            name
            for name, (module, requirement) in _REGISTRY.items()
            if _spec_exists(module) and _spec_exists(requirement)
        )
    return _available


def check_backend_name(name: object, argument: str) -> str:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"{argument} must be one of {', '.join(map(repr, BACKEND_NAMES))}, got {name!r}"
        )
    if name not in available_backends():
        module, requirement = _REGISTRY[name]
        raise ValueError(
            f"{argument}={name!r} is not available here ({requirement} cannot be imported); "
            f"available: {', '.join(map(repr, available_backends()))}"
        )
    return name


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name``, imported on first use."""
    module = _loaded.get(name)
    if module is None:
        check_backend_name(name, "backend")
        module = importlib.import_module(_REGISTRY[name][0])
        _loaded[name] = module
    return module


def set_backend(name: str | None) -> None:
    """Make ``name`` the process-wide default backend (``None`` restores automatic choice).

    >>> fastloss.set_backend("numpy")
    >>> fastloss.set_backend(None)
    """
    global _global_choice
    _global_choice = None if name is None else check_backend_name(name, "backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` inside a ``with`` block (per thread and per asyncio task).

    >>> with fastloss.use_backend("numpy"):
    ...     fastloss.mse([1.0, 2.0], [1.5, 2.0])
    0.125
    """
    token = _context_choice.set(check_backend_name(name, "backend"))
    try:
        yield
    finally:
        _context_choice.reset(token)


def resolve_backend(explicit: str | None = None) -> ModuleType:
    """The backend module a call with ``backend=explicit`` runs on."""
    if explicit is not None:
        return get_backend(explicit)
    name = _context_choice.get() or _global_choice
    if name is None:
        env = os.environ.get("FASTLOSS_BACKEND")
        if env:
            name = check_backend_name(env, "the FASTLOSS_BACKEND environment variable")
        else:
            name = available_backends()[0]
    return get_backend(name)
