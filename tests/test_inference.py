"""The claims' inference on constructed data: concept-clustered bootstrap, variance components, the seed-level
sensitivity test, tests against the paper's effect, the claim-level rule, per-query files that recompute the
table byte for byte, the 2 x 2 factorial and the precision analysis."""
from __future__ import annotations

import io
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cookie_lib.study import analyses as A
from cookie_lib.study import prereg as P
from cookie_lib.study import stats as ST
from cookie_lib.study import verdicts as V
from cookie_lib.study.views import claims as VC

N_BOOT = 200


def clustered_runs(variants: dict[str, float], seeds, n_concepts=60, per_concept=4, concept_sd=3.0,
                   concept_diff_sd=1.5, seed_sd=0.2, noise_sd=1.0, rng=0):
    """value[v, s, q] = 50 + offset[v] + concept effect + (v != base) * concept-level difference effect +
    seed effect + noise. The concept-level difference effect makes queries of a concept correlated *in the
    difference*, which is what the clustered bootstrap must see."""
    rng = np.random.default_rng(rng)
    labels = [f"c{c}" for c in range(n_concepts) for _ in range(per_concept)]
    code = np.repeat(np.arange(n_concepts), per_concept)
    base = rng.normal(0, concept_sd, n_concepts)[code]
    out = []
    for j, (v, off) in enumerate(variants.items()):
        cdiff = 0 if j == 0 else rng.normal(0, concept_diff_sd, n_concepts)[code]
        for s in seeds:
            vals = 50 + off + base + cdiff + rng.normal(0, seed_sd) + rng.normal(0, noise_sd, len(code))
            out.append({"variant": v, "seed": s, "per_query": {"m": vals.tolist()}})
    return out, {"m": labels}


def test_cluster_bootstrap_sees_concept_correlation():
    results, clusters = clustered_runs({"a": 0.0, "b": 0.0}, range(5))
    d = ST.paired_differences(results, "a", "b", ["m"])["diffs"]
    codes, C = ST.cluster_codes(clusters, ["m"], [d[0].shape[1]])
    clus = ST.bootstrap_difference(d, codes, C, N_BOOT, rng=1)
    naive = ST.bootstrap_difference(d, None, None, N_BOOT, rng=1)
    # queries of a concept share their difference: the clustered SE is clearly wider than the per-query one
    assert clus["se"] > 1.4 * naive["se"]
    # and it agrees with the analytic components it reports
    assert clus["se"] == pytest.approx(np.sqrt(clus["v_seed"] + clus["v_concept"]), rel=0.25)
    assert clus["n_concepts"] == 60 and clus["ci_low"] < clus["diff"] < clus["ci_high"]


def test_variance_components_separate_seeds_from_concepts():
    # only concepts vary in the difference: the seed component is ~0 and df ~ C - 1
    results, clusters = clustered_runs({"a": 0.0, "b": 1.0}, range(5), seed_sd=0.0, noise_sd=0.01)
    d = ST.paired_differences(results, "a", "b", ["m"])["diffs"]
    codes, C = ST.cluster_codes(clusters, ["m"], [d[0].shape[1]])
    comp = ST.variance_components(d, codes, C)
    assert comp["v_seed"] < 1e-3 * comp["v_concept"] and comp["df"] > 50
    # per-concept influence equals the textbook cluster variance of a mean of equal-size clusters
    per_concept = d[0].mean(axis=0).reshape(60, 4).mean(axis=1)
    assert comp["v_concept"] == pytest.approx(per_concept.var(ddof=1) / 60, rel=1e-9)


def test_seed_level_test_is_scipys_paired_t_test():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 6), rng.normal(0, 1, 6)
    res = ST.seed_level_test(a - b, sesoi=0.5)
    assert res["p_seed"] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def prereg(contrasts, claims=None):
    return {"alpha": 0.05, "power": 0.8, "confidence": 0.95, "min_seeds": {"primary": 5, "secondary": 3},
            "contrasts": contrasts, "claims": claims or []}


def contrast(id_, a, b, **kw):
    c = {"id": id_, "family": "primary", "claim": f"claim {id_}", "a": a, "b": b, "metric": "m",
         "direction": "a > b", "sesoi": 1.0, "sesoi_reason": "test", "paper": "+5.7 %"}
    return {**c, **kw}


