"""Verdict logic on constructed data (issue 12): every verdict branch, Holm against statsmodels, CI coverage,
the seedless baseline, and the pre-registration file's required fields. Small n_resamples keeps it fast."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.multitest import multipletests

from cookie_lib.study import prereg as P
from cookie_lib.study import stats as ST
from cookie_lib.study import verdicts as V
from cookie_lib.study.views import claims as VC

N_BOOT = 300


def runs(variant, seeds, offset, rng, queries, seed_sd=0.3, noise_sd=1.0, query_effect=None):
    """Result dicts for ``variant``: value[s, q] = 50 + offset + query_effect[q] + seed effect + noise, on
    per-query lists ``queries`` (name -> length). ``query_effect`` is shared between variants (pairing)."""
    out = []
    for s in seeds:
        seed_shift = rng.normal(0, seed_sd)
        pq = {name: list(50 + offset + query_effect[name] + seed_shift + rng.normal(0, noise_sd, q))
              for name, q in queries.items()}
        out.append({"variant": variant, "seed": s, "per_query": pq})
    return out


def contrast(id_, a, b, metric="m", family="primary", direction="a > b", sesoi=1.0, paper="+5.7 %"):
    return {"id": id_, "family": family, "claim": f"claim {id_}", "a": a, "b": b, "metric": metric,
            "direction": direction, "sesoi": sesoi, "sesoi_reason": "test", "paper": paper}


def prereg(contrasts, **extra):
    return {"alpha": 0.05, "power": 0.8, "confidence": 0.95, "min_seeds": {"primary": 5, "secondary": 3},
            "metrics": {"mr": ["i2t", "t2i"]}, "contrasts": contrasts, **extra}


@pytest.fixture(scope="module")
def branch_data():
    """cookie vs: worse (-5: reproduced), better (+5: contradicted), same (0, tight: no effect),
    noisy (0, seed sd 4: inconclusive)."""
    rng = np.random.default_rng(0)
    queries = {"m": 200}
    qe = {"m": rng.normal(0, 10, 200)}
    seeds = range(5)
    results = runs("cookie", seeds, 0, rng, queries, query_effect=qe)
    results += runs("worse", seeds, -5, rng, queries, query_effect=qe)
    results += runs("better", seeds, +5, rng, queries, query_effect=qe)
    results += runs("same", seeds, 0, rng, queries, query_effect=qe, seed_sd=0.05, noise_sd=0.5)
    results += runs("noisy", seeds, 0.3, rng, queries, query_effect=qe, seed_sd=4.0)
    pre = prereg([contrast("R", "cookie", "worse"), contrast("C", "cookie", "better"),
                  contrast("N", "cookie", "same"), contrast("I", "cookie", "noisy")])
    return results, pre


def test_every_verdict_branch(branch_data):
    results, pre = branch_data
    df = V.claims_table(results, pre, n_resamples=N_BOOT).set_index("id")
    assert df.loc["R", "verdict"] == "reproduced" and df.loc["R", "diff"] == pytest.approx(5, abs=1)
    assert df.loc["C", "verdict"] == "contradicted"
    assert df.loc["N", "verdict"] == "no effect" and df.loc["N", "tost_p_holm"] < 0.05
    assert df.loc["I", "verdict"] == "inconclusive"
    assert df.loc["I", "mde"] > 1.0  # the noisy contrast cannot detect the SESOI
    assert set(V.COLUMNS) - {"id"} <= set(df.columns)
    assert (df.n_seeds == 5).all()
    assert (df.ci_low <= df["diff"]).all() and (df["diff"] <= df.ci_high).all()
    assert df.loc["R", "rel_pct"] == pytest.approx(100 * df.loc["R", "diff"] / df.loc["R", "mean_b"])
    assert df.loc["R", "paper_note"] == V.PAPER_UNIT_NOTE


def test_direction_a_less_than_b(branch_data):
    results, pre = branch_data
    pre = prereg([contrast("R", "worse", "cookie", direction="a < b"),
                  contrast("C", "better", "cookie", direction="a < b")])
    df = V.claims_table(results, pre, n_resamples=N_BOOT).set_index("id")
    assert df.loc["R", "verdict"] == "reproduced" and df.loc["R", "diff"] < 0
    assert df.loc["C", "verdict"] == "contradicted"


def test_decide_table():
    assert ST.decide(2.0, 0.01, 0.9, "a > b", 0.05) == "reproduced"
    assert ST.decide(-2.0, 0.01, 0.9, "a > b", 0.05) == "contradicted"
    assert ST.decide(-2.0, 0.01, 0.9, "a < b", 0.05) == "reproduced"
    assert ST.decide(0.1, 0.5, 0.01, "a > b", 0.05) == "no effect"
    assert ST.decide(0.1, 0.5, 0.5, "a > b", 0.05) == "inconclusive"


def test_holm_matches_statsmodels_known_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # by hand: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    np.testing.assert_allclose(ST.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(ST.holm(p), multipletests(p, method="holm")[1])
    # a missing member counts as p = 1: the family keeps its size
    np.testing.assert_allclose(ST.holm([0.01, np.nan])[0], 0.02)
    assert np.isnan(ST.holm([0.01, np.nan])[1])


def test_table_holm_is_statsmodels_over_primary_only(branch_data):
    results, pre = branch_data
    pre = copy.deepcopy(pre)
    pre["contrasts"].append(contrast("S", "cookie", "noisy", family="secondary"))
    df = V.claims_table(results, pre, n_resamples=N_BOOT)
    prim = df[df.family == "primary"]
    np.testing.assert_allclose(prim.p_holm, multipletests(prim.p_raw, method="holm")[1])
    assert df.loc[df.id == "S", "p_holm"].isna().all()  # secondary: not in the Holm family


def test_ci_covers_true_difference():
    """Two-way synthetic data with seed and query effects: the 95 % CI covers the true difference in
    most replications (a 5-seed bootstrap undercovers a little; 0.75 guards against a broken CI)."""
    rng = np.random.default_rng(1)
    true, hits, reps = 2.0, 0, 30
    for _ in range(reps):
        qe = rng.normal(0, 5, 60)
        a = 50 + true + qe + rng.normal(0, 1.0, (5, 1)) + rng.normal(0, 3, (5, 60))
        b = 50 + qe + rng.normal(0, 1.0, (5, 1)) + rng.normal(0, 3, (5, 60))
        ci = ST.bootstrap_difference([a - b], n_resamples=N_BOOT, rng=rng)
        hits += ci["ci_low"] <= true <= ci["ci_high"]
    assert hits / reps >= 0.75, hits


def test_bootstrap_statistic_is_the_mean_of_resampled_rows_and_columns():
    """The count-weighted statistic equals a direct gather over resampled seeds and queries."""
    rng = np.random.default_rng(2)
    d = rng.normal(size=(4, 7))
    s_idx, q_idx = rng.integers(0, 4, (3, 4)), rng.integers(0, 7, (3, 7))
    direct = np.array([d[s][:, q].mean() for s, q in zip(s_idx, q_idx)])
    via_counts = ((ST._row_counts(s_idx, 4) / 4) * ((ST._row_counts(q_idx, 7) / 7) @ d.T)).sum(-1)
    np.testing.assert_allclose(via_counts, direct)


def test_composite_metric_and_frozen_baseline():
    """mr = mean of the i2t and t2i lists' means; a seedless 'frozen' run pairs with every seed."""
    rng = np.random.default_rng(3)
    queries = {"i2t": 30, "t2i": 50, "m": 40}
    qe = {k: rng.normal(0, 5, n) for k, n in queries.items()}
    results = runs("cookie", range(5), 1.0, rng, queries, query_effect=qe)
    results += runs("other", range(5), 0.0, rng, queries, query_effect=qe)
    frozen = runs(V.FROZEN, [None], 0.0, rng, {"m": 40}, query_effect=qe)
    pre = prereg([contrast("M", "cookie", "other", metric="mr"), contrast("F", "cookie", V.FROZEN)])
    # a DataFrame (one row per run, a per_query dict per row; the seedless run's seed becomes NaN) works too
    df = V.claims_table(pd.DataFrame(results + frozen), pre, n_resamples=N_BOOT).set_index("id")
    mean = lambda v, k: np.mean([r["per_query"][k] for r in results if r["variant"] == v])
    want = (mean("cookie", "i2t") + mean("cookie", "t2i")) / 2 - (mean("other", "i2t") + mean("other", "t2i")) / 2
    assert df.loc["M", "diff"] == pytest.approx(want)
    assert df.loc["M", "n_queries"] == "30+50"
    assert df.loc["F", "n_seeds"] == 5
    assert df.loc["F", "mean_b"] == pytest.approx(np.mean(frozen[0]["per_query"]["m"]))


