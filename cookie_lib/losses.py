"""The three contrastive losses of COOKIE, with multi-positive targets and a global-batch gather.

For one training step every image i in the batch brings two augmented views (v1_i, v2_i) and two of
its captions (t1_i, t2_i), all embedded to unit vectors in R^d, plus an instance key k_i (image id
for COCO/Flickr; concept for the emoji corpus, whose designs of one concept share their captions) and
its image id n_i (its row in the training split: unique across the global batch, also under DDP).

    cross-modal     L_c = InfoNCE(v1, t1; k)   image <-> text
    visual          L_v = InfoNCE(v1, v2; n)   view  <-> view   (SimCLR: only the image's own other view;
                                               with loss.visual_positives="concept": keys k, so same-key
                                               images are positives too)
    textual         L_t = InfoNCE(t1, t2; k)   caption <-> caption (t1 = t2 text gives a dropout view)
    total           L   = w_c L_c + w_v L_v + w_t L_t

with the symmetric, multi-positive InfoNCE (targets from keys, as in ALBEF):

    S = s * A B^T,                 A [B, d], B [B', d],  s = exp(log_s) <= max_logit_scale
    Y_ij = [k_i == k'_j] / sum_j' [k_i == k'_j']        (rows sum to 1)
    InfoNCE(A, B) = 1/2 ( -1/B sum_i sum_j Y_ij log softmax_j(S_i.) - 1/B' sum_j sum_i Y^T_ji log softmax_i(S_.j) )

Each loss has its own learnable temperature (log space, init log(1/0.07)). Under torch.distributed the
columns come from the whole global batch (gathered with gradient), the rows are the local batch.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import LossConfig


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from all ranks -> [world * n, ...]; identity without a process group.

    Every rank must pass the same n (use drop_last batches).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if with_grad and x.requires_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def soft_targets(keys_a: torch.Tensor, keys_b: torch.Tensor) -> torch.Tensor:
    """Y [A, B]: row i spreads mass 1 uniformly over the columns j with keys_b[j] == keys_a[i]."""
    y = (keys_a[:, None] == keys_b[None, :]).float()
    return y / y.sum(1, keepdim=True).clamp_min(1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE between paired rows of a [B, d] and b [B, d] (formula in module doc).

    ``keys`` [B] (long) define the positives: rows with equal keys are positives in both directions.
    Under torch.distributed, b, a and keys are gathered from all ranks for the columns.
    """
    a_all, b_all, keys_all = gather(a), gather(b), gather(keys, with_grad=False)
    logits_ab = logit_scale * a @ b_all.T  # [B, world*B]
    logits_ba = logit_scale * b @ a_all.T
    y = soft_targets(keys, keys_all)
    loss_ab = -(y * F.log_softmax(logits_ab, dim=1)).sum(1).mean()
    loss_ba = -(y * F.log_softmax(logits_ba, dim=1)).sum(1).mean()
    return (loss_ab + loss_ba) / 2


LOSS_NAMES = ("cross_modal", "visual", "textual")
# which embeddings each loss compares (v = image view, t = caption)
LOSS_PAIRS = {"cross_modal": ("v1", "t1"), "visual": ("v1", "v2"), "textual": ("t1", "t2")}


class CookieLoss(nn.Module):
    """Weighted sum of the enabled losses, each with its own learnable temperature.

    forward(emb, keys, image_ids) with emb = {"v1","v2","t1","t2": [B, d]} (only those the enabled losses
    need), keys and image_ids [B] long -> (total scalar, {name: unweighted loss value (detached)}).
    """

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.weights = {n: getattr(cfg, n) for n in LOSS_NAMES if getattr(cfg, n) > 0}
        init = math.log(1.0 / cfg.temperature)
        self.log_scale = nn.ParameterDict({
            n: nn.Parameter(torch.tensor(init), requires_grad=cfg.learn_temperature) for n in self.weights})
        self.max_log_scale = math.log(cfg.max_logit_scale)

    def needed(self) -> set[str]:
        """The embeddings the enabled losses consume, e.g. {"v1", "t1"} for cross-modal only."""
        return {e for n in self.weights for e in LOSS_PAIRS[n]}

    def scale(self, name: str) -> torch.Tensor:
        return self.log_scale[name].clamp(max=self.max_log_scale).exp()

    def positive_keys(self, name: str, keys: torch.Tensor, image_ids: torch.Tensor | None) -> torch.Tensor:
        """The keys [B] that define loss ``name``'s positives (equal key = positive pair).

        The visual loss with ``visual_positives="view"`` uses the image ids, so its target matrix Y is the
        identity even when record keys repeat; everything else uses the record keys. Without ``image_ids``
        the ids are ``rank * B + arange(B)``: unique over the gathered global batch as long as every row
        is a different image (true of the training batches, which are slices of one permutation).
        """
        if name != "visual" or self.cfg.visual_positives == "concept":
            return keys
        if image_ids is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            image_ids = rank * len(keys) + torch.arange(len(keys))
        return image_ids.to(keys.device)

    def forward(self, emb: dict[str, torch.Tensor], keys: torch.Tensor, image_ids: torch.Tensor | None = None):
        """emb {"v1","v2","t1","t2": [B, d]}, keys [B] (record keys), image_ids [B] (global image index, for the
        visual loss's positives; see :meth:`positive_keys`) -> (total, {name: detached loss})."""
        total, parts = 0.0, {}
        for name, w in self.weights.items():
            x, y = LOSS_PAIRS[name]
            value = info_nce(emb[x], emb[y], self.positive_keys(name, keys, image_ids), self.scale(name))
            parts[name] = value.detach()
            total = total + w * value
        return total, parts
