"""``fastloss bench``: the command line.

Parses and validates the options (a usage error is one line on stderr and exit status 2),
runs :mod:`fastloss.bench.runner` over the chosen losses, backends, dtypes and peers, and
prints the table (stdout), the JSON document and the plot. Exit status 1 when a fastloss
backend or the NumPy baseline disagreed with the reference or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .cases import DEFAULT_SHAPE, DTYPES, LOSSES, LossSpec, parse_shape, resolve_loss_name
from .methods import FastlossMethod, FloorMethod, Method, NumpyMethod
from .peers import PEERS, Peer, make_peer

__all__ = ["main"]

_PROG = "fastloss bench"
_DEFAULT = "x".join(map(str, DEFAULT_SHAPE))
_EPILOG = f"""\
examples:
  fastloss bench                   every loss and backend, float32, shape {_DEFAULT}
  fastloss bench --loss sparse_cce --shape 65536,1000 --compare torch,jax,sklearn
  fastloss bench --shape 64,10 --value-only --json tiny.json
  fastloss bench --plot bench.png  adds a size sweep and a thread sweep

The floor is np.copyto moving the bytes a fused pass must read and write (np.sum of the bytes
read, for --value-only): the memory bandwidth limit. "x floor" 1.0 runs at that limit.
"""


class UsageError(Exception):
    """A bad option: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage + message
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_PROG, description="Time the fused value and gradient of every loss on "
                "every available backend against plain NumPy, the memory floor and peers.",
                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", action="append", metavar="NAMES",
                   help=f"losses, comma-separated (default: all: {', '.join(LOSSES)})")
    p.add_argument("--backend", action="append", metavar="NAMES",
                   help="fastloss backends, comma-separated (default: every available one)")
    p.add_argument("--dtype", action="append", metavar="DTYPES",
                   help=f"{' or '.join(DTYPES)}, comma-separated (default: float32)")
    p.add_argument("--shape", metavar="SHAPE",
                   help="y_pred's shape, e.g. 16384,1000 (cross-entropy: rows,classes; "
                        f"default: {','.join(map(str, DEFAULT_SHAPE))})")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for fastloss and the peers (default: every usable core)")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="timed samples per measurement; the median is reported (default: "
                        "adaptive, 3 to 15 within about 0.6 s)")
    p.add_argument("--compare", action="append", metavar="PEERS",
                   help=f"peers to time too, comma-separated: {', '.join(PEERS)} or all "
                        "(skipped with a message when not installed)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--inplace", action="store_true",
                       help="write the gradient over the prediction (out=y_pred)")
    modes.add_argument("--value-only", action="store_true",
                       help="scoring mode: the loss value only, no gradient")
    p.add_argument("--json", metavar="FILE", help="write every result, the machine and the "
                   "library versions as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot time vs size (log-log) and thread "
                   "scaling (needs matplotlib; runs a size sweep and a thread sweep)")
    return p


