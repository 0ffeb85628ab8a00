"""Pilot: train.text_buckets K = 1, 2, 4, 8 on the study's frozen and fine-tuned steps (default profile, seed 10,
1 thread, fp32, the K settings alternating step by step). Usage:
    python scripts/pilot_text_buckets.py STEPS {bernoulli|bits} VARIANT [VARIANT ...]
e.g. `python scripts/pilot_text_buckets.py 8 bits cookie ft_cookie` (needs the default profile's caches).
Chose cookie_lib.study.bench.studystep.TEXT_BUCKETS; output: results/machines/epyc-avx2-2026-12-02/pilot_text_buckets.txt."""
import sys, statistics, torch
from cookie_lib.study.variants import variant_config
from cookie_lib.train import Trainer, load_corpus
from cookie_lib.study.bench.studystep import step_closure, time_alternating
from cookie_lib.study.bench.timing import count_flops, matmul_ceiling
torch.set_num_threads(1)
steps = int(sys.argv[1]); masks = sys.argv[2]
ceil = matmul_ceiling(torch.device("cpu"), 1024, torch.float32, repeats=10)
print(f"ceiling {ceil/1e9:.1f} GFLOP/s", flush=True)
for v in sys.argv[3:]:
    fns, flops = {}, {}
    for k in (1, 2, 4, 8):
        cfg = variant_config("default", v, 10, {"train.text_buckets": k, "model.dropout_masks": masks, "train.amp": "none"})
        tr = Trainer(cfg, f"/tmp/pilot/b_{v}_{k}", progress=False)
        tr.step_module.train()
        fns[k] = step_closure(tr, "none")
        flops[k] = count_flops(fns[k])
    t = time_alternating(fns, steps, 2)
    base = statistics.median(t[1][0])
    for k in fns:
        w = statistics.median(t[k][0])
        print(f"{v} {masks} buckets {k}: {w:.3f} s/step ({base / w:.2f}x), {flops[k]/1e9:.1f} GFLOP, {flops[k]/w/ceil:.0%} of ceiling", flush=True)
