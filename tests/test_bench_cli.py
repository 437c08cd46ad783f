"""``fastloss bench``: runs on every loss, writes complete JSON and a plot, verifies results
before timing, and rejects bad options with one line and exit status 2.

Every run here uses a tiny shape and one or two samples, so the whole module takes seconds.
"""

from __future__ import annotations

import importlib.machinery
import io
import json
import sys
import types

import numpy as np
import pytest

import fastloss
import fastloss.backends as backends
from fastloss.bench import main
from fastloss.bench.cases import LOSSES
from fastloss.bench.peers import PEERS

TINY = ["--shape", "8,5", "--repeat", "1"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("loss", list(LOSSES))
def test_runs_every_loss_on_every_backend_with_a_tiny_shape(capsys, loss):
    code, out, err = run(capsys, "--loss", loss, *TINY)
    assert code == 0, err
    assert LOSSES[loss].title in out
    for method in ["floor", "numpy", *(f"fastloss {b}" for b in fastloss.available_backends())]:
        assert f" {method} " in out
    assert "MISMATCH" not in out and "ERROR" not in out


def test_console_script_dispatches_to_bench(capsys):
    from fastloss.cli import main as cli_main

    assert cli_main(["bench", "--loss", "mse", *TINY]) == 0
    assert "MSE" in capsys.readouterr().out


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "--compare" in out and "floor" in out


def test_json_output_is_valid_and_complete(capsys, tmp_path):
    path = tmp_path / "bench.json"
    code, out, err = run(capsys, "--loss", "huber,sparse_cce", "--dtype", "float32,float64",
                         "--shape", "16,7", "--repeat", "2", "--json", str(path))
    assert code == 0, err
    assert str(path) in out
    doc = json.loads(path.read_text())
    assert doc["schema"] == "fastloss-bench/1"
    assert doc["command"].startswith("fastloss bench --loss huber,sparse_cce")
    machine = doc["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["usable_cores"] >= 1
    versions = doc["versions"]
    assert versions["fastloss"] == fastloss.__version__ and versions["numpy"] == np.__version__
    assert {"numba", "torch", "jax", "scikit-learn"} <= set(versions)
    assert doc["config"]["shape"] == [16, 7] and doc["config"]["mode"] == "value_and_grad"
    assert doc["backends_available"] == list(fastloss.available_backends())

    methods = ["floor", "numpy", *(f"fastloss {b}" for b in fastloss.available_backends())]
    got = {(r["loss"], r["dtype"], r["method"]): r for r in doc["results"]}
    assert set(got) == {(loss, dtype, method) for loss in ("huber", "sparse_cce")
                        for dtype in ("float32", "float64") for method in methods}
    for (loss, dtype, method), r in got.items():
        assert r["status"] == "ok" and r["verified"] is True, r
        assert len(r["times_s"]) == r["samples"]
        # --repeat 2: two samples (the floor pools the samples of losses moving the same bytes)
        assert r["samples"] == 2 or (method == "floor" and r["samples"] % 2 == 0)
        assert 0 < r["min_s"] <= r["median_s"]
        assert r["gb_per_s"] > 0 and r["x_floor"] > 0 and r["vs_numpy"] > 0
        itemsize = np.dtype(dtype).itemsize
        pred = 16 * 7 * itemsize
        target = pred if loss == "huber" else 16 * 8  # int64 labels
        assert r["bytes_moved"] == pred + target + pred
    floor = got[("huber", "float32", "floor")]
    assert floor["x_floor"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--loss", "nope"],
        ["--loss", "mse,nope"],
        ["--backend", "nope"],
        ["--dtype", "float16"],
        ["--shape", "0,3"],
        ["--shape", "abc"],
        ["--shape", "-4,3"],
        ["--shape", "100"],  # cross-entropy needs a class axis
        ["--shape", "1000000,1000000"],  # more memory than the machine has
        ["--compare", "tensorflow"],
        ["--threads", "0"],
        ["--threads", "two"],
        ["--repeat", "0"],
        ["--inplace", "--value-only"],
        ["--bogus"],
        ["--json", "/nonexistent-folder/out.json"],
    ],
)
def test_bad_options_exit_2_with_one_line_on_stderr(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("fastloss bench: error: ")


def test_unknown_names_are_listed_in_the_error(capsys):
    _, _, err = run(capsys, "--loss", "nope")
    assert all(name in err for name in LOSSES)
    _, _, err = run(capsys, "--backend", "nope")
    assert all(name in err for name in backends.BACKEND_NAMES)


@pytest.mark.parametrize(
    "name", [b for b in backends.BACKEND_NAMES if b not in fastloss.available_backends()] or ["-"]
)
def test_unavailable_backend_exits_2(capsys, name):
    if name == "-":
        pytest.skip("every backend is available here")
    code, _, err = run(capsys, "--backend", name, *TINY)
    assert code == 2 and "not available" in err


def test_floors_moving_the_same_bytes_are_pooled(capsys, tmp_path):
    path = tmp_path / "f.json"
    code, _, err = run(capsys, "--loss", "mse,mae,sparse_cce", "--json", str(path), *TINY)
    assert code == 0, err
    floors = {r["loss"]: r for r in json.loads(path.read_text())["results"]
              if r["method"] == "floor"}
    assert floors["mse"]["times_s"] == floors["mae"]["times_s"]
    assert len(floors["mse"]["times_s"]) == 2 and len(floors["sparse_cce"]["times_s"]) == 1


def test_elementwise_losses_accept_a_1d_shape(capsys):
    code, out, err = run(capsys, "--loss", "mse,bce", "--shape", "100", "--repeat", "1")
    assert code == 0, err
    assert "shape 100 " in out


def test_value_only_mode_uses_the_sum_floor(capsys, tmp_path):
    path = tmp_path / "v.json"
    code, out, err = run(capsys, "--loss", "bce", "--value-only", "--json", str(path), *TINY)
    assert code == 0, err
    assert "value only" in out and "np.sum" in out
    results = json.loads(path.read_text())["results"]
    assert {r["mode"] for r in results} == {"value"}
    assert all(r["bytes_moved"] == 2 * 8 * 5 * 4 for r in results)


def test_inplace_mode(capsys):
    code, out, err = run(capsys, "--loss", "cce", "--inplace", *TINY)
    assert code == 0, err
    assert "in place" in out


def test_missing_peer_is_skipped_with_a_message(capsys, monkeypatch):
    for peer in PEERS.values():
        monkeypatch.setattr(peer, "missing_reason", lambda self: f"{self.name} is not installed")
    code, out, err = run(capsys, "--loss", "mse", "--compare", "all", *TINY)
    assert code == 0
    for name in PEERS:
        assert f"fastloss bench: {name} is not installed; skipping it" in err
        assert f"vs {name}" not in out


def test_installed_torch_is_checked_and_compared(capsys):
    pytest.importorskip("torch")
    code, out, err = run(capsys, "--loss", "sparse_cce", "--compare", "torch", *TINY)
    assert code == 0, err
    assert "vs torch" in out
    row = next(line for line in out.splitlines() if " torch " in line)
    assert "skipped" not in row


def test_progress_bar_only_when_stderr_is_a_terminal(capsys, monkeypatch):
    _, _, err = run(capsys, "--loss", "mse", *TINY)
    assert err == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--loss", "mse", *TINY]) == 0
    assert "\r[" in terminal.getvalue() and "mse · numpy" in terminal.getvalue()


# ----------------------------------------------------------------- any set of backends


def _register_fake_backend(monkeypatch, name: str, value_factor: float) -> None:
    """A backend that delegates to the NumPy one and multiplies its loss sums by
    ``value_factor`` (1: a correct backend; else a buggy one)."""
    numpy_backend = backends.get_backend("numpy")
    module = types.ModuleType(f"fastloss_test_backend_{name}")
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    module.name = name
    module.elementwise = lambda job: value_factor * numpy_backend.elementwise(job)
    module.cross_entropy = lambda job: value_factor * numpy_backend.cross_entropy(job)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends._REGISTRY, name, (module.__name__, "numpy"))
    monkeypatch.setattr(backends, "BACKEND_NAMES", tuple(backends._REGISTRY))
    monkeypatch.setattr(backends, "_available", None)
    monkeypatch.delitem(backends._loaded, name, raising=False)


def test_new_backends_join_the_table(capsys, monkeypatch):
    _register_fake_backend(monkeypatch, "extra", 1.0)
    assert "extra" in fastloss.available_backends()
    code, out, err = run(capsys, "--loss", "huber", *TINY)
    assert code == 0, err
    assert " fastloss extra " in out


def test_a_backend_that_disagrees_is_reported_not_timed(capsys, monkeypatch, tmp_path):
    _register_fake_backend(monkeypatch, "broken", 1.01)
    path = tmp_path / "b.json"
    code, out, err = run(capsys, "--loss", "mse", "--json", str(path), *TINY)
    assert code == 1
    assert "MISMATCH" in out
    assert "fastloss broken on mse (float32): mismatch" in err
    broken = next(r for r in json.loads(path.read_text())["results"]
                  if r["method"] == "fastloss broken")
    assert broken["status"] == "mismatch" and broken["verified"] is False
    assert "median_s" not in broken


# ----------------------------------------------------------------------------- plot


def test_plot_writes_a_png_with_size_and_thread_sweeps(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png, js = tmp_path / "bench.png", tmp_path / "bench.json"
    code, out, err = run(capsys, "--loss", "mse,cce", "--shape", "300,10", "--repeat", "1",
                         "--threads", "2", "--plot", str(png), "--json", str(js))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(js.read_text())
    assert sorted({r["shape"][0] for r in doc["size_sweep"]}) == [64, 256]
    threaded = [b for b in fastloss.available_backends() if b != "numpy"]
    assert {r["method"] for r in doc["thread_scaling"]} == {f"fastloss {b}" for b in threaded}
    assert all(r["threads"] == 1 for r in doc["thread_scaling"])


def test_plot_without_matplotlib_exits_2(capsys, monkeypatch, tmp_path):
    import fastloss.bench.plot as plot

    monkeypatch.setattr(plot, "plot_available", lambda: False)
    code, out, err = run(capsys, "--plot", str(tmp_path / "x.png"), *TINY)
    assert code == 2 and "matplotlib" in err and out == ""
