"""Build the study's corpora, or print their leakage table.

Usage::

    python -m cookie_lib.study.corpora build [--data-dir data] [--force]

builds, in order and only what is missing (``--force``: all of them again): ``data/emoji``
(emoji corpus), ``data/openclipart`` (de-duplicated against the emoji images), ``data/wordnet``
(WordNet lemma -> gloss task) and ``data/pretrain/dataset_pretrain.json`` (``build.build_all``). ::

    python -m cookie_lib.study.corpora leakage [--data-dir data] [--write-readme]

prints the leakage table of the built corpora (``--write-readme``: also into data/README.md) and exits
1 if a check that must be 0 is not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build_all
from .common import DATA_DIR
from .leakage import built_leakage, check_leakage
from ..views.datareadme import leakage_table, write_readme_table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every missing corpus/task, then the pre-training corpus")
    b.add_argument("--data-dir", type=Path, default=DATA_DIR)
    b.add_argument("--force", action="store_true", help="rebuild everything")
    lk = sub.add_parser("leakage", help="print the leakage table of the built corpora")
    lk.add_argument("--data-dir", type=Path, default=DATA_DIR)
    lk.add_argument("--write-readme", action="store_true", help="also write it into data/README.md")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "leakage":
            counts = built_leakage(args.data_dir)
            print(leakage_table(counts), end="")
            for k, v in counts.items():
                if v["examples"]:
                    print(f"  {k}: e.g. {v['examples']}")
            if args.write_readme:
                write_readme_table(counts)
            check_leakage(counts)
            return 0
        build_all(args.data_dir, args.force)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
