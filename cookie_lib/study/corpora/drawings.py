"""Rendering and fingerprints of the Open Clip Art drawings: SVG -> 64 px PNG, perceptual hashes,
near-copies of emoji and the near-duplicate units that never straddle a split.

``render`` rasterises an SVG with resvg, crops it to its drawn pixels and pads it to a square on white;
``phash_bits`` and ``thumbnail`` fingerprint a rendered drawing; ``emoji_matches`` finds the drawings
that copy an emoji design (pHash within ``EMOJI_MAX_DISTANCE`` bits and thumbnail within
``EMOJI_MAX_MAE`` grey levels); ``split_units`` joins near-duplicates, equal caption sets and equal
titles into the units the split keeps whole.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .common import norm_text

SIZE = 64
RENDER = 128  # render width before cropping to content (2x the output, so the crop still has >= 64 px)
# near-copies of emoji: pHash alone confuses simple shapes (measured: a Moroccan flag vs the Argentine
# one, a striped flag vs a purple square at 2-6 bits), so a drawing is dropped only if its pHash is
# within EMOJI_MAX_DISTANCE bits of an emoji image AND its 16x16 RGB thumbnail within EMOJI_MAX_MAE
# grey levels (mean absolute difference, 0-255) of that image's; this catches re-drawn flags
# (France, Brazil, Pakistan, UAE) and objects (a flute) drawn like an emoji design
EMOJI_MAX_DISTANCE, EMOJI_MAX_MAE = 8, 25.0


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
