"""MkDocs hook (mkdocs.yml ``hooks:``): pages named in the nav before they are merged.

The nav lists pages that other branches are writing. Until a page is merged, a strict
build would fail on its nav entry and on the links to it. For the pages in ``PENDING``
only, and only while their file is missing, the nav entry is dropped and links to the page
become plain text, each logged; every other missing page or broken link still fails
``mkdocs build --strict``. Once all of them are merged, ``PENDING`` can be emptied.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.pending_pages")

PENDING = frozenset({
    "statsmodels_translation.md", "plots.md", "output.md", "cli.md", "weights.md", "dask.md",
})

_missing: frozenset[str] = frozenset()


def _prune(nav: list, missing: frozenset[str]) -> list:
    """The nav without entries for the missing pages (and sections left empty)."""
    kept = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                value = _prune(value, missing)
                if value:
                    kept.append({title: value})
            elif value not in missing:
                kept.append(item)
        elif item not in missing:
            kept.append(item)
    return kept


def on_config(config):
    global _missing
    docs = Path(config["docs_dir"])
    _missing = frozenset(name for name in PENDING if not (docs / name).exists())
    if _missing:
        log.info("pages not merged yet, left out of the nav: %s", ", ".join(sorted(_missing)))
        config["nav"] = _prune(config["nav"], _missing)
    return config


def on_page_markdown(markdown: str, page, **_):
    if not _missing:
        return markdown
    pattern = re.compile(r"\[([^\]]+)\]\((" + "|".join(map(re.escape, _missing)) + r")(#[^)]*)?\)")
    if pattern.search(markdown):
        log.info("%s: links to pages not merged yet shown as text", page.file.src_path)
    return pattern.sub(r"\1", markdown)
