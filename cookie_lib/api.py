"""Load an exported model and embed images and texts: the three-line API.

::

    import cookie_lib
    model, preprocess, tokenizer = cookie_lib.load_model("results/model/cookie.pt")
    img = model.encode_image(["a.png", "b.png"])        # [2, d], unit rows
    txt = model.encode_text(["a red apple", "a boat"])   # [2, d], unit rows
    scores = img @ txt.T                                 # cosine similarities in [-1, 1]

* ``model`` (:class:`CookieEncoder`): the frozen encoders + the trained projections and weight-sharing
  head, in eval mode. ``encode_image(x)`` takes a list of PIL images or image paths, one image or path, or a
  tensor [B, 3, S, S] already made by ``preprocess``; ``encode_text(x)`` takes a list of strings (or one
  string, or the dict ``tokenizer`` returns). Both return L2-normalised float32 embeddings [B, d] on the
  CPU, computed without gradients:

      e_img = normalize(mean_t Head(W_v V(x) + b_v + P)),   e_txt = normalize(masked_mean_t Head(W_t T(x) + b_t))

  With frozen encoders the encoder outputs are rounded through float16 before the head, exactly as the
  feature cache stores them, so these embeddings equal the ones ``evaluate`` and ``search`` rank.
* ``preprocess`` (:class:`Preprocess`): PIL image or path -> tensor [3, S, S] (RGB, transparent pixels
  composited on white, resized and centre-cropped to S = ``model.image_size``, ImageNet-normalised).
* ``tokenizer`` (:class:`Tokenizer`): list of strings -> {"input_ids", "attention_mask"} [B, T] long, T at
  most ``max_text_len`` (the text encoder's own tokenizer).

An exported model file (``cookie-model/2``, written by :func:`cookie_lib.search.export_model`) holds the
head's weights, the run config, the encoders' identifiers and a compact fingerprint of the training data
(64-bit prefixes of the sha1 of every training caption, concept key and image file), so ``evaluate`` can warn
when a corpus shares items with the training data without that data at hand. Files of the older
``cookie-model/1`` format load too (without the fingerprint).
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Config, config_from_dict, project_root, resolve_path
from .data import load_karpathy
from .features import image_transform, load_image
from .model import CookieModel, TextEncoder, VisualEncoder, build_encoders, model_from_state
from .runtime import pick_device

EXPORT_FORMAT = "cookie-model/2"
READABLE_FORMATS = ("cookie-model/1", EXPORT_FORMAT)
EXPORT_HINT = "python -m cookie_lib.search --export-run {run} --model {out}"

__all__ = ["load_model", "CookieEncoder", "Preprocess", "Tokenizer", "ExportedModel", "load_export",
           "user_path", "EXPORT_FORMAT"]


# ----------------------------------------------------------------------------- paths and digests
def user_path(path: str | Path) -> Path:
    """A path a user typed: as given when absolute or present from the current folder, else from the project root.

    The current folder comes first so an installed package (whose "project root" is site-packages) finds
    the user's files; the project root second so the documented repository-relative paths work from anywhere.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    return resolve_path(p)


def digest64(data: bytes | str) -> int:
    """The first 8 bytes of sha1(data) as a signed int64 (strings are UTF-8 encoded): a compact item identity.

    Two different items collide with probability about n^2 / 2^65 (n = 10^5 items: 3e-10)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big", signed=True)


def file_digest64(path: Path) -> int:
    """:func:`digest64` of a file's bytes (the image itself, wherever and under whatever name it is stored)."""
    return digest64(Path(path).read_bytes())


def concept_keys(records) -> list[str]:
    """Instance keys that name a concept (Karpathy ``concept``), without a corpus namespace: a mixed corpus
    writes ``emoji:1F600`` for the emoji corpus's ``1F600``, so a leading ``name:`` is dropped. A key that is
    just the imgid is no identity across corpora (imgids restart at 0 in every file), so it is left out."""
    return [re.sub(r"^[A-Za-z_]+:", "", r.key) for r in records if r.key != str(r.imgid)]


def training_fingerprint(records) -> dict[str, torch.Tensor]:
    """Digests [n] int64 (sorted, distinct) of the captions, concept keys and image files of ``records``."""
    def tensor(values) -> torch.Tensor:
        return torch.tensor(sorted(set(values)), dtype=torch.int64)

    return {"captions": tensor(digest64(c) for r in records for c in r.captions),
            "concepts": tensor(digest64(k) for k in concept_keys(records)),
            "images": tensor(file_digest64(r.path) for r in records if r.path.is_file())}


def training_overlap(fingerprint: dict[str, torch.Tensor], records) -> dict[str, tuple[int, int]]:
    """{"captions" | "concepts" | "images": (items of ``records`` in the training data, items of ``records``)},
    counting distinct items (a caption text, a concept key, an image file's bytes)."""
    mine = {"captions": {digest64(c) for r in records for c in r.captions},
            "concepts": {digest64(k) for k in concept_keys(records)},
            "images": {file_digest64(r.path) for r in records if r.path.is_file()}}
    return {k: (len(v & set(fingerprint[k].tolist())), len(v)) for k, v in mine.items() if k in fingerprint}


