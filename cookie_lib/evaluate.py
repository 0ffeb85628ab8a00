"""Downstream evaluation of a trained model on one split: the paper's three tasks.

* cross-modal retrieval: i2t / t2i R@1/5/10 and RSUM over every caption of every image
  (positives share the instance key: image id for COCO/Flickr, concept for emoji);
* image retrieval: each image queries all other images; instance R@K (same key, i.e. the same concept
  drawn by another designer) and class mAP (same subgroup);
* text matching: one human-written text of a concept (CLDR label) queries the other kind of text
  (CLDR keyword list) of every concept; R@K and MRR.

:func:`frozen_baseline` scores the same unimodal tasks with the pretrained encoders alone (mean-pooled
tokens), the reference the paper's "+5.7 % image retrieval / +3.9 % text matching" is read against here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import text_matching_set
from .features import ImageTokens, SplitFeatures, TextTokens
from .metrics import cross_modal_retrieval, image_retrieval, text_matching
from .model import CookieModel, masked_mean


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


def frozen_baseline(feats: SplitFeatures) -> dict[str, float]:
    """Unimodal tasks with the frozen pretrained encoders: mean-pooled CNN grid / MiniLM token states."""
    img = F.normalize(feats.image_tokens[0].float().mean(1), dim=-1)
    txt = F.normalize(masked_mean(feats.text_tokens.float(), feats.text_mask), dim=-1)
    return unimodal_metrics(img, txt, feats)
