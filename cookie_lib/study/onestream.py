"""The one-stream baseline, trained and evaluated, so the speed claim has accuracy on both sides.

Training (image-text matching, ITM, with in-batch hard negatives, as in ALBEF/BLIP)::

    result = train_onestream(cfg, out_dir, seed=0)      # cfg: the same Config as COOKIE's pre-training

Each step takes B training images, one view and one caption each (:func:`cookie_lib.step.sample_pairs`,
the same draws COOKIE's step makes), from the cached encoder tokens of the same corpus. Hard negatives
come from the batch's own similarity: with u_i = mean-pooled projected image tokens and w_j =
masked-mean projected caption tokens of the model itself (detached, L2-normalised), s_ij = <u_i, w_j>;
for every image a negative caption is drawn with probability softmax_j(s_ij / 0.1) over captions whose
image has another key, and for every caption a negative image likewise. The 3B pairs (B positives, 2B
negatives) are scored by the joint transformer and trained with binary cross-entropy on the match logit

    L = BCE(score(v_i, t_i), 1) + BCE(score(v_i, t_neg(i)), 0) + BCE(score(v_neg(j), t_j), 0)   (mean over 3B)

with the library's optimiser groups and schedule (:func:`cookie_lib.step.build_optimizer`,
:func:`cookie_lib.step.lr_lambda`) for the same number of optimiser steps and images per step as COOKIE
(``train.epochs x (n_train // train.batch_size)``, or ``train.max_steps``): a comparable budget.
``out_dir/result.json`` (config, seed, history, time) and ``out_dir/onestream.pt`` are written atomically.

Evaluation (:func:`speed_accuracy_table`), R@1 both ways with the pessimistic ranks of
:mod:`cookie_lib.metrics`, seconds over the cached encoder tokens (the encoders cost the same in every row
and are left out), pairs scored by the joint model:

* two-stream: COOKIE embeddings, dot products;
* two-stream + re-rank top k: each image's k best captions and each caption's k best images (by COOKIE)
  re-scored by the one-stream model; the rest keep their order below them;
* one-stream exhaustive: every pair scored (only on a gallery small enough for CPU: ``n_exhaustive`` images).

CLI: ``python -m cookie_lib.study.onestream train --profile P --out DIR [--seed S] [--steps K]`` and
``python -m cookie_lib.study.onestream table --profile P --out DIR --cookie-checkpoint CKPT --onestream PT``
(writes speed_accuracy.csv/.json and fig_speed_accuracy.png). The module is a little over 350 lines
because it holds one baseline end to end (trainer, evaluation, table, CLI) for the notebook to import.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import Config, config_from_dict, load_config, resolve_path
from ..features import SplitFeatures, split_features
from ..model import CookieModel, OneStreamModel, masked_mean
from ..runtime import atomic_save, atomic_write_json, atomic_write_text, manifest, pick_device, seed_everything
from ..step import build_optimizer, epoch_batches, lr_lambda, sample_pairs, step_generator
from .bench.inference import score_pairs

HARD_NEGATIVE_TEMPERATURE = 0.1
TABLE_COLUMNS = ["gallery", "n_images", "n_captions", "method", "k", "i2t_r1", "t2i_r1", "seconds", "pairs_scored"]


# ----------------------------------------------------------------------------- training
def _pooled(model: OneStreamModel, img: torch.Tensor, txt: torch.Tensor, mask: torch.Tensor):
    """The model's own unimodal views for hard-negative mining: [B, d] image and caption vectors, unit norm."""
    u = masked_mean(model.visual_proj(img), None)
    w = masked_mean(model.text_proj(txt), mask)
    return F.normalize(u, dim=-1), F.normalize(w, dim=-1)


