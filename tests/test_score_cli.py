"""``fastloss score``: files of every format give the in-memory value; bad input gives one
line, exit status 2 and no file; memory stays bounded by the batch, not the data."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastloss
from fastloss.scoring import cli
from fastloss.scoring.readers import open_source, rebatch

RTOL = 1e-12
# Subprocesses import the same fastloss as this test process (installed or source tree).
# Subprocesses run where the imported fastloss lives, so that they import the same package
# (from a source checkout, `python -m`/`-c` would otherwise put the uncompiled tree first).
_CWD = os.path.dirname(os.path.dirname(fastloss.__file__))
_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastloss.__file__)), os.environ.get("PYTHONPATH", "")]
    ),
}


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *args: str) -> dict:
    rc, out, err = run(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def sparse_data(tmp_path, rng):
    n, c = 5003, 7
    p = rng.normal(size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    y[rng.random(n) < 0.1] = -100
    w = rng.random(n)
    for name, arr in (("p", p), ("y", y), ("w", w)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path, y, p, w


SPARSE_OPTS = [
    "--opt",
    "from_logits=true",
    "--opt",
    "ignore_index=-100",
    "--opt",
    "class_weight=[1,2,0.5,1,1,3,1]",
    "--opt",
    "label_smoothing=0.1",
]


def _sparse_loss(**kw):
    return fastloss.SparseCategoricalCrossEntropy(
        from_logits=True,
        ignore_index=-100,
        class_weight=[1, 2, 0.5, 1, 1, 3, 1],
        label_smoothing=0.1,
        **kw,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "sum_over_batch_size"])
def test_npy_matches_in_memory(capsys, sparse_data, reduction):
    d, y, p, w = sparse_data
    res = run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        d / "y.npy",
        "--y-pred",
        d / "p.npy",
        "--sample-weight",
        d / "w.npy",
        *SPARSE_OPTS,
        "--opt",
        f"reduction={reduction}",
        "--batch-rows",
        611,
    )
    loss = _sparse_loss(reduction=reduction)
    np.testing.assert_allclose(res["value"], loss(y, p, w), rtol=RTOL)
    acc = loss.accumulator()
    acc.update(y, p, w)
    np.testing.assert_allclose(res["total"], acc.total, rtol=RTOL)
    np.testing.assert_allclose(res["weight_sum"], acc.weight_sum, rtol=RTOL)
    assert res["count"] == acc.count and res["rows"] == len(y)
    assert (
        res["seconds"] > 0
        and res["rows_per_second"] > 0
        and res["bytes"] == y.nbytes + p.nbytes + w.nbytes
    )
    assert res["batch_rows"] == 611 and res["reduction"] == reduction


def test_text_report(capsys, sparse_data):
    d, y, p, w = sparse_data
    rc, out, err = run(
        capsys, "sparse_cce", "--y-true", d / "y.npy", "--y-pred", d / "p.npy", *SPARSE_OPTS
    )
    assert rc == 0 and err == ""
    value = float(out.split("value", 1)[1].split()[0])
    np.testing.assert_allclose(value, _sparse_loss()(y, p), rtol=RTOL)
    for word in ("total", "weight_sum", "count", "time", "throughput", "rows/s"):
        assert word in out


def test_elementwise_row_weights_and_per_sample(capsys, tmp_path, rng):
    t = rng.normal(size=(1000, 4)).astype(np.float32)
    p = rng.normal(size=(1000, 4)).astype(np.float32)
    w = rng.random(1000)
    for name, arr in (("t", t), ("p", p), ("w", w)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = tmp_path / "losses.npy"
    res = run_json(
        capsys,
        "huber",
        "--y-true",
        tmp_path / "t.npy",
        "--y-pred",
        tmp_path / "p.npy",
        "--sample-weight",
        tmp_path / "w.npy",
        "--opt",
        "delta=0.5",
        "--per-sample",
        out,
        "--batch-rows",
        300,
    )
    # A 1-D weight file holds one weight per row.
    np.testing.assert_allclose(res["value"], fastloss.huber(t, p, w[:, None], delta=0.5), rtol=RTOL)
    got = np.load(out)
    want = fastloss.huber(t, p, w[:, None], delta=0.5, reduction="none")
    assert got.dtype == np.float32 and got.shape == (1000, 4)
    np.testing.assert_array_equal(got, want)


def test_reduction_none_needs_per_sample(capsys, sparse_data):
    d, y, p, w = sparse_data
    rc, out, err = run(
        capsys,
        "sparse_cce",
        "--y-true",
        d / "y.npy",
        "--y-pred",
        d / "p.npy",
        "--opt",
        "reduction=none",
    )
    assert rc == 2 and "--per-sample" in err
    res = run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        d / "y.npy",
        "--y-pred",
        d / "p.npy",
        *SPARSE_OPTS,
        "--opt",
        "reduction=none",
        "--per-sample",
        d / "o.npy",
        "--batch-rows",
        1000,
    )
    assert res["value"] is None
    np.testing.assert_array_equal(np.load(d / "o.npy"), _sparse_loss(reduction="none")(y, p))
    np.testing.assert_allclose(res["total"], _sparse_loss(reduction="sum")(y, p), rtol=RTOL)


def test_npz_stored_and_compressed(capsys, sparse_data):
    d, y, p, w = sparse_data
    np.savez(d / "s.npz", y=y, p=p)
    np.savez_compressed(d / "c.npz", y=y, p=p, w=w)
    np.savez(d / "one.npz", p)
    want = _sparse_loss()(y, p, w)
    for yt, yp in ((f"{d}/s.npz:y", f"{d}/c.npz:p"), (f"{d}/c.npz:y", f"{d}/one.npz")):
        res = run_json(
            capsys,
            "sparse_cce",
            "--y-true",
            yt,
            "--y-pred",
            yp,
            "--sample-weight",
            f"{d}/c.npz:w",
            *SPARSE_OPTS,
            "--batch-rows",
            777,
        )
        np.testing.assert_allclose(res["value"], want, rtol=RTOL)


def test_fortran_and_big_endian_npy(capsys, sparse_data):
    d, y, p, w = sparse_data
    np.save(d / "pf.npy", np.asfortranarray(p))
    np.save(d / "yb.npy", y.astype(">i4"))
    np.save(d / "pb.npy", p.astype(">f4"))
    want = _sparse_loss()(y, p)
    for yt, yp in (("y.npy", "pf.npy"), ("yb.npy", "pb.npy")):
        res = run_json(
            capsys,
            "sparse_cce",
            "--y-true",
            d / yt,
            "--y-pred",
            d / yp,
            *SPARSE_OPTS,
            "--batch-rows",
            999,
        )
        np.testing.assert_allclose(res["value"], want, rtol=RTOL)


@pytest.fixture
def table_data(tmp_path, rng):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pcsv = pytest.importorskip("pyarrow.csv")
    n, c = 2500, 3
    p = rng.normal(size=(n, c))
    y = rng.integers(0, c, n)
    w = rng.random(n)
    flat = pa.array(p.astype(np.float32).reshape(-1))
    table = pa.table(
        {
            "y": y,
            "w": w,
            "pf": pa.FixedSizeListArray.from_arrays(flat, c),
            "pl": pa.array([row.tolist() for row in p.astype(np.float32)]),
            **{f"p{j}": p[:, j] for j in range(c)},
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    with pa.ipc.new_file(tmp_path / "t.arrow", table.schema) as wr:
        for b in table.to_batches(max_chunksize=410):
            wr.write_batch(b)
    with pa.ipc.new_stream(tmp_path / "t.arrows", table.schema) as wr:
        for b in table.to_batches(max_chunksize=333):
            wr.write_batch(b)
    pcsv.write_csv(table.select(["y", "w", "p0", "p1", "p2"]), tmp_path / "t.csv")
    np.save(tmp_path / "p32.npy", p.astype(np.float32))
    return tmp_path, y, p, w


@pytest.mark.parametrize(
    "files",
    [
        ("t.parquet:y", "t.parquet:pf", "t.parquet:w"),
        ("t.arrow:y", "t.parquet:pl", "t.csv:w"),
        ("t.arrows:y", "t.arrow:pf", "t.arrows:w"),
        ("t.csv:y", "p32.npy", "t.parquet:w"),
        ("t.csv:y", "t.csv:p0,p1,p2", "t.csv:w"),
    ],
)
def test_tabular_formats_and_mixes(capsys, table_data, files):
    d, y, p, w = table_data
    yt, yp, sw = (f"{d}/{f}" for f in files)
    res = run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        yt,
        "--y-pred",
        yp,
        "--sample-weight",
        sw,
        "--opt",
        "from_logits=true",
        "--batch-rows",
        256,
    )
    # The dtype each file holds: float32 in .npy and fixed-size lists; float32 values stored
    # as double in the variable-length lists (built from Python floats); float64 in the CSV.
    pred = p.astype(np.float32)
    if "p0" in yp:
        pred = p
    elif ":pl" in yp:
        pred = pred.astype(np.float64)
    np.testing.assert_allclose(
        res["value"],
        fastloss.sparse_categorical_cross_entropy(y, pred, w, from_logits=True),
        rtol=RTOL,
    )
    assert res["rows"] == len(y)


def test_csv_whole_numbers_are_floats_except_labels(capsys, tmp_path):
    pytest.importorskip("pyarrow")
    n = 70_000  # more than the first block that CSV types are inferred from
    t = np.zeros(n)
    t[-1] = 0.5
    p = np.ones(n)
    labels = np.arange(n) % 2
    lines = ["y,t,p,l"] + [
        f"{a:g},{b:g},{c:g},{d}" for a, b, c, d in zip(t, t, p, labels, strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    res = run_json(
        capsys, "mse", "--y-true", f"{tmp_path}/d.csv:t", "--y-pred", f"{tmp_path}/d.csv:p"
    )
    np.testing.assert_allclose(res["value"], fastloss.mse(t, p), rtol=RTOL)
    res = run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        f"{tmp_path}/d.csv:l",
        "--y-pred",
        f"{tmp_path}/d.csv:t,p",
        "--opt",
        "from_logits=true",
    )
    np.testing.assert_allclose(
        res["value"],
        fastloss.sparse_categorical_cross_entropy(labels, np.c_[t, p], from_logits=True),
        rtol=RTOL,
    )


def test_per_sample_parquet_with_unknown_length(capsys, table_data):
    pq = pytest.importorskip("pyarrow.parquet")
    d, y, p, w = table_data
    out = d / "losses.parquet"
    run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        f"{d}/t.csv:y",
        "--y-pred",
        f"{d}/t.csv:p0,p1,p2",
        "--opt",
        "from_logits=true",
        "--per-sample",
        out,
        "--batch-rows",
        500,
    )
    got = pq.read_table(out).column("loss").to_numpy()
    want = fastloss.sparse_categorical_cross_entropy(y, p, from_logits=True, reduction="none")
    np.testing.assert_allclose(got, want, rtol=RTOL)
    out2 = d / "losses.npy"  # .npy whose length is known only at the end
    run_json(
        capsys,
        "sparse_cce",
        "--y-true",
        f"{d}/t.csv:y",
        "--y-pred",
        f"{d}/t.csv:p0,p1,p2",
        "--opt",
        "from_logits=true",
        "--per-sample",
        out2,
        "--batch-rows",
        500,
    )
    np.testing.assert_allclose(np.load(out2), want, rtol=RTOL)


# --------------------------------------------------------------------------- bad input


def _bad_files(d, rng):
    np.save(d / "short.npy", np.zeros(99, dtype=np.int64))
    np.save(d / "y.npy", rng.integers(0, 3, 100))
    np.save(d / "p.npy", rng.random((100, 3)).astype(np.float32))
    np.save(d / "yf.npy", np.zeros(100, dtype=np.float32))
    np.save(d / "s.npy", np.array(["x"] * 100))
    np.save(d / "late.npy", np.r_[np.zeros(90, dtype=np.int64), [7] * 10])
    raw = (d / "p.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    (d / "garbage.npy").write_bytes(b"not an array at all")
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 broken zip")
    (d / "garbage.parquet").write_bytes(b"PAR1 broken parquet")
    (d / "data.xyz").write_bytes(b"???")


BAD = {
    "missing file": (["--y-true", "{d}/nope.npy"], "no such file"),
    "mismatched lengths": (["--y-true", "{d}/short.npy"], "mismatched lengths"),
    "float labels": (["--y-true", "{d}/yf.npy"], "integer class labels"),
    "string predictions": (["--y-pred", "{d}/s.npy"], "not numeric"),
    "truncated npy": (["--y-pred", "{d}/trunc.npy"], "truncated"),
    "garbage npy": (["--y-pred", "{d}/garbage.npy"], "not a valid .npy"),
    "corrupt npz": (["--y-pred", "{d}/garbage.npz"], "not a valid .npz"),
    "unknown format": (["--y-pred", "{d}/data.xyz"], "unknown format"),
    "unknown option": (["--opt", "bogus=1"], "unknown option 'bogus'"),
    "bad option value": (["--opt", "label_smoothing=3"], "label_smoothing"),
    "malformed option": (["--opt", "from_logits"], "KEY=VALUE"),
    "unknown flag": (["--frobnicate"], "unrecognized arguments"),
    "label out of range late": (
        ["--y-true", "{d}/late.npy", "--batch-rows", "30"],
        "rows 90..99: y_true has label 7 at index (90,)",
    ),
    "bad batch rows": (["--batch-rows", "0"], "--batch-rows"),
    "class axis is the row axis": (["--opt", "axis=0"], "class axis"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(capsys, tmp_path, rng, case):
    _bad_files(tmp_path, rng)
    extra, message = BAD[case]
    args = {"--y-true": f"{tmp_path}/y.npy", "--y-pred": f"{tmp_path}/p.npy"}
    rest = []
    it = iter(extra)
    for a in it:
        if a in args:
            args[a] = next(it).format(d=tmp_path)
        else:
            rest.append(a.format(d=tmp_path))
    out_file = tmp_path / "out" / "losses.npy"
    out_file.parent.mkdir()
    before = sorted(os.listdir(tmp_path))
    rc, out, err = run(
        capsys,
        "sparse_cce",
        "--y-true",
        args["--y-true"],
        "--y-pred",
        args["--y-pred"],
        "--per-sample",
        out_file,
        *rest,
    )
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("fastloss score: error: ")
    assert message in err
    assert os.listdir(out_file.parent) == []  # no output, no temporary file left behind
    assert sorted(os.listdir(tmp_path)) == before


def test_bad_input_keeps_existing_output(capsys, tmp_path, rng):
    _bad_files(tmp_path, rng)
    out = tmp_path / "losses.npy"
    out.write_bytes(b"previous results")
    rc, _, _ = run(
        capsys,
        "sparse_cce",
        "--y-true",
        tmp_path / "late.npy",
        "--y-pred",
        tmp_path / "p.npy",
        "--per-sample",
        out,
        "--batch-rows",
        10,
    )
    assert rc == 2 and out.read_bytes() == b"previous results"
    assert sorted(os.listdir(tmp_path)) == sorted(set(os.listdir(tmp_path)))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuchloss", "--y-true", "{d}/y.npy", "--y-pred", "{d}/p.npy"], "unknown loss"),
        (["mse", "--y-true", "x.npy"], "required"),
        (
            ["mse", "--y-true", "{d}/y.npy", "--y-pred", "{d}/p.npy", "--per-sample", "{d}/o.txt"],
            ".npy or .parquet",
        ),
        (
            [
                "mse",
                "--y-true",
                "{d}/y.npy",
                "--y-pred",
                "{d}/p.npy",
                "--per-sample",
                "{d}/no/o.npy",
            ],
            "does not exist",
        ),
        (["mse", "--y-true", "{d}/y.npy", "--y-pred", "{d}/p.npy"], "same shape"),
        (
            [
                "sparse_cce",
                "--y-true",
                "{d}/y.npy",
                "--y-pred",
                "{d}/p.npy",
                "--per-sample",
                "{d}/p.npy",
            ],
            "input file",
        ),
    ],
)
def test_bad_arguments(capsys, tmp_path, rng, args, message):
    _bad_files(tmp_path, rng)
    rc, out, err = run(capsys, *[a.format(d=tmp_path) for a in args])
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err


def test_tabular_errors(capsys, table_data):
    d, y, p, w = table_data
    for spec, message in (
        (f"{d}/t.parquet", "choose one"),
        (f"{d}/t.parquet:nope", "no column"),
        (f"{d}/t.csv:zz", "no column"),
    ):
        rc, out, err = run(capsys, "sparse_cce", "--y-true", spec, "--y-pred", f"{d}/t.parquet:pf")
        assert rc == 2 and message in err and err.count("\n") == 1
    (d / "bad.parquet").write_bytes(b"PAR1 not really")
    rc, out, err = run(
        capsys, "mse", "--y-true", f"{d}/bad.parquet", "--y-pred", f"{d}/bad.parquet"
    )
    assert rc == 2 and "Parquet" in err


def test_help(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "--per-sample" in out and "--batch-rows" in out


# --------------------------------------------------------------------------- pieces


def test_progress_only_on_a_terminal(tmp_path, sparse_data):
    d, y, p, w = sparse_data

    class Tty(io.StringIO):
        def isatty(self):
            return True

    loss = _sparse_loss()
    for stream, shown in ((io.StringIO(), False), (Tty(), True)):
        progress = cli.Progress(100, stream)
        progress.last = -1.0
        progress.update(50, 1000)
        progress.close()
        assert ("50.0%" in stream.getvalue()) is shown
    tty = Tty()
    cli.score(loss, str(d / "y.npy"), str(d / "p.npy"), batch_rows=10, progress_stream=tty)
    assert "rows/s" in tty.getvalue()


def test_rebatch_makes_exact_batches():
    chunks = [np.arange(a, b) for a, b in ((0, 3), (3, 4), (4, 15), (15, 15), (15, 23))]
    batches = list(rebatch(iter(chunks), 5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(23))


def test_npy_reader_releases_pages(tmp_path):
    """Each batch is a view of the mapping, and it stays valid while in use."""
    a = np.arange(100_000, dtype=np.float64).reshape(-1, 4)
    np.save(tmp_path / "a.npy", a)
    with open_source(str(tmp_path / "a.npy")) as src:
        assert src.n_rows == 25_000 and src.row_shape == (4,)
        got = [np.array(c) for c in src.chunks(3000)]
    np.testing.assert_array_equal(np.concatenate(got), a)


def test_import_does_not_pull_optional_dependencies():
    code = (
        "import sys, fastloss, fastloss.scoring, fastloss.scoring.cli; "
        "bad = [m for m in ('pyarrow', 'dask', 'distributed') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_ENV, cwd=_CWD)


def test_console_script_dispatch(tmp_path, sparse_data):
    d, y, p, w = sparse_data
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastloss.cli",
            "score",
            "sparse_cce",
            "--y-true",
            str(d / "y.npy"),
            "--y-pred",
            str(d / "p.npy"),
            *SPARSE_OPTS,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_ENV, cwd=_CWD,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar: stderr is not a terminal
    np.testing.assert_allclose(json.loads(proc.stdout)["value"], _sparse_loss()(y, p), rtol=RTOL)


# --------------------------------------------------------------------------- memory


def _write_npy(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n,)}
        )
        step = 1 << 22
        for start in range(0, n, step):
            f.write(rng.standard_normal(min(step, n - start), dtype=np.float32).tobytes())


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc/self/status and madvise: Linux"
)
def test_peak_memory_bounded_by_batch_not_data(tmp_path):
    """A scaled-down version of the 4 GiB case: a 2 × 128 MiB float32 pair scored with 1 MiB
    batches must peak far below the data size (its growth over the interpreter's baseline
    is a few batches; without releasing the mapped pages it would be the whole 256 MiB)."""
    n = 32 << 20  # 32 Mi float32 = 128 MiB per file
    _write_npy(tmp_path / "t.npy", n, 1)
    _write_npy(tmp_path / "p.npy", n, 2)
    code = textwrap.dedent(f"""
        import json
        import numpy, fastloss, fastloss.scoring.cli as cli

        def high_water_kib():
            # VmHWM: this process's peak RSS. (Not ru_maxrss, which Linux carries over
            # from the parent through fork and exec.)
            with open("/proc/self/status") as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

        fastloss.mse([0.0], [1.0])  # baseline: everything imported and warmed up
        base = high_water_kib()
        rc = cli.main(["mse", "--y-true", {str(tmp_path / "t.npy")!r}, "--y-pred",
                       {str(tmp_path / "p.npy")!r}, "--batch-rows", str(1 << 18), "--json"])
        peak = high_water_kib()
        print(json.dumps({{"rc": rc, "base_kib": base, "peak_kib": peak}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_ENV,
        cwd=_CWD,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    mem = json.loads(lines[-1])
    report = json.loads(lines[-2])
    assert mem["rc"] == 0 and report["rows"] == n
    growth_mib = (mem["peak_kib"] - mem["base_kib"]) / 1024
    print(f"peak RSS {mem['peak_kib'] / 1024:.0f} MiB, growth {growth_mib:.0f} MiB")
    assert growth_mib < 64, f"RSS grew by {growth_mib:.0f} MiB while scoring 256 MiB"
    assert mem["peak_kib"] / 1024 < 192
