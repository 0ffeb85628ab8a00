"""Shared test paths and fixtures.

Paths are plain constants (test modules import them: ``from conftest import ROOT, EMOJI``; pytest puts
``tests/`` on ``sys.path`` because the folder has no ``__init__.py``). Fixtures are found by name.

* ``smoke_corpus`` (session): the validated smoke-profile corpus (the committed emoji fixture, 114
  images); building it also computes or loads the smoke feature cache of the train and val splits, once
  per test session, so no two processes (e.g. torchrun ranks) race to write it.
* ``smoke_cache`` (session): that cache's folder (``cfg.data.cache_dir``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders are packaged; a test never waits on the hub

ROOT = Path(__file__).resolve().parents[1]  # the repository root
FIXTURES = ROOT / "tests" / "fixtures"  # tiny Karpathy-format files (COCO, Flickr30K quirks)
COCO = FIXTURES / "karpathy_coco_mini" / "dataset_coco.json"
FLICKR = FIXTURES / "flickr_mini" / "dataset_flickr30k.json"
EMOJI_DIR = ROOT / "data" / "fixture_emoji"  # the committed 40-concept emoji fixture (114 images)
EMOJI = EMOJI_DIR / "dataset_emoji.json"


@pytest.fixture(scope="session")
def smoke_corpus():
    """The validated smoke corpus, loaded once; also builds the smoke train/val feature cache if missing."""
    from cookie_lib.config import load_config, resolve_path
    from cookie_lib.features import split_features
    from cookie_lib.data import load_corpus

    cfg = load_config("smoke")
    corpus = load_corpus(cfg)
    dataset = resolve_path(cfg.data.dataset)
    # the same calls (and so the same cache files) as Trainer's constructor for the smoke profile
    split_features(cfg, corpus.split("train"), "train", cfg.train.num_views, dataset)
    split_features(cfg, corpus.split("val"), "val", 1, dataset)
    return corpus


@pytest.fixture(scope="session")
def smoke_cache(smoke_corpus) -> str:
    """The smoke profile's feature cache folder, built (once, in this process) by ``smoke_corpus``."""
    from cookie_lib.config import load_config

    return load_config("smoke").data.cache_dir
