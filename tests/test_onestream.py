"""cookie_lib.study.onestream: the ITM trainer on the fixture, hard-negative draws, re-ranking, the table."""
from __future__ import annotations

import json

import pytest
import torch

from cookie_lib.config import load_config, resolve_path
from cookie_lib.features import split_features
from cookie_lib.model import CookieModel
from cookie_lib.study.onestream import (TABLE_COLUMNS, gallery_eval, hard_negatives,
                                        load_onestream, pessimistic_ranks, rerank, train_onestream, write_table)


@pytest.fixture(scope="module")
def smoke(smoke_corpus):
    cfg = load_config("smoke")
    dataset = resolve_path(cfg.data.dataset)
    train = split_features(cfg, smoke_corpus.split("train"), "train", cfg.train.num_views, dataset, progress=False)
    test = split_features(cfg, smoke_corpus.split("test"), "test", 1, dataset, progress=False)
    return cfg, train, test


@pytest.fixture(scope="module")
def trained(smoke, tmp_path_factory):
    cfg, train, _ = smoke
    out = tmp_path_factory.mktemp("onestream")
    return out, train_onestream(cfg, out, seed=0, steps=6, train_feats=train, device="cpu", log_every=1)


def test_trainer_runs_and_writes_result(trained, smoke):
    out, res = trained
    assert res["steps"] == 6 and len(res["history"]) == 6
    data = json.loads((out / "result.json").read_text())
    assert data["kind"] == "onestream_itm" and data["config"]["model"]["dim"] == 64
    for rec in data["history"]:
        assert rec["itm"] > 0 and 0 <= rec["itm_acc"] <= 100
    # the saved weights load back into a model of the same shape and score the same
    _, train, _ = smoke
    model = load_onestream(out / "onestream.pt", train)
    img, txt, mask = train.image_tokens[0, :2].float(), train.text_tokens[:2].float(), train.text_mask[:2]
    with torch.no_grad():
        assert torch.isfinite(model.score(img, txt, mask)).all()


def test_trainer_learns_on_a_fixed_batch(smoke, tmp_path):
    """40 steps of ITM lower the loss well below its start (log 2 x ~1 for random logits)."""
    cfg, train, _ = smoke
    res = train_onestream(cfg, tmp_path, seed=1, steps=40, train_feats=train, device="cpu", log_every=1)
    first = sum(r["itm"] for r in res["history"][:5]) / 5
    last = sum(r["itm"] for r in res["history"][-5:]) / 5
    assert last < first, (first, last)


def test_hard_negatives_never_draw_a_positive():
    gen = torch.Generator().manual_seed(0)
    keys = torch.tensor([0, 0, 1, 2, 2, 3])
    sim = torch.randn(6, 6, generator=gen)
    for _ in range(20):
        neg_cap, neg_img = hard_negatives(sim, keys, gen)
        assert (keys[neg_cap] != keys).all() and (keys[neg_img] != keys).all()
    # a very peaked similarity picks the hardest negative
    sim = torch.zeros(3, 3)
    sim[0, 2] = 100.0
    neg_cap, _ = hard_negatives(sim, torch.tensor([0, 1, 2]), gen, temperature=0.01)
    assert int(neg_cap[0]) == 2
    with pytest.raises(ValueError, match="batch"):
        hard_negatives(torch.zeros(1, 1), torch.tensor([0]), gen)


def test_pessimistic_ranks_and_rerank():
    scores = torch.tensor([[0.9, 0.5, 0.9], [0.1, 0.2, 0.3]])
    pos = torch.tensor([[True, False, False], [False, True, False]])
    assert pessimistic_ranks(scores, pos).tolist() == [1, 1]  # a tie counts against the query
    two = torch.tensor([[3.0, 2.0, 1.0]])
    top = torch.tensor([[0, 1]])
    r = rerank(two, {(0, 0): -5.0, (0, 1): 7.0}, top)
    assert r.argsort(descending=True)[0].tolist() == [1, 0, 2]  # re-ranked top 2 above the rest


def test_rerank_with_k_equal_gallery_is_exhaustive(trained, smoke):
    cfg, _, test = smoke
    out, _ = trained
    torch.manual_seed(0)
    cookie = CookieModel(cfg.model, test.image_tokens.shape[-1], test.text_tokens.shape[-1],
                         test.image_tokens.shape[-2])
    onestream = load_onestream(out / "onestream.pt", test)
    images = list(range(8))
    n_caps = sum(len(test.caption_ids[i]) for i in images)
    rows = gallery_eval(cookie, onestream, test, images, ks=(n_caps,), exhaustive=True, label="t")
    by = {r["method"]: r for r in rows}
    full, rr = by["one-stream exhaustive"], by[f"two-stream + re-rank top {n_caps}"]
    assert rr["i2t_r1"] == full["i2t_r1"] and rr["t2i_r1"] == full["t2i_r1"]
    assert rr["pairs_scored"] == full["pairs_scored"] == 8 * n_caps
    written = write_table(rows, out)
    header = written[0].read_text().splitlines()[0].split(",")
    assert header == TABLE_COLUMNS and written[2].read_bytes()[:4] == b"\x89PNG"
