"""Retrieval metrics for COOKIE: cross-modal R@K (COCO/Flickr protocol), COCO 1K folds,
unimodal image retrieval (R@K, mAP) and text matching (R@K, MRR).

Conventions shared by every function here
-----------------------------------------
* Similarity is the dot product ``s(q, g) = <q, g>`` (embeddings are assumed L2-normalised,
  so this is the cosine similarity; nothing is re-normalised here).
* Positives are defined by *keys*: a query and a gallery item are a positive pair iff their
  keys are equal. Every other gallery item is a negative.
* Pessimistic, deterministic ties. The rank of a query is

      rank(q) = #{ g negative : s(q, g) >= max_{p positive} s(q, p) }        (0-based)

  i.e. the position of the best positive when ties are broken with negatives first.
  ``hit@K(q) = [rank(q) < K]`` and ``R@K = 100 * mean_q hit@K(q)``.
  All-equal scores therefore give R@1 = 0 whenever a negative exists.
* Work is chunked over queries: only a ``[c, G]`` block of the similarity matrix exists at any
  time (G = gallery size, c = min(chunk_size, 2**23 // G)), so memory is O(c * G), never O(Q * G):
  two reused float buffers of at most 2**23 elements (64 MB in float32) for the cross-modal and
  text-matching ranks, whose positive scores are gathered from the block (no [c, G] masks); about
  100 MB above the embeddings at 5,000 images x 25,000 captions. mAP still builds [c, G] masks.

``python -m cookie_lib.study.bench`` times a 5,000 x 25,000 evaluation and its peak memory.

Why one long module: every ranking metric shares the same input checks, tie rule and chunking; split apart they would repeat them.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

__all__ = ["cross_modal_retrieval", "coco_1k", "image_retrieval", "text_matching"]

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- validation


def _check_emb(x, name: str) -> Tensor:
    """Return ``x`` as a finite, non-empty 2-D floating tensor ``[n, D]`` or raise ValueError."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad argument
            raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from None
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D tensor [n, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty tensor of shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: unsupported dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.double()  # integers are exact in float64
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half matmul on CPU is slow and imprecise
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: contains NaN or inf (first bad row: {bad})")
    return x


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b}: embedding dims differ ({a.shape[1]} vs {b.shape[1]})"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b}: on different devices ({a.device}, {b.device})")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _check_ks(ks) -> tuple[int, ...]:
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks: expected a sequence of positive ints, got {ks!r}") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected a non-empty sequence of positive ints, got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks: duplicate values in {ks!r}")
    return ks


def _check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    return chunk_size


def _check_index(idx, name: str, length: int, upper: int, device) -> Tensor:
    """Integer index vector of shape [length] with values in [0, upper)."""
    if not isinstance(idx, Tensor):
        try:
            idx = torch.as_tensor(idx)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from None
    if idx.dim() != 1 or idx.shape[0] != length:
        raise ValueError(f"{name}: expected shape [{length}], got {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {idx.dtype}")
    idx = idx.long().to(device)
    if length and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        bad = int(((idx < 0) | (idx >= upper)).nonzero()[0, 0])
        raise ValueError(
            f"{name}: index out of range [0, {upper}) at position {bad} (value {int(idx[bad])})"
        )
    return idx


def _encode_keys(groups: Sequence[tuple[str, object, int]], device) -> list[Tensor]:
    """Map several sequences of hashable keys onto one shared integer code space.

    ``groups`` holds (argument name, keys, expected length); returns one long tensor per group.
    """
    table: dict[Hashable, int] = {}
    out = []
    for name, keys, length in groups:
        if isinstance(keys, Tensor):
            keys = keys.tolist()
        try:
            keys = list(keys)
        except TypeError:
            raise ValueError(f"{name}: expected a sequence of {length} keys") from None
        if len(keys) != length:
            raise ValueError(f"{name}: expected {length} keys, got {len(keys)}")
        codes = []
        for i, k in enumerate(keys):
            try:
                codes.append(table.setdefault(k, len(table)))
            except TypeError:
                raise ValueError(f"{name}: key at position {i} is not hashable ({k!r})") from None
        out.append(torch.tensor(codes, dtype=torch.long, device=device))
    return out


