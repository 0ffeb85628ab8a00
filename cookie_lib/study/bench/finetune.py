"""Cost/benefit pilot of cached-prefix fine-tuning (cookie_lib.prefix): the frozen step vs k = 1, 2, ...

    python -m cookie_lib.study.bench.finetune [--profile default] [--k 1 2] [--steps 40] [--time-steps 8]
                                              [--threads 1] [--train-images N] [--val-images N] [--out FILE.json]

For the frozen config and each k (the last k CNN blocks and the last k text layers trained on the cached
prefix, at the grid's FT_ENCODER_LR), on the profile's real pre-training corpus and through
:class:`cookie_lib.train.Trainer` (so exactly what a study run executes):

* cost: the median wall time of ``--time-steps`` optimiser steps after 2 warm-up steps -> pairs/s
  (= images/s; each image brings 2 views and 2 captions), FLOPs of one step counted by FlopCounterMode
  (matmul/conv/attention only, so a lower bound), and achieved FLOP/s as a fraction of the machine's float32
  matmul ceiling measured in the same process (``timing.matmul_ceiling``, n = 1024);
* benefit: a short run of ``--steps`` optimiser steps (a fraction of an epoch; the LR schedule compressed
  into it, the same for every config) and its validation metrics (mR = mean of R@1/5/10 both ways, RSUM).

Building the prefix caches the first time costs what caching a frozen encoder costs (encoding every view
and caption once); they are reused by the study runs of the same k. Threads default to 1, as each of the
grid's ``workers`` runs single-threaded. ``--train-images`` / ``--val-images`` pilot on the first N images
of each split (seeded order), which cuts the one-off caching cost on a busy machine; the step's cost does
not depend on N.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ...config import load_config
from ...data import load_corpus
from ...step import epoch_batches, step_generator
from ...train import Trainer
from .timing import count_flops, matmul_ceiling, timed


def finetune_overrides(k: int, encoder_lr: float | None = None) -> dict:
    """Config overrides of the fine-tuned arm with k blocks/layers (k = 0: the frozen config)."""
    from ..variants import FT_ENCODER_LR

    if k == 0:
        return {}
    return {"model.finetune_visual_blocks": k, "model.finetune_text_layers": k,
            "train.encoder_lr": FT_ENCODER_LR if encoder_lr is None else encoder_lr}


def measure(profile: str, k: int, steps: int, time_steps: int, threads: int, corpus=None) -> dict:
    """Cost and benefit of one config (see the module docstring); returns a dict of numbers."""
    torch.set_num_threads(threads)
    cfg = load_config(profile, {**finetune_overrides(k), "train.max_steps": steps, "train.num_threads": threads,
                                "train.checkpoint_every": 0})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, Path(tmp) / "timing", progress=False, corpus=corpus)
        setup_s = time.perf_counter() - t0
        t = cfg.train
        order = epoch_batches(len(tr.train_feats.records), t.seed, 0, t.batch_size)
        counter = [0]

        def one():
            s = counter[0] % len(order)
            tr._train_step(counter[0], [order[s]], step_generator(t.seed, 0, s))
            counter[0] += 1

        tr.step_module.train()
        med = statistics.median(timed(one, torch.device("cpu"), repeats=time_steps, warmup=2))
        flops = count_flops(one)
        ceiling = matmul_ceiling(torch.device("cpu"), 1024)
        # benefit: a fresh trainer (same seed, untouched weights) for the short run
        tr = Trainer(cfg, Path(tmp) / "pilot", progress=False, corpus=corpus)
        t1 = time.perf_counter()
        state = tr.run()
        run_s = time.perf_counter() - t1
    trainable = sum(p.numel() for m in tr.model.encoder_tails() for p in m.parameters() if p.requires_grad)
    val = state.epochs[-1] if state.epochs else {}
    return {"k": k, "pairs_per_s": t.batch_size / med, "step_s": med, "flops_per_step": flops,
            "achieved_flops_per_s": flops / med, "matmul_ceiling_flops_per_s": ceiling,
            "fraction_of_ceiling": flops / med / ceiling, "tail_parameters": trainable,
            "pilot_steps": steps, "steps_per_epoch": tr.steps_per_epoch, "pilot_seconds": run_s,
            "setup_seconds": setup_s, "val_rsum": val["rsum"], "val_mr": val["rsum"] / 6, "threads": threads,
            "val": {k: v for k, v in val.items() if k != "seconds"}}


def subset(corpus, train: int, val: int, seed: int = 0):
    """The corpus with a seeded random ``train`` / ``val`` images of those splits (0 = all of it)."""
    import dataclasses
    import random

    keep = []
    for split, n in (("train", train), ("val", val)):
        recs = corpus.split(split)
        keep += recs if not n or n >= len(recs) else random.Random(seed).sample(recs, n)
    ids = {r.imgid for r in keep}
    return dataclasses.replace(corpus, records=[r for r in corpus.records if r.imgid in ids])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.bench.finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2], help="blocks/layers fine-tuned (0 = frozen is always run)")
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps of the benefit pilot")
    ap.add_argument("--time-steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=0, help="pilot on this many train images (0 = all)")
    ap.add_argument("--val-images", type=int, default=0, help="validate on this many val images (0 = all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    corpus = subset(load_corpus(load_config(a.profile)), a.train_images, a.val_images)
    print(f"corpus: {len(corpus.split('train'))} train / {len(corpus.split('val'))} val images", flush=True)
    rows = []
    for k in [0] + [k for k in a.k if k]:
        r = measure(a.profile, k, a.steps, a.time_steps, a.threads, corpus)
        rows.append(r)
        print(json.dumps(r), flush=True)
        print(f"k={k}: {r['pairs_per_s']:.1f} pairs/s ({r['step_s']:.3f} s/step, {r['fraction_of_ceiling']:.1%} of the "
              f"{r['matmul_ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s matmul ceiling), tail parameters "
              f"{r['tail_parameters']:,}; after {r['pilot_steps']} steps ({r['pilot_steps'] / r['steps_per_epoch']:.2f} "
              f"epoch): val mR {r['val_mr']:.2f}, RSUM {r['val_rsum']:.1f}; setup {r['setup_seconds']:.0f} s", flush=True)
    frozen = rows[0]
    for r in rows[1:]:
        print(f"k={r['k']}: step cost x{frozen['pairs_per_s'] / r['pairs_per_s']:.2f} of the frozen step, "
              f"val mR {r['val_mr'] - frozen['val_mr']:+.2f} vs frozen")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
