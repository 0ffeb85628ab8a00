#!/usr/bin/env python
"""Pilot: would training several seeds as one batched model make the study cheaper on this CPU?

K seeds of the profile's frozen-encoder COOKIE step (head + three losses, one AdamW step, fp32, one
thread, as each of the grid's training processes runs) are trained two ways on the same synthetic cached
tokens (B = train.batch_size images, 16 visual tokens of 96 channels, 16 text tokens of 384):

* one at a time: K ordinary models, one optimiser step each;
* batched: the K models' parameters stacked (``torch.func.stack_module_state``) and one step of
  ``torch.func.vmap(functional_call(...), randomness="different")`` over them, summed losses, one AdamW.

Printed: median process CPU seconds per seed-step of each, for both dropout mask kinds
(``model.dropout_masks``), and the ratio one-at-a-time / batched (> 1 = batching is cheaper). The two ways
alternate round by round, so a busy machine slows both alike. Synthetic tokens: the step's cost does not
depend on the values, and no cache has to be built.

    python scripts/pilot_seed_batching.py [--profile default] [--seeds 5] [--rounds 6]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from cookie_lib.config import load_config
from cookie_lib.losses import CookieLoss
from cookie_lib.masks import MASK_KINDS
from cookie_lib.model import CookieModel

VISUAL_DIM, TEXT_DIM, TOKENS = 96, 384, 16


class SeedStep(nn.Module):
    """One seed's frozen-encoder step: (views [2, B, T, C_v], captions [2, B, T, C_t], masks [2, B, T]) -> loss."""

    def __init__(self, cfg, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.model, self.loss = CookieModel(cfg.model, VISUAL_DIM, TEXT_DIM, TOKENS), CookieLoss(cfg.loss)

    def forward(self, views, caps, masks):
        ids = torch.arange(views.shape[1])
        emb = {"v1": self.model.embed_image(views[0]), "v2": self.model.embed_image(views[1]),
               "t1": self.model.embed_text(caps[0], masks[0]), "t2": self.model.embed_text(caps[1], masks[1])}
        return self.loss(emb, ids, ids)[0]


def batch(k: int, b: int, gen: torch.Generator):
    views = torch.randn(k, 2, b, TOKENS, VISUAL_DIM, generator=gen)
    caps = torch.randn(k, 2, b, TOKENS, TEXT_DIM, generator=gen)
    lens = torch.randint(3, TOKENS + 1, (k, 2, b), generator=gen)
    return views, caps, torch.arange(TOKENS) < lens[..., None]


def one_at_a_time(cfg, k: int, b: int):
    steps = [SeedStep(cfg, s).train() for s in range(k)]
    opts = [torch.optim.AdamW(s.parameters(), lr=1e-3) for s in steps]
    gen = torch.Generator().manual_seed(0)

    def run():
        views, caps, masks = batch(k, b, gen)
        for i, (s, opt) in enumerate(zip(steps, opts)):
            loss = s(views[i], caps[i], masks[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run


def batched(cfg, k: int, b: int):
    params, buffers = stack_module_state([SeedStep(cfg, s).train() for s in range(k)])
    template = copy.deepcopy(SeedStep(cfg, 0).train()).to("meta")
    losses = torch.func.vmap(lambda p, bu, *x: functional_call(template, (p, bu), x), randomness="different")
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def run():
        loss = losses(params, buffers, *batch(k, b, gen)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"seed batching pilot: {a.seeds} seeds, {a.profile} profile, fp32, 1 thread, median of {a.rounds} "
          f"rounds after 1 warm-up, process CPU seconds per seed-step")
    for masks in MASK_KINDS:
        cfg = load_config(a.profile, {"model.dropout_masks": masks, "train.amp": "none"})
        b = cfg.train.batch_size
        ways = {"one at a time": one_at_a_time(cfg, a.seeds, b), "batched (vmap)": batched(cfg, a.seeds, b)}
        times = {w: [] for w in ways}
        for r in range(a.rounds + 1):
            for w, run in ways.items():
                t0 = time.process_time()
                run()
                if r:
                    times[w].append((time.process_time() - t0) / a.seeds)
        med = {w: statistics.median(t) for w, t in times.items()}
        print(f"  masks {masks:9s}: " + ", ".join(f"{w} {s:.3f} s" for w, s in med.items())
              + f"; one at a time / batched = {med['one at a time'] / med['batched (vmap)']:.2f}")


if __name__ == "__main__":
    main()
