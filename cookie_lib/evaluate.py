"""Downstream evaluation of a trained model on one split: the paper's three tasks.

* cross-modal retrieval: i2t / t2i R@1/5/10 and RSUM over every caption of every image
  (positives share the instance key: image id for COCO/Flickr, concept for emoji);
* image retrieval: each image queries all other images; instance R@K (same key, i.e. the same concept
  drawn by another designer) and class mAP (same subgroup);
* text matching: one human-written text of a concept (CLDR label) queries the other kind of text
  (CLDR keyword list) of every concept; R@K and MRR.

The study's frozen-encoder baseline (PCA-whitened pooled features) is
:func:`cookie_lib.study.downstream.frozen_baseline`.

Command line: evaluate a trained run folder (``checkpoint.pt``, written by :mod:`cookie_lib.train`) on a split
of its corpus, or of another Karpathy-format corpus, and write the metrics as JSON::

    python -m cookie_lib.evaluate --run runs/cookie-s0 --split test [--out FILE] [--dataset JSON]

With the COCO corpus (a 5,000-image test split) the output also holds the COCO 1K protocol (mean over five
folds of 1,000 images, :func:`cookie_lib.metrics.coco_1k`) and 5K (the whole split).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config, ConfigError, config_from_dict, resolve_path
from .data import load_karpathy, text_matching_set
from .features import ImageTokens, SplitFeatures, TextTokens, split_features
from .metrics import coco_1k, cross_modal_retrieval, image_retrieval, text_matching
from .model import CookieModel, TextEncoder, VisualEncoder
from .runtime import atomic_write_json, manifest, pick_device


@torch.no_grad()
def embed_split(model: CookieModel, feats: SplitFeatures, device: torch.device, image_encoder=None,
                text_encoder=None, image_size: int = 64, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of the split's images (view 0) [N, d] and of its distinct caption texts [M, d]."""
    model.eval()
    images = ImageTokens(feats, image_encoder, image_size, device)
    texts = TextTokens(feats, text_encoder, device)
    for enc in (image_encoder, text_encoder):
        if enc is not None:
            enc.eval()
    n, m = len(feats.records), len(feats.texts)
    img = torch.cat([model.embed_image(images.tokens(torch.zeros(len(idx), dtype=torch.long), idx)).float().cpu()
                     for idx in torch.arange(n).split(batch_size)])
    txt = torch.cat([model.embed_text(*texts.tokens(rows)).float().cpu() for rows in torch.arange(m).split(batch_size)])
    return img, txt


def unimodal_metrics(img: torch.Tensor, txt: torch.Tensor, feats: SplitFeatures) -> dict[str, float]:
    """Image retrieval (img_*) and text matching (txt_*) from image [N, D] and distinct-text [M, D'] embeddings."""
    out: dict[str, float] = {}
    records = feats.records
    keys = [r.key for r in records]
    classes = [r.subgroup for r in records] if all(r.subgroup for r in records) else None
    if len(set(keys)) < len(keys) or classes is not None:
        ir = image_retrieval(img, keys, classes)
        out.update({f"img_{k}": v for k, v in ir.items()})
    try:
        q_texts, q_keys, c_texts, c_keys = text_matching_set(records)
    except ValueError:
        return out  # e.g. COCO: captions carry no "kind", so there is no text-matching set
    row = {t: i for i, t in enumerate(feats.texts)}
    missing = [t for t in q_texts + c_texts if t not in row]
    if missing:
        raise ValueError(f"{len(missing)} text-matching texts are not captions of the split (e.g. {missing[0]!r}); "
                         "raise data.max_captions")
    tm = text_matching(txt[[row[t] for t in q_texts]], txt[[row[t] for t in c_texts]], q_keys, c_keys)
    out.update({f"txt_{k}": v for k, v in tm.items()})
    return out


