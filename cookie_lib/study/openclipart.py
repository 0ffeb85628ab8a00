"""Build the Open Clip Art 0.18 image-text corpus (Karpathy format) from the Debian package, offline.

Open Clip Art 0.18 (Debian ``openclipart-svg``, public domain) holds about 7.5k drawings, each an SVG
whose RDF metadata carries a human title, keywords and sometimes a description. Usage::

    python -m cookie_lib.study.openclipart build --out data/openclipart [--deb PATH]
        [--cache-dir data/.cache] [--emoji-images data/emoji/images] [--max-drawings N]

Without ``--deb`` the package is fetched once with ``apt-get download openclipart-svg`` into the
cache. Unpacking needs no Debian tool: a ``.deb`` is an ``ar`` archive (parsed here) whose member
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

Why one long module: .deb unpacking, RDF metadata, caption cleaning, rendering and de-duplication are one builder, each step small.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from cookie_lib.study.emoji import DEFAULT_CACHE, assign_splits, tokenize

PACKAGE = "openclipart-svg"
VERSION = "1:0.18+dfsg-19"  # the Debian version measured in data/README.md (apt may fetch a newer one)
SVG_ROOT = "usr/share/openclipart/svg/"
SKIP_FOLDERS = ("shapes/stars", "special/gradients", "special/patterns")  # decoration, no depicted object
SIZE = 64
RENDER = 128  # render width before cropping to content (2x the output, so the crop still has >= 64 px)
COLLECTION_MIN = 10  # a title/description shared by this many drawings names a collection, not a drawing
# near-copies of emoji: pHash alone confuses simple shapes (measured: a Moroccan flag vs the Argentine
# one, a striped flag vs a purple square at 2-6 bits), so a drawing is dropped only if its pHash is
# within EMOJI_MAX_DISTANCE bits of an emoji image AND its 16x16 RGB thumbnail within EMOJI_MAX_MAE
# grey levels (mean absolute difference, 0-255) of that image's; this catches re-drawn flags
# (France, Brazil, Pakistan, UAE) and objects (a flute) drawn like an emoji design
EMOJI_MAX_DISTANCE, EMOJI_MAX_MAE = 8, 25.0
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


# ------------------------------------------------------------------------------ .deb unpacking
def deb_members(deb: Path) -> dict[str, bytes]:
    """Members of an ``ar`` archive (a .deb) as {name: bytes}, read with the standard library.

    ar format: the magic ``!<arch>\\n``, then per member a 60-byte header (name 16 bytes, mtime 12,
    uid 6, gid 6, mode 8, size 10, magic ``\\x60\\n``) followed by ``size`` bytes, padded to an even offset.
    """
    data = Path(deb).read_bytes()
    if data[:8] != b"!<arch>\n":
        raise ValueError(f"{deb}: not an ar archive (a .deb starts with '!<arch>'), got {data[:8]!r}")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"{deb}: corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The package's file tree (``data.tar.xz``/``.gz``/``.bz2``/uncompressed) as an open TarFile."""
    members = deb_members(deb)
    for name, mode in (("data.tar.xz", "r:xz"), ("data.tar.gz", "r:gz"), ("data.tar.bz2", "r:bz2"),
                       ("data.tar", "r:")):
        if name in members:
            return tarfile.open(fileobj=io.BytesIO(members[name]), mode=mode)
    raise ValueError(f"{deb}: no readable data.tar member (members: {sorted(members)}; zstd needs Python 3.14)")


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


# ------------------------------------------------------------------------------ images
_UNIT_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_ROOT = re.compile(r"<svg\b[^>]*>", re.S)


def _length(tag: str, name: str) -> float | None:
    m = re.search(rf'\s{name}\s*=\s*["\']\s*([\d.eE+-]+)\s*([a-z]*)\s*["\']', tag)
    if not m or m.group(2) not in _UNIT_PX:
        return None
    try:
        return float(m.group(1)) * _UNIT_PX[m.group(2)]
    except ValueError:
        return None


def fix_root(svg: str, expand: bool = False) -> str:
    """Rewrite the root ``<svg>`` so resvg can size it; optionally show 3x the page around it.

    resvg rejects a root with unit lengths ("300pt") and no viewBox ("SVG has an invalid size"):
    without a viewBox one user unit is one px, so the page is viewBox "0 0 W H" with W, H in px.
    ``expand`` widens the viewBox to (x - w, y - h, 3w, 3h): drawings placed off their page (which
    render blank) then show, and the crop to content removes the margin.
    """
    m = _ROOT.search(svg)
    if not m:
        raise ValueError("no <svg> root element")
    tag = m.group(0)
    vb = re.search(r'\sviewBox\s*=\s*["\']([^"\']*)["\']', tag)
    nums = [float(v) for v in re.split(r"[\s,]+", vb.group(1).strip())] if vb else []
    if len(nums) != 4:
        w, h = _length(tag, "width"), _length(tag, "height")
        if not w or not h:
            raise ValueError("no viewBox and no usable width/height")
        nums = [0.0, 0.0, w, h]
    x, y, w, h = nums
    if expand:
        x, y, w, h = x - w, y - h, 3 * w, 3 * h
    new = re.sub(r'\s(?:width|height|viewBox)\s*=\s*("[^"]*"|\'[^\']*\')', "", tag)
    new = new[:4] + f' width="{w:g}" height="{h:g}" viewBox="{x:g} {y:g} {w:g} {h:g}"' + new[4:]
    return svg[:m.start()] + new + svg[m.end():]


