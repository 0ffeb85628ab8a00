"""Tests for cookie_lib.metrics: the rank engine vs a numpy brute force, chunked metrics vs plain-Python
brute force, hand-built cases, pessimistic ties, COCO 1K folds, sklearn AP, and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from cookie_lib import metric_names as N
from cookie_lib import metrics
from cookie_lib.metrics import (coco_1k, cross_modal_retrieval, image_retrieval, key_pairs, pair_average_precision,
                                pair_ranks, score_matrix_ranks, text_matching)

KS = (1, 5, 10)


# ----------------------------------------------------------------------------- references
# Deliberately naive: full score matrix, one explicit sort per query, Python loops.


def _ordered(scores: list[float], positive: list[bool]) -> list[int]:
    """Gallery indices by score descending; among equal scores negatives come first."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], positive[j]))


def _ref_rank(scores: list[float], positive: list[bool]) -> int:
    """0-based position of the first positive in the pessimistic order."""
    order = _ordered(scores, positive)
    return next(r for r, j in enumerate(order) if positive[j])


def _ref_recall(ranks: list[int], k: int) -> float:
    return 100.0 * sum(r < k for r in ranks) / len(ranks)


def _ref_cross_modal(img, txt, txt_to_img, img_keys=None, ks=KS):
    sim = (img.double() @ txt.double().T).tolist()  # [N][M]
    n, m = len(sim), len(sim[0])
    t2i = [int(v) for v in txt_to_img]
    key = list(range(n)) if img_keys is None else list(img_keys)
    i2t_ranks = []
    for i in range(n):
        pos = [key[i] == key[t2i[j]] for j in range(m)]
        i2t_ranks.append(_ref_rank(sim[i], pos))
    t2i_ranks = []
    for j in range(m):
        col = [sim[i][j] for i in range(n)]
        pos = [key[i] == key[t2i[j]] for i in range(n)]
        t2i_ranks.append(_ref_rank(col, pos))
    out = {f"i2t_r{k}": _ref_recall(i2t_ranks, k) for k in ks}
    out.update({f"t2i_r{k}": _ref_recall(t2i_ranks, k) for k in ks})
    out["rsum"] = sum(out.values())
    return out


def _ref_ap(scores: list[float], positive: list[bool]) -> float:
    order = _ordered(scores, positive)
    hits, total = 0, 0.0
    for pos_1based, j in enumerate(order, start=1):
        if positive[j]:
            hits += 1
            total += hits / pos_1based
    return total / hits


def _ref_image_retrieval(emb, keys, classes=None, ks=KS):
    sim = (emb.double() @ emb.double().T).tolist()
    n = len(sim)
    ranks, aps = [], []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        scores = [sim[i][j] for j in others]
        pos = [keys[j] == keys[i] for j in others]
        if any(pos):
            ranks.append(_ref_rank(scores, pos))
        if classes is not None:
            cpos = [classes[j] == classes[i] for j in others]
            if any(cpos):
                aps.append(_ref_ap(scores, cpos))
    out = {f"r{k}": _ref_recall(ranks, k) for k in ks}
    out["n_queries"] = float(len(ranks))
    if classes is not None:
        out["map"] = 100.0 * sum(aps) / len(aps)
        out["n_map_queries"] = float(len(aps))
    return out


def _ref_text_matching(q, c, qk, ck, ks=KS):
    sim = (q.double() @ c.double().T).tolist()
    ranks = [_ref_rank(row, [qk[i] == kk for kk in ck]) for i, row in enumerate(sim)]
    out = {f"r{k}": _ref_recall(ranks, k) for k in ks}
    out["mrr"] = 100.0 * sum(1.0 / (r + 1) for r in ranks) / len(ranks)
    return out


def _assert_close(got: dict, want: dict):
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), (k, got[k], v)


# ----------------------------------------------------------------------------- the rank engine
# numpy reference from the definition: rank(q) = #{g negative : S[q, g] >= max_{p positive} S[q, p]}, i.e. the
# 1-based rank is 1 + #(negatives scoring better or equal); ignored pairs are neither positive nor negative and a
# pair both positive and ignored is a positive.


