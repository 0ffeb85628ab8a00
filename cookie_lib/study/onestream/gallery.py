"""Retrieval galleries of the cross-encoder: which pairs are positives, re-ranking COOKIE's top k, and R@1
with the project's rank engine (:func:`cookie_lib.metrics.score_matrix_ranks`)."""
from __future__ import annotations

import time

import torch

from ...features import SplitFeatures
from ...metrics import score_matrix_ranks
from .model import CrossEncoder, encode_split, score_index_pairs


class Positives:
    """Which (image, caption) pairs are positives: caption row c is a positive of image i when one of the
    images holding c has i's key (a caption text shared by several keys is positive for all of them).

    rows_of_images(images [Q]) -> [Q, len(captions)] bool;  rows_of_captions(cols [Q]) -> [Q, len(images)] bool
    over the gallery ``images`` (indices of feats.records) x ``captions`` (rows of feats.texts)."""

    def __init__(self, feats: SplitFeatures, images, captions):
        keys = feats.keys.tolist()
        self.images, self.captions = list(map(int, images)), [int(c) for c in captions]
        cols: dict[int, list[int]] = {}  # text row -> its gallery columns (a text several images hold: several)
        for n, c in enumerate(self.captions):
            cols.setdefault(c, []).append(n)
        self.img_key = [keys[i] for i in self.images]
        self.key_cols: dict[int, set[int]] = {}
        self.col_keys: list[set[int]] = [set() for _ in self.captions]
        for img, ids in enumerate(feats.caption_ids):
            for c in ids:
                for n in cols.get(c, ()):
                    self.key_cols.setdefault(keys[img], set()).add(n)
                    self.col_keys[n].add(keys[img])
        self.key_rows: dict[int, list[int]] = {}
        for r, k in enumerate(self.img_key):
            self.key_rows.setdefault(k, []).append(r)

    def rows_of_images(self, rows) -> torch.Tensor:
        out = torch.zeros(len(rows), len(self.captions), dtype=torch.bool)
        for n, r in enumerate(rows):
            out[n, list(self.key_cols.get(self.img_key[int(r)], ()))] = True
        return out

    def rows_of_captions(self, cols) -> torch.Tensor:
        out = torch.zeros(len(cols), len(self.images), dtype=torch.bool)
        for n, c in enumerate(cols):
            out[n, [r for k in self.col_keys[int(c)] for r in self.key_rows.get(k, ())]] = True
        return out

    def dense(self) -> torch.Tensor:
        """[len(images), len(captions)] bool (small galleries only)."""
        return self.rows_of_images(range(len(self.images)))


def _r1(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """R@1 (points) from a score matrix [Q, G] and its positive mask [Q, G], with the project's rank engine."""
    return 100.0 * float((score_matrix_ranks(scores, positive) < 1).double().mean())


def rerank(two: torch.Tensor, top: torch.Tensor, top_scores: torch.Tensor) -> torch.Tensor:
    """Re-ranked score matrix [Q, G]: each query's ``top`` [Q, k] candidates get their cross-encoder score
    ``top_scores`` [Q, k], placed above every other candidate, which keeps its two-stream order."""
    out = two.double().clone()
    vals = top_scores.double()
    out -= float(out.max() - vals.min()) + 1.0  # every other candidate ends strictly below the top k
    out.scatter_(1, top, vals)
    return out


class Gallery:
    """A retrieval gallery: ``images`` (indices of feats.records) and all their captions, with the
    cross-encoder's tower states and COOKIE's similarity, for re-ranking and exhaustive scoring."""

    def __init__(self, model: CrossEncoder, feats: SplitFeatures, images: list[int], device="cpu"):
        self.model, self.device = model.eval(), torch.device(device)
        self.images = list(images)
        # every caption of every image, as the study's metrics count them (cookie_lib.metrics)
        self.captions = torch.tensor([c for i in self.images for c in feats.caption_ids[i]])
        self.pos = Positives(feats, self.images, self.captions).dense()  # [N, M]
        t0 = time.perf_counter()
        self.enc = encode_split(model, feats, self.images, self.captions, self.device)
        self.two = (self.enc["u"] @ self.enc["w"].T).float().cpu()  # COOKIE's similarity [N, M]
        self.encode_seconds = time.perf_counter() - t0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.two.shape)

    def score(self, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
        return score_index_pairs(self.model, self.enc, ii.to(self.device), jj.to(self.device)).cpu()

    def rerank_r1(self, k: int) -> tuple[float, float, int]:
        """(i2t R@1, t2i R@1, distinct pairs scored) after re-ranking COOKIE's top k both ways."""
        n, m = self.shape
        top_i2t = self.two.topk(min(k, m), dim=1).indices  # [N, k] caption columns
        top_t2i = self.two.T.topk(min(k, n), dim=1).indices  # [M, k] image rows
        flat_i2t = (torch.arange(n)[:, None] * m + top_i2t).reshape(-1)  # pair id = image * M + caption
        flat_t2i = (top_t2i * m + torch.arange(m)[:, None]).reshape(-1)
        uniq, inverse = torch.unique(torch.cat([flat_i2t, flat_t2i]), return_inverse=True)  # each pair once
        vals = self.score(uniq // m, uniq % m)[inverse]
        s_i2t, s_t2i = vals[:top_i2t.numel()].view_as(top_i2t), vals[top_i2t.numel():].view_as(top_t2i)
        return (_r1(rerank(self.two, top_i2t, s_i2t), self.pos), _r1(rerank(self.two.T, top_t2i, s_t2i), self.pos.T),
                len(uniq))

    def exhaustive(self) -> torch.Tensor:
        """Cross-encoder scores of every pair [N, M]."""
        n, m = self.shape
        return self.score(torch.arange(n).repeat_interleave(m), torch.arange(m).repeat(n)).view(n, m)
