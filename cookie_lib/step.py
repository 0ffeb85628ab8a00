"""One public training step, shared by :class:`cookie_lib.train.Trainer`, the study's cross-encoder, the
benchmark and the GPU check.

The pieces, in the order a step uses them::

    batches = epoch_batches(n_train, seed, epoch, global_batch)   # list of [global_batch] index tensors
    optimizer = build_optimizer([model, loss], [visual, text], cfg.train)
    scheduler = build_scheduler(optimizer, warmup, total, min_ratio)
    step_module = CookieStep(model, loss, images, texts)
    rec = train_step(step_module, optimizer, scheduler, feats, batches[s:s + grad_accum], gen, step=s)

A step module is what :func:`train_step` trains: an ``nn.Module`` with ``draw(feats, global_idx, gen)``
(every random draw of one global batch, as a tuple of tensors with one row per image), ``forward(*drawn)``
-> (total loss, {name: scalar}) and ``log_values()`` (values recorded after the optimiser step).
:class:`CookieStep` is COOKIE's; the study's cross-encoder has its own (its grouped hard-negative loss).

Each image of a global batch brings two views (indices into the cached views) and two captions (rows of
``feats.texts``), drawn by :func:`sample_pairs`; the positives of the three losses follow from them (see
:mod:`cookie_lib.losses`). Every random draw goes through explicit ``torch.Generator`` objects so that a
run is bitwise reproducible and resumable on CPU.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .features import ImageTokens, SplitFeatures, TextTokens
from .losses import CookieLoss
from .model import CookieModel


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/inf; the message names the step and the loss term."""


def sample_pairs(feats: SplitFeatures, idx: torch.Tensor, num_views: int, gen: torch.Generator):
    """For each image: two distinct views (a, b) and two captions (distinct when it has >= 2).

    ``idx`` [B] holds rows of ``feats.records``. Returns views_a, views_b [B] (in ``[0, num_views)``;
    equal only when ``num_views == 1``) and caption rows c1, c2 [B] (rows of ``feats.texts``).
    """
    b = len(idx)
    order = torch.argsort(torch.rand(b, num_views, generator=gen), dim=1)
    views_a, views_b = order[:, 0], order[:, 1 % num_views]
    c1, c2 = [], []
    for i in idx.tolist():
        caps = feats.caption_ids[i]
        pick = torch.randperm(len(caps), generator=gen)[:2].tolist()
        c1.append(caps[pick[0]])
        c2.append(caps[pick[-1]])  # a single caption is used twice: the head's dropout makes two views
    return views_a, views_b, torch.tensor(c1), torch.tensor(c2)


