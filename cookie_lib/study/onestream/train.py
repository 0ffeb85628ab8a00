"""Training the cross-encoder (see :mod:`cookie_lib.study.onestream`): hard negatives mined from COOKIE's
similarity, the grouped softmax loss as a step module of COOKIE's training step, the validation-chosen
checkpoint."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import Config, resolve_path
from ...features import ImageTokens, SplitFeatures, split_features
from ...model import CookieModel
from ...runtime import atomic_save, atomic_write_json, manifest, pick_device, seed_everything
from ...step import build_optimizer, build_scheduler, epoch_batches, step_generator, train_step
from .gallery import Gallery, Positives
from .model import CrossEncoder, encode_split
from .settings import (BATCH, GROUP_NEGATIVES, HARD_NEGATIVE_POOL, HARD_NEGATIVE_SKIP, SETTINGS, STEPS, VAL_EVERY,
                       VAL_IMAGES, VAL_K)


@torch.no_grad()
def mine_hard_negatives(img_emb: torch.Tensor, txt_emb: torch.Tensor, pos: Positives, k: int, skip: int = 0,
                        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-positives of similarity rank skip+1 .. skip+k both ways: img_emb [N, d], txt_emb [M, d]
    (the gallery of ``pos``).

    Returns (captions [N, k], caption_ok [N, k], images [M, k], image_ok [M, k]) as gallery positions;
    ``*_ok`` is False where a row has fewer negatives (those slots are never drawn)."""
    def side(q, g, block):
        idx, ok = [], []
        kk = min(k + skip, g.shape[0])
        for s in range(0, q.shape[0], chunk):
            rows = range(s, min(s + chunk, q.shape[0]))
            sim = (q[s:s + chunk] @ g.T).masked_fill(block(rows), float("-inf"))
            val, ind = sim.topk(kk, dim=1)
            idx.append(ind[:, skip:]), ok.append(torch.isfinite(val[:, skip:]))
        return torch.cat(idx), torch.cat(ok)
    caps, caps_ok = side(img_emb, txt_emb, pos.rows_of_images)
    imgs, imgs_ok = side(txt_emb, img_emb, pos.rows_of_captions)
    return caps, caps_ok, imgs, imgs_ok


def _val_images(n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=gen)[:min(VAL_IMAGES, n)].tolist())


def _load_cookie(cookie: CookieModel | str | Path) -> tuple[CookieModel, float | None]:
    """(model, its learned cross-modal logit scale 1/tau, or None when unknown) of a model or a run folder."""
    if isinstance(cookie, CookieModel):
        return cookie.eval(), None
    from ...evaluate import load_run
    run = load_run(cookie)
    state = torch.load(run.checkpoint, map_location="cpu", weights_only=False)["step_module"]
    log_scale = state.get("loss.log_scale.cross_modal")
    return run.model.eval(), None if log_scale is None else float(log_scale.exp())


