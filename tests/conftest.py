"""Shared fixtures: every registered backend runs the same conformance suite."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastloss

BACKENDS = fastloss.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each available backend in turn (cython and numba join automatically when present)."""
    return request.param


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id, so every test is reproducible on its own."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
