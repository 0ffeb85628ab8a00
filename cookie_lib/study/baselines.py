"""Sensitivity of the frozen-encoder baseline: which frozen features, whitened or not, chosen on validation.

The study's frozen baseline (:func:`frozen_baseline`, ``grid.frozen_run``) pools the *whole* CNN's
last feature map and whitens both modalities. Its candidates here:

* image: the mean-pooled grid tokens of the layer the trained models read (``model.visual_layer``, "layer")
  and of the whole CNN ("whole"), each PCA-whitened to ``model.dim`` on the pre-training train split (as
  ``frozen_baseline``) or only L2-normalised ("raw");
* text: MiniLM's masked mean, whitened or raw.

Every candidate is scored on the emoji *validation* concepts (image: cross-design R@1 ``img_r1``; text:
CLDR label -> keywords R@1 ``txt_r1``, the only text task with a validation split: WordNet has none) and on
the test tasks. The best candidate per modality on validation is the baseline (ties: the study's current
choice first); the test numbers of all of them are tabled, never used to choose. ::

    python -m cookie_lib.study.baselines --profile default [--out results/frozen_baselines.csv]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..config import Config
from ..features import CACHE_SEED, SplitFeatures, encode_images
from ..model import VisualEncoder
from ..model import masked_mean
from .downstream import DownstreamSuite

# (modality, source, whitened) in order of preference on ties; the first of each modality is the study's
IMAGE_CANDIDATES = (("image", "whole", True), ("image", "whole", False), ("image", "layer", True),
                    ("image", "layer", False))
TEXT_CANDIDATES = (("text", "minilm", True), ("text", "minilm", False))
SELECT_ON = {"image": "img_r1", "text": "txt_r1"}


def pooled_image_features(feats: SplitFeatures) -> torch.Tensor:
    """Mean over the frozen CNN's grid tokens of the un-augmented view: [N, C_v] float32."""
    return feats.image_tokens[0].float().mean(1)


