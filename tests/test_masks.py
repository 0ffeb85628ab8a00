"""Dropout masks from random bits (cookie_lib.masks) and the bf16 switch (train.amp: auto)."""
import pytest
import torch
from torch import nn

import cookie_lib.config as config_mod
from cookie_lib.config import ConfigError, config_from_dict, load_config
from cookie_lib.masks import BitsDropout, attention, bits_dropout, hf_attention, keep_threshold
from cookie_lib.model import CookieModel, TextEncoder
from cookie_lib.prefix import encoder_tails


def test_bits_dropout_keeps_the_quantised_rate_and_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = bits_dropout(x, 0.1)
    q = keep_threshold(0.1) / 65536
    kept = (y != 0).float().mean().item()
    # binomial SE of the keep rate over 4e5 draws is 4.7e-4: 5 SE
    assert abs(kept - q) < 2.4e-3 and abs(q - 0.9) < 1e-4
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / q))
    assert abs(y.mean().item() - 1.0) < 3e-3  # E[y] = x
    # independent of position: the kept fraction is the same in each quarter of the 64-bit words
    quarters = (y != 0).float().view(-1, 4).mean(0)
    assert (quarters - q).abs().max() < 5e-3


def test_bits_dropout_is_seeded_and_off_in_eval():
    x = torch.randn(7, 33)  # an odd size: the last 64-bit word is only partly used
    torch.manual_seed(3)
    a = bits_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, bits_dropout(x, 0.3))
    assert bits_dropout(x, 0.3, training=False) is x and bits_dropout(x, 0.0) is x
    d = BitsDropout(0.3).eval()
    assert d(x) is x


def test_bits_dropout_gradient_is_the_mask():
    x = torch.randn(64, 16, requires_grad=True)
    torch.manual_seed(1)
    y = bits_dropout(x, 0.25)
    y.sum().backward()
    scale = 65536 / keep_threshold(0.25)
    assert torch.allclose(x.grad, (y != 0).float() * scale)


@pytest.mark.parametrize("padded", [False, True])
def test_bits_attention_is_the_modules_function_without_dropout(padded):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True).eval()
    x = torch.randn(3, 5, 32)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]]) if padded else None
    want = attention(mha, x, pad, "bernoulli")
    got = attention(mha, x, pad, "bits")
    valid = slice(None) if pad is None else ~pad
    assert torch.allclose(got[valid], want[valid], atol=1e-6)


def test_hf_attention_matches_berts_eager_attention_for_both_mask_forms():
    from transformers.models.bert.modeling_bert import eager_attention_forward
    torch.manual_seed(0)
    module = nn.Module().eval()
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, ..., 4:] = False
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~keep, torch.finfo(torch.float32).min)
    want, _ = eager_attention_forward(module, q, k, v, additive, scaling=8 ** -0.5)
    for mask in (keep, additive):
        got, _ = hf_attention(module, q, k, v, mask, scaling=8 ** -0.5, dropout=0.1)
        assert torch.allclose(got, want, atol=1e-6)


def test_bits_model_swaps_every_dropout_and_keeps_its_function_and_state_dict():
    over = {"model.dim": 32, "model.heads": 4, "model.depth": 2, "model.max_text_len": 16, "model.visual_layer": 14,
            "model.finetune_text_layers": 1}
    plain, bits = load_config(None, over), load_config(None, {**over, "model.dropout_masks": "bits"})
    models = []
    for c in (plain, bits):
        torch.manual_seed(0)
        models.append(CookieModel(c.model, 96, 384, 16, text_tail=encoder_tails(c.model)[1]))
    a, b = models
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not any(type(m) is nn.Dropout for m in b.modules())
    assert sum(isinstance(m, BitsDropout) for m in b.modules()) == sum(type(m) is nn.Dropout for m in a.modules())
    enc = TextEncoder("auto", "all", 16)
    states, mask = enc(**enc.tokenize(["red heart", "a cat face with tears of joy"]))
    img = torch.randn(2, 16, 96)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.allclose(a.embed_text(states, mask), b.embed_text(states, mask), atol=1e-5)
        assert torch.allclose(a.embed_image(img), b.embed_image(img), atol=1e-5)
    b.train()
    with torch.no_grad():  # and in train mode the two dropout views of one caption differ
        assert not torch.allclose(b.embed_text(states, mask), b.embed_text(states, mask))


def test_dropout_masks_key_is_left_out_at_its_default_and_checked():
    assert "dropout_masks" not in load_config("smoke").to_dict()["model"]
    assert load_config("smoke", {"model.dropout_masks": "bits"}).to_dict()["model"]["dropout_masks"] == "bits"
    with pytest.raises(ConfigError, match="dropout_masks"):
        load_config("smoke", {"model.dropout_masks": "uniform"})


@pytest.mark.parametrize("native", [False, True])
def test_amp_auto_resolves_to_what_the_device_runs(monkeypatch, native):
    monkeypatch.setattr(config_mod, "native_bf16", lambda device="auto": native)
    cfg = config_from_dict({"train": {"amp": "auto", "device": "cpu"}})
    assert cfg.train.amp == ("bf16" if native else "none")
    assert cfg.to_dict()["train"]["amp"] in ("bf16", "none")  # a stored config never says "auto"
    assert config_from_dict({"train": {"amp": "none"}}).train.amp == "none"  # explicit values are kept


def test_native_bf16_reads_the_cpu():
    assert config_mod.native_bf16("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
