"""Downstream evaluation of a trained model on one split: the paper's three tasks.

* cross-modal retrieval: i2t / t2i R@1/5/10, RSUM (their sum, max 600) and mR = RSUM / 6 under one of
  two protocols (positives share the instance key: image id for COCO/Flickr, concept for emoji):

  - ``study`` (the default; the study's downstream suite, :mod:`cookie_lib.study.downstream`): the
    caption gallery holds EACH DISTINCT CAPTION ONCE. Image -> text: an image is a hit at K if one of its
    captions is in the top K of the M distinct captions; text -> image: each distinct caption is one
    query, its positives are all images that carry it. The emoji designs of one concept share their
    captions, so ranking every copy would count the same text up to five times.
  - ``karpathy`` (COCO / Flickr30K papers, and the trainer's per-epoch validation): every caption of
    every image is a gallery item and a query (duplicates included); positives = captions / images of
    the same key. On corpora without repeated captions (COCO, Flickr30K) both protocols agree.

* image retrieval: each image queries all other images; instance R@K (same key, i.e. the same concept
  drawn by another designer) and class mAP (same subgroup);
* text matching: one human-written text of a concept (CLDR label) queries the other kind of text
  (CLDR keyword list) of every concept; R@K and MRR.

The study's frozen-encoder baseline (PCA-whitened pooled features) is
:func:`cookie_lib.study.baselines.frozen_baseline`.

Command line: evaluate an exported model file (``--model``, :func:`cookie_lib.search.export_model`) or a
training run folder (``--run``, ``checkpoint.pt`` written by :mod:`cookie_lib.train`) on a split of its
training corpus or of any other Karpathy-format corpus (``--dataset``); print one table and write the
metrics as JSON::

    python -m cookie_lib.evaluate --model results/model/cookie.pt --dataset data/emoji/dataset_emoji.json
    python -m cookie_lib.evaluate --run runs/cookie-s0 --split test [--out FILE] [--protocol karpathy]

The corpus is validated first (:func:`cookie_lib.data.validated_split`, the checks of ``python -m
cookie_lib.data validate``). A warning names how many captions, concepts and images of the split the
model's training data holds (recorded in the export; read from the training corpus for a run folder).
With the COCO corpus (a 5,000-image test split) the output also holds the COCO 1K protocol (mean over five
folds of 1,000 images, :func:`cookie_lib.metrics.coco_1k`) and 5K (the whole split), always with the
Karpathy protocol the COCO literature uses.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import metric_names as N
from .config import Config, ConfigError, config_from_dict, resolve_path
from .data import corpus_hint, default_corpus, load_karpathy, text_matching_set, validated_split
from .features import ImageTokens, SplitFeatures, TextTokens, split_features
from .metrics import (caption_pairs, coco_1k, cross_modal_pair_ranks, cross_modal_retrieval, image_retrieval,
                      text_matching)
from .model import CookieModel, TextEncoder, VisualEncoder, model_from_state
from .runtime import atomic_write_json, manifest, pick_device

# (query kind, candidate kind) of the text -> text matching task (txt_* metrics), run on any corpus whose
# captions carry these kinds: the emoji corpus's CLDR label -> its CLDR keyword list (both human-written)
TEXT_MATCHING_KINDS = ("cldr_label", "cldr_keywords")


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
        out.update({N.IMAGE_RETRIEVAL[k]: v for k, v in ir.items()})
    try:
        q_texts, q_keys, c_texts, c_keys = text_matching_set(records, *TEXT_MATCHING_KINDS)
    except ValueError:
        return out  # e.g. COCO: captions carry no "kind", so there is no text-matching set
    row = {t: i for i, t in enumerate(feats.texts)}
    missing = [t for t in q_texts + c_texts if t not in row]
    if missing:
        raise ValueError(f"{len(missing)} text-matching texts are not captions of the split (e.g. {missing[0]!r}); "
                         "raise data.max_captions")
    tm = text_matching(txt[[row[t] for t in q_texts]], txt[[row[t] for t in c_texts]], q_keys, c_keys)
    out.update({N.TEXT_MATCHING[k]: v for k, v in tm.items()})
    return out


PROTOCOLS = ("study", "karpathy")
KS = N.KS


def distinct_caption_retrieval(img: torch.Tensor, txt: torch.Tensor, feats: SplitFeatures) -> dict[str, float]:
    """The study protocol from image [N, d] and DISTINCT-caption [M, d] embeddings: i2t_r{1,5,10},
    t2i_r{1,5,10} (points), rsum, mr = rsum / 6, i2t_medr / t2i_medr = 1 + the lower median of the 0-based
    ranks (torch.median; the Karpathy protocol's :func:`cookie_lib.metrics.median_rank` averages the two
    middle ranks of an even count)."""
    i2t, t2i = cross_modal_pair_ranks(img, txt, caption_pairs(feats.caption_ids))
    out = {name: 100.0 * float((r < k).double().mean())
           for names, r in ((N.KARPATHY.i2t, i2t), (N.KARPATHY.t2i, t2i)) for name, k in zip(names, KS)}
    out[N.RSUM] = sum(out.values())
    out[N.MR] = out[N.RSUM] / 6
    out[N.I2T_MEDR], out[N.T2I_MEDR] = (float(r.double().median()) + 1.0 for r in (i2t, t2i))
    return out


def evaluate_split(model: CookieModel, feats: SplitFeatures, device: torch.device, protocol: str = "karpathy",
                   **encoders) -> dict[str, float]:
    """All three tasks for ``model`` on ``feats`` -> flat dict (i2t_r1 ... rsum, mr, img_*, txt_*).

    ``protocol``: "karpathy" (every caption; the trainer's validation) or "study" (each distinct caption
    once), see the module docstring. The unimodal tasks are the same under both."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: choose one of {list(PROTOCOLS)}")
    img, txt = embed_split(model, feats, device, **encoders)
    if protocol == "study":
        out = distinct_caption_retrieval(img, txt, feats)
    else:
        rows, owner = feats.caption_index()
        out = cross_modal_retrieval(img, txt[rows], owner, img_keys=[r.key for r in feats.records])
    out.update(unimodal_metrics(img, txt, feats))
    return out


