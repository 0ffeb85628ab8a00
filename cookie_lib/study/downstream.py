"""Downstream evaluation suite: tasks that pre-training never sees.

A pre-trained model is scored, zero-shot, on:

* ``emoji_*`` / ``oca_*``: cross-modal retrieval on the emoji TEST concepts and on the Open Clip Art
  TEST split, with EACH DISTINCT CAPTION ONCE in the gallery. Image -> text: image i is a hit at K if
  any of its captions is in the top K of the M distinct captions. Text -> image: a caption's positives
  are all images carrying it (the designs of one emoji literally share their captions). R@1/5/10 both
  ways, ``rsum`` (their sum, max 600) and ``mr = rsum / 6``.
* ``img_*``: cross-design image retrieval on the emoji test concepts: each image queries every other
  test image; positives = the other designs of its concept (the query itself is removed). ``img_r1``
  and ``img_map`` (AP over images of the same CLDR subgroup, the class-level protocol). The
  design-by-design R@1 matrix is :meth:`DownstreamSuite.design_matrix`.
* ``wn_*``: WordNet lemma -> gloss text matching (``data/wordnet/wordnet_task.json``): R@1 and MRR.
* ``txt_*``: emoji CLDR label -> keyword list (secondary, in-domain): R@1 and MRR.

Every metric is in points (0-100) and is the mean of a per-query list returned beside it, so runs can
be compared query by query (paired tests): per image ``emoji_i2t_mr = 100 (h1 + h5 + h10) / 3`` with
h_K = [rank < K], per distinct caption ``emoji_t2i_mr``, per query ``img_r1 = 100 h1``, ``img_map =
100 AP``, ``wn_mrr = 100 / (rank + 1)``, ... ``emoji_mr`` = mean of the means of ``emoji_i2t_mr``
and ``emoji_t2i_mr`` (= rsum / 6). Ranks are pessimistic (ties broken negatives first), computed by
the rank engine of :mod:`cookie_lib.metrics`; every name is a constant of :mod:`cookie_lib.metric_names`.

Frozen-encoder token features are cached exactly as for training (:func:`cookie_lib.features.split_features`);
the text-only WordNet task has its own text-token cache (:mod:`cookie_lib.study.texttask`). The frozen-encoder
baseline on the same tasks is :func:`cookie_lib.study.baselines.frozen_baseline`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import metric_names as N
from ..config import Config, resolve_path
from ..data import ImageRecord, load_karpathy, text_matching_set
from ..evaluate import TEXT_MATCHING_KINDS, embed_split
from ..features import SplitFeatures, split_features
from ..metrics import caption_pairs, cross_modal_pair_ranks, key_pairs, pair_average_precision, pair_ranks
from .texttask import TextTask, text_task_features

KS = N.KS

__all__ = ["DownstreamSuite", "design_matrix_from_embeddings", "record_designs"]


# ----------------------------------------------------------------------------- helpers


def record_designs(json_path: Path, records: list[ImageRecord]) -> list[str]:
    """The design (drawing style) of each record: the JSON's "design" field, else the image's folder name."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    by_id = {img["imgid"]: img.get("design") for img in data["images"]}
    return [by_id.get(r.imgid) or r.path.parent.name for r in records]


def _caption_pairs(feats: SplitFeatures) -> torch.Tensor:
    """(image, distinct caption row) pairs [2, P]: every caption of every image, each text row once per image."""
    return caption_pairs(feats.caption_ids)  # shared with cookie_lib.evaluate's study protocol


