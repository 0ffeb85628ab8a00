"""The replication grid: model variants x seeds, each trained once, evaluated on the test split, and
summarised into tables that answer the paper's claims.

A finished run leaves ``runs/<profile>/<variant>/seed<k>/result.json`` (written atomically, holding its
config); ``run_grid`` loads such a run instead of retraining it when the config matches, and resumes an
interrupted one from its checkpoint, so rerunning the notebooks or ``run_all.sh`` redoes only what is
missing.

    from cookie_lib.experiments import run_grid, LOSS_ABLATION
    df = run_grid("default", LOSS_ABLATION, seeds=[0, 1, 2])
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from tqdm.auto import tqdm

from .config import Config, load_config, resolve_path
from .data import KarpathyCorpus
from .evaluate import frozen_baseline
from .features import split_features
from .runtime import atomic_write_json, manifest
from .train import Trainer, load_corpus

# Each variant is a set of dotted overrides of the profile; "cookie" is the full model.
VARIANTS: dict[str, dict] = {
    "cookie": {},  # shared head (L=2) + all three losses
    "no_cross_modal": {"loss.cross_modal": 0.0},
    "no_visual": {"loss.visual": 0.0},
    "no_textual": {"loss.textual": 0.0},
    "cross_modal_only": {"loss.visual": 0.0, "loss.textual": 0.0},  # a CLIP-style dual encoder with a head
    "not_shared": {"model.shared": False},  # two stacks of identical shape
    "depth_0": {"model.depth": 0},  # no head: projections + pooling only
    "depth_1": {"model.depth": 1},
    "depth_4": {"model.depth": 4},
}
LOSS_ABLATION = ["cookie", "no_cross_modal", "no_visual", "no_textual", "cross_modal_only"]
HEAD_ABLATION = ["cookie", "not_shared", "depth_0", "depth_1", "depth_4"]
DEPTH = {"depth_0": 0, "depth_1": 1, "cookie": 2, "depth_4": 4}
# Fine-tuned counterparts (the last blocks of the CNN train live): does the cached setting decide the conclusions?
FINETUNE: dict[str, dict] = {
    "cookie_ft": {"model.freeze_visual": 3},
    "cross_modal_only_ft": {"model.freeze_visual": 3, "loss.visual": 0.0, "loss.textual": 0.0},
}
FROZEN = "frozen_encoders"  # pseudo-variant: the pretrained encoders alone, mean-pooled (unimodal tasks only)

# The headline metric per task: cross-modal RSUM, cross-design image R@1, label->keywords text R@1.
TASK_METRICS = {"cross-modal retrieval": "rsum", "image retrieval": "img_r1", "text matching": "txt_r1"}
METRIC_COLUMNS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
                  "img_r1", "img_r5", "img_map", "txt_r1", "txt_r5", "txt_mrr"]


def run_dir(profile: str, variant: str, seed: int, runs_root: str | Path = "runs") -> Path:
    return resolve_path(runs_root) / Path(profile).stem / variant / f"seed{seed}"


def variant_config(profile: str, variant: str, seed: int, extra: dict | None = None) -> Config:
    overrides = {**VARIANTS.get(variant, FINETUNE.get(variant, {})), **(extra or {}), "train.seed": seed}
    if variant not in VARIANTS and variant not in FINETUNE:
        raise KeyError(f"unknown variant {variant!r}; choose from {list(VARIANTS) + list(FINETUNE)}")
    return load_config(profile, overrides)


def run_one(profile: str, variant: str, seed: int, corpus: KarpathyCorpus | None = None,
            extra: dict | None = None, runs_root: str | Path = "runs", progress: bool = True) -> dict:
    """Train one (variant, seed), evaluate it on the test split; reuse a finished run with the same config."""
    cfg = variant_config(profile, variant, seed, extra)
    out = run_dir(profile, variant, seed, runs_root)
    done = out / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("config") == cfg.to_dict():
            return result
    trainer = Trainer(cfg, out, progress=progress, corpus=corpus)
    state = trainer.run(resume=True)
    test = split_features(cfg, trainer.corpus.split("test"), "test", 1, resolve_path(cfg.data.dataset))
    result = manifest(cfg.to_dict(), variant=variant, seed=seed, test=trainer.evaluate(test),
                      val_epochs=state.epochs, history=state.history,
                      train_seconds=sum(e["seconds"] for e in state.epochs))
    atomic_write_json(result, done)
    return result


def profile_workers(profile: str) -> int:
    """The profile's top-level ``workers`` key (parallel runs), default 1."""
    path = Path(profile) if Path(profile).suffix else resolve_path("profiles") / f"{profile}.yaml"
    values = yaml.safe_load(path.read_text()) or {} if path.exists() else {}
    workers = values.get("workers", 1) if isinstance(values, dict) else 1
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{path}: workers={workers!r} must be an int >= 1")
    return workers


