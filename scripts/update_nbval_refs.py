"""Store the expected outputs of the checked cells (``# NBVAL_CHECK_OUTPUT``) in the source notebooks.

nbval compares a cell's output only when the committed cell has been run, so the cells whose smoke-profile
output is deterministic (counts, shapes, the contrast families) keep that output in ``notebooks/``; every
other cell stays without outputs. Run after an intended change of such an output:

    ./run_all.sh smoke && .venv/bin/python scripts/update_nbval_refs.py   # reads runs/smoke/results/notebooks/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MARK = "# NBVAL_CHECK_OUTPUT"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executed", type=Path, default=ROOT / "runs" / "smoke" / "results" / "notebooks")
    a = ap.parse_args(argv)
    for src in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        done = a.executed / src.name
        if not done.exists():
            raise SystemExit(f"{done} is missing: run ./run_all.sh smoke first")
        nb, ex = nbformat.read(src, as_version=4), nbformat.read(done, as_version=4)
        ref = {c.source: c for c in ex.cells if c.cell_type == "code" and MARK in c.source}
        for cell in nb.cells:
            if cell.cell_type == "code" and MARK in cell.source:
                if cell.source not in ref:
                    raise SystemExit(f"{src.name}: a checked cell differs from its executed copy; re-run the smoke profile")
                cell.outputs = [o for o in ref[cell.source].outputs if o.output_type == "stream"]
                cell.execution_count = 1
        nbformat.write(nb, src)
        print(f"{src.name}: {sum(MARK in c.source for c in nb.cells)} checked cell(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
