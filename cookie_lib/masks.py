"""Dropout masks drawn from random bits (``model.dropout_masks: bits``): the same dropout, 8x fewer draws.

``torch.nn.Dropout`` on the CPU draws one Bernoulli variable per element (``aten::bernoulli_``, about 10 ns
each on one core): 21-28 % of a frozen-encoder training step of the default profile, and the textual loss
needs its dropout (its two views of one caption differ only by it). Here one 64-bit random word gives four
16-bit uniforms u ~ U{0, ..., 65535}, and

    keep = u < K,   K = round((1 - p) * 65536),   y = x * keep / q,   q = K / 65536

so an element is kept with probability q (p quantised to 1/65536, i.e. 0.1 -> 0.1000061) and E[y] = x
exactly; masks are independent across elements and calls, as Bernoulli masks are. The draws come from
torch's default generator, so a seeded run is reproducible; they are a different random stream from
``bernoulli_``'s, which is why the option exists instead of replacing it: runs stored with Bernoulli masks
keep their meaning.

Three places draw dropout in a step: the head's ``nn.Dropout`` modules and its attention probabilities
(:func:`attention`, used by :class:`cookie_lib.model.HeadBlock`), and the trained text layers' dropout of a
fine-tuned arm (:func:`use_bits_masks` swaps their ``nn.Dropout`` s and registers :func:`hf_attention` as
the layers' attention function).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_KINDS = ("bernoulli", "bits")
HF_ATTENTION = "cookie_bits"  # the name :func:`hf_attention` is registered under in transformers


def keep_threshold(p: float) -> int:
    """K = round((1 - p) * 65536): an element is kept when its 16-bit uniform is < K."""
    return round((1.0 - p) * 65536)


def bits_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout of ``x`` (any shape) with a mask from 16-bit uniforms: ``x * (u < K) / (K / 65536)``."""
    if not training or p == 0.0:
        return x
    n = x.numel()
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    u = words.view(torch.int16)[:n].view(x.shape)  # int16 in [-32768, 32767]: u - 32768 of the uniform
    k = keep_threshold(p)
    keep = u < (k - 32768)
    return x * keep.to(x.dtype) * (65536.0 / k)


class BitsDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same train/eval switch) whose mask comes from :func:`bits_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bits_dropout(x, self.p, self.training)


def attention(attn: nn.MultiheadAttention, x: torch.Tensor, key_padding_mask: torch.Tensor | None,
              masks: str) -> torch.Tensor:
    """Self-attention of ``attn`` (batch_first) over x [B, T, d]; key_padding_mask [B, T] (True = padded).

    "bernoulli" calls the module (its fused kernel). "bits" computes the same function from the module's
    weights, softmax(Q K^T / sqrt(d_h)) V with the probabilities dropped by :func:`bits_dropout`, so the
    parameters and the state dict are the module's either way."""
    if masks == "bernoulli":
        return attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in (q, k, v))  # [B, H, T, d_h]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, T, T]
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    probs = bits_dropout(scores.softmax(-1), attn.dropout, attn.training)
    return attn.out_proj((probs @ v).transpose(1, 2).flatten(-2))


def hf_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **_):
    """A transformers attention function (query/key/value [B, H, T, d_h]; mask [B, 1, T_q, T_k], boolean with
    True = attend, or additive): softmax(Q K^T * scaling + mask) V with :func:`bits_dropout` on the
    probabilities -> ([B, T, H, d_h], probs); BERT's eager attention but for the mask draw."""
    scores = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                  else scores + attention_mask)
    probs = bits_dropout(scores.softmax(-1), dropout, module.training)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def use_bits_masks(module: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` inside ``module`` for a :class:`BitsDropout` of the same ``p`` and point every
    transformers config inside it at :func:`hf_attention`; returns ``module`` (changed in place)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(HF_ATTENTION, hf_attention)
    AttentionMaskInterface.register(HF_ATTENTION, sdpa_mask)  # the boolean [B, 1, T, T] mask (True = attend)
    for child in list(module.modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Dropout:
                setattr(child, attr, BitsDropout(sub.p))
        config = getattr(child, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = HF_ATTENTION
    return module