@pytest.fixture(scope="module")
def table():
    """a is 1 point above b, precisely: significant, and far smaller than the paper's +5.7 (both readings)."""
    results, clusters = clustered_runs({"b": 0.0, "a": 1.0, "same": 0.0}, range(5), concept_diff_sd=0.3,
                                       seed_sd=0.05, noise_sd=0.3)
    pre = prereg([contrast("P1", "a", "b", paper_effect=5.7, claim_id="C1"),
                  contrast("P2", "same", "b", claim_id="C2", sesoi=1.0)],
                 claims=[{"id": "C1", "claim": "a helps", "contrasts": ["P1"]},
                         {"id": "C2", "claim": "same helps", "contrasts": ["P2"]}])
    return V.claims_table(results, pre, N_BOOT, clusters=clusters), pre, results, clusters


def test_smaller_than_the_papers_effect(table):
    df = table[0].set_index("id")
    assert df.loc["P1", "verdict"] == "reproduced"
    assert df.loc["P1", "vs_paper"] == "smaller than the paper's (both readings)"
    assert df.loc["P1", "p_below_paper_pts_holm"] < 0.05 and df.loc["P1", "p_below_paper_rel_holm"] < 0.05
    assert df.loc["P2", "verdict"] == "no effect"
    assert df.loc["P1", "verdict_seed"] in V.VERDICTS and isinstance(df.loc["P1", "differs"], (bool, np.bool_))


def test_claim_level_rule(table):
    df, pre = table[0], table[1]
    cv = V.claim_verdicts(df, pre).set_index("claim_id")
    assert cv.loc["C1", "verdict"] == "reproduced" and "smaller" in cv.loc["C1", "size"]
    assert cv.loc["C2", "verdict"] == "no effect"
    # every branch of the rule, on a hand-made table
    rows = [("X1", "reproduced"), ("X2", "contradicted"), ("X3", "inconclusive"), ("X4", "no effect")]
    fake = pd.DataFrame({"id": [i for i, _ in rows], "verdict": [v for _, v in rows], "family": "primary",
                         "paper_effect": np.nan, "vs_paper": np.nan, "verdict_seed": [v for _, v in rows]})
    claims = [{"id": "mixed", "claim": "", "contrasts": ["X1", "X2"]},
              {"id": "rep", "claim": "", "contrasts": ["X1", "X3"]},
              {"id": "con", "claim": "", "contrasts": ["X2", "X4"]},
              {"id": "none", "claim": "", "contrasts": ["X4"]},
              {"id": "inc", "claim": "", "contrasts": ["X3", "X4"]},
              # rule "all": a gain must beat every comparator, so one undecided contrast leaves it open
              {"id": "all_open", "claim": "", "contrasts": ["X1", "X3"], "rule": "all"},
              {"id": "all_rep", "claim": "", "contrasts": ["X1"], "rule": "all"}]
    got = V.claim_verdicts(fake, {"claims": claims}).set_index("claim_id").verdict.to_dict()
    assert got == {"mixed": "mixed", "rep": "reproduced", "con": "contradicted", "none": "no effect",
                   "inc": "inconclusive", "all_open": "inconclusive", "all_rep": "reproduced"}


def test_per_query_file_recomputes_the_table_byte_for_byte(table, tmp_path):
    df, pre, results, clusters = table
    import yaml

    pre_path = tmp_path / "prereg.yaml"
    pre_path.write_text(yaml.safe_dump(pre))
    V.save_per_query(results, clusters, tmp_path / "per_query.npz")
    first = V.recompute(tmp_path / "per_query.npz", N_BOOT, pre_path).to_csv(index=False)
    (tmp_path / "claims.csv").write_text(first)
    args = ["recompute", "--per-query", str(tmp_path / "per_query.npz"), "--resamples", str(N_BOOT),
            "--prereg", str(pre_path)]
    assert V.main(args + ["--check", str(tmp_path / "claims.csv")]) == 0
    (tmp_path / "claims.csv").write_text(first.replace("reproduced", "contradicted", 1))
    assert V.main(args + ["--check", str(tmp_path / "claims.csv")]) == 1
    # another CPU's last bits pass, a real change of a number does not
    import pandas as pd
    frame = pd.read_csv(io.StringIO(first))
    num = frame.select_dtypes("float").columns
    for factor, rc in ((1 + 1e-12, 0), (1 + 1e-6, 1)):
        frame2 = frame.copy()
        frame2[num] = frame2[num] * factor
        (tmp_path / "claims.csv").write_text(frame2.to_csv(index=False))
        assert V.main(args + ["--check", str(tmp_path / "claims.csv")]) == rc, factor
    assert V.check_table(tmp_path / "claims.csv", first) == ""
    with pytest.raises(ValueError, match="not found"):
        V.load_per_query(tmp_path / "missing.npz")