def _run_in_subprocess(profile: str, variant: str, seed: int, extra: dict | None, runs_root) -> dict:
    """Train one run in a fresh single-threaded process (``python -m cookie_lib.experiments``)."""
    cmd = [sys.executable, "-m", "cookie_lib.experiments", "--profile", str(profile), "--variant", variant,
           "--seed", str(seed), "--runs-root", str(runs_root), "--extra", json.dumps(extra or {})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run {variant} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run_dir(profile, variant, seed, runs_root) / "result.json").read_text())


def run_grid(profile: str, variants: list[str], seeds: list[int], extra: dict | None = None,
             runs_root: str | Path = "runs", progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """Run (or load) every variant x seed; one row per run with the test metrics and train seconds.

    ``workers`` > 1 trains that many runs at once, each in its own single-threaded process (default: the
    profile's ``workers`` key). On 2 small cores two 1-thread runs do more work per second than one
    2-thread run, whose threads mostly wait on each other for these small matrices. A run's result
    does not depend on how it was launched.
    """
    workers = workers or profile_workers(profile)
    corpus = load_corpus(load_config(profile, extra))  # validated once for the whole grid
    jobs = [(profile, v, s, corpus, extra, runs_root) for v in variants for s in seeds]
    if workers > 1 and len(jobs) > 1:
        # the feature cache is built once, here, before the workers would race to build it
        split_features_for(profile, extra, corpus)
        with ThreadPoolExecutor(workers) as pool:  # threads only wait on the training subprocesses
            futures = [pool.submit(_run_in_subprocess, p, v, s, e, r) for p, v, s, _, e, r in jobs]
            results = [f.result() for f in tqdm(futures, desc=f"runs ({workers} at a time)", disable=not progress)]
    else:
        results = [run_one(*job, progress=progress) for job in jobs]
    return pd.DataFrame([{"variant": r["variant"], "seed": r["seed"], "train_seconds": r["train_seconds"],
                          **r["test"]} for r in results])


def split_features_for(profile: str, extra: dict | None, corpus: KarpathyCorpus) -> None:
    """Make sure the cached train/val/test features of a profile exist (computing them if needed)."""
    cfg = load_config(profile, extra)
    dataset = resolve_path(cfg.data.dataset)
    for split, views in (("train", cfg.train.num_views), ("val", 1), ("test", 1)):
        split_features(cfg, corpus.split(split), split, views, dataset)


def frozen_encoder_metrics(profile: str, extra: dict | None = None) -> dict[str, float]:
    """Unimodal test metrics of the frozen pretrained encoders (deterministic: no training, no seed)."""
    cfg = load_config(profile, extra)
    corpus = load_corpus(cfg)
    feats = split_features(cfg, corpus.split("test"), "test", 1, resolve_path(cfg.data.dataset))
    return frozen_baseline(feats)


def load_results(profile: str, runs_root: str | Path = "runs") -> pd.DataFrame:
    """Every finished run of a profile (from result.json files) as one row per run."""
    rows = []
    for path in sorted((resolve_path(runs_root) / Path(profile).stem).glob("*/seed*/result.json")):
        r = json.loads(path.read_text())
        rows.append({"variant": r["variant"], "seed": r["seed"], "train_seconds": r["train_seconds"], **r["test"]})
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame, metrics: list[str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """mean +- std over seeds per variant, as strings ("61.2 ± 0.8"), with the seed count."""
    metrics = [m for m in (metrics or METRIC_COLUMNS) if m in df.columns]
    g = df.groupby("variant", sort=False)
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1).fillna(0.0), g["seed"].count()
    table = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    single = n[n < 2].index  # one seed: no spread to report, say so rather than "± 0.0"
    table.loc[single] = mean.loc[single].round(1).astype(str) + " (1 seed)"
    table.insert(0, "seeds", n)
    return table.reindex([v for v in (order or table.index) if v in table.index])


def compare(df: pd.DataFrame, a: str, b: str, metric: str, baseline: dict | None = None, alpha: float = 0.05) -> dict:
    """Is variant a better than b on metric? Welch's t-test over seeds (one-sample against a constant
    when b is the deterministic frozen baseline). Verdict: 'yes' (a > b, p < alpha), 'no: within noise',
    or 'no: opposite' (a < b, p < alpha)."""
    xa = df.loc[df.variant == a, metric].to_numpy(float)
    if b == FROZEN:
        mb, xb = (baseline or {})[metric], None
        p = stats.ttest_1samp(xa, mb).pvalue if len(xa) > 1 and xa.std() > 0 else float("nan")
    else:
        xb = df.loc[df.variant == b, metric].to_numpy(float)
        mb = xb.mean()
        p = stats.ttest_ind(xa, xb, equal_var=False).pvalue if min(len(xa), len(xb)) > 1 else float("nan")
    diff = xa.mean() - mb
    if np.isnan(p):
        verdict = "undetermined (single run)"
    elif p < alpha:
        verdict = "yes" if diff > 0 else "no: opposite"
    else:
        verdict = "no: within noise"
    return {"a": a, "b": b, "metric": metric, "mean_a": xa.mean(), "mean_b": mb, "diff": diff,
            "rel_pct": 100 * diff / mb if mb else float("nan"), "p_value": p, "verdict": verdict}


# (claim as the paper states it, what the paper reports, variant a, variant b, metric)
CLAIMS = [
    ("weight-sharing transformer helps (cross-modal)", "shared > separate", "cookie", "not_shared", "rsum"),
    ("weight-sharing transformer helps (image retrieval)", "shared > separate", "cookie", "not_shared", "img_r1"),
    ("weight-sharing transformer helps (text matching)", "shared > separate", "cookie", "not_shared", "txt_r1"),
    ("a transformer head helps over none", "(implied)", "cookie", "depth_0", "rsum"),
    ("cross-modal loss is needed for retrieval", "(implied)", "cookie", "no_cross_modal", "rsum"),
    ("visual single-modal loss helps cross-modal", "each loss helps", "cookie", "no_visual", "rsum"),
    ("textual single-modal loss helps cross-modal", "each loss helps", "cookie", "no_textual", "rsum"),
    ("visual single-modal loss helps image retrieval", "each loss helps", "cookie", "no_visual", "img_r1"),
    ("textual single-modal loss helps text matching", "each loss helps", "cookie", "no_textual", "txt_r1"),
    ("single-modal losses help over a CLIP-style dual encoder", "(implied)", "cookie", "cross_modal_only", "rsum"),
    ("image retrieval improves vs pretrained encoder", "+5.7 %", "cookie", FROZEN, "img_r1"),
    ("image retrieval improves vs cross-modal-only", "+5.7 %", "cookie", "cross_modal_only", "img_r1"),
    ("text matching improves vs pretrained encoder", "+3.9 %", "cookie", FROZEN, "txt_r1"),
    ("text matching improves vs cross-modal-only", "+3.9 %", "cookie", "cross_modal_only", "txt_r1"),
]


def claims_table(df: pd.DataFrame, baseline: dict | None = None) -> pd.DataFrame:
    """One row per claim: paper's statement, the measured difference (points and relative %), p, verdict."""
    rows = []
    for claim, paper, a, b, metric in CLAIMS:
        if a not in set(df.variant) or (b != FROZEN and b not in set(df.variant)) or (b == FROZEN and not baseline):
            continue
        c = compare(df, a, b, metric, baseline)
        rows.append({"claim": claim, "paper": paper, "comparison": f"{a} vs {b}", "metric": metric,
                     "a": round(c["mean_a"], 2), "b": round(c["mean_b"], 2), "diff (points)": round(c["diff"], 2),
                     "diff (relative %)": round(c["rel_pct"], 1), "p (Welch)": round(c["p_value"], 4),
                     "reproduced?": c["verdict"]})
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table without extra dependencies (pandas.to_markdown needs tabulate)."""
    frame = df.reset_index() if df.index.name or not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train and test one (variant, seed) of the replication grid.")
    p.add_argument("--profile", required=True)
    p.add_argument("--variant", required=True, choices=list(VARIANTS) + list(FINETUNE))
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--extra", default="{}", help="JSON object of dotted config overrides")
    a = p.parse_args(argv)
    extra = json.loads(a.extra)
    corpus = load_corpus(load_config(a.profile, {**extra, "data.validate": False}))  # run_grid validated it
    r = run_one(a.profile, a.variant, a.seed, corpus, extra or None, a.runs_root, progress=False)
    print(json.dumps({"variant": a.variant, "seed": a.seed, "rsum": r["test"].get("rsum")}))


if __name__ == "__main__":
    main()
