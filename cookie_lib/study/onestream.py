"""The one-stream cross-encoder of the speed claim, trained and evaluated, so the claim has accuracy on both sides.

Model (:class:`CrossEncoder`, image-text matching as in ALBEF/BLIP)::

    v_i, u_i = Towers(image tokens)       # COOKIE's trained projections + head: states [T_v, d], pooled unit [d]
    t_j, w_j = Towers(caption tokens)     # the same for the caption: [T, d], [d]
    h = Joint([CLS; v_i + e_img; t_j + e_txt])          # ``joint_depth`` full-attention blocks, LayerScale 1
    score(i, j) = exp(s) <u_i, w_j> + W_m h[CLS] + b_m

The towers are the trained COOKIE model of the same seed, frozen (its per-item states are computed once
per image and per caption, as every cross-encoder's unimodal encoders are). The joint block attends over
both modalities at once, so every (image, caption) pair needs its own pass: N x M passes for exhaustive
retrieval. It is *not* the identity at initialisation (LayerScale 1, standard init); the match layer W_m
starts at 0 and exp(s) at COOKIE's learned cross-modal logit scale 1/tau, so at step 0 the scores are
COOKIE's own InfoNCE logits and what training adds is the joint block's correction. Adding the dual
encoder's similarity to the matching logit is what ALBEF and BLIP do when they re-rank (``score +
topk_sim`` in their retrieval code).

Training (:func:`train_onestream`): hard negatives are mined once from COOKIE's similarity over the whole
training split: for every image the captions of other keys at similarity ranks ``HARD_NEGATIVE_SKIP`` + 1
.. + ``HARD_NEGATIVE_POOL``, for every caption the images likewise. Each step takes ``BATCH`` training
images (one cached view each, grid flips included) with one of each image's captions, draws
``GROUP_NEGATIVES`` = H negatives per image and per caption from those pools, and minimises the grouped
softmax loss of re-rankers trained on a retriever's negatives (localized contrastive estimation):

    L = 1/2 mean_i [ CE(s(i, c_i) vs s(i, c_i^1..H)) + CE(s(i, c_i) vs s(i_c^1..H, c_i)) ]

by AdamW (:func:`cookie_lib.step.build_optimizer`, the library's decay groups) on the schedule of
:func:`cookie_lib.step.lr_lambda` for ``STEPS`` steps (or ``steps``). Every ``VAL_EVERY`` steps the model
re-ranks COOKIE's top ``VAL_K`` on a seeded subset of ``VAL_IMAGES`` validation images; the checkpoint
with the best mean R@1 (both directions) is the one kept (step 0, which is COOKIE, is only the reference).
``out_dir/result.json`` (config, settings, history, validation curve, chosen step) and
``out_dir/onestream.pt`` are written atomically.

Evaluation (:func:`speed_accuracy_table`), R@1 both ways with the pessimistic ranks of
:mod:`cookie_lib.metrics`, seconds over the cached encoder tokens, pairs scored by the joint blocks:

* two-stream: COOKIE embeddings, dot products;
* two-stream + re-rank top k: each image's k best captions and each caption's k best images (by COOKIE)
  re-scored by the cross-encoder; the rest keep their order below them;
* one-stream exhaustive: every pair scored (on a seeded gallery of ``n_exhaustive`` images).

CLI: ``python -m cookie_lib.study.onestream train --profile P --cookie RUN_DIR --out DIR [--seed S] [--steps K]``
and ``python -m cookie_lib.study.onestream table --profile P --onestream PT --out DIR``.
The module holds one baseline end to end (model, trainer, evaluation, table, CLI) for the notebooks.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config, add_override_argument, config_from_dict, load_config, parse_overrides, resolve_path
from ..features import ImageTokens, SplitFeatures, split_features
from ..metrics import score_matrix_ranks
from ..model import CookieModel, HeadStack, masked_mean
from ..runtime import atomic_save, atomic_write_json, atomic_write_text, manifest, pick_device, seed_everything
from ..step import build_optimizer, epoch_batches, lr_lambda, step_generator

JOINT_DEPTH = 1           # joint blocks over [CLS; image; caption]: 2 cost 2x per training step (3 min per seed on 1 thread)
HARD_NEGATIVE_POOL = 64   # candidates per image / caption mined from COOKIE's similarity over the training split
HARD_NEGATIVE_SKIP = 4    # the most similar other-key items left out (often false negatives: validation R@1 7.7 vs 7.1 with 0)
GROUP_NEGATIVES = 3       # hard negatives drawn from the pool into each positive's group
BATCH = 64                # positives per step: B (1 + 2 H) = 448 joint passes
STEPS = 150               # optimiser steps (about 1.2 epochs of the default profile's 8,148 images)
VAL_EVERY = 50            # steps between validations (the checkpoint kept is the best of them)
VAL_IMAGES = 300          # validation images the checkpoint is chosen on (all their captions)
VAL_K = 10                # ... by re-ranking COOKIE's top 10 both ways
SETTINGS = dict(joint_depth=JOINT_DEPTH, hard_negative_pool=HARD_NEGATIVE_POOL, hard_negative_skip=HARD_NEGATIVE_SKIP,
                group_negatives=GROUP_NEGATIVES,
                batch=BATCH, steps=STEPS, val_every=VAL_EVERY, val_images=VAL_IMAGES, val_k=VAL_K,
                loss="grouped softmax (LCE)")
TABLE_COLUMNS = ["gallery", "n_images", "n_captions", "method", "k", "i2t_r1", "t2i_r1", "seconds", "pairs_scored"]


# ----------------------------------------------------------------------------- the model
class CrossEncoder(nn.Module):
    """COOKIE's frozen towers + ``joint_depth`` joint blocks + a match layer (see the module docstring).

    encode_images(tokens [B, T_v, C_v]) -> (states [B, T_v, d], emb [B, d] unit norm)
    encode_texts(tokens [B, T, C_t], mask [B, T]) -> (states [B, T, d], emb [B, d])
    score_states(v [P, T_v, d], u [P, d], t [P, T, d], w [P, d], mask [P, T]) -> logits [P]
    score(img_tokens, txt_tokens, txt_mask) -> logits [B] (pairwise, row by row)
    """

    def __init__(self, cookie: CookieModel, joint_depth: int = JOINT_DEPTH, sim_scale: float | None = None):
        super().__init__()
        self.cookie = copy.deepcopy(cookie).eval()
        for p in self.cookie.parameters():
            p.requires_grad_(False)
        cfg = cookie.cfg
        d = cfg.dim
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        # 1-D vectors: the optimiser's no-decay rule applies to them
        self.type_img = nn.Parameter(torch.randn(d) * 0.02)
        self.type_txt = nn.Parameter(torch.randn(d) * 0.02)
        self.joint = HeadStack(dataclasses.replace(cfg, depth=joint_depth, layer_scale_init=1.0))
        self.match = nn.Linear(d, 1)
        nn.init.zeros_(self.match.weight)
        nn.init.zeros_(self.match.bias)
        # COOKIE's own cross-modal logit scale 1/tau: at step 0 the scores are COOKIE's InfoNCE logits
        scale = sim_scale if sim_scale is not None else 1.0 / 0.07
        self.log_sim_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.cookie.eval()  # frozen towers: no dropout
        return self

    def _states(self, x: torch.Tensor, mask: torch.Tensor | None, modality: str):
        c = self.cookie
        vec = None if c.modality_embedding is None else c.modality_embedding[modality]
        states = c._stack(modality)(x, mask, vec)
        return states, F.normalize(masked_mean(states, mask), dim=-1)

    def encode_images(self, tokens: torch.Tensor):
        return self._states(self.cookie.visual_proj(tokens) + self.cookie.visual_pos, None, "visual")

    def encode_texts(self, tokens: torch.Tensor, mask: torch.Tensor):
        return self._states(self.cookie.text_proj(tokens), mask, "text")

    def score_states(self, v, u, t, w, mask):
        p = v.shape[0]
        x = torch.cat([self.cls.expand(p, -1, -1), v + self.type_img, t + self.type_txt], dim=1)
        valid = torch.cat([torch.ones(p, 1 + v.shape[1], dtype=torch.bool, device=x.device), mask], dim=1)
        h = self.joint(x, valid)[:, 0]
        return self.log_sim_scale.exp() * (u * w).sum(-1) + self.match(h).squeeze(-1)

    def score(self, img_tokens, txt_tokens, txt_mask):
        v, u = self.encode_images(img_tokens)
        t, w = self.encode_texts(txt_tokens, txt_mask)
        return self.score_states(v, u, t, w, txt_mask)


@torch.no_grad()
def encode_split(model: CrossEncoder, feats: SplitFeatures, images, captions, device, batch: int = 512) -> dict:
    """Tower states of ``images`` (view 0) and ``captions`` (rows of feats.texts): {"v" [N, T_v, d],
    "u" [N, d], "t" [M, T, d], "w" [M, d], "mask" [M, T]} on ``device``."""
    images, captions = torch.as_tensor(images), torch.as_tensor(captions)
    vs, us, ts, ws = [], [], [], []
    for idx in images.split(batch):
        v, u = model.encode_images(feats.image_tokens[0, idx].float().to(device))
        vs.append(v), us.append(u)
    mask = feats.text_mask[captions].to(device)
    width = max(int(mask.sum(1).max()), 1) if len(captions) else 1
    mask = mask[:, :width]
    for rows, m in zip(captions.split(batch), mask.split(batch)):
        t, w = model.encode_texts(feats.text_tokens[rows, :width].float().to(device), m)
        ts.append(t), ws.append(w)
    return {"v": torch.cat(vs), "u": torch.cat(us), "t": torch.cat(ts), "w": torch.cat(ws), "mask": mask}


@torch.no_grad()
def score_index_pairs(model: CrossEncoder, enc: dict, ii: torch.Tensor, jj: torch.Tensor, batch: int = 1024
                      ) -> torch.Tensor:
    """Cross-encoder scores of the pairs (image ii[p], caption jj[p]) of :func:`encode_split` states -> [P].

    Pairs are scored in caption-length order and each pass is trimmed to its longest caption (padding is
    masked out of attention, so the scores do not change; the cost does)."""
    out = torch.empty(len(ii), device=enc["u"].device)
    lengths = enc["mask"].sum(1)
    order = torch.argsort(lengths[jj], stable=True)
    for s in range(0, len(order), batch):
        sel = order[s:s + batch]
        i, j = ii[sel], jj[sel]
        width = max(int(lengths[j].max()), 1)
        out[sel] = model.score_states(enc["v"][i], enc["u"][i], enc["t"][j, :width], enc["w"][j],
                                      enc["mask"][j, :width]).float()
    return out


# ----------------------------------------------------------------------------- hard negatives
class Positives:
    """Which (image, caption) pairs are positives: caption row c is a positive of image i when one of the
    images holding c has i's key (a caption text shared by several keys is positive for all of them).

    rows_of_images(images [Q]) -> [Q, len(captions)] bool;  rows_of_captions(cols [Q]) -> [Q, len(images)] bool
    over the gallery ``images`` (indices of feats.records) x ``captions`` (rows of feats.texts)."""

    def __init__(self, feats: SplitFeatures, images, captions):
        keys = feats.keys.tolist()
        self.images, self.captions = list(map(int, images)), [int(c) for c in captions]
        cols: dict[int, list[int]] = {}  # text row -> its gallery columns (a text several images hold: several)
        for n, c in enumerate(self.captions):
            cols.setdefault(c, []).append(n)
        self.img_key = [keys[i] for i in self.images]
        self.key_cols: dict[int, set[int]] = {}
        self.col_keys: list[set[int]] = [set() for _ in self.captions]
        for img, ids in enumerate(feats.caption_ids):
            for c in ids:
                for n in cols.get(c, ()):
                    self.key_cols.setdefault(keys[img], set()).add(n)
                    self.col_keys[n].add(keys[img])
        self.key_rows: dict[int, list[int]] = {}
        for r, k in enumerate(self.img_key):
            self.key_rows.setdefault(k, []).append(r)

    def rows_of_images(self, rows) -> torch.Tensor:
        out = torch.zeros(len(rows), len(self.captions), dtype=torch.bool)
        for n, r in enumerate(rows):
            out[n, list(self.key_cols.get(self.img_key[int(r)], ()))] = True
        return out

    def rows_of_captions(self, cols) -> torch.Tensor:
        out = torch.zeros(len(cols), len(self.images), dtype=torch.bool)
        for n, c in enumerate(cols):
            out[n, [r for k in self.col_keys[int(c)] for r in self.key_rows.get(k, ())]] = True
        return out

    def dense(self) -> torch.Tensor:
        """[len(images), len(captions)] bool (small galleries only)."""
        return self.rows_of_images(range(len(self.images)))


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


# ----------------------------------------------------------------------------- evaluation
def _r1(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """R@1 (points) from a score matrix [Q, G] and its positive mask [Q, G], with the project's rank engine."""
    return 100.0 * float((score_matrix_ranks(scores, positive) < 1).double().mean())


