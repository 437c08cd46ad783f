"""Readers that stream arrays out of files in batches of rows, in bounded memory.

A *source* is one array stored in a file, read along its first axis (rows = samples):

* ``.npy``: memory-mapped; each batch is a zero-copy view, and the pages of a batch are
  released (``madvise(MADV_DONTNEED)``) once the next batch is asked for, so the resident
  set stays at about one batch however large the file is (the data stays in the page cache);
* ``.npz`` (``FILE:key``): members stored uncompressed (``np.savez``) are memory-mapped in
  place like ``.npy``; compressed ones (``np.savez_compressed``) are decompressed as a stream;
* Parquet (``FILE:column``): streamed by row group with pyarrow;
* Arrow IPC, file or stream format (``FILE:column``): streamed by record batch;
* CSV with a header row (``FILE:column``): streamed by block with pyarrow.

For the tabular formats a column of numbers gives a 1-D array, a column of fixed-size (or
equal-length) lists gives a 2-D array, and ``FILE:a,b,c`` stacks several numeric columns
into a 2-D array. ``FILE`` alone works when the file holds exactly one array or column.

Every error is a :class:`SourceError` (a ``ValueError``) with one line that names the file.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Source", "SourceError", "aligned_batches", "open_source", "rebatch"]

# The beginnings of the binary formats we read, so that a file is recognised by its content
# (and a corrupt one reported as such) whatever its name.
_MAGIC_NPY = b"\x93NUMPY"
_MAGIC_ZIP = b"PK\x03\x04"
_MAGIC_PARQUET = b"PAR1"
_MAGIC_ARROW_FILE = b"ARROW1"
_MAGIC_ARROW_STREAM = b"\xff\xff\xff\xff"

_PARQUET_SUFFIXES = (".parquet", ".pq")
_ARROW_SUFFIXES = (".arrow", ".feather", ".ipc", ".arrows")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv")


class SourceError(ValueError):
    """A file that cannot be read as the array it should hold (one-line message)."""


def _page_down(n: int) -> int:
    return n - n % mmap.PAGESIZE


class Source:
    """One array in a file, streamed by rows.

    Attributes: ``spec`` (what the user wrote), ``path``, ``n_rows`` (None when the format
    only tells at the end, e.g. CSV), ``dtype`` (of the arrays yielded; native byte order),
    ``row_shape`` (the shape of one row; None until known).
    """

    spec: str
    path: str
    n_rows: int | None
    dtype: np.dtype
    row_shape: tuple[int, ...] | None

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        """Consecutive pieces of the array along its first axis, about ``batch_rows`` rows
        each (exactly, except the last, where the format allows). Once the next piece is
        asked for, a memory-mapped piece's pages are dropped from the process (it stays
        valid: reading it again maps them back from the page cache)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        rows = "?" if self.n_rows is None else str(self.n_rows)
        row = "" if not self.row_shape else " x " + " x ".join(map(str, self.row_shape))
        return f"{self.spec} ({rows}{row}, {self.dtype})"


# --------------------------------------------------------------------------- opening