def hard_negatives(sim: torch.Tensor, keys: torch.Tensor, gen: torch.Generator, temperature: float =
                   HARD_NEGATIVE_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one negative caption per image and one negative image per caption from the batch.

    sim [B, B] (image i, caption j), keys [B] (pair i's key; same key = not a negative). Returns
    (neg_caption [B], neg_image [B]) with P(j | i) = softmax_j(sim_ij / T) over {j : keys_j != keys_i}.
    A row with no negative (all keys equal) falls back to a uniform draw among the others.
    """
    b = sim.shape[0]
    if b < 2:
        raise ValueError(f"hard_negatives: a batch of {b} pair(s) has no negative; use train.batch_size >= 2")
    allowed = keys[:, None] != keys[None, :]
    fallback = ~torch.eye(b, dtype=torch.bool, device=sim.device)
    allowed = torch.where(allowed.any(1, keepdim=True), allowed, fallback)
    logits = (sim.float() / temperature).masked_fill(~allowed, float("-inf"))
    probs_i2t = torch.softmax(logits, dim=1).cpu()
    probs_t2i = torch.softmax(logits.T, dim=1).cpu()
    neg_cap = torch.multinomial(probs_i2t, 1, generator=gen).squeeze(1)
    neg_img = torch.multinomial(probs_t2i, 1, generator=gen).squeeze(1)
    return neg_cap.to(sim.device), neg_img.to(sim.device)


def itm_loss(model: OneStreamModel, img: torch.Tensor, txt: torch.Tensor, mask: torch.Tensor,
             keys: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """ITM loss of one batch of B positive pairs (img [B, T_v, C_v], txt [B, T, C_t], mask [B, T]) with
    2B mined negatives; returns (loss, {"itm": loss, "itm_acc": accuracy of sign(logit) in %})."""
    b = img.shape[0]
    with torch.no_grad():
        u, w = _pooled(model, img, txt, mask)
        neg_cap, neg_img = hard_negatives(u @ w.T, keys, gen)
    all_img = torch.cat([img, img, img[neg_img]])
    all_txt = torch.cat([txt, txt[neg_cap], txt])
    all_mask = torch.cat([mask, mask[neg_cap], mask])
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).to(img.device)
    logits = model.score(all_img, all_txt, all_mask)
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
    acc = ((logits > 0).float() == labels).float().mean()
    return loss, {"itm": float(loss.detach()), "itm_acc": 100.0 * float(acc)}


def build_onestream(cfg: Config, feats: SplitFeatures) -> OneStreamModel:
    """A OneStreamModel of COOKIE's head size (cfg.model dim/depth/heads) over the cached token widths."""
    return OneStreamModel(cfg.model, feats.image_tokens.shape[-1], feats.text_tokens.shape[-1],
                          feats.image_tokens.shape[-2])


def train_onestream(cfg: Config, out_dir: str | Path, seed: int = 0, *, steps: int | None = None,
                    train_feats: SplitFeatures | None = None, device: str | None = None,
                    log_every: int = 10) -> dict:
    """Train the one-stream model on the cached tokens of the config's training split (see module
    docstring) and write ``out_dir/result.json`` and ``out_dir/onestream.pt``. ``steps`` None = COOKIE's
    budget. Returns the result dict: {"kind", "seed", "config", "steps", "batch_size", "history",
    "train_seconds", "final": last history record}."""
    from ..train import load_corpus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    dev = pick_device(device or t.device)
    if train_feats is None:
        corpus = load_corpus(cfg)
        train_feats = split_features(cfg, corpus.split("train"), "train", t.num_views,
                                     resolve_path(cfg.data.dataset), progress=False)
    n = len(train_feats.records)
    per_epoch = len(epoch_batches(n, seed, 0, t.batch_size))
    total = steps if steps is not None else (t.max_steps or per_epoch * t.epochs)
    if total < 1:
        raise ValueError(f"train_onestream: steps must be >= 1, got {total}")
    seed_everything(seed)
    model = build_onestream(cfg, train_feats).to(dev).train()
    opt = build_optimizer([model], [], t)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(t.warmup_steps, total), total, t.min_lr_ratio))
    history, t0, step = [], time.perf_counter(), 0
    while step < total:
        epoch = step // per_epoch
        for s, idx in enumerate(epoch_batches(n, seed, epoch, t.batch_size)):
            if step >= total:
                break
            gen = step_generator(seed, epoch, s)
            views, _, c1, _ = sample_pairs(train_feats, idx, train_feats.num_views, gen)
            img = train_feats.image_tokens[views, idx].float().to(dev)
            mask = train_feats.text_mask[c1]
            width = int(mask.sum(1).max())
            txt = train_feats.text_tokens[c1, :width].float().to(dev)
            loss, rec = itm_loss(model, img, txt, mask[:, :width].to(dev), train_feats.keys[idx].to(dev), gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_onestream: non-finite ITM loss at step {step} ({out})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % log_every == 0 or step == total - 1:
                history.append({"step": step, **rec, "lr": sched.get_last_lr()[0]})
            step += 1
    secs = time.perf_counter() - t0
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "seed": seed}, out / "onestream.pt")
    result = manifest(cfg.to_dict(), kind="onestream_itm", seed=seed, steps=total, batch_size=t.batch_size,
                      hard_negative_temperature=HARD_NEGATIVE_TEMPERATURE, history=history,
                      train_seconds=secs, final=history[-1])
    atomic_write_json(result, out / "result.json")
    return result


