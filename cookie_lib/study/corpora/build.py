"""Build every corpus of the study under data/, in dependency order, skipping what is built.

``build_all`` (run by ``python -m cookie_lib.study.corpora build`` and by notebook 01) builds
``data/emoji`` (:mod:`.emoji`), ``data/openclipart`` (:mod:`.openclipart`, de-duplicated against the emoji
images), ``data/wordnet`` (:mod:`.wordnet`, the lemma -> gloss task) and
``data/pretrain/dataset_pretrain.json`` (:mod:`.pretrain`).
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import DATA_DIR


def build_all(data_dir: Path = DATA_DIR, force: bool = False, progress: bool = True) -> dict:
    """Build emoji, openclipart, wordnet and pretrain under ``data_dir`` in order, skipping built ones.

    A rebuilt emoji corpus also rebuilds openclipart (its de-duplication reads the emoji images) and
    pretrain; a rebuilt openclipart rebuilds pretrain.
    """
    from . import emoji, openclipart, pretrain, wordnet

    data_dir = Path(data_dir)
    cache = data_dir / ".cache"
    done = {}
    needs = {"openclipart": {"emoji"}, "pretrain": {"emoji", "openclipart", "wordnet"}}
    steps = [
        ("emoji", data_dir / "emoji" / "dataset_emoji.json",
         lambda: emoji.build(data_dir / "emoji", cache_dir=cache, progress=progress)),
        ("openclipart", data_dir / "openclipart" / "dataset_openclipart.json",
         lambda: openclipart.build(data_dir / "openclipart", cache_dir=cache,
                                   emoji_images=data_dir / "emoji" / "images", progress=progress)),
        ("wordnet", data_dir / "wordnet" / "wordnet_task.json",
         lambda: wordnet.build(data_dir / "wordnet", cache_dir=cache)),
        ("pretrain", data_dir / "pretrain" / "dataset_pretrain.json",
         lambda: pretrain.build_pretrain(data_dir / "pretrain", data_dir / "emoji", data_dir / "openclipart",
                                         data_dir, wordnet=data_dir / "wordnet")),
    ]
    for name, marker, step in steps:
        if marker.exists() and not force and not needs.get(name, set()) & set(done):
            print(f"{name}: {marker.relative_to(data_dir.parent) if marker.is_relative_to(data_dir.parent) else marker} "
                  "exists, skipped")
            continue
        t0 = time.perf_counter()
        done[name] = step()
        print(f"{name}: built in {time.perf_counter() - t0:.1f} s")
    return done
