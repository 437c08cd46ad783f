"""fastloss.dask: per-block accumulators and a tree of merges give the single-machine value,
on a real distributed cluster of worker processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
fdask = pytest.importorskip("fastloss.dask")

RTOL = 1e-12


def _close(got, want):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=0, equal_nan=True)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on loopback."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _sparse(rng, n=6000, c=6):
    p = (rng.normal(size=(n, c)) * 2).astype(np.float32)
    y = rng.integers(0, c, n)
    y[rng.random(n) < 0.15] = -100
    return y, p, rng.random(n), rng.random(c) + 0.2


@pytest.mark.parametrize("reduction", ["mean", "sum", "sum_over_batch_size"])
def test_cluster_value_equals_single_machine(client, rng, reduction):
    y, p, w, cw = _sparse(rng)
    loss = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True,
        ignore_index=-100,
        class_weight=cw,
        label_smoothing=0.1,
        reduction=reduction,
    )
    Y, P, W = (
        da.from_array(y, chunks=700),
        da.from_array(p, chunks=(500, 6)),
        da.from_array(w, chunks=1100),
    )
    got = fdask.value(loss, Y, P, W, split_every=3)
    assert isinstance(got, float)
    _close(got, loss(y, p, w))
    # Exact sums: the same bits for another tree shape and another run.
    assert fdask.value(loss, Y, P, W, split_every=5) == got
    assert fdask.value(loss, Y, P, W, split_every=3) == got


def test_cluster_data_made_on_workers(client):
    """Data that only ever exists on the workers (random blocks): the client receives just
    the merged accumulator."""
    t = da.random.RandomState(1).normal(size=(40_000, 4), chunks=(5000, 4))
    p = da.random.RandomState(2).normal(size=(40_000, 4), chunks=(5000, 4))
    loss = fastloss.Huber(delta=0.5)
    acc = fdask.accumulate(loss, t, p).compute()
    assert acc.count == 160_000 and acc.n_updates == 8
    # Copies: arrays received from the cluster may be misaligned views of message frames.
    t_np, p_np = (np.array(a) for a in client.compute([t, p], sync=True))
    _close(acc.result(), loss(t_np, p_np))


def test_cluster_per_sample_and_gradient(client, rng):
    y, p, w, cw = _sparse(rng, n=3000)
    loss = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, ignore_index=-100, class_weight=cw
    )
    Y, P, W = (
        da.from_array(y, chunks=1000),
        da.from_array(p, chunks=(600, 6)),
        da.from_array(w, chunks=1000),
    )
    value, grad = fdask.value_and_grad(loss, Y, P, W)
    want_value, want_grad = loss.value_and_grad(y, p, w)
    _close(value, want_value)
    assert isinstance(grad, da.Array) and grad.chunks == P.chunks and grad.dtype == np.float32
    np.testing.assert_allclose(grad.compute(), want_grad, rtol=1e-6, atol=1e-9)
    none = fastloss.SparseCategoricalCrossEntropy(
        from_logits=True, ignore_index=-100, class_weight=cw, reduction="none"
    )
    per_sample = fdask.value(none, Y, P, W)
    assert isinstance(per_sample, da.Array) and per_sample.chunks == (P.chunks[0],)
    np.testing.assert_array_equal(per_sample.compute(), none(y, p, w))


# --------------------------------------------------------------------------- local scheduler


@pytest.fixture
def sync():
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce", "cce"])
def test_every_loss_and_reduction(sync, rng, name):
    n = 900
    if name == "cce":
        opts = {"from_logits": True, "class_weight": [1.0, 2.0, 0.5], "label_smoothing": 0.1}
        t, p, w = rng.dirichlet(np.ones(3), n), rng.normal(size=(n, 3)), rng.random(n)
        chunks = (200, 3)
    else:
        opts = {
            "huber": {"delta": 0.7},
            "bce": {"from_logits": True, "pos_weight": [1.0, 3.0]},
        }.get(name, {})
        t = rng.integers(0, 2, (n, 2)).astype(float) if name == "bce" else rng.normal(size=(n, 2))
        p, w = rng.normal(size=(n, 2)), rng.random((n, 1))
        chunks = (250, 1)  # elementwise losses work on any chunking
    for reduction in ("mean", "sum", "sum_over_batch_size", "none"):
        loss = fastloss.get(name, reduction=reduction, **opts)
        T, P = da.from_array(t, chunks=chunks), da.from_array(p, chunks=chunks)
        value, grad = fdask.value_and_grad(loss, T, P, w)
        want_value, want_grad = loss.value_and_grad(t, p, w)
        _close(value.compute() if reduction == "none" else value, want_value)
        assert grad.chunks == P.chunks
        np.testing.assert_allclose(grad.compute(), want_grad, rtol=1e-12, atol=1e-15)


def test_class_axis_first_and_rechunked(sync, rng):
    loss = fastloss.CategoricalCrossEntropy(from_logits=True, axis=0)
    t, p = rng.dirichlet(np.ones(5), 400).T, rng.normal(size=(5, 400))
    T = da.from_array(t, chunks=(2, 100))  # class axis split: rechunked to one chunk
    P = da.from_array(p, chunks=(5, 150))
    value, grad = fdask.value_and_grad(loss, T, P)
    want_value, want_grad = loss.value_and_grad(t, p)
    _close(value, want_value)
    assert grad.shape == p.shape and grad.chunks == P.chunks
    np.testing.assert_allclose(grad.compute(), want_grad, rtol=1e-12, atol=1e-15)


def test_lazy_value_and_all_ignored(sync, rng):
    loss = fastloss.SparseCategoricalCrossEntropy(ignore_index=-1, from_logits=True)
    y = da.full(10, -1, chunks=4)
    p = da.from_array(rng.normal(size=(10, 3)), chunks=(4, 3))
    value, grad = fdask.value_and_grad(loss, y, p, compute=False)
    assert value.compute() == 0.0
    np.testing.assert_array_equal(grad.compute(), np.zeros((10, 3)))
    labels = da.from_array(rng.integers(0, 3, (10, 1)), chunks=(4, 1))  # size-1 class axis
    _close(fdask.value(loss, labels, p), loss(labels.compute(), p.compute()))


def test_errors(sync):
    loss = fastloss.MeanSquaredError()
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        fdask.value(loss, da.zeros(4, chunks=2), da.zeros(5, chunks=2))
    with pytest.raises(ValueError, match="sample_weight"):
        fdask.value(loss, da.zeros(4, chunks=2), da.zeros(4, chunks=2), np.ones(3))
    with pytest.raises(ValueError, match="labels must be in"):
        fdask.value(
            fastloss.SparseCategoricalCrossEntropy(),
            da.from_array(np.array([0, 5])),
            da.ones((2, 3), chunks=(1, 3)),
        )
    with pytest.raises(TypeError, match="Loss"):
        fdask.value("mse", da.zeros(4), da.zeros(4))


def test_import_fastloss_does_not_import_dask():
    code = (
        "import sys, fastloss; "
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules"
    )
    root = os.path.dirname(os.path.dirname(fastloss.__file__))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": root})
