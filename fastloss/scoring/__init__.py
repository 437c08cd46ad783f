"""Scoring at scale: the streaming :class:`Accumulator`, readers for data in files, and the
``fastloss score`` command (:mod:`fastloss.scoring.cli`).

Nothing here imports pyarrow or dask; the readers import pyarrow only for Parquet, Arrow
IPC and CSV files.
"""

from __future__ import annotations

from ._accumulator import Accumulator, accumulator

__all__ = ["Accumulator", "accumulator"]
