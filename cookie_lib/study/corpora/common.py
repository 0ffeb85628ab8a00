"""Paths and text normalisation shared by every corpus builder of the study.

``DATA_DIR`` is the repository's data/ folder and ``DEFAULT_CACHE`` (data/.cache) the download cache of
the npm tarballs and the Debian package, whatever the working directory. ``tokenize`` makes the
Karpathy tokens of a caption; ``norm_text`` is the form in which the leakage checks and the Open Clip
Art split units compare texts. ``PREFIX`` makes the keys of the two image corpora distinct in the
pre-training corpus.
"""
from __future__ import annotations

import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[3] / "data"  # the repository's data/
DEFAULT_CACHE = DATA_DIR / ".cache"  # npm tarballs and the .deb, whatever the cwd
PREFIX = {"emoji": "emoji:", "openclipart": "oca:"}  # key prefix per corpus in the pre-training corpus


def tokenize(text: str) -> list[str]:
    """Karpathy-style tokens: lower-cased words, punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def norm_text(text: str) -> str:
    """Caption text as compared by the leakage checks: lower-cased ``tokenize`` words joined by one space
    ("Red Apple!" and "red  apple" are the same string)."""
    return " ".join(tokenize(text))


def unprefixed(key: str) -> str:
    """A pre-training key without its corpus prefix (``PREFIX``): "emoji:1F600" -> "1F600"."""
    for prefix in PREFIX.values():
        if key.startswith(prefix):
            return key[len(prefix):]
    return key