def _np_masks(n_q, n_g, positives, ignore):
    pos = np.zeros((n_q, n_g), dtype=bool)
    pos[positives[0], positives[1]] = True
    neg = ~pos
    neg[ignore[0], ignore[1]] = False
    return pos, neg & ~pos


def _np_ranks(S, pos, neg):
    best = np.where(pos, S, -np.inf).max(axis=1)
    return ((S >= best[:, None]) & neg).sum(axis=1), pos.any(axis=1)


def _np_ap(S, pos, neg):
    """AP by explicit sorting: score descending, negatives before positives among equal scores."""
    out = np.zeros(len(S))
    for q in range(len(S)):
        keep = np.flatnonzero(pos[q] | neg[q])
        order = keep[np.lexsort((pos[q, keep], -S[q, keep]))]  # last key first: score desc, then negatives
        hits = pos[q, order]
        if hits.any():
            out[q] = np.mean((np.cumsum(hits) / np.arange(1, len(order) + 1))[hits])
    return out


def _engine_problem(seed, n_q=23, n_g=31, dim=3, n_pos=40, n_ign=15):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (n_q, dim), generator=g).double()  # integer scores: many exact ties
    gal = torch.randint(-2, 3, (n_g, dim), generator=g).double()
    # random pairs with duplicates, some queries without a positive, ignored pairs overlapping positives
    pos = torch.stack([torch.randint(n_q - 3, (n_pos,), generator=g), torch.randint(n_g, (n_pos,), generator=g)])
    ign = torch.cat([pos[:, :5], torch.stack([torch.randint(n_q, (n_ign,), generator=g),
                                              torch.randint(n_g, (n_ign,), generator=g)])], dim=1)
    return q, gal, pos, ign


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_engine_matches_numpy_reference(seed, chunk_size):
    q, gal, pos, ign = _engine_problem(seed)
    S = (q @ gal.T).numpy()
    p, n = _np_masks(len(q), len(gal), pos.numpy(), ign.numpy())
    want, want_has = _np_ranks(S, p, n)
    ranks, has = pair_ranks(q, gal, pos, ign, chunk_size=chunk_size)
    assert has.tolist() == want_has.tolist() and not has.all()  # some queries lack a positive
    assert ranks.tolist() == want.tolist()  # without a positive: rank = #negatives
    ap, has_ap = pair_average_precision(q, gal, pos, ign, chunk_size=chunk_size)
    assert has_ap.tolist() == want_has.tolist()
    np.testing.assert_allclose(ap.numpy(), _np_ap(S, p, n), rtol=0, atol=1e-12)
    # a cross-encoder's score matrix: float32 and float64 scores, positives as a mask, nothing ignored
    p, n = _np_masks(len(q), len(gal), pos.numpy(), np.zeros((2, 0), dtype=int))
    for dtype in (torch.float32, torch.float64):
        got = score_matrix_ranks(torch.from_numpy(S).to(dtype), torch.from_numpy(p), chunk_size=chunk_size)
        assert got.tolist() == _np_ranks(S, p, n)[0].tolist()


def test_engine_blocks_do_not_change_ranks(monkeypatch):
    """The block-row cap (2**23 // G) and the chunk size only change how the work is cut."""
    q, gal, pos, ign = _engine_problem(7, n_q=40, n_g=50, n_pos=300)
    base = pair_ranks(q, gal, pos, ign, chunk_size=1024)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 3 * 50 + 1)  # three query rows per block
    for chunk in (1, 2, 1024):
        got = pair_ranks(q, gal, pos, ign, chunk_size=chunk)
        assert torch.equal(got[0], base[0]) and torch.equal(got[1], base[1])


def test_engine_with_hundreds_of_positives_per_query():
    g = torch.Generator().manual_seed(5)
    img = torch.randint(-2, 3, (60, 3), generator=g).float()
    txt = torch.randint(-2, 3, (900, 3), generator=g).float()
    t2i = torch.arange(60).repeat_interleave(15)
    keys = [i % 2 for i in range(60)]  # 450 positive captions per image
    _assert_close(cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=7),
                  _ref_cross_modal(img, txt, t2i, keys))


