"""Every ```python block of docs/*.md and README.md, executed.

One test case per page (its id is the page's file name): the page's python blocks run in
order, in one fresh namespace, in a temporary working directory (so an example cannot
leave files in the repository), with matplotlib on its non-interactive Agg backend. A
failing block is reported with its page, the line of its first code line and the
exception; tracebacks point into the Markdown file itself.

A block whose first line starts with ``>>>`` is a doctest: its examples run in the same
namespace and their shown outputs are compared (whitespace-normalized, ``...`` allowed).

Markers are HTML comments, invisible in the rendered page and on GitHub:

* ``<!-- docs-test: slow -->`` anywhere in a page: the page's case is marked ``slow``
  (examples taking more than ~10 s);
* ``<!-- docs-test: no-run REASON -->`` on the line right before a ```python fence: the
  block is only compiled, not run. Only for examples that cannot run here (they need R, a
  cluster, a 1M-row benchmark). ``test_no_run_blocks_are_listed`` reports them as one
  skip naming each page, line and reason, so that they stay visible and few.

Code fences must name a language (``python``, ``text`` for output and formulas, ``bash``
or ``console`` for shell), so that no Python example escapes this test untagged.
"""

from __future__ import annotations

import doctest
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>[\w-]+)\s*(?P<reason>.*?)\s*-->\s*$")
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Block:
    """One fenced code block: its info string, first code line (1-based) and code."""

    info: str
    line: int
    source: str
    no_run: str | None  # the reason given by a no-run marker, None when it runs

    @property
    def is_python(self) -> bool:
        return self.info == "python"

    @property
    def is_doctest(self) -> bool:
        return self.source.lstrip().startswith(">>>")


@dataclass(frozen=True)
class Page:
    path: Path
    blocks: tuple[Block, ...]
    slow: bool
    problems: tuple[str, ...]  # fences and markers that break the rules above

    @property
    def name(self) -> str:
        return self.path.name


def _dedent(line: str, indent: int) -> str:
    """A fenced line without its fence's indentation (CommonMark: at most that many)."""
    stripped = len(line) - len(line.lstrip(" "))
    return line[min(indent, stripped):]


def _orphan(line: int) -> str:
    return f"line {line}: no-run marker not followed by a ```python fence on the next line"


def parse_page(path: Path, text: str | None = None) -> Page:
    """The fenced code blocks and markers of one Markdown page."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    slow = False
    pending_no_run: tuple[int, str] | None = None  # (marker line, reason)
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            if pending_no_run:
                problems.append(_orphan(pending_no_run[0]))
                pending_no_run = None
            if marker["what"] == "slow":
                slow = True
            elif marker["what"] == "no-run" and marker["reason"]:
                pending_no_run = (i + 1, marker["reason"])
            else:
                problems.append(f"line {i + 1}: unknown or incomplete marker {lines[i].strip()!r}"
                                " (docs-test: slow, or docs-test: no-run REASON)")
            i += 1
            continue
        if not fence:
            if pending_no_run:
                problems.append(_orphan(pending_no_run[0]))
                pending_no_run = None
            i += 1
            continue
        indent, opening, info = len(fence["indent"]), fence["fence"], fence["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (closing and not closing["info"].strip() and closing["fence"][0] == opening[0]
                    and len(closing["fence"]) >= len(opening)):
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        else:
            problems.append(f"line {i + 1}: code fence never closed")
        if not info:
            problems.append(f"line {i + 1}: code fence without a language (python, text, "
                            "bash or console)")
        elif info != "python" and re.match(r"(py|python\d?|pycon|ipython)\b", info):
            problems.append(f"line {i + 1}: code fence '{opening}{info}': write "
                            f"'{opening}python' (markers go in an HTML comment before it)")
        no_run = None
        if pending_no_run:
            if info == "python":
                no_run = pending_no_run[1]
            else:
                problems.append(_orphan(pending_no_run[0]))
            pending_no_run = None
        blocks.append(Block(info, i + 2, "\n".join(body) + "\n", no_run))
        i = j + 1
    if pending_no_run:
        problems.append(_orphan(pending_no_run[0]))
    return Page(path, tuple(blocks), slow, tuple(problems))


def _page_params() -> list:
    params = []
    for path in PAGES:
        page = parse_page(path)
        marks = [pytest.mark.slow] if page.slow else []
        params.append(pytest.param(page, id=page.name, marks=marks))
    return params


def _rel(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def _report(page: Page, block: Block, detail: str) -> None:
    rel = _rel(page.path)
    first = block.source.strip().splitlines()[0] if block.source.strip() else ""
    pytest.fail(f"{rel}, block at line {block.line} ({first!r}):\n{detail}", pytrace=False)


def _run_block(page: Page, block: Block, namespace: dict) -> None:
    if block.is_doctest:
        test = doctest.DocTestParser().get_doctest(
            block.source, namespace, f"{page.name}:{block.line}", str(page.path), block.line - 1)
        out: list[str] = []
        runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
        runner.run(test, out=out.append, clear_globs=False)
        if runner.failures:
            _report(page, block, "".join(out))
        return
    # Padding puts each code line at its own line number of the Markdown file.
    code = compile("\n" * (block.line - 1) + block.source, str(page.path), "exec")
    try:
        exec(code, namespace)
    except Exception as exc:  # every failure of an example is reported the same way
        detail = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
    else:
        return
    _report(page, block, detail)  # outside the handler: no chained traceback


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory and matplotlib's Agg backend for one page."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg", force=True)
    yield tmp_path
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.mark.parametrize("page", _page_params())
def test_page_examples(page: Page, sandbox) -> None:
    namespace: dict = {"__name__": "__docs_example__"}
    for block in page.blocks:
        if block.is_python and not block.no_run:
            _run_block(page, block, namespace)


def test_no_run_blocks_are_listed() -> None:
    """Blocks marked no-run still compile; when there are any, they are listed as a skip
    (page, line, reason) in pytest's summary, so that they stay visible and few."""
    listed = []
    for page in map(parse_page, PAGES):
        for block in page.blocks:
            if block.is_python and block.no_run:
                compile(block.source, str(page.path), "exec")
                listed.append(f"{_rel(page.path)}:{block.line} ({block.no_run})")
    if listed:
        pytest.skip(f"{len(listed)} python block(s) not run: " + "; ".join(listed))


