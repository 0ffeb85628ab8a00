"""cookie_lib.step: epoch batches, the lr schedule, the weight-decay groups and one public train_step."""
from __future__ import annotations

import math

import pytest
import torch

from cookie_lib.config import ConfigError, load_config, resolve_path
from cookie_lib.features import ImageTokens, TextTokens, split_features
from cookie_lib.losses import CookieLoss
from cookie_lib.model import CookieModel
from cookie_lib.step import (CookieStep, NonFiniteLossError, build_optimizer, epoch_batches, lr_lambda,
                             param_groups, step_generator, train_step)


def test_epoch_batches_are_a_seeded_permutation_of_full_batches():
    batches = epoch_batches(50, seed=3, epoch=1, global_batch=16)
    assert [len(b) for b in batches] == [16, 16, 16]  # 50 // 16 full batches, the rest dropped
    flat = torch.cat(batches).tolist()
    assert len(set(flat)) == 48 and set(flat) <= set(range(50))
    again = epoch_batches(50, seed=3, epoch=1, global_batch=16)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(torch.cat(batches), torch.cat(epoch_batches(50, 3, 2, 16)))  # epoch matters
    with pytest.raises(ValueError, match="larger than the 10 training images"):
        epoch_batches(10, 0, 0, 16)


def test_lr_lambda_warmup_then_cosine_to_zero():
    f = lr_lambda(warmup=4, total=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0, abs=1e-12)
    assert f(100) == pytest.approx(0.0, abs=1e-12)  # clamped after the end
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


@pytest.fixture(scope="module")
def smoke_parts(smoke_corpus):
    cfg = load_config("smoke")
    feats = split_features(cfg, smoke_corpus.split("train"), "train", cfg.train.num_views,
                           resolve_path(cfg.data.dataset))
    torch.manual_seed(0)
    model = CookieModel(cfg.model, feats.image_tokens.shape[-1], feats.text_tokens.shape[-1],
                        feats.image_tokens.shape[-2])
    loss = CookieLoss(cfg.loss)
    return cfg, feats, model, loss


def test_param_groups_keep_1d_positions_and_temperatures_out_of_weight_decay(smoke_parts):
    cfg, _, model, loss = smoke_parts
    groups = param_groups([model, loss], [None, None], cfg.train)
    assert [g["name"] for g in groups] == ["head_decay", "head_no_decay"]  # no encoder group: all frozen
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    names = {id(p): n for m in (model, loss) for n, p in m.named_parameters()}
    every = {n: p for m in (model, loss) for n, p in m.named_parameters()}
    # not decayed: every tensor of < 2 dims (biases, norm gains, log temperatures) and the position embedding
    assert {names[i] for i in no_decay} == {n for n, p in every.items() if p.ndim < 2} | {"visual_pos"}
    assert {"log_scale.cross_modal", "log_scale.visual", "log_scale.textual", "visual_proj.bias"} <= \
        {names[i] for i in no_decay}
    assert {names[i] for i in decay} == {n for n, p in every.items() if p.ndim >= 2} - {"visual_pos"}
    assert not decay & no_decay
    assert len(decay) + len(no_decay) == sum(1 for m in (model, loss) for p in m.parameters() if p.requires_grad)
    assert groups[0]["weight_decay"] == cfg.train.weight_decay and groups[1]["weight_decay"] == 0.0
    assert {g["lr"] for g in groups} == {cfg.train.lr}


def test_encoder_groups_take_encoder_lr_and_skip_frozen_parameters():
    cfg = load_config("smoke", {"train.encoder_lr": 1e-5})
    head = torch.nn.Linear(4, 4)
    enc = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    enc[0].weight.requires_grad_(False)  # a frozen block stays out of every group
    groups = param_groups([head], [enc], cfg.train)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"head_decay", "head_no_decay", "encoder_no_decay"}
    assert by["encoder_no_decay"]["lr"] == 1e-5 and len(by["encoder_no_decay"]["params"]) == 3
    opt = build_optimizer([head], [enc], cfg.train)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 3


