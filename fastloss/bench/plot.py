"""``--plot FILE.png``: time vs problem size (log-log, one panel per loss, one line per
method) and thread scaling (speed-up over one thread, 1 … n threads).

matplotlib is an optional extra (``pip install "fastloss[plot]"``); the figure is drawn with
the Agg canvas directly, so no GUI backend and no global pyplot state are touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .cases import LOSSES
from .runner import Result

__all__ = ["plot_available", "write_plot"]

_STYLE = {"floor": ("black", "--"), "numpy": ("tab:gray", ":")}
_PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan"]


def plot_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _colours(methods: Sequence[str]) -> dict[str, tuple[str, str]]:
    out, i = {}, 0
    for m in methods:
        if m in _STYLE:
            out[m] = _STYLE[m]
        else:
            out[m] = (_PALETTE[i % len(_PALETTE)], "-")
            i += 1
    return out


def write_plot(path: str, results: Sequence[Result], size_sweep: Sequence[Result],
               thread_sweep: Sequence[Result], *, title: str) -> None:
    """Draw the figure into ``path`` (PNG, or any format matplotlib infers from the name)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dtype = results[0].dtype if results else None
    main = [r for r in results if r.ok and r.dtype == dtype]
    sized = [r for r in (*size_sweep, *main) if r.ok]
    losses = list(dict.fromkeys(r.loss for r in main))
    methods = list(dict.fromkeys(r.method for r in sized))
    colours = _colours(methods)

    n_panels = len(losses) + 1
    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.2 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()

    for ax, loss in zip(axes, losses, strict=False):
        for method in methods:
            points = sorted((math.prod(r.shape), r.median) for r in sized
                            if r.loss == loss and r.method == method)
            if not points:
                continue
            colour, style = colours[method]
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, style, marker="o", ms=3, color=colour, label=method)
        shape = next(r.shape for r in main if r.loss == loss)
        classes = f", {shape[-1]} classes" if LOSSES[loss].cross_entropy else ""
        ax.set(xscale="log", yscale="log", title=f"{LOSSES[loss].title}{classes}",
               xlabel="y_pred elements", ylabel="median time per call (s)")
        ax.grid(True, which="both", alpha=0.3)

    _thread_panel(axes[len(losses)], [*thread_sweep, *main], colours)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes[: len(losses)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6) or 1)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def _thread_panel(ax, results: Sequence[Result], colours: dict[str, tuple[str, str]]) -> None:
    """Speed-up over one thread: a thin line per (method, loss), a thick one per method for
    the geometric mean over the losses."""
    times: dict[str, dict[str, dict[int, float]]] = {}
    swept = {(r.method, r.loss) for r in results if r.ok and r.threads == 1}
    for r in results:
        if r.ok and (r.method, r.loss) in swept:
            times.setdefault(r.method, {}).setdefault(r.loss, {})[r.threads] = r.median
    ax.set(title="thread scaling (speed-up over 1 thread)", xlabel="threads", ylabel="speed-up")
    curves = {m: {loss: t for loss, t in per_loss.items() if len(t) > 1}
              for m, per_loss in times.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        ax.text(0.5, 0.5, "no multi-threaded method to scale\n(or a single core)",
                ha="center", va="center", transform=ax.transAxes)
        return
    max_threads = max(max(t) for c in curves.values() for t in c.values())
    ks = np.arange(1, max_threads + 1)
    ax.plot(ks, ks, "--", color="black", lw=0.8, label="ideal")
    for method, per_loss in curves.items():
        colour = colours.get(method, ("tab:blue", "-"))[0]
        speedups: dict[int, list[float]] = {}
        for t in per_loss.values():
            for k in sorted(t):
                speedups.setdefault(k, []).append(t[1] / t[k])
            ax.plot(sorted(t), [t[1] / t[k] for k in sorted(t)], "-", color=colour, lw=0.6,
                    alpha=0.35)
        threads = sorted(speedups)
        mean = [float(np.exp(np.mean(np.log(speedups[k])))) for k in threads]
        ax.plot(threads, mean, "-", color=colour, lw=2.2, marker="o", ms=4,
                label=f"{method} (geometric mean of {len(per_loss)} losses)")
    ax.set_xticks(ks)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
