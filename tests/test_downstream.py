"""Downstream suite (cookie_lib.study.downstream) and the pair-based per-query metrics it uses.

Hand-built cases check the protocol (de-duplicated caption gallery, cross-design matrix); seeded random
cases with many ties check the per-query functions against the aggregate ones in cookie_lib.metrics;
one smoke test runs the whole suite on the committed emoji fixture with real frozen encoders.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cookie_lib.config import load_config
from cookie_lib.data import ImageRecord, load_karpathy, text_matching_set
from cookie_lib.evaluate import TEXT_MATCHING_KINDS
from cookie_lib.features import SplitFeatures, key_ids, split_texts
from cookie_lib.metrics import (cross_modal_pair_ranks, cross_modal_retrieval, image_retrieval, key_pairs,
                                pair_average_precision, pair_ranks, text_matching)
from cookie_lib.model import CookieModel
from cookie_lib.study import downstream as ds
from cookie_lib.study import texttask
from cookie_lib.study.baselines import frozen_baseline
from cookie_lib.study.downstream import DownstreamSuite, design_matrix_from_embeddings
from cookie_lib.study.texttask import TextTask, load_text_task, text_cache_key

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fixture_emoji" / "dataset_emoji.json"


def make_feats(captions: list[tuple[str, ...]], keys: list[str], subgroups=None, designs=None,
               kinds=None, tokens_v: int = 3, c_v: int = 6, c_t: int = 5, seed: int = 0) -> SplitFeatures:
    """Hand-built SplitFeatures (random token states) for records with the given captions and keys."""
    g = torch.Generator().manual_seed(seed)
    records = [ImageRecord(imgid=i, path=Path(f"/x/{(designs or ['d'] * len(keys))[i]}/{keys[i]}.png"), split="test",
                           key=keys[i], captions=caps, caption_kinds=(kinds or {}).get(i, ("caption",) * len(caps)),
                           group=None, subgroup=None if subgroups is None else subgroups[i])
               for i, caps in enumerate(captions)]
    texts, caption_ids = split_texts(records)
    return SplitFeatures(records, torch.randn(1, len(records), tokens_v, c_v, generator=g).half(), texts,
                         torch.randn(len(texts), 4, c_t, generator=g).half(), torch.ones(len(texts), 4, dtype=torch.bool),
                         caption_ids, key_ids(records))


def brute_rank(scores: np.ndarray, pos: set[int], ignore: set[int] = frozenset()) -> int:
    """Pessimistic 0-based rank by explicit enumeration: negatives scoring >= the best positive."""
    best = max(scores[j] for j in pos)
    return sum(1 for j in range(len(scores)) if j not in pos and j not in ignore and scores[j] >= best)


# ----------------------------------------------------------------------------- de-duplicated gallery


def test_shared_caption_appears_once_and_ranks_match_brute_force():
    # Three images (designs of one concept) share "cat"; image 3 is another concept; "pet" is shared by
    # images 0 and 3, which have different keys: a relation no single key can express.
    caps = [("cat", "pet"), ("cat", "kitty"), ("cat",), ("dog", "pet")]
    keys = ["c", "c", "c", "d"]
    feats = make_feats(caps, keys)
    assert feats.texts == ["cat", "pet", "kitty", "dog"]  # "cat" once, not three times
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randint(-2, 3, (4, 3), generator=g).float(), dim=-1)
    txt = F.normalize(torch.randint(-2, 3, (4, 3), generator=g).float(), dim=-1)
    suite = DownstreamSuite.from_features(oca=feats)
    metrics, per = suite.score({"oca_img": img, "oca_txt": txt})

    s = (img @ txt.T).numpy()
    i2t = [brute_rank(s[i], {feats.texts.index(c) for c in caps[i]}) for i in range(4)]
    t2i = [brute_rank(s[:, j], {i for i in range(4) if feats.texts[j] in caps[i]}) for j in range(4)]
    assert len(per["oca_i2t_mr"]) == 4 and len(per["oca_t2i_mr"]) == 4  # 4 distinct captions, not 7
    for k in (1, 5, 10):
        assert metrics[f"oca_i2t_r{k}"] == pytest.approx(100 * np.mean([r < k for r in i2t]))
        assert metrics[f"oca_t2i_r{k}"] == pytest.approx(100 * np.mean([r < k for r in t2i]))
    expect = [100 * ((r < 1) + (r < 5) + (r < 10)) / 3 for r in i2t]
    assert per["oca_i2t_mr"] == pytest.approx(expect)


def test_i2t_ranks_on_known_case():
    # 2 images with their own caption and one shared caption; each own caption is beaten by the other one.
    feats = make_feats([("a", "shared"), ("b", "shared")], ["0", "1"])
    assert feats.texts == ["a", "shared", "b"]
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.8, 0.6]])
    i2t, t2i = cross_modal_pair_ranks(img, txt, ds._caption_pairs(feats))
    # image 0: best positive a = 0.6 ("shared" = -1 is also its own), negative b = 0.8 above -> rank 1
    assert i2t.tolist() == [1, 1]
    # "shared" belongs to both images: no negative image at all -> rank 0
    assert t2i.tolist() == [1, 0, 1]


# ----------------------------------------------------------------------------- per-query vs aggregate metrics


def tied_embeddings(n: int, seed: int) -> torch.Tensor:
    """Small-integer embeddings: many exact score ties, which is where tie conventions differ."""
    return torch.randint(-1, 2, (n, 3), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_functions_equal_the_aggregate_metrics(seed):
    img, txt = tied_embeddings(24, seed), tied_embeddings(60, seed + 10)
    owner = torch.randint(0, 24, (60,), generator=torch.Generator().manual_seed(seed))
    owner[:24] = torch.arange(24)
    keys = [i // 3 for i in range(24)]
    ref = cross_modal_retrieval(img, txt, owner, keys, chunk_size=7)
    i2t, t2i = cross_modal_pair_ranks(img, txt, key_pairs(keys, [keys[o] for o in owner.tolist()]), chunk_size=5)
    for k in (1, 5, 10):
        assert 100 * (i2t < k).double().mean().item() == pytest.approx(ref[f"i2t_r{k}"])
        assert 100 * (t2i < k).double().mean().item() == pytest.approx(ref[f"t2i_r{k}"])

    classes = [i % 5 for i in range(24)]
    ir = image_retrieval(img, keys, classes)
    self_pairs = torch.arange(24).repeat(2, 1)
    ranks, has = pair_ranks(img, img, key_pairs(keys, exclude_self=True), ignore=self_pairs, chunk_size=4)
    ap, has_c = pair_average_precision(img, img, key_pairs(classes, exclude_self=True), ignore=self_pairs, chunk_size=6)
    assert 100 * (ranks[has] < 1).double().mean().item() == pytest.approx(ir["r1"])
    assert 100 * ap[has_c].mean().item() == pytest.approx(ir["map"])

    q_keys, c_keys = [i % 7 for i in range(24)], [i % 9 for i in range(60)]
    tm = text_matching(img, txt, q_keys, c_keys)
    r, _ = pair_ranks(img, txt, key_pairs(q_keys, c_keys))
    assert 100 * (r < 1).double().mean().item() == pytest.approx(tm["r1"])
    assert 100 * (1 / (r.double() + 1)).mean().item() == pytest.approx(tm["mrr"])


def test_pair_average_precision_matches_brute_force_with_ties():
    q, g = tied_embeddings(6, 4), tied_embeddings(15, 5)
    pos = torch.tensor([[0, 0, 1, 2, 2, 2, 3, 4, 5], [1, 7, 3, 0, 1, 14, 9, 9, 2]])
    ap, _ = pair_average_precision(q, g, pos, chunk_size=4)
    s = (q @ g.T).numpy()
    for i in range(6):
        p = sorted((s[i, j] for j in pos[1][pos[0] == i].tolist()), reverse=True)
        negs = [s[i, j] for j in range(15) if j not in pos[1][pos[0] == i].tolist()]
        expect = np.mean([k / (k + sum(x >= v for x in negs)) for k, v in enumerate(p, 1)])
        assert ap[i].item() == pytest.approx(expect)


def test_pair_ranks_rejects_bad_pairs():
    x = torch.eye(3)
    with pytest.raises(ValueError, match="gallery index 5"):
        pair_ranks(x, x, torch.tensor([[0], [5]]))
    with pytest.raises(ValueError, match=r"\[2, P\]"):
        pair_ranks(x, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="text.*no positive"):
        cross_modal_pair_ranks(x, x, torch.tensor([[0, 1, 2], [0, 0, 1]]))


# ----------------------------------------------------------------------------- suite on constructed data


def toy_emoji(seed: int = 0) -> tuple[SplitFeatures, list[str]]:
    """6 concepts x 3 designs (one concept lacks design c), label/keyword captions, 2 subgroups."""
    caps, keys, subs, designs, kinds = [], [], [], [], {}
    for c in range(6):
        for d in "abc":
            if c == 5 and d == "c":
                continue
            kinds[len(keys)] = ("cldr_label", "cldr_keywords", "template")
            caps.append((f"label {c}", f"kw {c}, thing", f"an emoji of label {c}"))
            keys.append(f"K{c}")
            subs.append(f"s{c % 2}")
            designs.append(d)
    return make_feats(caps, keys, subs, designs, kinds, seed=seed), designs


def wordnet_like(tmp_path: Path, n: int = 12) -> Path:
    """A tiny lemma -> gloss task: two lemmas share a gloss key ("bank" and "depository"), plus distractors."""
    queries = [{"text": f"lemma {i}", "key": f"s{i}"} for i in range(n)] + [{"text": "depository", "key": "s0"}]
    cands = [{"text": f"a gloss number {i}", "key": f"s{i}"} for i in range(n)] + [{"text": "unused", "key": "zz"}]
    path = tmp_path / "wordnet_task.json"
    path.write_text(json.dumps({"queries": queries, "candidates": cands}))
    return path


def random_text_task(tmp_path: Path) -> TextTask:
    task = load_text_task(wordnet_like(tmp_path))
    g = torch.Generator().manual_seed(1)
    task.tokens = torch.randn(len(task.texts), 4, 5, generator=g).half()
    task.mask = torch.ones(len(task.texts), 4, dtype=torch.bool)
    return task


def test_per_query_means_equal_metrics_and_match_aggregates(tmp_path):
    feats, designs = toy_emoji()
    task = random_text_task(tmp_path)
    suite = DownstreamSuite.from_features(emoji=feats, oca=feats, wordnet=task, emoji_designs=designs)
    emb = {"emoji_img": tied_embeddings(len(feats.records), 1), "emoji_txt": tied_embeddings(len(feats.texts), 2),
           "wn_txt": tied_embeddings(len(task.texts), 3)}
    emb["oca_img"], emb["oca_txt"] = emb["emoji_img"], emb["emoji_txt"]
    m, per = suite.score(emb)
    names = {f"{p}_{d}_r{k}" for p in ("emoji", "oca") for d in ("i2t", "t2i") for k in (1, 5, 10)}
    names |= {"emoji_rsum", "emoji_mr", "oca_rsum", "oca_mr", "img_r1", "img_map", "wn_r1", "wn_mrr",
              "txt_r1", "txt_mrr"}
    assert set(m) == names
    assert set(per) == {"emoji_i2t_mr", "emoji_t2i_mr", "oca_i2t_mr", "oca_t2i_mr", "img_r1", "img_map",
                        "wn_r1", "wn_mrr", "txt_r1", "txt_mrr"}
    for name in ("img_r1", "img_map", "wn_r1", "wn_mrr", "txt_r1", "txt_mrr"):
        assert np.mean(per[name]) == pytest.approx(m[name])
    assert (np.mean(per["emoji_i2t_mr"]) + np.mean(per["emoji_t2i_mr"])) / 2 == pytest.approx(m["emoji_mr"])
    assert m["emoji_mr"] == pytest.approx(m["emoji_rsum"] / 6)
    assert len(per["emoji_t2i_mr"]) == len(feats.texts) == 18  # 3 distinct captions per concept, not per image
    assert len(per["wn_r1"]) == task.num_queries == 13

    # Here each caption belongs to one concept, so the de-duplicated gallery equals the key protocol with
    # one caption row per distinct text.
    owner = [next(i for i, ids in enumerate(feats.caption_ids) if j in ids) for j in range(len(feats.texts))]
    ref = cross_modal_retrieval(emb["emoji_img"], emb["emoji_txt"], torch.tensor(owner), [r.key for r in feats.records])
    for k in ref:
        if k.startswith(("i2t_r", "t2i_r")) or k == "rsum":
            assert m[f"emoji_{k}"] == pytest.approx(ref[k])
    ir = image_retrieval(emb["emoji_img"], [r.key for r in feats.records], [r.subgroup for r in feats.records])
    assert (m["img_r1"], m["img_map"]) == pytest.approx((ir["r1"], ir["map"]))
    assert len(per["img_r1"]) == ir["n_queries"]
    q_t, q_k, c_t, c_k = text_matching_set(feats.records, *TEXT_MATCHING_KINDS)
    row = {t: i for i, t in enumerate(feats.texts)}
    tm = text_matching(emb["emoji_txt"][[row[t] for t in q_t]], emb["emoji_txt"][[row[t] for t in c_t]], q_k, c_k)
    assert (m["txt_r1"], m["txt_mrr"]) == pytest.approx((tm["r1"], tm["mrr"]))
    wt = emb["wn_txt"]
    tm = text_matching(wt[task.q_rows], wt[task.c_rows], task.q_keys, task.c_keys)
    assert (m["wn_r1"], m["wn_mrr"]) == pytest.approx((tm["r1"], tm["mrr"]))


def test_design_matrix_on_toy_case():
    feats, designs = toy_emoji()
    concepts = [r.key for r in feats.records]
    # designs a and b: the concept's one-hot vector (perfect match); design c: one constant vector (all ties)
    img = torch.stack([F.one_hot(torch.tensor(int(k[1:])), 8).float() if d != "c" else torch.full((8,), 0.35)
                       for k, d in zip(concepts, designs)])
    mat = design_matrix_from_embeddings(img, concepts, designs)
    assert mat.shape == (3, 3) and list(mat.index) == ["a", "b", "c"] and list(mat.columns) == ["a", "b", "c"]
    assert mat.index.name == "query design" and mat.columns.name == "gallery design"
    assert all(math.isnan(mat.loc[d, d]) for d in "abc")
    assert mat.loc["a", "b"] == 100 and mat.loc["b", "a"] == 100
    assert mat.loc["a", "c"] == 0 and mat.loc["c", "a"] == 0  # ties are pessimistic
    # the suite method returns the same matrix from the model's embeddings
    suite = DownstreamSuite.from_features(emoji=feats, emoji_designs=designs)
    assert suite.design_matrix(None, emb={"emoji_img": img}).equals(mat)


def test_frozen_baseline_fits_pca_on_pretraining_features_only(tmp_path, monkeypatch):
    import sklearn.decomposition

    fitted = []

    class SpyPCA(sklearn.decomposition.PCA):
        def fit(self, X, y=None):
            fitted.append(np.array(X))
            return super().fit(X, y)

    monkeypatch.setattr(sklearn.decomposition, "PCA", SpyPCA)
    feats, designs = toy_emoji()
    pre = make_feats([(f"cap {i}", f"other {i}") for i in range(20)], [str(i) for i in range(20)], seed=7)
    suite = DownstreamSuite.from_features(emoji=feats, wordnet=random_text_task(tmp_path), emoji_designs=designs)
    m, per = frozen_baseline(suite, pre, dim=4)
    assert len(fitted) == 2
    np.testing.assert_allclose(fitted[0], pre.image_tokens[0].double().mean(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fitted[1], pre.text_tokens.double().mean(1).numpy(), rtol=1e-3)  # mask all ones
    assert set(m) == {"img_r1", "img_map", "wn_r1", "wn_mrr", "txt_r1", "txt_mrr"}
    for k in m:
        assert np.mean(per[k]) == pytest.approx(m[k])
    # the same numbers by hand: whitening fit on `pre`, applied to the suite's pooled image features
    pca = sklearn.decomposition.PCA(4, whiten=True, random_state=0).fit(pre.image_tokens[0].double().mean(1).numpy())
    img = F.normalize(torch.from_numpy(pca.transform(feats.image_tokens[0].double().mean(1).numpy())).float(), dim=-1)
    ir = image_retrieval(img, [r.key for r in feats.records], [r.subgroup for r in feats.records])
    assert (m["img_r1"], m["img_map"]) == pytest.approx((ir["r1"], ir["map"]))
    # another pre-training set gives another whitening (the suite's own features are never fit)
    other = make_feats([(f"cap {i}",) for i in range(20)], [str(i) for i in range(20)], seed=8)
    assert frozen_baseline(suite, other, dim=4)[0] != m


def test_text_task_validation(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": [{"text": "x", "key": "1"}], "candidates": [{"text": "y", "key": "2"}]}))
    with pytest.raises(ValueError, match="bad.json.*no candidate"):
        load_text_task(bad)
    bad.write_text(json.dumps({"queries": [{"text": "", "key": "1"}], "candidates": [{"text": "y", "key": "1"}]}))
    with pytest.raises(ValueError, match=r"queries\[0\] 'text'"):
        load_text_task(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_text_task(bad)
    task = load_text_task(wordnet_like(tmp_path))
    assert task.texts[task.q_rows[-1]] == "depository" and task.q_keys[-1] == "s0"


# ----------------------------------------------------------------------------- smoke: fixture + real encoders


def test_suite_on_fixture_with_real_encoders(tmp_path, monkeypatch):
    cfg = load_config("smoke")  # shares the smoke feature cache with the training tests
    wn = wordnet_like(tmp_path)
    suite = DownstreamSuite(cfg, emoji=FIXTURE, wordnet=wn)
    test = load_karpathy(FIXTURE).split("test")
    assert len(suite.emoji.records) == len(test)
    torch.manual_seed(0)
    _, n_tok, c_v = suite.emoji.image_tokens.shape[1:]
    model = CookieModel(cfg.model, c_v, suite.emoji.text_tokens.shape[-1], n_tok)
    m, per = suite.evaluate(model, "cpu")
    assert {"emoji_mr", "img_r1", "img_map", "wn_r1", "txt_mrr"} <= set(m)
    assert all(0 <= v <= 600 for v in m.values())
    for k in ("img_r1", "img_map", "wn_mrr", "txt_r1"):
        assert np.mean(per[k]) == pytest.approx(m[k])
    sizes = suite.sizes()
    assert sizes["emoji_distinct_captions"] < sum(len(r.captions) for r in test)  # designs share captions
    mat = suite.design_matrix(model)
    n_designs = len({r.path.parent.name for r in test})
    assert mat.shape == (n_designs, n_designs)
    # a second suite reads the text cache instead of encoding again ...
    with monkeypatch.context() as mp:
        mp.setattr(texttask, "encode_texts", lambda *a, **k: pytest.fail("text cache was not reused"))
        again = DownstreamSuite(cfg, wordnet=wn, progress=False)
    assert torch.equal(again.wordnet.tokens, suite.wordnet.tokens)
    # ... and rebuilds a corrupt one, with a warning naming it
    cache = next(Path(cfg.data.cache_dir if Path(cfg.data.cache_dir).is_absolute() else
                      Path(__file__).resolve().parents[1] / cfg.data.cache_dir).glob(
        f"wordnet-text-{text_cache_key(cfg, wn)}.pt"))
    cache.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="wordnet-text-.*corrupt"):
        rebuilt = DownstreamSuite(cfg, wordnet=wn, progress=False)
    assert torch.equal(rebuilt.wordnet.tokens, suite.wordnet.tokens)
