"""The study's own training step, timed: the frozen step and the cached-prefix fine-tuning step, fp32 and bf16.

For the profile's config (k = 0, frozen encoders on cached features) and its fine-tuned arm (k =
``variants.FT_BLOCKS``: the last k CNN blocks and text layers trained on the cached frozen prefix), one
:class:`cookie_lib.train.Trainer` each, on the profile's real training split, and every step through
:func:`cookie_lib.step.train_step` exactly as ``Trainer._train_step`` calls it, with ``amp`` = "none"
(float32) and "bf16" (bfloat16 autocast):

* pairs/s = batch / median wall seconds of ``steps`` optimiser steps after ``warmup`` (the two precisions
  alternate step by step, so a busy machine slows both alike); the median process CPU seconds per step
  too, which other processes on the cores disturb less (one thread: CPU seconds = the step's own work);
* FLOPs of one step by FlopCounterMode (:func:`cookie_lib.study.bench.timing.count_flops`: matmul, conv,
  attention; the same count for both precisions), achieved FLOP/s = FLOPs / median step seconds;
* fraction of the matmul ceiling = achieved FLOP/s / the best FLOP/s of an n x n x n matmul in the same
  precision (float32, or bfloat16 tensors: what an autocast matmul runs), measured in the same process at
  the same thread count (:func:`cookie_lib.study.bench.timing.matmul_ceiling`); on wall seconds (step
  and ceiling), and on CPU seconds (step and ceiling), the second robust to other processes on the cores;
* a torch.profiler table per config (top ops by self CPU time), written to ``profile_study_step.txt``;
* every config under each of the cost settings of ``SETTINGS``: as profiled (``nn.Dropout``'s Bernoulli
  masks, one text batch: the committed runs'), with ``model.dropout_masks: bits`` (:mod:`cookie_lib.masks`;
  rows ``<arm> bits``), and with bits masks and ``train.text_buckets`` (:class:`cookie_lib.step.CookieStep`;
  rows ``<arm> bits buckets``).

Threads: ``threads`` (default 1, what each of the grid's ``workers`` training processes runs with).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from ...config import load_config
from ...runtime import atomic_write_text
from ...step import epoch_batches, step_generator, train_step
from .timing import Rows, count_flops, matmul_ceiling

AMPS = ("none", "bf16")
# The cost settings a step is timed under, keyed by the suffix of their rows ("" = the profile as it is). Both
# cuts are opt-in because each draws another random stream than the committed runs.
TEXT_BUCKETS = 2  # scripts/pilot_text_buckets.py: fastest frozen step, within 3-8 % of K = 4 for the fine-tuned one
SETTINGS = {"": {}, "bits": {"model.dropout_masks": "bits"},
            "bits buckets": {"model.dropout_masks": "bits", "train.text_buckets": TEXT_BUCKETS}}
DTYPE = {"none": torch.float32, "bf16": torch.bfloat16}
LABEL = {"none": "fp32", "bf16": "bf16"}


def step_closure(tr, amp: str):
    """One optimiser step of trainer ``tr`` through :func:`cookie_lib.step.train_step`, as
    ``Trainer._train_step`` runs it but with precision ``amp``; consecutive calls walk epoch 0's batches."""
    t = tr.cfg.train
    order = epoch_batches(len(tr.train_feats.records), t.seed, 0, t.batch_size * tr.world)
    counter = [0]

    def one():
        s = counter[0] % len(order)
        train_step(tr.ddp or tr.step_module, tr.optimizer, tr.scheduler, tr.train_feats, [order[s]],
                   step_generator(t.seed, 0, s), step=counter[0], batch_size=t.batch_size, rank=tr.rank, amp=amp,
                   ddp=tr.ddp is not None)
        counter[0] += 1
    return one


def time_alternating(fns: dict, steps: int, warmup: int) -> dict:
    """{name: (wall seconds, process CPU seconds) per call} of ``steps`` calls each, the names alternating
    call by call, after ``warmup`` calls each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: ([], []) for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[name][1].append(time.process_time() - c0)
            out[name][0].append(time.perf_counter() - w0)
    return out


def profile_table(fn, n: int) -> tuple[str, list[tuple[str, float]], float]:
    """torch.profiler over ``n`` calls of fn: (table sorted by self CPU time, top-8 (op, share of the
    self CPU total), self CPU seconds per call)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            fn()
    avg = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avg) or 1.0
    ranked = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return (avg.table(sort_by="self_cpu_time_total", row_limit=25), [(e.key, e.self_cpu_time_total / total)
                                                                     for e in ranked], total / 1e6 / n)