def test_figure_plots_the_tables_sign(table):
    df = table[0].copy()
    df.loc[0, "direction"] = "a < b"  # the paper predicts a negative difference: plot a - b all the same
    fig = VC.claims_figure(df)
    xs = sorted(float(line.get_xdata()[0]) for line in fig.axes[0].lines if line.get_marker() == "o")
    assert xs == pytest.approx(sorted(df["diff"].astype(float)))


def test_factorial_recovers_main_effects_and_interaction():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(6):
        block = rng.normal(0, 2)
        for v, (vis, txt) in A.FACTORIAL.items():
            y = 30 + block + 2.0 * vis + 1.0 * txt - 1.5 * vis * txt + rng.normal(0, 0.05)
            rows.append({"variant": v, "seed": s, "m": y})
    t = A.factorial_table(pd.DataFrame(rows), ["m"]).set_index("term")
    # effect coding: main effect = average over the other factor's levels; interaction = difference of differences
    assert t.loc["visual loss (main effect)", "estimate"] == pytest.approx(2.0 - 1.5 / 2, abs=0.1)
    assert t.loc["textual loss (main effect)", "estimate"] == pytest.approx(1.0 - 1.5 / 2, abs=0.1)
    assert t.loc["interaction", "estimate"] == pytest.approx(-1.5, abs=0.1)
    assert "interaction" in A.factorial_markdown(t.reset_index())


def test_precision_analysis():
    # more seed variance -> more seeds; a test set too small for the SESOI -> "no effect" unreachable
    few = A.seeds_needed(sigma2=1.0, v_concept=0.01, n_concepts=200, effect=1.0, alpha=0.005, power=0.8)
    many = A.seeds_needed(sigma2=4.0, v_concept=0.01, n_concepts=200, effect=1.0, alpha=0.005, power=0.8)
    assert 2 <= few < many
    assert A.seeds_needed(1.0, v_concept=1.0, n_concepts=200, effect=1.0, alpha=0.005, power=0.8,
                          equivalence=True) is None
    claims = pd.DataFrame([{"id": "P1", "family": "primary", "metric": "m", "v_seed": 0.2, "n_seeds": 5,
                            "v_concept": 1.0, "n_concepts": 100, "sesoi": 1.0, "paper_effect": 5.7, "mean_b": 40.0}])
    row = A.precision_table(claims).iloc[0]
    assert row["no effect reachable"] == bool(stats.norm.ppf(1 - 0.05) * 1.0 < 1.0) is False
    assert row["seeds to show no effect"] == f"> {A.MAX_SEEDS}"


def test_preregistered_sesois_follow_the_rule_on_the_committed_pilot():
    """The SESOIs of docs/preregistration.yaml are the stated rule applied to the committed pilot data."""
    from conftest import ROOT

    pilot = V.recompute(ROOT / "docs" / "pilot" / "per_query.npz", 99)
    registered = {c["id"]: c["sesoi"] for c in P.load_prereg()["contrasts"]}
    rule = A.sesoi_rule(pilot)
    assert rule and all(registered[i] == v for i, v in rule.items()), \
        {i: (registered[i], v) for i, v in rule.items() if registered[i] != v}


def test_the_amendment_log_lists_the_committed_preregistration():
    """Every edit of the pre-registration must be logged with its sha256 in docs/preregistration-amendments.md."""
    from conftest import ROOT

    log = (ROOT / "docs" / "preregistration-amendments.md").read_text()
    assert f"`{P.prereg_sha256()[:12]}`" in log
    assert f"version: {P.load_prereg()['version']}" in P.DEFAULT_PREREG.read_text()
