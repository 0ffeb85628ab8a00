"""cookie_lib.dropout (the head's dropout) and HeadBlock.attend (the head's attention) against torch's."""
import pytest
import torch

from cookie_lib.dropout import Dropout, dropout, keep_mask
from cookie_lib.model import HeadBlock


def test_drop_rate_and_inverted_scaling():
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = dropout(x, 0.1)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.1) < 5 * (0.1 * 0.9 / x.numel()) ** 0.5  # binomial: 5 standard deviations
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    assert abs(y.mean().item() - 1.0) < 3e-3  # E[y] = x


def test_gradient_is_mask_times_scale_and_dtype_is_kept():
    torch.manual_seed(1)
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.double() / 0.7)
    torch.testing.assert_close(y.detach(), x.detach() * kept / 0.7)
    assert dropout(torch.randn(4, 5).bfloat16(), 0.1).dtype == torch.bfloat16


def test_eval_and_p_zero_are_the_identity_and_the_seed_fixes_the_mask():
    x = torch.randn(8, 9)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    m = Dropout(0.5).eval()
    assert m(x) is x and not list(m.parameters()) and not m.state_dict()
    torch.manual_seed(3)
    a = keep_mask((100,), 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask((100,), 0.5))
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.0)


def _block(p):
    torch.manual_seed(0)
    return HeadBlock(32, 4, 2.0, p, layer_scale_init=1.0).train()


@pytest.mark.parametrize("p", [0.0, 1e-12])  # 1e-12: the manual train-mode path with nothing dropped
def test_attend_is_torch_multihead_attention_in_train_mode(p):
    block = _block(p)
    x = torch.randn(5, 7, 32, requires_grad=True)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    h = block.norm1(x)
    got = block.attend(h, mask)
    want = block.self_attn(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)  # padded rows are never read
    g_got = torch.autograd.grad(got[mask].sum(), x, retain_graph=True)[0]
    g_want = torch.autograd.grad(want[mask].sum(), x)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.attend(h, None), block.self_attn(h, h, h, need_weights=False)[0],
                               rtol=1e-5, atol=1e-5)


def test_attention_dropout_drops_probabilities_not_keys():
    """With p > 0 each query's attention row is a dropped, rescaled softmax: outputs differ between two
    train-mode calls, and their mean over many calls approaches the eval output."""
    block = _block(0.3)
    torch.manual_seed(4)
    h = torch.randn(2, 5, 32)
    with torch.no_grad():
        calls = torch.stack([block.attend(h, None) for _ in range(4000)])
        assert not torch.allclose(calls[0], calls[1])
        ref = block.eval().attend(h, None)
    torch.testing.assert_close(calls.mean(0), ref, rtol=0, atol=0.02)