def test_missing_variant_and_too_few_seeds(branch_data):
    results, _ = branch_data
    three = [r for r in results if r["seed"] < 3]
    pre = prereg([contrast("X", "cookie", "absent"), contrast("R", "cookie", "worse"),
                  contrast("S", "cookie", "worse", family="secondary")])
    df = V.claims_table(three, pre, n_resamples=N_BOOT).set_index("id")
    assert df.loc["X", "verdict"] == V.NOT_RUN
    assert df.loc["R", "verdict"] == V.TOO_FEW_SEEDS and pd.notna(df.loc["R", "ci_low"])  # 3 < 5 (primary)
    assert df.loc["S", "verdict"] == "reproduced"  # 3 seeds suffice for the secondary family


def test_mismatched_queries_raise():
    rng = np.random.default_rng(4)
    res = runs("cookie", range(2), 0, rng, {"m": 10}, query_effect={"m": np.zeros(10)})
    res += runs("other", range(2), 0, rng, {"m": 11}, query_effect={"m": np.zeros(11)})
    with pytest.raises(ValueError, match="same test queries"):
        ST.paired_differences(res, "cookie", "other", ["m"])


def test_prose_and_figure_follow_the_table(branch_data, tmp_path):
    results, pre = branch_data
    df = V.claims_table(results, pre, n_resamples=N_BOOT)
    df.to_csv(tmp_path / "claims.csv", index=False)
    back = pd.read_csv(tmp_path / "claims.csv")
    text = VC.claims_prose(back)
    assert "Of 4 primary contrasts" in text
    assert "1 reproduced, 1 contradicted, 1 no effect, 1 inconclusive" in text
    for _, r in df.iterrows():
        assert f"**{r.id}** {r.claim}: *{r.verdict}*" in text
        assert f"{r['diff']:+.2f} points" in text
    assert "unit not stated" in text
    out = VC.claims_figure(df, tmp_path / "fig_claims.png")
    assert (tmp_path / "fig_claims.png").stat().st_size > 5000 and out is not None