def test_key_pairs_enumerates_equal_keys():
    qk, gk = ["a", "b", "a", "c"], ["b", "a", "a", "x", "b"]
    want = [(i, j) for i in range(4) for j in range(5) if qk[i] == gk[j]]
    assert key_pairs(qk, gk).T.tolist() == [list(p) for p in want]
    assert key_pairs(qk, exclude_self=True).T.tolist() == [[0, 2], [2, 0]]
    assert key_pairs(["a"], ["b"]).shape == (2, 0)


def test_score_matrix_ranks_ties_by_hand():
    scores = torch.tensor([[0.9, 0.5, 0.9], [0.1, 0.2, 0.3]])
    pos = torch.tensor([[True, False, False], [False, True, False]])
    assert score_matrix_ranks(scores, pos).tolist() == [1, 1]  # a tie counts against the query
    with pytest.raises(ValueError, match="positive mask"):
        score_matrix_ranks(scores, pos.float())


def test_metric_names_keep_their_values():
    """Results files, the pre-registration and committed results key metrics by these strings."""
    assert (N.EMOJI_MR, N.EMOJI_I2T_MR, N.OCA_T2I_R10, N.IMG_R1, N.IMG_MAP, N.WN_MRR, N.TXT_R1) == (
        "emoji_mr", "emoji_i2t_mr", "oca_t2i_r10", "img_r1", "img_map", "wn_mrr", "txt_r1")
    res = cross_modal_retrieval(torch.eye(3), torch.eye(3), [0, 1, 2])
    assert list(res) == [*N.KARPATHY.i2t, *N.KARPATHY.t2i, N.RSUM, N.I2T_MEDR, N.T2I_MEDR]
    assert list(cross_modal_retrieval(torch.eye(3), torch.eye(3), [0, 1, 2], ks=(1, 3))) == [
        "i2t_r1", "i2t_r3", "t2i_r1", "t2i_r3", "rsum", "i2t_medr", "t2i_medr"]


# ----------------------------------------------------------------------------- data


def _normed(g, *shape):
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)


