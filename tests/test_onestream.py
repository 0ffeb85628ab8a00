"""cookie_lib.study.onestream: the cross-encoder (towers + joint blocks), its calibration, hard-negative
mining, the trainer with validation-based checkpoint choice, re-ranking and the speed/accuracy table."""
from __future__ import annotations

import json

import pytest
import torch

from cookie_lib.config import load_config, resolve_path
from cookie_lib.features import ImageTokens, split_features
from cookie_lib.metrics import score_matrix_ranks
from cookie_lib.model import CookieModel
from cookie_lib.runtime import seed_everything
from cookie_lib.step import build_optimizer, epoch_batches, lr_lambda, step_generator
from cookie_lib.study.onestream import (SETTINGS, TABLE_COLUMNS, CrossEncoder, Gallery, GroupStep, Positives,
                                        encode_split, gallery_eval, load_onestream, mine_hard_negatives, rerank,
                                        score_index_pairs, train_onestream)
from cookie_lib.study.onestream.settings import HARD_NEGATIVE_POOL, HARD_NEGATIVE_SKIP
from cookie_lib.study.onestream.train import _draw_group


@pytest.fixture(scope="module")
def smoke(smoke_corpus):
    cfg = load_config("smoke")
    dataset = resolve_path(cfg.data.dataset)
    train = split_features(cfg, smoke_corpus.split("train"), "train", cfg.train.num_views, dataset, progress=False)
    val = split_features(cfg, smoke_corpus.split("val"), "val", 1, dataset, progress=False)
    test = split_features(cfg, smoke_corpus.split("test"), "test", 1, dataset, progress=False)
    return cfg, train, val, test


def _cookie(cfg, feats, seed=0):
    torch.manual_seed(seed)
    return CookieModel(cfg.model, feats.image_tokens.shape[-1], feats.text_tokens.shape[-1],
                       feats.image_tokens.shape[-2]).eval()


@pytest.fixture(scope="module")
def trained(smoke, tmp_path_factory):
    cfg, train, val, _ = smoke
    out = tmp_path_factory.mktemp("onestream")
    res = train_onestream(cfg, out, seed=0, cookie=_cookie(cfg, train), steps=6, train_feats=train, val_feats=val,
                          device="cpu", log_every=1)
    return out, res


def test_trainer_writes_result_and_keeps_the_best_validation_epoch(trained, smoke):
    out, res = trained
    assert res["steps"] == 6 and len(res["history"]) == 6
    data = json.loads((out / "result.json").read_text())
    assert data["kind"] == "onestream" and data["settings"] == SETTINGS and data["config"]["model"]["dim"] == 64
    for rec in data["history"]:
        assert rec["loss"] > 0 and 0 <= rec["group_acc"] <= 100
    val = data["val"]
    assert val[0]["step"] == 0 and [v["step"] for v in val[1:]] == [6]  # step 0 (= COOKIE), then the end
    chosen = max(val[1:], key=lambda r: r["r1"])  # the kept checkpoint: best validation R@1, never step 0
    assert data["best_step"] == chosen["step"] >= 1 and data["val_best_r1"] == chosen["r1"]
    assert data["initial_sim_scale"] == pytest.approx(1 / 0.07)  # a bare CookieModel: the loss's initial 1/tau
    # the saved weights load back and score like the model that wrote them
    _, train, _, _ = smoke
    model = load_onestream(out / "onestream.pt", train)
    img, txt, mask = train.image_tokens[0, :3].float(), train.text_tokens[:3].float(), train.text_mask[:3]
    with torch.no_grad():
        s = model.score(img, txt, mask)
    assert s.shape == (3,) and torch.isfinite(s).all()


