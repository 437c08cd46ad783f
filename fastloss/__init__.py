"""fastloss: loss functions and their gradients, fast and exact.

Six losses (MSE, MAE, Huber, binary, categorical and sparse categorical cross-entropy),
each with a value, a gradient with respect to the prediction and a fused
value-and-gradient, on a Cython, a Numba or the NumPy reference backend.

>>> import fastloss
>>> fastloss.mse([0.0, 1.0], [0.5, 1.0])
0.125
>>> value, grad = fastloss.Huber(delta=1.0).value_and_grad([0.0], [3.0])
>>> value, grad
(2.5, array([1.]))
"""

from __future__ import annotations

from .backends import available_backends, set_backend, use_backend
from .losses import (
    LOSS_NAMES,
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    Huber,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    SparseCategoricalCrossEntropy,
    binary_cross_entropy,
    categorical_cross_entropy,
    get,
    huber,
    mae,
    mse,
    sparse_categorical_cross_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "LOSS_NAMES",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "Huber",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossEntropy",
    "available_backends",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "get",
    "huber",
    "mae",
    "mse",
    "set_backend",
    "sparse_categorical_cross_entropy",
    "use_backend",
    "warmup",
]


def warmup(backends: tuple[str, ...] | None = None) -> None:
    """Compile ahead of time whatever a backend compiles lazily (the Numba kernels), so the
    first real call pays no compilation.

    >>> fastloss.warmup(("numpy",))
    """
    from .backends import get_backend

    for name in available_backends() if backends is None else backends:
        hook = getattr(get_backend(name), "warmup", None)
        if hook is not None:
            hook()