def evaluate_split(model: CookieModel, feats: SplitFeatures, device: torch.device, **encoders) -> dict[str, float]:
    """All three tasks for ``model`` on ``feats`` -> flat dict (i2t_r1 ... rsum, img_*, txt_*)."""
    img, txt = embed_split(model, feats, device, **encoders)
    rows, owner = feats.caption_index()
    out = cross_modal_retrieval(img, txt[rows], owner, img_keys=[r.key for r in feats.records])
    out.update(unimodal_metrics(img, txt, feats))
    return out


# ----------------------------------------------------------------------------- a trained run folder
CROSS_MODAL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "i2t_medr", "t2i_medr")
COCO_TEST_IMAGES = 5000
COCO_FOLDS = 5  # the 1K protocol: 5 folds of 1,000 images


@dataclass
class LoadedRun:
    """A trained model rebuilt from a checkpoint: the head, and the encoders when the run fine-tuned them.

    ``visual_encoder`` / ``text_encoder`` are None for a frozen (cached-feature) encoder: its outputs are
    the feature cache, so only the head is needed. ``steps`` = optimiser steps the checkpoint had taken.
    """
    config: Config
    model: CookieModel
    visual_encoder: VisualEncoder | None
    text_encoder: TextEncoder | None
    checkpoint: Path
    steps: int


def model_from_state(cfg: Config, state: dict[str, torch.Tensor]) -> CookieModel:
    """Rebuild :class:`CookieModel` from its state dict, reading the encoder widths from the weights.

    visual_proj.weight is [d, C_v], text_proj.weight is [d, C_t] and visual_pos is [1, T_v, d], so the
    model can be built without running (or even loading) the encoders.
    """
    try:
        c_v = state["visual_proj.weight"].shape[1]
        c_t = state["text_proj.weight"].shape[1]
        t_v = state["visual_pos"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a CookieModel state dict: {err.args[0]!r} is missing") from None
    model = CookieModel(cfg.model, c_v, c_t, t_v)
    model.load_state_dict(state)
    return model.eval()


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load ``run_dir/checkpoint.pt`` (keys "step_module" and "config", see ``Trainer.save_checkpoint``).

    The checkpoint's step module holds ``model.*`` (the head), ``loss.*`` (temperatures) and, for a
    fine-tuned run, ``visual_encoder.*`` / ``text_encoder.*``. Raises FileNotFoundError naming the missing
    folder or file and ValueError naming a checkpoint that cannot be read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} holds no trained checkpoint "
                                f"(train one with python -m cookie_lib.train --out {run_dir})")
    try:
        # weights_only=False: the checkpoint also holds RNG states (numpy arrays, Python tuples)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which one
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or "step_module" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} lacks the 'step_module' and 'config' entries of a cookie_lib.train checkpoint")
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as err:
        raise ValueError(f"{path}: its config is not valid here: {err}") from None
    state = ckpt["step_module"]
    device = pick_device(device) if isinstance(device, str) else device
    model = model_from_state(cfg, _sub_state(state, "model.")).to(device)
    visual = text = None
    m = cfg.model
    if any(k.startswith("visual_encoder.") for k in state):  # fine-tuned: the encoder's own weights are saved
        visual = VisualEncoder(m.visual_backbone, m.visual_weights, m.freeze_visual, m.visual_layer)
        visual.load_state_dict(_sub_state(state, "visual_encoder."))
        visual = visual.to(device).eval()
    if any(k.startswith("text_encoder.") for k in state):
        text = TextEncoder(m.text_model, m.freeze_text, m.max_text_len)
        text.load_state_dict(_sub_state(state, "text_encoder."))
        text = text.to(device).eval()
    steps = int(ckpt.get("state", {}).get("global_step", 0))
    return LoadedRun(cfg, model, visual, text, path, steps)


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto", dataset: str | Path | None = None,
                 image_root: str | Path | None = None) -> dict:
    """Every metric the corpus supports for the run in ``run_dir`` on ``split``.

    The corpus is the run's own (``config.data.dataset``) unless ``dataset`` names another Karpathy JSON.
    Returns {"metrics": flat dict of :func:`evaluate_split` (points 0-100; medr in ranks), "coco_1k" and
    "coco_5k" (COCO only), "notes", provenance (run, checkpoint, corpus, split, counts, manifest)}.
    COCO 1K = mean over the 5 folds of 1,000 consecutive test images; 5K = the whole 5,000-image split
    (the same numbers as the cross-modal entries of "metrics").
    """
    run = load_run(run_dir, device)
    cfg, dev = run.config, next(run.model.parameters()).device
    path = Path(dataset) if dataset is not None else resolve_path(cfg.data.dataset)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} does not exist (the run was trained on {cfg.data.dataset}; "
                                "pass --dataset to evaluate on a corpus elsewhere)")
    root = image_root if image_root is not None else (resolve_path(cfg.data.image_root) if cfg.data.image_root else None)
    corpus = load_karpathy(path, root, max_captions=cfg.data.max_captions)
    records = corpus.split(split)
    # one un-augmented view: evaluation never uses the augmented ones; the cache is shared with training
    feats = split_features(cfg, records, split, 1, path)
    encoders = dict(image_encoder=run.visual_encoder, text_encoder=run.text_encoder, image_size=cfg.model.image_size)
    metrics = evaluate_split(run.model, feats, dev, **encoders)
    out = {"run": str(Path(run_dir)), "checkpoint": str(run.checkpoint), "steps": run.steps, "split": split,
           "corpus": corpus.name, "dataset": str(path), "images": len(records),
           "captions": sum(len(r.captions) for r in records), "metrics": metrics, "notes": []}
    if corpus.name.lower() == "coco":
        if len(records) == COCO_TEST_IMAGES:
            img, txt = embed_split(run.model, feats, dev, **encoders)
            rows, owner = feats.caption_index()
            # the standard protocol: each image's positives are exactly its own captions (img_keys=None)
            out["coco_1k"] = coco_1k(img, txt[rows], owner, folds=COCO_FOLDS)
            out["coco_5k"] = {k: metrics[k] for k in CROSS_MODAL_KEYS if k in metrics}
        else:
            out["notes"].append(f"COCO 1K/5K skipped: split {split!r} has {len(records)} images, the protocol "
                                f"needs the {COCO_TEST_IMAGES:,} Karpathy test images")
    return {**out, **manifest(cfg.to_dict())}