def test_code_fences_follow_the_rules() -> None:
    problems = [f"{_rel(page.path)}: {problem}"
                for page in map(parse_page, PAGES) for problem in page.problems]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ the parser itself

SAMPLE = """\
# Title
<!-- docs-test: slow -->

```python
x = 1
```

1. In a list:

   ```python
   y = x + 1
   ```

````text
```python
not code: an example of Markdown inside an output block
```
````

<!-- docs-test: no-run needs R -->
```python
import rpy2
```

```python
>>> y
2
```
"""


def test_parser_finds_blocks_lines_and_markers() -> None:
    page = parse_page(Path("sample.md"), SAMPLE)
    assert page.slow and not page.problems
    python = [b for b in page.blocks if b.is_python]
    assert [(b.line, b.source) for b in python[:2]] == [(5, "x = 1\n"), (11, "y = x + 1\n")]
    assert python[2].no_run == "needs R" and python[2].line == 22
    assert python[3].is_doctest and python[1].no_run is None
    assert [b.info for b in page.blocks].count("text") == 1


@pytest.mark.parametrize(("text", "problem"), [
    ("```\nplain\n```\n", "without a language"),
    ("```py\nx = 1\n```\n", "write '```python'"),
    ("```python no-run\nx = 1\n```\n", "write '```python'"),
    ("<!-- docs-test: no-run -->\n```python\nx = 1\n```\n", "incomplete marker"),
    ("<!-- docs-test: no-run needs R -->\n```text\nx\n```\n", "not followed"),
    ("<!-- docs-test: no-run needs R -->\n\n```python\nx = 1\n```\n", "not followed"),
    ("```python\nx = 1\n", "never closed"),
])
def test_parser_reports_broken_fences(text: str, problem: str) -> None:
    problems = parse_page(Path("bad.md"), text).problems
    assert len(problems) == 1 and problem in problems[0], problems


def test_failing_block_names_page_line_and_exception(tmp_path) -> None:
    path = tmp_path / "broken.md"
    path.write_text("# Broken\n\n```python\nx = 1\ny = x / 0\n```\n", encoding="utf-8")
    page = parse_page(path)
    with pytest.raises(pytest.fail.Exception) as info:
        _run_block(page, page.blocks[0], {})
    message = str(info.value)
    assert "block at line 4" in message and "ZeroDivisionError" in message
    assert f'File "{path}", line 5' in message


def test_doctest_output_is_compared(tmp_path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("```python\n>>> 1 + 1\n3\n```\n", encoding="utf-8")
    page = parse_page(path)
    with pytest.raises(pytest.fail.Exception, match="Expected:\n    3\nGot:\n    2"):
        _run_block(page, page.blocks[0], {})


def test_every_page_is_collected() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "index.md", "formula.md", "getting_started.md"} <= names
    python_blocks = sum(b.is_python for p in PAGES for b in parse_page(p).blocks)
    assert python_blocks >= 10