def overlap_warning(overlap: dict[str, tuple[int, int]], trained_on: str, what: str) -> str | None:
    """One line naming how much of ``what`` the training data (``trained_on``) already holds, or None."""
    shared = [f"{n} of {total} {kind}" for kind, (n, total) in overlap.items() if n]
    if not shared:
        return None
    return (f"{what} shares {', '.join(shared)} with the model's training data ({trained_on}): "
            f"its scores are not zero-shot")


def _portable(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (a recorded path must not name this machine)."""
    p = Path(path).resolve()
    return p.relative_to(project_root()).as_posix() if p.is_relative_to(project_root()) else str(p)


def training_record(cfg: Config) -> dict:
    """What the export records about the training data: corpus, per-split counts, and the digests
    (:func:`cookie_lib.api.training_fingerprint`) of the TRAIN split (incl. restval) that evaluate checks
    a corpus against. The val split is left out: it chose the checkpoint but no loss saw it.

    An absent corpus file gives {"dataset": ..., "missing": True} (the export still works; no check later)."""
    path = resolve_path(cfg.data.dataset)
    root = resolve_path(cfg.data.image_root) if cfg.data.image_root else None
    if not path.is_file():
        return {"dataset": _portable(path), "missing": True}
    corpus = load_karpathy(path, root, max_captions=cfg.data.max_captions)
    return {"dataset": _portable(path), "corpus": corpus.name, "image_root": _portable(corpus.image_root),
            "split": "train", "counts": corpus.counts(), **training_fingerprint(corpus.split("train"))}


def training_overlap_warning(training: dict, records, what: str, cfg: Config | None = None) -> str | None:
    """:func:`overlap_warning` of ``records`` against an export's "training" record; without one (a training
    run folder, a cookie-model/1 file) against :func:`training_record` of ``cfg``'s corpus read now. None
    when neither is available or nothing is shared."""
    if not training or "captions" not in training:
        if cfg is None:
            return None
        training = training_record(cfg)
        if training.get("missing"):
            return None
    trained_on = f"{training.get('dataset', '?')} {training.get('split', 'train')}"
    return overlap_warning(training_overlap(training, records), trained_on, what)


# ----------------------------------------------------------------------------- reading an export
@dataclass
class ExportedModel:
    """An exported model ready to embed: head, config and (frozen or fine-tuned) encoders.

    ``info`` holds the file's "encoders", "source" and "training" entries (the latter empty for a
    cookie-model/1 file)."""
    config: Config
    model: CookieModel
    visual_encoder: VisualEncoder
    text_encoder: TextEncoder
    fine_tuned: bool  # True: encoders differ from the cached frozen ones, so the gallery is embedded live
    device: torch.device
    info: dict = field(default_factory=dict)
    path: Path | None = None


_MODELS: dict[tuple, ExportedModel] = {}


def _is_training_checkpoint(path: Path) -> bool:
    """True for a ``cookie_lib.train`` checkpoint: a torch zip whose pickle names the "step_module" entry.

    Read as bytes, so a checkpoint (which pickles numpy RNG states) is recognised without unpickling it."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
            return bool(pkl) and b"step_module" in z.read(pkl[0])
    except (zipfile.BadZipFile, OSError):
        return False


