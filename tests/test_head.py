"""The redesigned head (issue 11): nested depths, sharing controls, modality embedding, the block's formula,
grid-flip views of cached tokens, and the cosine schedule's floor."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cookie_lib.config import ConfigError, ModelConfig, config_from_dict
from cookie_lib.features import ImageTokens
from cookie_lib.model import CookieModel, HeadBlock, HeadStack
from cookie_lib.step import lr_lambda

CV, CT, TV, D = 24, 16, 16, 32


def _cfg(**kw) -> ModelConfig:
    base = dict(dim=D, heads=4, depth=2, dropout=0.1)
    base.update(kw)
    return ModelConfig(**base)


def _model(seed=0, **kw) -> CookieModel:
    torch.manual_seed(seed)
    return CookieModel(_cfg(**kw), CV, CT, TV)


def _inputs(b=4, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(b, TV, CV, generator=g), torch.randn(b, t, CT, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3:] = False
    return img, txt, mask


def _embed(model, img, txt, mask):
    return model.embed_image(img), model.embed_text(txt, mask)


def _n(params) -> int:
    return sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- nested depths
@pytest.mark.parametrize("shared,modality", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_deeper_head_at_init_equals_depth_0(depth, shared, modality):
    """Same seed: the projections are drawn first and LayerScale = 0 makes every block the identity."""
    shallow = _model(depth=0, shared=shared, modality_embedding=modality).eval()
    deep = _model(depth=depth, shared=shared, modality_embedding=modality).eval()
    img, txt, mask = _inputs()
    with torch.no_grad():
        for a, b in zip(_embed(shallow, img, txt, mask), _embed(deep, img, txt, mask)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # not vacuous: once the blocks' residual branches are switched on, the deep head differs
        for m in deep.modules():
            if hasattr(m, "gamma"):
                m.gamma.fill_(0.5)
        assert (deep.embed_image(img) - shallow.embed_image(img)).abs().max() > 1e-3
        assert (deep.embed_text(txt, mask) - shallow.embed_text(txt, mask)).abs().max() > 1e-3


def test_depth_0_has_the_same_dropout_and_final_norm():
    """Depth 0 is dropout -> LayerNorm, so in train mode one caption gives two different dropout views."""
    model = _model(depth=0, dropout=0.3).train()
    _, txt, mask = _inputs()
    a, b = model.embed_text(txt, mask), model.embed_text(txt, mask)
    assert (a - b).abs().max() > 1e-3
    x = torch.randn(2, 5, D) * 7 + 3
    out = HeadStack(_cfg(depth=0)).eval()(x)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (D,)))


def test_layer_scale_starts_at_zero_and_learns():
    model = _model(depth=2, dropout=0.0).train()
    img, txt, mask = _inputs()
    gammas = [m.gamma for m in model.modules() if hasattr(m, "gamma")]
    assert len(gammas) == 4 and all((g == 0).all() for g in gammas)  # 2 blocks x (attention, MLP)
    ei, et = _embed(model, img, txt, mask)
    (ei @ et.T).diagonal().sum().backward()
    # the branch weights get no gradient through gamma = 0 yet, the gammas do: the blocks can grow from 0
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in gammas)
    assert _cfg().layer_scale_init == 0.0  # the default is the nested one


# ----------------------------------------------------------------------------- the block's formula
def test_head_block_equals_torch_pre_norm_layer_with_unit_layer_scale():
    """HeadBlock with gamma = 1 and no dropout is PyTorch's pre-norm GELU TransformerEncoderLayer (a reference)."""
    torch.manual_seed(0)
    block = HeadBlock(D, 4, 2.0, 0.0, layer_scale_init=1.0).eval()
    ref = nn.TransformerEncoderLayer(D, 4, 2 * D, 0.0, activation="gelu", batch_first=True, norm_first=True).eval()
    with torch.no_grad():
        for name in ("self_attn", "linear1", "linear2", "norm1", "norm2"):
            getattr(ref, name).load_state_dict(getattr(block, name).state_dict())
        x = torch.randn(3, 7, D)
        mask = torch.ones(3, 7, dtype=torch.bool)
        mask[0, 4:] = False
        mask[2, 1:] = False
        got = block(x, mask)
        want = ref(x, src_key_padding_mask=~mask)
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)  # padded rows are never read
    torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- sharing controls
