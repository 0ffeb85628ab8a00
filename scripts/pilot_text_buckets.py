"""Pilot: train.text_buckets K = 1, 2, 4, 8 on the study's frozen and fine-tuned steps (default profile, seed 10,
1 thread, fp32, the K settings alternating step by step). Usage:

    python scripts/pilot_text_buckets.py fill                               # padding of epoch 0's caption batches
    python scripts/pilot_text_buckets.py STEPS {bernoulli|bits} VARIANT [VARIANT ...]   # e.g. 8 bits cookie ft_cookie

(needs the default profile's caches). Chose cookie_lib.study.bench.studystep.TEXT_BUCKETS; output:
results/machines/epyc-avx2-2026-12-02/pilot_text_buckets.txt.
"""
import statistics
import sys
import tempfile

import torch

from cookie_lib.config import resolve_path
from cookie_lib.data import load_corpus
from cookie_lib.features import split_features
from cookie_lib.step import epoch_batches, length_buckets, sample_pairs, step_generator
from cookie_lib.study.bench.studystep import step_closure, time_alternating
from cookie_lib.study.bench.timing import count_flops, matmul_ceiling
from cookie_lib.study.variants import variant_config
from cookie_lib.train import Trainer

BUCKETS = (1, 2, 4, 8)


def fill() -> None:
    """Real tokens / computed tokens of the t1 and t2 caption batches of epoch 0, for each K."""
    cfg = variant_config("default", "cookie", 10)
    f = split_features(cfg, load_corpus(cfg).split("train"), "train", cfg.train.num_views,
                       resolve_path(cfg.data.dataset), None, progress=False)
    lengths = f.text_mask.sum(1).float()
    print(f"{len(lengths)} captions, {lengths.mean():.2f} real tokens on average, at most {int(lengths.max())}")
    for k in BUCKETS:
        real = computed = 0
        for s, idx in enumerate(epoch_batches(len(f.records), cfg.train.seed, 0, cfg.train.batch_size)):
            for rows in sample_pairs(f, idx, cfg.train.num_views, step_generator(cfg.train.seed, 0, s))[2:]:
                caption_lengths = f.text_mask[rows].sum(1)
                for chunk in length_buckets(caption_lengths, k):
                    real += int(caption_lengths[chunk].sum())
                    computed += int(caption_lengths[chunk].max()) * len(chunk)
        print(f"K = {k}: fill {real / computed:.3f} (real / computed text tokens)")


def timing(steps: int, masks: str, variants: list[str]) -> None:
    torch.set_num_threads(1)
    ceil = matmul_ceiling(torch.device("cpu"), 1024, torch.float32, repeats=10)
    print(f"ceiling {ceil / 1e9:.1f} GFLOP/s", flush=True)
    for v in variants:
        fns, flops = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for k in BUCKETS:
                cfg = variant_config("default", v, 10, {"train.text_buckets": k, "model.dropout_masks": masks,
                                                        "train.amp": "none"})
                tr = Trainer(cfg, f"{tmp}/{k}", progress=False)
                tr.step_module.train()
                fns[k] = step_closure(tr, "none")
                flops[k] = count_flops(fns[k])
            t = time_alternating(fns, steps, 2)
        base = statistics.median(t[1][0])
        for k in fns:
            w = statistics.median(t[k][0])
            print(f"{v} {masks} buckets {k}: {w:.3f} s/step ({base / w:.2f}x), {flops[k] / 1e9:.1f} GFLOP, "
                  f"{flops[k] / w / ceil:.0%} of ceiling", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["fill"]:
        fill()
    else:
        timing(int(sys.argv[1]), sys.argv[2], sys.argv[3:])
