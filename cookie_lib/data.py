"""Load and validate image-text corpora in the Karpathy-split JSON format.

Format (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_emoji.json``)::

    {"dataset": "coco", "images": [{"split": "train|val|test|restval", "filepath": "val2014" (COCO only),
      "filename": "...jpg", "imgid": int, "sentids": [...],
      "sentences": [{"raw": str, "tokens": [...], "sentid": int, "imgid": int, "kind": str (emoji only)}],
      "concept"/"group"/"subgroup" (emoji only)}]}

Quirks handled here: COCO images live under ``image_root/filepath/filename`` while Flickr30K has
no ``filepath``; COCO's "restval" split is training data; some COCO images have more than five
captions (the first five are kept). Usage: ``python -m cookie_lib.data validate dataset.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from tqdm import tqdm

from .errors import DataValidationError  # re-exported: defined with the other user errors

if TYPE_CHECKING:
    from .config import Config


KNOWN_SPLITS = ("train", "val", "test", "restval")  # Karpathy's names; "restval" is training data (COCO)


@dataclass(frozen=True)
class ImageRecord:
    imgid: int
    path: Path  # absolute: image_root / filepath / filename (filepath optional)
    split: str  # as in the JSON: "train", "val", "test", "restval"
    key: str  # instance key: "concept" if present else str(imgid); same key = positives
    captions: tuple[str, ...]  # raw captions, at most max_captions
    caption_kinds: tuple[str, ...]  # "kind" per caption, "caption" if absent
    group: str | None  # coarse class (emoji group)
    subgroup: str | None  # class label for class-level mAP (emoji subgroup)


@dataclass
class KarpathyCorpus:
    name: str
    json_path: Path
    image_root: Path
    records: list[ImageRecord]

    def split(self, name: str) -> list[ImageRecord]:
        """Records of one split, in file order; "train" also includes "restval" (COCO convention)."""
        wanted = {"train", "restval"} if name == "train" else {name}
        available = sorted({r.split for r in self.records} | ({"train"} if any(
            r.split == "restval" for r in self.records) else set()))
        if name not in available:
            raise ValueError(f"split {name!r} not in {self.json_path}; available: {available}")
        return [r for r in self.records if r.split in wanted]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split as in the JSON: number of images, captions (after truncation) and distinct keys."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            c = out.setdefault(r.split, {"images": 0, "captions": 0, "keys": 0})
            c["images"] += 1
            c["captions"] += len(r.captions)
        for split in out:
            out[split]["keys"] = len({r.key for r in self.records if r.split == split})
        return out


def _default_root(json_path: Path, image_root) -> Path:
    if image_root is not None:
        return Path(image_root).resolve()
    folder = json_path.resolve().parent
    return folder / "images" if (folder / "images").is_dir() else folder


def load_karpathy(json_path, image_root=None, max_captions=5) -> KarpathyCorpus:
    """Read a Karpathy-format JSON into ImageRecords (no checks; see ``validate_karpathy``).

    ``image_root`` defaults to ``<json folder>/images`` if that exists, else the JSON's folder. The
    image path is ``image_root / filepath / filename`` (``filepath`` is absent in Flickr30K). Only the
    first ``max_captions`` sentences of each image are kept (COCO has a few images with 6-7).
    """
    json_path = Path(json_path)
    root = _default_root(json_path, image_root)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    records = []
    for img in data["images"]:
        sents = img["sentences"][:max_captions]
        records.append(ImageRecord(
            imgid=img["imgid"], path=root / img.get("filepath", "") / img["filename"], split=img["split"],
            key=str(img.get("concept", img["imgid"])), captions=tuple(s["raw"] for s in sents),
            caption_kinds=tuple(s.get("kind", "caption") for s in sents),
            group=img.get("group"), subgroup=img.get("subgroup")))
    return KarpathyCorpus(data.get("dataset", json_path.stem), json_path, root, records)


def _check_image(path: Path) -> str | None:
    """None if the file exists and fully decodes, else a short reason."""
    if not path.is_file():
        return "image file missing"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for corrupt data
        return f"image does not decode ({type(e).__name__}: {e})"
    return None


def validate_karpathy(json_path, image_root=None, check_images=True, max_errors=50, *, splits=None,
                      required=("train", "val"), max_captions=5, hint: str | None = None) -> KarpathyCorpus:
    """Check a corpus before it is used and return it loaded; raise DataValidationError otherwise.

    Checks: the JSON parses (the error gives line and column), it has an "images" list, each image
    has split/filename/imgid/sentences of the right types, imgids are unique, every caption ``raw``
    is a non-empty string, the ``required`` splits are non-empty ("train" counts restval; training
    needs train and val, an evaluation only the split it reads), and (if ``check_images``) every image
    file exists and decodes (PIL verify + load) -- only the images of ``splits`` when given (an
    evaluation of the test split need not open the training images). All problems are collected first;
    the error lists the first ``max_errors`` (each naming the file and the record as
    ``images[index] (imgid=...)``) plus a count of the rest. ``hint`` is appended to "file not found"
    (e.g. the command that builds the corpus). This is the one validation path of every entry point
    (train, evaluate, search, the study grid, ``python -m cookie_lib.data validate``).
    """
    json_path = Path(json_path)
    wanted = None if splits is None else ({"train", "restval"} if "train" in splits else set()) | set(splits)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError(f"{json_path}: file not found" + (f" ({hint})" if hint else "")) from None
    except IsADirectoryError:
        raise DataValidationError(f"{json_path}: is a folder, not a Karpathy-format JSON file") from None
    except UnicodeDecodeError as e:
        raise DataValidationError(f"{json_path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataValidationError(f"{json_path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    root = _default_root(json_path, image_root)
    problems: list[str] = []
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataValidationError(f"{json_path}: top level must be an object with an 'images' list")
    types = {"split": str, "filename": str, "imgid": int, "sentences": list}
    seen: dict[int, int] = {}
    splits: Counter = Counter()
    first_of_split: dict[str, int] = {}  # split name -> index of its first record (to name unknown splits)
    for i, img in enumerate(tqdm(images, desc="validate", unit="img", leave=False, disable=None)):
        where = f"{json_path}: images[{i}]"
        if not isinstance(img, dict):
            problems.append(f"{where}: record is not an object")
            continue
        imgid = img.get("imgid")
        where += f" (imgid={imgid})"
        bad = False
        for field, typ in types.items():
            if field not in img:
                problems.append(f"{where}: missing required key '{field}'")
                bad = True
            elif not isinstance(img[field], typ) or isinstance(img[field], bool):
                problems.append(f"{where}: '{field}' must be {typ.__name__}, got {type(img[field]).__name__}")
                bad = True
        if "filepath" in img and not isinstance(img["filepath"], str):
            problems.append(f"{where}: 'filepath' must be str")
            bad = True
        for field in ("concept", "design", "group", "subgroup"):  # optional, but used as keys and classes
            if field in img and not isinstance(img[field], str):
                problems.append(f"{where}: '{field}' must be str, got {type(img[field]).__name__}")
        if isinstance(imgid, int) and not isinstance(imgid, bool):
            if imgid in seen:
                problems.append(f"{where}: duplicate imgid (first at images[{seen[imgid]}])")
            seen.setdefault(imgid, i)
        if isinstance(img.get("split"), str):
            if img["split"]:
                splits[img["split"]] += 1
                first_of_split.setdefault(img["split"], i)
            else:
                problems.append(f"{where}: empty split name")
        if isinstance(img.get("sentences"), list):
            if not img["sentences"]:
                problems.append(f"{where}: no sentences")
            for j, s in enumerate(img["sentences"]):
                raw = s.get("raw") if isinstance(s, dict) else None
                if not isinstance(raw, str) or not raw.strip():
                    problems.append(f"{where}: sentences[{j}] 'raw' must be a non-empty string, got {raw!r}")
                elif "kind" in s and not isinstance(s["kind"], str):
                    problems.append(f"{where}: sentences[{j}] 'kind' must be str, got {type(s['kind']).__name__}")
        if check_images and not bad and (wanted is None or img["split"] in wanted):
            path = root / img.get("filepath", "") / img["filename"]
            reason = _check_image(path)
            if reason:
                problems.append(f"{where}: {reason}: {path}")
    for name in sorted(set(splits) - set(KNOWN_SPLITS)):  # once per name: a whole renamed split is one problem
        problems.append(f"{json_path}: unknown split {name!r} in {splits[name]} record(s) (first: "
                        f"images[{first_of_split[name]}]); known splits: {list(KNOWN_SPLITS)} (these images "
                        f"would take part in nothing)")
    # a pre-training corpus may have no test split (its downstream data lives elsewhere); training needs train + val
    for split in required:
        n = splits[split] + (splits["restval"] if split == "train" else 0)
        if n == 0:
            problems.append(f"{json_path}: split '{split}' is empty (splits present: {dict(splits)})")
    if problems:
        shown = problems[:max_errors]
        more = f"\n... and {len(problems) - len(shown)} more problems" if len(problems) > len(shown) else ""
        raise DataValidationError(f"{len(problems)} problem(s) in {json_path}:\n" + "\n".join(shown) + more)
    return load_karpathy(json_path, image_root, max_captions=max_captions)


def validated_split(json_path, image_root=None, split: str = "test", max_captions: int = 5,
                    hint: str | None = None) -> tuple[KarpathyCorpus, list[ImageRecord]]:
    """(corpus, records of ``split``) after :func:`validate_karpathy` with the checks an evaluation needs:
    the whole file's structure and captions, the ``split`` non-empty, and the images of ``split``."""
    corpus = validate_karpathy(json_path, image_root, splits=(split,), required=(split,),
                               max_captions=max_captions, hint=hint)
    return corpus, corpus.split(split)