def _split(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or ():
        out += [part.strip() for part in value.split(",") if part.strip()]
    return out


@dataclass
class Config:
    specs: list[LossSpec]
    backends: list[str]
    dtypes: list[str]
    shape: tuple[int, ...]
    threads: int
    repeat: int | None
    mode: str
    peers: list[Peer]
    missing_peers: list[str] = field(default_factory=list)
    json_path: str | None = None
    plot_path: str | None = None

    def methods(self) -> list[Method]:
        return [FloorMethod(), NumpyMethod(), *(FastlossMethod(b) for b in self.backends),
                *self.peers]

    def as_dict(self, argv: Sequence[str]) -> dict[str, Any]:
        return {
            "argv": list(argv), "losses": [s.name for s in self.specs], "backends": self.backends,
            "dtypes": self.dtypes, "shape": list(self.shape), "threads": self.threads,
            "repeat": self.repeat, "mode": self.mode, "compare": [p.name for p in self.peers],
        }


def _losses(names: list[str]) -> list[LossSpec]:
    if not names:
        return list(LOSSES.values())
    specs = []
    for name in names:
        try:
            spec = LOSSES[resolve_loss_name(name)]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if spec not in specs:
            specs.append(spec)
    return specs


def _backends(names: list[str]) -> list[str]:
    import fastloss
    from fastloss.backends import BACKEND_NAMES

    available = fastloss.available_backends()
    if not names:
        return [b for b in reversed(available)]  # reference first, fastest last
    for name in names:
        if name not in BACKEND_NAMES:
            raise UsageError(f"unknown backend {name!r} (valid: {', '.join(BACKEND_NAMES)})")
        if name not in available:
            raise UsageError(f"backend {name!r} is not available here "
                             f"(available: {', '.join(available)})")
    return list(dict.fromkeys(names))


def _dtypes(names: list[str]) -> list[str]:
    for name in names:
        if name not in DTYPES:
            raise UsageError(f"unknown dtype {name!r} (valid: {', '.join(DTYPES)})")
    return list(dict.fromkeys(names)) or ["float32"]


def _shape(text: str | None, specs: list[LossSpec], dtypes: list[str]) -> tuple[int, ...]:
    if text is None:
        shape = DEFAULT_SHAPE
    else:
        try:
            shape = parse_shape(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    ce = [s.name for s in specs if s.cross_entropy]
    if ce and len(shape) < 2:
        raise UsageError(f"shape {text!r} has no class axis, which {', '.join(ce)} need: "
                         "give rows,classes (or choose elementwise losses with --loss)")
    _check_memory(shape, dtypes)
    return shape


def _check_memory(shape: tuple[int, ...], dtypes: list[str]) -> None:
    import math

    # The reference backend works in float64 with a handful of temporaries, and the plain
    # NumPy baseline allocates several arrays per call: about 20 arrays of y_pred's size.
    itemsize = 8 if "float64" in dtypes else 4
    need = 20 * math.prod(shape) * itemsize
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * have:
        raise UsageError(f"shape {'x'.join(map(str, shape))} is too large: it needs about "
                         f"{need / 2**30:.0f} GiB of memory and this machine has "
                         f"{have / 2**30:.0f} GiB")


def _peers(names: list[str]) -> tuple[list[Peer], list[str]]:
    if "all" in names:
        names = list(PEERS)
    peers, missing = [], []
    for name in dict.fromkeys(names):
        try:
            peer = make_peer(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        reason = peer.missing_reason()
        if reason is None:
            peers.append(peer)
        else:
            missing.append(reason)
    return peers, missing


def _output_path(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path!r}: folder {parent!r} does not exist")
    return path


def configure(args: argparse.Namespace) -> Config:
    from fastloss._threads import default_n_threads

    specs = _losses(_split(args.loss))
    backends = _backends(_split(args.backend))
    dtypes = _dtypes(_split(args.dtype))
    shape = _shape(args.shape, specs, dtypes)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    peers, missing = _peers(_split(args.compare))
    plot_path = _output_path(args.plot, "--plot")
    if plot_path is not None:
        from .plot import plot_available

        if not plot_available():
            raise UsageError("--plot needs matplotlib (pip install 'fastloss[plot]')")
    mode = "value" if args.value_only else "inplace" if args.inplace else "value_and_grad"
    return Config(specs=specs, backends=backends, dtypes=dtypes, shape=shape,
                  threads=args.threads or default_n_threads(), repeat=args.repeat, mode=mode,
                  peers=peers, missing_peers=missing, json_path=_output_path(args.json, "--json"),
                  plot_path=plot_path)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = max(total, 1), 0, enabled
        self._width = 0

    def step(self, label: str) -> None:
        if self.enabled:
            width = 24
            filled = min(width, width * self.done // self.total)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done + 1}/{self.total} {label}"
            line = line[:100]
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()
            self._width = len(line)
        self.done += 1

    def close(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastloss bench`` with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        config = configure(args)
    except UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    for reason in config.missing_peers:
        print(f"{_PROG}: {reason}; skipping it", file=sys.stderr)
    try:
        return _run(config, argv)
    except KeyboardInterrupt:
        print(f"\n{_PROG}: interrupted", file=sys.stderr)
        return 130


def _run(config: Config, argv: Sequence[str]) -> int:
    from . import report, runner

    methods = config.methods()
    settings = runner.Settings(config.mode, config.threads, config.repeat)
    sweep_settings = runner.Settings(config.mode, config.threads, config.repeat, budget_s=0.25)
    n_main = len(config.specs) * len(methods) * len(config.dtypes)
    n_sizes = n_threads = 0
    if config.plot_path:
        n_sizes = len(runner.sweep_rows(config.shape[0])) * len(config.specs) * len(methods)
        n_threads = (config.threads - 1) * len(config.specs) * len(runner.threaded(methods))
    progress = Progress(n_main + n_sizes + n_threads, enabled=sys.stderr.isatty())

    start = time.perf_counter()
    results: list[runner.Result] = []
    size_sweep: list[runner.Result] = []
    thread_sweep: list[runner.Result] = []
    try:
        for dtype in config.dtypes:
            results += runner.run_losses(config.specs, config.shape, dtype, methods, settings,
                                         progress.step)
        if config.plot_path:
            dtype = config.dtypes[0]
            size_sweep = runner.sweep_sizes(config.specs, config.shape, dtype, methods,
                                            sweep_settings, progress.step)
            if runner.threaded(methods):
                thread_sweep = runner.sweep_threads(config.specs, config.shape, dtype,
                                                    runner.threaded(methods), sweep_settings,
                                                    config.threads, progress.step)
    finally:
        progress.close()
    elapsed = time.perf_counter() - start

    peer_names = [p.name for p in config.peers]
    print(_headline(config, elapsed))
    print()
    print(report.format_table(results, peer_names))
    print()
    print(report.FLOOR_NOTE + ".")
    if config.json_path:
        doc = report.to_json(config.as_dict(argv), results, peers=peer_names,
                             size_sweep=size_sweep, thread_sweep=thread_sweep, elapsed_s=elapsed)
        import json

        with open(config.json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"results written to {config.json_path}")
    if config.plot_path:
        from .plot import write_plot

        write_plot(config.plot_path, results, size_sweep, thread_sweep,
                   title=_plot_title(config))
        print(f"plot written to {config.plot_path}")

    failed = [r for r in results if r.status in ("mismatch", "error")]
    for r in failed:
        print(f"{_PROG}: {r.method} on {r.loss} ({r.dtype}): {r.status}: {r.message}",
              file=sys.stderr)
    return 1 if failed else 0


def _headline(config: Config, elapsed: float) -> str:
    import fastloss

    from .report import library_versions, machine_info

    m = machine_info()
    v = library_versions()
    libs = [f"fastloss {v['fastloss']}", f"numpy {v['numpy']}"]
    libs += [f"{name} {v[name]}" for name in ("numba", *(p.distribution for p in config.peers))
             if v.get(name)]
    return (f"fastloss bench · {m['cpu']} · {m['usable_cores']} usable cores · ran in "
            f"{elapsed:.1f} s\n{', '.join(libs)} · backends available: "
            f"{', '.join(fastloss.available_backends())}")


def _plot_title(config: Config) -> str:
    from .report import machine_info

    m = machine_info()
    return (f"fastloss bench · {config.mode} · {config.dtypes[0]} · {m['cpu']}, "
            f"{m['usable_cores']} cores")
