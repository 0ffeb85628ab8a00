"""The combined pre-training corpus (Open Clip Art + emoji train concepts) and a build-everything CLI.

Usage::

    python -m cookie_lib.study.corpora build [--data-dir data] [--force]

builds, in order and only what is missing (``--force``: all of them again): ``data/emoji``
(emoji corpus), ``data/openclipart`` (de-duplicated against the emoji images), ``data/wordnet``
(WordNet lemma -> gloss task) and ``data/pretrain/dataset_pretrain.json``.

The pre-training JSON references the images of the two corpora instead of copying them: every
``filepath`` is relative to the image root ``data/`` (the folder holding both corpora), e.g.
``emoji/images/noto`` or ``openclipart/images/food/fruit``. Load it with
``load_karpathy("data/pretrain/dataset_pretrain.json", image_root="data")`` (``image_root`` is also
stored in the JSON, relative to the JSON's folder: ``".."``). Splits: train = Open Clip Art train +
emoji train concepts, val = Open Clip Art val + emoji val concepts; no test image of either corpus
ever appears. Keys (``concept``) are prefixed by corpus (``emoji:1F600``, ``oca:oca-1a2b...``) so
they cannot collide, and every record keeps ``corpus`` ("emoji" or "openclipart").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .emoji import DEFAULT_CACHE

DATA_DIR = DEFAULT_CACHE.parent  # the repository's data/
PRETRAIN_SPLITS = ("train", "val")  # the test splits are downstream evaluation data only
PREFIX = {"emoji": "emoji:", "openclipart": "oca:"}


def _records(json_path: Path, corpus: str, image_root: Path) -> list[dict]:
    """Train/val records of one corpus with filepath re-rooted at ``image_root`` and prefixed keys."""
    folder = json_path.parent
    images = json.loads(json_path.read_text(encoding="utf-8"))["images"]
    out = []
    for img in images:
        if img["split"] not in PRETRAIN_SPLITS:
            continue
        rel = os.path.relpath(folder / "images" / img.get("filepath", ""), image_root)
        if rel.startswith(".."):
            raise ValueError(f"{json_path}: images are not under the image root {image_root}")
        rec = {k: v for k, v in img.items() if k not in ("imgid", "sentids", "sentences", "filepath", "concept")}
        rec.update({"filepath": Path(rel).as_posix(), "corpus": corpus,
                    "concept": PREFIX[corpus] + str(img.get("concept", img["imgid"])),
                    "source_imgid": img["imgid"], "sentences": img["sentences"]})
        out.append(rec)
    return out


def build_pretrain(out: Path = DATA_DIR / "pretrain", emoji: Path = DATA_DIR / "emoji",
                   openclipart: Path = DATA_DIR / "openclipart", image_root: Path | None = None) -> dict:
    """Write ``<out>/dataset_pretrain.json`` atomically and validate it; return counts per split and corpus.

    ``emoji`` and ``openclipart`` are the built corpus folders; ``image_root`` (default: ``out``'s
    parent, i.e. data/) must contain both. imgids and sentids are renumbered 0..N-1 in the order
    Open Clip Art then emoji; ``source_imgid`` keeps the imgid in the source corpus.
    """
    t0 = time.perf_counter()
    out = Path(out)
    image_root = Path(image_root) if image_root is not None else out.parent
    sources = [(Path(openclipart) / "dataset_openclipart.json", "openclipart"),
               (Path(emoji) / "dataset_emoji.json", "emoji")]
    for path, name in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the {name} corpus first "
                                    f"(python -m cookie_lib.study.corpora build)")
    images = [r for path, name in sources for r in _records(path, name, image_root.resolve())]
    sentid = 0
    for imgid, img in enumerate(images):
        img["imgid"] = imgid
        img["sentences"] = [dict(s, imgid=imgid, sentid=sentid + i) for i, s in enumerate(img["sentences"])]
        img["sentids"] = [s["sentid"] for s in img["sentences"]]
        sentid += len(img["sentences"])
    rel_root = os.path.relpath(image_root.resolve(), out.resolve())
    doc = {"dataset": "pretrain", "image_root": Path(rel_root).as_posix(), "images": images}
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="dataset_pretrain.json.tmp-", dir=out)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
            fh.write("\n")
        # cookie_lib.data.validate_karpathy demands a test split, which pre-training must not have:
        # the source corpora were validated when built, so check the merge itself and the files
        check_pretrain(doc, image_root)
        Path(tmp).replace(out / "dataset_pretrain.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    counts = {split: dict(Counter(i["corpus"] for i in images if i["split"] == split)) for split in PRETRAIN_SPLITS}
    return {"splits": counts, "images": len(images), "seconds": round(time.perf_counter() - t0, 1)}


def check_pretrain(doc: dict, image_root: Path | None = None) -> None:
    """Raise ValueError if the pre-training document has a test image, colliding keys or bad records.

    Checks: only train/val splits; every key starts with its corpus's prefix; unique imgids and
    sentids; sentences non-empty. With ``image_root`` also every image file exists.
    """
    problems = []
    if {i["split"] for i in doc["images"]} - set(PRETRAIN_SPLITS):
        problems.append(f"splits other than {PRETRAIN_SPLITS}: {sorted({i['split'] for i in doc['images']})}")
    for i in doc["images"]:
        if not i["concept"].startswith(PREFIX.get(i.get("corpus"), "\0")):
            problems.append(f"imgid {i['imgid']}: key {i['concept']!r} lacks the prefix of corpus {i.get('corpus')!r}")
        if not i["sentences"] or any(not s["raw"].strip() for s in i["sentences"]):
            problems.append(f"imgid {i['imgid']}: empty caption")
        if image_root is not None and not (Path(image_root) / i["filepath"] / i["filename"]).is_file():
            problems.append(f"imgid {i['imgid']}: missing image {Path(image_root) / i['filepath'] / i['filename']}")
    ids = [i["imgid"] for i in doc["images"]]
    sids = [s["sentid"] for i in doc["images"] for s in i["sentences"]]
    if len(set(ids)) != len(ids) or len(set(sids)) != len(sids):
        problems.append("duplicate imgid or sentid")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the pre-training corpus: " + "; ".join(problems[:10]))


def build_all(data_dir: Path = DATA_DIR, force: bool = False, progress: bool = True) -> dict:
    """Build emoji, openclipart, wordnet and pretrain under ``data_dir`` in order, skipping built ones.

    A rebuilt emoji corpus also rebuilds openclipart (its de-duplication reads the emoji images) and
    pretrain; a rebuilt openclipart rebuilds pretrain.
    """
    from cookie_lib.study import emoji, openclipart, wordnet

    data_dir = Path(data_dir)
    cache = data_dir / ".cache"
    done = {}
    needs = {"openclipart": {"emoji"}, "pretrain": {"emoji", "openclipart"}}
    steps = [
        ("emoji", data_dir / "emoji" / "dataset_emoji.json",
         lambda: emoji.build(data_dir / "emoji", cache_dir=cache, progress=progress)),
        ("openclipart", data_dir / "openclipart" / "dataset_openclipart.json",
         lambda: openclipart.build(data_dir / "openclipart", cache_dir=cache,
                                   emoji_images=data_dir / "emoji" / "images", progress=progress)),
        ("wordnet", data_dir / "wordnet" / "wordnet_task.json",
         lambda: wordnet.build(data_dir / "wordnet", cache_dir=cache)),
        ("pretrain", data_dir / "pretrain" / "dataset_pretrain.json",
         lambda: build_pretrain(data_dir / "pretrain", data_dir / "emoji", data_dir / "openclipart", data_dir)),
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


# ----------------------------------------------------------------------------- what notebook 01 shows
def corpus_paths(run) -> dict[str, Path]:
    """The study's data files of a run profile: the pre-training corpus and each configured downstream set."""
    from ..config import resolve_path

    paths = {"pretrain": resolve_path(run.config.data.dataset)}
    for name, value in (("emoji", run.downstream_emoji), ("openclipart", run.downstream_oca),
                        ("wordnet", run.downstream_wordnet)):
        if value:
            paths[name] = resolve_path(value)
    return paths


