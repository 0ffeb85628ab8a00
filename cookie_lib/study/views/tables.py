"""Tables as files: a DataFrame as a GitHub Markdown table, and as ``.csv`` + ``.md`` written atomically.

    from cookie_lib.study.views.tables import to_markdown, write_table
    write_table(df, results / "table_downstream")   # table_downstream.csv and table_downstream.md
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...runtime import atomic_write_text


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table: header, ``|---|`` rule, one line per row, ending in a newline. A named or
    non-range index becomes the first column(s) (pandas.to_markdown would need tabulate)."""
    frame = df.reset_index() if df.index.name or df.index.names[0] or not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, index: bool = True) -> None:
    """``stem.csv`` and ``stem.md`` (the Markdown table), both written atomically."""
    stem = Path(stem)
    atomic_write_text(df.to_csv(index=index), stem.with_suffix(".csv"))
    atomic_write_text(to_markdown(df if index else df.reset_index(drop=True)), stem.with_suffix(".md"))