def _paired_data(seed, n_img=37, caps=(3, 4, 5, 6), dim=8, noise=1.0, integer=False):
    """Captions = their image + noise, a variable number per image, shuffled order."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(caps)[torch.randint(len(caps), (n_img,), generator=g)]
    t2i = torch.arange(n_img).repeat_interleave(counts)
    t2i = t2i[torch.randperm(t2i.numel(), generator=g)]
    if integer:  # small integers: exact dot products and many genuine ties
        img = torch.randint(-2, 3, (n_img, dim), generator=g).double()
        txt = img[t2i] + torch.randint(-1, 2, (t2i.numel(), dim), generator=g).double()
    else:
        img = _normed(g, n_img, dim)
        txt = torch.nn.functional.normalize(img[t2i] + noise * _normed(g, t2i.numel(), dim), dim=1)
    return img, txt, t2i


# ----------------------------------------------------------------------------- cross-modal


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("grouped", [False, True])
def test_cross_modal_matches_brute_force(integer, chunk_size, grouped):
    img, txt, t2i = _paired_data(seed=11 + int(integer), integer=integer)
    keys = [f"concept{i // 3}" for i in range(img.shape[0])] if grouped else None
    got = cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=chunk_size)
    want = _ref_cross_modal(img, txt, t2i, keys)
    _assert_close(got, want)
    # Non-trivial data: neither all hits nor all misses.
    assert 0 < got["i2t_r1"] < 100 and 0 < got["t2i_r1"] < 100


def test_float32_matches_float64_reference():
    img, txt, t2i = _paired_data(seed=5)
    got = cross_modal_retrieval(img.float(), txt.float(), t2i, chunk_size=16)
    _assert_close(got, _ref_cross_modal(img, txt, t2i))


def test_chunk_size_does_not_change_results():
    img, txt, t2i = _paired_data(seed=3, integer=True)
    results = [cross_modal_retrieval(img, txt, t2i, chunk_size=c) for c in (1, 2, 5, 64, 10_000)]
    assert all(r == results[0] for r in results)


def _hand_built():
    # Image 0 = x axis, image 1 = y axis. Captions 0-4 belong to image 0, 5-9 to image 1.
    # Caption 4 is written next to the WRONG image: it equals image 1 exactly.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caps0 = [[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.0, 1.0]]
    caps1 = [[0.3, 1.0], [0.35, 1.0], [0.4, 1.0], [0.45, 1.0], [0.5, 1.0]]
    txt = torch.nn.functional.normalize(torch.tensor(caps0 + caps1), dim=1)
    t2i = torch.tensor([0] * 5 + [1] * 5)
    return img, txt, t2i


def test_hand_built_two_images_ten_captions():
    img, txt, t2i = _hand_built()
    res = cross_modal_retrieval(img, txt, t2i, chunk_size=3)
    # i2t: image 0's best caption is caption 0 (score 1.0, its own) -> hit.
    #      image 1's best caption is caption 4 (score 1.0, image 0's) -> miss at 1; its own
    #      captions come next -> hit at 5 and 10.
    assert res["i2t_r1"] == 50.0
    assert res["i2t_r5"] == 100.0 and res["i2t_r10"] == 100.0
    # t2i: captions 0-3 prefer image 0 (own), caption 4 prefers image 1 (wrong),
    #      captions 5-9 prefer image 1 (own) -> 9 / 10 hits at 1; only 2 images -> 100 at 5.
    assert res["t2i_r1"] == 90.0
    assert res["t2i_r5"] == 100.0 and res["t2i_r10"] == 100.0
    assert res["rsum"] == 540.0
    # ranks i2t: [0, 1] -> 1-based [1, 2]; t2i: nine 0s and one 1 -> 1-based median 1.
    assert res["i2t_medr"] == 1.5 and res["t2i_medr"] == 1.0
    # Same instance key for both images: everything becomes a positive.
    same = cross_modal_retrieval(img, txt, t2i, img_keys=["cat", "cat"])
    assert same["i2t_r1"] == 100.0 and same["t2i_r1"] == 100.0


def test_all_equal_embeddings_are_pessimistic_and_deterministic():
    # 0.5 * ones(4) has norm 1 and every dot product is exactly 1.0: a genuine full tie.
    img = torch.full((3, 4), 0.5)
    txt = torch.full((6, 4), 0.5)
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    runs = [cross_modal_retrieval(img, txt, t2i, chunk_size=c) for c in (1, 2, 1024, 1024)]
    assert all(r == runs[0] for r in runs)
    res = runs[0]
    # i2t: 4 negative captions tie with the 2 positives -> rank 4: miss at 1, hit at 5.
    # t2i: 2 negative images tie with the positive -> rank 2.
    assert res["i2t_r1"] == 0.0 and res["t2i_r1"] == 0.0
    assert res["i2t_r5"] == 100.0 and res["t2i_r5"] == 100.0
    assert res["i2t_medr"] == 5.0 and res["t2i_medr"] == 3.0
    # Without negatives a tie cannot hurt.
    res = cross_modal_retrieval(img, txt, t2i, img_keys=["a", "a", "a"])
    assert res["i2t_r1"] == 100.0 and res["t2i_r1"] == 100.0


def test_ks_name_the_output_keys():
    img, txt, t2i = _paired_data(seed=1)
    res = cross_modal_retrieval(img, txt, t2i, ks=(1, 3))
    assert set(res) == {"i2t_r1", "i2t_r3", "t2i_r1", "t2i_r3", "rsum", "i2t_medr", "t2i_medr"}
    total = res["i2t_r1"] + res["i2t_r3"] + res["t2i_r1"] + res["t2i_r3"]
    assert res["rsum"] == pytest.approx(total)


# ----------------------------------------------------------------------------- COCO 1K


@pytest.mark.parametrize("grouped", [False, True])
def test_coco_1k_is_mean_of_folds(grouped):
    img, txt, t2i = _paired_data(seed=21, n_img=50, integer=True)
    keys = [i // 2 for i in range(50)] if grouped else None
    got = coco_1k(img, txt, t2i, img_keys=keys, folds=5, chunk_size=4)
    per_fold = []
    for f in range(5):
        sel = [j for j in range(len(t2i)) if 10 * f <= int(t2i[j]) < 10 * (f + 1)]
        fold_keys = None if keys is None else keys[10 * f : 10 * (f + 1)]
        per_fold.append(
            _ref_cross_modal(img[10 * f : 10 * (f + 1)], txt[sel], t2i[sel] - 10 * f, fold_keys)
        )
    for k in per_fold[0]:
        assert got[k] == pytest.approx(sum(r[k] for r in per_fold) / 5, abs=1e-9), k
    # 1K is easier than the full set (fewer distractors): never lower, here strictly higher.
    full = cross_modal_retrieval(img, txt, t2i, img_keys=keys)
    assert got["rsum"] > full["rsum"]


def test_coco_1k_rejects_uneven_folds():
    img, txt, t2i = _paired_data(seed=2, n_img=12)
    with pytest.raises(ValueError, match="folds"):
        coco_1k(img, txt, t2i, folds=5)


def test_five_captions_per_image_not_one_to_one():
    # Perfect embeddings: every caption equals its image.
    g = torch.Generator().manual_seed(0)
    img = _normed(g, 20, 16)
    t2i = torch.arange(20).repeat_interleave(5)
    txt = img[t2i].clone()
    res = coco_1k(img, txt, t2i, folds=4)
    assert res["t2i_r1"] == 100.0 and res["i2t_r1"] == 100.0
    # The trap: pretend each caption has its own (duplicated) image. The four identical copies
    # of the right image become tied negatives, so text->image R@1 collapses. We do not do this.
    trap = cross_modal_retrieval(img[t2i], txt, torch.arange(100))
    assert trap["t2i_r1"] < 50.0


# ----------------------------------------------------------------------------- image retrieval


def _gallery(seed, n=41, integer=False):
    g = torch.Generator().manual_seed(seed)
    keys = [i // 3 if i < 36 else 100 + i for i in range(n)]  # triples + 5 singletons
    perm = torch.randperm(n, generator=g).tolist()
    keys = [keys[p] for p in perm]
    classes = [k % 4 if k < 100 else "solo" for k in keys]
    if integer:  # integer centre per key + integer noise: exact scores, many ties
        centres = torch.randint(-2, 3, (200, 5), generator=g).double()
        emb = torch.stack([centres[k % 200] for k in keys])
        emb = emb + torch.randint(-1, 2, (n, 5), generator=g).double()
    else:
        centres = _normed(g, 200, 6)
        emb = torch.nn.functional.normalize(
            torch.stack([centres[k % 200] for k in keys]) + 0.9 * _normed(g, n, 6), dim=1
        )
    return emb, keys, classes


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 6, 1024])
def test_image_retrieval_matches_brute_force(integer, chunk_size):
    emb, keys, classes = _gallery(seed=4 + int(integer), integer=integer)
    got = image_retrieval(emb, keys, classes=classes, chunk_size=chunk_size)
    want = _ref_image_retrieval(emb, keys, classes)
    _assert_close(got, want)
    assert got["n_queries"] == 36.0  # the 5 singletons are skipped
    assert 0 < got["r1"] < 100 and 0 < got["map"] < 100


def test_image_retrieval_map_matches_sklearn_without_ties():
    emb, keys, classes = _gallery(seed=8)
    got = image_retrieval(emb, keys, classes=classes, chunk_size=5)
    sim = emb @ emb.T
    aps = []
    for i in range(len(keys)):
        others = [j for j in range(len(keys)) if j != i]
        y = [classes[j] == classes[i] for j in others]
        if any(y):
            aps.append(average_precision_score(y, sim[i, others].numpy()))
    assert got["n_map_queries"] == len(aps)
    assert got["map"] == pytest.approx(100.0 * sum(aps) / len(aps), abs=1e-9)


def test_image_retrieval_ties_by_hand():
    emb = torch.full((4, 4), 0.5)  # all scores exactly 1.0
    res = image_retrieval(emb, keys=[0, 0, 1, 1], classes=["a", "a", "b", "b"])
    # Each query: 1 positive tied with 2 negatives -> placed after them: rank 2, AP = 1/3.
    assert res["r1"] == 0.0 and res["r5"] == 100.0
    assert res["map"] == pytest.approx(100.0 / 3)


def test_image_retrieval_needs_some_positive():
    emb = _normed(torch.Generator().manual_seed(0), 5, 3)
    with pytest.raises(ValueError, match="keys"):
        image_retrieval(emb, keys=list("abcde"))


# ----------------------------------------------------------------------------- text matching


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 9, 1024])
def test_text_matching_matches_brute_force(integer, chunk_size):
    g = torch.Generator().manual_seed(30 + int(integer))
    qk = [i % 13 for i in range(40)]
    ck = [i % 13 for i in range(60)] + ["distractor"] * 7
    if integer:
        q = torch.randint(-1, 2, (40, 4), generator=g).double()
        c = torch.randint(-1, 2, (67, 4), generator=g).double()
    else:
        centres = _normed(g, 14, 8)
        q = _normed(g, 40, 8) + torch.stack([centres[k] for k in qk])
        c = _normed(g, 67, 8) + torch.stack([centres[k if k != "distractor" else 13] for k in ck])
    got = text_matching(q, c, qk, ck, chunk_size=chunk_size)
    _assert_close(got, _ref_text_matching(q, c, qk, ck))
    assert 0 < got["mrr"] < 100


def test_text_matching_counts_queries_without_positive():
    q = torch.eye(3)
    c = torch.eye(3)
    with pytest.raises(ValueError, match="2 of 3 queries"):
        text_matching(q, c, ["a", "b", "c"], ["a", "x", "y"])


# ----------------------------------------------------------------------------- validation


def test_image_without_caption_names_the_index():
    img = torch.eye(4)
    txt = torch.eye(4)[[0, 1, 3]]
    with pytest.raises(ValueError, match=r"image index 2"):
        cross_modal_retrieval(img, txt, torch.tensor([0, 1, 3]))
    # With instance keys, image 2 shares image 3's captions: defined, no error.
    cross_modal_retrieval(img, txt, torch.tensor([0, 1, 3]), img_keys=[0, 1, 2, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(img_emb=torch.zeros(2, 3)), "img_emb and txt_emb"),
        (dict(img_emb=torch.zeros(2, 4, 1)), "img_emb"),
        (dict(txt_emb=torch.zeros(0, 4)), "txt_emb"),
        (dict(txt_to_img=torch.tensor([0, 1, 2, 2])), "txt_to_img"),
        (dict(txt_to_img=torch.tensor([0, 1, -1])), "txt_to_img"),
        (dict(txt_to_img=torch.tensor([0, 1])), "txt_to_img"),
        (dict(txt_to_img=torch.tensor([0.0, 1.0, 1.0])), "txt_to_img"),
        (dict(img_emb=torch.tensor([[1.0, 0, 0, 0], [0, float("nan"), 0, 0]])), "img_emb"),
        (dict(txt_emb=torch.full((3, 4), float("inf"))), "txt_emb"),
        (dict(img_keys=["a"]), "img_keys"),
        (dict(img_keys=[[1], [2]]), "img_keys"),
        (dict(ks=(0, 5)), "ks"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_malformed_inputs_name_the_argument(kwargs, match):
    args = dict(img_emb=torch.eye(4)[:2], txt_emb=torch.eye(4)[[0, 1, 1]], txt_to_img=[0, 1, 1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cross_modal_retrieval(**args)


# ----------------------------------------------------------------------------- properties


@st.composite
def _small_problem(draw):
    n_img = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 4))
    counts = draw(st.lists(st.integers(1, 3), min_size=n_img, max_size=n_img))
    t2i = [i for i, c in enumerate(counts) for _ in range(c)]
    order = draw(st.permutations(range(len(t2i))))
    t2i = [t2i[o] for o in order]
    ints = st.integers(-2, 2)
    row = st.lists(ints, min_size=dim, max_size=dim)
    img = draw(st.lists(row, min_size=n_img, max_size=n_img))
    txt = draw(st.lists(row, min_size=len(t2i), max_size=len(t2i)))
    keys = draw(st.none() | st.lists(st.sampled_from("abc"), min_size=n_img, max_size=n_img))
    chunk = draw(st.integers(1, 8))
    # Integer-valued float64 embeddings: dot products are exact, so ties are genuine.
    return (torch.tensor(img, dtype=torch.float64), torch.tensor(txt, dtype=torch.float64),
            torch.tensor(t2i), keys, chunk)


@settings(max_examples=60, deadline=None)
@given(_small_problem())
def test_property_bounds_monotone_and_brute_force(problem):
    img, txt, t2i, keys, chunk = problem
    res = cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=chunk)
    for d in ("i2t", "t2i"):
        r1, r5, r10 = res[f"{d}_r1"], res[f"{d}_r5"], res[f"{d}_r10"]
        assert 0.0 <= r1 <= r5 <= r10 <= 100.0
    assert res["rsum"] == pytest.approx(sum(res[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS))
    assert 1.0 <= res["i2t_medr"] <= txt.shape[0] and 1.0 <= res["t2i_medr"] <= img.shape[0]
    _assert_close(res, _ref_cross_modal(img, txt, t2i, keys))


@settings(max_examples=60, deadline=None)
@given(_small_problem(), st.randoms(use_true_random=False))
def test_property_gallery_order_invariance(problem, rnd):
    # Holds even with ties because the pessimistic rank depends on scores only.
    img, txt, t2i, keys, chunk = problem
    base = cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=chunk)
    n, m = img.shape[0], txt.shape[0]
    ip = list(range(n))
    tp = list(range(m))
    rnd.shuffle(ip)
    rnd.shuffle(tp)
    new_pos = {old: new for new, old in enumerate(ip)}  # old image index -> new position
    img2 = img[ip]
    txt2 = txt[tp]
    t2i2 = torch.tensor([new_pos[int(t2i[j])] for j in tp])
    keys2 = None if keys is None else [keys[i] for i in ip]
    res = cross_modal_retrieval(img2, txt2, t2i2, img_keys=keys2, chunk_size=chunk)
    _assert_close(res, base)


@st.composite
def _malformed(draw):
    n_img = draw(st.integers(1, 5))
    m = draw(st.integers(n_img, 8))
    dim = draw(st.integers(1, 4))
    img = torch.randn(n_img, dim)
    txt = torch.randn(m, dim)
    t2i = torch.tensor([j % n_img for j in range(m)])
    keys = None
    kind = draw(st.sampled_from(["dim", "high", "negative", "nan_img", "nan_txt", "len",
                                 "1d", "empty", "keys_len", "orphan"]))
    if kind == "dim":
        txt = torch.randn(m, dim + draw(st.integers(1, 3)))
    elif kind == "high":
        t2i[draw(st.integers(0, m - 1))] = n_img + draw(st.integers(0, 5))
    elif kind == "negative":
        t2i[draw(st.integers(0, m - 1))] = -draw(st.integers(1, 5))
    elif kind == "nan_img":
        img[draw(st.integers(0, n_img - 1)), draw(st.integers(0, dim - 1))] = float("nan")
    elif kind == "nan_txt":
        txt[draw(st.integers(0, m - 1)), draw(st.integers(0, dim - 1))] = float("nan")
    elif kind == "len":
        t2i = t2i[: draw(st.integers(0, m - 1))]
    elif kind == "1d":
        img = img[0]
    elif kind == "empty":
        img = img[:0]
    elif kind == "keys_len":
        keys = list(range(n_img + draw(st.integers(1, 3))))
    elif kind == "orphan":
        img = torch.cat([img, torch.randn(1, dim)])  # one more image than any caption points to
    return img, txt, t2i, keys


@settings(max_examples=80, deadline=None)
@given(_malformed(), st.booleans())
def test_property_malformed_inputs_raise_value_error(bad, use_1k):
    img, txt, t2i, keys = bad
    with pytest.raises(ValueError):
        if use_1k:
            coco_1k(img, txt, t2i, img_keys=keys, folds=1)
        else:
            cross_modal_retrieval(img, txt, t2i, img_keys=keys)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from(["dim", "nan", "keys"]))
def test_property_unimodal_malformed_raise_value_error(dim, seed, kind):
    g = torch.Generator().manual_seed(seed)
    q, c = torch.randn(4, dim, generator=g), torch.randn(5, dim, generator=g)
    qk, ck = [0, 1, 0, 1], [0, 1, 2, 0, 1]
    if kind == "dim":
        c = torch.randn(5, dim + 1, generator=g)
    elif kind == "nan":
        q[1, 0] = math.nan
    else:
        qk = qk[:3]
    with pytest.raises(ValueError):
        text_matching(q, c, qk, ck)
    with pytest.raises(ValueError):
        image_retrieval(q if kind != "dim" else torch.randn(4, dim, 1), qk, classes=qk)
