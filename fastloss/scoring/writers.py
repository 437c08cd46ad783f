"""Atomic writers for per-sample losses: ``.npy`` or Parquet.

Everything goes to a temporary file next to the destination; only :meth:`commit` renames it
into place (``os.replace``, atomic on POSIX), after an ``fsync``. :meth:`abort` (or any
exception inside the ``with`` block) deletes the temporary file. So a failure never leaves
a half-written file, and an existing file at the destination is untouched until the new
one is complete.

The ``.npy`` writer streams batches with ordinary writes (no memory map: dirty mapped pages
would count against the process's memory) after a header of fixed size, which is filled in
with the final row count at the end, since some inputs (CSV) tell their length only then.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import numpy as np

__all__ = ["PER_SAMPLE_SUFFIXES", "PerSampleWriter", "check_destination", "open_writer"]

PER_SAMPLE_SUFFIXES = (".npy", ".parquet", ".pq")


def check_destination(path: str) -> None:
    """Raise ``ValueError`` (one line) if per-sample losses cannot be written to ``path``."""
    if not path.lower().endswith(PER_SAMPLE_SUFFIXES):
        raise ValueError(
            f"--per-sample {path}: unknown output format; use a .npy or .parquet file name"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--per-sample {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"--per-sample {path}: is a directory")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--per-sample {path}: folder {folder} is not writable")


class PerSampleWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        folder, name = os.path.split(os.path.abspath(path))
        # Not tempfile.mkstemp: its 0600 mode would stick to the result; O_EXCL with 0666
        # gives the usual permissions (minus the umask) and still never clobbers a file.
        while True:
            self._tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        os.close(fd)
        self.rows = 0
        self._done = False

    def write(self, losses: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _close_quietly(self) -> None:
        pass

    def commit(self) -> None:
        """Finish the file and move it into place."""
        self._finish()
        os.replace(self._tmp, self.path)
        self._done = True

    def abort(self) -> None:
        """Delete the temporary file; the destination is left as it was."""
        if self._done:
            return
        self._done = True
        self._close_quietly()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> PerSampleWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class NpyWriter(PerSampleWriter):
    """``.npy`` of shape ``(rows, *tail)`` in the losses' dtype, written as a stream."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._f = open(self._tmp, "wb")  # noqa: SIM115 (closed in _finish / abort)
        self._dtype: np.dtype | None = None
        self._tail: tuple[int, ...] | None = None
        self._header_len = 0

    def write(self, losses: np.ndarray) -> None:
        losses = np.ascontiguousarray(losses)
        if self._dtype is None:
            self._dtype, self._tail = losses.dtype, losses.shape[1:]
            # Room for any row count: the header is written for the largest one, padded.
            self._header_len = len(self._header(np.iinfo(np.int64).max))
            self._f.write(b"\0" * self._header_len)
        elif losses.shape[1:] != self._tail or losses.dtype != self._dtype:
            raise ValueError("per-sample losses changed shape or dtype between batches")
        self._f.write(memoryview(losses.reshape(-1).view(np.uint8)))
        self.rows += len(losses)

    def _header(self, rows: int) -> bytes:
        d = {
            "descr": np.lib.format.dtype_to_descr(self._dtype),
            "fortran_order": False,
            "shape": (rows, *self._tail),
        }
        text = repr(d)
        # The .npy v1.0 layout: magic, version, little-endian u2 header length, the dict
        # padded with spaces and ended by '\n' so that the data starts 64-byte aligned.
        total = 10 + len(text) + 1
        pad = -total % 64
        body = (text + " " * pad + "\n").encode("latin1")
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body

    def _finish(self) -> None:
        if self._dtype is None:  # no batch at all: an empty float64 array
            self._dtype, self._tail = np.dtype(np.float64), ()
            self._header_len = len(self._header(np.iinfo(np.int64).max))
            self._f.write(b"\0" * self._header_len)
        header = self._header(self.rows)
        # Pad the real header with spaces up to the reserved size (still 64-aligned).
        text_len = self._header_len - 10
        body = header[10:].rstrip(b"\n").ljust(text_len - 1) + b"\n"
        self._f.seek(0)
        self._f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def _close_quietly(self) -> None:
        self._f.close()


class ParquetWriter(PerSampleWriter):
    """Parquet with one column ``loss`` (fixed-size lists for per-element losses of 2-D
    predictions), one row group per batch."""

    def __init__(self, path: str) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"--per-sample {path}: writing Parquet needs pyarrow (pip install 'fastloss[io]')"
            ) from None
        super().__init__(path)
        self._pa, self._pq = pa, pq
        self._writer: Any = None

    def _column(self, losses: np.ndarray) -> Any:
        pa = self._pa
        arr = pa.array(np.ascontiguousarray(losses).reshape(-1))
        for size in reversed(losses.shape[1:]):
            arr = pa.FixedSizeListArray.from_arrays(arr, size)
        return arr

    def write(self, losses: np.ndarray) -> None:
        table = self._pa.table({"loss": self._column(losses)})
        if self._writer is None:
            self._writer = self._pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table)
        self.rows += len(losses)

    def _finish(self) -> None:
        if self._writer is None:
            self.write(np.zeros(0))
        self._writer.close()
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_quietly(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 (already failing; the file is deleted next)
                pass


def open_writer(path: str) -> PerSampleWriter:
    """A writer for ``path`` by its suffix (``check_destination`` first)."""
    if path.lower().endswith(".npy"):
        return NpyWriter(path)
    return ParquetWriter(path)
