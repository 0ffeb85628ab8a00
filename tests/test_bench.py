"""cookie_lib.study.bench: the quick benchmark run end to end (subprocess), the end-to-end retrieval timer,
the one cost model (fit, held-out check, crossing N and its bootstrap interval) and scripts/gpu_check.py on
the CPU."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cookie_lib.study.bench import (COLUMNS, COST_CSV_COLUMNS, STRATEGIES, CostModel, crossing_interval, crossing_n,
                                    fit_cost_model, gallery_inputs, load_pipeline, ratio, retrieve)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one thread: stable timings when other processes share the cores (OpenMP barriers stall when oversubscribed)
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.study.bench", "--quick", "--threads", "1",
                           "--runs-root", str(out / "no-runs"), "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_tidy_csv(quick_run):
    out, stdout = quick_run
    with open(out / "benchmarks.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert {r["benchmark"] for r in rows} == {"environment", "inference", "training", "compute", "eval_scale",
                                              "cost_model", "study_step"}
    for r in rows:
        if r["metric"] == "crossing_n_images" and r["value"] == "nan":
            continue  # the ratio may never cross 3/1000 for a model
        assert math.isfinite(float(r["value"])), r
    metrics = {(r["benchmark"], r["metric"]) for r in rows}
    for s in STRATEGIES:
        assert ("inference", f"{s}_median_s") in metrics
    for n in ("pairs_per_s", "step_s", "speed_vs_cookie", "cached_over_live"):
        assert ("training", n) in metrics
    assert ("eval_scale", "seconds") in metrics and ("eval_scale", "matmul_floor_s") in metrics
    # structured columns: gallery sizes are numbers, never parsed from the setting label
    inf = [r for r in rows if r["benchmark"] == "inference" and r["metric"] == "one-stream_median_s"]
    assert {int(r["n_images"]) for r in inf} == {4, 8, 12}
    assert all(int(r["n_captions"]) == 5 * int(r["n_images"]) for r in inf)
    assert {r["variant"] for r in inf} == {"untrained"}  # no runs under --runs-root: says so
    assert "threads" in stdout and "headline" in stdout
    # the study's own step: frozen and cached-prefix fine-tuned, each in fp32 and bf16, against the
    # ceiling of its own precision measured in the same run
    from cookie_lib.study.variants import FT_BLOCKS
    study = {(r["variant"], r["mode"], r["metric"]): float(r["value"]) for r in rows if r["benchmark"] == "study_step"}
    arms = [f"{a}{m}" for a in ("frozen", f"finetune_k{FT_BLOCKS}") for m in ("", " bits")]  # both mask kinds
    for arm in arms:
        for mode in ("fp32", "bf16"):
            for metric in ("pairs_per_s", "flops_per_step", "achieved_flops_per_s", "fraction_of_ceiling"):
                assert study[(arm, mode, metric)] > 0, (arm, mode, metric)
        assert study[(arm, "fp32", "flops_per_step")] == study[(arm, "bf16", "flops_per_step")]
    assert study[(f"finetune_k{FT_BLOCKS}", "fp32", "flops_per_step")] > study[("frozen", "fp32", "flops_per_step")]
    ceil = {r["mode"]: float(r["value"]) for r in rows if r["metric"] == "ceiling_flops_per_s"
            and r["benchmark"] == "study_step"}
    assert set(ceil) == {"fp32", "bf16"} and min(ceil.values()) > 0
    assert "of its precision's ceiling" in stdout


def test_quick_run_cost_model_json(quick_run):
    from cookie_lib.study.variants import FT_BLOCKS
    out, _ = quick_run
    data = json.loads((out / "benchmarks.json").read_text())
    for key in ("commit", "versions", "torch_threads", "headline", "assumptions", "rows"):
        assert key in data
    assert data["quick"] is True and data["headline"]["trained"] is False
    for name in ("fig_inference_time.png", "fig_cost_model.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "self cpu" in (out / "profile_train_step.txt").read_text().lower()
    study = (out / "profile_study_step.txt").read_text()
    assert study.count("=== ") == 12 and "frozen step, bf16" in study and "frozen bits step, fp32" in study
    assert f"finetune_k{FT_BLOCKS} bits buckets step, fp32" in study
    assert "self cpu" in study.lower()
    assert set(data["headline"]["study_step"]) == {f"{arm}{k} {m}" for arm in ("frozen", f"finetune_k{FT_BLOCKS}")
                                                   for k in ("", " bits", " bits buckets") for m in ("fp32", "bf16")}
    from cookie_lib.study.views.report import bench_block
    assert "The study's own training step" in bench_block(out)  # the README's benchmark block says it
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"
    with open(out / "inference_cost_model.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COST_CSV_COLUMNS
        assert len({r["model"] for r in reader}) == 2
    cost = json.loads((out / "inference_cost_model.json").read_text())
    assert cost["paper_ratio"] == pytest.approx(0.003) and cost["trained"] is False
    pts = cost["points"]
    assert {(p["strategy"], p["n_images"]) for p in pts} == {(s, n) for s in STRATEGIES for n in (4, 8, 12)}
    assert sum(p["role"] == "fit" for p in pts) == 4 * 2 * 3 and sum(p["role"] == "holdout" for p in pts) == 4 * 2
    one = [p for p in pts if p["strategy"] == "one-stream"]
    assert all(p["pairs"] == p["n_images"] * p["n_captions"] for p in one)  # every pair scored, none extrapolated
    assert all(p["pairs"] == 0 for p in pts if p["strategy"] == "two-stream")
    assert set(cost["holdout"]) == set(STRATEGIES) and all(h["n_images"] == 8 for h in cost["holdout"].values())
    measured, paper = (cost["classes"][k] for k in ("trained cross-encoder (measured)",
                                                    "paper-class joint model (FLOP-costed, not measured)"))
    assert measured["measured"] is True and paper["measured"] is False
    assert paper["b"] > 50 * measured["b"] > 0  # ~ hundreds of times the FLOPs per pair
    assert paper["flops_per_pair"] > 1e10
    for c in (measured, paper):
        assert c["crossing_n_images"] is None or c["crossing_n_images"] > 0
        iv = c["interval"]
        assert (iv["low"] is None) == bool(iv["reason"])
        if iv["low"] is not None:
            assert iv["low"] <= iv["high"]


def test_retrieve_scores_every_pair_or_the_top_k(tmp_path):
    p = load_pipeline("smoke", 0, runs_root=tmp_path)
    assert not p.trained and "untrained" in p.label
    images, captions = gallery_inputs("smoke", 6)
    assert images.shape[0] == 6 and len(captions) == 30
    dev = torch.device("cpu")
    assert retrieve(p, images, captions, "one-stream", dev)["pairs"] == 6 * 30
    assert retrieve(p, images, captions, "two-stream", dev)["pairs"] == 0
    k2 = retrieve(p, images, captions, "rerank 2", dev)["pairs"]
    assert 30 * 2 <= k2 <= 6 * 2 + 30 * 2  # distinct pairs of both directions' top 2


def test_crossing_interval_from_repeats():
    """Repeats with 1 % noise around known a, b: the bootstrap interval holds the true crossing N. (The
    two-stream b is set to 0: a per-pair cost far below the timing noise is not resolved at N <= 300, and its
    fitted value moves the crossing; the interval then says so, see the quick run.)"""
    rng = np.random.default_rng(0)
    two, one = CostModel(1e-3, 0.0), CostModel(1.2e-3, 1e-4)
    rows = []
    for s, m in (("two-stream", two), ("one-stream", one)):
        for n in (100, 300):
            for r in range(4):
                t = float(m.time(n, 5 * n)) * (1 + 0.01 * rng.standard_normal())
                rows.append(dict(strategy=s, n_images=n, n_captions=5 * n, repeat=r, role="fit", seconds=t, pairs=0))
    iv = crossing_interval(rows, resamples=199)
    true = crossing_n(two, one, 3e-3)
    # 4 repeats per cell: the percentile interval is rough; it must reach the truth's neighbourhood and be finite
    assert iv["reason"] == "" and iv["low"] < 1.1 * true and iv["high"] > 0.9 * true and iv["high"] < 2 * iv["low"]
    one_repeat = [r for r in rows if r["repeat"] == 0]
    assert crossing_interval(one_repeat)["low"] is None  # no spread: said, not invented


# ----------------------------------------------------------------------------- cost model
def test_cost_model_fit_recovers_a_and_b():
    a, b = 2e-3, 3e-6
    n = np.array([5, 10, 20, 40, 80, 100, 300])
    m = 5 * n
    rng = np.random.default_rng(0)
    t = (a * (n + m) + b * n * m) * (1 + 0.01 * rng.standard_normal(len(n)))  # 1 % timing noise
    fit = fit_cost_model(n, m, t)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, rel=0.05)
    exact = fit_cost_model([1, 2, 3], [7, 2, 50], CostModel(a, b).time([1, 2, 3], [7, 2, 50]))
    assert exact.a == pytest.approx(a, rel=1e-9) and exact.b == pytest.approx(b, rel=1e-9)
    with pytest.raises(ValueError, match="positive"):
        fit_cost_model([1, 2], [5, 10], [0.1, 0.0])
    with pytest.raises(ValueError, match="2 points"):
        fit_cost_model([1], [5], [0.1])


def test_crossing_n_solves_the_ratio():
    two, one = CostModel(1e-3, 1e-9), CostModel(1.2e-3, 2e-5)
    n_star = crossing_n(two, one, 3e-3)
    assert n_star is not None and ratio(two, one, n_star) == pytest.approx(3e-3, rel=1e-9)
    assert ratio(two, one, n_star / 2) > 3e-3 > ratio(two, one, n_star * 2)  # the ratio falls with N
    # limits: a2/a1 at small N, b2/b1 at large N; a target outside them is never reached
    assert crossing_n(two, one, 1e-5) is None  # below b2/b1 = 5e-5
    assert crossing_n(two, one, 0.9) is None  # above a2/a1 ~ 0.83
    assert crossing_n(CostModel(1.0, 1.0), CostModel(2.0, 4.0), 0.25) is None  # b2/b1 = target: only at N = inf


def test_gpu_check_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.txt"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for tag in ("[smoke train]", "[smoke eval]", "[train d256 L2", "[inference N=10]", "gpu_check finished"):
        assert tag in text, tag



def test_study_cost_writes_its_own_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.study.bench", "--quick", "--study-cost",
                           "--out", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "study_cost.json").read_text())
    assert data["profile"] == "smoke" and isinstance(data["native_bf16"], bool) and data["cpu_capability"]
    assert {"frozen fp32", "frozen bits fp32", "frozen bits buckets fp32"} <= set(data["study_step"])
    assert (tmp_path / "profile_study_step.txt").exists() and not (tmp_path / "benchmarks.csv").exists()
    assert "frozen bits" in proc.stdout and "pairs/s" in proc.stdout
    # the projection: every job of the smoke study, each variant timed once per cost setting
    from cookie_lib.study.grid import study_jobs
    from cookie_lib.study.profile import load_run_profile
    proj = data["projection"]
    jobs = study_jobs(load_run_profile("smoke"))
    assert proj["jobs"] == [list(j) for j in jobs] and set(proj["configs"]) == {v for v, _ in jobs}
    for name, total in proj["training_s"].items():
        runs = sum(proj["configs"][v][name]["run_s"] for v, _ in jobs)
        assert total == pytest.approx(runs / proj["workers"]) and total > 0
    c = proj["configs"][jobs[0][0]]["as profiled"]
    assert c["run_s"] == pytest.approx(c["epochs"] * (c["steps_per_epoch"] * c["step_s"] + c["val_s"]))
    assert "min of training" in proc.stdout