# ----------------------------------------------------------------------------- the committed pre-registration
def test_committed_prereg_is_complete():
    pre = P.load_prereg()
    assert pre["sha256"] == hashlib.sha256(P.DEFAULT_PREREG.read_bytes()).hexdigest() == P.prereg_sha256()
    prim = {(c["a"], c["b"], c["metric"]) for c in pre["contrasts"] if c["family"] == "primary"}
    # the unimodal claims and the losses on the fine-tuned arm, against both comparators; the head on the frozen arm
    assert prim == {("ft_cookie", "ft_cross_modal_only", "img_r1"), ("ft_cookie", "ft_cross_modal_only", "wn_r1"),
                    ("ft_cookie", "cookie_long", "img_r1"), ("ft_cookie", "cookie_long", "wn_r1"),
                    ("ft_cookie", "ft_no_visual", "emoji_mr"), ("ft_cookie", "ft_no_visual", "img_r1"),
                    ("ft_cookie", "ft_no_textual", "emoji_mr"), ("ft_cookie", "ft_no_textual", "wn_r1"),
                    ("cookie", "separate_1", "emoji_mr"), ("cookie", "separate_2", "emoji_mr")}
    assert {cl["id"]: cl.get("rule", "any") for cl in pre["claims"]}["C1"] == "all"
    assert P.metric_lists(pre, "emoji_mr") == ["emoji_i2t_mr", "emoji_t2i_mr"]
    assert pre["min_seeds"]["primary"] >= 5
    # every primary contrast bears on exactly one claim of the paper, and every claim has one
    primary_ids = {c["id"] for c in pre["contrasts"] if c["family"] == "primary"}
    assert {i for cl in pre["claims"] for i in cl["contrasts"]} == primary_ids
    # the confirmatory run is the one the default profile trains, on seeds the pilot never used
    from cookie_lib.study.profile import load_run_profile

    run = load_run_profile("default")
    assert run.seeds == pre["confirmatory_seeds"] and run.secondary_seeds == pre["confirmatory_secondary_seeds"]
    assert not set(run.seeds) & {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}  # pilots 0-4, version 2's confirmatory run 5-9
    assert run.finetune_seeds == run.seeds  # every fine-tuned run is paired with the frozen run of its seed
    # every variant a contrast names is trained by the study
    from cookie_lib.study import variants

    trained = set(variants.STUDIED) | {variants.FROZEN}
    assert {v for c in pre["contrasts"] for v in (c["a"], c["b"])} <= trained
    # the frozen baseline scores unimodal tasks only: no contrast may ask it for a cross-modal metric
    assert all(c["metric"] in ("img_r1", "img_map", "wn_r1", "wn_mrr", "txt_r1", "txt_mrr")
               for c in pre["contrasts"] if V.FROZEN in (c["a"], c["b"]))


@pytest.mark.parametrize("field", P.REQUIRED_FIELDS)
def test_prereg_missing_field_fails(field, tmp_path):
    pre = yaml.safe_load(P.DEFAULT_PREREG.read_text())
    del pre["contrasts"][0][field]
    path = tmp_path / "prereg.yaml"
    path.write_text(yaml.safe_dump(pre))
    with pytest.raises(ValueError, match=field):
        P.load_prereg(path)


@pytest.mark.parametrize("bad", [{"direction": "a >= b"}, {"family": "tertiary"}, {"sesoi": 0},
                                 {"sesoi": "1 point"}, {"a": "cookie", "b": "cookie"}])
def test_prereg_invalid_values_fail(bad):
    pre = yaml.safe_load(P.DEFAULT_PREREG.read_text())
    pre["contrasts"][0].update(bad)
    with pytest.raises(ValueError, match="contrast #1"):
        P.validate_prereg(pre)
