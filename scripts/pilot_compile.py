"""Pilot: the study's training step eager vs torch.compile (the whole CookieStep, Inductor on CPU; default
profile, seed 10, 1 thread, fp32). Usage: python scripts/pilot_compile.py STEPS VARIANT [VARIANT ...]
Output: results/machines/epyc-avx2-2026-12-02/pilot_compile.txt."""
import statistics
import sys
import tempfile
import time

import torch

from cookie_lib.study.variants import variant_config
from cookie_lib.train import Trainer
from cookie_lib.study.bench.studystep import step_closure



def median_step(fn, n: int) -> float:
    """Median wall seconds of n calls of fn."""
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


torch.set_num_threads(1)
n = int(sys.argv[1])
for v in sys.argv[2:]:
    cfg = variant_config("default", v, 10)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, progress=True)
        eager = step_closure(tr, "none")
        for _ in range(2):
            eager()
        te = median_step(eager, n)
        tr.step_module.compile()
        comp = step_closure(tr, "none")
        first, second = median_step(comp, 1), median_step(comp, 1)
        tc = median_step(comp, n)
    print(f"{v}: eager {te:.3f} s/step, compiled {tc:.3f} s/step ({te / tc:.2f}x); first compiled step {first:.1f} s, "
          f"second {second:.1f} s", flush=True)
