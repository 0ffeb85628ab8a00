"""The combined pre-training corpus: Open Clip Art + emoji train/val images in one Karpathy JSON.

``build_pretrain`` writes ``data/pretrain/dataset_pretrain.json``. It references the images of the two
corpora instead of copying them: every ``filepath`` is relative to the image root ``data/`` (the folder
holding both corpora), e.g. ``emoji/images/noto`` or ``openclipart/images/food/fruit``. Load it with
``load_karpathy("data/pretrain/dataset_pretrain.json", image_root="data")`` (``image_root`` is also
stored in the JSON, relative to the JSON's folder: ``".."``). Splits: train = Open Clip Art train +
emoji train concepts, val = Open Clip Art val + emoji val concepts; no test image of either corpus
ever appears. Keys (``concept``) are prefixed by corpus (``emoji:1F600``, ``oca:oca-1a2b...``) so
they cannot collide, and every record keeps ``corpus`` ("emoji" or "openclipart").

Leakage: before writing, every pre-training caption whose text (``norm_text``) equals a downstream test
text (an emoji test caption, an Open Clip Art test caption, a WordNet query lemma or gloss) is removed
(an image left without captions is dropped), and ``leakage.leakage_counts`` is checked: the build raises
ValueError naming the counts and examples if any check that must be 0 is not.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import DATA_DIR, PREFIX
from .leakage import check_leakage, downstream_texts, leakage_counts, scrub_captions

PRETRAIN_SPLITS = ("train", "val")  # the test splits are downstream evaluation data only


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
                   openclipart: Path = DATA_DIR / "openclipart", image_root: Path | None = None,
                   wordnet: Path | None = None) -> dict:
    """Write ``<out>/dataset_pretrain.json`` atomically and validate it; return counts per split and corpus.

    ``emoji`` and ``openclipart`` are the built corpus folders; ``image_root`` (default: ``out``'s
    parent, i.e. data/) must contain both; ``wordnet`` (optional) the built WordNet task folder, whose
    lemmas and glosses are then also removed from and checked against the pre-training captions.
    Captions equal to a downstream test text are removed (``scrub_captions``) and the leakage checks
    must pass (``check_leakage``, ValueError otherwise). imgids and sentids are renumbered 0..N-1 in
    the order Open Clip Art then emoji; ``source_imgid`` keeps the imgid in the source corpus. The
    JSON's ``"build"`` holds the removal counts.
    """
    t0 = time.perf_counter()
    out = Path(out)
    image_root = Path(image_root) if image_root is not None else out.parent
    sources = [(Path(openclipart) / "dataset_openclipart.json", "openclipart"),
               (Path(emoji) / "dataset_emoji.json", "emoji")]
    if wordnet is not None:
        sources.append((Path(wordnet) / "wordnet_task.json", "wordnet"))
    for path, name in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the {name} corpus first "
                                    f"(python -m cookie_lib.study.corpora build)")
    docs = {name: json.loads(path.read_text(encoding="utf-8")) for path, name in sources}
    images = [r for path, name in sources if name != "wordnet" for r in _records(path, name, image_root.resolve())]
    banned = downstream_texts(docs["emoji"], docs["openclipart"], docs.get("wordnet"))
    images, removed = scrub_captions(images, banned)
    sentid = 0
    for imgid, img in enumerate(images):
        img["imgid"] = imgid
        img["sentences"] = [dict(s, imgid=imgid, sentid=sentid + i) for i, s in enumerate(img["sentences"])]
        img["sentids"] = [s["sentid"] for s in img["sentences"]]
        sentid += len(img["sentences"])
    rel_root = os.path.relpath(image_root.resolve(), out.resolve())
    doc = {"dataset": "pretrain", "image_root": Path(rel_root).as_posix(), "images": images, "build": removed}
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="dataset_pretrain.json.tmp-", dir=out)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
            fh.write("\n")
        # cookie_lib.data.validate_karpathy demands a test split, which pre-training must not have:
        # the source corpora were validated when built, so check the merge itself and the files
        check_pretrain(doc, image_root)
        check_leakage(leakage_counts(doc, docs["emoji"], docs["openclipart"], docs.get("wordnet")))
        Path(tmp).replace(out / "dataset_pretrain.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    counts = {split: dict(Counter(i["corpus"] for i in images if i["split"] == split)) for split in PRETRAIN_SPLITS}
    return {"splits": counts, "images": len(images), "removed": removed, "seconds": round(time.perf_counter() - t0, 1)}

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
