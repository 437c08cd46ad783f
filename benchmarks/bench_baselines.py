"""The baselines every fastloss row is compared with: the loss written in plain NumPy (the
formulas live in :mod:`fastloss.bench.cases`) and the memory-bandwidth floor, ``np.sum``
(value) or ``np.copyto`` (gradient modes) of the bytes a fused pass must move."""

from __future__ import annotations

import pytest

from fastloss.bench.cases import MODES
from fastloss.bench.methods import FloorMethod, NumpyMethod


@pytest.mark.parametrize("mode", ["value", "value_and_grad"])
def test_numpy(run_benchmark, case, mode):
    run_benchmark(case, NumpyMethod(), mode, role="baseline")


@pytest.mark.parametrize("mode", MODES)
def test_floor(run_benchmark, case, mode):
    run_benchmark(case, FloorMethod(), mode, role="floor")