def rerank(two: torch.Tensor, top: torch.Tensor, top_scores: torch.Tensor) -> torch.Tensor:
    """Re-ranked score matrix [Q, G]: each query's ``top`` [Q, k] candidates get their cross-encoder score
    ``top_scores`` [Q, k], placed above every other candidate, which keeps its two-stream order."""
    out = two.double().clone()
    vals = top_scores.double()
    out -= float(out.max() - vals.min()) + 1.0  # every other candidate ends strictly below the top k
    out.scatter_(1, top, vals)
    return out


class Gallery:
    """A retrieval gallery: ``images`` (indices of feats.records) and all their captions, with the
    cross-encoder's tower states and COOKIE's similarity, for re-ranking and exhaustive scoring."""

    def __init__(self, model: CrossEncoder, feats: SplitFeatures, images: list[int], device="cpu"):
        self.model, self.device = model.eval(), torch.device(device)
        self.images = list(images)
        # every caption of every image, as the study's metrics count them (cookie_lib.metrics)
        self.captions = torch.tensor([c for i in self.images for c in feats.caption_ids[i]])
        self.pos = Positives(feats, self.images, self.captions).dense()  # [N, M]
        t0 = time.perf_counter()
        self.enc = encode_split(model, feats, self.images, self.captions, self.device)
        self.two = (self.enc["u"] @ self.enc["w"].T).float().cpu()  # COOKIE's similarity [N, M]
        self.encode_seconds = time.perf_counter() - t0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.two.shape)

    def score(self, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
        return score_index_pairs(self.model, self.enc, ii.to(self.device), jj.to(self.device)).cpu()

    def rerank_r1(self, k: int) -> tuple[float, float, int]:
        """(i2t R@1, t2i R@1, distinct pairs scored) after re-ranking COOKIE's top k both ways."""
        n, m = self.shape
        top_i2t = self.two.topk(min(k, m), dim=1).indices  # [N, k] caption columns
        top_t2i = self.two.T.topk(min(k, n), dim=1).indices  # [M, k] image rows
        flat_i2t = (torch.arange(n)[:, None] * m + top_i2t).reshape(-1)  # pair id = image * M + caption
        flat_t2i = (top_t2i * m + torch.arange(m)[:, None]).reshape(-1)
        uniq, inverse = torch.unique(torch.cat([flat_i2t, flat_t2i]), return_inverse=True)  # each pair once
        vals = self.score(uniq // m, uniq % m)[inverse]
        s_i2t, s_t2i = vals[:top_i2t.numel()].view_as(top_i2t), vals[top_i2t.numel():].view_as(top_t2i)
        return (_r1(rerank(self.two, top_i2t, s_i2t), self.pos), _r1(rerank(self.two.T, top_t2i, s_t2i), self.pos.T),
                len(uniq))

    def exhaustive(self) -> torch.Tensor:
        """Cross-encoder scores of every pair [N, M]."""
        n, m = self.shape
        return self.score(torch.arange(n).repeat_interleave(m), torch.arange(m).repeat(n)).view(n, m)


# ----------------------------------------------------------------------------- training
def _val_images(n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=gen)[:min(VAL_IMAGES, n)].tolist())


def _load_cookie(cookie: CookieModel | str | Path) -> tuple[CookieModel, float | None]:
    """(model, its learned cross-modal logit scale 1/tau, or None when unknown) of a model or a run folder."""
    if isinstance(cookie, CookieModel):
        return cookie.eval(), None
    from ..evaluate import load_run
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
    from ..train import load_corpus

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
    opt = build_optimizer([model], [], t)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(t.warmup_steps, total), total, t.min_lr_ratio))
    history, best, step = [], None, 0
    while step < total:
        epoch = step // per_epoch
        for s, idx in enumerate(epoch_batches(n, seed, epoch, batch)):
            if step >= total:
                break
            model.train()
            loss, rec = _group_step(model, train_feats, images, pools, idx, step_generator(seed, epoch, s), dev)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_onestream: non-finite loss at step {step} ({out})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % log_every == 0 or step == total - 1:
                history.append({"step": step, **rec, "lr": sched.get_last_lr()[0]})
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