def _corpora(run) -> dict:
    """Validated KarpathyCorpus per image corpus of the run (every image decoded once)."""
    from ..config import resolve_path
    from ..data import validate_karpathy

    root = run.config.data.image_root
    out = {}
    for name, path in corpus_paths(run).items():
        if name != "wordnet":
            out[name] = validate_karpathy(path, resolve_path(root) if name == "pretrain" and root else None)
    return out


def counts_table(run):
    """Images, captions and keys (concepts) per corpus and split, as a DataFrame indexed by (corpus, split)."""
    import pandas as pd

    rows = [{"corpus": name, "split": split, **c} for name, corpus in _corpora(run).items()
            for split, c in sorted(corpus.counts().items(), key=lambda kv: ("train", "val", "test").index(kv[0])
                                   if kv[0] in ("train", "val", "test") else 9)]
    return pd.DataFrame(rows).set_index(["corpus", "split"])


def _unprefixed(key: str) -> str:
    for prefix in PREFIX.values():
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def leak_check(run) -> dict[str, int]:
    """Counts that must be 0 for the protocol to hold: downstream test images or emoji test concepts in the
    pre-training corpus, emoji families spanning two splits; plus Open Clip Art drawings dropped as
    near-copies of an emoji design (informative)."""
    corpora = _corpora(run)
    pre = [r for r in corpora["pretrain"].records if r.split != "test"]  # what training reads: train (+restval), val
    pre_paths = {r.path.resolve() for r in pre}
    pre_keys = {_unprefixed(r.key) for r in pre}
    test_paths, emoji_test_keys = set(), set()
    for name in ("emoji", "openclipart"):
        if name in corpora and any(r.split == "test" for r in corpora[name].records):
            recs = corpora[name].split("test")
            test_paths |= {r.path.resolve() for r in recs}
            if name == "emoji":
                emoji_test_keys = {r.key for r in recs}
    out = {"downstream images in pre-training": len(test_paths & pre_paths),
           "emoji test concepts in pre-training": len(emoji_test_keys & pre_keys)}
    if "emoji" in corpora:
        doc = json.loads(corpora["emoji"].json_path.read_text(encoding="utf-8"))
        splits: dict[str, set] = {}
        for img in doc["images"]:
            splits.setdefault(img.get("family", img.get("concept", img["imgid"])), set()).add(img["split"])
        out["families spanning splits"] = sum(len(s) > 1 for s in splits.values())
    if "openclipart" in corpora:
        doc = json.loads(corpora["openclipart"].json_path.read_text(encoding="utf-8"))
        out["Open Clip Art near-copies of emoji dropped"] = len(doc.get("build", {}).get("near_emoji", []))
    return out