# ----------------------------------------------------------------------------- a trained run folder
CROSS_MODAL_KEYS = (*N.KARPATHY.i2t, *N.KARPATHY.t2i, N.RSUM, N.I2T_MEDR, N.T2I_MEDR)
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


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load ``run_dir/checkpoint.pt`` (keys "step_module" and "config", see ``Trainer.save_checkpoint``).

    The checkpoint's step module holds ``model.*`` (the head), ``loss.*`` (temperatures) and, for a
    fine-tuned run, ``visual_encoder.*`` / ``text_encoder.*``. Raises FileNotFoundError naming the missing
    folder or file and ValueError naming a checkpoint that cannot be read.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        hint = (f"it is a checkpoint: pass its folder, --run {run_dir.parent}" if run_dir.name == "checkpoint.pt"
                else f"an exported model file is evaluated with --model {run_dir}")
        raise FileNotFoundError(f"run folder {run_dir} is a file, not a folder ({hint})")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        exported = sorted(run_dir.glob("*.pt"))
        if exported:  # e.g. results/model: an export, not a run
            raise FileNotFoundError(f"{path} does not exist: {run_dir} holds no training checkpoint but "
                                    f"{exported[0].name}; evaluate an exported model with --model {exported[0]}")
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


def evaluate_model(model: str | Path | None = None, run: str | Path | None = None, split: str = "test",
                   device: str = "auto", dataset: str | Path | None = None, image_root: str | Path | None = None,
                   protocol: str = "study") -> dict:
    """Every metric the corpus supports for an exported ``model`` file or a training ``run`` folder on ``split``.

    The corpus is ``dataset`` (a Karpathy JSON) or by default :func:`cookie_lib.data.default_corpus`: the
    model's training corpus if it has ``split``, else the built emoji corpus, else the committed fixture
    (a pre-training corpus has no test split). It is validated first. Returns {"metrics": flat dict of :func:`evaluate_split` plus
    "mr" (points 0-100; medr in ranks), "coco_1k" and "coco_5k" (COCO only), "notes", "training_overlap" (the
    one-line warning of :func:`cookie_lib.api.overlap_warning`, or None), "protocol", provenance (model or run, corpus, split, counts, manifest)}.
    COCO 1K = mean over the 5 folds of 1,000 consecutive test images; 5K = the whole 5,000-image split,
    both with the Karpathy protocol.
    """
    from .api import load_export, user_path

    if (model is None) == (run is None):
        raise ValueError("give exactly one of an exported model file (--model) or a training run folder (--run)")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: choose one of {list(PROTOCOLS)}")
    if model is not None:
        em = load_export(model, device)
        cfg, head, dev, training = em.config, em.model, em.device, em.info.get("training", {})
        live = (em.visual_encoder, em.text_encoder) if em.fine_tuned else (None, None)
        source = {"model": str(model), "run": em.info.get("source", {}).get("run"),
                  "steps": em.info.get("source", {}).get("steps", 0)}
    else:
        r = load_run(run, device)
        cfg, head, training = r.config, r.model, {}
        dev = next(r.model.parameters()).device
        live = (r.visual_encoder, r.text_encoder)
        source = {"run": str(Path(run)), "checkpoint": str(r.checkpoint), "steps": r.steps}
    own = False  # the run's own corpus: its configured image root applies
    if dataset is not None:
        path = user_path(dataset)
    else:
        path = default_corpus(cfg, split)
        if not path.is_file():
            hint = corpus_hint(path)
            raise FileNotFoundError(f"corpus {path} does not exist (the model was trained on {cfg.data.dataset}"
                                    + (f"; {hint}" if hint else "") + "; pass --dataset to evaluate on another corpus)")
        own = path == resolve_path(cfg.data.dataset)
    if not path.is_file():
        hint = corpus_hint(path)
        raise FileNotFoundError(f"corpus {path} does not exist" + (f" ({hint})" if hint else ""))
    if image_root is not None:
        root = user_path(image_root)
    else:
        root = resolve_path(cfg.data.image_root) if cfg.data.image_root and dataset is None and own else None
    corpus, records = validated_split(path, root, split, cfg.data.max_captions)
    # one un-augmented view: evaluation never uses the augmented ones; the cache is shared with training
    feats = split_features(cfg, records, split, 1, path)
    encoders = dict(image_encoder=live[0], text_encoder=live[1], image_size=cfg.model.image_size)
    metrics = evaluate_split(head, feats, dev, protocol, **encoders)
    metrics.setdefault(N.MR, metrics[N.RSUM] / 6)
    out = {**source, "split": split, "protocol": protocol, "corpus": corpus.name, "dataset": str(path),
           "images": len(records), "captions": sum(len(r.captions) for r in records),
           "distinct_captions": len(feats.texts), "metrics": metrics, "notes": []}
    from .api import _portable, training_overlap_warning

    warning = training_overlap_warning(training, records, f"{_portable(path)} {split}", cfg)
    out["training_overlap"] = warning  # printed on stderr by the command line
    if corpus.name.lower() == "coco":
        if len(records) == COCO_TEST_IMAGES:
            img, txt = embed_split(head, feats, dev, **encoders)
            rows, owner = feats.caption_index()
            # the standard protocol: each image's positives are exactly its own captions (img_keys=None)
            out["coco_1k"] = coco_1k(img, txt[rows], owner, folds=COCO_FOLDS)
            karpathy = metrics if protocol == "karpathy" else evaluate_split(head, feats, dev, "karpathy", **encoders)
            out["coco_5k"] = {k: karpathy[k] for k in CROSS_MODAL_KEYS if k in karpathy}
        else:
            out["notes"].append(f"COCO 1K/5K skipped: split {split!r} has {len(records)} images, the protocol "
                                f"needs the {COCO_TEST_IMAGES:,} Karpathy test images")
    return {**out, **manifest(cfg.to_dict())}


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto", dataset: str | Path | None = None,
                 image_root: str | Path | None = None, protocol: str = "study") -> dict:
    """:func:`evaluate_model` of a training run folder (``run_dir/checkpoint.pt``)."""
    return evaluate_model(run=run_dir, split=split, device=device, dataset=dataset, image_root=image_root,
                          protocol=protocol)