def load_corpus(cfg: "Config") -> KarpathyCorpus:
    """The corpus of a run config: ``data.dataset`` (images under ``data.image_root``, default beside the
    JSON), validated first (:func:`validate_karpathy`: every file, every image; it keeps its own default of
    5 captions per image) when ``data.validate`` is on, else read as it is with the first
    ``data.max_captions`` captions of each image."""
    from .config import resolve_path

    path = resolve_path(cfg.data.dataset)
    root = resolve_path(cfg.data.image_root) if cfg.data.image_root else None
    if cfg.data.validate:
        return validate_karpathy(path, root)
    return load_karpathy(path, root, max_captions=cfg.data.max_captions)


# the corpora searched and evaluated when none is given (the first present), and how to build a missing one
DEFAULT_CORPORA = ("data/emoji/dataset_emoji.json", "data/fixture_emoji/dataset_emoji.json")
BUILD_HINTS = {"data/emoji/dataset_emoji.json": "python -m cookie_lib.study.corpora build (or ./run_all.sh)",
               "data/pretrain/dataset_pretrain.json": "python -m cookie_lib.study.corpora build (or ./run_all.sh)"}


def corpus_hint(path: Path) -> str | None:
    """How to make a missing corpus file: the build command for the study's corpora, else None."""
    from .config import project_root

    p, root = Path(path).resolve(), project_root()
    rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
    return f"build it with {BUILD_HINTS[rel]}" if rel in BUILD_HINTS else None


