#!/usr/bin/env python
"""One-stream exhaustive retrieval of the study's cross-encoder measured end to end on a GPU at N = 1,000
images x 5,000 captions (all 5,000,000 joint passes), beside two-stream and re-ranking at the same N,
with the benchmark's code (:mod:`cookie_lib.study.bench.endtoend`), so the ratio at N = 1,000 is measured.

    python scripts/onestream_gpu.py [--n 1000] [--profile default] [--out results/onestream_gpu.json]  # CUDA
    python scripts/onestream_gpu.py --device cpu --n 5 --profile smoke --out /tmp/x.json              # a correctness run

Writes one JSON file (atomically): the device and its name, torch version, the models timed (trained runs of
``--profile`` / ``--seed`` when present, else untrained models of the same shapes, as the file says), N, M,
and per strategy every repeat's seconds and joint passes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=1000, help="images (captions = 5 n)")
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=None, help="the COOKIE / cross-encoder run timed (default: the "
                   "profile's first onestream_seeds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pair-batch", type=int, default=8192)
    p.add_argument("--out", default=str(ROOT / "results" / "onestream_gpu.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from cookie_lib.runtime import atomic_write_json, manifest
    from cookie_lib.study.bench import CAPS, STRATEGIES, gallery_inputs, load_pipeline, retrieve

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("onestream_gpu: ERROR no CUDA device (torch.cuda.is_available() is False); pass --device cpu "
              "with a small --n for a correctness run", file=sys.stderr)
        return 2
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    pipe = load_pipeline(a.profile, a.seed).to(device)
    images, captions = gallery_inputs(pipe.profile, a.n)
    for s in STRATEGIES:  # warm-up: kernels, allocator
        retrieve(pipe, images[:4], captions[:4 * CAPS], s, device, pair_batch=a.pair_batch)
    runs = {s: [retrieve(pipe, images, captions, s, device, pair_batch=a.pair_batch) for _ in range(a.repeats)]
            for s in STRATEGIES}
    out = manifest(None, script="scripts/onestream_gpu.py", device=str(device),
                   device_name=torch.cuda.get_device_name(device) if cuda else "cpu", models=pipe.label,
                   trained=pipe.trained, n_images=a.n, n_captions=CAPS * a.n, pair_batch=a.pair_batch, runs=runs)
    atomic_write_json(out, Path(a.out))
    med = {s: sorted(r["seconds"] for r in rs)[len(rs) // 2] for s, rs in runs.items()}
    print(f"N={a.n} x {CAPS * a.n} on {out['device_name']} ({pipe.label}): "
          + ", ".join(f"{s} {t:.3g} s" for s, t in med.items())
          + f"; ratio two/one {med['two-stream'] / med['one-stream']:.2e}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
