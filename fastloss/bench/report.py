"""Reporting: the results table, the machine description and the JSON document."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from .cases import LOSSES
from .runner import Result

__all__ = ["FLOOR_NOTE", "format_table", "format_time", "machine_info", "library_versions",
           "to_json", "ratios"]

FLOOR_NOTE = (
    "floor = np.copyto moving the bytes one fused pass must read and write (np.sum of the "
    "bytes read, for value only): the memory-bandwidth limit; × floor 1.0 runs at that limit"
)
_MODE_TITLES = {
    "value": "value only (scoring)",
    "value_and_grad": "value_and_grad (fastloss writes into a preallocated out=)",
    "inplace": "value_and_grad in place (fastloss: out=y_pred)",
}
SCHEMA = "fastloss-bench/1"


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def ratios(results: Sequence[Result], peers: Sequence[str] = ()) -> dict[int, dict[str, float]]:
    """Per result (by index): GB/s, × floor and speedups over numpy and each peer in
    ``peers``, computed within its comparison group (same loss, dtype, shape, mode, threads)."""
    medians: dict[tuple, dict[str, float]] = {}
    for r in results:
        if r.ok:
            medians.setdefault(r.key, {})[r.method] = r.median
    out: dict[int, dict[str, float]] = {}
    for i, r in enumerate(results):
        if not r.ok:
            continue
        group = medians.get(r.key, {})
        row = {"gb_per_s": r.bytes / r.median / 1e9}
        if "floor" in group:
            row["x_floor"] = r.median / group["floor"]
        for other in ("numpy", *peers):
            if other in group:
                row[f"vs_{other}"] = group[other] / r.median
        out[i] = row
    return out


def _group_order(results: Sequence[Result]) -> list[tuple]:
    keys: list[tuple] = []
    for r in results:
        if r.key not in keys:
            keys.append(r.key)
    return keys


def format_table(results: Sequence[Result], peers: Sequence[str] = ()) -> str:
    """The results as aligned text: one block per (dtype, shape, mode, threads), one row per
    method, grouped by loss."""
    peers = [p for p in peers if any(r.method == p and r.ok for r in results)]
    extra = ratios(results, peers)
    header = ["loss", "method", "median", "GB/s", "× floor", "vs numpy",
              *[f"vs {p}" for p in peers], "note"]
    blocks: dict[tuple, list[list[str]]] = {}
    for key in _group_order(results):
        loss, dtype, shape, mode, threads = key
        block = blocks.setdefault((dtype, shape, mode, threads), [])
        if block:
            block.append([])  # blank line between losses
        first = True
        for i, r in enumerate(results):
            if r.key != key:
                continue
            x = extra.get(i, {})
            title = LOSSES[loss].title if first else ""
            first = False
            if r.ok:
                cells = [title, r.method, format_time(r.median), f"{x['gb_per_s']:.1f}",
                         _fmt(x.get("x_floor"), "{:.2f}"), _fmt(x.get("vs_numpy"), "{:.2f}×"),
                         *[_fmt(x.get(f"vs_{p}"), "{:.2f}×") for p in peers], r.note]
            else:
                label = {"skipped": "skipped", "mismatch": "MISMATCH", "error": "ERROR"}[r.status]
                cells = [title, r.method, label, "", "", "", *["" for _ in peers],
                         _shorten(r.message)]
            block.append(cells)
    lines: list[str] = []
    for (dtype, shape, mode, threads), rows in blocks.items():
        if lines:
            lines.append("")
        shape_text = "×".join(map(str, shape))
        lines.append(f"{_MODE_TITLES[mode]} · {dtype} · shape {shape_text} · "
                     f"{threads} thread{'s' if threads != 1 else ''}")
        lines += _align([header, *rows])
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def _shorten(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows if row) for i in range(len(rows[0]))]
    numeric = {2, 3, 4} | set(range(5, len(widths) - 1))
    lines = []
    for n, row in enumerate(rows):
        if not row:
            lines.append("")
            continue
        cells = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


_DISTRIBUTIONS = ("numpy", "numba", "llvmlite", "Cython", "torch", "jax", "jaxlib",
                  "scikit-learn", "matplotlib", "threadpoolctl")


def library_versions() -> dict[str, str | None]:
    import fastloss

    versions: dict[str, str | None] = {"fastloss": fastloss.__version__}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _result_dict(r: Result, x: dict[str, float]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "loss": r.loss, "method": r.method, "kind": r.kind, "backend": r.backend,
        "dtype": r.dtype, "shape": list(r.shape), "mode": r.mode, "threads": r.threads,
        "bytes_moved": r.bytes, "status": r.status, "verified": r.status == "ok",
        "note": r.note, "message": r.message,
    }
    if r.timing is not None:
        d.update(r.timing.as_dict())
    d.update(x)
    return d


def to_json(config: dict[str, Any], results: Sequence[Result], *, peers: Sequence[str] = (),
            size_sweep: Sequence[Result] = (), thread_sweep: Sequence[Result] = (),
            elapsed_s: float | None = None) -> dict[str, Any]:
    """The whole run as a JSON-ready dict."""
    import fastloss

    def section(rs: Sequence[Result]) -> list[dict[str, Any]]:
        x = ratios(rs, peers)
        return [_result_dict(r, x.get(i, {})) for i, r in enumerate(rs)]

    return {
        "schema": SCHEMA,
        "command": " ".join(["fastloss", "bench", *config.get("argv", [])]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": elapsed_s,
        "machine": machine_info(),
        "versions": library_versions(),
        "backends_available": list(fastloss.available_backends()),
        "config": {k: v for k, v in config.items() if k != "argv"},
        "floor": FLOOR_NOTE,
        "results": section(results),
        "size_sweep": section(size_sweep),
        "thread_scaling": section(thread_sweep),
        "python_executable": sys.executable,
    }
