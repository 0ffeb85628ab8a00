"""The replication grid: model variants (:mod:`cookie_lib.study.variants`) x seeds, each trained once and
evaluated on the downstream test sets.

Tables and the report are in :mod:`cookie_lib.study.views.report`; the claims' verdicts in
:mod:`cookie_lib.study.verdicts`.

A finished run leaves ``runs/<profile>/<variant>/seed<k>/result.json`` (written atomically, holding its
config); ``run_grid`` loads such a run instead of retraining it when the config matches, and resumes an
interrupted one from its checkpoint, so rerunning the notebooks or ``run_all.sh`` redoes only what is
missing.

    from cookie_lib.study.grid import run_grid
    from cookie_lib.study.variants import LOSS_ABLATION
    df = run_grid("default", LOSS_ABLATION, seeds=[0, 1, 2])
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import (Config, ConfigError, add_override_argument, config_from_dict, format_overrides, load_config,
                      parse_overrides, resolve_path)
from ..data import KarpathyCorpus, load_corpus
from ..evaluate import load_run
from ..features import split_features
from ..model import CookieModel
from ..prefix import finetuning, prefix_config, prefix_encoders
from ..runtime import atomic_write_json, manifest
from ..search import export_model
from ..train import Trainer
from .baselines import frozen_baseline, profile_table, whole_network_images
from .downstream import DownstreamSuite
from .onestream import SETTINGS as ONESTREAM_SETTINGS
from .onestream import load_onestream, speed_accuracy_table, train_onestream
from .profile import load_run_profile
from .variants import (FINETUNE, FINETUNED, FROZEN, LONG_BUDGET, ONESTREAM, PRIMARY, SECONDARY, VARIANTS,
                       variant_config)

def run_dir(profile: str, variant: str, seed: int | None, runs_root: str | Path = "runs") -> Path:
    leaf = variant if seed is None else Path(variant) / f"seed{seed}"
    return resolve_path(runs_root) / Path(profile).stem / leaf


_SUITES: dict[str, DownstreamSuite] = {}


def downstream_suite(profile: str, cfg: Config, progress: bool = True) -> DownstreamSuite:
    """The profile's downstream tasks (emoji test, Open Clip Art test, WordNet), built once per process.

    Only the encoder settings and the cache folder decide the cached features, so every variant of a
    profile shares one suite."""
    study = load_run_profile(profile)
    # a fine-tuned run's tails read the cached prefix: its suite caches the prefix's features (cookie_lib.prefix)
    tuned, full, cfg = finetuning(cfg), cfg.model, prefix_config(cfg)
    m = cfg.model
    key = json.dumps([str(study.path), m.visual_backbone, m.visual_weights, m.visual_layer, m.image_size, m.text_model,
                      m.max_text_len, cfg.data.cache_dir, cfg.data.max_captions])
    if key not in _SUITES:
        paths = {name: getattr(study, f"downstream_{name}") or None for name in ("emoji", "oca", "wordnet")}
        _SUITES[key] = DownstreamSuite(cfg, **paths, progress=progress,
                                       encoders=prefix_encoders(full) if tuned else None)
    return _SUITES[key]


def run_one(profile: str, variant: str, seed: int, corpus: KarpathyCorpus | None = None,
            extra: dict | None = None, runs_root: str | Path = "runs", progress: bool = True) -> dict:
    """Pre-train one (variant, seed), then evaluate it zero-shot on the downstream tasks; reuse a finished
    run with the same config. result.json holds the metrics (``test``), the per-query values the
    statistics resample (``per_query``), the per-epoch validation curve and the loss history.
    ``variant=ONESTREAM`` trains the one-stream cross-encoder instead (same data, steps and seed)."""
    cfg = variant_config(profile, variant, seed, extra)
    out = run_dir(profile, variant, seed, runs_root)
    done = out / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if _same_run(result, cfg, variant):
            return result
    if variant == ONESTREAM:  # on top of the trained COOKIE run of the same seed (trained first if missing)
        run_one(profile, "cookie", seed, corpus, extra, runs_root, progress)
        return train_onestream(cfg, out, seed, cookie=run_dir(profile, "cookie", seed, runs_root))
    trainer = Trainer(cfg, out, progress=progress, corpus=corpus)
    discard_other_config(trainer.checkpoint_path, trainer.cfg.to_dict())
    state = trainer.run(resume=True)
    metrics, per_query = downstream_suite(profile, cfg, progress).evaluate(trainer.model, trainer.device)
    result = manifest(cfg.to_dict(), variant=variant, seed=seed, test=metrics, per_query=per_query,
                      val_epochs=state.epochs, history=state.history, plateau_epoch=state.plateau_epoch,
                      train_seconds=sum(e["seconds"] for e in state.epochs))
    atomic_write_json(result, done)
    return result


def discard_other_config(checkpoint: Path, config: dict) -> bool:
    """Delete a run folder's checkpoint written with another config than ``config``, with a warning; True if
    deleted. A grid folder names a (profile, variant, seed), not a config: when the variant's definition or the
    profile changed since the run was interrupted, its checkpoint is obsolete, and the run starts over instead
    of failing to resume. An unreadable checkpoint is left for :meth:`Trainer.run` to report."""
    if not checkpoint.exists():
        return False
    try:
        stored = torch.load(checkpoint, map_location="cpu", weights_only=False)["config"]
    except Exception:  # noqa: BLE001 - not ours to judge here: the trainer names an unreadable checkpoint
        return False
    if stored == config:
        return False
    warnings.warn(f"{checkpoint} was written with another config (the variant or the profile changed since); "
                  f"deleting it and training {checkpoint.parent.parent.name}/{checkpoint.parent.name} from the start")
    checkpoint.unlink()
    return True


def frozen_run(profile: str, extra: dict | None = None, runs_root: str | Path = "runs") -> dict:
    """The frozen-encoder baseline as a seedless run (deterministic): unimodal downstream metrics of the
    pretrained encoders' pooled features (see :func:`cookie_lib.study.baselines.frozen_baseline`), the
    candidate chosen on the emoji validation split by :func:`cookie_lib.study.baselines.profile_table`
    (the pooled layer the models read or the whole CNN, whitened or not; text whitened or not). Written to
    ``runs/<profile>/frozen/result.json`` with the choice (``baseline``) and every candidate's validation and
    test numbers (``candidates``; the test numbers never choose)."""
    cfg = load_config(profile, extra)
    done = run_dir(profile, FROZEN, None, runs_root) / "result.json"
    if done.exists():
        stored = json.loads(done.read_text())
        if same_config(stored.get("config"), cfg) and "baseline" in stored:
            return stored
    suite = downstream_suite(profile, cfg)
    table = profile_table(profile, extra, test=suite)
    image, text = (table[(table.modality == m) & table.chosen].iloc[0] for m in ("image", "text"))
    corpus = load_corpus(cfg)
    pretrain = split_features(cfg, corpus.split("train"), "train", cfg.train.num_views, resolve_path(cfg.data.dataset))
    if image.source == "whole" and cfg.model.visual_layer != "all":
        # the pretrained CNN's own representation: its last feature map, globally pooled, at the same input size
        pretrain, suite = whole_network_images(cfg, pretrain), copy.copy(suite)
        suite.emoji = suite.emoji and whole_network_images(cfg, suite.emoji)
    metrics, per_query = frozen_baseline(suite, pretrain, cfg.model.dim, whiten_image=bool(image.whitened),
                                         whiten_text=bool(text.whitened))
    baseline = {"image": str(image.source), "image_whitened": bool(image.whitened),
                "text_whitened": bool(text.whitened), "chosen_on": "emoji validation img_r1 (image), txt_r1 (text)"}
    result = manifest(cfg.to_dict(), variant=FROZEN, seed=None, test=metrics, per_query=per_query, train_seconds=0.0,
                      baseline=baseline, candidates=json.loads(table.to_json(orient="records")))
    atomic_write_json(result, done)
    return result


def profile_workers(profile: str) -> int:
    """The profile's validated run-level ``workers`` key (parallel runs; default 1)."""
    return load_run_profile(profile).workers