def pooled_text_features(tokens: torch.Tensor, mask: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Masked mean of the frozen text encoder's token states [M, T, C_t] -> [M, C_t] float32 (batched: the
    float32 copy of a large cache would not fit in memory at once)."""
    return torch.cat([masked_mean(tokens[r].float(), mask[r]) for r in torch.arange(tokens.shape[0]).split(batch_size)])


def whitener(fit: torch.Tensor, dim: int, what: str):
    """sklearn PCA(n_components=dim, whiten=True) fit on ``fit`` [n, C]; capped at min(n, C) with a warning."""
    from sklearn.decomposition import PCA

    n_comp = min(dim, *fit.shape)
    if n_comp < dim:
        warnings.warn(f"frozen baseline: {what} PCA uses {n_comp} components, not dim={dim} "
                      f"(only {fit.shape[0]} samples of width {fit.shape[1]} in the pre-training set)")
    pca = PCA(n_components=n_comp, whiten=True, random_state=0).fit(fit.double().numpy())

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.from_numpy(pca.transform(x.double().numpy())).float(), dim=-1)

    apply.pca = pca
    return apply


def frozen_baseline(suite: DownstreamSuite, pretrain_feats: SplitFeatures, dim: int, whiten_image: bool = True,
                    whiten_text: bool = True) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Unimodal tasks (img_*, wn_*, txt_*) with the frozen encoders' pooled features, PCA-whitened (or, with
    ``whiten_image`` / ``whiten_text`` False, only L2-normalised: e = z / ||z||).

    Image: z = mean_t tokens[t] of the frozen CNN grid; text: z = masked mean of the MiniLM states.
    Each modality gets its own PCA(n_components = dim, the model width, whiten=True), fit on the
    pre-training set's features only (``pretrain_feats``: its train split, view 0 of every image and
    every distinct caption), then e = W (z - mu) / ||W (z - mu)||, so the baseline gets the same
    width and a linear map, as a trained model does. Returns (metrics, per-query lists) as
    :meth:`DownstreamSuite.evaluate`, without cross-modal metrics (the two spaces are unrelated).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive int (the model width), got {dim!r}")
    def unit(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)

    img_w = whitener(pooled_image_features(pretrain_feats), dim, "image") if whiten_image else unit
    txt_w = (whitener(pooled_text_features(pretrain_feats.text_tokens, pretrain_feats.text_mask), dim, "text")
             if whiten_text else unit)
    emb = {}
    if suite.emoji is not None:
        emb["emoji_img"] = img_w(pooled_image_features(suite.emoji))
        emb["emoji_txt"] = txt_w(pooled_text_features(suite.emoji.text_tokens, suite.emoji.text_mask))
    if suite.wordnet is not None:
        emb["wn_txt"] = txt_w(pooled_text_features(suite.wordnet.tokens, suite.wordnet.mask))
    return suite.score(emb, cross_modal=False)


def _raw(x):
    return F.normalize(x.float(), dim=-1)


def candidate_table(test: dict[str, DownstreamSuite], val: dict[str, DownstreamSuite], pretrain: dict, dim: int
                    ) -> pd.DataFrame:
    """One row per candidate: modality, source, whitened, the validation metric it is chosen on, its test
    metrics and ``chosen``.

    ``test`` / ``val``: {"layer", "whole"} -> a DownstreamSuite whose emoji features come from that visual
    source (val suites over the emoji validation split); ``pretrain``: {"layer", "whole"} -> SplitFeatures
    of the pre-training train split with that source's image tokens (their text tokens are the same).
    """
    rows = []
    text_fit = pooled_text_features(pretrain["layer"].text_tokens, pretrain["layer"].text_mask)
    for modality, source, whitened in IMAGE_CANDIDATES + TEXT_CANDIDATES:
        if modality == "image":
            f = whitener(pooled_image_features(pretrain[source]), dim, "image") if whitened else _raw
        else:
            f = whitener(text_fit, dim, "text") if whitened else _raw
        row = {"modality": modality, "source": source if modality == "image" else "minilm", "whitened": whitened}
        for split, suites in (("val", val), ("test", test)):
            suite = suites["layer" if modality == "text" else source]
            emb = {"emoji_img": f(pooled_image_features(suite.emoji)) if modality == "image" else None,
                   "emoji_txt": f(pooled_text_features(suite.emoji.text_tokens, suite.emoji.text_mask))
                   if modality == "text" else None}
            if suite.wordnet is not None and modality == "text":
                emb["wn_txt"] = f(pooled_text_features(suite.wordnet.tokens, suite.wordnet.mask))
            metrics = _score(suite, emb, modality)
            row.update({f"{split}_{k}": v for k, v in metrics.items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    df["chosen"] = False
    for modality, metric in SELECT_ON.items():
        sub = df[df.modality == modality]
        best = sub[f"val_{metric}"].max()
        df.loc[sub.index[sub[f"val_{metric}"] == best][0], "chosen"] = True  # first = preferred on ties
    return df


def _score(suite: DownstreamSuite, emb: dict, modality: str) -> dict[str, float]:
    """The unimodal metrics of one modality (img_* from the emoji images; txt_* and wn_* from the texts)."""
    if modality == "text":
        return _text_metrics(suite, emb)
    s = copy.copy(suite)
    s.wordnet, s.emoji_text_task = None, None  # score() then reads only the image embeddings
    metrics, _ = s.score({"emoji_img": emb["emoji_img"]}, cross_modal=False)
    return {k: v for k, v in metrics.items() if k.startswith("img_")}


def _text_metrics(suite: DownstreamSuite, emb: dict) -> dict[str, float]:
    from .. import metric_names as N
    from ..metrics import key_pairs, pair_ranks
    from .downstream import _rank_metrics

    out = {}
    if suite.emoji_text_task is not None:
        q_rows, q_keys, c_rows, c_keys = suite.emoji_text_task
        txt = emb["emoji_txt"]
        ranks, _ = pair_ranks(txt[q_rows], txt[c_rows], key_pairs(q_keys, c_keys))
        out.update(_rank_metrics(ranks, N.TXT_R1, N.TXT_MRR)[0])
    if suite.wordnet is not None and "wn_txt" in emb:
        t, wn = emb["wn_txt"], suite.wordnet
        ranks, _ = pair_ranks(t[wn.q_rows], t[wn.c_rows], key_pairs(wn.q_keys, wn.c_keys))
        out.update(_rank_metrics(ranks, N.WN_R1, N.WN_MRR)[0])
    return out


def whole_network_images(cfg: Config, feats: SplitFeatures) -> SplitFeatures:
    """``feats`` with its image tokens replaced by view 0 of the whole frozen CNN ([1, N, T, C_v])."""
    m = cfg.model
    encoder = VisualEncoder(m.visual_backbone, m.visual_weights, "all", "all")
    tokens = encode_images(feats.records, encoder, m.image_size, 1, CACHE_SEED, desc="frozen baseline images")
    return dataclasses.replace(feats, image_tokens=tokens)


def profile_table(profile: str, extra: dict | None = None, test: DownstreamSuite | None = None) -> pd.DataFrame:
    """``candidate_table`` for a profile's downstream emoji set (val and test splits), WordNet task and
    pre-training corpus, with the layer the profile's models read and the whole CNN. ``test``: the profile's
    test suite when the caller has it built (:func:`cookie_lib.study.grid.downstream_suite`), else one is built."""
    from ..config import load_config, resolve_path
    from ..features import split_features
    from ..data import load_corpus
    from .profile import load_run_profile

    study = load_run_profile(profile)
    cfg = load_config(profile, extra)
    corpus = load_corpus(cfg)
    pre = split_features(cfg, corpus.split("train"), "train", cfg.train.num_views, resolve_path(cfg.data.dataset))
    test = test or DownstreamSuite(cfg, emoji=study.downstream_emoji or None, oca=study.downstream_oca or None,
                                   wordnet=study.downstream_wordnet or None)
    val = DownstreamSuite(cfg, emoji=study.downstream_emoji or None, split="val")
    whole = cfg.model.visual_layer == "all"
    pretrain = {"layer": pre, "whole": pre if whole else whole_network_images(cfg, pre)}
    tests = {"layer": test, "whole": test}
    vals = {"layer": val, "whole": val}
    if not whole:
        tests["whole"], vals["whole"] = copy.copy(test), copy.copy(val)
        tests["whole"].emoji = whole_network_images(cfg, test.emoji)
        vals["whole"].emoji = whole_network_images(cfg, val.emoji)
    return candidate_table(tests, vals, pretrain, cfg.model.dim)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.baselines", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", type=Path, default=None, help="CSV file for the table")
    a = ap.parse_args(argv)
    df = profile_table(a.profile)
    print(df.round(2).to_string(index=False))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