def study_step_benchmark(rows: Rows, profile: str, out: Path, sizes: dict, threads: int = 1) -> dict:
    """Time, count and profile the study's frozen and fine-tuned steps (module docstring); add rows, write
    ``out / "profile_study_step.txt"``, return {"<arm> <fp32|bf16>": {pairs_per_s, ...}, "ceilings": ...}."""
    from ...train import Trainer, load_corpus
    from ..variants import FINETUNE, FT_BLOCKS

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg0 = load_config(profile)
        corpus = load_corpus(cfg0)
        print(f"\n[5] the study's training step ({profile} profile, {len(corpus.split('train'))} training images, "
              f"batch {cfg0.train.batch_size}, {threads} thread(s)): frozen vs cached-prefix fine-tuning "
              f"(k = {FT_BLOCKS}), fp32 vs bf16 autocast")
        n = sizes["study_matmul"]
        cpu_dev = torch.device("cpu")
        ceilings = {amp: matmul_ceiling(cpu_dev, n, DTYPE[amp], repeats=10) for amp in AMPS}
        cpu_ceilings = {amp: matmul_ceiling(cpu_dev, n, DTYPE[amp], repeats=10, clock="cpu") for amp in AMPS}
        for amp in AMPS:
            setting, note = f"cpu matmul {n}^3 {LABEL[amp]}", f"best of 10, {threads} thread(s), {DTYPE[amp]} tensors"
            rows.add("study_step", setting, "ceiling_flops_per_s", ceilings[amp], "FLOP/s", f"{note}, wall seconds",
                     device="cpu", mode=LABEL[amp])
            rows.add("study_step", setting, "ceiling_flops_per_s_cpu_time", cpu_ceilings[amp], "FLOP/s",
                     f"{note}, process CPU seconds", device="cpu", mode=LABEL[amp])
        result, texts = {"ceilings": {LABEL[a]: c for a, c in ceilings.items()},
                         "ceilings_cpu_time": {LABEL[a]: c for a, c in cpu_ceilings.items()}, "threads": threads,
                         "ft_blocks": FT_BLOCKS}, []
        arms = [(a, o, k) for a, o in (("frozen", {}), (f"finetune_k{FT_BLOCKS}", FINETUNE)) for k in SETTINGS]
        for base, overrides, setting in arms:
            arm = f"{base} {setting}".rstrip()
            cfg = load_config(profile, {**overrides, **SETTINGS[setting], "train.num_threads": threads,
                                        "train.checkpoint_every": 0})
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                tr = Trainer(cfg, Path(tmp) / arm, progress=False, corpus=corpus)
                setup_s = time.perf_counter() - t0
                tr.step_module.train()
                fns = {amp: step_closure(tr, amp) for amp in AMPS}
                times = time_alternating(fns, sizes["study_steps"], sizes["study_warmup"])
                flops = count_flops(fns["none"])
                batch = cfg.train.batch_size * tr.world
                for amp in AMPS:
                    wall, cpu = (statistics.median(x) for x in times[amp])
                    achieved = flops / wall
                    r = {"pairs_per_s": batch / wall, "step_s": wall, "cpu_step_s": cpu, "flops_per_step": flops,
                         "achieved_flops_per_s": achieved, "fraction_of_ceiling": achieved / ceilings[amp],
                         "fraction_of_ceiling_cpu_time": flops / cpu / cpu_ceilings[amp], "setup_s": setup_s}
                    text, top, prof_s = profile_table(fns[amp], sizes["study_profile_steps"])
                    r["top_ops"] = top
                    result[f"{arm} {LABEL[amp]}"] = r
                    setting, cols = f"cpu {arm} {LABEL[amp]}", dict(device="cpu", mode=LABEL[amp], variant=arm)
                    note = (f"{cfg.data.dataset} batch {batch}, median of {sizes['study_steps']} steps after "
                            f"{sizes['study_warmup']} warm-up, fp32/bf16 alternating, {threads} thread(s)")
                    rows.add("study_step", setting, "pairs_per_s", r["pairs_per_s"], "pairs/s", note, **cols)
                    rows.add("study_step", setting, "step_s", wall, "s", note, show=False, **cols)
                    rows.add("study_step", setting, "cpu_step_s", cpu, "s", "median process CPU seconds per step",
                             show=False, **cols)
                    rows.add("study_step", setting, "flops_per_step", flops, "FLOP",
                             "FlopCounterMode: matmul/conv/attention only; conv backward = 2 x conv forward",
                             show=False, **cols)
                    rows.add("study_step", setting, "achieved_flops_per_s", achieved, "FLOP/s",
                             "FLOPs / median wall step time", **cols)
                    rows.add("study_step", setting, "fraction_of_ceiling", r["fraction_of_ceiling"], "ratio",
                             f"vs the {LABEL[amp]} matmul ceiling, same process and threads", **cols)
                    rows.add("study_step", setting, "fraction_of_ceiling_cpu_time",
                             r["fraction_of_ceiling_cpu_time"], "ratio",
                             "FLOPs / median CPU step seconds / the ceiling on CPU seconds", **cols)
                    rows.add("study_step", setting, "setup_s", setup_s, "s", "Trainer construction (loads the caches)",
                             show=False, **cols)
                    for op, share in top:
                        rows.add("study_step", f"{setting} profile", f"self_cpu_share:{op}", share, "fraction",
                                 "torch.profiler, share of total self CPU time", show=False, **cols)
                    texts.append(f"=== {arm} step, {LABEL[amp]} ({profile} profile, batch {batch}, {threads} "
                                 f"thread(s)), {sizes['study_profile_steps']} step(s), {prof_s:.3f} s self CPU per "
                                 f"step under the profiler, sorted by self CPU time ===\n{text}")
        atomic_write_text("\n\n".join(texts) + "\n", out / "profile_study_step.txt")
        for key, r in result.items():
            if isinstance(r, dict) and "top_ops" in r:
                print(f"  where the time goes ({key}, self CPU share): "
                      + ", ".join(f"{k} {100 * s:.0f}%" for k, s in r["top_ops"][:5]))
        return result
    finally:
        torch.set_num_threads(before)