# ----------------------------------------------------------------------------- core


# A query whose positives exceed this many gallery items falls back to boolean masks over its chunk.
_GATHER_MAX_POSITIVES = 256


class _SameCode:
    """Index of the gallery by code: for each query, the gallery columns sharing its code.

    Built once per call from g_codes [G] (long, >= 0): ``cols(q_codes [c]) -> (idx [c, P], valid [c, P])``
    where P = the largest number of same-code gallery items among those queries and ``valid`` marks the
    real entries of each padded row. Lets the ranking read the positive scores with one gather
    (c x P) instead of building [c, G] boolean masks, which dominated the time at 5,000 x 25,000.
    """

    def __init__(self, g_codes: Tensor, n_codes: int):
        self.order = torch.argsort(g_codes, stable=True)  # gallery columns grouped by code
        counts = torch.bincount(g_codes, minlength=n_codes)
        self.count = counts
        self.first = torch.cumsum(counts, 0) - counts  # position in ``order`` of each code's first column

    def cols(self, q_codes: Tensor) -> tuple[Tensor, Tensor, int]:
        count = self.count[q_codes]
        p = int(count.max()) if q_codes.numel() else 0
        offs = torch.arange(max(p, 1), device=q_codes.device)
        valid = offs[None, :] < count[:, None]
        pos = (self.first[q_codes][:, None] + offs[None, :]).clamp_max(max(len(self.order) - 1, 0))
        return self.order[pos], valid, p