class CookieStep(nn.Module):
    """Everything that trains, as one module (so DistributedDataParallel can wrap it).

    forward(idx [B], views_a, views_b, c1, c2 [B], keys [B]) -> (total loss, {name: loss value}).
    Only the embeddings the enabled losses need (``loss.needed()``: v1, v2, t1, t2) are computed.

    ``text_buckets`` = K (``train.text_buckets``): the B captions of t1 (and of t2) are embedded in K
    chunks of captions sorted by length, each cut to its own longest caption, instead of one [B, T_max]
    batch. A caption's embedding does not depend on the other captions of its batch, so this is the same
    function; what changes is the compute on padding (half the text tokens of a batch are padding at
    K = 1 on the default corpus, a third at K = 2) and the order of the dropout draws (another random
    stream).
    """

    def __init__(self, model: CookieModel, loss: CookieLoss, images: ImageTokens, texts: TextTokens,
                 text_buckets: int = 1):
        super().__init__()
        self.model, self.loss = model, loss
        self.images, self.texts = images, texts
        self.text_buckets = text_buckets
        # register live encoders so their parameters are optimised and synchronised
        self.visual_encoder = images.encoder
        self.text_encoder = texts.encoder

    def draw(self, feats: SplitFeatures, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The draws of one global batch idx [G] (:func:`sample_pairs`), one row per image:
        (idx, views_a, views_b, c1, c2, keys) [G] each, in :meth:`forward`'s order."""
        views_a, views_b, c1, c2 = sample_pairs(feats, idx, self.images.num_views, gen)
        return idx, views_a, views_b, c1, c2, feats.keys[idx]

    def log_values(self) -> dict[str, float]:
        """{"tau_<loss name>": 1 / logit scale} of every loss, read after the optimiser step."""
        return {f"tau_{n}": 1.0 / self.loss.scale(n).item() for n in self.loss.weights}

    def forward(self, idx, views_a, views_b, c1, c2, keys):
        need, emb = self.loss.needed(), {}
        if "v1" in need:
            emb["v1"] = self.model.embed_image(self.images.tokens(views_a, idx))
        if "v2" in need:
            emb["v2"] = self.model.embed_image(self.images.tokens(views_b, idx))
        for name, rows in (("t1", c1), ("t2", c2)):
            if name in need:
                emb[name] = self.embed_text(rows)
        device = next(iter(emb.values())).device
        # idx (rows of the training split) identifies the image for the visual loss's own-view positives
        return self.loss(emb, keys.to(device), idx.to(device))

    def embed_text(self, rows: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, d] of caption rows [B], in ``text_buckets`` length-sorted chunks (see the class)."""
        if self.text_buckets == 1:
            return self.model.embed_text(*self.texts.tokens(rows))
        chunks = length_buckets(self.texts.lengths(rows), self.text_buckets)
        parts = [self.model.embed_text(*self.texts.tokens(rows[chunk])) for chunk in chunks]
        return torch.cat(parts)[torch.argsort(torch.cat(chunks))]


def length_buckets(lengths: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Positions [B] of ``lengths`` [B] sorted by length (stable) and cut into min(k, B) chunks of near-equal
    size: the chunks :meth:`CookieStep.embed_text` embeds one at a time."""
    return list(torch.argsort(lengths, stable=True).tensor_split(min(k, len(lengths))))


def epoch_batches(n: int, seed: int, epoch: int, global_batch: int) -> list[torch.Tensor]:
    """The epoch's global batches of image indices: a permutation of ``range(n)`` seeded by
    ``seed * 100_003 + epoch``, cut into ``n // global_batch`` full batches [global_batch] (the last
    partial batch is dropped: the all-gather needs equal sizes on every rank). Rank r takes the r-th
    ``batch_size`` slice of each (see :func:`train_step`)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    steps = n // global_batch
    if steps == 0:
        raise ValueError(f"the global batch (train.batch_size x processes = {global_batch}) is larger than "
                         f"the {n} training images")
    return [perm[s * global_batch:(s + 1) * global_batch] for s in range(steps)]


def step_generator(seed: int, epoch: int, step_in_epoch: int) -> torch.Generator:
    """The generator of one optimiser step's view/caption draws: seeded by
    ``seed * 1_000_003 + epoch * 10_007 + step_in_epoch``, so a resumed run draws the same pairs."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + step_in_epoch)


def lr_lambda(warmup: int, total: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """Learning-rate multiplier for ``LambdaLR``: linear warm-up ``(step + 1) / warmup`` for
    ``step < warmup``, then cosine decay from 1 to the floor ``min_ratio`` (``train.min_lr_ratio``) at ``total``:
    ``min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * min(1, (step - warmup) / (total - warmup))))``.
    ``min_ratio = 0`` is the plain cosine to 0; a floor such as 0.1 keeps the end of a run from being the
    schedule stopping the optimiser."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return min_ratio + (1.0 - min_ratio) * cosine
    return f


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.0
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of every training loop: ``LambdaLR(optimizer, lr_lambda(warmup, total,
    min_ratio))``, stepped once per optimiser step (``min_ratio = 1`` is a constant rate)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total, min_ratio))


# ----------------------------------------------------------------------------- optimiser
def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Parameters kept out of weight decay: every tensor with fewer than 2 dimensions (biases, LayerNorm
    gains, the per-loss log temperatures ``log_scale.*``) and position embeddings (``*pos*``, e.g.
    ``visual_pos``, which is [1, T, d] but is an additive offset, not a projection)."""
    leaf = name.rsplit(".", 1)[-1]
    return p.ndim < 2 or leaf.endswith("pos") or "pos_emb" in leaf or "log_scale" in name


def param_groups(head: Iterable[nn.Module], encoders: Iterable[nn.Module | None], train_cfg: TrainConfig
                 ) -> list[dict]:
    """AdamW parameter groups (only parameters with ``requires_grad``, each listed once).

    * head (the COOKIE model and the loss's temperatures) at ``train_cfg.lr``;
    * encoders being fine-tuned (``None`` entries are skipped) at ``train_cfg.encoder_lr``, also when
      they are submodules of a head module (the cached-prefix tails inside the COOKIE model): a parameter
      of an ``encoders`` module is never put in a head group;

    each split into a group with ``weight_decay = train_cfg.weight_decay`` (matrices: linear, attention,
    convolution weights, token embeddings) and one with ``weight_decay = 0`` (see :func:`_no_decay`), as in
    nanoGPT's ``configure_optimizers`` and open_clip's ``exclude_from_wd``: decaying a LayerNorm gain or a
    bias pulls it toward 0 rather than regularising a mapping, and decaying ``log(1/tau)`` would push the
    temperature toward 1. Empty groups are dropped. Each group carries a ``name`` for logging.
    """
    groups: list[dict] = []
    encoders = list(encoders)
    encoder_ids = {id(p) for m in encoders if m is not None for p in m.parameters()}
    seen: set[int] = set()
    for label, modules, lr in (("head", head, train_cfg.lr), ("encoder", encoders, train_cfg.encoder_lr)):
        decay, no_decay = [], []
        for module in modules:
            if module is None:
                continue
            for name, p in module.named_parameters():
                if not p.requires_grad or id(p) in seen or (label == "head" and id(p) in encoder_ids):
                    continue
                seen.add(id(p))
                (no_decay if _no_decay(name, p) else decay).append(p)
        groups += [g for g in ({"name": f"{label}_decay", "params": decay, "lr": lr,
                                "weight_decay": train_cfg.weight_decay},
                               {"name": f"{label}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
                   if g["params"]]
    return groups


def build_optimizer(head: Iterable[nn.Module], encoders: Iterable[nn.Module | None], train_cfg: TrainConfig
                    ) -> torch.optim.AdamW:
    """``torch.optim.AdamW(param_groups(head, encoders, train_cfg))`` (default betas and eps)."""
    return torch.optim.AdamW(param_groups(head, encoders, train_cfg))


# ----------------------------------------------------------------------------- the step
def train_step(module: nn.Module, optimizer: torch.optim.Optimizer, scheduler, feats: SplitFeatures,
               batches: Sequence[torch.Tensor], gen: torch.Generator, *, step: int, batch_size: int | None = None,
               rank: int = 0, amp: str = "none", ddp: bool = False, checkpoint: str | Path | None = None) -> dict:
    """One optimiser step over ``len(batches)`` gradient-accumulation micro-batches.

    ``module`` is a step module (see the module docstring: :class:`CookieStep`, or the
    DistributedDataParallel wrapping it when ``ddp``). Each ``batches[k]`` is a global batch of image
    indices [global_batch]; the step module's ``draw`` draws views and captions for the whole global batch
    with ``gen`` (the same draws on every rank, and the same as one process with ``batch_size x world``),
    then this rank keeps rows ``[rank * batch_size, (rank + 1) * batch_size)`` of every drawn tensor
    (``batch_size`` None = the whole batch, the only choice for a step module whose draws are not one row
    per image). The loss of each micro-batch is divided by ``len(batches)``,
    so the accumulated gradient is that of the mean; DDP synchronises on the last micro-batch only.

    Raises :class:`NonFiniteLossError` naming ``step``, the loss term and ``checkpoint`` (the last good
    one) before any backward pass of the bad micro-batch. Returns the record
    ``{"step", <loss name>: mean over micro-batches, "lr": head lr after the scheduler step,
    **module.log_values()}`` (for COOKIE: ``"tau_<loss name>": 1 / logit scale``).
    """
    inner = module.module if ddp else module
    optimizer.zero_grad(set_to_none=True)
    parts_sum: dict[str, float] = {}
    for k, global_idx in enumerate(batches):
        drawn = inner.draw(feats, global_idx, gen)
        mine = slice(rank * batch_size, (rank + 1) * batch_size) if batch_size else slice(None)
        sync = not ddp or k == len(batches) - 1
        ctx = module.no_sync() if not sync else torch.enable_grad()
        device_type = next(inner.model.parameters()).device.type
        with ctx, torch.autocast(device_type, torch.bfloat16, enabled=amp == "bf16"):
            total, parts = module(*(x[mine] for x in drawn))
        for name, value in parts.items():
            value = value.item() if isinstance(value, torch.Tensor) else float(value)  # a 0-d tensor or a number
            if not math.isfinite(value):
                where = f"; the last good checkpoint is {checkpoint}" if checkpoint is not None else ""
                raise NonFiniteLossError(f"non-finite {name} loss ({value}) at step {step}{where}")
            parts_sum[name] = parts_sum.get(name, 0.0) + value / len(batches)
        (total / len(batches)).backward()
    optimizer.step()
    scheduler.step()
    return {"step": step, **parts_sum, "lr": scheduler.get_last_lr()[0], **inner.log_values()}
