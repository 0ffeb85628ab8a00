"""cookie_lib.model: shapes, unit norm, the weight-sharing head, gradient flow, freezing, padding masks."""
from __future__ import annotations

import pytest
import torch

from cookie_lib.config import ModelConfig, load_config
from cookie_lib.model import CookieModel, HeadStack, TextEncoder, VisualEncoder, build_encoders, visual_tokens_for

CV, CT, TV = 24, 16, 4  # small synthetic encoder widths / visual grid for the head-only tests


def _cfg(**kw) -> ModelConfig:
    # LayerScale 0.1, not the nested default 0: at 0 every block is the identity at init, and these tests
    # check what the blocks compute (sharing, masking); tests/test_head.py covers the nested initialisation
    base = dict(dim=32, heads=4, depth=2, dropout=0.0, layer_scale_init=0.1)
    base.update(kw)
    return ModelConfig(**base)


def _model(seed=0, **kw) -> CookieModel:
    torch.manual_seed(seed)
    return CookieModel(_cfg(**kw), CV, CT, TV).eval()


def _inputs(b=3, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, TV, CV, generator=g)
    txt = torch.randn(b, t, CT, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return img, txt, mask


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("shared", [True, False])
def test_embedding_shapes_and_unit_norm(depth, shared):
    model = _model(depth=depth, shared=shared)
    img, txt, mask = _inputs()
    with torch.no_grad():
        ei, et = model.embed_image(img), model.embed_text(txt, mask)
    assert ei.shape == (3, 32) and et.shape == (3, 32)
    torch.testing.assert_close(ei.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(et.norm(dim=-1), torch.ones(3))
    assert torch.isfinite(ei).all() and torch.isfinite(et).all()
    if depth == 0:
        assert model.head_parameters() == []


def test_visual_tokens_for_stride_32():
    assert visual_tokens_for(64) == 4 and visual_tokens_for(224) == 49 and visual_tokens_for(96) == 9


def test_visual_tokens_for_an_earlier_feature_map():
    # MobileNetV2 features[:14] ends at stride 16: 16 tokens at 64 px, as many as the whole network at 128 px
    assert visual_tokens_for(64, 14) == 16 and visual_tokens_for(128) == 16 and visual_tokens_for(64, 8) == 16
    assert visual_tokens_for(64, 7) == 64 and visual_tokens_for(64, 4) == 256  # stride 8, stride 4
    with pytest.raises(ValueError, match=r"model.visual_layer=30: mobilenet_v2 has 19 feature blocks"):
        visual_tokens_for(64, 30)


# ----------------------------------------------------------------------------- weight sharing
def test_shared_head_is_one_parameter_set():
    model = _model(shared=True)
    img, txt, mask = _inputs()
    assert model._stack("visual") is model._stack("text") is model.shared_transformer
    with torch.no_grad():
        before = model.embed_image(img), model.embed_text(txt, mask)
        # random, not constant: a constant shift of linear1 is invisible after a bias-free LayerNorm
        model.shared_transformer.layers[0].linear1.weight.add_(0.5 * torch.randn_like(model.shared_transformer.layers[0].linear1.weight))
        after = model.embed_image(img), model.embed_text(txt, mask)
    assert (after[0] - before[0]).abs().max() > 1e-4, "image embedding did not use the shared weights"
    assert (after[1] - before[1]).abs().max() > 1e-4, "text embedding did not use the shared weights"


def test_shared_vs_not_shared_differs_by_exactly_one_stack():
    shared, separate = _model(shared=True), _model(shared=False)
    one_stack = _n_params(HeadStack(_cfg()))
    assert one_stack > 0
    assert _n_params(separate) - _n_params(shared) == one_stack
    assert sum(p.numel() for p in shared.head_parameters()) == one_stack
    assert sum(p.numel() for p in separate.head_parameters()) == 2 * one_stack


def test_not_shared_stacks_are_distinct():
    model = _model(shared=False)
    assert model.visual_transformer is not model.text_transformer
    ids_v = {id(p) for p in model.visual_transformer.parameters()}
    ids_t = {id(p) for p in model.text_transformer.parameters()}
    assert ids_v and not ids_v & ids_t
    img, txt, mask = _inputs()
    with torch.no_grad():
        before = model.embed_image(img), model.embed_text(txt, mask)
        w = model.visual_transformer.layers[0].linear1.weight
        w.add_(0.5 * torch.randn_like(w))
        after = model.embed_image(img), model.embed_text(txt, mask)
    assert (after[0] - before[0]).abs().max() > 1e-4
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)  # the text path does not see it


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("shared", [True, False])
def test_padding_mask_respected(shared):
    model = _model(shared=shared)
    img, txt, mask = _inputs()
    with torch.no_grad():
        base = model.embed_text(txt, mask)
        # garbage (not zeros) in the padded slots and 5 extra padded tokens: nothing may change
        txt2 = txt.clone()
        txt2[~mask] = 100 * torch.randn(int((~mask).sum()), CT)
        txt2 = torch.cat([txt2, 50 * torch.randn(3, 5, CT)], dim=1)
        mask2 = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
        padded = model.embed_text(txt2, mask2)
        # and a real token does change it (the check is not vacuous)
        mask3 = mask2.clone()
        mask3[1, 4] = True
        changed = model.embed_text(txt2, mask3)
    torch.testing.assert_close(padded, base, rtol=1e-5, atol=1e-5)
    assert (changed[1] - base[1]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- real encoders
@pytest.fixture(scope="module")
def live_encoders():
    """The packaged MobileNetV2 (fully trainable) and MiniLM (last layer trainable)."""
    cfg = load_config("smoke", {"model.freeze_visual": "none", "model.freeze_text": 1, "model.dropout": 0.0})
    torch.manual_seed(0)
    return cfg, build_encoders(cfg)


def test_gradients_reach_projections_head_and_unfrozen_encoders(live_encoders):
    cfg, (visual, text) = live_encoders
    torch.manual_seed(0)
    model = CookieModel(cfg.model, visual.out_dim, text.out_dim, visual_tokens_for(cfg.model.image_size, cfg.model.visual_layer))
    visual.train()
    text.train()
    assert visual.training, "an unfrozen visual encoder must be trainable (BatchNorm in train mode)"
    images = torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size)
    enc = text.tokenize(["a grinning face", "a red heart with sparkles on it"])
    ei = model.embed_image(visual(images))
    et = model.embed_text(*text(enc["input_ids"], enc["attention_mask"]))
    assert ei.shape == et.shape == (2, cfg.model.dim)
    (ei @ et.T).diag().sum().backward()

    def has_grad(params):
        return all(p.grad is not None for p in params) and any(p.grad.abs().sum() > 0 for p in params)

    assert has_grad(list(model.visual_proj.parameters())) and has_grad(list(model.text_proj.parameters()))
    assert has_grad([model.visual_pos])
    assert has_grad(model.head_parameters())
    assert has_grad(list(visual.body[0].parameters())) and has_grad(list(visual.body[-1].parameters()))
    last, first = text.bert.encoder.layer[-1], text.bert.encoder.layer[0]
    assert has_grad(list(last.parameters()))
    assert all(not p.requires_grad and p.grad is None for p in first.parameters())  # freeze_text=1
    assert all(not p.requires_grad for p in text.bert.embeddings.parameters())
    # every trainable encoder parameter receives a gradient (DDP without find_unused_parameters needs this)
    assert [n for n, p in text.named_parameters() if p.requires_grad and p.grad is None] == []
    assert [n for n, p in visual.named_parameters() if p.requires_grad and p.grad is None] == []


def test_truncated_visual_encoder_gives_the_grid_visual_tokens_for_promises():
    enc = VisualEncoder("mobilenet_v2", "auto", "all", visual_layer=14)
    assert len(enc.body) == 14 and enc.out_dim == 96
    with torch.no_grad():
        tokens = enc(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, visual_tokens_for(64, 14), 96) == (2, 16, 96)


def test_partial_freeze_keeps_frozen_batchnorm_in_eval_and_its_statistics():
    """freeze_visual=3: the last 3 blocks train (BatchNorm in train mode, statistics updated); the frozen
    blocks' BatchNorm keeps eval mode and the ImageNet running statistics through a training-mode forward."""
    visual = VisualEncoder("mobilenet_v2", "auto", freeze=3)
    visual.train()
    frozen, trainable = visual.body[:-3], visual.body[-3:]
    bn_frozen = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_train = [m for m in trainable.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn_frozen and bn_train and visual.training
    assert not any(m.training for m in bn_frozen) and all(m.training for m in bn_train)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in trainable.parameters())
    before = {id(m): (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
              for m in bn_frozen + bn_train}
    out = visual(torch.randn(4, 3, 64, 64) * 2 + 0.5)  # a batch far from ImageNet statistics
    out.sum().backward()
    for m in bn_frozen:
        mean, var, n = before[id(m)]
        torch.testing.assert_close(m.running_mean, mean, rtol=0, atol=0)
        torch.testing.assert_close(m.running_var, var, rtol=0, atol=0)
        assert int(m.num_batches_tracked) == n
    assert all(int(m.num_batches_tracked) == before[id(m)][2] + 1 for m in bn_train)
    assert any(not torch.equal(m.running_mean, before[id(m)][0]) for m in bn_train)
    visual.eval()
    assert not any(m.training for m in bn_train)  # eval() still switches everything off


def test_frozen_encoders_get_no_grads_and_cnn_stays_in_eval():
    cfg = load_config("smoke")  # freeze_visual = freeze_text = "all"
    visual = VisualEncoder(cfg.model.visual_backbone, cfg.model.visual_weights, cfg.model.freeze_visual)
    text = TextEncoder(cfg.model.text_model, cfg.model.freeze_text, cfg.model.max_text_len)
    assert not any(p.requires_grad for p in visual.parameters())
    assert [n for n, p in text.named_parameters() if p.requires_grad] == []  # incl. the unused BERT pooler
    visual.train()
    bns = [m for m in visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not visual.training and not any(m.training for m in bns)
    running = bns[0].running_mean.clone()
    model = CookieModel(cfg.model, visual.out_dim, text.out_dim, visual_tokens_for(cfg.model.image_size))
    ei = model.embed_image(visual(torch.randn(2, 3, 64, 64) * 3 + 1))
    enc = text.tokenize(["grinning face", "red heart"])
    et = model.embed_text(*text(enc["input_ids"], enc["attention_mask"]))
    (ei @ et.T).sum().backward()
    assert all(p.grad is None for p in list(visual.parameters()) + list(text.parameters()))
    assert model.visual_proj.weight.grad is not None
    torch.testing.assert_close(bns[0].running_mean, running, rtol=0, atol=0)  # BN statistics untouched


def test_feature_cache_refuses_an_encoder_of_another_feature_map(tmp_path):
    """Tokens of the whole CNN (4 per image) must never be cached under the key of visual_layer=14 (16)."""
    from conftest import EMOJI

    from cookie_lib.data import load_karpathy
    from cookie_lib.features import split_features

    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path)})  # visual_layer 14
    records = load_karpathy(EMOJI).split("test")[:2]
    whole = VisualEncoder("mobilenet_v2", "auto", "all")
    with pytest.raises(ValueError, match="visual_layer='all'.*model.visual_layer=14"):
        split_features(cfg, records, "test", 1, EMOJI, encoders=(whole, None))
    assert not list(tmp_path.iterdir())  # nothing was written
