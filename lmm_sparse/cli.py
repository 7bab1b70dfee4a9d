"""The ``lmm-sparse`` command: fit a model to a CSV or Parquet file from the shell.

``lmm-sparse fit "FORMULA" DATA`` prints ``res.summary()``; options add the fixed-effect
tests with a choice of df (``--ddf``), the tidy table on stdout or in a CSV file
(``--tidy``), its confidence intervals (``--conf-int``) and the fit as JSON (``--json``,
:meth:`LmerResult.to_dict`). Errors the user can cause (bad formula, missing file, unknown
column, unreadable format) are one line on stderr and exit status 1; bad options exit
with 2 (argparse's usage errors). :func:`main` runs in-process for tests and embedding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import TextIO

import pandas as pd

from .errors import DataError, LmmSparseError
from .profile.levels import check_level

__all__ = ["main", "read_table", "build_parser"]

PROG = "lmm-sparse"
_DDF_CHOICES = ("satterthwaite", "kenward-roger", "residual", "none")
_PARQUET = (".parquet", ".pq")
_TEXT = {".csv": ",", ".tsv": "\t", ".txt": None}  # None: sniff the separator
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")

_EXAMPLES = """\
examples:
  lmm-sparse fit "Reaction ~ Days + (Days | Subject)" sleepstudy.csv
  lmm-sparse fit "Reaction ~ Days + (Days | Subject)" sleepstudy.parquet --ml
  lmm-sparse fit "y ~ x + (1 | subj) + (1 | item)" data.csv --ddf kenward-roger
  lmm-sparse fit "y ~ x + (1 | g)" data.csv --tidy --conf-int profile
  lmm-sparse fit "y ~ x + (1 | g)" data.csv --tidy estimates.csv --json fit.json

Files: .csv, .tsv or .txt (optionally compressed: .csv.gz, ...) and .parquet (needs
pyarrow: pip install 'lmm_sparse[parquet]'). Grouping columns are always factors; write
C(x) in the formula for a categorical predictor stored as numbers.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``lmm-sparse fit FORMULA DATA [options]``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description="Linear mixed models with lme4's formulas, from the shell.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fit = commands.add_parser(
        "fit", help="fit a linear mixed model and print its summary",
        description="Fit FORMULA to the table in DATA, as lme4's lmer(), and print the "
                    "summary (lme4's summary() layout) on stdout.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("formula", metavar="FORMULA",
                     help='lme4 formula, quoted: "y ~ x + (x | g)"')
    fit.add_argument("data", metavar="DATA", type=Path,
                     help="data file: .csv, .tsv, .txt (also compressed) or .parquet")
    fit.add_argument("--ml", action="store_true",
                     help="maximum likelihood instead of REML (lme4's REML = FALSE)")
    fit.add_argument("--ddf", choices=_DDF_CHOICES, default=None,
                     help="also print the fixed-effect t tests with these df (lmerTest's "
                          "table; 'none': z tests); also the df of --tidy "
                          "(default there: satterthwaite)")
    fit.add_argument("--tidy", nargs="?", const="-", default=None, metavar="FILE",
                     help="the tidy table (one row per parameter, broom.mixed's columns): "
                          "printed after the summary, or written as CSV to FILE")
    fit.add_argument("--conf-int", choices=("wald", "profile", "boot"), default=None,
                     metavar="METHOD",
                     help="add conf.low/conf.high to --tidy: wald, profile or boot")
    fit.add_argument("--level", type=float, default=None,
                     help="confidence level of --conf-int (default 0.95)")
    fit.add_argument("--json", type=Path, default=None, metavar="FILE",
                     help="write the fit as JSON (LmerResult.to_dict) to FILE")
    fit.add_argument("--quiet", action="store_true", help="do not print the summary")
    return parser


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None), lower case: data.csv.gz -> .csv, .gz"""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED:
        return suffixes[-2], suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def _read_parquet(path: Path) -> pd.DataFrame:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"reading {path} needs pyarrow, which is not installed: "
                        "pip install 'lmm_sparse[parquet]' (or pip install pyarrow)")
    return pd.read_parquet(path, engine="pyarrow")


def read_table(path: Path | str) -> pd.DataFrame:
    """The data file as a DataFrame, by its suffix; a DataError names what went wrong."""
    path = Path(path)
    kind, compression = _suffixes(path)
    known = sorted([*_TEXT, *_PARQUET])
    if kind not in _TEXT and kind not in _PARQUET:
        raise DataError(f"cannot tell the format of {path}: its name must end in one of "
                        f"{', '.join(known)} (text tables may be compressed, e.g. .csv.gz)")
    if not path.is_file():
        raise DataError(f"data file {path} not found" if not path.exists()
                        else f"{path} is not a file")
    try:
        if kind in _PARQUET:
            if compression:
                raise DataError(f"{path}: a parquet file is compressed inside; remove "
                                f"{compression}")
            return _read_parquet(path)
        sep = _TEXT[kind]
        return pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")
    except LmmSparseError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path} as {kind[1:]}: {exc}") from None
    except Exception as exc:  # pyarrow's ArrowInvalid and friends on a damaged file
        raise DataError(f"cannot read {path} as {kind[1:]}: {type(exc).__name__}: "
                        f"{exc}") from None


def _write_tidy(table: pd.DataFrame, target: str, out: TextIO) -> None:
    if target == "-":
        table = table.fillna({"group": "NA"})  # None (a fixed effect's group) as R prints it
        with pd.option_context("display.max_rows", None, "display.max_columns", None,
                               "display.width", 200):
            print(table.to_string(index=False, na_rep="NA"), file=out)
        return
    try:
        table.to_csv(target, index=False, na_rep="NA")
    except OSError as exc:
        raise DataError(f"cannot write the tidy table to {target}: {exc}") from None


def _write_json(result, target: Path) -> None:
    text = json.dumps(result.to_dict(), indent=1, allow_nan=False)
    try:
        target.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the JSON file {target}: {exc}") from None


def _fit(args: argparse.Namespace, out: TextIO) -> None:
    from .model import lmer

    if args.conf_int and args.tidy is None:
        raise DataError("--conf-int adds intervals to the tidy table: give --tidy as well")
    if args.level is not None and not args.conf_int:
        raise DataError("--level is the level of --conf-int: give --conf-int as well")
    if args.level is not None:
        check_level(args.level)  # before the fit, not after its summary was printed
    data = read_table(args.data)
    result = lmer(args.formula, data, reml=not args.ml)
    ddf = None if args.ddf == "none" else args.ddf
    if not args.quiet:
        print(result.summary(), file=out)
    if args.ddf is not None:
        table = result.coef_table(ddf=ddf)
        print(f"\nFixed-effect tests ({args.ddf} df):", file=out)
        print(table.to_string(), file=out)
    if args.tidy is not None:
        options = {"ddf": ddf if args.ddf else "satterthwaite"}
        if args.conf_int:
            options.update(conf_int=True, conf_method=args.conf_int,
                           conf_level=0.95 if args.level is None else args.level)
            if args.conf_int != "wald":
                options["progress"] = False
        if args.tidy == "-" and not args.quiet:
            print("", file=out)
        _write_tidy(result.tidy(**options), args.tidy, out)
    if args.json is not None:
        _write_json(result, args.json)


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` without the program name; default sys.argv[1:]).

    Returns the exit status: 0 on success, 1 for an error in the data, formula or model
    (one line on stderr, no traceback), 2 for a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            _fit(args, sys.stdout)
            status = 0
        except LmmSparseError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            status = 130
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