def test_joint_layers_are_not_the_identity_but_the_start_ranks_as_cookie(smoke):
    cfg, train, _, test = smoke
    cookie = _cookie(cfg, train)
    model = CrossEncoder(cookie).eval()
    assert all(float(b.ls1.gamma.detach().abs().min()) == 1.0 for b in model.joint.layers)  # LayerScale 1, not 0
    enc = encode_split(model, test, range(4), torch.arange(6), "cpu")
    ii, jj = torch.arange(4).repeat_interleave(6), torch.arange(6).repeat(4)
    with torch.no_grad():
        v, t = enc["v"][ii], enc["t"][jj]
        x = torch.cat([model.cls.expand(len(ii), -1, -1), v + model.type_img, t + model.type_txt], 1)
        h = model.joint(x, None)[:, 0]
    assert float(h.std(0).mean()) > 1e-3  # the CLS state depends on the pair: the joint pass is not constant
    # the match layer starts at 0: scores = exp(s) <u, w> + b, COOKIE's ranking exactly
    scores = score_index_pairs(model, enc, ii, jj).view(4, 6)
    cos = enc["u"] @ enc["w"].T
    assert torch.equal(scores.argsort(1), cos.argsort(1))
    rows = gallery_eval(model, test, list(range(len(test.records))), ks=(3,), exhaustive=True)
    two = rows[0]
    for r in rows[1:]:
        assert (r["i2t_r1"], r["t2i_r1"]) == (two["i2t_r1"], two["t2i_r1"]), r


def test_group_draws_are_distinct_allowed_pool_entries():
    gen = torch.Generator().manual_seed(0)
    pool = torch.arange(40).view(4, 10)
    ok = torch.ones(4, 10, dtype=torch.bool)
    ok[1, 3:] = False  # row 1: only 3 allowed slots
    ok[2] = False  # row 2: none allowed (falls back to all)
    ok[3, :2] = False
    for _ in range(20):
        g = _draw_group(pool, ok, torch.tensor([0, 1, 3, 2]), 3, gen)
        assert g.shape == (4, 3)
        assert len(set(g[0].tolist())) == 3 and set(g[1].tolist()) == {10, 11, 12}
        assert all(v >= 32 for v in g[2].tolist()) and len(set(g[2].tolist())) == 3  # row 3: slots 2..9
        assert all(20 <= v < 30 for v in g[3].tolist())


def test_hard_negatives_are_the_most_similar_non_positives(smoke):
    _, _, _, test = smoke
    images, caps = list(range(len(test.records))), torch.arange(len(test.texts))
    pos = Positives(test, images, caps)
    dense = pos.dense()
    assert dense.sum(1).min() >= 1  # every image has its own captions
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(len(images), 8, generator=gen), torch.randn(len(caps), 8, generator=gen)
    c, c_ok, i, i_ok = mine_hard_negatives(img, txt, pos, k=4, chunk=5)
    assert c.shape == (len(images), 4) and i.shape == (len(caps), 4)
    assert not dense.gather(1, c)[c_ok].any() and not dense.T.gather(1, i)[i_ok].any()
    sim = (img @ txt.T).masked_fill(dense, float("-inf"))
    assert torch.equal(c[:, 0], sim.argmax(1))  # the first slot is the hardest negative
    assert torch.equal(pos.rows_of_captions(range(len(caps))), dense.T)


def test_pessimistic_ranks_and_rerank():
    scores = torch.tensor([[0.9, 0.5, 0.9], [0.1, 0.2, 0.3]])
    pos = torch.tensor([[True, False, False], [False, True, False]])
    assert score_matrix_ranks(scores, pos).tolist() == [1, 1]  # a tie counts against the query
    two = torch.tensor([[3.0, 2.0, 1.0]])
    r = rerank(two, torch.tensor([[0, 1]]), torch.tensor([[-5.0, 7.0]]))
    assert r.argsort(descending=True)[0].tolist() == [1, 0, 2]  # re-ranked top 2 above the rest


