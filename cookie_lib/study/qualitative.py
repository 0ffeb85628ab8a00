"""What a model retrieves on a test split, and the geometry of its shared embedding space: the gallery
(records, distinct caption texts, their concept keys), the seeded choice of queries, the top-k results of a
query, the matched image-caption pairs and the modality gap, and the joint 2-D projection. The pictures
drawn from them are in :mod:`cookie_lib.study.views.qualitative`.

Everything takes embeddings and records, not runs, so a notebook can call it on any model::

    from cookie_lib.evaluate import embed_split, load_run
    run = load_run("runs/cookie-s0"); img, txt = embed_split(run.model, feats, device)
    g = Gallery.from_features(feats)
    idx, scores = top_k(txt[g.pick_text_queries(1)[0]], img, 5)

Shapes: image embeddings [N, d] (one per record, row order of ``records``), text embeddings [M, d] (one per
distinct caption text, row order of ``texts``), all L2-normalised so the score is the cosine <q, g>. A hit
is a result with the query's key (same concept: another design of it, or one of its captions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageRecord


def concept_label(records: list[ImageRecord], key: str) -> str:
    """A readable name for a concept: the CLDR label caption of one of its records, else its first caption,
    else the key itself (emoji keys are code points such as ``1F933``)."""
    for r in records:
        if r.key == key:
            kinds = dict(zip(r.caption_kinds, r.captions))
            return kinds.get("cldr_label") or (r.captions[0] if r.captions else key)
    return key


@dataclass
class Gallery:
    """A test split as retrieval sees it: records [N], distinct caption texts [M] and the key of each text."""
    records: list[ImageRecord]
    texts: list[str]
    text_keys: list[str]

    @classmethod
    def from_features(cls, feats) -> "Gallery":
        """From a :class:`cookie_lib.features.SplitFeatures` (texts and caption_ids give each text's key)."""
        keys: dict[int, str] = {}
        for r, ids in zip(feats.records, feats.caption_ids):
            for i in ids:
                keys.setdefault(i, r.key)
        return cls(list(feats.records), list(feats.texts), [keys[i] for i in range(len(feats.texts))])

    @property
    def image_keys(self) -> list[str]:
        return [r.key for r in self.records]

    def pick_text_queries(self, n: int, seed: int = 0, kind: str | None = "cldr_label") -> list[int]:
        """Rows of ``texts`` for ``n`` distinct concepts (seeded); ``kind`` prefers one caption kind (e.g. the
        human-written CLDR label) when the records carry kinds."""
        kind_of = {c: k for r in self.records for c, k in zip(r.captions, r.caption_kinds)}
        rows = [i for i, t in enumerate(self.texts) if kind is None or kind_of.get(t) == kind] or list(range(len(self.texts)))
        rng = np.random.default_rng(seed)
        out, seen = [], set()
        for i in rng.permutation(rows).tolist():
            if self.text_keys[i] not in seen:
                seen.add(self.text_keys[i])
                out.append(i)
            if len(out) == n:
                break
        return out

    def pick_image_queries(self, n: int, seed: int = 0) -> list[int]:
        """Indices of ``n`` records of distinct concepts (seeded)."""
        rng = np.random.default_rng(seed + 1)
        out, seen = [], set()
        for i in rng.permutation(len(self.records)).tolist():
            if self.records[i].key not in seen:
                seen.add(self.records[i].key)
                out.append(i)
            if len(out) == n:
                break
        return out


def top_k(query: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """Indices and cosines of the ``k`` best rows of ``gallery`` [G, d] for ``query`` [d] (descending)."""
    top = torch.topk(gallery.float() @ query.float(), min(k, len(gallery)))
    return top.indices.tolist(), top.values.tolist()


# ----------------------------------------------------------------------------- the shared space
def matched_pairs(gallery: Gallery) -> tuple[list[int], list[int]]:
    """(image index, text row) for every caption of every image: the positives of the cross-modal loss."""
    row = {t: i for i, t in enumerate(gallery.texts)}
    pairs = [(n, row[c]) for n, r in enumerate(gallery.records) for c in r.captions if c in row]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def modality_gap(img: torch.Tensor, txt: torch.Tensor, img_idx: list[int], txt_idx: list[int]) -> dict[str, float]:
    """How far apart the two modalities sit in the shared space (Liang et al. 2022's "modality gap").

    img [N, d], txt [M, d] are unit-normalised; (img_idx[p], txt_idx[p]) are matched pairs.
        gap            = || mean_i img_i - mean_j txt_j ||_2          (distance between the centroids)
        matched_cos    = mean_p <img_{a_p}, txt_{b_p}>                 (matched image-caption pairs)
        unmatched_cos  = mean over all image-text pairs <img_i, txt_j> (the baseline a matched pair beats)
        intra_img_cos / intra_txt_cos = mean cosine between distinct points of one modality.
    """
    img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)

    def intra(x: torch.Tensor) -> float:
        n = len(x)
        s = x @ x.T
        return float((s.sum() - s.diagonal().sum()) / max(1, n * (n - 1)))

    return {"gap": float((img.mean(0) - txt.mean(0)).norm()),
            "matched_cos": float((img[img_idx] * txt[txt_idx]).sum(-1).mean()),
            "unmatched_cos": float((img @ txt.T).mean()),
            "intra_img_cos": intra(img), "intra_txt_cos": intra(txt)}


def project_2d(img: torch.Tensor, txt: torch.Tensor, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image [N, d] and text [M, d] embeddings fitted jointly to 2-D ([N, 2], [M, 2]) with sklearn PCA or t-SNE.

    Fitted on both modalities together, so the distance between the two clouds (the gap) is kept in view.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = torch.cat([img.float(), txt.float()]).numpy()
    if method == "pca":
        y = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        y = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca",
                 random_state=seed).fit_transform(x)
    else:
        raise ValueError(f"method={method!r}: choose 'pca' or 'tsne'")
    return y[:len(img)], y[len(img):]


