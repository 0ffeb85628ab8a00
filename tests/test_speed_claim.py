"""The inference-time claim when a timing fit is degenerate: every derived field is a value or an explicit
"not determined (reason)", in the cost model's fields, the report's table and notebook 06 (smoke profile)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cookie_lib.study.views import report
from cookie_lib.study.views import tables
from cookie_lib.study.bench.costmodel import PAPER_INFERENCE_RATIO, CostModel, crossing_n, derived_fields, end_to_end_seconds

ROOT = Path(__file__).resolve().parent.parent
TWO = CostModel(1e-3, 1e-9)
DEGENERATE = {
    "b = 0": CostModel(2e-3, 0.0),  # noise let NNLS put the whole cost on a
    "a = b = 0": CostModel(0.0, 0.0),
    "never crosses": CostModel(1.1e-3, 1e-8),  # b2/b1 = 0.1 > 3/1000: the ratio never falls that low
}


def degenerate_cost_json(path: Path) -> Path:
    """An inference_cost_model.json as the benchmark writes it, with one degenerate fit per model class."""
    iv = {"low": None, "high": None, "reason": "60 % of bootstrap refits never cross 3/1000",
          "undetermined_fraction": 0.6, "resamples": 99}
    classes = {name: {**derived_fields(TWO, one, PAPER_INFERENCE_RATIO), "interval": iv, "measured": True}
               for name, one in DEGENERATE.items()}
    points = [dict(strategy=s, n_images=n, n_captions=5 * n, repeat=r, role="fit", seconds=0.1 * n, pairs=0)
              for s in ("two-stream", "rerank 10", "rerank 50", "one-stream") for n in (4, 12) for r in range(2)]
    blob = {"device": "cpu", "threads": 1, "paper_ratio": PAPER_INFERENCE_RATIO, "classes": classes,
            "pipeline": "untrained models (test)", "trained": False, "fit_ns": [4, 12], "holdout_n": 8, "repeats": 2,
            "points": points, "fits": {s: {"a": 2e-3, "b": 0.0} for s in ("two-stream", "rerank 10", "rerank 50",
                                                                              "one-stream")},
            "holdout": {"one-stream": {"n_images": 8, "n_captions": 40, "measured_s": 0.5, "predicted_s": 0.45,
                                       "relative_error": -0.1}}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "inference_cost_model.json").write_text(json.dumps(blob))
    return path


def test_derived_fields_give_a_reason_for_every_missing_value():
    f = derived_fields(TWO, DEGENERATE["b = 0"], 3e-3)
    assert f["crossing_n_images"] is None and "b fitted as 0" in f["crossing_n_reason"]
    assert f["ratio_large_n_limit"] is None and f["ratio_large_n_reason"] == "one-stream b fitted as 0"
    assert f["ratio_small_n_limit"] == pytest.approx(0.5) and f["ratio_small_n_reason"] == ""
    f = derived_fields(TWO, DEGENERATE["a = b = 0"], 3e-3)
    assert f["crossing_n_images"] is None and "a = b = 0" in f["crossing_n_reason"]
    assert f["ratio_small_n_limit"] is None and f["ratio_small_n_reason"] == "one-stream a fitted as 0"
    f = derived_fields(TWO, DEGENERATE["never crosses"], 3e-3)
    assert f["crossing_n_images"] is None and f["crossing_n_reason"].startswith("never crosses")
    assert f["ratio_large_n_limit"] == pytest.approx(0.1)
    ok = derived_fields(TWO, CostModel(1.2e-3, 2e-5), 3e-3)  # a regular fit: every value, no reason
    assert ok["crossing_n_images"] == pytest.approx(crossing_n(TWO, CostModel(1.2e-3, 2e-5), 3e-3))
    assert ok["crossing_n_reason"] == ok["ratio_large_n_reason"] == ok["ratio_small_n_reason"] == ""


def test_fmt_or_reason():
    assert report.fmt_or_reason(0.0123, ".3g", scale=1000, suffix="/1000") == "12.3/1000"
    assert report.fmt_or_reason(None, ".3g", "b = 0") == "not determined (b = 0)"
    assert report.fmt_or_reason(float("nan"), ".3g") == "not determined"


def test_inference_claim_prints_not_determined(tmp_path):
    df = report.inference_claim(degenerate_cost_json(tmp_path))
    rows = df.set_index("one-stream model")
    assert rows.loc["b = 0", "N where the ratio = 3/1000"].startswith("not determined (one-stream b fitted as 0")
    assert rows.loc["b = 0", "ratio as N -> infinity"] == "not determined (one-stream b fitted as 0)"
    assert rows.loc["a = b = 0", "N where the ratio = 3/1000"] == "not determined (one-stream fit is a = b = 0)"
    assert rows.loc["never crosses", "N where the ratio = 3/1000"].startswith("not determined (never crosses")
    assert rows.loc["never crosses", "ratio as N -> infinity"] == "100/1000"
    assert rows.loc["b = 0", "95 % interval (bootstrap over repeats)"].startswith("not determined (60 %")
    assert "held-out N = 8" in df.attrs["exhaustive"] and "-10 %" in df.attrs["exhaustive"]
    assert "not determined" in tables.to_markdown(df)


def test_speed_view_mean_sd_over_seeds_and_end_to_end_time(tmp_path):
    import pandas as pd

    results = degenerate_cost_json(tmp_path)
    rows = [dict(gallery="subset 4", n_images=4, n_captions=20, method=m, k=k, i2t_r1=10.0 + seed + up, t2i_r1=5.0,
                 seconds=0.01, pairs_scored=p, seed=seed)
            for seed in (0, 1, 2) for m, k, p, up in (("two-stream", 0, 0, 0), ("one-stream exhaustive", 20, 80, 2))]
    v = report.speed_view(pd.DataFrame(rows), results).set_index("method")
    assert v.loc["two-stream", "i2t R@1"] == "11.0 ± 1.0" and v.loc["two-stream", "seeds"] == 3
    assert v.loc["one-stream exhaustive", "seconds"] == pytest.approx(0.4)  # median of the measured N = 4 repeats
    assert v.loc["one-stream exhaustive", "time source"] == "measured, median of 2"
    far = end_to_end_seconds(results, "one-stream exhaustive", 100, 500)
    assert far == (pytest.approx(2e-3 * 600), "cost model")
    assert end_to_end_seconds(tmp_path / "none", "two-stream", 4, 20) == (None, "benchmark not run")
    text = report.speed_sentence(pd.DataFrame(rows), results)
    assert "13.0 ± 1.0" in text and "(above it on the mean of both directions)" in text


@pytest.mark.slow
def test_notebook_06_runs_on_a_degenerate_cost_model(tmp_path):
    """Smoke notebook 06 (papermill) on a results folder whose cost model has b = 0 and no crossing."""
    results = degenerate_cost_json(tmp_path / "results")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "06_results.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", "notebooks/06_results.ipynb", str(out), "-k", "python3",
                           "-p", "results_dir", str(results), "--cwd", "notebooks", "--no-progress-bar"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (results / "summary.md").read_text()
    assert "not determined (one-stream b fitted as 0" in summary and "never crosses" in summary
