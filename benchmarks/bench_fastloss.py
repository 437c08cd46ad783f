"""fastloss on every available backend: value, value_and_grad (into a preallocated ``out=``)
and value_and_grad in place (``out=y_pred``). The ``numpy`` backend is the reference."""

from __future__ import annotations

import pytest

import fastloss
from fastloss.bench.cases import MODES
from fastloss.bench.methods import FastlossMethod


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", fastloss.available_backends())
def test_fastloss(run_benchmark, case, backend, mode):
    role = "reference" if backend == "numpy" else "fastloss"
    run_benchmark(case, FastlossMethod(backend), mode, role=role)
