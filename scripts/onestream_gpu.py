#!/usr/bin/env python
"""One-stream exhaustive retrieval measured end to end (not extrapolated) at N = 1,000 images x 5,000
captions on a GPU: encoders + all 5,000,000 joint passes + top-10 both ways, beside the extrapolation
from a pair sample and the two-stream time at the same N, so the speed ratio at N = 1,000 is measured.

    python scripts/onestream_gpu.py [--n 1000] [--out results/onestream_gpu.json]   # CUDA, bf16 autocast off
    python scripts/onestream_gpu.py --device cpu --n 5 --out /tmp/x.json             # a correctness run

Writes one JSON file (atomically): device, torch version, n_images, n_captions, pairs, the measured
seconds (total, encoders, joint passes), the extrapolated seconds, and the two-stream seconds.
The one-stream model is randomly initialised: its time does not depend on its weights.
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
    p.add_argument("--pair-batch", type=int, default=8192)
    p.add_argument("--out", default=str(ROOT / "results" / "onestream_gpu.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from cookie_lib.runtime import atomic_write_json, manifest
    from cookie_lib.study.bench import CAPS_PER_IMAGE, QUICK, Rows, inference_benchmark, measure_exhaustive
    from cookie_lib.study.bench.inference import default_encoders

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("onestream_gpu: ERROR no CUDA device (torch.cuda.is_available() is False); pass --device cpu "
              "with a small --n for a correctness run", file=sys.stderr)
        return 2
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    encoders = default_encoders()
    sizes = dict(QUICK, ns=(a.n,), pair_batch=a.pair_batch)
    if cuda:
        sizes.update(enc_images=2048, enc_captions=1024, head_items=8192, pairs=262144, pool=1024)
    else:
        sizes.update(enc_images=8, enc_captions=8, head_items=32, pairs=64, pair_batch=32, pool=16)
    rows = Rows()
    inf = inference_benchmark(rows, device, sizes, encoders)
    measure_exhaustive(min(a.n, 4), device, encoders, a.pair_batch)  # warm-up: kernels, allocator
    res = measure_exhaustive(a.n, device, encoders, a.pair_batch)
    c, m = inf["unit_costs"], CAPS_PER_IMAGE * a.n
    extrap = a.n * c["image_encoder"] + m * c["text_encoder"] + res["pairs"] * c["one_stream_pair"]
    two = inf["curves"]["two_stream"][0]
    out = manifest(None, script="scripts/onestream_gpu.py", device=str(device),
                   device_name=torch.cuda.get_device_name(device) if cuda else "cpu",
                   n_images=a.n, n_captions=m, pairs=res["pairs"], pair_batch=a.pair_batch,
                   one_stream_measured_s=res["seconds"], one_stream_encode_s=res["encode_s"],
                   one_stream_joint_s=res["joint_s"], one_stream_extrapolated_s=extrap,
                   two_stream_s=two, ratio_two_over_one_measured=two / res["seconds"])
    atomic_write_json(out, Path(a.out))
    print(f"N={a.n} x {m} on {out['device_name']}: one-stream measured {res['seconds']:.2f} s "
          f"(extrapolated {extrap:.2f} s), two-stream {two:.3f} s, ratio {two / res['seconds']:.2e}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
