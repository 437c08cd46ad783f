"""``fastloss bench`` and the building blocks of the pytest-benchmark suite.

Modules, one responsibility each:

* :mod:`~fastloss.bench.cases` – the losses, their synthetic data, the plain-NumPy baseline
  formulas and the memory-bandwidth floor (the one source of truth for all of them);
* :mod:`~fastloss.bench.methods` – what is timed (fastloss per backend, NumPy, the floor) and
  the check against the reference;
* :mod:`~fastloss.bench.peers` – PyTorch, JAX and scikit-learn, each optional;
* :mod:`~fastloss.bench.timing` – medians of repeated samples;
* :mod:`~fastloss.bench.runner` – check, then time, every method on every problem;
* :mod:`~fastloss.bench.report` and :mod:`~fastloss.bench.plot` – table, JSON, figure;
* :mod:`~fastloss.bench.cli` – the command line.

>>> from fastloss.bench import main
>>> main(["--loss", "mse", "--shape", "64,10", "--repeat", "3"])  # doctest: +SKIP
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
