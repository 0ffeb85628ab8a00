"""The speed/accuracy table of the speed claim: two-stream, re-ranked and exhaustive retrieval on a gallery,
R@1 beside seconds and pairs scored (its Pareto figure: :func:`cookie_lib.study.views.figures.pareto_figure`)."""
from __future__ import annotations

import time

import torch

from ...features import SplitFeatures
from .gallery import Gallery, _r1
from .model import CrossEncoder

TABLE_COLUMNS = ["gallery", "n_images", "n_captions", "method", "k", "i2t_r1", "t2i_r1", "seconds", "pairs_scored"]


def gallery_eval(model: CrossEncoder, feats: SplitFeatures, images: list[int], ks=(10, 50), exhaustive: bool = False,
                 device="cpu", label: str = "") -> list[dict]:
    """Rows of :data:`TABLE_COLUMNS` on the gallery of ``images`` (indices into feats.records) and all
    their captions: two-stream (COOKIE, the cross-encoder's own towers), re-rank top k for each k, and
    one-stream exhaustive when asked. ``seconds`` start from the cached encoder tokens."""
    t0 = time.perf_counter()
    g = Gallery(model, feats, images, device)
    n, m = g.shape
    g.two.topk(min(10, m), dim=1), g.two.T.topk(min(10, n), dim=1)
    t_two = time.perf_counter() - t0
    base = dict(gallery=label, n_images=n, n_captions=m)
    out = [dict(base, method="two-stream", k=0, i2t_r1=_r1(g.two, g.pos), t2i_r1=_r1(g.two.T, g.pos.T),
                seconds=t_two, pairs_scored=0)]
    for k in ks:
        t0 = time.perf_counter()
        i2t, t2i, pairs = g.rerank_r1(k)
        out.append(dict(base, method=f"two-stream + re-rank top {k}", k=k, i2t_r1=i2t, t2i_r1=t2i,
                        seconds=t_two + time.perf_counter() - t0, pairs_scored=pairs))
    if exhaustive:
        t0 = time.perf_counter()
        full = g.exhaustive()
        full.topk(min(10, m), dim=1), full.T.topk(min(10, n), dim=1)
        secs = g.encode_seconds + time.perf_counter() - t0
        out.append(dict(base, method="one-stream exhaustive", k=m, i2t_r1=_r1(full, g.pos), t2i_r1=_r1(full.T, g.pos.T),
                        seconds=secs, pairs_scored=n * m))
    return out


def speed_accuracy_table(model: CrossEncoder, test_feats: SplitFeatures, ks=(10, 50), n_exhaustive: int = 100,
                         seed: int = 0, device="cpu") -> list[dict]:
    """The speed/accuracy table: on a seeded subset of ``n_exhaustive`` test images (every method,
    one-stream exhaustive included) and on the full test gallery (two-stream and re-rank top k)."""
    n = len(test_feats.records)
    gen = torch.Generator().manual_seed(seed)
    small = sorted(torch.randperm(n, generator=gen)[:min(n_exhaustive, n)].tolist())
    rows = gallery_eval(model, test_feats, small, ks, exhaustive=True, device=device, label=f"subset {len(small)}")
    rows += gallery_eval(model, test_feats, list(range(n)), ks, exhaustive=False, device=device, label="full test")
    return rows
