"""cookie_lib.study.report: summary table, Markdown writer, benchmark CSV parsing, summary.md, README blocks."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from cookie_lib.study import report as R

from conftest import ROOT


def _runs() -> pd.DataFrame:
    return pd.DataFrame([
        {"variant": "b", "seed": 0, "rsum": 100.0, "img_r1": 10.0},
        {"variant": "a", "seed": 0, "rsum": 200.0, "img_r1": 20.0},
        {"variant": "a", "seed": 1, "rsum": 202.0, "img_r1": 21.0},
        {"variant": "a", "seed": 2, "rsum": 204.0, "img_r1": 25.0},
    ])


def test_summary_table_mean_std_seed_count_and_order():
    t = R.summary_table(_runs(), ["rsum", "img_r1", "not_a_column"], order=["a", "missing", "b"])
    assert list(t.index) == ["a", "b"] and list(t.columns) == ["seeds", "rsum", "img_r1"]
    assert t.loc["a", "seeds"] == 3 and t.loc["b", "seeds"] == 1
    assert t.loc["a", "rsum"] == "202.0 ± 2.0"  # sample std (ddof=1) of 200, 202, 204
    sd = pd.Series([20.0, 21.0, 25.0]).std(ddof=1)
    assert t.loc["a", "img_r1"] == f"22.0 ± {round(sd, 1)}"
    assert t.loc["b", "rsum"] == "100.0 (1 seed)"  # no "± 0.0" for a single run
    assert list(R.summary_table(_runs(), ["rsum"]).index) == ["b", "a"]  # default: first appearance


def test_to_markdown_table_shapes():
    md = R.to_markdown(R.summary_table(_runs(), ["rsum"]))
    assert md.endswith("\n")
    lines = md.splitlines()
    assert lines[0] == "| variant | seeds | rsum |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| b | 1 | 100.0 (1 seed) |" and len(lines) == 4
    plain = R.to_markdown(pd.DataFrame({"x": [1, 2], "y": ["p", "q"]}))  # a RangeIndex is not a column
    assert plain.splitlines() == ["| x | y |", "|---|---|", "| 1 | p |", "| 2 | q |"]


@pytest.mark.parametrize("structured", [False, True])
def test_inference_ratio_takes_the_largest_gallery(tmp_path, structured):
    rows = [("inference", "cpu N=100 M=500", "ratio_two_over_one", 0.01, 100),
            ("inference", "cpu N=5000 M=25000", "ratio_two_over_one", 0.002, 5000),
            ("inference", "cpu N=1000 M=5000", "ratio_two_over_one", 0.004, 1000),
            ("inference", "cpu N=5000 M=25000", "two_stream_s", 3.0, 5000)]
    cols = ["benchmark", "setting", "metric", "value", "n_images"]
    df = pd.DataFrame(rows, columns=cols)
    if structured:  # the parser must use n_images, not the setting string
        df["setting"] = ["small", "large", "medium", "large"]
    else:
        df = df.drop(columns="n_images")
    df.to_csv(tmp_path / "b.csv", index=False)
    got = R.inference_ratio(tmp_path / "b.csv")
    assert got == {"setting": "large" if structured else "cpu N=5000 M=25000", "ratio": 0.002}
    assert R.inference_ratio(tmp_path / "absent.csv") is None
    row = R.inference_claim_row(got)
    assert row["b"] == R.PAPER_INFERENCE_RATIO and row["diff (relative %)"] == round(100 * (0.002 / 0.003 - 1), 1)
    assert math.isnan(row["p (Welch)"])


def test_summary_markdown_sections_frozen_row_and_ft_runs_left_out():
    runs = pd.concat([_runs(), pd.DataFrame([{"variant": "a_ft", "seed": 0, "rsum": 1.0, "img_r1": 1.0}])])
    claims = pd.DataFrame([{"claim": "a beats b", "paper": "a > b", "comparison": "a vs b", "metric": "rsum",
                            "diff (points)": 102.0, "diff (relative %)": 102.0, "p (Welch)": 0.01,
                            "reproduced?": "yes"}])
    md = R.summary_markdown("smoke", [0, 1, 2], runs, {"img_r1": 12.34}, claims,
                            {"setting": "N=5000", "ratio": 0.0015})
    assert md.startswith("# COOKIE replication: results (smoke profile, seeds [0, 1, 2])")
    headline = R.section(md, "Headline metrics")
    assert "a_ft" not in headline and "| frozen encoders | - | - | 12.3 |" in headline
    claims_text = R.section(md, "Claims")
    assert "**a beats b**" in claims_text and "reproduced, +102.00 points" in claims_text
    assert "1.5/1000" in claims_text and "0.50x the paper's ratio" in claims_text
    with pytest.raises(ValueError, match="no '## Nope' section"):
        R.section(md, "Nope")


@pytest.mark.parametrize("verdict,words", [("yes", "reproduced,"), ("no: within noise", "within noise"),
                                           ("no: opposite", "the opposite holds"), ("undetermined", "undetermined")])
def test_claim_sentence_per_verdict(verdict, words):
    row = {"claim": "c", "comparison": "a vs b", "metric": "m", "paper": "p", "diff (points)": -1.0,
           "diff (relative %)": -2.0, "p (Welch)": 0.5, "reproduced?": verdict}
    s = R.claim_sentence(row)
    assert words in s and "-1.00 points (-2.0 %)" in s


def test_readme_blocks_need_markers_and_match_committed_results():
    with pytest.raises(ValueError, match="lacks the <!-- results:start -->"):
        R.update_readme_text("no markers here", ROOT / "results")
    readme = (ROOT / "README.md").read_text()
    assert R.update_readme_text(readme, ROOT / "results") == readme  # also scripts/update_readme.py --check
