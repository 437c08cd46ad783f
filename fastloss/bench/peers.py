"""Peers: the same losses in PyTorch (CPU), JAX and scikit-learn, each written the way that
library's users write it. All are optional; a peer that is not installed is skipped with a
message, and each peer's result is checked against fastloss before it is timed (the runner
does that for every method).

* torch: ``torch.nn.functional`` loss, then ``backward()`` for the gradient (``no_grad`` for
  the value only); threads set with ``torch.set_num_threads``.
* jax: ``jax.jit(jax.value_and_grad(loss))`` (``jax.jit(loss)`` for the value only); XLA
  picks its own thread count, which cannot be changed once JAX has started.
* sklearn: the Cython loss classes of ``sklearn._loss`` (``loss_gradient`` into preallocated
  ``loss_out``/``gradient_out``, then the mean of the per-sample losses); they compute
  *half* squared error and per-sample gradients, which the check rescales.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Any

import numpy as np

from .cases import Problem
from .methods import Method, Prepared, Unsupported

__all__ = ["PEERS", "Peer", "make_peer"]


class Peer(Method):
    kind = "peer"
    module: str  # import name
    distribution: str  # pip name
    sets_threads = True

    def missing_reason(self) -> str | None:
        """None if the peer can run here, else why not (shown as the skip message)."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.name} is not installed (pip install {self.distribution})"
        return None

    def version(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None


def _rows(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, target) with cross-entropy flattened to ``(rows, classes)`` (views)."""
    p, t = problem.y_pred, problem.y_true
    if problem.spec.cross_entropy:
        c = p.shape[-1]
        p = p.reshape(-1, c)
        t = t.reshape(-1) if problem.spec.target == "labels" else t.reshape(-1, c)
    return p, t


class TorchPeer(Peer):
    name = "torch"
    module = "torch"
    distribution = "torch"

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        import torch
        import torch.nn.functional as F

        fn = {
            "mse": F.mse_loss,
            "mae": F.l1_loss,
            "huber": lambda p, t: F.huber_loss(p, t, delta=1.0),
            "bce": F.binary_cross_entropy_with_logits,
            "cce": F.cross_entropy,
            "sparse_cce": F.cross_entropy,
        }[problem.spec.name]
        torch.set_num_threads(n_threads)
        p_np, t_np = _rows(problem)
        p, t = torch.from_numpy(p_np), torch.from_numpy(t_np)
        if mode == "value":
            def value() -> float:
                with torch.no_grad():
                    return fn(p, t).item()

            return Prepared(value, lambda r: (r, None))
        p.requires_grad_(True)

        def value_and_grad():
            p.grad = None
            loss = fn(p, t)
            loss.backward()
            return loss.item(), p.grad

        note = "allocates" if mode == "inplace" else ""
        return Prepared(value_and_grad, lambda r: (r[0], r[1].numpy()), note=note)


class JaxPeer(Peer):
    name = "jax"
    module = "jax"
    distribution = "jax"
    sets_threads = False

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        import jax
        import jax.numpy as jnp

        if problem.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)  # else float64 inputs become float32

        def mse(p, t):
            return jnp.mean((p - t) ** 2)

        def mae(p, t):
            return jnp.mean(jnp.abs(p - t))

        def huber(p, t):
            r = p - t
            a = jnp.abs(r)
            return jnp.mean(jnp.where(a <= 1.0, 0.5 * r * r, a - 0.5))

        def bce(x, t):
            return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))

        def cce(x, t):
            return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(x, axis=-1), axis=-1))

        def sparse_cce(x, y):
            log_p = jax.nn.log_softmax(x, axis=-1)
            return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=-1))

        fn = {"mse": mse, "mae": mae, "huber": huber, "bce": bce, "cce": cce,
              "sparse_cce": sparse_cce}[problem.spec.name]
        p_np, t_np = _rows(problem)
        p, t = jax.device_put(p_np), jax.device_put(t_np)
        if mode == "value":
            f = jax.jit(fn)
            return Prepared(lambda: float(f(p, t)), lambda r: (r, None), note="XLA threads")
        vg = jax.jit(jax.value_and_grad(fn))

        def value_and_grad():
            value, grad = vg(p, t)
            grad.block_until_ready()
            return float(value), grad

        note = "allocates" if mode == "inplace" else "XLA threads"
        return Prepared(value_and_grad, lambda r: (r[0], np.asarray(r[1])), note=note)


class SklearnPeer(Peer):
    name = "sklearn"
    module = "sklearn"
    distribution = "scikit-learn"

    def prepare(self, problem: Problem, mode: str, n_threads: int) -> Prepared:
        from sklearn._loss import loss as sk

        name = problem.spec.name
        p, t = _rows(problem)
        if name == "cce":
            raise Unsupported("sklearn._loss has no cross-entropy with soft (one-hot) targets")
        if name == "sparse_cce":
            loss: Any = sk.HalfMultinomialLoss(n_classes=p.shape[1])
            t = t.astype(p.dtype)  # sklearn takes labels as floats of the prediction's dtype
        else:
            p, t = p.reshape(-1), t.reshape(-1)
            loss = {"mse": sk.HalfSquaredError, "mae": sk.AbsoluteError,
                    "huber": lambda: sk.HuberLoss(delta=1.0),
                    "bce": sk.HalfBinomialLoss}[name]()
        factor = 2.0 if name == "mse" else 1.0  # HalfSquaredError is ½ r²
        n = p.shape[0]
        loss_out = np.zeros(n, dtype=p.dtype)
        if mode == "value":
            def value() -> float:
                loss.loss(t, p, loss_out=loss_out, n_threads=n_threads)
                return factor * float(np.mean(loss_out))

            return Prepared(value, lambda r: (r, None))
        grad_out = np.zeros_like(p)

        def value_and_grad():
            loss.loss_gradient(t, p, loss_out=loss_out, gradient_out=grad_out, n_threads=n_threads)
            return factor * float(np.mean(loss_out)), grad_out

        note = "out=, not in place" if mode == "inplace" else "out="
        # sklearn's gradient is per sample; the mean's gradient divides it by n.
        return Prepared(value_and_grad, lambda r: (r[0], r[1] * (factor / n)), note=note)


PEERS: dict[str, type[Peer]] = {"torch": TorchPeer, "jax": JaxPeer, "sklearn": SklearnPeer}


def make_peer(name: str) -> Peer:
    """A peer by name (``torch``, ``jax``, ``sklearn``); ``ValueError`` for another name."""
    try:
        return PEERS[name]()
    except KeyError:
        raise ValueError(f"unknown peer {name!r} (valid: {', '.join(PEERS)})") from None