def _run_in_subprocess(profile: str, variant: str, seed: int, extra: dict | None, runs_root) -> dict:
    """Train one run in a fresh single-threaded process (``python -m cookie_lib.study.grid one``)."""
    cmd = [sys.executable, "-m", "cookie_lib.study.grid", "one", "--profile", str(profile), "--variant", variant,
           "--seed", str(seed), "--runs-root", str(runs_root), *(["--set", *format_overrides(extra)] if extra else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run {variant} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run_dir(profile, variant, seed, runs_root) / "result.json").read_text())


def run_grid(profile: str, variants: list[str], seeds: list[int], extra: dict | None = None,
             runs_root: str | Path = "runs", progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """Run (or load) every variant x seed; one row per run (see :func:`results_frame`).

    ``workers`` > 1 trains that many runs at once, each in its own single-threaded process (default: the
    profile's ``workers`` key). On 2 small cores two 1-thread runs do more work per second than one
    2-thread run, whose threads mostly wait on each other for these small matrices. A run's result
    does not depend on how it was launched.
    """
    return results_frame(_run_jobs(profile, [(v, s) for v in variants for s in seeds], extra, runs_root, progress,
                                   workers))


def _run_jobs(profile, jobs, extra, runs_root, progress, workers) -> list[dict]:
    workers = workers or profile_workers(profile)
    cfg = load_config(profile, extra)
    corpus = load_corpus(cfg)  # validated once for the whole grid
    todo = [(v, s) for v, s in jobs if not _finished(profile, v, s, extra, runs_root)]
    if workers > 1 and len(todo) > 1:
        # the feature caches are built once, here, before the workers would race to build them
        split_features_for(profile, extra, corpus)
        downstream_suite(profile, cfg, progress)
        if any(v in FINETUNED for v, _ in todo):  # and the fine-tuned arm's prefix caches
            ft = {**FINETUNE, **(extra or {})}
            split_features_for(profile, ft, corpus)
            downstream_suite(profile, load_config(profile, ft), progress)
        with ThreadPoolExecutor(workers) as pool:  # threads only wait on the training subprocesses
            futures: dict = {}
            for v, s in todo:
                # the cross-encoder starts from the COOKIE run of its seed: wait for that job first
                after = futures.get(("cookie", s)) if v == ONESTREAM else None
                futures[(v, s)] = pool.submit(_after, after, _run_in_subprocess, profile, v, s, extra, runs_root)
            futures = list(futures.values())
            for f in tqdm(futures, desc=f"runs ({workers} at a time)", disable=not progress):
                f.result()
    return [run_one(profile, v, s, corpus, extra, runs_root, progress) for v, s in jobs]


def same_config(stored: dict | None, cfg: Config) -> bool:
    """Whether a stored run's config, read by today's code, is ``cfg``: keys added to the config since the
    run default to their values (a new option whose default keeps the old behaviour leaves finished runs
    valid); a key today's code no longer knows makes the run stale."""
    try:
        return stored is not None and config_from_dict(stored).to_dict() == cfg.to_dict()
    except ConfigError:
        return False


def _same_run(result: dict, cfg: Config, variant: str) -> bool:
    """A finished run's result.json matches this config (and, for the cross-encoder, its settings)."""
    return same_config(result.get("config"), cfg) and (variant != ONESTREAM or result.get("settings") == ONESTREAM_SETTINGS)


def _after(before, fn, *args):
    """fn(*args) once the future ``before`` (or None) is done; its error, if any, is raised first."""
    if before is not None:
        before.result()
    return fn(*args)


def _finished(profile, variant, seed, extra, runs_root) -> bool:
    done = run_dir(profile, variant, seed, runs_root) / "result.json"
    return done.exists() and _same_run(json.loads(done.read_text()), variant_config(profile, variant, seed, extra),
                                       variant)


def study_jobs(study) -> list[tuple[str, int]]:
    """(variant, seed) of every training run of a run profile's study: the frozen arm's PRIMARY x ``seeds``
    and SECONDARY x ``secondary_seeds``, the fine-tuned arm's FINETUNED and its BUDGET_MATCHED comparator x
    ``finetune_seeds``."""
    return ([(v, s) for v in PRIMARY for s in study.seeds] + [(v, s) for v in SECONDARY for s in study.secondary_seeds]
            + [(v, s) for v in LONG_BUDGET for s in study.finetune_seeds])


def study_runs(study, runs_root: str | Path = "runs") -> dict[str, list[dict]]:
    """Every training run of the study (:func:`study_jobs`), finished ones loaded: {variant: [result, ...]}."""
    out: dict[str, list[dict]] = {}
    for v, s in study_jobs(study):
        out.setdefault(v, []).append(run_one(study.profile, v, s, runs_root=runs_root, progress=False))
    return out


def run_study(profile: str, runs_root: str | Path = "runs", progress: bool = True) -> pd.DataFrame:
    """The whole pre-registered study of a profile: PRIMARY x ``seeds``, SECONDARY x ``secondary_seeds``
    and the frozen baseline, as one frame (runs already finished are loaded, not retrained)."""
    study = load_run_profile(profile)
    jobs = study_jobs(study)
    # the cross-encoders start from the COOKIE run of their seed: queue COOKIE's runs first, then them, then
    # the rest, so no worker waits on a COOKIE run and none trains a cross-encoder alone at the end
    onestream = [(ONESTREAM, s) for s in study.onestream_seeds]
    order = [j for j in jobs if j[0] == "cookie"] + onestream + [j for j in jobs if j[0] != "cookie"]
    results = dict(zip(order, _run_jobs(profile, order, None, runs_root, progress, None)))
    df = results_frame([results[j] for j in jobs] + [frozen_run(profile, runs_root=runs_root)])
    df.attrs["clusters"] = query_clusters(profile)  # the test concept of every query: the claims resample these
    return df


def query_clusters(profile: str) -> dict[str, list[str]]:
    """The test concept of every per-query list of the profile's downstream suite (``query_clusters``)."""
    return downstream_suite(profile, load_config(profile), progress=False).query_clusters()


# ----------------------------------------------------------------------------- what the notebooks look at
def head_parameters(profile: str, variant: str, extra: dict | None = None) -> int:
    """Parameters of a variant's transformer head(s) (not the projections), counted on a fresh model (the
    encoders are not built: the head's size does not depend on them)."""
    cfg = variant_config(profile, variant, 0, extra)
    return sum(p.numel() for p in CookieModel(cfg.model, 8, 8, 16).head_parameters())


def load_model(profile: str, variant: str, seed: int, runs_root: str | Path = "runs") -> CookieModel:
    """The trained CookieModel of a finished run (eval mode, CPU)."""
    return load_run(run_dir(profile, variant, seed, runs_root)).model.eval()


def embeddings(profile: str, variant: str, seed: int | None, names=("emoji_img", "emoji_txt"),
               runs_root: str | Path = "runs") -> tuple[torch.Tensor, ...]:
    """Downstream-suite embeddings (see :meth:`DownstreamSuite.embed`) of a finished run, e.g. the emoji
    test images [N, d] and distinct captions [M, d]; ``variant=FROZEN`` gives the frozen baseline's."""
    suite = downstream_suite(profile, load_config(profile))
    emb = suite.embed(load_model(profile, variant, seed, runs_root))
    return tuple(emb[n] for n in names)


def design_matrices(profile: str, seed: int, runs_root: str | Path = "runs") -> dict[str, pd.DataFrame]:
    """Design-by-design cross-design image R@1 on the emoji test split: COOKIE (``seed``) and the
    cross-modal-only model of the same seed."""
    suite = downstream_suite(profile, load_config(profile))
    return {name: suite.design_matrix(load_model(profile, v, seed, runs_root))
            for name, v in (("cookie", "cookie"), ("cross_modal_only", "cross_modal_only"))}


def speed_accuracy(profile: str, seeds: list[int], runs_root: str | Path = "runs", n_exhaustive: int = 100
                   ) -> pd.DataFrame:
    """The speed/accuracy table on the emoji test set for each seed: COOKIE (that seed) as two-stream, as
    a shortlist re-ranked by the cross-encoder trained on it, and the cross-encoder exhaustively on a
    seeded ``n_exhaustive``-image subset. Cached next to the one-stream run (``speed_accuracy.json``,
    recomputed when the run is newer)."""
    cfg = load_config(profile)
    suite = downstream_suite(profile, cfg)
    frames = []
    for seed in seeds:
        run_one(profile, ONESTREAM, seed, runs_root=runs_root, progress=False)
        folder = run_dir(profile, ONESTREAM, seed, runs_root)
        path, weights = folder / "speed_accuracy.json", folder / "onestream.pt"
        if not path.exists() or path.stat().st_mtime < weights.stat().st_mtime:
            table = speed_accuracy_table(load_onestream(weights, suite.emoji), suite.emoji,
                                         n_exhaustive=n_exhaustive, seed=seed)
            atomic_write_json(table, path)
        frames.append(pd.DataFrame(json.loads(path.read_text())).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def best_seed(profile: str, variant: str = "cookie", runs_root: str | Path = "runs") -> int:
    """The seed of ``variant`` with the highest final *validation* RSUM (chosen on val, never on test)."""
    seeds = load_run_profile(profile).seeds
    val = {s: json.loads((run_dir(profile, variant, s, runs_root) / "result.json").read_text())["val_epochs"][-1]["rsum"]
           for s in seeds}
    return max(val, key=val.get)


def split_features_for(profile: str, extra: dict | None, corpus: KarpathyCorpus) -> None:
    """Make sure the cached train/val features of a profile exist (computing them if needed); for a
    fine-tuning config, those of its frozen prefix (cookie_lib.prefix)."""
    cfg = load_config(profile, extra)
    dataset = resolve_path(cfg.data.dataset)
    encoders = prefix_encoders(cfg.model) if finetuning(cfg) else None
    for split, views in (("train", cfg.train.num_views), ("val", 1)):
        split_features(prefix_config(cfg), corpus.split(split), split, views, dataset, encoders)


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per run: ``variant``, ``seed`` (None for the frozen baseline), ``train_seconds``, the test
    metrics, and ``per_query`` (a dict of per-query lists, what :mod:`cookie_lib.study.stats` resamples)."""
    return pd.DataFrame([{"variant": r["variant"], "seed": r["seed"], "train_seconds": r["train_seconds"],
                          **r["test"], "per_query": r.get("per_query", {})} for r in results])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the replication study, or one (variant, seed) of it.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("study", help="every pre-registered run of a profile + the frozen baseline")
    s.add_argument("--profile", required=True)
    s.add_argument("--runs-root", default="runs")
    s.add_argument("--no-progress", action="store_true")
    o = sub.add_parser("one", help="train and test one (variant, seed)")
    o.add_argument("--profile", required=True)
    o.add_argument("--variant", required=True, choices=list(VARIANTS) + [ONESTREAM])
    o.add_argument("--seed", type=int, required=True)
    o.add_argument("--runs-root", default="runs")
    add_override_argument(o)
    # the JSON form of earlier versions, for commands still running from them: converted, with a warning
    e = sub.add_parser("export", help="save the best COOKIE run (by validation RSUM) for python -m cookie_lib.search")
    e.add_argument("--profile", required=True)
    e.add_argument("--runs-root", default="runs")
    e.add_argument("--out", required=True, help="model file, e.g. results/model/cookie.pt")
    c = sub.add_parser("claims", help="the claims table of a profile's finished runs (+ per_query.npz beside it)")
    c.add_argument("--profile", required=True)
    c.add_argument("--runs-root", default="runs")
    c.add_argument("--out", required=True, help="folder for claims.csv and per_query.npz")
    a = p.parse_args(argv)
    if a.cmd == "claims":
        from .analyses import study_claims

        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        df = study_claims(run_study(a.profile, a.runs_root, progress=False), out / "claims.csv",
                          load_run_profile(a.profile).bootstrap_resamples)
        print(df[["id", "verdict", "verdict_seed"]].to_string(index=False))
        return
    if a.cmd == "export":
        seed = best_seed(a.profile, "cookie", a.runs_root)
        print(f"exported cookie seed {seed} -> {export_model(run_dir(a.profile, 'cookie', seed, a.runs_root), a.out)}")
        return
    if a.cmd == "study":
        df = run_study(a.profile, a.runs_root, progress=not a.no_progress)
        print(df.drop(columns="per_query").groupby("variant", sort=False).mean(numeric_only=True).round(2).to_string())
        return
    extra = parse_overrides(a.set)
    corpus = load_corpus(load_config(a.profile, {**extra, "data.validate": False}))  # the parent validated it
    r = run_one(a.profile, a.variant, a.seed, corpus, extra or None, a.runs_root, progress=False)
    print(json.dumps({"variant": a.variant, "seed": a.seed, "emoji_mr": r.get("test", {}).get("emoji_mr")}))


if __name__ == "__main__":
    from ..runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