def default_corpus(cfg: "Config", split: str) -> Path:
    """The corpus searched (and evaluated) when none is given: the model's training corpus if it has ``split``,
    else the emoji corpus when built, else the committed emoji fixture (a pre-training corpus has no test split)."""
    from .config import resolve_path

    own = resolve_path(cfg.data.dataset)
    if own.is_file():
        try:
            if load_karpathy(own, None).split(split):
                return own
        except (ValueError, KeyError, OSError):
            pass
    return next((resolve_path(c) for c in DEFAULT_CORPORA if resolve_path(c).is_file()), resolve_path(DEFAULT_CORPORA[-1]))


def coco_1k_folds(records) -> list[list[ImageRecord]]:
    """The MSCOCO "1K" protocol: 5 folds of 1,000 consecutive images of the 5,000-image test split."""
    records = list(records)
    if len(records) != 5000:
        raise ValueError(f"coco_1k_folds needs the 5,000 COCO test images, got {len(records)}")
    return [records[i:i + 1000] for i in range(0, 5000, 1000)]


def text_matching_set(records, query_kind: str, candidate_kind: str):
    """(query_texts, query_keys, candidate_texts, candidate_keys) for text->text matching.

    One query (the first caption of ``query_kind``) and one candidate (first of ``candidate_kind``)
    per key, in order of first appearance (queries only for keys that have a candidate); all images of a
    key share captions, so the first record with the kind is used. Positives are texts with the same key.
    The kinds are the corpus's own (e.g. the emoji corpus's label -> keywords task: see
    :data:`cookie_lib.evaluate.TEXT_MATCHING_KINDS`). ValueError when no caption has one of the kinds.
    """
    found = {query_kind: {}, candidate_kind: {}}
    for r in records:
        for text, kind in zip(r.captions, r.caption_kinds):
            if kind in found:
                found[kind].setdefault(r.key, text)
    for kind, texts in found.items():
        if not texts:
            have = sorted({k for r in records for k in r.caption_kinds})
            raise ValueError(f"no caption of kind {kind!r} in these records; kinds present: {have}")
    # a key without a candidate text (e.g. an emoji with no CLDR keywords) cannot be a query; it would
    # have no positive. Every candidate stays in the pool as a distractor.
    c = found[candidate_kind]
    q = {k: t for k, t in found[query_kind].items() if k in c}
    return list(q.values()), list(q.keys()), list(c.values()), list(c.keys())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a Karpathy-format corpus and print its counts")
    v.add_argument("json_path", type=Path)
    v.add_argument("--image-root", type=Path, default=None)
    v.add_argument("--no-images", action="store_true", help="skip opening the image files")
    args = ap.parse_args(argv)
    try:
        corpus = validate_karpathy(args.json_path, args.image_root, check_images=not args.no_images)
    except DataValidationError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{corpus.name}: {corpus.json_path} (images under {corpus.image_root}) is valid")
    for split, c in sorted(corpus.counts().items()):
        print(f"  {split:8s} images={c['images']}  captions={c['captions']}  keys={c['keys']}")
    return 0


if __name__ == "__main__":
    from .runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
