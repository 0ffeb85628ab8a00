"""cookie_lib.bench: the quick benchmark run end to end (subprocess) and the one-stream extrapolation helpers."""
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

from cookie_lib.bench import (C_T, C_V, T_V, extrapolate_linear, head_config, one_stream_pairs, random_text_tokens,
                              score_pairs)
from cookie_lib.model import OneStreamModel

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["benchmark", "setting", "metric", "value", "unit", "note"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    # one thread: stable timings when other processes share the cores (OpenMP barriers stall when oversubscribed)
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.bench", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_tidy_csv(quick_run):
    out, stdout = quick_run
    with open(out / "benchmarks.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert {r["benchmark"] for r in rows} == {"environment", "inference", "training", "compute", "eval_scale"}
    for r in rows:
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
    assert ("eval_scale", "seconds") in metrics
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