@torch.no_grad()
def _pessimistic_ranks(
    queries: Tensor,
    gallery: Tensor,
    q_codes: Tensor,
    g_codes: Tensor,
    chunk_size: int,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pessimistic 0-based rank of the best positive for every query.

    queries [Q, D], gallery [G, D], q_codes [Q], g_codes [G] (long).
    Positive pair: q_codes[i] == g_codes[j] (and i != j when ``exclude_self``, which requires
    queries and gallery to be the same set). Negative pair: codes differ.
    Returns ``rank [Q]`` (long) = #{neg j : s_ij >= max_pos s_ip} and ``has_pos [Q]`` (bool);
    rank is meaningless where has_pos is False.

    Per chunk of c queries: scores S = q @ g.T [c, G] (the only [c, G] float buffer), the same-code
    scores gathered from S itself [c, P] (so ties are judged on the very values being counted), and

        rank = #{j : S_ij >= best_i} - #{j same-code : S_ij >= best_i}

    i.e. one comparison and one count over the chunk. Rows with more than _GATHER_MAX_POSITIVES
    same-code items use [c, G] boolean masks instead (same result, more memory traffic).
    """
    n_q = queries.shape[0]
    device = queries.device
    ranks = torch.empty(n_q, dtype=torch.long, device=device)
    has_pos = torch.empty(n_q, dtype=torch.bool, device=device)
    neg_inf = float("-inf")
    n_codes = int(max(int(q_codes.max()), int(g_codes.max()))) + 1
    index = _SameCode(g_codes, n_codes)
    exact_float_count = gallery.shape[0] < 2**24
    # Blocks of at most ~2**23 scores (32 MB in float32) whatever chunk_size says: a fresh process pays a
    # page fault per 4 KB of buffer on first touch, and at 1,024 x 25,000 that cost as much as the
    # evaluation itself. The result does not depend on the block size.
    chunk_size = max(1, min(chunk_size, 2**23 // max(gallery.shape[0], 1)))
    # Two buffers reused by every chunk: fresh [c, G] allocations each chunk cost page faults that
    # took as long as the matrix product itself (5,000 x 25,000 on 2 cores).
    g_t = gallery.T
    buf = torch.empty(min(chunk_size, n_q), gallery.shape[0], dtype=torch.result_type(queries, gallery),
                      device=device)
    # 0/1 flags written as floats: a float row sum is ~4x faster here than summing a bool tensor (which
    # converts it to integers first), and it is exact while counts stay below 2**24 (float32) columns.
    flags = torch.empty_like(buf)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        idx, valid, p = index.cols(q_codes[start:stop])
        if p <= _GATHER_MAX_POSITIVES:
            scores = torch.mm(queries[start:stop], g_t, out=buf[: stop - start])  # [c, G]
            same_scores = scores.gather(1, idx)  # [c, P]
            pos = valid
            if exclude_self:
                rows = torch.arange(start, stop, device=device)
                pos = valid & (idx != rows[:, None])
            best = same_scores.masked_fill(~pos, neg_inf).amax(dim=1)  # [c]; -inf when no positive
            ge = torch.ge(scores, best[:, None], out=flags[: stop - start])
            above = ge.sum(dim=1).round().long() if exact_float_count else ge.bool().sum(dim=1)
            ranks[start:stop] = above - ((same_scores >= best[:, None]) & valid).sum(dim=1)
            has_pos[start:stop] = pos.any(dim=1)
            continue
        scores = queries[start:stop] @ gallery.T  # [c, G]
        same = q_codes[start:stop, None] == g_codes[None, :]  # [c, G]
        pos = same
        if exclude_self:
            pos = same.clone()
            rows = torch.arange(stop - start, device=device)
            pos[rows, rows + start] = False
        best = scores.masked_fill(~pos, neg_inf).amax(dim=1)  # [c]
        scores.masked_fill_(same, neg_inf)  # only negatives keep their score
        # best == -inf only when there is no positive; those rows are flagged by has_pos.
        ranks[start:stop] = (scores >= best[:, None]).sum(dim=1)
        has_pos[start:stop] = pos.any(dim=1)
    return ranks, has_pos


def _recalls(ranks: Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": 100.0 * float((ranks < k).double().mean()) for k in ks}


def _median_rank(ranks: Tensor) -> float:
    """1-based median rank: median of (rank + 1); the mean of the two middle values if even."""
    r = torch.sort(ranks.double() + 1.0).values
    n = r.numel()
    mid = n // 2
    return float(r[mid]) if n % 2 else float((r[mid - 1] + r[mid]) / 2)


# ----------------------------------------------------------------------------- cross-modal


def cross_modal_retrieval(
    img_emb,
    txt_emb,
    txt_to_img,
    img_keys: Sequence[Hashable] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image->text and text->image Recall@K (%) with pessimistic tie-breaking.

    Args:
        img_emb: [N, D] image embeddings (assumed L2-normalised; s = dot product).
        txt_emb: [M, D] caption embeddings.
        txt_to_img: [M] long, index in [0, N) of each caption's image.
        img_keys: optional N hashable instance keys. Image i and caption j are a positive pair
            iff key(i) == key(txt_to_img[j]). None means key(i) = i (standard COCO/Flickr
            protocol: an image's positives are exactly its own captions).
        ks: cut-offs K; output keys follow them (``i2t_r{K}``, ``t2i_r{K}``).
        chunk_size: query rows of the similarity matrix computed at a time.

    Formulas (per query q, positives P(q), negatives N(q)):
        rank(q) = #{g in N(q) : s(q, g) >= max_{p in P(q)} s(q, p)}
        R@K     = 100 / #queries * #{q : rank(q) < K}
        rsum    = sum of all i2t and t2i R@K
        medr    = median of rank(q) + 1 (1-based; mean of the two middle values if even).
    i2t: each of the N images queries all M captions (hit if ANY positive caption is in the
    top K). t2i: each of the M captions queries all N images.

    Returns: {"i2t_r1", ..., "t2i_r1", ..., "rsum", "i2t_medr", "t2i_medr"}.

    Raises ValueError for malformed inputs and when an image has no positive caption
    (i2t undefined for it); the message names the argument / the image index.
    """
    ks = _check_ks(ks)
    chunk_size = _check_chunk(chunk_size)
    img = _check_emb(img_emb, "img_emb")
    txt = _check_emb(txt_emb, "txt_emb")
    img, txt = _check_pair(img, txt, "img_emb", "txt_emb")
    n_img, n_txt = img.shape[0], txt.shape[0]
    t2i = _check_index(txt_to_img, "txt_to_img", n_txt, n_img, img.device)

    if img_keys is None:
        img_codes = torch.arange(n_img, device=img.device)
    else:
        (img_codes,) = _encode_keys([("img_keys", img_keys, n_img)], img.device)
    txt_codes = img_codes[t2i]

    orphan = ~torch.isin(img_codes, txt_codes)
    if bool(orphan.any()):
        idx = orphan.nonzero().flatten().tolist()
        shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
        raise ValueError(
            f"txt_to_img: {len(idx)} image(s) have no positive caption, so image->text recall "
            f"is undefined for them (image index {shown})"
        )

    i2t_rank, _ = _pessimistic_ranks(img, txt, img_codes, txt_codes, chunk_size)
    t2i_rank, _ = _pessimistic_ranks(txt, img, txt_codes, img_codes, chunk_size)

    out = _recalls(i2t_rank, ks, "i2t_r")
    out.update(_recalls(t2i_rank, ks, "t2i_r"))
    out["rsum"] = sum(out.values())
    out["i2t_medr"] = _median_rank(i2t_rank)
    out["t2i_medr"] = _median_rank(t2i_rank)
    return out


def coco_1k(
    img_emb,
    txt_emb,
    txt_to_img,
    img_keys: Sequence[Hashable] | None = None,
    folds: int = 5,
    **kw,
) -> dict[str, float]:
    """MSCOCO "1K" protocol: mean of :func:`cross_modal_retrieval` over ``folds`` folds.

    Fold f holds images [f*n, (f+1)*n) with n = N / folds and every caption whose image is in
    that range (txt_to_img re-indexed by subtracting f*n). Each returned value is the mean of
    the per-fold values (so rsum is also the sum of the averaged recalls).
    Shapes as in :func:`cross_modal_retrieval`; ``kw`` is passed through (ks, chunk_size).
    Raises ValueError if N is not divisible by ``folds``.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds: expected a positive int, got {folds!r}")
    img = _check_emb(img_emb, "img_emb")
    txt = _check_emb(txt_emb, "txt_emb")
    img, txt = _check_pair(img, txt, "img_emb", "txt_emb")
    n_img = img.shape[0]
    t2i = _check_index(txt_to_img, "txt_to_img", txt.shape[0], n_img, img.device)
    if n_img % folds:
        raise ValueError(f"img_emb: {n_img} images cannot be split into {folds} equal folds")
    if img_keys is not None:
        if isinstance(img_keys, Tensor):
            img_keys = img_keys.tolist()
        img_keys = list(img_keys)
        if len(img_keys) != n_img:
            raise ValueError(f"img_keys: expected {n_img} keys, got {len(img_keys)}")
    n = n_img // folds
    per_fold = []
    for f in range(folds):
        lo, hi = f * n, (f + 1) * n
        sel = ((t2i >= lo) & (t2i < hi)).nonzero().flatten()
        if sel.numel() == 0:
            raise ValueError(f"txt_to_img: fold {f} (images {lo}..{hi - 1}) has no caption")
        per_fold.append(
            cross_modal_retrieval(
                img[lo:hi],
                txt[sel],
                t2i[sel] - lo,
                None if img_keys is None else img_keys[lo:hi],
                **kw,
            )
        )
    return {k: sum(r[k] for r in per_fold) / folds for k in per_fold[0]}


# ----------------------------------------------------------------------------- unimodal


@torch.no_grad()
def _average_precision(emb: Tensor, cls_codes: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Per-query AP over the gallery of all other images; positives share the class code.

    Ranking: by score descending, ties broken with negatives first (pessimistic); the query
    itself is removed. AP(q) = (1/|P|) * sum_{p in P} precision@pos(p), where pos(p) is the
    1-based position of p in that ranking and precision@i = (#positives in the first i) / i.
    Returns (ap [N] double, has_pos [N] bool).
    """
    n = emb.shape[0]
    ap = torch.zeros(n, dtype=torch.float64, device=emb.device)
    has_pos = torch.empty(n, dtype=torch.bool, device=emb.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(stop - start, device=emb.device)
        scores = emb[start:stop] @ emb.T  # [c, N]
        pos = cls_codes[start:stop, None] == cls_codes[None, :]
        pos[rows, rows + start] = False
        # The query itself goes last with -inf and counts as a negative: it sits after every
        # positive, so it never changes any precision@pos(p).
        scores[rows, rows + start] = float("-inf")
        # Two stable sorts give the order (score desc, negatives before positives).
        neg_first = torch.sort(pos.to(torch.uint8), dim=1, stable=True).indices
        by_score = torch.sort(scores.gather(1, neg_first), dim=1, descending=True, stable=True)
        order = neg_first.gather(1, by_score.indices)
        hits = pos.gather(1, order).double()  # [c, N] 1 where the ranked item is positive
        cum = hits.cumsum(dim=1)
        position = torch.arange(1, n + 1, device=emb.device, dtype=torch.float64)
        n_pos = hits.sum(dim=1)
        ap[start:stop] = (hits * cum / position).sum(dim=1) / n_pos.clamp(min=1)
        has_pos[start:stop] = n_pos > 0
    return ap, has_pos


def image_retrieval(
    emb,
    keys: Sequence[Hashable],
    classes: Sequence[Hashable] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Unimodal image retrieval: each image queries the gallery of all OTHER images.

    Args:
        emb: [N, D] embeddings (assumed L2-normalised; s = dot product).
        keys: N hashable instance keys; positives of query i = {j != i : keys[j] == keys[i]}.
        classes: optional N hashable class labels for mAP; positives = other images of the
            same class.
    Returns:
        ``r{K}``: 100 * mean over queries with >= 1 positive of [rank < K], with the pessimistic
        rank of the cross-modal functions; ``n_queries``: how many queries that is.
        With classes: ``map`` = 100 * mean over queries with >= 1 class positive of
        AP(q) = (1/|P|) * sum_{p in P} precision@pos(p), ranking by score descending with ties
        broken negatives-first; ``n_map_queries``: how many queries that is.
        On tie-free scores AP equals sklearn's ``average_precision_score``.
    Raises ValueError on malformed input or when no query has a positive.
    """
    ks = _check_ks(ks)
    chunk_size = _check_chunk(chunk_size)
    x = _check_emb(emb, "emb")
    n = x.shape[0]
    (codes,) = _encode_keys([("keys", keys, n)], x.device)
    ranks, has_pos = _pessimistic_ranks(x, x, codes, codes, chunk_size, exclude_self=True)
    n_q = int(has_pos.sum())
    if n_q == 0:
        raise ValueError("keys: no image shares its key with another image; R@K is undefined")
    out = _recalls(ranks[has_pos], ks, "r")
    out["n_queries"] = float(n_q)
    if classes is not None:
        (cls_codes,) = _encode_keys([("classes", classes, n)], x.device)
        ap, has_cls_pos = _average_precision(x, cls_codes, chunk_size)
        n_map = int(has_cls_pos.sum())
        if n_map == 0:
            raise ValueError("classes: no image shares its class with another image; mAP undefined")
        out["map"] = 100.0 * float(ap[has_cls_pos].mean())
        out["n_map_queries"] = float(n_map)
    return out


def text_matching(
    query_emb,
    cand_emb,
    query_keys: Sequence[Hashable],
    cand_keys: Sequence[Hashable],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Text-to-text matching: Q queries against C candidates, positive iff keys are equal.

    Args:
        query_emb: [Q, D]; cand_emb: [C, D] (assumed L2-normalised; s = dot product).
        query_keys: Q hashable keys; cand_keys: C hashable keys.
    Returns:
        ``r{K}`` = 100 * mean_q [rank(q) < K] and
        ``mrr``  = 100 * mean_q 1 / (rank(q) + 1), with the pessimistic 0-based rank
        rank(q) = #{negatives with score >= best positive score}.
    Raises ValueError on malformed input or if any query has no positive candidate.
    """
    ks = _check_ks(ks)
    chunk_size = _check_chunk(chunk_size)
    q = _check_emb(query_emb, "query_emb")
    c = _check_emb(cand_emb, "cand_emb")
    q, c = _check_pair(q, c, "query_emb", "cand_emb")
    q_codes, c_codes = _encode_keys(
        [("query_keys", query_keys, q.shape[0]), ("cand_keys", cand_keys, c.shape[0])], q.device
    )
    missing = ~torch.isin(q_codes, c_codes)
    if bool(missing.any()):
        idx = missing.nonzero().flatten().tolist()
        raise ValueError(
            f"query_keys: {len(idx)} of {q.shape[0]} queries have no positive candidate "
            f"(first query index {idx[0]})"
        )
    ranks, _ = _pessimistic_ranks(q, c, q_codes, c_codes, chunk_size)
    out = _recalls(ranks, ks, "r")
    out["mrr"] = 100.0 * float((1.0 / (ranks.double() + 1.0)).mean())
    return out


# ----------------------------------------------------------------------------- per-query (pair-based)
#
# The functions above define positives by equal keys and return aggregates. The downstream suite
# (cookie_lib.study.downstream) also needs (a) positives that are not an equivalence relation, e.g. a
# de-duplicated caption gallery where one distinct caption belongs to several images of different keys,
# and (b) the per-query values whose mean is each metric (for paired statistics across runs). The
# functions below take positives as explicit (query, gallery) index pairs and return per-query values;
# they share the pessimistic tie convention of the aggregates and are tested against them.

__all__ += ["key_pairs", "pair_ranks", "pair_average_precision", "cross_modal_pair_ranks", "caption_pairs"]


def caption_pairs(caption_ids: Sequence[Sequence[int]]) -> Tensor:
    """(image, distinct caption row) positives [2, P] of a de-duplicated caption gallery, sorted.

    ``caption_ids[i]`` = the rows (in the list of DISTINCT caption texts) of image i's captions; each
    (i, row) pair appears once even when image i carries the same text twice. With these positives
    :func:`cross_modal_pair_ranks` gives the study's protocol: each distinct caption is ranked once, and
    a caption's positives are all images that carry it.
    """
    pairs = sorted({(i, int(c)) for i, ids in enumerate(caption_ids) for c in ids})
    return torch.tensor(pairs, dtype=torch.long).T.reshape(2, -1)


def key_pairs(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable] | None = None,
              exclude_self: bool = False) -> Tensor:
    """All (query, gallery) index pairs with equal keys -> long tensor [2, P] (row 0 query, row 1 gallery).

    ``gallery_keys=None`` means the gallery is the query set itself; ``exclude_self`` then drops (i, i).
    Cost O(P), never O(Q * G): pairs are enumerated per key group.
    """
    same_set = gallery_keys is None
    if same_set:
        gallery_keys = query_keys
    n_q, n_g = len(query_keys), len(gallery_keys)
    q_codes, g_codes = _encode_keys([("query_keys", query_keys, n_q), ("gallery_keys", gallery_keys, n_g)], "cpu")
    by_key: dict[int, list[int]] = {}
    for j, c in enumerate(g_codes.tolist()):
        by_key.setdefault(c, []).append(j)
    qs, gs = [], []
    for i, c in enumerate(q_codes.tolist()):
        for j in by_key.get(c, ()):
            if not (exclude_self and same_set and i == j):
                qs.append(i)
                gs.append(j)
    return torch.tensor([qs, gs], dtype=torch.long).reshape(2, -1)


def _check_pairs(pairs, name: str, n_q: int, n_g: int, device) -> Tensor:
    """[2, P] long pairs with row 0 in [0, n_q) and row 1 in [0, n_g), sorted by query index."""
    if pairs is None:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    if not isinstance(pairs, Tensor):
        pairs = torch.as_tensor(pairs)
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{name}: expected shape [2, P], got {tuple(pairs.shape)}")
    if pairs.is_floating_point() or pairs.is_complex() or pairs.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {pairs.dtype}")
    pairs = pairs.long().to(device)
    for row, upper, what in ((0, n_q, "query"), (1, n_g, "gallery")):
        bad = (pairs[row] < 0) | (pairs[row] >= upper)
        if bool(bad.any()):
            p = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}: {what} index {int(pairs[row, p])} at pair {p} out of range [0, {upper})")
    return pairs[:, torch.argsort(pairs[0], stable=True)]


def _chunk_mask(pairs: Tensor, bounds: Tensor, start: int, stop: int, n_g: int) -> Tensor:
    """Dense bool mask [stop - start, n_g] of the (sorted) pairs whose query lies in [start, stop)."""
    lo, hi = int(bounds[start]), int(bounds[stop])
    mask = torch.zeros(stop - start, n_g, dtype=torch.bool, device=pairs.device)
    mask[pairs[0, lo:hi] - start, pairs[1, lo:hi]] = True
    return mask


def _prepare(queries, gallery, positives, ignore, chunk_size):
    chunk_size = _check_chunk(chunk_size)
    q = _check_emb(queries, "queries")
    g = _check_emb(gallery, "gallery")
    q, g = _check_pair(q, g, "queries", "gallery")
    pos = _check_pairs(positives, "positives", q.shape[0], g.shape[0], q.device)
    ign = _check_pairs(ignore, "ignore", q.shape[0], g.shape[0], q.device)
    edges = torch.arange(q.shape[0] + 1, device=q.device)
    # bounds[i] = first pair whose query index is >= i (pairs are sorted by query)
    pos_b = torch.searchsorted(pos[0].contiguous(), edges)
    ign_b = torch.searchsorted(ign[0].contiguous(), edges)
    return q, g, pos, pos_b, ign, ign_b, chunk_size


@torch.no_grad()
def pair_ranks(queries, gallery, positives, ignore=None, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Pessimistic 0-based rank of each query's best positive, positives given as index pairs.

    Args:
        queries: [Q, D]; gallery: [G, D] (assumed L2-normalised; s = dot product).
        positives: [2, P] long, (query index, gallery index) of every positive pair.
        ignore: optional [2, I] pairs removed from the ranking altogether (neither positive nor
            negative), e.g. the query itself when queries and gallery are the same set.
    Returns:
        ``rank [Q]`` long, rank(q) = #{g negative : s(q, g) >= max_{p in P(q)} s(q, p)} (negatives =
        every gallery item neither positive nor ignored), and ``has_pos [Q]`` bool (rank is
        meaningless where False). hit@K(q) = [rank(q) < K] and reciprocal rank = 1 / (rank(q) + 1),
        exactly as in :func:`cross_modal_retrieval`, :func:`image_retrieval`, :func:`text_matching`.
    Memory: one [chunk_size, G] score block plus two masks of that size.
    """
    q, g, pos, pos_b, ign, ign_b, chunk_size = _prepare(queries, gallery, positives, ignore, chunk_size)
    n_q, n_g = q.shape[0], g.shape[0]
    ranks = torch.empty(n_q, dtype=torch.long, device=q.device)
    has_pos = torch.empty(n_q, dtype=torch.bool, device=q.device)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = q[start:stop] @ g.T  # [c, G]
        p = _chunk_mask(pos, pos_b, start, stop, n_g)
        drop = p | _chunk_mask(ign, ign_b, start, stop, n_g)
        best = scores.masked_fill(~p, float("-inf")).amax(dim=1)  # [c]
        scores.masked_fill_(drop, float("-inf"))  # only negatives keep their score
        ranks[start:stop] = (scores >= best[:, None]).sum(dim=1)
        has_pos[start:stop] = p.any(dim=1)
    return ranks, has_pos


@torch.no_grad()
def pair_average_precision(queries, gallery, positives, ignore=None,
                           chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Per-query average precision with positives given as index pairs (pessimistic ties).

    With the positives of q sorted by score, s_(1) >= ... >= s_(n), the k-th one sits at 1-based
    position k + n_neg(k), n_neg(k) = #{negatives g : s(q, g) >= s_(k)} (ties: negatives first), so

        AP(q) = (1/n) * sum_{k=1..n} k / (k + n_neg(k)).

    Ignored pairs are removed from the ranking. Equals :func:`image_retrieval`'s per-query AP when
    positives = same class and ignore = the query itself. Shapes as in :func:`pair_ranks`; returns
    (ap [Q] float64 in [0, 1], has_pos [Q] bool; ap = 0 where has_pos is False).
    """
    q, g, pos, pos_b, ign, ign_b, chunk_size = _prepare(queries, gallery, positives, ignore, chunk_size)
    n_q, n_g = q.shape[0], g.shape[0]
    ap = torch.zeros(n_q, dtype=torch.float64, device=q.device)
    has_pos = torch.empty(n_q, dtype=torch.bool, device=q.device)
    k = torch.arange(1, n_g + 1, device=q.device, dtype=torch.float64)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = q[start:stop] @ g.T  # [c, G]
        p = _chunk_mask(pos, pos_b, start, stop, n_g)
        drop = p | _chunk_mask(ign, ign_b, start, stop, n_g)
        pos_sorted = scores.masked_fill(~p, float("-inf")).sort(dim=1, descending=True).values
        neg_sorted = scores.masked_fill(drop, float("-inf")).sort(dim=1).values  # ascending
        n_neg = (~drop).sum(dim=1, keepdim=True)
        # negatives >= s  =  n_neg - #{negatives < s}; the -inf fillers are never < a finite s
        n_fill = n_g - n_neg
        n_ge = n_neg - (torch.searchsorted(neg_sorted.contiguous(), pos_sorted.contiguous(), side="left") - n_fill)
        n_pos = p.sum(dim=1)
        valid = k[None, :] <= n_pos[:, None]
        prec = torch.where(valid, k / (k + n_ge.double()), torch.zeros((), dtype=torch.float64, device=q.device))
        ap[start:stop] = prec.sum(dim=1) / n_pos.clamp(min=1)
        has_pos[start:stop] = n_pos > 0
    return ap, has_pos


def cross_modal_pair_ranks(img_emb, txt_emb, positives, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Per-query ranks of image->text and text->image retrieval with positives given as pairs.

    Args:
        img_emb: [N, D]; txt_emb: [M, D] (e.g. each DISTINCT caption once).
        positives: [2, P] long (image index, text index), e.g. every (image, one of its captions).
    Returns (i2t_rank [N], t2i_rank [M]) as in :func:`pair_ranks`: image i is a hit at K if any of
    its positive texts is in the top K; text j if any image it is paired with is in the top K.
    With key-defined pairs the recalls equal :func:`cross_modal_retrieval`'s.
    Raises ValueError naming the first image or text without a positive.
    """
    pos = _check_pairs(positives, "positives", _check_emb(img_emb, "img_emb").shape[0],
                       _check_emb(txt_emb, "txt_emb").shape[0], "cpu")
    i2t, i_ok = pair_ranks(img_emb, txt_emb, pos, chunk_size=chunk_size)
    t2i, t_ok = pair_ranks(txt_emb, img_emb, pos.flip(0), chunk_size=chunk_size)
    for ok, what in ((i_ok, "image"), (t_ok, "text")):
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten().tolist()
            raise ValueError(f"positives: {len(bad)} {what}(s) have no positive (first {what} index {bad[0]})")
    return i2t, t2i
