"""The generated part of data/README.md: the leakage table of the built corpora.

``python -m cookie_lib.study.corpora leakage --write-readme`` replaces the text between ``README_BEGIN``
and ``README_END`` with ``leakage_table`` of ``corpora.leakage.built_leakage``; everything else in data/README.md
is written by hand.
"""
from __future__ import annotations

from pathlib import Path

from ..corpora.common import DATA_DIR


def leakage_table(counts: dict) -> str:
    """The leakage counts as a Markdown table (check | count | rule)."""
    lines = ["| check | count | rule |", "|---|---|---|"]
    lines += [f"| {k} | {v['count']:,} | {v['rule']} |" for k, v in counts.items()]
    return "\n".join(lines) + "\n"


README_BEGIN, README_END = "<!-- leakage table: begin (python -m cookie_lib.study.corpora leakage --write-readme) -->", \
    "<!-- leakage table: end -->"


def write_readme_table(counts: dict, readme: Path = DATA_DIR / "README.md") -> None:
    """Replace the text between ``README_BEGIN`` and ``README_END`` of ``readme`` with ``leakage_table``."""
    text = Path(readme).read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: markers {README_BEGIN!r} ... {README_END!r} not found")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    Path(readme).write_text(head + README_BEGIN + "\n" + leakage_table(counts) + README_END + tail, encoding="utf-8")
