"""cookie_lib.losses: info_nce / CookieLoss against a plain loop-based reference (float64)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cookie_lib import losses as L
from cookie_lib.config import LossConfig


# ----------------------------------------------------------------------------- reference
def _direction(q: torch.Tensor, c: torch.Tensor, keys: list[int], scale) -> torch.Tensor:
    """-1/B sum_i sum_{j: k_j == k_i} 1/|P_i| log softmax_j(scale q_i . c_j), one row at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [scale * torch.dot(q[i], c[j]) for j in range(c.shape[0])]
        m = max(float(x.detach()) for x in logits)
        lse = m + torch.log(sum(torch.exp(x - m) for x in logits))  # explicit log-sum-exp
        pos = [j for j in range(c.shape[0]) if keys[j] == keys[i]]
        total = total - sum((logits[j] - lse) / len(pos) for j in pos)
    return total / q.shape[0]


def ref_info_nce(a, b, keys, scale):
    keys = [int(k) for k in keys]
    return (_direction(a, b, keys, scale) + _direction(b, a, keys, scale)) / 2


def _unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ----------------------------------------------------------------------------- info_nce
@pytest.mark.parametrize("keys", [[0, 1, 2, 3, 4, 5], [0, 1, 0, 2, 1, 0], [3, 3, 3, 3, 3, 7]],
                         ids=["unique", "duplicates", "mostly-one-key"])
def test_info_nce_matches_loop_reference_value_and_grad(keys):
    a = _unit(6, 8, seed=1).requires_grad_()
    b = _unit(6, 8, seed=2).requires_grad_()
    s = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)
    k = torch.tensor(keys)
    got = L.info_nce(a, b, k, s)
    got.backward()
    grads = a.grad.clone(), b.grad.clone(), s.grad.clone()
    a.grad = b.grad = s.grad = None
    want = ref_info_nce(a, b, k, s)
    want.backward()
    # soft_targets builds Y in float32 (1/3 is not exact there), hence rel 1e-7 rather than 1e-12 in float64
    assert got.item() == pytest.approx(want.item(), rel=1e-7)
    for g, w in zip(grads, (a.grad, b.grad, s.grad)):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9)


def test_duplicate_keys_are_positives_not_negatives():
    # captions 0 and 1 belong to the same image (key 0): swapping which of them is "paired" with
    # which row must not change the loss, and it must differ from treating them as negatives.
    a, b = _unit(4, 8, seed=3), _unit(4, 8, seed=4)
    keys = torch.tensor([0, 0, 1, 2])
    s = torch.tensor(10.0, dtype=torch.float64)
    base = L.info_nce(a, b, keys, s)
    swapped = L.info_nce(a, b[[1, 0, 2, 3]], keys, s)
    assert base.item() == pytest.approx(swapped.item(), rel=1e-12)
    as_negatives = L.info_nce(a, b, torch.arange(4), s)
    assert abs(base.item() - as_negatives.item()) > 1e-3
    # a perfect multi-positive match: both same-key columns equal to the query row
    x = _unit(3, 8, seed=5)
    a2 = torch.cat([x[:1], x[:1], x[1:]])
    soft = L.soft_targets(keys, keys)
    assert torch.allclose(soft.sum(1), torch.ones(4, dtype=soft.dtype))
    assert soft[0].tolist() == [0.5, 0.5, 0.0, 0.0] and soft[2].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert L.info_nce(a2, a2, keys, s).item() == pytest.approx(ref_info_nce(a2, a2, keys, s).item(), rel=1e-7)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    assert not torch.distributed.is_initialized()
    assert L.gather(x) is x and L.gather(x, with_grad=False) is x


# ----------------------------------------------------------------------------- CookieLoss
def _emb(b=6, d=8, dtype=torch.float32):
    return {n: _unit(b, d, seed=10 + i, dtype=dtype) for i, n in enumerate(("v1", "v2", "t1", "t2"))}


@pytest.mark.parametrize("visual_positives", ["view", "concept"])
def test_cookie_loss_weighted_sum_matches_reference(visual_positives):
    cfg = LossConfig(cross_modal=1.0, visual=0.5, textual=2.0, temperature=0.05, visual_positives=visual_positives)
    loss = L.CookieLoss(cfg).double()
    emb, keys = _emb(dtype=torch.float64), torch.tensor([0, 1, 1, 2, 3, 0])
    image_ids = torch.tensor([17, 3, 8, 0, 42, 5])  # rows of the training split: unique
    total, parts = loss(emb, keys, image_ids)
    s = 1.0 / 0.05
    # "view": each image's only visual positive is its own other view; "concept": every same-key image
    visual_keys = image_ids if visual_positives == "view" else keys
    want = {"cross_modal": ref_info_nce(emb["v1"], emb["t1"], keys, s),
            "visual": ref_info_nce(emb["v1"], emb["v2"], visual_keys, s),
            "textual": ref_info_nce(emb["t1"], emb["t2"], keys, s)}
    assert set(parts) == set(want)
    for n in want:
        assert parts[n].item() == pytest.approx(want[n].item(), rel=1e-7)
        assert not parts[n].requires_grad
    expected_total = 1.0 * want["cross_modal"] + 0.5 * want["visual"] + 2.0 * want["textual"]
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-7)
    # each loss has its own learnable temperature, initialised at 1/temperature
    assert set(loss.log_scale) == set(want)
    for n in want:
        assert loss.scale(n).item() == pytest.approx(s, rel=1e-6) and loss.log_scale[n].requires_grad
    total.backward()
    assert all(loss.log_scale[n].grad is not None and loss.log_scale[n].grad != 0 for n in want)