def read_export(path: Path) -> dict:
    """The dict inside an export file; ValueError with one line for a run folder, a training checkpoint or junk."""
    if path.is_dir():
        if (path / "checkpoint.pt").is_file():
            raise ValueError(f"{path} is a training run folder, not an exported model file: export it first with "
                             + EXPORT_HINT.format(run=path, out=path / "cookie.pt"))
        raise ValueError(f"{path} is a folder, not an exported model file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (write one with "
                                + EXPORT_HINT.format(run="RUN_DIR", out=path) + ")")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        if _is_training_checkpoint(path):
            raise ValueError(f"{path} is a training checkpoint, not an exported model file: export it first with "
                             + EXPORT_HINT.format(run=path.parent, out=path.parent / "cookie.pt")) from None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a readable model file ({type(err).__name__}: {first[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") not in READABLE_FORMATS:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        if isinstance(blob, dict) and "step_module" in blob:
            raise ValueError(f"{path} is a training checkpoint, not an exported model file: export it first with "
                             + EXPORT_HINT.format(run=path.parent, out=path.parent / "cookie.pt"))
        raise ValueError(f"{path} is not a {EXPORT_FORMAT} file (got format {got!r})")
    return blob


def load_export(model_file: str | Path, device: str = "auto") -> ExportedModel:
    """Read an export file and build its encoders (memoised per file, mtime and device).

    Raises FileNotFoundError for a missing file and ValueError (one line, naming the file) for a run
    folder or a training checkpoint ("export it first with ..."), an unreadable file or another format;
    ``device`` is checked by :func:`cookie_lib.runtime.pick_device`.
    """
    path = user_path(model_file)
    blob = read_export(path)
    dev = pick_device(device)
    key = (str(path), path.stat().st_mtime_ns, str(dev))
    if key in _MODELS:
        return _MODELS[key]
    cfg = config_from_dict(blob["config"])
    model = model_from_state(cfg, blob["model"]).to(dev)
    visual, text = build_encoders(cfg)
    deltas = blob.get("encoder_deltas", {})
    for enc, name in ((visual, "visual"), (text, "text")):
        if deltas.get(name):
            state = enc.state_dict()
            state.update(deltas[name])
            enc.load_state_dict(state)
    em = ExportedModel(cfg, model, visual.to(dev).eval(), text.to(dev).eval(), bool(deltas), dev,
                       {"encoders": blob.get("encoders", {}), "source": blob.get("source", {}),
                        "training": blob.get("training", {})}, path)
    _MODELS[key] = em
    return em


# ----------------------------------------------------------------------------- the public API
class Preprocess:
    """PIL image or image path -> float tensor [3, S, S], the un-augmented transform the cache uses."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.transform = image_transform(image_size, False)

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image {path} does not exist")
            try:
                image = load_image(path)
            except Exception as err:  # noqa: BLE001 - PIL raises many types for a non-image file
                raise ValueError(f"image {path} does not decode ({type(err).__name__}: {err})") from None
        elif hasattr(image, "convert"):  # a PIL image: the same RGB / alpha-on-white handling as a file
            image = _pil_rgb(image)
        else:
            raise TypeError(f"preprocess: expected a PIL image or a path, got {type(image).__name__}")
        return self.transform(image)

    def __repr__(self) -> str:
        return f"Preprocess(image_size={self.image_size})"


def _pil_rgb(im):
    from PIL import Image

    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    return im.convert("RGB")


class Tokenizer:
    """list of strings -> {"input_ids", "attention_mask"} [B, T] long (padded to the longest, T <= max_len)."""

    def __init__(self, text_encoder: TextEncoder):
        self._encoder = text_encoder
        self.max_len = text_encoder.max_len

    def __call__(self, texts) -> dict[str, torch.Tensor]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"texts[{i}] must be a non-empty string, got {t!r}")
        return self._encoder.tokenize(texts)

    def __repr__(self) -> str:
        return f"Tokenizer(max_len={self.max_len})"


class CookieEncoder(torch.nn.Module):
    """The exported model as one module: ``encode_image`` / ``encode_text`` -> unit embeddings [B, d].

    Attributes: ``dim`` (d), ``image_size`` (S), ``config`` (the run's Config), ``info`` (encoders, source
    run and training-data fingerprint of the export), ``preprocess``, ``tokenizer``.
    """

    def __init__(self, exported: ExportedModel, batch_size: int = 256):
        super().__init__()
        self.head, self.visual, self.text = exported.model, exported.visual_encoder, exported.text_encoder
        self.config, self.info, self.fine_tuned = exported.config, exported.info, exported.fine_tuned
        self.image_size, self.dim, self.batch_size = exported.config.model.image_size, exported.config.model.dim, batch_size
        self.preprocess, self.tokenizer = Preprocess(self.image_size), Tokenizer(self.text)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def _cache_precision(self, tokens: torch.Tensor) -> torch.Tensor:
        # frozen encoders: the head was trained (and the galleries are embedded) on float16-cached outputs
        return tokens if self.fine_tuned else tokens.half().float()

    @torch.no_grad()
    def encode_image(self, images) -> torch.Tensor:
        """Images -> [B, d] float32, unit rows. ``images``: a tensor [B, 3, S, S] or [3, S, S] from
        ``preprocess``, or a PIL image, a path, or a list of them."""
        self.eval()
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"encode_image: expected a tensor [B, 3, H, W], got shape {tuple(images.shape)}")
        else:
            items = [images] if isinstance(images, (str, Path)) or hasattr(images, "convert") else list(images)
            if not items:
                raise ValueError("encode_image: no image given")
            x = torch.stack([self.preprocess(im) for im in items])
        out = [self.head.embed_image(self._cache_precision(self.visual(chunk.to(self.device)))).float().cpu()
               for chunk in x.split(self.batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def encode_text(self, texts) -> torch.Tensor:
        """Texts -> [B, d] float32, unit rows. ``texts``: a list of strings, one string, or ``tokenizer``'s dict."""
        self.eval()
        enc = texts if isinstance(texts, dict) else self.tokenizer(texts)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        out = []
        for rows in torch.arange(ids.shape[0]).split(self.batch_size):
            tokens, m = self.text(ids[rows].to(self.device), mask[rows].to(self.device))
            out.append(self.head.embed_text(self._cache_precision(tokens), m).float().cpu())
        return torch.cat(out)

    def train(self, mode: bool = True):
        # an inference wrapper: dropout in the head must never switch on (there is no training path here)
        return super().train(False)


def load_model(model_file: str | Path = "results/model/cookie.pt", device: str = "auto"
               ) -> tuple[CookieEncoder, Preprocess, Tokenizer]:
    """(model, preprocess, tokenizer) of an exported model file (see the module docstring).

    ``device``: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...; a CUDA device without a GPU
    is a one-line error. A training run folder or ``checkpoint.pt`` is refused with the export command.
    """
    model = CookieEncoder(load_export(model_file, device))
    return model, model.preprocess, model.tokenizer