def _group_step(model: CrossEncoder, feats: SplitFeatures, images: ImageTokens, pools, idx: torch.Tensor,
                gen: torch.Generator, dev) -> tuple[torch.Tensor, dict]:
    """Grouped softmax loss of one step (localized contrastive estimation, as re-rankers trained on a
    retriever's negatives are). idx [B] images, one view and one caption c_i each; H = GROUP_NEGATIVES:

        L = 1/2 [ CE(s(i, c_i), s(i, c_i^1..H)) + CE(s(i, c_i), s(i_c^1..H, c_i)) ]   (mean over i)

    with c_i^h drawn from image i's pool of COOKIE-nearest other-key captions and i_c^h from caption c_i's
    pool of nearest other-key images; B (1 + 2H) joint passes (the positive is scored once)."""
    caps, caps_ok, imgs, imgs_ok = pools
    b, h = len(idx), GROUP_NEGATIVES
    c1 = torch.tensor([ids[int(torch.randint(len(ids), (1,), generator=gen))] for ids in
                       (feats.caption_ids[i] for i in idx.tolist())])
    neg_cap = _draw_group(caps, caps_ok, idx, h, gen)  # [B, H] caption rows
    neg_img = _draw_group(imgs, imgs_ok, c1, h, gen)  # [B, H] image rows
    img_rows = torch.cat([idx, neg_img.reshape(-1)])
    views = torch.randint(0, images.num_views, (len(img_rows),), generator=gen)
    cap_rows = torch.cat([c1, neg_cap.reshape(-1)])
    with torch.no_grad():  # the towers are frozen
        v, u = model.encode_images(images.tokens(views, img_rows))
        mask = feats.text_mask[cap_rows]
        width = int(mask.sum(1).max())
        mask = mask[:, :width].to(dev)
        tt, w = model.encode_texts(feats.text_tokens[cap_rows, :width].float().to(dev), mask)
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
    return loss, {"loss": float(loss.detach()), "group_acc": 100.0 * float(acc),
                  "sim_scale": float(model.log_sim_scale.detach().exp())}


