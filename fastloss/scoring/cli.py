"""``fastloss score``: the loss of predictions stored in files, in bounded memory.

    fastloss score LOSS --y-true FILE --y-pred FILE [--sample-weight FILE]
                   [--opt key=value ...] [--per-sample OUT] [--batch-rows N] [--json]

The files are streamed in batches of rows (see :mod:`fastloss.scoring.readers`), each batch
goes once through the loss's kernel on the fastest backend, and a streaming
:class:`~fastloss.scoring.Accumulator` adds up the totals exactly. The peak memory is a few
batches, whatever the size of the files. Bad input of any kind gives one line on stderr,
exit status 2, and writes nothing.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..backends import resolve_backend
from ..losses import LOSS_NAMES, Loss, get
from ._accumulator import Accumulator
from .readers import Source, SourceError, aligned_batches, open_source, split_spec
from .writers import check_destination, open_writer

__all__ = ["main", "score"]

#: Default batch size, in prediction elements (rows × elements per row): large enough that
#: the fixed cost of a batch (validation, a kernel call, a few system calls: ~0.1 ms) is
#: noise next to the kernel, small enough that the kernel's temporaries stay far below the
#: memory bound. The NumPy reference backend holds several float64 copies of a batch, so it
#: gets smaller batches; the native kernels allocate nothing per element.
DEFAULT_BATCH_ELEMENTS = {"numpy": 1 << 20}
DEFAULT_BATCH_ELEMENTS_NATIVE = 1 << 22

_COMMON_OPTIONS = ("reduction", "backend", "n_threads")


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see fastloss score --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastloss score",
        description="Score predictions stored in files (larger than memory) with a fastloss loss.",
        epilog=(
            "FILE is .npy (memory-mapped), .npz (FILE:key), Parquet or Arrow IPC (FILE:column, "
            "FILE:a,b,c stacks columns), or CSV with a header (FILE:column); pyarrow is needed "
            "for all but .npy/.npz. Rows are samples; the files may differ in format. "
            f"Losses: {', '.join(LOSS_NAMES)}."
        ),
    )
    p.add_argument("loss", metavar="LOSS", help="loss name, e.g. mse or sparse_cce")
    p.add_argument("--y-true", required=True, metavar="FILE", help="targets / labels")
    p.add_argument("--y-pred", required=True, metavar="FILE", help="predictions")
    p.add_argument("--sample-weight", metavar="FILE", help="one weight per row (or per element)")
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a loss option, e.g. from_logits=true, ignore_index=-100, "
        "class_weight=[1,2,0.5], reduction=sum (repeatable)",
    )
    p.add_argument(
        "--per-sample",
        metavar="OUT",
        help="also write the per-sample losses w·l to OUT (.npy or .parquet), atomically",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        metavar="N",
        help="rows per batch (default: about 4 Mi prediction elements, 1 Mi on the NumPy backend)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


# --------------------------------------------------------------------------- options


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a bare word: a string option such as reduction=sum


def build_loss(name: str, opts: Sequence[str]) -> Loss:
    from ..losses import _NAMES

    cls = _NAMES.get(name)
    if cls is None:
        raise UsageError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    valid = tuple(cls._options) + _COMMON_OPTIONS
    options: dict[str, Any] = {}
    for item in opts:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--opt {item!r}: expected KEY=VALUE")
        if key not in valid:
            raise UsageError(
                f"unknown option {key!r} for {name}; valid options: {', '.join(valid)}"
            )
        # reduction is always a word ("none" is a reduction there, not None).
        options[key] = text.strip() if key == "reduction" else _parse_value(text)
    try:
        return get(name, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--opt: {exc}") from None


# --------------------------------------------------------------------------- scoring


@dataclass
class Report:
    loss: str
    options: dict[str, Any]
    reduction: str
    backend: str
    value: float | None
    total: float
    weight_sum: float
    count: int
    rows: int
    bytes: int
    seconds: float
    batch_rows: int
    per_sample: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.inf

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        d = {
            "loss": self.loss,
            "options": {k: _json_safe(v) for k, v in self.options.items()},
            "reduction": self.reduction,
            "backend": self.backend,
            "value": self.value,
            "total": self.total,
            "weight_sum": self.weight_sum,
            "count": self.count,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "rows_per_second": self.rows_per_second,
            "bytes_per_second": self.bytes_per_second,
            "batch_rows": self.batch_rows,
            "per_sample": self.per_sample,
            "inputs": self.inputs,
        }
        return {k: _json_safe(v) for k, v in d.items()}

    def as_text(self) -> str:
        opts = ", ".join(f"{k}={_json_safe(v)!r}" for k, v in self.options.items())
        lines = [
            f"loss        {self.loss}({opts})",
            f"value       {'(per-sample only)' if self.value is None else repr(self.value)}"
            f"   [{self.reduction}]",
            f"total       {self.total!r}   (sum of w*l)",
            f"weight_sum  {self.weight_sum!r}",
            f"count       {self.count}",
            f"rows        {self.rows}",
            f"time        {self.seconds:.3f} s   ({self.backend} backend, "
            f"batches of {self.batch_rows} rows)",
            f"throughput  {_si(self.rows_per_second)}rows/s, {_si(self.bytes_per_second)}B/s "
            f"({_si(self.bytes)}B read)",
        ]
        if self.per_sample:
            lines.append(f"per-sample  {self.per_sample}")
        return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


class Progress:
    """``rows  percent  throughput`` on one line of stderr, redrawn at most 5 times a second;
    silent unless the stream is a terminal."""

    def __init__(self, total_rows: int | None, stream: TextIO) -> None:
        self.total = total_rows
        self.stream = stream
        try:
            self.enabled = stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.start = time.perf_counter()
        self.last = 0.0
        self.drawn = False

    def update(self, rows: int, nbytes: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = f"{_si(rows / elapsed)}rows/s  {_si(nbytes / elapsed)}B/s"
        if self.total:
            frac = min(rows / self.total, 1.0)
            bar = "#" * int(30 * frac)
            line = f"\r[{bar:<30}] {100 * frac:5.1f}%  {rows}/{self.total} rows  {rate}"
        else:
            line = f"\r{rows} rows  {rate}"
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _check_sources(loss: Loss, named: list[tuple[str, Source]]) -> None:
    by = dict(named)
    pred, true = by["--y-pred"], by["--y-true"]
    if pred.dtype.kind not in "biuf":
        raise UsageError(f"--y-pred {pred.spec}: dtype {pred.dtype} is not numeric")
    if getattr(loss, "_sparse", False):
        if true.dtype.kind not in "iu":
            raise UsageError(
                f"--y-true {true.spec}: {type(loss).__name__} needs integer class labels, "
                f"got dtype {true.dtype}"
            )
    axis = getattr(loss, "axis", None)
    if axis is not None and pred.row_shape is not None:
        ndim = len(pred.row_shape) + 1
        if ndim < 2:
            raise UsageError(
                f"--y-pred {pred.spec}: cross-entropy needs a class axis; y_pred must have one "
                f"row of class scores per sample (2-D), got 1-D"
            )
        if axis % ndim == 0 or not -ndim <= axis < ndim:
            raise UsageError(
                f"--opt axis={axis}: the class axis must be one of y_pred's axes other than the "
                f"first (rows are samples); y_pred rows have shape {pred.row_shape}"
            )
    known = {name: src.n_rows for name, src in named if src.n_rows is not None}
    if len(set(known.values())) > 1:
        desc = ", ".join(
            f"{name} {named_src.spec} has {known[name]}"
            for name, named_src in named
            if name in known
        )
        raise UsageError(f"mismatched lengths (rows): {desc}")


def _weight_for_rows(weight: np.ndarray | None, pred: np.ndarray, loss: Loss) -> np.ndarray | None:
    """A 1-D weight file holds one weight per row: give it trailing unit axes so it
    broadcasts over the per-row part of the loss (NumPy alone would align it to the last
    axis instead)."""
    if weight is None or weight.ndim != 1:
        return weight
    loss_ndim = pred.ndim if loss._elementwise else pred.ndim - 1
    if loss_ndim <= 1:
        return weight
    return weight.reshape(weight.shape + (1,) * (loss_ndim - 1))


def score(
    loss: Loss,
    y_true: str,
    y_pred: str,
    sample_weight: str | None = None,
    *,
    per_sample: str | None = None,
    batch_rows: int | None = None,
    progress_stream: TextIO | None = None,
) -> Report:
    """Score files with ``loss``; raises :class:`UsageError` / :class:`SourceError` /
    ``ValueError`` / ``TypeError`` on bad input, having written nothing."""
    if batch_rows is not None and batch_rows < 1:
        raise UsageError(f"--batch-rows must be >= 1, got {batch_rows}")
    if per_sample is not None:
        check_destination(per_sample)
        out_real = os.path.realpath(per_sample)
        for spec in (y_true, y_pred, sample_weight):
            if spec is not None and os.path.realpath(split_spec(spec)[0]) == out_real:
                raise UsageError(f"--per-sample {per_sample} is also an input file")
    # Reduced value from a "sum" accumulator of the same loss for "none": the per-sample
    # losses go to the file, never into memory.
    none = loss.reduction == "none"
    if none and per_sample is None:
        raise UsageError("reduction=none gives per-sample losses: name a file with --per-sample")
    acc_loss = type(loss)(**{**loss.get_config(), "reduction": "sum"}) if none else loss
    acc = Accumulator(acc_loss)
    backend_name = resolve_backend(loss.backend).name

    named: list[tuple[str, Source]] = []
    try:
        for name, spec in (
            ("--y-true", y_true),
            ("--y-pred", y_pred),
            ("--sample-weight", sample_weight),
        ):
            if spec is not None:
                try:
                    labels = name == "--y-true" and getattr(loss, "_sparse", False)
                    named.append((name, open_source(spec, csv_floats=not labels)))
                except SourceError as exc:
                    raise UsageError(f"{name} {exc}") from None
        _check_sources(loss, named)
        pred_src = dict(named)["--y-pred"]
        if batch_rows is None:
            per_row = int(np.prod(pred_src.row_shape)) if pred_src.row_shape else 1
            elements = DEFAULT_BATCH_ELEMENTS.get(backend_name, DEFAULT_BATCH_ELEMENTS_NATIVE)
            batch_rows = max(1, elements // max(per_row, 1))
        progress = Progress(pred_src.n_rows, progress_stream or sys.stderr)
        writer = open_writer(per_sample) if per_sample is not None else None
        start = time.perf_counter()
        rows = nbytes = 0
        try:
            for first, batch in aligned_batches(named, batch_rows):
                yt, yp = batch[0], batch[1]
                w = _weight_for_rows(batch[2], yp, loss) if len(batch) > 2 else None
                try:
                    losses = acc.update(yt, yp, w, per_sample=writer is not None)
                except (ValueError, TypeError) as exc:
                    msg = _global_index(str(exc), first)
                    raise UsageError(f"rows {first}..{first + len(yp) - 1}: {msg}") from None
                if writer is not None:
                    writer.write(losses)
                rows += len(yp)
                nbytes += sum(b.nbytes for b in batch)
                progress.update(rows, nbytes)
            if writer is not None:
                writer.commit()
        finally:
            if writer is not None:
                writer.abort()  # no-op after a commit
            progress.close()
        seconds = time.perf_counter() - start
    finally:
        for _, src in named:
            src.close()

    return Report(
        loss=type(loss).__name__,
        options={k: val for k, val in loss.get_config().items() if k not in _COMMON_OPTIONS},
        reduction=loss.reduction,
        backend=backend_name,
        value=None if none else acc.result(),  # type: ignore[arg-type]
        total=acc.total,
        weight_sum=acc.weight_sum,
        count=acc.count,
        rows=rows,
        bytes=nbytes,
        seconds=seconds,
        batch_rows=batch_rows,
        per_sample=per_sample,
        inputs={name: src.spec for name, src in named},
    )


def _global_index(message: str, first: int) -> str:
    """Validation speaks of positions inside the batch ("at index (3,)"); the user needs the
    row of the file."""
    return re.sub(
        r"at index \((\d+)(,[^)]*)\)", lambda m: f"at index ({first + int(m[1])}{m[2]})", message
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fastloss score``; returns the exit status (0, or 2 on bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = _parser().parse_args(args_list)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        loss = build_loss(args.loss, args.opt)
        report = score(
            loss,
            args.y_true,
            args.y_pred,
            args.sample_weight,
            per_sample=args.per_sample,
            batch_rows=args.batch_rows,
        )
    except KeyboardInterrupt:
        print("fastloss score: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, OSError, MemoryError) as exc:
        print(f"fastloss score: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything a corrupt file may provoke deep in a reader
        if os.environ.get("FASTLOSS_DEBUG"):
            raise
        print(f"fastloss score: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(report.as_dict()) if args.json else report.as_text(), flush=True)
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, which is not an error
        # Point stdout at /dev/null so that the flush at interpreter exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
