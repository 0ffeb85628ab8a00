#!/usr/bin/env python
"""Offline HTML report of the executed notebooks: ``python scripts/build_report.py results/notebooks --out results/report``.

The work is done by :mod:`cookie_lib.study.views.htmlreport` (nbconvert, no network; see its docstring).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from cookie_lib.study.views.htmlreport import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