def format_metrics(result: dict) -> str:
    """One table for :func:`evaluate_model`'s result: cross-modal R@K both ways with RSUM and mR, then the
    unimodal tasks the corpus supports, then COCO 1K/5K and the notes (2 decimals, points)."""
    m = result["metrics"]
    what = f"model {result['model']}" if result.get("model") else f"run {result['run']}"
    from .api import _portable

    lines = [f"{what} ({result['steps']} training steps) on {result['corpus']} {result['split']} "
             f"({_portable(result['dataset'])}): {result['images']} "
             f"images, {result['captions']} captions ({result.get('distinct_captions', '?')} distinct); "
             f"protocol {result['protocol']}", "",
             f"{'task':28s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s}  other"]

    def row(name, names, extra=""):
        vals = [m.get(n) for n in names]
        cells = " ".join(f"{v:7.2f}" if v is not None else f"{'-':>7s}" for v in vals)
        lines.append(f"{name:28s} {cells}  {extra}".rstrip())

    row("image -> text", N.KARPATHY.i2t, f"medr {m[N.I2T_MEDR]:.1f}" if N.I2T_MEDR in m else "")
    row("text -> image", N.KARPATHY.t2i, f"medr {m[N.T2I_MEDR]:.1f}" if N.T2I_MEDR in m else "")
    lines.append(f"{'cross-modal':28s} RSUM {m[N.RSUM]:.2f}   mR {m[N.MR]:.2f}")
    if N.IMG_R1 in m:
        row("image -> image (same key)", (N.IMG_R1, N.IMG_R5, N.IMG_R10),
            f"mAP {m[N.IMG_MAP]:.2f} (same class)" if N.IMG_MAP in m else "")
    if N.TXT_R1 in m:
        row("label -> keywords (text)", (N.TXT_R1, N.TXT_R5, N.TXT_R10), f"MRR {m[N.TXT_MRR]:.2f}")
    for section in ("coco_1k", "coco_5k"):
        if section in result:
            c = result[section]
            lines.append(f"[{section}, karpathy protocol] " + "  ".join(f"{k} {c[k]:.2f}" for k in CROSS_MODAL_KEYS
                                                                       if k in c))
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.evaluate",
                                description="Evaluate an exported model or a trained run folder on a split "
                                            "(see the module docstring).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="exported model file (e.g. results/model/cookie.pt)")
    which.add_argument("--run", help="training run folder holding checkpoint.pt (cookie_lib.train --out)")
    p.add_argument("--split", default="test", help="split of the corpus (default: test)")
    p.add_argument("--out", default=None, help="JSON file to write (default: RUN/eval_SPLIT.json for --run; "
                                               "none for --model)")
    p.add_argument("--dataset", default=None,
                   help="Karpathy JSON to evaluate on (default: the model's corpus if it has --split, else the "
                        "built emoji corpus, else the committed fixture)")
    p.add_argument("--image-root", default=None, help="image folder of --dataset (default: beside the JSON)")
    p.add_argument("--protocol", default="study", choices=PROTOCOLS,
                   help="study (default): each distinct caption once; karpathy: every caption of every image")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    a = p.parse_args(argv)
    from .errors import USER_ERRORS

    try:
        result = evaluate_model(a.model, a.run, a.split, a.device, a.dataset, a.image_root, a.protocol)
    except (FileNotFoundError, ValueError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (Path(a.run) / f"eval_{a.split}.json" if a.run else None)
    print(format_metrics(result))
    if result["training_overlap"]:
        print(f"warning: {result['training_overlap']}", file=sys.stderr)
    if out is not None:
        atomic_write_json(result, out)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