def caption_kind_table(run):
    """Captions per corpus and kind, with the share within the corpus and whether the kind is templated."""
    import pandas as pd

    from .plots import caption_kinds

    frames = [caption_kinds(c).assign(corpus=name) for name, c in _corpora(run).items() if name != "pretrain"]
    return pd.concat(frames).set_index(["corpus", "kind"])


def contact_sheets(run) -> dict:
    """Figures: the emoji designs of a few concepts with their captions; Open Clip Art drawings with titles."""
    from .plots import contact_sheet, drawing_sheet

    corpora = _corpora(run)
    sheets = {}
    if "emoji" in corpora:
        sheets["emoji"] = contact_sheet(corpora["emoji"], n_concepts=8)
    if "openclipart" in corpora:
        sheets["openclipart"] = drawing_sheet(corpora["openclipart"].split("train"), n=24)
    return sheets


def wordnet_summary(run):
    """The WordNet task in numbers and three example pairs (lemma -> gloss), as a two-column DataFrame."""
    import pandas as pd

    path = corpus_paths(run).get("wordnet")
    if path is None:
        return pd.DataFrame({"value": []})
    doc = json.loads(path.read_text(encoding="utf-8"))
    gloss = dict((c["key"], c["text"]) for c in doc["candidates"])
    rows = {"queries (lemmas)": len(doc["queries"]), "candidates (glosses)": len(doc["candidates"]),
            "held-out synsets / eligible / all nouns": f"{doc.get('n_synsets')} / {doc.get('eligible_synsets')} / "
                                                       f"{doc.get('total_synsets')}",
            "source": doc.get("source", "")}
    for i, q in enumerate(doc["queries"][:3]):
        rows[f"example {i + 1}"] = f"{q['text']} -> {gloss[q['key']]}"
    return pd.DataFrame({"value": rows})


def conclusion(counts, leaks: dict, wordnet) -> str:
    """The notebook's closing text, generated from its own tables."""
    pre = counts.loc["pretrain"]
    n_pre = int(pre["images"].sum())
    lines = [f"- The pre-training corpus holds {n_pre:,} images ({', '.join(f'{s}: {int(n):,}' for s, n in pre['images'].items())})."]
    for name in ("emoji", "openclipart"):
        if name in counts.index.get_level_values(0) and "test" in counts.loc[name].index:
            t = counts.loc[(name, "test")]
            lines.append(f"- Downstream {name} test set: {int(t['images']):,} images of {int(t['keys']):,} concepts.")
    if len(wordnet):
        lines.append(f"- WordNet: {wordnet.loc['queries (lemmas)', 'value']:,} lemma -> gloss queries, no loss trains on them.")
    bad = {k: v for k, v in leaks.items() if "dropped" not in k and v}
    lines.append("- Leak checks: " + ("all zero (" + ", ".join(k for k in leaks if "dropped" not in k) + ")."
                                      if not bad else f"**FAILED** {bad}"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every missing corpus/task, then the pre-training corpus")
    b.add_argument("--data-dir", type=Path, default=DATA_DIR)
    b.add_argument("--force", action="store_true", help="rebuild everything")
    args = ap.parse_args(argv)
    try:
        build_all(args.data_dir, args.force)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
