"""How long the study's training would take on this machine, measured before it is started.

For every distinct training config of a profile's study (:func:`cookie_lib.study.grid.study_jobs`: each
variant once, its seeds share the cost) one :class:`cookie_lib.train.Trainer` is built on the profile's
training split and timed at one thread, as each of the grid's ``workers`` processes trains:

    step_s(v)   = median wall seconds of ``steps`` optimiser steps after ``warmup`` (Trainer._train_step),
                  the cost settings' steps alternating call by call
    val_s(v)    = wall seconds of one validation retrieval (Trainer.evaluate), run every ``eval_every`` epochs
    run_s(v)    = epochs(v) x (steps_per_epoch x step_s(v) + val_s(v) / eval_every)
    training_s  = sum over the study's (variant, seed) jobs of run_s(variant) / workers

``training_s`` assumes the jobs pack perfectly onto the workers and leaves out the feature caches, the
one-stream cross-encoders of the speed claim, the benchmark and the notebooks. Each config is timed as the
profile gives it (``train.amp`` resolved on this machine) and under each opt-in cost cut of
:data:`cookie_lib.study.bench.studystep.SETTINGS` (bits masks; bits masks + text buckets).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from ...data import load_corpus
from ...train import Trainer
from ..grid import study_jobs
from ..profile import load_run_profile
from ..variants import variant_config
from .studystep import SETTINGS, step_closure, time_alternating

PROJECTED = {suffix or "as profiled": extra for suffix, extra in SETTINGS.items()}  # setting name -> overrides


def time_settings(cfgs: dict, corpus, steps: int, warmup: int) -> dict:
    """{setting: {"step_s", "val_s", "steps_per_epoch"}} of one variant's configs, one per cost setting (see
    the module docstring): the settings' steps alternate call by call
    (:func:`cookie_lib.study.bench.studystep.time_alternating`), so a drift of the machine's speed slows them
    alike, each at its config's own ``train.amp``."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: Trainer(cfg, Path(tmp) / str(i), progress=False, corpus=corpus)
                    for i, (name, cfg) in enumerate(cfgs.items())}
        for tr in trainers.values():
            tr.step_module.train()
        times = time_alternating({n: step_closure(tr, tr.cfg.train.amp) for n, tr in trainers.items()}, steps, warmup)
        out = {}
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            tr.evaluate()
            t = tr.cfg.train
            out[name] = {"step_s": statistics.median(times[name][0]), "val_s": time.perf_counter() - t0,
                         "steps_per_epoch": len(tr.train_feats.records) // (t.batch_size * tr.world)}
    return out


def project_study(profile: str, steps: int = 6, warmup: int = 2, progress=print) -> dict:
    """The projected training time of ``profile``'s study on this machine (module docstring), per cost
    setting (``PROJECTED``): {"configs": {variant: {setting: timing}}, "jobs": [[variant, seed], ...], "workers",
    "training_s": {setting: seconds}, "amp": the resolved train.amp}."""
    study = load_run_profile(profile)
    jobs = study_jobs(study)
    variants = list(dict.fromkeys(v for v, _ in jobs))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _project(profile, study, jobs, variants, steps, warmup, progress)
    finally:
        torch.set_num_threads(before)


def _project(profile, study, jobs, variants, steps, warmup, progress) -> dict:
    corpus = load_corpus(variant_config(profile, variants[0], jobs[0][1]))
    configs, run_s = {}, {k: {} for k in PROJECTED}
    for v in variants:
        seed = next(s for w, s in jobs if w == v)
        cfgs = {name: variant_config(profile, v, seed, {**extra, "train.num_threads": 1, "train.checkpoint_every": 0})
                for name, extra in PROJECTED.items()}
        configs[v] = time_settings(cfgs, corpus, steps, warmup)
        for name, cfg in cfgs.items():
            r = configs[v][name]
            r["epochs"] = cfg.train.epochs
            r["run_s"] = cfg.train.epochs * (r["steps_per_epoch"] * r["step_s"] + r["val_s"] / cfg.train.eval_every)
            run_s[name][v] = r["run_s"]
            progress(f"  {v:22s} {name:12s} {r['step_s']:.3f} s/step x {r['steps_per_epoch']} steps + "
                     f"{r['val_s']:.1f} s validation, x {r['epochs']} epochs = {r['run_s'] / 60:5.1f} min per run")
    workers = max(1, study.workers)
    total = {name: sum(run_s[name][v] for v, _ in jobs) / workers for name in PROJECTED}
    return {"configs": configs, "jobs": [list(j) for j in jobs], "workers": workers, "training_s": total,
            "amp": variant_config(profile, variants[0], jobs[0][1]).train.amp, "steps": steps, "warmup": warmup}