def test_parameter_counts_of_the_sharing_controls():
    shared2 = _model(depth=2, shared=True)
    separate1 = _model(depth=1, shared=False)  # two 1-block stacks: parameter-matched with shared L=2
    separate2 = _model(depth=2, shared=False)  # two 2-block stacks: compute-matched with shared L=2
    n_shared2 = _n(shared2.head_parameters())
    assert n_shared2 > 0
    assert _n(separate1.head_parameters()) == n_shared2
    assert _n(separate2.head_parameters()) == 2 * n_shared2
    # the projections and position embedding are identical in all three, so whole models match too
    assert _n(separate1.parameters()) == _n(shared2.parameters())
    assert _n(separate2.parameters()) - _n(shared2.parameters()) == n_shared2
    # separate 1+1 really is two stacks, one per modality
    assert separate1.visual_transformer is not separate1.text_transformer
    assert len(separate1.visual_transformer.layers) == len(separate1.text_transformer.layers) == 1


def test_modality_embedding_adds_two_vectors_and_is_used():
    plain, tagged = _model(depth=2), _model(depth=2, modality_embedding=True)
    assert _n(tagged.head_parameters()) - _n(plain.head_parameters()) == 2 * D
    tagged.eval()
    img, txt, mask = _inputs()
    with torch.no_grad():
        for m in tagged.modules():
            if hasattr(m, "gamma"):
                m.gamma.fill_(0.5)
        before = _embed(tagged, img, txt, mask)
        tagged.modality_embedding["visual"].normal_()
        after = _embed(tagged, img, txt, mask)
    assert (after[0] - before[0]).abs().max() > 1e-3  # the image path uses its vector
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)  # the text path does not
    with pytest.raises(ConfigError, match="model.modality_embedding"):
        config_from_dict({"model": {"shared": False, "modality_embedding": True}})


# ----------------------------------------------------------------------------- grid-flip views
def _feats(views=3, n=5, side=4, c=6):
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(num_views=views, image_tokens=torch.randn(views, n, side * side, c, generator=g).half(),
                           records=[])


def test_grid_flip_views_are_mirrored_grids_of_the_cached_views():
    feats = _feats()
    plain = ImageTokens(feats, None, 64, torch.device("cpu"))
    flip = ImageTokens(feats, None, 64, torch.device("cpu"), grid_flip=True)
    assert plain.num_views == 3 and flip.num_views == 6
    views, idx = torch.tensor([0, 4, 2, 3, 5]), torch.tensor([1, 0, 4, 2, 3])
    got = flip.tokens(views, idx)
    for b, (v, i) in enumerate(zip(views.tolist(), idx.tolist())):
        grid = feats.image_tokens[v % 3, i].float().view(4, 4, 6)  # [h, w, C], row-major tokens
        want = grid.flip(1) if v >= 3 else grid  # left-right mirror: column j <- column w - 1 - j
        torch.testing.assert_close(got[b], want.reshape(16, 6), rtol=0, atol=0)
    torch.testing.assert_close(flip.tokens(views % 3, idx), plain.tokens(views % 3, idx), rtol=0, atol=0)
    with pytest.raises(ValueError, match="square token grid"):
        ImageTokens(SimpleNamespace(num_views=2, image_tokens=torch.zeros(2, 3, 6, 4), records=[]), None, 64,
                    torch.device("cpu"), grid_flip=True)  # 6 tokens: not a square grid


# ----------------------------------------------------------------------------- schedule floor
def test_cosine_schedule_decays_to_the_floor():
    f0, f1 = lr_lambda(10, 110), lr_lambda(10, 110, min_ratio=0.1)
    assert f0(4) == f1(4) == pytest.approx(0.5)  # warm-up unchanged
    assert f0(10) == f1(10) == pytest.approx(1.0)
    assert f0(110) == pytest.approx(0.0, abs=1e-12) and f1(110) == pytest.approx(0.1)
    assert f1(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert all(f1(s) >= 0.1 - 1e-12 for s in range(200)) and f1(500) == pytest.approx(0.1)
    assert math.isclose(f1(30), 0.1 + 0.9 * f0(30))
    with pytest.raises(ConfigError, match="train.min_lr_ratio"):
        config_from_dict({"train": {"min_lr_ratio": 1.5}})