def test_default_visual_targets_are_the_identity_when_keys_repeat(monkeypatch):
    keys = torch.tensor([0, 1, 1, 2, 0, 0])  # three images of concept 0, two of concept 1
    image_ids = torch.tensor([9, 4, 7, 1, 0, 3])
    default = L.CookieLoss(LossConfig())
    assert default.cfg.visual_positives == "view"
    eye = torch.eye(6)
    assert torch.equal(L.soft_targets(*[default.positive_keys("visual", keys, image_ids)] * 2), eye)
    assert torch.equal(L.soft_targets(*[default.positive_keys("visual", keys, None)] * 2), eye)  # no ids given
    for name in ("cross_modal", "textual"):  # the other losses keep the record keys
        assert torch.equal(default.positive_keys(name, keys, image_ids), keys)
    concept = L.CookieLoss(LossConfig(visual_positives="concept"))
    y = L.soft_targets(*[concept.positive_keys("visual", keys, image_ids)] * 2)
    assert y[0].tolist() == pytest.approx([1 / 3, 0, 0, 0, 1 / 3, 1 / 3])
    # and forward really hands those keys to the visual InfoNCE
    seen = []
    real = L.info_nce
    monkeypatch.setattr(L, "info_nce", lambda a, b, k, s: seen.append(k) or real(a, b, k, s))
    default(_emb(), keys, image_ids)
    assert [torch.equal(L.soft_targets(k, k), eye) for k in seen] == [False, True, False]  # c, v, t order


def test_temperature_is_clamped_at_max_logit_scale():
    cfg = LossConfig(max_logit_scale=50.0)
    loss = L.CookieLoss(cfg).double()
    with torch.no_grad():
        loss.log_scale["cross_modal"].fill_(math.log(1000.0))  # tau = 0.001 would mean scale 1000
    assert loss.scale("cross_modal").item() == pytest.approx(50.0, rel=1e-12)
    emb, keys = _emb(dtype=torch.float64), torch.arange(6)
    total, parts = loss(emb, keys)
    assert parts["cross_modal"].item() == pytest.approx(ref_info_nce(emb["v1"], emb["t1"], keys, 50.0).item(), rel=1e-9)
    total.backward()
    assert loss.log_scale["cross_modal"].grad.item() == 0.0  # clamped: no gradient pushes it further
    assert loss.log_scale["visual"].grad.item() != 0.0  # unclamped ones still learn


def test_fixed_temperature_is_not_learnable():
    loss = L.CookieLoss(LossConfig(learn_temperature=False))
    assert not any(p.requires_grad for p in loss.parameters())


@pytest.mark.parametrize("weights,needed", [
    ((1.0, 1.0, 1.0), {"v1", "v2", "t1", "t2"}),
    ((1.0, 0.0, 1.0), {"v1", "t1", "t2"}),
    ((1.0, 0.0, 0.0), {"v1", "t1"}),
    ((0.0, 1.0, 0.0), {"v1", "v2"}),
    ((0.0, 0.0, 1.0), {"t1", "t2"}),
    ((0.0, 1.0, 1.0), {"v1", "v2", "t1", "t2"}),
])
def test_disabled_losses_are_not_computed(monkeypatch, weights, needed):
    cfg = LossConfig(cross_modal=weights[0], visual=weights[1], textual=weights[2])
    loss = L.CookieLoss(cfg)
    enabled = {n for n, w in zip(L.LOSS_NAMES, weights) if w > 0}
    assert loss.needed() == needed
    assert set(loss.weights) == enabled and set(loss.log_scale) == enabled  # no temperature for a disabled loss
    calls = []
    real = L.info_nce
    monkeypatch.setattr(L, "info_nce", lambda *a: calls.append(1) or real(*a))
    emb = {k: v for k, v in _emb().items() if k in needed}  # the missing embeddings would KeyError if used
    total, parts = loss(emb, torch.arange(6))
    assert set(parts) == enabled and len(calls) == len(enabled)
    assert total.item() == pytest.approx(sum(cfg.__dict__[n] * parts[n].item() for n in enabled), rel=1e-6)
