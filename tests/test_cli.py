"""The lmm-sparse command: output, files written, errors and exit codes.

Most tests run :func:`lmm_sparse.cli.main` in-process; a few run the real command through
``python -m lmm_sparse.cli`` / ``python -m lmm_sparse`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmm_sparse
from lmm_sparse import datasets
from lmm_sparse.cli import main, read_table
from lmm_sparse.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_files(tmp_path_factory):
    """sleepstudy as CSV and parquet, and the pandas fit of the data the files hold."""
    folder = tmp_path_factory.mktemp("data")
    df = datasets.load("sleepstudy")
    csv, parquet = folder / "sleep.csv", folder / "sleep.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return {"csv": csv, "parquet": parquet, "fit": lmm_sparse.lmer(SLEEP, pd.read_csv(csv))}


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _assert_clean_error(status, out, err, pattern):
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmm-sparse: error: "), err
    assert pattern in lines[0], err


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_fit_prints_the_summary(kind, sleep_files, capsys):
    status, out, err = run(capsys, "fit", SLEEP, sleep_files[kind])
    assert status == 0 and err == ""
    assert out == sleep_files["fit"].summary() + "\n"
    assert "REML criterion at convergence: 1743.6" in out


def test_ml_fit(sleep_files, capsys):
    status, out, _ = run(capsys, "fit", SLEEP, sleep_files["csv"], "--ml")
    assert status == 0
    ml = lmm_sparse.lmer(SLEEP, pd.read_csv(sleep_files["csv"]), reml=False)
    assert out == ml.summary() + "\n"
    assert out.startswith("Linear mixed model fit by maximum likelihood")


def test_json_file_holds_the_fit(sleep_files, tmp_path, capsys):
    target = tmp_path / "fit.json"
    status, out, _ = run(capsys, "fit", SLEEP, sleep_files["parquet"], "--ml", "--json", target)
    assert status == 0 and out.startswith("Linear mixed model fit by maximum likelihood")

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    d = json.loads(target.read_text("utf-8"), parse_constant=no_constants)
    assert d["formula"] == SLEEP and d["reml"] is False and d["nobs"] == 180
    ml = lmm_sparse.lmer(SLEEP, datasets.load("sleepstudy"), reml=False)
    back = lmm_sparse.LmerResult.from_dict(d)
    pd.testing.assert_series_equal(back.fixef, ml.fixef, check_exact=True)
    np.testing.assert_array_equal(back.theta, ml.theta)
    assert back.objective == ml.objective
    assert back.summary() + "\n" == out


def test_tidy_csv_file(sleep_files, tmp_path, capsys):
    target = tmp_path / "tidy.csv"
    status, out, _ = run(capsys, "fit", SLEEP, sleep_files["csv"], "--tidy", target,
                         "--conf-int", "wald")
    assert status == 0 and out == sleep_files["fit"].summary() + "\n"
    written = pd.read_csv(target)
    expected = sleep_files["fit"].tidy(conf_int=True)
    assert list(written.columns) == list(expected.columns)
    assert list(written["term"]) == list(expected["term"])
    assert written["group"].isna().tolist() == expected["group"].isna().tolist()
    for col in ["estimate", "std.error", "df", "p.value", "conf.low", "conf.high"]:
        np.testing.assert_allclose(written[col], expected[col], rtol=1e-15, err_msg=col)


def test_tidy_on_stdout_with_kenward_roger(sleep_files, capsys):
    status, out, _ = run(capsys, "fit", SLEEP, sleep_files["csv"], "--quiet", "--tidy",
                         "--ddf", "kenward-roger")
    assert status == 0
    assert "Linear mixed model" not in out  # --quiet
    fit = sleep_files["fit"]
    table = fit.coef_table(ddf="kenward-roger")
    assert "Fixed-effect tests (kenward-roger df):" in out
    assert table.to_string() in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["effect", "group",
                                                                          "term"])
    rows = [line.split() for line in lines[header + 1:]]
    assert [r[2] for r in rows] == list(fit.tidy()["term"])
    assert rows[0][1] == "NA" and rows[-1][1] == "Residual"
    assert float(rows[0][6]) == pytest.approx(table["df"].iloc[0], rel=1e-6)


def test_help_shows_examples(capsys):
    for argv in (["--help"], ["fit", "--help"]):
        status, out, _ = run(capsys, *argv)
        assert status == 0
        assert "examples:" in out and 'lmm-sparse fit "Reaction ~ Days' in out
        assert "lmm_sparse[parquet]" in out


def test_singular_fit_warning_goes_to_stderr(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "noise.csv"
    pd.DataFrame({"y": rng.normal(size=60), "g": np.repeat(np.arange(6), 10)}).to_csv(
        path, index=False)
    status, out, err = run(capsys, "fit", "y ~ 1 + (1 | g)", path)
    assert status == 0 and out.startswith("Linear mixed model fit by REML")
    assert err.startswith("lmm-sparse: warning: boundary (singular) fit")


def test_tsv_and_compressed_csv(tmp_path, sleep_files, capsys):
    df = datasets.load("sleepstudy")
    tsv, gz = tmp_path / "sleep.tsv", tmp_path / "sleep.csv.gz"
    df.to_csv(tsv, sep="\t", index=False)
    df.to_csv(gz, index=False)
    for path in (tsv, gz):
        pd.testing.assert_frame_equal(read_table(path), df)
        status, out, _ = run(capsys, "fit", SLEEP, path)
        assert status == 0 and out == sleep_files["fit"].summary() + "\n"


# --------------------------------------------------------------------------- errors


def test_bad_formula(sleep_files, capsys):
    _assert_clean_error(*run(capsys, "fit", "Reaction ~ Days + (Days | Subject",
                             sleep_files["csv"]), "unbalanced parentheses")


def test_unknown_column(sleep_files, capsys):
    _assert_clean_error(*run(capsys, "fit", "Reaction ~ Dayz + (Days | Subject)",
                             sleep_files["parquet"]), "'Dayz'")


def test_missing_file(tmp_path, capsys):
    _assert_clean_error(*run(capsys, "fit", SLEEP, tmp_path / "nope.csv"), "not found")


def test_unknown_format(tmp_path, capsys):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    _assert_clean_error(*run(capsys, "fit", SLEEP, path), "cannot tell the format")


def test_damaged_parquet_and_binary_csv(tmp_path, capsys):
    bad_parquet, bad_csv = tmp_path / "bad.parquet", tmp_path / "bad.csv"
    bad_parquet.write_text("Reaction,Days\n1,2\n")
    bad_csv.write_bytes(b"\xff\xfe\x00\x01\x80\x81")
    _assert_clean_error(*run(capsys, "fit", SLEEP, bad_parquet), "cannot read")
    _assert_clean_error(*run(capsys, "fit", SLEEP, bad_csv), "cannot read")


def test_parquet_without_pyarrow_says_what_to_install(sleep_files, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    _assert_clean_error(*run(capsys, "fit", SLEEP, sleep_files["parquet"]),
                        "pip install 'lmm_sparse[parquet]'")
    with pytest.raises(DataError, match="needs pyarrow"):
        read_table(sleep_files["parquet"])


def test_conf_int_needs_tidy(sleep_files, capsys):
    _assert_clean_error(*run(capsys, "fit", SLEEP, sleep_files["csv"], "--conf-int", "wald"),
                        "--tidy")


def test_level_of_the_intervals(sleep_files, tmp_path, capsys):
    target = tmp_path / "tidy90.csv"
    status, _, _ = run(capsys, "fit", SLEEP, sleep_files["csv"], "--quiet", "--tidy", target,
                       "--conf-int", "wald", "--level", "0.9")
    assert status == 0
    written = pd.read_csv(target).set_index("term")
    expected = sleep_files["fit"].confint("wald", 0.9)
    for term in ["(Intercept)", "Days"]:
        np.testing.assert_allclose(written.loc[term, ["conf.low", "conf.high"]].to_numpy(float),
                                   expected.loc[term].to_numpy(), rtol=1e-15)
    _assert_clean_error(*run(capsys, "fit", SLEEP, sleep_files["csv"], "--level", "0.9"),
                        "--conf-int")
    _assert_clean_error(*run(capsys, "fit", SLEEP, sleep_files["csv"], "--tidy", "--conf-int",
                             "wald", "--level", "1.5"), "level")


def test_usage_errors_exit_with_2(sleep_files, capsys):
    status, out, err = run(capsys, "fit", SLEEP, sleep_files["csv"], "--ddf", "containment")
    assert status == 2 and out == "" and "invalid choice" in err
    status, _, err = run(capsys, "fit", SLEEP)
    assert status == 2 and "DATA" in err
    status, _, err = run(capsys)
    assert status == 2 and "COMMAND" in err


def test_unwritable_json_target(sleep_files, tmp_path, capsys):
    status, out, err = run(capsys, "fit", SLEEP, sleep_files["csv"], "--json",
                           tmp_path / "missing_dir" / "fit.json")
    assert status == 1 and "cannot write the JSON file" in err and "Traceback" not in err


# --------------------------------------------------------------------------- subprocess


def _subprocess(*argv, module="lmm_sparse.cli"):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_real_command_writes_summary_and_json(sleep_files, tmp_path):
    target = tmp_path / "fit.json"
    done = _subprocess("fit", SLEEP, sleep_files["csv"], "--json", target)
    assert done.returncode == 0, done.stderr
    assert done.stdout == sleep_files["fit"].summary() + "\n"
    back = lmm_sparse.LmerResult.from_dict(json.loads(target.read_text("utf-8")))
    pd.testing.assert_series_equal(back.fixef, sleep_files["fit"].fixef, check_exact=True)


def test_real_command_error_has_no_traceback(tmp_path):
    done = _subprocess("fit", SLEEP, tmp_path / "absent.parquet", module="lmm_sparse")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("lmm-sparse: error: data file") and "Traceback" not in \
        done.stderr


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["scripts"]["lmm-sparse"] == "lmm_sparse.cli:main"
    extras = project["optional-dependencies"]
    assert "pyarrow" in extras["parquet"]
    assert {"polars", "pyarrow"} <= set(extras["test"])