def format_metrics(result: dict) -> str:
    """Human-readable lines for :func:`evaluate_run`'s result (one metric per line, 2 decimals)."""
    lines = [f"{result['run']} on {result['corpus']} {result['split']} ({result['images']} images, "
             f"{result['captions']} captions, {result['steps']} training steps)"]
    for section in ("metrics", "coco_1k", "coco_5k"):
        if section in result:
            width = max(map(len, result[section]), default=0)
            lines.append(f"[{section}]")
            lines += [f"  {k:{width}s} {v:8.2f}" for k, v in result[section].items()]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.evaluate",
                                description="Evaluate a trained run folder on a split (see module docstring).")
    p.add_argument("--run", required=True, help="run folder holding checkpoint.pt (cookie_lib.train --out)")
    p.add_argument("--split", default="test", help="split of the corpus (default: test)")
    p.add_argument("--out", default=None, help="JSON file to write (default: RUN/eval_SPLIT.json)")
    p.add_argument("--dataset", default=None, help="another Karpathy JSON to evaluate on (default: the run's)")
    p.add_argument("--image-root", default=None, help="image folder of --dataset (default: beside the JSON)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    a = p.parse_args(argv)
    try:
        result = evaluate_run(a.run, a.split, a.device, a.dataset, a.image_root)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run) / f"eval_{a.split}.json"
    atomic_write_json(result, out)
    print(format_metrics(result))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