def load_onestream(path: str | Path, feats: SplitFeatures | None = None, widths: tuple[int, int, int] | None = None
                   ) -> CrossEncoder:
    """The CrossEncoder saved by :func:`train_onestream` (``onestream.pt``), in eval mode. The token widths
    (C_v, C_t, T_v) come from ``feats`` (cached tokens) or ``widths``."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    cfg = config_from_dict(blob["config"])
    if widths is None:
        widths = (feats.image_tokens.shape[-1], feats.text_tokens.shape[-1], feats.image_tokens.shape[-2])
    cookie = CookieModel(cfg.model, *widths)
    model = CrossEncoder(cookie, blob.get("settings", SETTINGS)["joint_depth"], 1.0)  # scale: from the state dict
    model.load_state_dict(blob["model"])
    return model.eval()


# ----------------------------------------------------------------------------- the speed/accuracy table
def gallery_eval(model: CrossEncoder, feats: SplitFeatures, images: list[int], ks=(10, 50), exhaustive: bool = False,
                 device="cpu", label: str = "") -> list[dict]:
    """Rows of :data:`TABLE_COLUMNS` on the gallery of ``images`` (indices into feats.records) and all
    their captions: two-stream (COOKIE, the cross-encoder's own towers), re-rank top k for each k, and
    one-stream exhaustive when asked. ``seconds`` start from the cached encoder tokens."""
    t0 = time.perf_counter()
    g = Gallery(model, feats, images, device)
    n, m = g.shape
    g.two.topk(min(10, m), dim=1), g.two.T.topk(min(10, n), dim=1)
    t_two = time.perf_counter() - t0
    base = dict(gallery=label, n_images=n, n_captions=m)
    out = [dict(base, method="two-stream", k=0, i2t_r1=_r1(g.two, g.pos), t2i_r1=_r1(g.two.T, g.pos.T),
                seconds=t_two, pairs_scored=0)]
    for k in ks:
        t0 = time.perf_counter()
        i2t, t2i, pairs = g.rerank_r1(k)
        out.append(dict(base, method=f"two-stream + re-rank top {k}", k=k, i2t_r1=i2t, t2i_r1=t2i,
                        seconds=t_two + time.perf_counter() - t0, pairs_scored=pairs))
    if exhaustive:
        t0 = time.perf_counter()
        full = g.exhaustive()
        full.topk(min(10, m), dim=1), full.T.topk(min(10, n), dim=1)
        secs = g.encode_seconds + time.perf_counter() - t0
        out.append(dict(base, method="one-stream exhaustive", k=m, i2t_r1=_r1(full, g.pos), t2i_r1=_r1(full.T, g.pos.T),
                        seconds=secs, pairs_scored=n * m))
    return out


def speed_accuracy_table(model: CrossEncoder, test_feats: SplitFeatures, ks=(10, 50), n_exhaustive: int = 100,
                         seed: int = 0, device="cpu") -> list[dict]:
    """The speed/accuracy table: on a seeded subset of ``n_exhaustive`` test images (every method,
    one-stream exhaustive included) and on the full test gallery (two-stream and re-rank top k)."""
    n = len(test_feats.records)
    gen = torch.Generator().manual_seed(seed)
    small = sorted(torch.randperm(n, generator=gen)[:min(n_exhaustive, n)].tolist())
    rows = gallery_eval(model, test_feats, small, ks, exhaustive=True, device=device, label=f"subset {len(small)}")
    rows += gallery_eval(model, test_feats, list(range(n)), ks, exhaustive=False, device=device, label="full test")
    return rows


def pareto_figure(table: list[dict], results: str | Path | None = None):
    """R@1 (mean of i2t and t2i; mean ± sd over seeds when the table has several per method) against time
    (log x) per gallery, one marker per method. The time is the benchmark's end-to-end retrieval time
    (:func:`cookie_lib.study.report.end_to_end_seconds`) when ``results`` holds it, else the seconds over
    cached encoder tokens of the table itself (the axis says which)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from .report import end_to_end_seconds

    df = pd.DataFrame(table)
    df["r1"] = (df.i2t_r1 + df.t2i_r1) / 2
    galleries = list(dict.fromkeys(df.gallery))
    fig, axes = plt.subplots(1, len(galleries), figsize=(5 * len(galleries), 4), squeeze=False)
    for ax, gallery in zip(axes[0], galleries):
        sources = set()
        for method, r in df[df.gallery == gallery].groupby("method", sort=False):
            t, src = end_to_end_seconds(results, method, int(r.n_images.iloc[0]), int(r.n_captions.iloc[0]))
            if t is None:
                t, src = float(r.seconds.mean()), "over cached encoder tokens"
            sources.add("end to end (benchmark)" if src != "over cached encoder tokens" else src)
            sd = r.r1.std() if len(r) > 1 else 0.0
            ax.errorbar(t, r.r1.mean(), yerr=sd, fmt="o", capsize=3,
                        label=f"{method} ({len(r)} seed{'s' if len(r) > 1 else ''})")
        first = df[df.gallery == gallery].iloc[0]
        ax.set_xscale("log")
        ax.set_xlabel(f"retrieval seconds, {' / '.join(sorted(sources))} (log)")
        ax.set_ylabel("R@1, mean of both directions (%)")
        ax.set_title(f"{gallery}: {first.n_images} images x {first.n_captions} captions", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_table(table: list[dict], out: str | Path) -> list[Path]:
    """``speed_accuracy.csv`` (columns :data:`TABLE_COLUMNS`, plus ``seed`` when present),
    ``speed_accuracy.json`` and ``fig_speed_accuracy.png`` under ``out``, all atomic."""
    import csv
    import io

    import matplotlib.pyplot as plt

    from .plots import save_figure

    out = Path(out)
    buf = io.StringIO()
    cols = TABLE_COLUMNS + (["seed"] if table and "seed" in table[0] else [])
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(table)
    atomic_write_text(buf.getvalue(), out / "speed_accuracy.csv")
    atomic_write_json(manifest(None, table=table), out / "speed_accuracy.json")
    fig = pareto_figure(table)
    try:
        png = save_figure(fig, out / "fig_speed_accuracy.png")
    finally:
        plt.close(fig)
    return [out / "speed_accuracy.csv", out / "speed_accuracy.json", png]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.study.onestream",
                                description="Train the one-stream cross-encoder; or build the speed/accuracy table.")
    sub = p.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train_onestream -> OUT/result.json, OUT/onestream.pt")
    tb = sub.add_parser("table", help="speed/accuracy table + figure of a trained cross-encoder on the test split")
    for a in (tr, tb):
        a.add_argument("--profile", default="default")
        add_override_argument(a)
        a.add_argument("--out", required=True)
        a.add_argument("--seed", type=int, default=0)
    tr.add_argument("--cookie", required=True, help="the trained COOKIE run folder of the same seed")
    tr.add_argument("--steps", type=int, default=None, help=f"default: {STEPS}")
    tb.add_argument("--onestream", required=True, help="onestream.pt from the train command")
    tb.add_argument("--n-exhaustive", type=int, default=100)
    a = p.parse_args(argv)
    cfg = load_config(a.profile, parse_overrides(a.set))
    if a.cmd == "train":
        res = train_onestream(cfg, a.out, a.seed, cookie=a.cookie, steps=a.steps)
        print(f"cross-encoder: {res['steps']} steps in {res['train_seconds']:.1f} s; val R@1 (re-rank top {VAL_K}) "
              f"COOKIE {res['val_cookie_r1']:.2f} -> {res['val_best_r1']:.2f} (step {res['best_step']})")
        return 0
    from ..train import load_corpus
    corpus = load_corpus(cfg)
    test = split_features(cfg, corpus.split("test"), "test", 1, resolve_path(cfg.data.dataset), progress=False)
    table = speed_accuracy_table(load_onestream(a.onestream, test), test, n_exhaustive=a.n_exhaustive, seed=a.seed)
    for r in table:
        print(f"  {r['gallery']:12s} {r['method']:28s} i2t R@1 {r['i2t_r1']:5.1f}  t2i R@1 {r['t2i_r1']:5.1f}  "
              f"{r['seconds']:8.3f} s  {r['pairs_scored']:>9d} pairs")
    print("wrote", ", ".join(map(str, write_table(table, a.out))))
    return 0


if __name__ == "__main__":
    from ..runtime import cli
    cli(main)
