"""Peers, when installed: PyTorch CPU (``torch.nn.functional`` + ``backward()``), JAX
(``jit(value_and_grad)``) and scikit-learn (``sklearn._loss``). Each is checked against
fastloss before it is timed. A peer that is not installed has no benchmarks, only one
skipped ``test_peer_installed`` saying how to install it."""

from __future__ import annotations

import pytest

from fastloss.bench.peers import PEERS, make_peer

INSTALLED = [name for name in PEERS if make_peer(name).missing_reason() is None]


@pytest.mark.parametrize("peer", list(PEERS))
def test_peer_installed(peer):
    reason = make_peer(peer).missing_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("mode", ["value", "value_and_grad"])
@pytest.mark.parametrize("peer", INSTALLED)
def test_peer(run_benchmark, case, peer, mode):
    run_benchmark(case, make_peer(peer), mode, role="peer")
