"""Retrieval metrics for COOKIE: one rank engine and the protocols built on it.

One module (just over 400 lines) on purpose: every evaluation of the project ranks here, so a reader finds every
metric's definition in one file.

The rank engine (every evaluation in the project ranks with it)
--------------------------------------------------------------
A query q is scored against a gallery of G items, ``S[q, g]`` (the dot product ``<q, g>`` of
L2-normalised embeddings, i.e. the cosine similarity, or any score matrix such as a cross-encoder's).
Positives are explicit (query, gallery) index pairs; optional *ignored* pairs are removed from the
ranking (neither positive nor negative, e.g. the query itself); every other item is a negative. A pair
that is both positive and ignored is a positive. The 0-based rank of q is

    rank(q) = #{ g negative : S[q, g] >= max_{p positive} S[q, p] }

i.e. the position of the best positive when ties are broken with negatives first (pessimistic,
deterministic): all-equal scores give R@1 = 0 whenever a negative exists. A query without a positive
gets rank = #negatives and ``has_pos = False`` (callers drop or reject it).
``hit@K(q) = [rank(q) < K]``, ``R@K = 100 * mean_q hit@K(q)``, reciprocal rank ``1 / (rank(q) + 1)``.

Work is chunked over queries: only a ``[c, G]`` block of scores exists at a time, c = min(chunk_size,
2**23 // G), plus a float flag buffer of the same size (about 64 MB in float32 at most); positive scores
are gathered from the block by their pairs, so no [c, G] mask is built. Average precision
(:func:`pair_average_precision`) runs on the same blocks. Embeddings are never re-normalised here.

Wrappers
--------
* key-based (positives = equal keys): :func:`cross_modal_retrieval` (COCO/Flickr protocol and the trainer's
  validation), :func:`coco_1k` (COCO 1K folds), :func:`image_retrieval` (R@K, mAP), :func:`text_matching`
  (R@K, MRR);
* pair-based: :func:`pair_ranks` (embeddings), :func:`score_matrix_ranks` (a precomputed score matrix),
  :func:`cross_modal_pair_ranks` (both directions, e.g. a de-duplicated caption gallery);
  :func:`key_pairs` and :func:`caption_pairs` build the pairs.

Metric names are defined once in :mod:`cookie_lib.metric_names`; argument checks live in
:mod:`cookie_lib.metric_inputs`.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch

from . import metric_names as N
from .metric_inputs import (check_chunk, check_embeddings, check_index, check_ks, check_pairs, check_same_space,
                            encode_keys)

__all__ = ["cross_modal_retrieval", "coco_1k", "image_retrieval", "text_matching", "pair_ranks",
           "score_matrix_ranks", "pair_average_precision", "cross_modal_pair_ranks", "key_pairs", "caption_pairs",
           "recalls", "median_rank"]

Tensor = torch.Tensor
BLOCK_ELEMENTS = 2**23  # scores per block: bounds memory and the first-touch page faults of a fresh buffer


# ----------------------------------------------------------------------------- the rank engine


def _code_pairs(q_codes: Tensor, g_codes: Tensor, exclude_self: bool = False) -> Tensor:
    """All (i, j) with q_codes[i] == g_codes[j] -> [2, P] long, sorted by i then j; O(P), never O(Q * G).

    ``exclude_self`` drops (i, i) (queries and gallery are the same set)."""
    n_codes = max([int(c.max()) + 1 for c in (q_codes, g_codes) if c.numel()], default=0)
    order = torch.argsort(g_codes, stable=True)  # gallery indices grouped by code, ascending within a code
    count = torch.bincount(g_codes, minlength=n_codes)
    first = torch.cumsum(count, 0) - count
    per_q = count[q_codes]  # [Q] positives of each query
    qi = torch.repeat_interleave(torch.arange(len(q_codes), device=q_codes.device), per_q)
    offs = torch.arange(len(qi), device=q_codes.device) - torch.repeat_interleave(torch.cumsum(per_q, 0) - per_q, per_q)
    gj = order[first[q_codes][qi] + offs]
    keep = qi != gj if exclude_self else slice(None)
    return torch.stack([qi[keep], gj[keep]])


def _pair_table(pos: Tensor, ign: Tensor, n_q: int, n_g: int):
    """Unique positives and ignored pairs (ignored minus positives), sorted by query, with row bounds
    [n_q + 1]: the pairs of query i are ``[bounds[i], bounds[i + 1])``."""
    pos_code = torch.unique(pos[0] * n_g + pos[1])  # sorted: by query, then gallery
    ign_code = torch.unique(ign[0] * n_g + ign[1])
    ign_code = ign_code[~torch.isin(ign_code, pos_code)]
    edges = torch.arange(n_q + 1, device=pos.device) * n_g
    return [(code // n_g, code % n_g, torch.searchsorted(code, edges)) for code in (pos_code, ign_code)]


def _block_rows(chunk_size: int, n_g: int) -> int:
    """Query rows per score block: chunk_size, capped so a block holds at most BLOCK_ELEMENTS scores."""
    return max(1, min(chunk_size, BLOCK_ELEMENTS // max(n_g, 1)))


def _blocks(score_block: Callable[[int, int], Tensor], n_q: int, n_g: int, positives: Tensor, ignore: Tensor,
            chunk_size: int):
    """Yield (start, stop, S [c, G], (pos rows, pos cols), (ignored rows, ignored cols)) per query chunk.

    ``score_block(start, stop)`` gives the scores of queries [start, stop); rows index the block
    (query - start), cols the gallery."""
    (pq, pg, pb), (iq, ig, ib) = _pair_table(positives, ignore, n_q, n_g)
    chunk = _block_rows(chunk_size, n_g)
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        lo, hi, ilo, ihi = int(pb[start]), int(pb[stop]), int(ib[start]), int(ib[stop])
        yield start, stop, score_block(start, stop), (pq[lo:hi] - start, pg[lo:hi]), (iq[ilo:ihi] - start, ig[ilo:ihi])


def _embedding_blocks(q: Tensor, g: Tensor) -> Callable[[int, int], Tensor]:
    """score_block for embeddings: S = q[start:stop] @ g.T, written into one buffer reused by every block
    (fresh [c, G] allocations cost page faults that took as long as the product itself at 5,000 x 25,000)."""
    g_t, buf = g.T, []

    def block(start: int, stop: int) -> Tensor:
        if not buf:  # the first block is the largest
            buf.append(torch.empty(stop - start, g.shape[0], dtype=torch.result_type(q, g), device=q.device))
        return torch.mm(q[start:stop], g_t, out=buf[0][: stop - start])

    return block


@torch.no_grad()
def _ranks(score_block, n_q: int, n_g: int, positives: Tensor, ignore: Tensor, chunk_size: int,
           dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """The engine: rank [Q] long (module docstring formula) and has_pos [Q] bool.

    Per chunk: best = max of the gathered positive scores (-inf without one);
    rank = #{g : S >= best} - #{positives with S >= best} - #{ignored with S >= best}."""
    ranks = torch.empty(n_q, dtype=torch.long, device=device)
    has_pos = torch.empty(n_q, dtype=torch.bool, device=device)
    # 0/1 flags written as floats: a float row sum is ~4x faster than summing a bool tensor and exact while
    # a row has fewer than 2**24 (float32) columns
    exact = n_g < 2**24 or dtype == torch.float64
    flags = None
    for start, stop, S, (pr, pc), (ir, ic) in _blocks(score_block, n_q, n_g, positives, ignore, chunk_size):
        c = stop - start
        ps = torch.take(S, pr * n_g + pc)  # the positive scores, read from the block itself
        best = torch.full((c,), float("-inf"), dtype=S.dtype, device=device).scatter_reduce_(0, pr, ps, "amax")
        if flags is None:  # the first block is the largest
            flags = torch.empty(c, n_g, dtype=S.dtype, device=device)
        ge = torch.ge(S, best[:, None], out=flags[:c])
        above = ge.sum(dim=1).round().long() if exact else ge.bool().sum(dim=1)
        above.index_add_(0, pr, -(ps >= best[pr]).long())  # positives are not negatives
        above.index_add_(0, ir, -(torch.take(S, ir * n_g + ic) >= best[ir]).long())  # nor are ignored pairs
        ranks[start:stop] = above
        has_pos[start:stop] = torch.bincount(pr, minlength=c) > 0
    return ranks, has_pos


