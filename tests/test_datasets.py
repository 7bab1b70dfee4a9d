"""Tests for the packaged data sets (lmm_sparse.datasets)."""

import gzip
from pathlib import Path

import pandas as pd
import pytest

from lmm_sparse import datasets

DATA_DIR = Path(datasets.__file__).parent / "data"

EXPECTED = {
    "sleepstudy": (180, ["Reaction", "Days", "Subject"]),
    "dietox": (861, ["Pig", "Evit", "Cu", "Litter", "Start", "Weight", "Feed", "Time"]),
    "Penicillin": (144, ["diameter", "plate", "sample"]),
    "Pastes": (60, ["strength", "batch", "cask", "sample"]),
    "Dyestuff": (30, ["Batch", "Yield"]),
    "Dyestuff2": (30, ["Batch", "Yield"]),
    "InstEval": (73421, ["s", "d", "studage", "lectage", "service", "dept", "y"]),
    "ergoStool": (36, ["effort", "Type", "Subject"]),
    "Machines": (54, ["Worker", "Machine", "score"]),
    "kb07": (1789, ["subj", "item", "spkr", "prec", "load", "rt_trunc", "rt_raw"]),
}


def test_list_returns_canonical_names():
    names = datasets.list()
    assert sorted(names) == sorted(EXPECTED)
    assert datasets.list_datasets() == names
    # a fresh list each call: callers may modify it
    names.append("x")
    assert "x" not in datasets.list()


def test_every_listed_name_has_a_data_file():
    for name in datasets.list():
        assert (DATA_DIR / f"{name}.csv.gz").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_shape_and_columns(name):
    nrows, columns = EXPECTED[name]
    df = datasets.load(name)
    assert isinstance(df, pd.DataFrame)
    assert df.shape == (nrows, len(columns))
    assert list(df.columns) == columns


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_row_count_matches_csv_file(name):
    with gzip.open(DATA_DIR / f"{name}.csv.gz", "rt", encoding="utf-8") as fh:
        nlines = sum(1 for _ in fh)
    assert len(datasets.load(name)) == nlines - 1  # header line


def test_gzip_files_are_reproducible():
    # compressed with `gzip -n`: no file name and no time stamp in the header
    for name in datasets.list():
        header = (DATA_DIR / f"{name}.csv.gz").read_bytes()[:10]
        assert header[3] & 0x08 == 0  # FNAME flag unset
        assert header[4:8] == b"\x00\x00\x00\x00"  # MTIME zero


def test_no_conversions():
    sleep = datasets.load("sleepstudy")
    assert pd.api.types.is_integer_dtype(sleep["Subject"])
    assert pd.api.types.is_float_dtype(sleep["Reaction"])
    kb07 = datasets.load("kb07")
    assert pd.api.types.is_string_dtype(kb07["subj"])
    assert not isinstance(kb07["subj"].dtype, pd.CategoricalDtype)
    assert kb07["subj"].nunique() == 56
    assert kb07["item"].nunique() == 32
    dietox = datasets.load("dietox")
    assert dietox["Feed"].isna().sum() == 72  # NA in the CSV is a missing value
    assert dietox["Pig"].nunique() == 72


def test_known_values():
    sleep = datasets.load("sleepstudy")
    assert sleep["Days"].tolist()[:10] == list(range(10))
    assert sleep["Subject"].nunique() == 18
    assert sleep["Reaction"].mean() == pytest.approx(298.50789, abs=1e-4)
    inst = datasets.load("InstEval")
    assert inst["y"].between(1, 5).all()
    assert inst["s"].nunique() == 2972
    assert inst["d"].nunique() == 1128


@pytest.mark.parametrize("spelling", ["sleepstudy", "SLEEPSTUDY", "SleepStudy", " sleepstudy "])
def test_names_are_case_insensitive(spelling):
    pd.testing.assert_frame_equal(datasets.load(spelling), datasets.load("sleepstudy"))
    assert datasets.describe(spelling) == datasets.describe("sleepstudy")


def test_case_insensitive_mixed_case_names():
    assert datasets.load("insteval").shape[0] == 73421
    assert datasets.load("PENICILLIN").shape[0] == 144
    assert datasets.load("dyestuff2").equals(datasets.load("Dyestuff2"))
    assert not datasets.load("dyestuff").equals(datasets.load("dyestuff2"))


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError) as excinfo:
        datasets.load("no_such_data")
    message = str(excinfo.value)
    assert "no_such_data" in message
    for name in EXPECTED:
        assert name in message
    with pytest.raises(ValueError, match="no_such_data"):
        datasets.describe("no_such_data")


def test_data_sets_not_shipped_are_unknown():
    # the large psycholinguistic sets live in tests/data, not in the package
    with pytest.raises(ValueError):
        datasets.load("kwdyz11")


def test_loads_are_independent():
    first = datasets.load("sleepstudy")
    second = datasets.load("sleepstudy")
    assert first is not second
    original = second["Reaction"].iloc[0]
    first.loc[0, "Reaction"] = -1.0
    first["extra"] = 1
    assert second["Reaction"].iloc[0] == original
    third = datasets.load("sleepstudy")
    assert third["Reaction"].iloc[0] == original
    assert "extra" not in third.columns
    assert len(third) == 180


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_describe_mentions_name_and_citation(name):
    text = datasets.describe(name)
    assert isinstance(text, str)
    assert name in text
    assert str(EXPECTED[name][0]) in text  # row count


def test_describe_citations():
    assert "Bates" in datasets.describe("sleepstudy")
    assert "Journal of Statistical Software 67(1)" in datasets.describe("Penicillin")
    assert "Pinheiro" in datasets.describe("Machines")
    assert "Lauridsen" in datasets.describe("dietox")
    assert "geepack" in datasets.describe("dietox")
    assert "Journal of Memory and Language 56" in datasets.describe("kb07")
    assert "MixedModels.jl" in datasets.describe("kb07")
    assert "ETH Zurich" in datasets.describe("InstEval")


def test_readme_lists_every_data_set():
    readme = (Path(datasets.__file__).parent / "README.md").read_text(encoding="utf-8")
    for name in datasets.list():
        assert f"| {name} |" in readme