def render(svg: bytes, size: int = SIZE, render_size: int = RENDER) -> Image.Image:
    """Rasterise an SVG, crop to its drawn pixels, pad to a centred square on white, resize to ``size``.

    The SVG is rendered ``render_size`` px wide (aspect kept); the crop box is the bounding box of
    pixels with alpha > 0. Roots resvg cannot size and drawings off their page are retried through
    ``fix_root``. If the content covers under half the canvas (page-sized SVGs with a small drawing)
    it is rendered again, larger (at most 2048 px wide), so the crop is sharp. Raises ValueError if
    resvg fails or nothing is drawn.
    """
    import resvg_py

    text = svg.decode("utf-8", errors="replace")

    def raster(src, width):
        png = resvg_py.svg_to_bytes(svg_string=src, width=width, skip_system_fonts=True)
        img = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
        return img, img.getchannel("A").getbbox()

    try:
        img, box = raster(text, render_size)
    except ValueError as e:
        if "size" not in str(e):
            raise
        text = fix_root(text)
        img, box = raster(text, render_size)
    if box is None:  # drawn off its page: look at 3x the page
        text = fix_root(text, expand=True)
        img, box = raster(text, render_size)
        if box is None:
            raise ValueError("blank render (no drawn pixel)")
    side = max(box[2] - box[0], box[3] - box[1])
    if side < render_size / 2:
        img, box = raster(text, min(2048, int(render_size * render_size / max(side, 1))))
        if box is None:
            raise ValueError("blank render (no drawn pixel)")
    img = img.crop(box)
    w, h = img.size
    square = Image.new("RGBA", (max(w, h),) * 2, (255, 255, 255, 255))
    square.alpha_composite(img, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def phash_bits(img: Image.Image) -> np.ndarray:
    """64-bit perceptual hash (imagehash.phash: DCT of a 32x32 grey image, top-left 8x8 vs median) as uint64."""
    import imagehash

    return np.packbits(imagehash.phash(img).hash.flatten()).view(">u8").astype(np.uint64)[0]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between uint64 hash vectors a (n,) and b (m,) -> (n, m) int."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def thumbnail(img: Image.Image) -> np.ndarray:
    """16x16x3 float box-filtered thumbnail (0-255), for the colour check of near-duplicates."""
    return np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BOX), dtype=np.float32)


def emoji_fingerprints(emoji_images: Path | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(relative paths, pHashes (m,) uint64, thumbnails (m, 16, 16, 3)) of every PNG under an emoji
    corpus's images/ folder (all designs and splits); empty if the folder is missing."""
    if emoji_images is None or not Path(emoji_images).is_dir():
        return [], np.zeros(0, dtype=np.uint64), np.zeros((0, 16, 16, 3), np.float32)
    files = sorted(Path(emoji_images).rglob("*.png"))
    imgs = [Image.open(f).convert("RGB") for f in files]
    return ([f.relative_to(emoji_images).as_posix() for f in files],
            np.array([phash_bits(im) for im in imgs], dtype=np.uint64), np.stack([thumbnail(im) for im in imgs]))


def emoji_matches(hashes: np.ndarray, thumbs: np.ndarray, ehash: np.ndarray, ethumb: np.ndarray,
                  max_distance: int = EMOJI_MAX_DISTANCE,
                  max_mae: float = EMOJI_MAX_MAE) -> list[tuple[int, int, int, float]]:
    """Near-copies of emoji: (drawing index, emoji index, pHash distance, thumbnail MAE) per drawing
    that has one (its closest qualifying emoji image, by distance then MAE). Qualifying: pHash
    distance <= ``max_distance`` and thumbnail MAE <= ``max_mae``. hashes (n,), thumbs (n, 16, 16, 3),
    ehash (m,), ethumb (m, 16, 16, 3)."""
    out = []
    for start in range(0, len(hashes), 512):
        dist = hamming(hashes[start:start + 512], ehash)
        for i, j in zip(*np.nonzero(dist <= max_distance)):
            mae = float(np.abs(thumbs[start + i] - ethumb[j]).mean())
            if mae <= max_mae:
                out.append((int(start + i), int(j), int(dist[i, j]), round(mae, 1)))
    best = {}
    for m in sorted(out, key=lambda m: (m[2], m[3])):
        best.setdefault(m[0], m)
    return [best[i] for i in sorted(best)]


def norm_text(text: str) -> str:
    """Caption text as compared by the leakage checks: lower-cased ``tokenize`` words joined by one space
    ("Red Apple!" and "red  apple" are the same string)."""
    return " ".join(tokenize(text))


def split_units(hashes: np.ndarray, keys: list[str], max_distance: int,
                titles: list[str] | None = None) -> np.ndarray:
    """(n,) unit ids: connected components (scipy) of the graph joining drawings whose pHashes are
    within ``max_distance`` bits, whose record keys are equal or (with ``titles``, one per drawing,
    "" for none) whose titles are equal after ``norm_text``. A unit never spans two splits, so an
    identical title is never both a pre-training and a test caption."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    first: dict[str, int] = {}
    rows = [np.arange(n)]
    cols = [np.array([first.setdefault(k, i) for i, k in enumerate(keys)], dtype=np.int64)]
    if titles is not None:
        named = [(i, norm_text(t)) for i, t in enumerate(titles) if norm_text(t)]
        rows.append(np.array([i for i, _ in named], dtype=np.int64))
        cols.append(np.array([first.setdefault("\0title:" + t, i) for i, t in named], dtype=np.int64))
    for start in range(0, n, 1024):  # blocks keep memory at 1024 x n
        i, j = np.nonzero(hamming(hashes[start:start + 1024], hashes) <= max_distance)
        rows.append(i + start)
        cols.append(j)
    r, c = np.concatenate(rows), np.concatenate(cols)
    return connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)[1]


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
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.openclipart", description=__doc__.split("\n")[0])
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
              "(build it with python -m cookie_lib.study.emoji build --out data/emoji)", file=sys.stderr)
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
