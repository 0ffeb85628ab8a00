"""cookie_lib.study.bench: the quick benchmark run end to end (subprocess), the one-stream extrapolation
helpers, the cost model (fit and crossing N) and scripts/gpu_check.py --device cpu."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import numpy as np

from cookie_lib.model import OneStreamModel
from cookie_lib.study.bench import (C_T, C_V, COLUMNS, COST_CSV_COLUMNS, T_V, CostModel, crossing_n, extrapolate_linear,
                                    fit_cost_model, head_config, one_stream_pairs, random_text_tokens, ratio,
                                    score_pairs)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    # one thread: stable timings when other processes share the cores (OpenMP barriers stall when oversubscribed)
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.study.bench", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_tidy_csv(quick_run):
    out, stdout = quick_run
    with open(out / "benchmarks.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert {r["benchmark"] for r in rows} == {"environment", "inference", "training", "compute", "eval_scale",
                                              "cost_model"}
    for r in rows:
        if r["metric"] == "crossing_n_images" and r["value"] == "nan":
            continue  # the ratio may never cross 3/1000 for a model
        v = float(r["value"])
        assert math.isfinite(v), r
        if r["metric"] not in ("ru_maxrss_delta_mib", "peak_rss_delta_mib", "load_avg_1min_start",
                               "load_avg_1min_end"):
            assert v > 0, r
    metrics = {(r["benchmark"], r["metric"]) for r in rows}
    for n in ("two_stream_s", "one_stream_s", "ratio_two_over_one", "rerank_k10_s", "rerank_k50_s"):
        assert ("inference", n) in metrics
    for n in ("pairs_per_s", "step_s", "speed_vs_cookie", "cached_over_live"):
        assert ("training", n) in metrics
    for n in ("ceiling_flops_per_s", "achieved_flops_per_s", "fraction_of_ceiling"):
        assert ("compute", n) in metrics
    assert ("eval_scale", "seconds") in metrics and ("eval_scale", "matmul_floor_s") in metrics
    for n in ("one_stream_measured_s", "one_stream_extrapolated_s", "one_stream_cost_model_s"):
        assert ("inference", n) in metrics
    # structured columns: gallery sizes are numbers, never parsed from the setting label
    inf = [r for r in rows if r["benchmark"] == "inference" and r["metric"] == "ratio_two_over_one"]
    assert {int(r["n_images"]) for r in inf} == {20, 100, 500}
    assert all(int(r["n_captions"]) == 5 * int(r["n_images"]) for r in inf)
    settings = {r["setting"] for r in rows if r["benchmark"] == "training"}
    assert {f"cpu {m} {v}" for m in ("cached", "live") for v in ("cookie", "cross_modal_only", "dual_encoder")} <= settings
    # the one-stream model must cost more than the two-stream one at every gallery size
    by = {(r["setting"], r["metric"]): float(r["value"]) for r in rows if r["benchmark"] == "inference"}
    for (setting, metric), v in by.items():
        if metric == "ratio_two_over_one" and "N=" in setting:
            assert 0 < v < 1, (setting, v)
    assert "threads" in stdout and "headline" in stdout


def test_quick_run_writes_json_figure_profile(quick_run):
    out, _ = quick_run
    data = json.loads((out / "benchmarks.json").read_text())
    for key in ("commit", "versions", "torch_threads", "headline", "assumptions", "rows"):
        assert key in data
    assert data["quick"] is True
    fig = out / "fig_inference_time.png"
    assert fig.exists() and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "self cpu" in (out / "profile_train_step.txt").read_text().lower()
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"
    assert (out / "fig_cost_model.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "inference_cost_model.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COST_CSV_COLUMNS
        curve = list(reader)
    assert len({r["model"] for r in curve}) == 2
    cost = json.loads((out / "inference_cost_model.json").read_text())
    assert cost["paper_ratio"] == pytest.approx(0.003)
    for name, m in cost["models"].items():
        assert m["a"] >= 0 and m["b"] > 0, name
        assert m["crossing_n_images"] is None or m["crossing_n_images"] > 0
    paper = cost["models"]["paper class (12 x 768, 100 tokens)"]
    measured = cost["models"]["measured one-stream (d256 L2, 21 tokens)"]
    assert paper["b"] > 50 * measured["b"]  # ~250x the FLOPs per pair
    assert cost["paper_class"]["flops_per_pair"] > 1e10


def test_extrapolate_linear_exact():
    assert extrapolate_linear(2.0, 10, 45) == pytest.approx(9.0)
    assert extrapolate_linear(0.5, 1, one_stream_pairs(3)) == pytest.approx(0.5 * 45)
    assert one_stream_pairs(3) == 3 * 15 and one_stream_pairs(1000) == 5_000_000
    with pytest.raises(ValueError):
        extrapolate_linear(1.0, 0, 10)


def test_batched_one_stream_scoring_matches_pair_by_pair():
    """Tiny exact case: 3 images x 15 captions = 45 pairs; batching/padding must not change any score."""
    torch.manual_seed(0)
    model = OneStreamModel(head_config(), C_V, C_T, T_V).eval()
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(3, T_V, C_V, generator=gen)
    txt, mask = random_text_tokens(15, gen)
    ii = torch.arange(3).repeat_interleave(15)
    jj = torch.arange(15).repeat(3)
    batched = score_pairs(model, img, txt, mask, ii, jj, batch=8)
    assert batched.shape == (one_stream_pairs(3),)
    with torch.no_grad():
        single = torch.stack([model.score(img[i:i + 1], txt[j:j + 1, :int(mask[j].sum())], mask[j:j + 1, :int(mask[j].sum())])[0]
                              for i, j in zip(ii.tolist(), jj.tolist())])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for tag in ("[smoke train]", "[smoke eval]", "[train d256 L2", "[inference N=10]", "gpu_check finished"):
        assert tag in text, tag


# ----------------------------------------------------------------------------- evaluation at scale
def test_metrics_gather_path_equals_mask_path(monkeypatch):
    """cross_modal_retrieval reads positive scores by a gather (few positives per query) or, above
    _GATHER_MAX_POSITIVES, by [chunk, G] masks; both must give the same ranks, ties included."""
    from cookie_lib import metrics

    g = torch.Generator().manual_seed(0)
    img = torch.randint(-2, 3, (30, 4), generator=g).float()  # integer scores: many exact ties
    txt = torch.randint(-2, 3, (90, 4), generator=g).float()
    t2i = torch.arange(30).repeat_interleave(3)
    keys = [i // 4 for i in range(30)]
    fast = metrics.cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=7)
    monkeypatch.setattr(metrics, "_GATHER_MAX_POSITIVES", 0)
    slow = metrics.cross_modal_retrieval(img, txt, t2i, img_keys=keys, chunk_size=7)
    assert fast == slow