def _prepare(queries, gallery, positives, ignore, chunk_size):
    chunk_size = check_chunk(chunk_size)
    q, g = check_same_space(queries, gallery, "queries", "gallery")
    pos = check_pairs(positives, "positives", q.shape[0], g.shape[0], q.device)
    ign = check_pairs(ignore, "ignore", q.shape[0], g.shape[0], q.device)
    return q, g, pos, ign, chunk_size


def pair_ranks(queries, gallery, positives, ignore=None, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Rank of each query's best positive (module docstring formula), from embeddings.

    Args:
        queries: [Q, D]; gallery: [G, D] (S = queries @ gallery.T).
        positives: [2, P] long, (query index, gallery index) of every positive pair (duplicates allowed).
        ignore: optional [2, I] pairs removed from the ranking, e.g. the query itself when queries and
            gallery are the same set.
        chunk_size: query rows per score block (capped at 2**23 // G).
    Returns: ``rank [Q]`` long (0-based) and ``has_pos [Q]`` bool.
    """
    return _embedding_ranks(*_prepare(queries, gallery, positives, ignore, chunk_size))


def _embedding_ranks(q: Tensor, g: Tensor, pos: Tensor, ign: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """:func:`pair_ranks` on already checked arguments (the wrappers check each argument once)."""
    return _ranks(_embedding_blocks(q, g), q.shape[0], g.shape[0], pos, ign, chunk_size, q.dtype, q.device)


def score_matrix_ranks(scores: Tensor, positive: Tensor, chunk_size: int = 1024) -> Tensor:
    """Rank of each query's best positive (module docstring formula) from a score matrix S [Q, G] and a
    positive mask [Q, G] bool (e.g. a cross-encoder's scores); returns rank [Q] long (0-based)."""
    if scores.dim() != 2 or positive.shape != scores.shape or positive.dtype != torch.bool:
        raise ValueError(f"scores [Q, G] and a bool positive mask of the same shape expected, got "
                         f"{tuple(scores.shape)} and {tuple(positive.shape)} {positive.dtype}")
    n_q, n_g = scores.shape
    pos = positive.nonzero().T.to(scores.device)
    none = torch.zeros(2, 0, dtype=torch.long, device=scores.device)
    return _ranks(lambda start, stop: scores[start:stop], n_q, n_g, pos, none, check_chunk(chunk_size),
                  scores.dtype, scores.device)[0]


@torch.no_grad()
def pair_average_precision(queries, gallery, positives, ignore=None,
                           chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Per-query average precision on the engine's blocks (positives / ignored pairs as in :func:`pair_ranks`).

    With the n positives of q sorted by score, s_(1) >= ... >= s_(n), the k-th sits at 1-based position
    k + n_neg(k), n_neg(k) = #{negatives g : S[q, g] >= s_(k)} (ties: negatives first), so

        AP(q) = (1/n) * sum_{k=1..n} k / (k + n_neg(k)).

    On tie-free scores this is sklearn's ``average_precision_score``. Shapes as in :func:`pair_ranks`;
    returns (ap [Q] float64 in [0, 1], has_pos [Q] bool; ap = 0 where has_pos is False).
    """
    q, g, pos, ign, chunk_size = _prepare(queries, gallery, positives, ignore, chunk_size)
    n_q, n_g = q.shape[0], g.shape[0]
    ap = torch.zeros(n_q, dtype=torch.float64, device=q.device)
    has_pos = torch.empty(n_q, dtype=torch.bool, device=q.device)
    k = torch.arange(1, n_g + 1, device=q.device, dtype=torch.float64)
    for start, stop, S, (pr, pc), (ir, ic) in _blocks(_embedding_blocks(q, g), n_q, n_g, pos, ign, chunk_size):
        p = torch.zeros(stop - start, n_g, dtype=torch.bool, device=q.device)
        p[pr, pc] = True
        drop = p.clone()
        drop[ir, ic] = True
        pos_sorted = S.masked_fill(~p, float("-inf")).sort(dim=1, descending=True).values
        neg_sorted = S.masked_fill(drop, float("-inf")).sort(dim=1).values  # ascending
        n_neg = (~drop).sum(dim=1, keepdim=True)
        # negatives >= s  =  n_neg - #{negatives < s}; the -inf fillers are never < a finite s
        n_ge = n_neg - (torch.searchsorted(neg_sorted.contiguous(), pos_sorted.contiguous(), side="left")
                        - (n_g - n_neg))
        n_pos = p.sum(dim=1)
        prec = torch.where(k[None, :] <= n_pos[:, None], k / (k + n_ge.double()),
                           torch.zeros((), dtype=torch.float64, device=q.device))
        ap[start:stop] = prec.sum(dim=1) / n_pos.clamp(min=1)
        has_pos[start:stop] = n_pos > 0
    return ap, has_pos


def key_pairs(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable] | None = None,
              exclude_self: bool = False) -> Tensor:
    """All (query, gallery) index pairs with equal keys -> long [2, P] (row 0 query, row 1 gallery), sorted.

    ``gallery_keys=None`` means the gallery is the query set itself; ``exclude_self`` then drops (i, i).
    Cost O(P), never O(Q * G)."""
    same_set = gallery_keys is None
    gallery_keys = query_keys if same_set else gallery_keys
    q_codes, g_codes = encode_keys([("query_keys", query_keys, len(query_keys)),
                                    ("gallery_keys", gallery_keys, len(gallery_keys))], "cpu")
    return _code_pairs(q_codes, g_codes, exclude_self and same_set)


def caption_pairs(caption_ids: Sequence[Sequence[int]]) -> Tensor:
    """(image, distinct caption row) positives [2, P] of a de-duplicated caption gallery, sorted.

    ``caption_ids[i]`` = the rows (in the list of DISTINCT caption texts) of image i's captions; each
    (i, row) pair appears once even when image i carries the same text twice. With these positives
    :func:`cross_modal_pair_ranks` ranks each distinct caption once, its positives all images carrying it.
    """
    pairs = sorted({(i, int(c)) for i, ids in enumerate(caption_ids) for c in ids})
    return torch.tensor(pairs, dtype=torch.long).T.reshape(2, -1)


def cross_modal_pair_ranks(img_emb, txt_emb, positives, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Per-query ranks of image->text and text->image retrieval with positives given as pairs.

    img_emb [N, D]; txt_emb [M, D]; positives [2, P] long (image index, text index).
    Returns (i2t_rank [N], t2i_rank [M]) as :func:`pair_ranks`: image i is a hit at K if any of its
    positive texts is in the top K; text j if any image it is paired with is in the top K.
    Raises ValueError naming the first image or text without a positive.
    """
    chunk_size = check_chunk(chunk_size)
    img, txt = check_same_space(img_emb, txt_emb, "img_emb", "txt_emb")
    return _cross_modal_ranks(img, txt, check_pairs(positives, "positives", img.shape[0], txt.shape[0], img.device),
                              chunk_size)


def _cross_modal_ranks(img: Tensor, txt: Tensor, pos: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    none = torch.zeros(2, 0, dtype=torch.long, device=img.device)
    i2t, i_ok = _embedding_ranks(img, txt, pos, none, chunk_size)
    t2i, t_ok = _embedding_ranks(txt, img, pos.flip(0), none, chunk_size)
    for ok, what in ((i_ok, "image"), (t_ok, "text")):
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten().tolist()
            raise ValueError(f"positives: {len(bad)} {what}(s) have no positive (first {what} index {bad[0]})")
    return i2t, t2i


# ----------------------------------------------------------------------------- summaries


def recalls(ranks: Tensor, ks: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    """{names[i]: R@ks[i]} with R@K = 100 * mean [rank < K] over ranks [Q]."""
    return {name: 100.0 * float((ranks < k).double().mean()) for k, name in zip(ks, names)}


def median_rank(ranks: Tensor) -> float:
    """1-based median rank: median of (rank + 1); the mean of the two middle values if even."""
    r = torch.sort(ranks.double() + 1.0).values
    mid = r.numel() // 2
    return float(r[mid]) if r.numel() % 2 else float((r[mid - 1] + r[mid]) / 2)


# ----------------------------------------------------------------------------- key-based protocols


def cross_modal_retrieval(img_emb, txt_emb, txt_to_img, img_keys: Sequence[Hashable] | None = None,
                          ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    """Image->text and text->image Recall@K (%) with the engine's pessimistic ranks (Karpathy protocol).

    Args:
        img_emb: [N, D] image embeddings; txt_emb: [M, D] caption embeddings (every caption, duplicates
            included); txt_to_img: [M] long, index in [0, N) of each caption's image.
        img_keys: optional N hashable instance keys. Image i and caption j are a positive pair iff
            key(i) == key(txt_to_img[j]). None means key(i) = i (COCO/Flickr: an image's positives are
            exactly its own captions).
        ks: cut-offs K (output ``i2t_r{K}``, ``t2i_r{K}``); chunk_size: query rows per block.
    i2t: each of the N images queries all M captions; t2i: each caption queries all N images.
    Returns {i2t_r1, ..., t2i_r1, ..., rsum (sum of all R@K), i2t_medr, t2i_medr (:func:`median_rank`)}.
    Raises ValueError for malformed inputs and when an image has no positive caption.
    """
    ks = check_ks(ks)
    chunk_size = check_chunk(chunk_size)
    img, txt = check_same_space(img_emb, txt_emb, "img_emb", "txt_emb")
    n_img, n_txt = img.shape[0], txt.shape[0]
    t2i = check_index(txt_to_img, "txt_to_img", n_txt, n_img, img.device)
    if img_keys is None:
        img_codes = torch.arange(n_img, device=img.device)
    else:
        (img_codes,) = encode_keys([("img_keys", img_keys, n_img)], img.device)
    txt_codes = img_codes[t2i]
    orphan = ~torch.isin(img_codes, txt_codes)
    if bool(orphan.any()):
        idx = orphan.nonzero().flatten().tolist()
        shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
        raise ValueError(f"txt_to_img: {len(idx)} image(s) have no positive caption, so image->text recall "
                         f"is undefined for them (image index {shown})")
    i2t, t2i_rank = _cross_modal_ranks(img, txt, _code_pairs(img_codes, txt_codes), chunk_size)
    out = recalls(i2t, ks, [N.at_k(N.I2T_AT, k, "i2t_r{k}") for k in ks])
    out.update(recalls(t2i_rank, ks, [N.at_k(N.T2I_AT, k, "t2i_r{k}") for k in ks]))
    out[N.RSUM] = sum(out.values())
    out[N.I2T_MEDR], out[N.T2I_MEDR] = median_rank(i2t), median_rank(t2i_rank)
    return out


def coco_1k(img_emb, txt_emb, txt_to_img, img_keys: Sequence[Hashable] | None = None, folds: int = 5,
            **kw) -> dict[str, float]:
    """MSCOCO "1K" protocol: mean of :func:`cross_modal_retrieval` over ``folds`` folds.

    Fold f holds images [f*n, (f+1)*n) with n = N / folds and every caption whose image is in that range
    (txt_to_img re-indexed by subtracting f*n). Each returned value is the mean of the per-fold values
    (so rsum is also the sum of the averaged recalls). Shapes as in :func:`cross_modal_retrieval`; ``kw``
    is passed through (ks, chunk_size). Raises ValueError if N is not divisible by ``folds``.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds: expected a positive int, got {folds!r}")
    img, txt = check_same_space(img_emb, txt_emb, "img_emb", "txt_emb")
    n_img = img.shape[0]
    t2i = check_index(txt_to_img, "txt_to_img", txt.shape[0], n_img, img.device)
    if n_img % folds:
        raise ValueError(f"img_emb: {n_img} images cannot be split into {folds} equal folds")
    if img_keys is not None:
        img_keys = img_keys.tolist() if isinstance(img_keys, Tensor) else list(img_keys)
        if len(img_keys) != n_img:
            raise ValueError(f"img_keys: expected {n_img} keys, got {len(img_keys)}")
    n = n_img // folds
    per_fold = []
    for f in range(folds):
        lo, hi = f * n, (f + 1) * n
        sel = ((t2i >= lo) & (t2i < hi)).nonzero().flatten()
        if sel.numel() == 0:
            raise ValueError(f"txt_to_img: fold {f} (images {lo}..{hi - 1}) has no caption")
        per_fold.append(cross_modal_retrieval(img[lo:hi], txt[sel], t2i[sel] - lo,
                                              None if img_keys is None else img_keys[lo:hi], **kw))
    return {k: sum(r[k] for r in per_fold) / folds for k in per_fold[0]}


def image_retrieval(emb, keys: Sequence[Hashable], classes: Sequence[Hashable] | None = None,
                    ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    """Unimodal image retrieval: each image queries the gallery of all OTHER images (itself ignored).

    Args:
        emb: [N, D] embeddings; keys: N hashable instance keys, positives of query i = {j != i : keys[j]
            == keys[i]}; classes: optional N hashable class labels for mAP (positives = other images of
            the same class).
    Returns: ``r{K}`` = 100 * mean over queries with >= 1 positive of [rank < K]; ``n_queries``: how many
        queries that is; with classes, ``map`` = 100 * mean AP (:func:`pair_average_precision`) over
        queries with >= 1 class positive and ``n_map_queries``.
    Raises ValueError on malformed input or when no query has a positive.
    """
    ks = check_ks(ks)
    chunk_size = check_chunk(chunk_size)
    x = check_embeddings(emb, "emb")
    n = x.shape[0]
    (codes,) = encode_keys([("keys", keys, n)], x.device)
    self_pairs = torch.arange(n, device=x.device).repeat(2, 1)
    ranks, has_pos = _embedding_ranks(x, x, _code_pairs(codes, codes, exclude_self=True), self_pairs, chunk_size)
    n_q = int(has_pos.sum())
    if n_q == 0:
        raise ValueError("keys: no image shares its key with another image; R@K is undefined")
    out = recalls(ranks[has_pos], ks, [N.at_k(N.R_AT, k, "r{k}") for k in ks])
    out[N.N_QUERIES] = float(n_q)
    if classes is not None:
        (cls_codes,) = encode_keys([("classes", classes, n)], x.device)
        ap, has_cls = pair_average_precision(x, x, _code_pairs(cls_codes, cls_codes, True), self_pairs, chunk_size)
        if not bool(has_cls.any()):
            raise ValueError("classes: no image shares its class with another image; mAP undefined")
        out[N.MAP] = 100.0 * float(ap[has_cls].mean())
        out[N.N_MAP_QUERIES] = float(int(has_cls.sum()))
    return out


def text_matching(query_emb, cand_emb, query_keys: Sequence[Hashable], cand_keys: Sequence[Hashable],
                  ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    """Text-to-text matching: Q queries against C candidates, positive iff keys are equal.

    query_emb [Q, D], cand_emb [C, D]; query_keys: Q hashable keys, cand_keys: C hashable keys.
    Returns ``r{K}`` = 100 * mean_q [rank(q) < K] and ``mrr`` = 100 * mean_q 1 / (rank(q) + 1).
    Raises ValueError on malformed input or if any query has no positive candidate.
    """
    ks = check_ks(ks)
    chunk_size = check_chunk(chunk_size)
    q, c = check_same_space(query_emb, cand_emb, "query_emb", "cand_emb")
    q_codes, c_codes = encode_keys([("query_keys", query_keys, q.shape[0]), ("cand_keys", cand_keys, c.shape[0])],
                                    q.device)
    missing = ~torch.isin(q_codes, c_codes)
    if bool(missing.any()):
        idx = missing.nonzero().flatten().tolist()
        raise ValueError(f"query_keys: {len(idx)} of {q.shape[0]} queries have no positive candidate "
                         f"(first query index {idx[0]})")
    ranks, _ = _embedding_ranks(q, c, _code_pairs(q_codes, c_codes), torch.zeros(2, 0, dtype=torch.long,
                                                                                 device=q.device), chunk_size)
    out = recalls(ranks, ks, [N.at_k(N.R_AT, k, "r{k}") for k in ks])
    out[N.MRR] = 100.0 * float((1.0 / (ranks.double() + 1.0)).mean())
    return out
