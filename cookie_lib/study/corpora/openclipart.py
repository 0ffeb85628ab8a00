"""Build the Open Clip Art 0.18 image-text corpus (Karpathy format) from the Debian package, offline.

Open Clip Art 0.18 (Debian ``openclipart-svg``, public domain) holds about 7.5k drawings, each an SVG
whose RDF metadata carries a human title, keywords and sometimes a description. Usage::

    python -m cookie_lib.study.corpora.openclipart build --out data/openclipart [--deb PATH]
        [--cache-dir data/.cache] [--emoji-images data/emoji/images] [--max-drawings N]

Without ``--deb`` the package is fetched once with ``apt-get download openclipart-svg`` into the
cache. Unpacking needs no Debian tool: a ``.deb`` is an ``ar`` archive (parsed by :mod:`.debian`) whose member
``data.tar.xz`` is read with ``tarfile``. Output (see data/README.md)::

    <out>/dataset_openclipart.json   {"dataset": "openclipart", "images": [...], "build": {...}}
    <out>/images/<category>/<sub>/<name>.png   64x64 RGB, cropped to content, on white
    <out>/NOTICE

Pipeline: skip the decorative folders (stars, gradients, patterns) and symlinked/byte-identical
copies; read dc:title / dc:subject / dc:description of the ``cc:Work``; drop collection
boilerplate (a text shared by >= ``COLLECTION_MIN`` drawings, credits, e-mail addresses, fixed
boilerplate keywords) and caption sets shared by >= ``COLLECTION_MIN`` drawings; render with resvg,
crop to content, pad to a square, 64 px; drop near-blank renders and near-copies of any emoji design
image (perceptual hash plus a colour check, see ``emoji_matches``); split by
caption set (the record key) with whole near-duplicate groups (pHash within ``GROUP_MAX_DISTANCE``)
and drawings sharing a title kept in one split, stratified by top-level category.

This module reads the package, the metadata and the captions and writes the corpus; the ``.deb`` reader
is :mod:`.debian`, rendering and de-duplication are :mod:`.drawings`, the split is :mod:`.splits`.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from .common import DEFAULT_CACHE, tokenize
from .debian import deb_data_tar
from .drawings import (EMOJI_MAX_DISTANCE, EMOJI_MAX_MAE, emoji_fingerprints, emoji_matches, phash_bits,
                       png_bytes, render, split_units, thumbnail)
from .splits import assign_splits

PACKAGE = "openclipart-svg"
VERSION = "1:0.18+dfsg-19"  # the Debian version measured in data/README.md (apt may fetch a newer one)
SVG_ROOT = "usr/share/openclipart/svg/"
SKIP_FOLDERS = ("shapes/stars", "special/gradients", "special/patterns")  # decoration, no depicted object
COLLECTION_MIN = 10  # a title/description shared by this many drawings names a collection, not a drawing
NEAR_BLANK_STD = 3.0  # grey-level std below this: the drawing is white on white (e.g. a white rectangle)
GROUP_MAX_DISTANCE = 4  # pHash bits: drawings this close to each other stay in one split
BOILERPLATE_KEYWORDS = {"", "hash", "magick", "theme", "lemon_theme_icon", "unsorted", "special", "clip art",
                        "clipart", "svg", "public domain", "media", "image", "png", "externalsource",
                        "mapsym", "united_nations_member", "gramastar"}
_CREDIT = re.compile(r"@|https?://|www\.|created with|converted from|inkscape|\bsvg\b", re.I)
_NICU = re.compile(r"^clipart by [^-]+ - ", re.I)  # "Clipart by Nicu Buculei - smiley111" -> "smiley"
SEED = "cookie-openclipart-v1"
NOTICE = ("Open Clip Art Library 0.18 (http://www.openclipart.org), as packaged in Debian openclipart-svg: "
          "public domain (Creative Commons Public Domain Dedication / Certification); each drawing's author is in "
          "its SVG metadata. Rendered to 64 px PNG, cropped to content and composited on white by cookie.")
_NS = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}


# ------------------------------------------------------------------------------ package
def iter_svgs(deb: Path):
    """Yield (path under the svg root, e.g. "food/fruit/apple.svg", bytes) for regular SVG files, in
    sorted order. Symlinks (663 in 0.18) are copies of another file and are skipped."""
    with deb_data_tar(deb) as tar:
        files = {}
        for m in tar:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isfile() and name.startswith(SVG_ROOT) and name.endswith(".svg"):
                files[name[len(SVG_ROOT):]] = tar.extractfile(m).read()
    yield from sorted(files.items())


def fetch_deb(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The cached ``openclipart-svg_*.deb``, fetched with ``apt-get download`` if none is cached."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(glob.glob(str(cache_dir / f"{PACKAGE}_*.deb")))
    if found:
        return Path(found[-1])
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is not available to fetch {PACKAGE}; download the .deb on any machine and "
                           f"pass --deb PATH (or put it into {cache_dir})")
    res = subprocess.run(["apt-get", "download", PACKAGE], cwd=cache_dir, capture_output=True, text=True)
    found = sorted(glob.glob(str(cache_dir / f"{PACKAGE}_*.deb")))
    if res.returncode != 0 or not found:
        raise RuntimeError(f"apt-get download {PACKAGE} failed: {(res.stderr or res.stdout).strip()[-500:]}")
    return Path(found[-1])


# ------------------------------------------------------------------------------ text
def parse_metadata(svg: bytes) -> dict:
    """{"title", "keywords" (list), "description", "creator"} of the SVG's RDF ``cc:Work`` ("" if absent).

    Only direct children of the Work are read: ``dc:title`` also appears inside dc:creator/publisher
    (the artist's name). Raises ValueError naming the XML problem if the SVG does not parse.
    """
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as e:
        raise ValueError(f"SVG does not parse: {e}") from None
    work = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Work"), None)
    if work is None:
        return {"title": "", "keywords": [], "description": "", "creator": ""}

    def text(el):
        return " ".join((el.text or "").split()) if el is not None else ""

    return {"title": text(work.find("dc:title", _NS)),
            "keywords": [text(li) for li in work.iterfind("dc:subject/rdf:Bag/rdf:li", _NS)],
            "description": text(work.find("dc:description", _NS)),
            "creator": text(work.find("dc:creator//dc:title", _NS))}


def clean_title(title: str) -> str:
    """Readable title: "Clipart by Nicu Buculei - jigsaw_red_10" -> "jigsaw red"; "a_b" -> "a b"."""
    if _NICU.match(title):
        title = re.sub(r"[\d_\-\s]+$", "", _NICU.sub("", title))
    return " ".join(title.replace("_", " ").split())


def make_captions(meta: dict, collection_texts: set[str]) -> list[tuple[str, str]]:
    """Captions of one drawing as (raw, kind), kinds "title", "keywords", "description", de-duplicated.

    Dropped: titles/descriptions in ``collection_texts`` (shared by >= COLLECTION_MIN drawings),
    credits (e-mail, URL, "created with", "converted from"), keywords in BOILERPLATE_KEYWORDS or equal
    to the artist's name. Keywords keep their order, "_" -> " ", case-insensitive duplicates once.
    """
    out, seen = [], set()

    def add(raw, kind):
        raw = " ".join(raw.split())
        if raw and raw.lower() not in seen:
            seen.add(raw.lower())
            out.append((raw, kind))

    if meta["title"] and meta["title"] not in collection_texts and not _CREDIT.search(meta["title"]):
        add(clean_title(meta["title"]), "title")
    creator = meta.get("creator", "").lower()
    kws, kw_seen = [], set()
    for k in meta["keywords"]:
        k = " ".join(k.replace("_", " ").split())
        if k.lower() in BOILERPLATE_KEYWORDS or k.lower().replace(" ", "_") in BOILERPLATE_KEYWORDS \
                or (creator and k.lower() == creator) or _CREDIT.search(k) or k.lower() in kw_seen:
            continue
        kw_seen.add(k.lower())
        kws.append(k)
    add(", ".join(kws), "keywords")
    d = meta["description"]
    if d and d not in collection_texts and not _CREDIT.search(d):
        add(d, "description")
    return out


# ------------------------------------------------------------------------------ build
def caption_key(captions) -> str:
    """Record key of a caption set: "oca-" + 12 hex of SHA-256 (drawings with equal captions share it)."""
    return "oca-" + hashlib.sha256("\x1f".join(r.lower() for r, _ in captions).encode()).hexdigest()[:12]


def build(out: Path, deb: Path | None = None, cache_dir: Path = DEFAULT_CACHE, emoji_images: Path | None = None,
          max_drawings: int | None = None, test_frac: float = 0.15, val_frac: float = 0.10,
          group_max_distance: int = GROUP_MAX_DISTANCE,
          progress: bool = True) -> dict:
    """Build the corpus into ``out`` atomically (temp folder renamed at the end); return the build report.

    The report (also stored as ``"build"`` in the JSON) counts the files read and the drawings
    dropped per reason, and the records per split. ``max_drawings`` keeps an evenly spaced subset of
    the eligible drawings (for fixtures and tests).
    """
    from cookie_lib.data import validate_karpathy

    t0 = time.perf_counter()
    deb = Path(deb) if deb is not None else fetch_deb(cache_dir)
    dropped: Counter = Counter()
    items, seen_bytes = [], set()
    for rel, svg in iter_svgs(deb):
        if rel.startswith(tuple(f + "/" for f in SKIP_FOLDERS)):
            dropped["decorative folder (stars, gradients, patterns)"] += 1
            continue
        digest = hashlib.sha256(svg).digest()
        if digest in seen_bytes:
            dropped["byte-identical copy of another file"] += 1
            continue
        seen_bytes.add(digest)
        try:
            meta = parse_metadata(svg)
        except ValueError:
            dropped["SVG does not parse"] += 1
            continue
        items.append((rel, svg, meta))
    n_files = len(items) + sum(dropped.values())
    if max_drawings and max_drawings < len(items):
        step = len(items) / max_drawings
        items = [items[int(i * step)] for i in range(max_drawings)]
    # texts repeated across many drawings are collection names ("Part of the Flat Icon Collection ...")
    reps = Counter(m["title"] for _, _, m in items) + Counter(m["description"] for _, _, m in items)
    collection = {t for t, n in reps.items() if t and n >= COLLECTION_MIN}

    drawings = []
    for rel, svg, meta in tqdm(items, desc="openclipart", unit="svg", disable=not progress):
        caps = make_captions(meta, collection)
        if not caps:
            dropped["no usable text"] += 1
            continue
        try:
            img = render(svg)
        except ValueError as e:
            dropped["blank render" if "blank" in str(e) else "resvg cannot render"] += 1
            continue
        if float(np.asarray(img.convert("L"), dtype=np.float32).std()) < NEAR_BLANK_STD:
            dropped["near-blank render (white on white)"] += 1
            continue
        drawings.append({"rel": rel, "captions": caps, "img": img, "phash": phash_bits(img)})

    # a caption set shared by many drawings is collection keywords only ("computer, icons, action"):
    # it would make hundreds of unrelated drawings positives of each other
    for d in drawings:
        d["key"] = caption_key(d["captions"])
    per_key = Counter(d["key"] for d in drawings)
    shared = [d for d in drawings if per_key[d["key"]] >= COLLECTION_MIN]
    if shared:
        dropped[f"caption set shared by >= {COLLECTION_MIN} drawings"] = len(shared)
        drawings = [d for d in drawings if per_key[d["key"]] < COLLECTION_MIN]

    epaths, ehash, ethumb = emoji_fingerprints(emoji_images)
    near_emoji = []
    if len(ehash) and drawings:
        matches = emoji_matches(np.array([d["phash"] for d in drawings], dtype=np.uint64),
                                np.stack([thumbnail(d["img"]) for d in drawings]), ehash, ethumb)
        near_emoji = [[drawings[i]["rel"], epaths[j], dist, mae] for i, j, dist, mae in matches]
        if matches:
            dropped["near-duplicate of an emoji image"] = len(matches)
        gone = {i for i, *_ in matches}
        drawings = [d for i, d in enumerate(drawings) if i not in gone]

    # split unit = near-duplicate group joined with equal caption sets (which share a record key) and equal titles
    units = split_units(np.array([d["phash"] for d in drawings], dtype=np.uint64), [d["key"] for d in drawings],
                        group_max_distance,
                        titles=[next((r for r, k in d["captions"] if k == "title"), "") for d in drawings]
                        ) if drawings else []
    unit_name: dict = {}  # a unit is named by its smallest key: content-derived, so the split hash is stable
    for d, u in zip(drawings, units):
        unit_name[u] = min(unit_name.get(u, d["key"]), d["key"])
    splits = assign_splits({d["key"]: PurePosixPath(d["rel"]).parts[0] for d in drawings}, test_frac, val_frac,
                           families={d["key"]: unit_name[u] for d, u in zip(drawings, units)})

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        images, sentid = [], 0
        for d in drawings:
            rel = PurePosixPath(d["rel"])
            folder = tmp / "images" / rel.parent
            folder.mkdir(parents=True, exist_ok=True)
            (folder / (rel.stem + ".png")).write_bytes(png_bytes(d["img"]))
            imgid = len(images)
            sents = [{"raw": raw, "tokens": tokenize(raw), "sentid": sentid + i, "imgid": imgid, "kind": kind,
                      "templated": False} for i, (raw, kind) in enumerate(d["captions"])]
            sentid += len(sents)
            images.append({"split": splits[d["key"]], "filepath": str(rel.parent), "filename": rel.stem + ".png",
                           "imgid": imgid, "sentids": [s["sentid"] for s in sents], "sentences": sents,
                           "concept": d["key"], "corpus": "openclipart", "group": rel.parts[0],
                           "subgroup": str(rel.parent), "source": d["rel"], "phash": f"{int(d['phash']):016x}"})
        report = {"package": deb.name, "svg_files": n_files, "eligible": len(items), "images": len(images),
                  "dropped": dict(sorted(dropped.items())), "splits": summarize(images),
                  "emoji_images_compared": int(len(ehash)), "near_emoji": near_emoji,
                  "near_emoji_rule": {"max_distance": EMOJI_MAX_DISTANCE, "max_thumbnail_mae": EMOJI_MAX_MAE},
                  "group_max_distance": group_max_distance}
        (tmp / "dataset_openclipart.json").write_text(
            json.dumps({"dataset": "openclipart", "images": images, "build": report}, ensure_ascii=False) + "\n",
            encoding="utf-8")
        (tmp / "NOTICE").write_text(NOTICE + "\n", encoding="utf-8")
        validate_karpathy(tmp / "dataset_openclipart.json")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _replace(tmp: Path, out: Path) -> None:
    """Move a finished temp folder onto ``out``; the old output is removed only after the rename."""
    if out.exists():
        old = out.with_name(out.name + ".old-" + tmp.name.rsplit("-", 1)[-1])
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def summarize(images: list[dict]) -> dict:
    """Per split: images, keys (caption sets), captions and captions per kind."""
    res = {}
    for split in ("train", "val", "test"):
        imgs = [i for i in images if i["split"] == split]
        kinds = Counter(s["kind"] for i in imgs for s in i["sentences"])
        res[split] = {"images": len(imgs), "keys": len({i["concept"] for i in imgs}),
                      "captions": sum(kinds.values()), **{f"captions_{k}": n for k, n in sorted(kinds.items())}}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora.openclipart",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch the .deb (cached) and build the corpus")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--deb", type=Path, default=None, help="a local openclipart-svg .deb (default: fetch into cache)")
    b.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    b.add_argument("--emoji-images", type=Path, default=DEFAULT_CACHE.parent / "emoji" / "images",
                   help="emoji corpus images to de-duplicate against (skipped with a warning if missing)")
    b.add_argument("--max-drawings", type=int, default=None)
    b.add_argument("--test-frac", type=float, default=0.15)
    b.add_argument("--val-frac", type=float, default=0.10)
    args = ap.parse_args(argv)
    if not args.emoji_images.is_dir():
        print(f"warning: {args.emoji_images} missing: no de-duplication against emoji "
              "(build it with python -m cookie_lib.study.corpora.emoji build --out data/emoji)", file=sys.stderr)
    try:
        report = build(args.out, args.deb, args.cache_dir, args.emoji_images, args.max_drawings,
                       args.test_frac, args.val_frac)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {args.out} in {report['seconds']} s: {report['images']} drawings of {report['svg_files']} SVG files")
    for reason, n in report["dropped"].items():
        print(f"  dropped {n:5d}  {reason}")
    for split, c in report["splits"].items():
        print(f"{split:5s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