def split_spec(spec: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:key`` → ``(path, key)``. A path that exists as written wins, so
    file names containing ``:`` still work."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, key = spec.rsplit(":", 1)
    return path, (key or None)


def open_source(spec: str, *, csv_floats: bool = False) -> Source:
    """Open ``spec`` (``FILE`` or ``FILE:key``) for streaming; raises :class:`SourceError`.

    ``csv_floats``: read CSV columns of whole numbers as float64. CSV types are inferred
    from the first block, so a prediction column that starts with ``0, 1, 1`` would
    otherwise become integers and fail at its first ``0.5``.
    """
    path, key = split_spec(spec)
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lower = path.lower()
    if head.startswith(_MAGIC_NPY):
        if key is not None:
            raise SourceError(f"{spec}: a .npy file holds one array; drop ':{key}'")
        return NpySource(spec, path)
    if head.startswith(_MAGIC_ZIP) or lower.endswith(".npz"):
        return _open_npz(spec, path, key)
    if head.startswith(_MAGIC_PARQUET) or lower.endswith(_PARQUET_SUFFIXES):
        return ParquetSource(spec, path, key)
    if head.startswith((_MAGIC_ARROW_FILE, _MAGIC_ARROW_STREAM)) or lower.endswith(_ARROW_SUFFIXES):
        return ArrowIpcSource(spec, path, key)
    if lower.endswith(_CSV_SUFFIXES):
        return CsvSource(spec, path, key, floats=csv_floats)
    if lower.endswith(".npy"):
        raise SourceError(f"{path}: not a valid .npy file (no NumPy magic string)")
    raise SourceError(
        f"{path}: unknown format; expected .npy, .npz, Parquet (.parquet), Arrow IPC "
        f"(.arrow/.feather/.arrows) or CSV (.csv)"
    )


# --------------------------------------------------------------------------- .npy / .npz


def _read_npy_header(f: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        else:  # 2.0 and 3.0 differ only in the header's length field / text encoding
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
    except (ValueError, EOFError, SyntaxError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{where}: not a valid .npy array (corrupt header: {msg})") from None
    if dtype.hasobject:
        raise SourceError(f"{where}: holds Python objects (dtype {dtype}); expected numbers")
    return tuple(shape), bool(fortran), dtype


def _check_numeric(dtype: np.dtype, where: str) -> None:
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise SourceError(f"{where}: dtype {dtype} is not numeric; expected integers or floats")


class NpySource(Source):
    """An array memory-mapped from a ``.npy`` file (or an uncompressed ``.npz`` member,
    which starts ``base`` bytes into the file)."""

    def __init__(self, spec: str, path: str, base: int = 0, where: str | None = None) -> None:
        self.spec, self.path = spec, path
        where = where or path
        with open(path, "rb") as f:
            f.seek(base)
            shape, fortran, dtype = _read_npy_header(f, where)
            offset = f.tell()
            file_size = os.fstat(f.fileno()).st_size
            _check_numeric(dtype, where)
            if len(shape) == 0:
                raise SourceError(
                    f"{where}: holds a scalar; expected an array with one row per sample"
                )
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > file_size:
                raise SourceError(
                    f"{where}: truncated or corrupt: its header promises shape {shape} of "
                    f"{dtype} ({nbytes} bytes) but only {max(file_size - offset, 0)} bytes follow"
                )
            self._mm: mmap.mmap | None = None
            if nbytes:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        order = "F" if fortran and len(shape) > 1 else "C"
        if self._mm is None:
            self._array = np.empty(shape, dtype=dtype, order=order)
        else:
            self._array = np.ndarray(
                shape, dtype=dtype, buffer=self._mm, offset=offset, order=order
            )
            _advise(self._mm, "MADV_SEQUENTIAL", 0, len(self._mm))
        self._offset = offset
        self._fortran = order == "F"
        self.n_rows = shape[0]
        self.row_shape = shape[1:]
        self.dtype = dtype.newbyteorder("=") if not dtype.isnative else dtype

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        arr = self._array
        n = self.n_rows
        row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * arr.dtype.itemsize
        swap = not arr.dtype.isnative
        mm = self._mm
        for start in range(0, n, batch_rows):
            stop = min(start + batch_rows, n)
            piece = arr[start:stop]
            yield piece.astype(self.dtype) if swap else piece
            del piece
            # The consumer is done with this batch: drop its pages from our address space
            # (they stay in the page cache; touching them again simply maps them back).
            # Page faults map the next batch in cheaply (64 KiB per fault from the page
            # cache); populating it ahead on a helper thread measured no faster here.
            if mm is not None:
                if self._fortran:
                    _advise(mm, "MADV_DONTNEED", 0, len(mm))
                else:
                    lo = _page_down(self._offset + start * row_bytes)
                    hi = _page_down(self._offset + stop * row_bytes)
                    _advise(mm, "MADV_DONTNEED", lo, hi - lo)

    def close(self) -> None:
        self._array = None  # type: ignore[assignment]
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a caller still holds a view; the mapping goes with it
                pass
            self._mm = None


def _advise(mm: mmap.mmap, name: str, start: int, length: int) -> None:
    option = getattr(mmap, name, None)
    if option is None or not hasattr(mm, "madvise") or length <= 0:
        return  # not on this platform: only the memory bound suffers, never correctness
    try:
        mm.madvise(option, start, length)
    except (OSError, ValueError):
        pass


class StreamedNpySource(Source):
    """A ``.npy`` stream that cannot be mapped (a compressed ``.npz`` member): read and
    decompressed batch by batch."""

    def __init__(self, spec: str, path: str, zf: zipfile.ZipFile, member: str, where: str) -> None:
        self.spec, self.path = spec, path
        self._zf = zf
        self._member = member
        self._where = where
        with zf.open(member) as f:
            shape, fortran, dtype = _read_npy_header(f, where)
        _check_numeric(dtype, where)
        if len(shape) == 0:
            raise SourceError(f"{where}: holds a scalar; expected an array with one row per sample")
        if fortran and len(shape) > 1 and int(np.prod(shape[1:])) > 1:
            raise SourceError(
                f"{where}: a Fortran-ordered array in a compressed .npz cannot be streamed by "
                f"rows; save it C-ordered (np.ascontiguousarray) or with np.savez / np.save"
            )
        self._file_dtype = dtype
        self.n_rows = shape[0]
        self.row_shape = shape[1:]
        self.dtype = dtype.newbyteorder("=") if not dtype.isnative else dtype

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        n = self.n_rows
        try:
            with self._zf.open(self._member) as f:
                _read_npy_header(f, self._where)
                for start in range(0, n, batch_rows):
                    rows = min(batch_rows, n - start)
                    out = np.empty((rows, *self.row_shape), dtype=self._file_dtype)
                    view = memoryview(out.reshape(-1).view(np.uint8))
                    got = 0
                    while got < out.nbytes:
                        k = f.readinto(view[got:])
                        if not k:
                            raise SourceError(f"{self._where}: truncated (ends at row {start})")
                        got += k
                    yield out if out.dtype.isnative else out.astype(self.dtype)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise SourceError(f"{self._where}: corrupt compressed data ({exc})") from None

    def close(self) -> None:
        self._zf.close()


def _open_npz(spec: str, path: str, key: str | None) -> Source:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a valid .npz file ({exc})") from None
    try:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if key is None:
            if len(names) != 1:
                raise SourceError(
                    f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                    f"choose one with {path}:KEY"
                )
            key = names[0]
        if key not in names:
            raise SourceError(f"{path}: has no array {key!r}; it has {', '.join(names) or 'none'}")
        member = key + ".npy"
        info = zf.getinfo(member)
        where = f"{path}:{key}"
        if info.compress_type == zipfile.ZIP_STORED:
            base = _stored_member_offset(path, info, where)
            zf.close()
            return NpySource(spec, path, base=base, where=where)
        return StreamedNpySource(spec, path, zf, member, where)
    except BaseException:
        zf.close()
        raise


def _stored_member_offset(path: str, info: zipfile.ZipInfo, where: str) -> int:
    """Where an uncompressed zip member's bytes begin: after its local file header, whose
    name and extra-field lengths may differ from the central directory's."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise SourceError(f"{where}: corrupt .npz (bad local header)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


# --------------------------------------------------------------------------- Arrow family


def _pyarrow(path: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise SourceError(
            f"{path}: reading Parquet, Arrow IPC and CSV files needs pyarrow "
            f"(pip install 'fastloss[io]')"
        ) from None
    return pyarrow


def _arrow_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def _numeric_arrow_type(pa: Any, t: Any) -> bool:
    types = pa.types
    return types.is_integer(t) or types.is_floating(t) or types.is_boolean(t)


def _value_type(pa: Any, t: Any) -> tuple[Any, int]:
    """The element type under any list nesting, and the nesting depth."""
    depth = 0
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
        depth += 1
    return t, depth


class _TableSource(Source):
    """Common part of the pyarrow-based sources: column choice and conversion to NumPy."""

    def _choose_columns(self, schema: Any, key: str | None) -> list[str]:
        pa = self._pa
        names = list(schema.names)
        if key is None:
            if len(names) != 1:
                raise SourceError(
                    f"{self.path}: has {len(names)} columns ({', '.join(names)}); choose one "
                    f"with {self.path}:COLUMN (or {self.path}:A,B,... for a 2-D array)"
                )
            cols = names
        else:
            cols = key.split(",") if key not in names else [key]
            missing = [c for c in cols if c not in names]
            if missing:
                raise SourceError(
                    f"{self.path}: has no column {missing[0]!r}; it has {', '.join(names)}"
                )
        depths = []
        for c in cols:
            t = schema.field(c).type
            value_t, depth = _value_type(pa, t)
            if not _numeric_arrow_type(pa, value_t):
                raise SourceError(f"{self.path}: column {c!r} has type {t}; expected numbers")
            depths.append(depth)
        if len(cols) > 1 and any(depths):
            raise SourceError(f"{self.path}: only columns of plain numbers can be stacked ({key})")
        self._columns = cols
        first_t = schema.field(cols[0]).type
        value_t, depth = _value_type(pa, first_t)
        self.dtype = np.dtype(value_t.to_pandas_dtype())
        if pa.types.is_fixed_size_list(first_t) and depth == 1:
            self.row_shape = (first_t.list_size,)
        elif depth == 0:
            self.row_shape = (len(cols),) if len(cols) > 1 else ()
        else:
            self.row_shape = None  # variable lists: known from the data
        return cols

    def _to_numpy(self, batch: Any) -> np.ndarray:
        columns = [batch.column(c) for c in self._columns]
        arrays = [
            self._column_to_numpy(c, name) for c, name in zip(columns, self._columns, strict=True)
        ]
        out = arrays[0] if len(arrays) == 1 else np.column_stack(arrays)
        if self.row_shape is None:
            self.row_shape = out.shape[1:]
        elif out.shape[1:] != self.row_shape and len(out):
            raise SourceError(
                f"{self.path}: rows of different lengths in column {self._columns[0]!r} "
                f"({self.row_shape} and {out.shape[1:]})"
            )
        return out

    def _column_to_numpy(self, arr: Any, name: str) -> np.ndarray:
        pa = self._pa
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            raise SourceError(f"{self.path}: column {name!r} has missing (null) values")
        t = arr.type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            n = len(arr)
            values = arr.flatten()
            if values.null_count:
                raise SourceError(f"{self.path}: column {name!r} has missing (null) values")
            inner = self._column_to_numpy(values, name)
            if n == 0:
                return inner.reshape((0, *inner.shape[1:]))
            if inner.shape[0] % n:
                raise SourceError(f"{self.path}: column {name!r} has lists of different lengths")
            if not pa.types.is_fixed_size_list(t):
                import pyarrow.compute as pc

                lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
                if lengths.min() != lengths.max():
                    raise SourceError(
                        f"{self.path}: column {name!r} has lists of different lengths"
                    )
            return inner.reshape((n, inner.shape[0] // n, *inner.shape[1:]))
        return arr.to_numpy(zero_copy_only=False)


class ParquetSource(_TableSource):
    def __init__(self, spec: str, path: str, key: str | None) -> None:
        self.spec, self.path = spec, path
        self._pa = _pyarrow(path)
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path)
            schema = self._file.schema_arrow
        except _arrow_errors() as exc:
            raise SourceError(f"{path}: not a valid Parquet file ({_first_line(exc)})") from None
        self._choose_columns(schema, key)
        self.n_rows = self._file.metadata.num_rows

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        try:
            for batch in self._file.iter_batches(
                batch_size=batch_rows, columns=self._columns, use_threads=False
            ):
                yield self._to_numpy(batch)
        except _arrow_errors() as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{self.path}: corrupt Parquet data ({_first_line(exc)})") from None

    def close(self) -> None:
        self._file.close()


class ArrowIpcSource(_TableSource):
    """Arrow IPC, file format (random access; the row count is read from the batches'
    metadata through a memory map, without touching the data) or stream format."""

    def __init__(self, spec: str, path: str, key: str | None) -> None:
        self.spec, self.path = spec, path
        pa = self._pa = _pyarrow(path)
        self._is_file = True
        try:
            with pa.memory_map(path) as mm:
                try:
                    reader = pa.ipc.open_file(mm)
                except pa.ArrowInvalid:
                    self._is_file = False
                if self._is_file:
                    schema = reader.schema
                    self.n_rows = sum(
                        reader.get_batch(i).num_rows for i in range(reader.num_record_batches)
                    )
                    del reader
                else:
                    mm.seek(0)
                    schema = pa.ipc.open_stream(mm).schema
                    self.n_rows = None
        except _arrow_errors() as exc:
            raise SourceError(f"{path}: not a valid Arrow IPC file ({_first_line(exc)})") from None
        self._choose_columns(schema, key)

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        pa = self._pa
        try:
            # Read through an ordinary file, not a memory map: a map would keep every page
            # it touched resident, so the memory would grow with the file.
            with pa.OSFile(self.path) as f:
                if self._is_file:
                    reader = pa.ipc.open_file(f)
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                else:
                    batches = iter(pa.ipc.open_stream(f))
                for batch in batches:
                    for start in range(0, max(batch.num_rows, 1), batch_rows):
                        yield self._to_numpy(batch.slice(start, batch_rows))
                    del batch
        except _arrow_errors() as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{self.path}: corrupt Arrow IPC data ({_first_line(exc)})") from None


class CsvSource(_TableSource):
    """CSV with a header row, streamed by blocks; the row count is known only at the end."""

    def __init__(self, spec: str, path: str, key: str | None, *, floats: bool = False) -> None:
        self.spec, self.path = spec, path
        pa = self._pa = _pyarrow(path)
        import pyarrow.csv as pcsv

        self._pcsv = pcsv
        self._key = key
        try:
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16))
            schema = reader.schema
            reader.close()
        except _arrow_errors() as exc:
            raise SourceError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None
        if floats:
            schema = pa.schema(
                [f.with_type(pa.float64()) if pa.types.is_integer(f.type) else f for f in schema]
            )
        self._choose_columns(schema, key)
        self._schema = pa.schema([schema.field(c) for c in self._columns])
        self.n_rows = None

    def chunks(self, batch_rows: int) -> Iterator[np.ndarray]:
        pcsv = self._pcsv
        row_bytes = 24 * max(1, len(self._columns))
        block = int(min(max(batch_rows * row_bytes, 1 << 16), 1 << 26))
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(block_size=block, use_threads=False),
                convert_options=pcsv.ConvertOptions(
                    include_columns=self._columns,
                    column_types={f.name: f.type for f in self._schema},
                ),
            )
            for batch in reader:
                yield self._to_numpy(batch)
        except _arrow_errors() as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{self.path}: bad CSV data ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- batching


def rebatch(chunks: Iterator[np.ndarray], batch_rows: int) -> Iterator[np.ndarray]:
    """Pieces of any size → batches of exactly ``batch_rows`` rows (the last may be
    shorter). A piece that already is a batch passes through without a copy."""
    pending: list[np.ndarray] = []
    have = 0
    for chunk in chunks:
        if not pending and len(chunk) == batch_rows:
            yield chunk
            continue
        while len(chunk):
            take = min(batch_rows - have, len(chunk))
            pending.append(chunk[:take])
            have += take
            chunk = chunk[take:]
            if have == batch_rows:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, have = [], 0
        # Pieces left pending are views of a chunk whose pages may be released when the
        # next chunk is asked for: copy them (at most one batch).
        pending = [np.array(p) for p in pending]
    if have:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def aligned_batches(
    sources: Sequence[tuple[str, Source]], batch_rows: int
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Walk several sources in step: ``(first_row, [batch of each source])`` with equal row
    counts; raises :class:`SourceError` when one source has fewer rows than another."""
    iters = [rebatch(src.chunks(batch_rows), batch_rows) for _, src in sources]
    row = 0
    while True:
        batches = [next(it, None) for it in iters]
        if all(b is None for b in batches):
            return
        lengths = [None if b is None else len(b) for b in batches]
        if len(set(lengths)) != 1:
            counts = {
                name: (row if n is None else row + n)
                for (name, _), n in zip(sources, lengths, strict=True)
            }
            short = min(counts, key=counts.get)  # type: ignore[arg-type]
            long = max(counts, key=counts.get)  # type: ignore[arg-type]
            raise SourceError(
                f"mismatched lengths: {short} has {counts[short]} rows but {long} has more "
                f"({sources_describe(sources)})"
            )
        yield row, batches  # type: ignore[misc]
        row += lengths[0]  # type: ignore[operator]


def sources_describe(sources: Sequence[tuple[str, Source]]) -> str:
    return ", ".join(f"{name} {src.spec}" for name, src in sources)