def _hits(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return 100.0 * (ranks < k).double()


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _rank_metrics(ranks: torch.Tensor, r1_name: str, mrr_name: str
                  ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """R@1 and MRR (points) of a text-matching task and their per-query lists (hit x 100, 100 / (rank + 1))."""
    r1, rr = _hits(ranks, 1), 100.0 / (ranks.double() + 1.0)
    return {r1_name: _mean(r1), mrr_name: _mean(rr)}, {r1_name: r1.tolist(), mrr_name: rr.tolist()}


def _cross_modal(img: torch.Tensor, txt: torch.Tensor, feats: SplitFeatures, names: N.CrossModalNames):
    """De-duplicated-gallery cross-modal retrieval from image [N, d] and distinct-caption [M, d] embeddings:
    R@K both ways, rsum, mr = rsum / 6 and the per-query lists names.i2t_mr [N] / names.t2i_mr [M]."""
    i2t, t2i = cross_modal_pair_ranks(img, txt, _caption_pairs(feats))
    out: dict[str, float] = {}
    for direction, ranks in ((names.i2t, i2t), (names.t2i, t2i)):
        for name, k in zip(direction, KS):
            out[name] = _mean(_hits(ranks, k))
    out[names.rsum] = sum(out.values())
    out[names.mr] = out[names.rsum] / 6
    per = {name: (sum(_hits(ranks, k) for k in KS) / len(KS)).tolist()
           for name, ranks in ((names.i2t_mr, i2t), (names.t2i_mr, t2i))}
    return out, per


def _image_retrieval(img: torch.Tensor, keys: list[str], classes: list[str] | None):
    """Cross-design retrieval: positives = other images with the query's key, the query itself removed."""
    n = img.shape[0]
    self_pairs = torch.arange(n).repeat(2, 1)
    ranks, has_pos = pair_ranks(img, img, key_pairs(keys, exclude_self=True), ignore=self_pairs)
    if not bool(has_pos.any()):
        raise ValueError("emoji test split: no concept has two designs; cross-design retrieval is undefined")
    r1 = _hits(ranks[has_pos], 1)
    out, per = {N.IMG_R1: _mean(r1)}, {N.IMG_R1: r1.tolist()}
    if classes is not None:
        ap, has_cls = pair_average_precision(img, img, key_pairs(classes, exclude_self=True), ignore=self_pairs)
        ap = 100.0 * ap[has_cls]
        out[N.IMG_MAP], per[N.IMG_MAP] = _mean(ap), ap.tolist()
    return out, per


def design_matrix_from_embeddings(img: torch.Tensor, concepts: list[str], designs: list[str]) -> pd.DataFrame:
    """R@1 (points) of design-a queries against a gallery holding only design-b images.

    Entry [a, b] (a != b): queries = design-a images whose concept is drawn in design b; gallery = all
    design-b images; positive = the same concept. Diagonal and empty cells are NaN (within one design
    the only same-concept image is the query itself). Rows: query design, columns: gallery design,
    both sorted by name.
    """
    names = sorted(set(designs))
    mat = pd.DataFrame(np.nan, index=pd.Index(names, name="query design"),
                       columns=pd.Index(names, name="gallery design"))
    idx = {d: [i for i, x in enumerate(designs) if x == d] for d in names}
    for a in names:
        for b in names:
            if a == b:
                continue
            in_b = {concepts[j] for j in idx[b]}
            q = [i for i in idx[a] if concepts[i] in in_b]
            if not q:
                continue
            g = idx[b]
            ranks, _ = pair_ranks(img[q], img[g], key_pairs([concepts[i] for i in q], [concepts[j] for j in g]))
            mat.loc[a, b] = _mean(_hits(ranks, 1))
    return mat


@torch.no_grad()
def _embed_texts(model, tokens: torch.Tensor, mask: torch.Tensor, device: torch.device,
                 batch_size: int) -> torch.Tensor:
    """model.embed_text over cached token states [M, T, C_t] in batches, padding trimmed per batch -> [M, d]."""
    model.eval()
    out = []
    for rows in torch.arange(tokens.shape[0]).split(batch_size):
        m = mask[rows]
        t = max(int(m.sum(1).max()), 1)
        out.append(model.embed_text(tokens[rows, :t].float().to(device), m[:, :t].to(device)).float().cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------- the suite


class DownstreamSuite:
    """The downstream tasks of one study, with their frozen-encoder features cached once.

    Args:
        cfg: the run config (encoder settings, ``data.cache_dir``, ``data.max_captions``).
        emoji: Karpathy JSON of the emoji corpus (its ``split`` records are used), or None.
        oca: Karpathy JSON of the Open Clip Art corpus, or None.
        wordnet: WordNet task JSON ({"queries": [...], "candidates": [...]}), or None.
        split: the split of both image corpora that is evaluated ("test").
        encoders: optional (VisualEncoder, TextEncoder) for cache misses (else frozen ones from cfg).
        batch_size: rows per forward pass of the model; progress: show the encoders' progress bars.
    Every task is optional, so the committed fixture (emoji only) runs the suite.
    """

    def __init__(self, cfg: Config, emoji: str | Path | None = None, oca: str | Path | None = None,
                 wordnet: str | Path | None = None, split: str = "test", encoders=None, batch_size: int = 512,
                 progress: bool = True):
        self.cfg, self.split, self.progress = cfg, split, progress
        emoji_feats = self._image_task(emoji, encoders)
        wn = None if wordnet is None else text_task_features(
            cfg, resolve_path(wordnet), "wordnet", None if encoders is None else encoders[1], progress)
        designs = None if emoji is None else record_designs(resolve_path(emoji), emoji_feats.records)
        self._setup(emoji_feats, self._image_task(oca, encoders), wn, designs, batch_size)

    @classmethod
    def from_features(cls, emoji: SplitFeatures | None = None, oca: SplitFeatures | None = None,
                      wordnet: TextTask | None = None, emoji_designs: list[str] | None = None,
                      batch_size: int = 512) -> "DownstreamSuite":
        """A suite over already-built features (tests, notebooks); designs default to the image folder names."""
        suite = cls.__new__(cls)
        suite.cfg, suite.split, suite.progress = None, "test", False
        if emoji is not None and emoji_designs is None:
            emoji_designs = [r.path.parent.name for r in emoji.records]
        suite._setup(emoji, oca, wordnet, emoji_designs, batch_size)
        return suite

    def _setup(self, emoji, oca, wordnet, emoji_designs, batch_size) -> None:
        if emoji is None and oca is None and wordnet is None:
            raise ValueError("DownstreamSuite: no task given (pass emoji, oca and/or wordnet)")
        if emoji is not None and len(emoji_designs) != len(emoji.records):
            raise ValueError(f"emoji_designs: expected {len(emoji.records)} designs, got {len(emoji_designs)}")
        self.emoji, self.oca, self.wordnet, self.batch_size = emoji, oca, wordnet, batch_size
        self.emoji_designs = emoji_designs
        self.emoji_text_task = None if emoji is None else self._label_keywords(emoji)

    def _image_task(self, path, encoders) -> SplitFeatures | None:
        if path is None:
            return None
        path = resolve_path(path)
        corpus = load_karpathy(path, max_captions=self.cfg.data.max_captions)
        return split_features(self.cfg, corpus.split(self.split), self.split, 1, path, encoders,
                              progress=self.progress)

    @staticmethod
    def _label_keywords(feats: SplitFeatures) -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]] | None:
        """Rows of feats.texts for the CLDR label -> keywords task (None when the corpus has no such kinds)."""
        try:
            q_texts, q_keys, c_texts, c_keys = text_matching_set(feats.records, *TEXT_MATCHING_KINDS)
        except ValueError as e:
            warnings.warn(f"emoji corpus has no label -> keywords task ({e}); txt_* metrics are skipped")
            return None
        row = {t: i for i, t in enumerate(feats.texts)}  # both come from the same (truncated) captions
        return (torch.tensor([row[t] for t in q_texts]), q_keys, torch.tensor([row[t] for t in c_texts]), c_keys)

    def sizes(self) -> dict[str, int]:
        """Query/gallery counts of every task (for data cards and the >= 5,000 WordNet queries check)."""
        out = {}
        for name, f in (("emoji", self.emoji), ("oca", self.oca)):
            if f is not None:
                out[f"{name}_images"], out[f"{name}_distinct_captions"] = len(f.records), len(f.texts)
        if self.wordnet is not None:
            out["wn_queries"], out["wn_candidates"] = self.wordnet.num_queries, len(self.wordnet.c_keys)
        if self.emoji_text_task is not None:
            out["txt_queries"] = len(self.emoji_text_task[1])
        return out

    def query_clusters(self) -> dict[str, list[str]]:
        """The test concept of every query, aligned with the per-query lists :meth:`score` returns.

        Queries of one concept are correlated (about 4 designs and 5 captions per emoji concept), so the
        claims' bootstrap resamples concepts, not queries. Labels are namespaced per task (``emoji:``,
        ``oca:``, ``wn:``), so the two directions of one task share a concept's label and are resampled
        together. Image queries: their record's key; a distinct caption (t2i): the key of the first image
        carrying it; cross-design image retrieval: the images whose concept has another design (``img_r1``)
        or whose subgroup has another image (``img_map``); text matching: the query's key (WordNet synset).
        """
        out: dict[str, list[str]] = {}
        for name, feats in (("emoji", self.emoji), ("oca", self.oca)):
            if feats is None:
                continue
            keys = [f"{name}:{r.key}" for r in feats.records]
            owner: dict[int, str] = {}
            for i, ids in enumerate(feats.caption_ids):
                for c in ids:
                    owner.setdefault(c, keys[i])
            out[N.CROSS_MODAL_TASKS[name].i2t_mr] = keys
            out[N.CROSS_MODAL_TASKS[name].t2i_mr] = [owner[c] for c in range(len(feats.texts))]
        if self.emoji is not None:
            recs = self.emoji.records
            keys = [f"emoji:{r.key}" for r in recs]
            n_key = pd.Series(keys).value_counts()
            out[N.IMG_R1] = [k for k in keys if n_key[k] > 1]
            if all(r.subgroup for r in recs):
                n_sub = pd.Series([r.subgroup for r in recs]).value_counts()
                out[N.IMG_MAP] = [k for k, r in zip(keys, recs) if n_sub[r.subgroup] > 1]
            if self.emoji_text_task is not None:
                out[N.TXT_R1] = out[N.TXT_MRR] = [f"emoji:{k}" for k in self.emoji_text_task[1]]
        if self.wordnet is not None:
            out[N.WN_R1] = out[N.WN_MRR] = [f"wn:{k}" for k in self.wordnet.q_keys]
        return out

    # -- embeddings

    def embed(self, model, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """L2-normalised embeddings of every task: {emoji_img [N, d], emoji_txt [M, d], oca_*, wn_txt}."""
        device = torch.device(device)
        emb = {}
        for name, feats in (("emoji", self.emoji), ("oca", self.oca)):
            if feats is not None:
                emb[f"{name}_img"], emb[f"{name}_txt"] = embed_split(model, feats, device, batch_size=self.batch_size)
        if self.wordnet is not None:
            emb["wn_txt"] = _embed_texts(model, self.wordnet.tokens, self.wordnet.mask, device, self.batch_size)
        return emb

    def score(self, emb: dict[str, torch.Tensor], cross_modal: bool = True
              ) -> tuple[dict[str, float], dict[str, list[float]]]:
        """All metrics and per-query lists from embeddings laid out as :meth:`embed` returns them.

        ``cross_modal=False`` scores only the unimodal tasks (image and text spaces need not be shared).
        """
        metrics: dict[str, float] = {}
        per: dict[str, list[float]] = {}

        def add(result):
            metrics.update(result[0])
            per.update(result[1])

        if cross_modal:
            for name, feats in (("emoji", self.emoji), ("oca", self.oca)):
                if feats is not None:
                    add(_cross_modal(emb[f"{name}_img"], emb[f"{name}_txt"], feats, N.CROSS_MODAL_TASKS[name]))
        if self.emoji is not None:
            recs = self.emoji.records
            classes = [r.subgroup for r in recs] if all(r.subgroup for r in recs) else None
            add(_image_retrieval(emb["emoji_img"], [r.key for r in recs], classes))
            if self.emoji_text_task is not None:
                q_rows, q_keys, c_rows, c_keys = self.emoji_text_task
                txt = emb["emoji_txt"]
                ranks, _ = pair_ranks(txt[q_rows], txt[c_rows], key_pairs(q_keys, c_keys))
                add(_rank_metrics(ranks, N.TXT_R1, N.TXT_MRR))
        if self.wordnet is not None:
            t, wn = emb["wn_txt"], self.wordnet
            ranks, _ = pair_ranks(t[wn.q_rows], t[wn.c_rows], key_pairs(wn.q_keys, wn.c_keys))
            add(_rank_metrics(ranks, N.WN_R1, N.WN_MRR))
        return metrics, per

    def evaluate(self, model, device: torch.device | str = "cpu"
                 ) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Zero-shot downstream metrics (points) and per-query lists of ``model`` (a CookieModel)."""
        return self.score(self.embed(model, device))

    def design_matrix(self, model, device: torch.device | str = "cpu", emb: dict | None = None) -> pd.DataFrame:
        """Design-by-design cross-design R@1 on the emoji test split (see :func:`design_matrix_from_embeddings`)."""
        if self.emoji is None:
            raise ValueError("design_matrix needs the emoji task")
        img = (emb or self.embed(model, device))["emoji_img"]
        return design_matrix_from_embeddings(img, [r.key for r in self.emoji.records], self.emoji_designs)