def load_onestream(path: str | Path, feats: SplitFeatures) -> OneStreamModel:
    """The OneStreamModel saved by :func:`train_onestream` (``onestream.pt``), in eval mode."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = build_onestream(config_from_dict(blob["config"]), feats)
    model.load_state_dict(blob["model"])
    return model.eval()


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def pessimistic_ranks(scores: torch.Tensor, positive: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """rank_q = #{negatives g : S_qg >= max_{p positive} S_qp} (0-based, ties count against the query),
    the rank of :mod:`cookie_lib.metrics`, from a score matrix S [Q, G] and a positive mask [Q, G]."""
    out = []
    for s in range(0, scores.shape[0], chunk):
        sc, pos = scores[s:s + chunk], positive[s:s + chunk]
        best = sc.masked_fill(~pos, float("-inf")).amax(1, keepdim=True)
        out.append(((sc >= best) & ~pos).sum(1))
    return torch.cat(out)


def _r1(scores: torch.Tensor, positive: torch.Tensor) -> float:
    return 100.0 * float((pessimistic_ranks(scores, positive) < 1).double().mean())


def rerank(two: torch.Tensor, pair_scores: dict[tuple[int, int], float], top: torch.Tensor) -> torch.Tensor:
    """Re-ranked score matrix [Q, G]: each query's ``top`` [Q, k] candidates get their one-stream score
    (``pair_scores[(q, g)]``), placed above every other candidate, which keeps its two-stream order."""
    k = top.shape[1]
    os_vals = torch.tensor([[pair_scores[(q, int(g))] for g in row] for q, row in enumerate(top.tolist())],
                           dtype=torch.float64).view(-1, k)
    out = two.double().clone()
    shift = float(out.max() - os_vals.min()) + 1.0  # every other candidate ends strictly below the top k
    out -= shift
    out.scatter_(1, top, os_vals)
    return out


def _score_set(model: OneStreamModel, feats: SplitFeatures, rows: torch.Tensor, owner_imgs: list[int],
               pairs: list[tuple[int, int]], device, batch: int = 1024) -> dict:
    """One-stream scores of (image index, caption column) pairs; returns {pair: score}."""
    if not pairs:
        return {}
    ii = torch.tensor([owner_imgs[p[0]] for p in pairs])
    jj = rows[torch.tensor([p[1] for p in pairs])]
    img = feats.image_tokens[0].float().to(device)
    txt, mask = feats.text_tokens.float().to(device), feats.text_mask.to(device)
    vals = score_pairs(model, img, txt, mask, ii.to(device), jj.to(device), batch).double().cpu()
    return dict(zip(pairs, vals.tolist()))


def gallery_eval(cookie: CookieModel, onestream: OneStreamModel, feats: SplitFeatures, images: list[int],
                 ks=(10, 50), exhaustive: bool = False, device="cpu", label: str = "") -> list[dict]:
    """Rows of :data:`TABLE_COLUMNS` on the gallery of ``images`` (indices into feats.records) and all
    their captions: two-stream, re-rank top k for each k, and one-stream exhaustive when asked."""
    from ..evaluate import embed_split

    device = torch.device(device)
    cookie.eval(), onestream.eval()
    rows_all, owner_all = feats.caption_index()
    sel = set(images)
    keep = [c for c in range(len(owner_all)) if int(owner_all[c]) in sel]
    rows = rows_all[keep]
    local = {img: n for n, img in enumerate(images)}
    owner = torch.tensor([local[int(owner_all[c])] for c in keep])
    keys = [feats.records[i].key for i in images]
    key_id = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    img_codes = torch.tensor([key_id[k] for k in keys])
    pos = img_codes[:, None] == img_codes[owner][None, :]  # [N, M]
    n, m = len(images), len(rows)
    base = dict(gallery=label, n_images=n, n_captions=m)

    t0 = time.perf_counter()
    img_emb, txt_emb = embed_split(cookie, feats, device)  # all images/texts of the split (cached tokens)
    img_emb, txt_emb = img_emb[torch.tensor(images)], txt_emb[rows]
    two = img_emb @ txt_emb.T
    t_two = time.perf_counter() - t0
    out = [dict(base, method="two-stream", k=0, i2t_r1=_r1(two, pos), t2i_r1=_r1(two.T, pos.T),
                seconds=t_two, pairs_scored=0)]
    for k in ks:
        k_i2t, k_t2i = min(k, m), min(k, n)
        t0 = time.perf_counter()
        top_i2t = two.topk(k_i2t, dim=1).indices  # [N, k] caption columns
        top_t2i = two.T.topk(k_t2i, dim=1).indices  # [M, k] image indices
        pairs = {(q, int(g)) for q, row in enumerate(top_i2t.tolist()) for g in row}
        pairs |= {(int(i), c) for c, row in enumerate(top_t2i.tolist()) for i in row}
        scored = _score_set(onestream, feats, rows, images, sorted(pairs), device)
        r_i2t = rerank(two, scored, top_i2t)
        r_t2i = rerank(two.T, {(c, i): v for (i, c), v in scored.items()}, top_t2i)
        secs = t_two + time.perf_counter() - t0
        out.append(dict(base, method=f"two-stream + re-rank top {k}", k=k, i2t_r1=_r1(r_i2t, pos),
                        t2i_r1=_r1(r_t2i, pos.T), seconds=secs, pairs_scored=len(pairs)))
    if exhaustive:
        t0 = time.perf_counter()
        every = [(i, c) for i in range(n) for c in range(m)]
        scored = _score_set(onestream, feats, rows, images, every, device)
        full = torch.tensor([scored[p] for p in every], dtype=torch.float64).view(n, m)
        secs = time.perf_counter() - t0
        out.append(dict(base, method="one-stream exhaustive", k=m, i2t_r1=_r1(full, pos), t2i_r1=_r1(full.T, pos.T),
                        seconds=secs, pairs_scored=n * m))
    return out


def speed_accuracy_table(cookie: CookieModel, onestream: OneStreamModel, test_feats: SplitFeatures,
                         ks=(10, 50), n_exhaustive: int = 100, seed: int = 0, device="cpu") -> list[dict]:
    """The speed/accuracy table: on a seeded subset of ``n_exhaustive`` test images (every method,
    one-stream exhaustive included) and on the full test gallery (two-stream and re-rank top k)."""
    n = len(test_feats.records)
    gen = torch.Generator().manual_seed(seed)
    small = sorted(torch.randperm(n, generator=gen)[:min(n_exhaustive, n)].tolist())
    rows = gallery_eval(cookie, onestream, test_feats, small, ks, exhaustive=True, device=device,
                        label=f"subset {len(small)}")
    rows += gallery_eval(cookie, onestream, test_feats, list(range(n)), ks, exhaustive=False, device=device,
                         label="full test")
    return rows


def pareto_figure(table: list[dict]):
    """R@1 (mean of i2t and t2i) against seconds (log x) per gallery, one marker per method."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({r["gallery"] for r in table}), figsize=(10, 4), squeeze=False)
    for ax, gallery in zip(axes[0], dict.fromkeys(r["gallery"] for r in table)):
        rs = [r for r in table if r["gallery"] == gallery]
        for r in rs:
            ax.scatter(r["seconds"], (r["i2t_r1"] + r["t2i_r1"]) / 2, label=r["method"])
        ax.set_xscale("log")
        ax.set_xlabel("seconds over cached encoder tokens (log)")
        ax.set_ylabel("R@1, mean of both directions (%)")
        ax.set_title(f"{gallery}: {rs[0]['n_images']} images x {rs[0]['n_captions']} captions", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_table(table: list[dict], out: str | Path) -> list[Path]:
    """``speed_accuracy.csv`` (columns :data:`TABLE_COLUMNS`), ``speed_accuracy.json`` and
    ``fig_speed_accuracy.png`` under ``out``, all atomic."""
    import csv
    import io

    import matplotlib.pyplot as plt

    from .plots import save_figure

    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
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


def load_cookie(checkpoint: str | Path, feats: SplitFeatures) -> CookieModel:
    """The CookieModel of a Trainer checkpoint (``checkpoint.pt``: step_module state + config), eval mode."""
    blob = torch.load(Path(checkpoint), map_location="cpu", weights_only=False)
    cfg = config_from_dict(blob["config"])
    model = CookieModel(cfg.model, feats.image_tokens.shape[-1], feats.text_tokens.shape[-1],
                        feats.image_tokens.shape[-2])  # T_v of the cache (depends on visual_layer too)
    state = {k[len("model."):]: v for k, v in blob["step_module"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.study.onestream",
                                description="Train the one-stream ITM baseline; or build the speed/accuracy table.")
    sub = p.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train_onestream -> OUT/result.json, OUT/onestream.pt")
    tb = sub.add_parser("table", help="speed/accuracy table + Pareto figure from a COOKIE checkpoint and a one-stream model")
    for a in (tr, tb):
        a.add_argument("--profile", default="default")
        a.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
        a.add_argument("--out", required=True)
        a.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int, default=None, help="default: COOKIE's budget")
    tb.add_argument("--cookie-checkpoint", required=True, help="a Trainer checkpoint.pt")
    tb.add_argument("--onestream", required=True, help="onestream.pt from the train command")
    tb.add_argument("--n-exhaustive", type=int, default=100)
    a = p.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfg = load_config(a.profile, overrides)
    if a.cmd == "train":
        res = train_onestream(cfg, a.out, a.seed, steps=a.steps)
        print(f"one-stream ITM: {res['steps']} steps in {res['train_seconds']:.1f} s, final {res['final']}")
        return 0
    from ..train import load_corpus
    corpus = load_corpus(cfg)
    test = split_features(cfg, corpus.split("test"), "test", 1, resolve_path(cfg.data.dataset), progress=False)
    table = speed_accuracy_table(load_cookie(a.cookie_checkpoint, test), load_onestream(a.onestream, test), test,
                                 n_exhaustive=a.n_exhaustive, seed=a.seed)
    for r in table:
        print(f"  {r['gallery']:12s} {r['method']:28s} i2t R@1 {r['i2t_r1']:5.1f}  t2i R@1 {r['t2i_r1']:5.1f}  "
              f"{r['seconds']:8.3f} s  {r['pairs_scored']:>9d} pairs")
    print("wrote", ", ".join(map(str, write_table(table, a.out))))
    return 0


if __name__ == "__main__":
    from ..runtime import cli
    cli(main)
