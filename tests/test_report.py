"""cookie_lib.study.views.report: summary table, Markdown writer, convergence and claims views, README blocks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cookie_lib.study import analyses as A
from cookie_lib.study.views import report as R
from cookie_lib.study.views import tables

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
    md = tables.to_markdown(R.summary_table(_runs(), ["rsum"]))
    assert md.endswith("\n")
    lines = md.splitlines()
    assert lines[0] == "| variant | seeds | rsum |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| b | 1 | 100.0 (1 seed) |" and len(lines) == 4
    plain = tables.to_markdown(pd.DataFrame({"x": [1, 2], "y": ["p", "q"]}))  # a RangeIndex is not a column
    assert plain.splitlines() == ["| x | y |", "|---|---|", "| 1 | p |", "| 2 | q |"]


def test_frozen_baseline_row_is_deterministic_and_missing_metrics_are_dashes():
    runs = pd.concat([_runs(), pd.DataFrame([{"variant": "frozen", "seed": None, "img_r1": 30.0}])], ignore_index=True)
    t = R.summary_table(runs, ["rsum", "img_r1"])
    assert t.loc["frozen", "seeds"] == 0 and t.loc["frozen", "img_r1"] == "30.0" and t.loc["frozen", "rsum"] == "-"


def test_write_table_writes_csv_and_markdown(tmp_path):
    tables.write_table(R.summary_table(_runs(), ["rsum"]), tmp_path / "t")
    assert (tmp_path / "t.csv").read_text().startswith("variant,seeds,rsum")
    assert (tmp_path / "t.md").read_text().startswith("| variant | seeds | rsum |")


def test_convergence_table_changes_and_final_lr():
    results = [{"val_epochs": [{"rsum": 10.0}, {"rsum": 20.0}, {"rsum": 21.0}, {"rsum": 21.5}],
                "history": [{"lr": 1.0}, {"lr": 0.5}, {"lr": 0.1}]}] * 2
    t = A.convergence_table(results, ["rsum", "absent"])
    assert list(t.index) == ["rsum"]
    assert t.loc["rsum", "final"] == 21.5 and t.loc["rsum", "change, last epoch"] == 0.5
    assert t.loc["rsum", "change, last half"] == 0.5 and t.loc["rsum", "final lr / peak lr"] == 0.1


def test_plateau_rule_reads_the_mean_slope_over_seeds():
    """A variant is at its plateau when the mean over seeds of its validation-mR slope over the window is
    below delta; jitter of one epoch does not decide it."""
    rise = [{"val_epochs": [{"rsum": 6 * y} for y in (10, 12, 13, 14, 15)], "history": [{"lr": 1.0}]}]
    flat = [{"val_epochs": [{"rsum": 6 * y} for y in (10, 12, 13, 13.3, 12.9 + j)], "history": [{"lr": 1.0}]}
            for j in (0.0, 0.2)]
    assert A.plateau_slope([10, 12, 13, 14, 15], 3) == pytest.approx(1.0)
    t = A.convergence_by_variant({"rise": rise, "flat": flat}, rule={"window": 3, "delta": 0.1})
    assert not t.loc["rise", "at plateau"] and t.loc["flat", "at plateau"]
    assert t.loc["flat", "mR slope, last 3 epochs"] == pytest.approx(np.mean([-0.05, 0.05]))
    assert t.loc["rise", "epochs"] == 5 and np.isnan(t.loc["rise", "slope se"])  # one seed: no SE
    text = R.convergence_conclusion(A.convergence_table(rise, ["rsum"]), pd.Series({"x": 2.0}),
                                    pd.Series({"x": 1.0}), t)
    assert "1 of 2 variants at their plateau" in text and "not at plateau: rise" in text


def test_claims_view_formats_ci_and_p_values():
    row = {"id": "P1", "claim_id": "C1", "family": "primary", "claim": "c", "a": "a", "b": "b", "metric": "m",
           "n_seeds": 5, "n_concepts": 250.0, "diff": 1.234, "rel_pct": 5.67, "ci_low": 0.5, "ci_high": 2.0,
           "seed_share": 0.4567, "p_raw": 0.0001, "p_holm": 0.04, "mde": 1.5, "paper": "+5.7 %",
           "verdict": "reproduced", "verdict_seed": "inconclusive", "vs_paper": np.nan}
    v = R.claims_view(pd.DataFrame([row]))
    assert v.loc[0, "95 % CI"] == "[+0.50, +2.00]" and v.loc[0, "p"] == "< 0.001" and v.loc[0, "p (Holm)"] == "0.040"
    assert v.loc[0, "diff (points)"] == 1.23 and v.loc[0, "verdict"] == "reproduced"
    assert v.loc[0, "seed-level verdict"] == "inconclusive (differs)" and v.loc[0, "concepts"] == "250"
    assert v.loc[0, "seed share of SE^2"] == 0.46 and v.loc[0, "vs the paper's size"] == "-"


def test_readme_blocks_need_markers_and_match_committed_results():
    with pytest.raises(ValueError, match="lacks the <!-- results:start -->"):
        R.update_readme_text("no markers here", ROOT / "results")
    readme = (ROOT / "README.md").read_text()
    assert R.update_readme_text(readme, ROOT / "results") == readme  # also scripts/update_readme.py --check


def test_plateau_note_flags_the_contrasts_of_a_variant_still_improving():
    conv = pd.DataFrame({"at plateau": [True, False]}, index=["a", "b"])
    claims = pd.DataFrame({"id": ["P1", "P2"], "a": ["a", "a"], "b": ["c", "b"]})
    note = R.plateau_note(conv, claims)
    assert "1 of 2 variants at their plateau" in note and "not at plateau: b" in note and note.rstrip().endswith("P2.")
    assert "not at plateau" not in R.plateau_note(conv.assign(**{"at plateau": True}), claims)
