"""Inverted dropout with cheap masks: the head's dropout, at a quarter of ``nn.Dropout``'s CPU cost.

    train: y = x * m / (1 - p),  m_i = 1[r_i >= round(p * 2^31)],  r_i uniform on {0, ..., 2^31 - 1}
    eval (or p = 0): y = x

So P(m_i = 0) = round(p * 2^31) / 2^31, within 2.4e-10 of p (closer than float32 can hold p), and
E[y] = x up to that. The same semantics as ``torch.nn.functional.dropout``; only the random stream differs.

Why not ``nn.Dropout``: on this CPU its mask comes from ``aten::bernoulli_``, about 5 ns per element (one
Mersenne-Twister draw plus a float conversion and a comparison), which was a quarter of the frozen
training step's CPU time. Here one 32-bit draw per element (``random_`` on int32, from torch's default
generator, so ``torch.manual_seed`` still fixes it) and one integer comparison make the mask; mask and
scale are applied by one fused kernel each way (``aten::native_dropout_backward`` computes g * m * scale,
which is the forward as well), and only the boolean mask is kept for the backward pass.
"""
from __future__ import annotations

import torch
from torch import nn

_BITS = 31  # random_() on int32 draws uniformly from [0, 2^31 - 1]


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """Bool mask of ``shape``, each entry False with probability round(p * 2^31) / 2^31 (see module doc)."""
    threshold = round(p * 2 ** _BITS)
    return torch.empty(shape, dtype=torch.int32, device=device).random_() >= threshold


class _ApplyMask(torch.autograd.Function):
    """y = x * mask * scale; dy/dx = mask * scale (mask bool, saved; scale a float)."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.ops.aten.native_dropout_backward(x, mask, scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, mask, ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of x [any shape] with drop probability p in [0, 1) (identity when not training)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    return _ApplyMask.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (no parameters or buffers: state dicts are unchanged) using
    :func:`dropout`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
