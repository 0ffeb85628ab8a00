"""Copy the headline tables of results/ into README.md (between the `<!-- results:... -->` and
`<!-- bench:... -->` markers), so every number in the README's results section comes from the committed
results files, and the inline figure counts of results/notebooks/ (between the `<!-- figures:... -->`
markers). The blocks are built by :mod:`cookie_lib.study.views.report` and :mod:`cookie_lib.study.views.htmlreport`.

    .venv/bin/python scripts/update_readme.py          # rewrite the blocks
    .venv/bin/python scripts/update_readme.py --check  # exit 1 if README.md is out of date (used by tests)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from any folder, without installing the package

from cookie_lib.study.views.report import update_readme_text  # noqa: E402
from cookie_lib.study.views.htmlreport import update_figures_block  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    readme = (ROOT / "README.md").read_text()
    try:
        new = update_readme_text(readme, ROOT / "results")
        new = update_figures_block(new, ROOT / "results" / "notebooks")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if a.check:
        if new != readme:
            print("README.md results/figures blocks are out of date: run scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    (ROOT / "README.md").write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