def _one_step(cfg, feats, model_state, loss_state, step=0):
    cfg_model = CookieModel(cfg.model, feats.image_tokens.shape[-1], feats.text_tokens.shape[-1],
                            feats.image_tokens.shape[-2])
    cfg_model.load_state_dict(model_state)
    loss = CookieLoss(cfg.loss)
    loss.load_state_dict(loss_state)
    module = CookieStep(cfg_model, loss, ImageTokens(feats, None, cfg.model.image_size, torch.device("cpu")),
                        TextTokens(feats, None, torch.device("cpu"))).train()
    opt = build_optimizer([cfg_model, loss], [None, None], cfg.train)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.train.warmup_steps, 10))
    batches = epoch_batches(len(feats.records), cfg.train.seed, 0, cfg.train.batch_size)[:2]
    torch.manual_seed(1)  # dropout
    rec = train_step(module, opt, sched, feats, batches, step_generator(cfg.train.seed, 0, step), step=step,
                     batch_size=cfg.train.batch_size, checkpoint="ckpt.pt")
    return rec, cfg_model


def test_train_step_record_and_determinism(smoke_parts):
    cfg, feats, model, loss = smoke_parts
    ms, ls = model.state_dict(), loss.state_dict()
    rec_a, model_a = _one_step(cfg, feats, ms, ls)
    rec_b, model_b = _one_step(cfg, feats, ms, ls)
    assert rec_a == rec_b
    assert set(rec_a) == {"step", "cross_modal", "visual", "textual", "lr", "tau_cross_modal", "tau_visual",
                          "tau_textual"}
    assert rec_a["lr"] == pytest.approx(cfg.train.lr * lr_lambda(cfg.train.warmup_steps, 10)(1))
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[k]), k
    assert not torch.equal(model_a.visual_proj.weight, ms["visual_proj.weight"])  # it did update


def test_train_step_names_step_term_and_checkpoint_on_nan(smoke_parts, monkeypatch):
    cfg, feats, model, loss = smoke_parts
    from cookie_lib import losses as L
    real = L.info_nce
    calls = []

    def nan_textual(a, b, keys, scale):  # CookieLoss calls cross_modal, visual, textual in this order
        calls.append(1)
        out = real(a, b, keys, scale)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(L, "info_nce", nan_textual)
    with pytest.raises(NonFiniteLossError, match=r"non-finite textual loss \(nan\) at step 7; .*ckpt\.pt"):
        _one_step(cfg, feats, model.state_dict(), loss.state_dict(), step=7)


@pytest.mark.parametrize("k", [2, 3])
def test_text_buckets_embed_every_caption_as_one_batch_does(smoke_parts, k):
    """Length-sorted chunks are the same function as one padded batch (eval mode: no dropout), in the
    batch's own order, with gradients to the same parameters."""
    cfg, feats, model, loss = smoke_parts
    texts = TextTokens(feats, None, torch.device("cpu"))
    images = ImageTokens(feats, None, cfg.model.image_size, torch.device("cpu"))
    rows = torch.randperm(len(feats.texts), generator=torch.Generator().manual_seed(0))[:24]
    lengths = texts.lengths(rows)
    assert lengths.min() < lengths.max()  # the chunks really are cut to different lengths
    one, chunked = CookieStep(model, loss, images, texts).eval(), CookieStep(model, loss, images, texts, k).eval()
    a, b = one.embed_text(rows), chunked.embed_text(rows)
    assert b.shape == a.shape and torch.allclose(a, b, atol=1e-6)
    b.sum().backward()
    assert model.text_proj.weight.grad is not None and model.text_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_text_buckets_key_is_left_out_at_its_default_and_checked():
    assert "text_buckets" not in load_config("smoke").to_dict()["train"]
    assert load_config("smoke", {"train.text_buckets": 2}).to_dict()["train"]["text_buckets"] == 2
    for bad, match in (({"train.text_buckets": 0}, r"train.text_buckets=0 .*\[1, train.batch_size"),
                       ({"train.text_buckets": 2, "model.freeze_text": "none"}, "live")):
        with pytest.raises(ConfigError, match=match):
            load_config("smoke", bad)


def test_trainer_embeds_training_captions_in_the_configured_buckets(smoke_corpus, tmp_path):
    from cookie_lib.train import Trainer

    cfg = load_config("smoke", {"train.text_buckets": 2, "train.max_steps": 2})
    tr = Trainer(cfg, tmp_path / "run", progress=False, corpus=smoke_corpus)
    assert tr.step_module.text_buckets == 2
    assert tr.run().global_step == 2