def train_onestream(cfg: Config, out_dir: str | Path, seed: int = 0, *, cookie: CookieModel | str | Path,
                    steps: int | None = None, train_feats: SplitFeatures | None = None,
                    val_feats: SplitFeatures | None = None, device: str | None = None, log_every: int = 10) -> dict:
    """Train the cross-encoder on the config's training split (see the module docstring) on top of
    ``cookie`` (a trained CookieModel, or the run folder of one: the COOKIE run of the same seed), keep the
    validation-best checkpoint, and write ``out_dir/result.json`` and ``out_dir/onestream.pt``.
    ``steps`` None = ``STEPS``. Returns the result dict: {"kind", "seed", "config", "settings", "steps",
    "history", "val", "best_step", "val_cookie_r1", "val_best_r1", "train_seconds", "final"}."""
    from ...data import load_corpus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    dev = pick_device(device or t.device)
    if train_feats is None or val_feats is None:
        corpus = load_corpus(cfg)
        dataset = resolve_path(cfg.data.dataset)
        train_feats = train_feats or split_features(cfg, corpus.split("train"), "train", t.num_views, dataset,
                                                    progress=False)
        val_feats = val_feats or split_features(cfg, corpus.split("val"), "val", 1, dataset, progress=False)
    n = len(train_feats.records)
    batch = min(BATCH, n)
    per_epoch = len(epoch_batches(n, seed, 0, batch))
    total = steps if steps is not None else STEPS
    if total < 1:
        raise ValueError(f"train_onestream: steps must be >= 1, got {total}")
    seed_everything(seed)
    t0 = time.perf_counter()
    towers, scale = _load_cookie(cookie)
    model = CrossEncoder(towers, sim_scale=scale).to(dev)
    init_scale = float(model.log_sim_scale.detach().exp())
    # hard-negative pools from COOKIE's similarity over the whole training split (view 0, every caption)
    all_caps = torch.arange(len(train_feats.texts))
    enc = encode_split(model, train_feats, range(n), all_caps, dev)
    pools = mine_hard_negatives(enc["u"].cpu(), enc["w"].cpu(), Positives(train_feats, range(n), all_caps),
                                HARD_NEGATIVE_POOL, HARD_NEGATIVE_SKIP)
    del enc
    images = ImageTokens(train_feats, None, cfg.model.image_size, dev, grid_flip=t.grid_flip)
    val = Gallery(model, val_feats, _val_images(len(val_feats.records), seed), dev)

    def validate(step):
        r_i2t, r_t2i, _ = val.rerank_r1(VAL_K)
        return {"step": step, "i2t_r1": r_i2t, "t2i_r1": r_t2i, "r1": (r_i2t + r_t2i) / 2}
    val_curve = [validate(0)]  # at step 0 the cross-encoder ranks as COOKIE: the reference, never kept
    step_module = GroupStep(model, train_feats, images, pools, dev)
    opt = build_optimizer([model], [], t)
    sched = build_scheduler(opt, min(t.warmup_steps, total), total, t.min_lr_ratio)
    history, best, step = [], None, 0
    while step < total:  # COOKIE's batches, step draws, optimiser step and schedule (cookie_lib.step)
        epoch = step // per_epoch
        for s, idx in enumerate(epoch_batches(n, seed, epoch, batch)):
            if step >= total:
                break
            step_module.train()  # validation leaves the model in eval mode
            rec = train_step(step_module, opt, sched, train_feats, [idx], step_generator(seed, epoch, s), step=step)
            if step % log_every == 0 or step == total - 1:
                history.append(rec)
            step += 1
            if step % VAL_EVERY == 0 or step == total:
                val_curve.append(validate(step))
                if best is None or val_curve[-1]["r1"] > best[0]["r1"]:
                    best = (val_curve[-1], copy.deepcopy(model.state_dict()))
    secs = time.perf_counter() - t0
    model.load_state_dict(best[1])
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "seed": seed, "settings": SETTINGS},
                out / "onestream.pt")
    result = manifest(cfg.to_dict(), kind="onestream", variant="onestream", seed=seed, settings=SETTINGS,
                      steps=total, batch_size=batch, history=history, val=val_curve, best_step=best[0]["step"],
                      val_cookie_r1=val_curve[0]["r1"], val_best_r1=best[0]["r1"], train_seconds=secs,
                      final=history[-1], initial_sim_scale=init_scale,
                      trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
    atomic_write_json(result, out / "result.json")
    return result


def _draw_group(pool: torch.Tensor, ok: torch.Tensor, rows: torch.Tensor, h: int, gen: torch.Generator
                ) -> torch.Tensor:
    """``h`` distinct entries per row of ``pool[rows]`` [B, K], uniform over its allowed slots -> [B, h]
    (with replacement for a row with fewer than h allowed slots; a row with none draws from all K)."""
    w = ok[rows].float()
    w[w.sum(1) == 0] = 1.0
    short = w.sum(1) < h
    pick = torch.empty(len(rows), h, dtype=torch.long)
    if (~short).any():
        pick[~short] = torch.multinomial(w[~short], h, replacement=False, generator=gen)
    if short.any():
        pick[short] = torch.multinomial(w[short], h, replacement=True, generator=gen)
    return pool[rows].gather(1, pick)


class GroupStep(nn.Module):
    """The cross-encoder's step module for :func:`cookie_lib.step.train_step`: the grouped softmax loss
    (localized contrastive estimation, as re-rankers trained on a retriever's negatives are).

    draw(feats, idx [B], gen) -> (c1 [B], neg_cap [B, H], neg_img [B, H], views [B (1 + H)]): one caption
    c_i of each image i, H = ``GROUP_NEGATIVES`` negatives per image from its pool of COOKIE-nearest
    other-key captions, H per caption c_i from its pool of nearest other-key images, and one cached view
    for each of the B (1 + H) images scored; then forward(*drawn) -> (L, {"loss", "group_acc", "sim_scale"}):

        L = 1/2 [ CE(s(i, c_i), s(i, c_i^1..H)) + CE(s(i, c_i), s(i_c^1..H, c_i)) ]   (mean over i)

    with B (1 + 2H) joint passes (the positive is scored once). The draws are not one row per image, so
    ``train_step`` runs it in one process (``batch_size`` None).
    """

    def __init__(self, model: CrossEncoder, feats: SplitFeatures, images: ImageTokens, pools, device):
        super().__init__()
        self.model, self.feats, self.images, self.pools, self.device = model, feats, images, pools, device

    def draw(self, feats: SplitFeatures, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        caps, caps_ok, imgs, imgs_ok = self.pools
        h = GROUP_NEGATIVES
        c1 = torch.tensor([ids[int(torch.randint(len(ids), (1,), generator=gen))] for ids in
                           (feats.caption_ids[i] for i in idx.tolist())])
        neg_cap = _draw_group(caps, caps_ok, idx, h, gen)  # [B, H] caption rows
        neg_img = _draw_group(imgs, imgs_ok, c1, h, gen)  # [B, H] image rows
        views = torch.randint(0, self.images.num_views, (len(idx) * (1 + h),), generator=gen)
        return idx, c1, neg_cap, neg_img, views

    def log_values(self) -> dict[str, float]:
        return {}

    def forward(self, idx, c1, neg_cap, neg_img, views):
        model, feats, b, h = self.model, self.feats, len(idx), GROUP_NEGATIVES
        img_rows = torch.cat([idx, neg_img.reshape(-1)])
        cap_rows = torch.cat([c1, neg_cap.reshape(-1)])
        with torch.no_grad():  # the towers are frozen
            v, u = model.encode_images(self.images.tokens(views, img_rows))
            mask = feats.text_mask[cap_rows]
            width = int(mask.sum(1).max())
            mask = mask[:, :width].to(self.device)
            tt, w = model.encode_texts(feats.text_tokens[cap_rows, :width].float().to(self.device), mask)
        ar = torch.arange(b)
        hard_c = b + ar[:, None] * h + torch.arange(h)  # [B, H] rows of tt / of v for the negatives
        vi = torch.cat([ar, ar.repeat_interleave(h), hard_c.reshape(-1)])  # positives, (i, c^h), (i^h, c_i)
        ti = torch.cat([ar, hard_c.reshape(-1), ar.repeat_interleave(h)])
        logits = model.score_states(v[vi], u[vi], tt[ti], w[ti], mask[ti]).float()
        pos, i2t, t2i = logits[:b, None], logits[b:b + b * h].view(b, h), logits[b + b * h:].view(b, h)
        target = torch.zeros(b, dtype=torch.long, device=logits.device)
        loss_i2t = F.cross_entropy(torch.cat([pos, i2t], 1), target)
        loss_t2i = F.cross_entropy(torch.cat([pos, t2i], 1), target)
        loss = (loss_i2t + loss_t2i) / 2
        acc = ((pos > i2t.amax(1, keepdim=True)).float().mean() + (pos > t2i.amax(1, keepdim=True)).float().mean()) / 2
        return loss, {"loss": loss, "group_acc": 100.0 * float(acc),
                      "sim_scale": float(model.log_sim_scale.detach().exp())}