def test_rerank_with_k_equal_gallery_is_exhaustive(trained, smoke):
    _, _, _, test = smoke
    out, _ = trained
    model = load_onestream(out / "onestream.pt", test)
    images = list(range(8))
    n_caps = sum(len(test.caption_ids[i]) for i in images)
    rows = gallery_eval(model, test, images, ks=(n_caps, 2), exhaustive=True, label="t")
    by = {r["method"]: r for r in rows}
    full, rr = by["one-stream exhaustive"], by[f"two-stream + re-rank top {n_caps}"]
    assert rr["i2t_r1"] == full["i2t_r1"] and rr["t2i_r1"] == full["t2i_r1"]
    assert rr["pairs_scored"] == full["pairs_scored"] == 8 * n_caps
    assert by["two-stream + re-rank top 2"]["pairs_scored"] <= 2 * (8 + n_caps)
    g = Gallery(model, test, images)
    assert torch.allclose(g.exhaustive()[1, 3], g.score(torch.tensor([1]), torch.tensor([3]))[0])
    assert all(list(r) == TABLE_COLUMNS for r in rows)  # the table's columns, in order


def test_trainer_learns(smoke, tmp_path):
    """30 steps of the grouped loss on hard negatives lower it below its start (COOKIE's own logits)."""
    cfg, train, val, _ = smoke
    res = train_onestream(cfg, tmp_path, seed=1, cookie=_cookie(cfg, train, 1), steps=30, train_feats=train,
                          val_feats=val, device="cpu", log_every=1)
    first = sum(r["loss"] for r in res["history"][:5]) / 5
    last = sum(r["loss"] for r in res["history"][-5:]) / 5
    assert last < first, (first, last)


def test_positives_cover_every_column_of_a_shared_caption(smoke):
    """A caption text held by two images of the gallery is two columns; both are positives of both keys."""
    _, _, _, test = smoke
    rows = [c for ids in test.caption_ids[:3] for c in ids]
    captions = torch.tensor(rows + rows[:1])  # the first text again, as the last column
    pos = Positives(test, [0, 1, 2], captions).dense()
    assert pos[0, 0] and pos[0, -1]
    assert torch.equal(pos[:, 0], pos[:, -1])


def test_training_runs_the_library_step_exactly_as_a_hand_written_loop(smoke, tmp_path):
    """train_onestream trains through COOKIE's step (cookie_lib.step.train_step, build_scheduler); the same
    steps written out (draw, grouped loss, zero_grad, backward, AdamW step, schedule step, as the
    cross-encoder's own loop did) give bitwise the same logged losses and the same final weights."""
    cfg, train, val, _ = smoke
    steps, seed, t = 4, 3, cfg.train
    res = train_onestream(cfg, tmp_path, seed=seed, cookie=_cookie(cfg, train, seed), steps=steps,
                          train_feats=train, val_feats=val, device="cpu", log_every=1)
    cookie = _cookie(cfg, train, seed)
    seed_everything(seed)
    model = CrossEncoder(cookie)
    n, caps = len(train.records), torch.arange(len(train.texts))
    enc = encode_split(model, train, range(n), caps, "cpu")
    pools = mine_hard_negatives(enc["u"], enc["w"], Positives(train, range(n), caps), HARD_NEGATIVE_POOL,
                                HARD_NEGATIVE_SKIP)
    images = ImageTokens(train, None, cfg.model.image_size, "cpu", grid_flip=t.grid_flip)
    group = GroupStep(model, train, images, pools, "cpu")
    opt = build_optimizer([model], [], t)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(t.warmup_steps, steps), steps, t.min_lr_ratio))
    batch = min(SETTINGS["batch"], n)
    losses, per_epoch = [], len(epoch_batches(n, seed, 0, batch))
    for step in range(steps):  # epoch by epoch, as COOKIE's loop (the fixture has fewer batches than steps)
        epoch, s = divmod(step, per_epoch)
        idx = epoch_batches(n, seed, epoch, batch)[s]
        model.train()
        loss, _ = group(*group.draw(train, idx, step_generator(seed, epoch, s)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert [r["loss"] for r in res["history"]] == losses
    saved = torch.load(tmp_path / "onestream.pt", weights_only=False)["model"]  # the last step: the only validation
    assert res["best_step"] == steps
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
