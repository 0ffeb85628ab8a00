"""Verdicts on the paper's claims: pre-registered contrasts, paired bootstrap CIs, Holm, TOST, MDE.

The contrasts that decide the paper's claims live in ``docs/preregistration.yaml`` (committed before the
study runs; :func:`prereg_sha256` gives the hash the study records). Each contrast compares variant ``a``
with variant ``b`` on one metric, in the paper's direction, with a smallest effect size of interest
(SESOI, points).

Data. ``results`` holds one run per (variant, seed): ``result["per_query"][name]`` is a list of per-query
values (points, 0-100) whose mean is the metric. Every run scores the same test queries in the same order,
and the variants of one seed share data order and sampling, so a contrast is paired twice: by seed and by
query. For per-query list ``k`` of the metric, with paired seeds ``s = 1..S`` and queries ``q = 1..Q_k``::

    D_k[s, q] = A_k[s, q] - B_k[s, q]                      # (S, Q_k) difference matrix
    diff      = (1/K) sum_k  mean_{s,q} D_k[s, q]          # = mean_a - mean_b of the metric

A metric of several lists (``emoji_mr`` = mean of ``emoji_i2t_mr`` and ``emoji_t2i_mr``) averages the
lists' means, exactly as the metric itself is defined. The seedless baseline ``frozen`` is one run; its row
``B_k[q]`` is broadcast over the seeds of ``a`` (only queries vary on its side).

Inference. Target: new seeds and new test concepts of the same corpora. Queries of one concept are
correlated, so the unit of resampling is the concept (``DownstreamSuite.query_clusters``), crossed with the
seeds (every seed scores the same concepts):

* ``se``: ``scipy.stats.bootstrap`` with the seed indices and the concept indices as two independent
  samples (:func:`bootstrap_difference`); a resampled concept brings all its queries, in every list.
* ``df``: Welch-Satterthwaite over the seed and concept variance components (:func:`variance_components`);
  95 % CI = ``diff +/- t_{df} se``; ``t = diff / se``, ``p_raw`` two-sided (percentile bounds kept as
  ``pct_low``/``pct_high``).
* Holm over the primary family (``statsmodels.stats.multitest.multipletests``); a primary contrast that
  did not run keeps its place in the family with p = 1, so the family size stays the pre-registered one.
* TOST against ``+/- sesoi`` with the same ``se`` and ``df``: ``tost_p = max(P(T > (diff + sesoi)/se),
  P(T < (diff - sesoi)/se))``; Holm-adjusted over the primary family as well (``tost_p_holm``).
* Against the paper's size E (``paper_effect``), in the paper's direction: ``P(T < (diff_dir - E)/se)``
  with E read as points and as relative % of b's mean, each Holm-adjusted over the primary contrasts that
  state a size; small = smaller than the paper's (``vs_paper``).
* MDE at 80 % power: ``(t_{1 - alpha'/2, df} + t_{power, df}) * se`` with ``alpha' = alpha / m`` for the
  primary family (Holm's strictest step, m = family size) and ``alpha`` otherwise.
* Sensitivity: the seed-level paired t test (concepts fixed; ``scipy.stats.ttest_1samp`` on the S per-seed
  differences) with its own Holm and TOST gives ``verdict_seed``; ``differs`` flags a disagreement.
* One verdict per claim of the paper from its primary contrasts (:func:`claim_verdicts`).

Verdicts (primary: Holm-adjusted p-values; secondary and sanity: raw ones):
``reproduced`` (significant, paper's direction), ``contradicted`` (significant, opposite),
``no effect`` (TOST: |diff| < SESOI), ``inconclusive`` (neither; see ``mde``). A contrast whose variants
are missing is ``not run``; one with fewer seeds than the pre-registered minimum is ``insufficient seeds``
(its statistics are still shown, its verdict is not drawn).

    from cookie_lib.study.verdicts import claims_table, claims_figure, claims_prose, load_per_query
    results, clusters = load_per_query("results/per_query.npz")    # the committed per-query results
    df = claims_table(results, clusters=clusters, n_resamples=9999)  # == results/claims.csv
    claims_figure(df, "fig_claims.png"); print(claims_prose(df))

Why one long module: the statistics, the verdict rules, the per-query file they are recomputed from and
their figure/prose must stay one consistent framework, read in one place.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.patches import Patch
from scipy import stats
from statsmodels.stats.multitest import multipletests

DEFAULT_PREREG = Path(__file__).resolve().parents[2] / "docs" / "preregistration.yaml"
FROZEN = "frozen"  # the seedless baseline: pretrained encoders, PCA-whitened (unimodal tasks only)
FAMILIES = ("primary", "secondary", "sanity")
DIRECTIONS = {"a > b": 1, "a < b": -1}
REQUIRED_FIELDS = ("id", "family", "claim", "a", "b", "metric", "direction", "sesoi", "sesoi_reason", "paper")
VERDICTS = ("reproduced", "contradicted", "no effect", "inconclusive")
NOT_RUN, TOO_FEW_SEEDS = "not run", "insufficient seeds"
PAPER_UNIT_NOTE = "the paper does not say whether this is points or relative %"
VERDICT_COLOURS = {"reproduced": "#1a9850", "contradicted": "#d73027", "no effect": "#4575b4",
                   "inconclusive": "#fdae61", TOO_FEW_SEEDS: "#7f7f7f", NOT_RUN: "#7f7f7f"}
COLUMNS = ["id", "claim_id", "claim", "family", "a", "b", "metric", "direction", "n_seeds", "n_queries",
           "n_concepts", "mean_a", "mean_b", "diff", "rel_pct", "ci_low", "ci_high", "pct_low", "pct_high", "se",
           "df", "v_seed", "v_concept", "seed_share", "p_raw", "p_holm", "sesoi", "tost_p", "tost_p_holm", "mde",
           "verdict", "p_seed", "p_seed_holm", "tost_p_seed", "tost_p_seed_holm", "verdict_seed", "differs",
           "paper", "paper_effect", "p_below_paper_pts", "p_below_paper_pts_holm", "p_below_paper_rel",
           "p_below_paper_rel_holm", "vs_paper", "paper_note", "note"]


# ----------------------------------------------------------------------------- pre-registration
def prereg_sha256(path: str | Path = DEFAULT_PREREG) -> str:
    """sha256 (hex) of the pre-registration file's bytes: the study records it next to claims.csv."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_prereg(path: str | Path = DEFAULT_PREREG) -> dict:
    """Read and check the pre-registration YAML; returns the dict with ``sha256`` and ``path`` added.

    Raises ``ValueError`` naming the file and the contrast when a required field is missing or invalid
    (family, direction, a positive numeric SESOI, unique ids, a non-empty primary family)."""
    path = Path(path)
    try:
        prereg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the pre-registration: {e}") from e
    validate_prereg(prereg, source=str(path))
    return {**prereg, "sha256": prereg_sha256(path), "path": str(path)}


def validate_prereg(prereg: Mapping, source: str = "pre-registration") -> None:
    """Check the structure :func:`load_prereg` relies on; raise ``ValueError`` naming what is wrong."""
    if not isinstance(prereg, Mapping) or not isinstance(prereg.get("contrasts"), list):
        raise ValueError(f"{source}: needs a top-level 'contrasts' list")
    for key in ("alpha", "power", "confidence"):
        if not isinstance(prereg.get(key), (int, float)) or not 0 < prereg[key] < 1:
            raise ValueError(f"{source}: '{key}' must be a number in (0, 1), got {prereg.get(key)!r}")
    seen = set()
    for i, c in enumerate(prereg["contrasts"]):
        name = f"{source}: contrast #{i + 1} ({c.get('id', '?') if isinstance(c, Mapping) else c!r})"
        if not isinstance(c, Mapping):
            raise ValueError(f"{name}: must be a mapping")
        missing = [f for f in REQUIRED_FIELDS if c.get(f) in (None, "")]
        if missing:
            raise ValueError(f"{name}: missing required field(s) {missing}")
        if c["family"] not in FAMILIES:
            raise ValueError(f"{name}: family {c['family']!r} is not one of {FAMILIES}")
        if c["direction"] not in DIRECTIONS:
            raise ValueError(f"{name}: direction {c['direction']!r} is not one of {list(DIRECTIONS)}")
        if isinstance(c["sesoi"], bool) or not isinstance(c["sesoi"], (int, float)) or c["sesoi"] <= 0:
            raise ValueError(f"{name}: sesoi must be a positive number of points, got {c['sesoi']!r}")
        if c["a"] == c["b"]:
            raise ValueError(f"{name}: a and b are the same variant {c['a']!r}")
        if c["id"] in seen:
            raise ValueError(f"{name}: duplicate id {c['id']!r}")
        seen.add(c["id"])
        pe = c.get("paper_effect")
        if pe is not None and (isinstance(pe, bool) or not isinstance(pe, (int, float)) or pe <= 0):
            raise ValueError(f"{name}: paper_effect must be a positive number (the paper's size), got {pe!r}")
    if not any(c["family"] == "primary" for c in prereg["contrasts"]):
        raise ValueError(f"{source}: the primary family is empty")
    primary = {c["id"] for c in prereg["contrasts"] if c["family"] == "primary"}
    for cl in prereg.get("claims") or []:
        if not isinstance(cl, Mapping) or not cl.get("id") or not cl.get("contrasts"):
            raise ValueError(f"{source}: claim {cl!r} needs an id and a non-empty contrasts list")
        bad = [i for i in cl["contrasts"] if i not in primary]
        if bad:
            raise ValueError(f"{source}: claim {cl['id']}: {bad} are not primary contrasts")
        if cl.get("rule", "any") not in CLAIM_RULES:
            raise ValueError(f"{source}: claim {cl['id']}: rule {cl['rule']!r} is not one of {CLAIM_RULES}")


def metric_lists(prereg: Mapping, metric: str) -> list[str]:
    """The per-query lists whose means average to ``metric`` (``prereg['metrics']``; default: itself)."""
    return list((prereg.get("metrics") or {}).get(metric, [metric]))


# ----------------------------------------------------------------------------- paired data
def _runs(results) -> list[tuple[str, int | None, Mapping]]:
    """(variant, seed or None, per_query) for each run, from a DataFrame with columns ``variant``, ``seed``,
    ``per_query`` (a dict per row) or from an iterable of result dicts with the same keys."""
    rows = results.to_dict("records") if isinstance(results, pd.DataFrame) else list(results)
    out = []
    for r in rows:
        if "per_query" not in r or not isinstance(r["per_query"], Mapping):
            raise ValueError(f"run {r.get('variant')!r} seed {r.get('seed')!r}: no 'per_query' dict of lists")
        seed = r.get("seed")
        seed = None if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)
        out.append((r["variant"], seed, r["per_query"]))
    return out


def per_query_matrix(results, variant: str, name: str) -> tuple[list[int | None], np.ndarray]:
    """The per-query values of ``variant`` on list ``name``: (seeds, array of shape (runs, queries)),
    seeds sorted; ``[None]`` for a seedless run. Raises if runs disagree on the number of queries."""
    runs = sorted(((s, pq) for v, s, pq in _runs(results) if v == variant), key=lambda t: (t[0] is not None, t[0]))
    if not runs:
        raise KeyError(f"no run of variant {variant!r}")
    seeds = [s for s, _ in runs]
    if len(set(seeds)) != len(seeds) or (None in seeds and len(seeds) > 1):
        raise ValueError(f"variant {variant!r}: duplicate seeds or a seedless run among seeded ones: {seeds}")
    rows = []
    for s, pq in runs:
        if name not in pq:
            raise KeyError(f"variant {variant!r} seed {s}: no per-query list {name!r}")
        rows.append(np.asarray(pq[name], dtype=float))
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"variant {variant!r}: per-query list {name!r} has different lengths over seeds "
                         f"{dict(zip(seeds, map(len, rows)))}")
    return seeds, np.stack(rows)


def paired_differences(results, a: str, b: str, lists: list[str]) -> dict:
    """Pair ``a`` and ``b`` by seed (a seedless side is broadcast) and by query.

    Returns ``seeds`` (the S paired seeds), ``diffs`` (K arrays D_k of shape (S, Q_k)), and the metric
    means ``mean_a``, ``mean_b`` over those seeds (average over lists of the mean over seeds and queries)."""
    diffs, means_a, means_b, seeds = [], [], [], None
    for name in lists:
        sa, xa = per_query_matrix(results, a, name)
        sb, xb = per_query_matrix(results, b, name)
        if xa.shape[1] != xb.shape[1]:
            raise ValueError(f"{a} vs {b}: list {name!r} has {xa.shape[1]} vs {xb.shape[1]} queries; "
                             "every run must score the same test queries")
        if sa == [None] and sb == [None]:
            raise ValueError(f"{a} vs {b}: both are seedless; nothing to pair over seeds")
        if sa == [None]:
            common = sb
        elif sb == [None]:
            common = sa
        else:
            common = sorted(set(sa) & set(sb))
        ia = [0] * len(common) if sa == [None] else [sa.index(s) for s in common]
        ib = [0] * len(common) if sb == [None] else [sb.index(s) for s in common]
        if seeds is not None and common != seeds:
            raise ValueError(f"{a} vs {b}: lists {lists} cover different seeds")
        seeds = common
        if common:
            diffs.append(xa[ia] - xb[ib])
            means_a.append(xa[ia].mean())
            means_b.append(xb[ib].mean())
    if not seeds:
        return {"seeds": [], "diffs": [], "mean_a": float("nan"), "mean_b": float("nan")}
    return {"seeds": seeds, "diffs": diffs, "mean_a": float(np.mean(means_a)), "mean_b": float(np.mean(means_b))}


# ----------------------------------------------------------------------------- statistics
def cluster_codes(labels: Mapping[str, Sequence[str]] | None, lists: list[str], sizes: list[int]
                  ) -> tuple[list[np.ndarray], int]:
    """Integer concept codes per list, in one codebook shared by the lists of a metric.

    ``labels[name]`` holds the concept of every query of list ``name`` (see
    ``DownstreamSuite.query_clusters``); the two directions of one task share labels, so a concept's
    image and caption queries are resampled together. ``labels=None`` (or a list without labels) makes
    every query its own cluster. Returns ([codes_k of shape (Q_k,)], C)."""
    book: dict[str, int] = {}
    codes = []
    for name, q in zip(lists, sizes):
        lab = None if labels is None else labels.get(name)
        if lab is None:
            lab = [f"{name}#{i}" for i in range(q)]
        if len(lab) != q:
            raise ValueError(f"concept labels of {name!r}: {len(lab)} labels for {q} queries")
        codes.append(np.array([book.setdefault(str(x), len(book)) for x in lab], dtype=np.int64))
    return codes, len(book)


def _concept_totals(d: np.ndarray, codes: np.ndarray, n_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-concept sums of a difference matrix: D (S, Q) -> T (S, C) with T[s, c] = sum_{q in c} D[s, q],
    and the query count n (C,) of every concept (0 for a concept absent from this list)."""
    onehot = np.zeros((d.shape[1], n_concepts))
    onehot[np.arange(d.shape[1]), codes] = 1.0
    return d @ onehot, onehot.sum(axis=0)


def variance_components(diffs: list[np.ndarray], codes: list[np.ndarray], n_concepts: int) -> dict:
    """The two variances of ``diff`` = mean_k mean_{s,q} D_k[s, q] and their Satterthwaite df.

    * seeds:    v_seed = Var_s(m_s) / S, with m_s = mean_k mean_q D_k[s, q] (ddof 1): what new seeds change;
    * concepts: v_concept = C / (C - 1) * sum_c u_c^2, with the influence of concept c on the seed-averaged
      difference u_c = (1/K) sum_k (T_kc - mean_k * n_kc) / Q_k (T = seed-mean concept totals): what new
      test concepts change (a ratio estimator's linearised, cluster-robust variance);
    * df = (v_seed + v_concept)^2 / (v_seed^2 / (S - 1) + v_concept^2 / (C - 1)) (Welch-Satterthwaite).
    """
    S, K = diffs[0].shape[0], len(diffs)
    m_s = np.mean([d.mean(axis=1) for d in diffs], axis=0)  # (S,)
    v_seed = float(m_s.var(ddof=1) / S) if S > 1 else float("nan")
    u = np.zeros(n_concepts)
    for d, c in zip(diffs, codes):
        t, n = _concept_totals(d.mean(axis=0, keepdims=True), c, n_concepts)
        u += (t[0] - d.mean() * n) / d.shape[1] / K
    v_concept = float(n_concepts / max(n_concepts - 1, 1) * (u ** 2).sum())
    return {"v_seed": v_seed, "v_concept": v_concept, "n_concepts": n_concepts,
            "df": satterthwaite_df(v_seed, S, v_concept, n_concepts), "seed_means": m_s}


def satterthwaite_df(v_seed: float, seeds: int, v_concept: float, n_concepts: int) -> float:
    """``(v_seed + v_concept)^2 / (v_seed^2 / (S - 1) + v_concept^2 / (C - 1))``; S - 1 when both are 0."""
    den = v_seed ** 2 / max(seeds - 1, 1) + v_concept ** 2 / max(n_concepts - 1, 1)
    return float((v_seed + v_concept) ** 2 / den) if den > 0 else float(seeds - 1)


def _row_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` indices occurs in each row of ``idx`` (batch, m) -> (batch, n)."""
    batch = idx.shape[0]
    flat = (idx + n * np.arange(batch)[:, None]).ravel()
    return np.bincount(flat, minlength=batch * n).reshape(batch, n)


def bootstrap_difference(diffs: list[np.ndarray], codes: list[np.ndarray] | None = None, n_concepts: int | None = None,
                         n_resamples: int = 9999, confidence: float = 0.95,
                         rng: int | np.random.Generator = 0, batch: int = 250) -> dict:
    """Cluster bootstrap of ``diff = mean_k mean_{s,q} D_k[s, q]`` over seeds x test concepts.

    ``diffs``: K paired-difference arrays of shape (S, Q_k); ``codes``: the concept of each query
    (:func:`cluster_codes`; None = each query its own concept). The two samples handed to
    ``scipy.stats.bootstrap`` are the seed indices 0..S-1 and the concept indices 0..C-1, resampled
    independently: seeds and concepts are *crossed* (every seed scores the same concepts), and a resampled
    concept brings all of its queries, in every list, at once. With seed counts a_s / S and concept counts
    w_c, list k's mean for seed s is ``sum_c w_c T_k[s, c] / sum_c w_c n_kc`` (a ratio: concepts differ in
    size), and the statistic averages ``sum_s a_s/S * that`` over the lists. Memory O(batch x C).

    Returns diff, se (bootstrap standard error), the percentile interval ``pct_low``/``pct_high``, the
    :func:`variance_components` and the t interval ``ci_low``/``ci_high`` = diff -/+ t_{df} * se used by the
    verdicts (percentile intervals over a handful of seeds are too narrow)."""
    S = diffs[0].shape[0]
    if S < 2:
        raise ValueError(f"bootstrap over seeds needs at least 2 paired seeds, got {S}")
    if codes is None:
        codes, n_concepts = cluster_codes(None, [f"l{k}" for k in range(len(diffs))], [d.shape[1] for d in diffs])
    totals = [_concept_totals(d, c, n_concepts) for d, c in zip(diffs, codes)]  # [(T (S, C), n (C,))]

    def statistic(seed_idx, concept_idx, axis=-1):
        # Called with 1-D index arrays (the observed data) or (batch, n) arrays (resamples).
        batched = np.ndim(seed_idx) > 1
        seed_w = _row_counts(np.atleast_2d(np.asarray(seed_idx, dtype=np.int64)), S) / S          # (B, S)
        cw = _row_counts(np.atleast_2d(np.asarray(concept_idx, dtype=np.int64)), n_concepts)       # (B, C)
        total = 0.0
        for t, n in totals:
            denom = cw @ n                                                                         # (B,)
            per_seed = (cw @ t.T) / np.where(denom > 0, denom, np.nan)[:, None]                    # (B, S)
            total = total + (seed_w * per_seed).sum(axis=-1)
        out = total / len(totals)
        return out if batched else out[0]

    res = stats.bootstrap((np.arange(S), np.arange(n_concepts)), statistic, n_resamples=n_resamples,
                          vectorized=True, paired=False, axis=-1, confidence_level=confidence,
                          method="percentile", batch=batch, rng=rng)
    diff = float(np.mean([d.mean() for d in diffs]))
    comp = variance_components(diffs, codes, n_concepts)
    se = float(res.standard_error)
    half = float(stats.t.ppf(0.5 + confidence / 2, comp["df"]) * se)
    return {"diff": diff, "se": se, "ci_low": diff - half, "ci_high": diff + half,
            "pct_low": float(res.confidence_interval.low), "pct_high": float(res.confidence_interval.high),
            **{k: comp[k] for k in ("v_seed", "v_concept", "n_concepts", "df")}, "seed_means": comp["seed_means"]}


def seed_level_test(seed_means: np.ndarray, sesoi: float) -> dict:
    """The sensitivity analysis: a paired t test on the S per-seed metric differences alone
    (``scipy.stats.ttest_1samp``; the test concepts held fixed, df = S - 1) and its TOST at +/- sesoi."""
    res = stats.ttest_1samp(seed_means, 0.0)
    S = len(seed_means)
    se = float(seed_means.std(ddof=1) / math.sqrt(S))
    return {"p_seed": float(res.pvalue), "se_seed": se, "tost_p_seed": tost_p(float(seed_means.mean()), se, S - 1, sesoi)}


def t_test_p(diff: float, se: float, df: float) -> float:
    """Two-sided p of ``t = diff / se`` on ``df`` degrees of freedom (se = 0: 0 if diff != 0 else 1)."""
    if se <= 0:
        return 0.0 if diff != 0 else 1.0
    return float(2 * stats.t.sf(abs(diff) / se, df))


def tost_p(diff: float, se: float, df: float, sesoi: float) -> float:
    """Two one-sided tests of |true diff| < sesoi: ``max(P(T > (diff + sesoi)/se), P(T < (diff - sesoi)/se))``.
    Small values show equivalence (no effect as large as the SESOI)."""
    if se <= 0:
        return 0.0 if abs(diff) < sesoi else 1.0
    return float(max(stats.t.sf((diff + sesoi) / se, df), stats.t.cdf((diff - sesoi) / se, df)))


def below_effect_p(diff_dir: float, effect: float, se: float, df: float) -> float:
    """One-sided p of H0 "the effect in the paper's direction is at least ``effect``": ``P(T < (diff_dir -
    effect) / se)``. Small values show an effect smaller than the paper's."""
    if se <= 0:
        return 0.0 if diff_dir < effect else 1.0
    return float(stats.t.cdf((diff_dir - effect) / se, df))


def mde(se: float, df: float, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect of a two-sided t-test: ``(t_{1-alpha/2, df} + t_{power, df}) * se``."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def holm(p_values: Iterable[float], alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests(method='holm')``); NaN entries stay NaN and
    count as p = 1, so an untested member keeps the family its pre-registered size."""
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return p
    adjusted = multipletests(np.where(np.isnan(p), 1.0, p), alpha=alpha, method="holm")[1]
    return np.where(np.isnan(p), np.nan, adjusted)


def decide(diff: float, p: float, p_equivalence: float, direction: str, alpha: float) -> str:
    """The four verdicts: significant -> reproduced / contradicted by sign (paper's ``direction``);
    else equivalence (TOST) -> no effect; else inconclusive."""
    if p < alpha:
        return "reproduced" if np.sign(diff) == DIRECTIONS[direction] else "contradicted"
    if p_equivalence < alpha:
        return "no effect"
    return "inconclusive"


def paper_effect(c: Mapping) -> float | None:
    """The paper's stated effect size of a contrast (``paper_effect`` in the pre-registration, in the
    paper's unit: read both as points and as relative % of ``b``), or None when the paper gives no size."""
    x = c.get("paper_effect")
    return None if x is None else float(x)


# ----------------------------------------------------------------------------- the table
def claims_table(results, prereg: Mapping | str | Path | None = None, n_resamples: int = 9999,
                 rng: int = 0, clusters: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per pre-registered contrast (in file order) with the columns of ``COLUMNS``.

    ``results``: runs as described in the module docstring (DataFrame or list of result dicts);
    ``clusters``: the test concept of every query per list (None: every query its own concept).
    ``prereg``: a loaded dict, a path, or None for ``docs/preregistration.yaml``. ``rng`` seeds the
    bootstrap (each contrast gets its own stream derived from it), so the table is reproducible.

    Primary analysis: the seeds x concepts cluster bootstrap (:func:`bootstrap_difference`), t on the
    Satterthwaite df, Holm over the primary family, TOST at the SESOI, one-sided tests against the paper's
    effect (points and relative readings, each Holm-adjusted over the primary contrasts that state one).
    Sensitivity analysis: the seed-level paired t test (:func:`seed_level_test`), Holm-adjusted the same
    way; ``verdict_seed`` and ``differs`` flag every contrast whose verdict depends on the analysis."""
    if prereg is None or isinstance(prereg, (str, Path)):
        prereg = load_prereg(prereg or DEFAULT_PREREG)
    else:
        validate_prereg(prereg)
    alpha, power, conf = prereg["alpha"], prereg["power"], prereg["confidence"]
    min_seeds = {**{f: 5 if f == "primary" else 3 for f in FAMILIES}, **(prereg.get("min_seeds") or {})}
    contrasts = prereg["contrasts"]
    m_primary = sum(c["family"] == "primary" for c in contrasts)
    variants = {v for v, _, _ in _runs(results)}
    streams = np.random.SeedSequence(rng).spawn(len(contrasts))

    rows = []
    for c, stream in zip(contrasts, streams):
        row = {k: c.get(k) for k in ("id", "claim", "family", "a", "b", "metric", "direction", "sesoi", "paper",
                                     "claim_id")}
        row.update(paper_note=PAPER_UNIT_NOTE if "%" in str(c["paper"]) else "", note="",
                   paper_effect=paper_effect(c))
        lists = metric_lists(prereg, c["metric"])
        missing = [v for v in (c["a"], c["b"]) if v not in variants]
        try:
            paired = None if missing else paired_differences(results, c["a"], c["b"], lists)
        except KeyError as err:  # the runs lack this task (e.g. a profile without the Open Clip Art test set)
            missing, paired = [str(err).strip('"')], None
        if missing or not paired["seeds"]:
            row.update(verdict=NOT_RUN, n_seeds=0, note=f"missing: {missing or 'no common seeds'}")
            rows.append(row)
            continue
        S = len(paired["seeds"])
        row.update(n_seeds=S, n_queries="+".join(str(d.shape[1]) for d in paired["diffs"]),
                   mean_a=paired["mean_a"], mean_b=paired["mean_b"])
        if S < 2:
            row.update(verdict=TOO_FEW_SEEDS, diff=paired["mean_a"] - paired["mean_b"], note="one seed: no CI")
            rows.append(row)
            continue
        codes, n_concepts = cluster_codes(clusters, lists, [d.shape[1] for d in paired["diffs"]])
        boot = bootstrap_difference(paired["diffs"], codes, n_concepts, n_resamples, conf,
                                    np.random.default_rng(stream))
        seed_means = boot.pop("seed_means")
        level = alpha / m_primary if c["family"] == "primary" else alpha
        sign = DIRECTIONS[c["direction"]]
        se, dfree = boot["se"], boot["df"]
        row.update(boot, rel_pct=100 * boot["diff"] / paired["mean_b"] if paired["mean_b"] else float("nan"),
                   seed_share=boot["v_seed"] / (boot["v_seed"] + boot["v_concept"])
                   if boot["v_seed"] + boot["v_concept"] > 0 else float("nan"),
                   p_raw=t_test_p(boot["diff"], se, dfree),
                   tost_p=tost_p(boot["diff"], se, dfree, c["sesoi"]),
                   mde=mde(se, dfree, level, power),
                   **seed_level_test(seed_means, c["sesoi"]))
        eff = row["paper_effect"]
        if eff is not None:
            row.update(p_below_paper_pts=below_effect_p(sign * boot["diff"], eff, se, dfree),
                       p_below_paper_rel=below_effect_p(sign * boot["diff"], eff / 100 * abs(paired["mean_b"]),
                                                        se, dfree))
        if S < min_seeds[c["family"]]:
            row.update(verdict=TOO_FEW_SEEDS, note=f"{S} seeds < the pre-registered {min_seeds[c['family']]}")
        rows.append(row)

    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    text_cols = ["verdict", "verdict_seed", "differs", "note", "vs_paper"]
    df[text_cols] = df[text_cols].astype(object)  # all-NaN until decided below
    # Holm over the primary family; rows without a valid test enter as p = 1 (family size stays m).
    primary = (df.family == "primary").to_numpy()
    tested = df.verdict.isna().to_numpy()
    for col, adj in (("p_raw", "p_holm"), ("tost_p", "tost_p_holm"), ("p_seed", "p_seed_holm"),
                     ("tost_p_seed", "tost_p_seed_holm")):
        p = np.where(tested, df[col].astype(float), np.nan)
        df.loc[primary, adj] = holm(p[primary], alpha)
    for col in ("p_below_paper_pts", "p_below_paper_rel"):  # family: the primary contrasts with a stated size
        has = primary & tested & df[col].notna().to_numpy()
        if has.any():
            df.loc[has, col + "_holm"] = holm(df.loc[has, col].astype(float), alpha)
    for i in np.flatnonzero(tested):
        r = df.iloc[i]
        first = r.family == "primary"
        p, pe = (r.p_holm, r.tost_p_holm) if first else (r.p_raw, r.tost_p)
        ps, pse = (r.p_seed_holm, r.tost_p_seed_holm) if first else (r.p_seed, r.tost_p_seed)
        verdict = decide(r["diff"], p, pe, r.direction, alpha)
        idx = df.index[i]
        df.loc[idx, "verdict"] = verdict
        df.loc[idx, "verdict_seed"] = decide(r["diff"], ps, pse, r.direction, alpha)
        df.loc[idx, "differs"] = df.loc[idx, "verdict_seed"] != verdict
        if pd.notna(r.paper_effect):
            pts, rel = ((r.p_below_paper_pts_holm, r.p_below_paper_rel_holm) if first
                        else (r.p_below_paper_pts, r.p_below_paper_rel))
            small = [pd.notna(x) and x < alpha for x in (pts, rel)]
            df.loc[idx, "vs_paper"] = ("smaller than the paper's (both readings)" if all(small) else
                                       "smaller than the paper's read as points" if small[0] else
                                       "smaller than the paper's read as relative %" if small[1] else
                                       "not shown smaller than the paper's")
        reachable = reachable_no_effect(r.v_concept, r.sesoi, alpha / (m_primary if first else 1))
        if verdict == "no effect" and not reachable:
            df.loc[idx, "note"] = "no effect reached although the concepts' variance alone should prevent it"
        elif verdict == "inconclusive" and not reachable:
            df.loc[idx, "note"] = "no effect is unreachable at this SESOI with this test set (precision analysis)"
        elif verdict == "reproduced" and abs(r["diff"]) < r.sesoi:
            df.loc[idx, "note"] = "significant but smaller than the SESOI"
    return df


def reachable_no_effect(v_concept: float, sesoi: float, alpha: float) -> bool:
    """Whether TOST at level ``alpha`` can show |diff| < sesoi with infinitely many seeds: the test set's
    own standard error sqrt(v_concept) must satisfy ``z_{1 - alpha} * sqrt(v_concept) < sesoi`` (a true
    difference of 0, the best case)."""
    return bool(stats.norm.ppf(1 - alpha) * math.sqrt(max(v_concept, 0.0)) < sesoi)


CLAIM_RULES = ("any", "all")


def claim_verdicts(df: pd.DataFrame, prereg: Mapping | str | Path | None = None) -> pd.DataFrame:
    """One verdict per claim of the paper (``prereg['claims']``), from the primary verdicts of its contrasts,
    by the pre-registered rule: *reproduced* = at least one contrast reproduced and none contradicted
    (a claim with ``rule: all``: every contrast reproduced, as when a gain must beat two comparators);
    *contradicted* = at least one contradicted and none reproduced; *mixed* = both; *no effect* = every
    contrast no effect; *inconclusive* otherwise; *not run* when a contrast did not run (*insufficient
    seeds* when one has too few). A claim whose contrasts with a stated size are all smaller than the
    paper's (both readings) says so in ``size``, whatever its verdict: an inconclusive difference can still
    exclude the effect the paper reports."""
    if prereg is None or isinstance(prereg, (str, Path)):
        prereg = load_prereg(prereg or DEFAULT_PREREG)
    by_id = df.set_index("id")
    rows = []
    for cl in prereg.get("claims") or []:
        present = [i for i in cl["contrasts"] if i in by_id.index]
        if not present:  # a table of other contrasts (a custom pre-registration): the claim is not in it
            continue
        sub = by_id.loc[present]
        v = list(sub.verdict)
        if len(sub) < len(cl["contrasts"]) or NOT_RUN in v:
            verdict = NOT_RUN
        elif TOO_FEW_SEEDS in v:
            verdict = TOO_FEW_SEEDS
        elif "reproduced" in v and "contradicted" in v:
            verdict = "mixed"
        elif "reproduced" in v and (cl.get("rule", "any") == "any" or set(v) == {"reproduced"}):
            verdict = "reproduced"
        elif "contradicted" in v:
            verdict = "contradicted"
        elif all(x == "no effect" for x in v):
            verdict = "no effect"
        else:
            verdict = "inconclusive"
        sized = sub[sub.paper_effect.notna()] if "paper_effect" in sub else sub.iloc[:0]
        size = ""
        if len(sized) and all(str(x).startswith("smaller than the paper's (both") for x in sized.vs_paper):
            size = "smaller than the paper's effect under both readings"
        seed_v = [x if isinstance(x, str) else "-" for x in sub.verdict_seed] if "verdict_seed" in sub else []
        rows.append({"claim_id": cl["id"], "claim": cl["claim"], "contrasts": ", ".join(cl["contrasts"]),
                     "contrast verdicts": ", ".join(f"{i}: {x}" for i, x in zip(sub.index, v)),
                     "verdict": verdict, "size": size,
                     "seed-level verdicts": ", ".join(f"{i}: {x}" for i, x in zip(sub.index, seed_v))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figure and prose
def claims_figure(df: pd.DataFrame, path: str | Path | None = None):
    """Forest plot: one row per contrast, its difference ``a - b`` exactly as in the table (points) with the
    95 % CI, the +/- SESOI band shaded grey, the marker coloured by verdict, the paper's effect (read as
    points) as a grey cross on the side the paper predicts, "paper: a < b" in the label where the paper
    predicts a negative difference; primary family on top. Returns the Figure; with ``path`` also writes
    it atomically (``plots.save_figure``)."""
    from .plots import save_figure  # plots imports the data layer; only needed here

    df = df.reset_index(drop=True)
    order = sorted(range(len(df)), key=lambda i: (FAMILIES.index(df.family[i]) if df.family[i] in FAMILIES else 9, i))
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(df) + 1.4))
    labels = []
    for y, i in enumerate(reversed(order)):
        r = df.iloc[i]
        ax.fill_betweenx([y - 0.38, y + 0.38], -r.sesoi, r.sesoi, color="0.88", lw=0)
        colour = VERDICT_COLOURS.get(r.verdict, "#999999")
        if pd.notna(r.get("diff")):
            if pd.notna(r.get("ci_low")):
                ax.plot([r.ci_low, r.ci_high], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
            ax.plot([r["diff"]], [y], "o", color=colour, ms=6, mec="black", mew=0.5)
        if pd.notna(r.get("paper_effect")):
            ax.plot([DIRECTIONS.get(r.direction, 1) * r.paper_effect], [y], "x", color="0.35", ms=6)
        tags = [t for t in (r.family if r.family != "primary" else "", r.verdict if r.verdict == NOT_RUN else "",
                            "paper: a < b" if r.direction == "a < b" else "") if t]
        labels.append(f"{r.id}  {r.metric}: {r.a} - {r.b}" + (f"  ({', '.join(tags)})" if tags else ""))
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    n_primary = int((df.family == "primary").sum())
    if 0 < n_primary < len(df):
        ax.axhline(len(df) - n_primary - 0.5, color="0.4", lw=0.8, ls="--")
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.set_xlabel("difference a - b (points, as in the claims table)")
    present = [v for v in VERDICT_COLOURS if v in set(df.verdict) and v != NOT_RUN]
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in present] + [Patch(color="0.88", label="± SESOI")]
    handles += [plt.Line2D([], [], ls="", marker="x", color="0.35", label="paper's effect (as points)")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Pre-registered contrasts: 95 % CI, seeds x test concepts cluster bootstrap", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _pts(x: float) -> str:
    return f"{x:+.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def claims_prose(df: pd.DataFrame, alpha: float = 0.05, prereg: Mapping | str | Path | None = None) -> str:
    """Markdown generated from the claims table (also works on ``pd.read_csv('claims.csv')``), so prose
    about what reproduces cannot disagree with the numbers: the claim-level count (one verdict per claim of
    the paper, :func:`claim_verdicts`), the contrast-level count, how to read the intervals, then one
    bullet per claim and one per contrast."""
    df = df.reset_index(drop=True)
    claims = claim_verdicts(df, prereg)
    primary = df[df.family == "primary"]
    lines = []
    if len(claims):
        cc = claims.verdict.value_counts()
        lines += [f"Of the paper's {len(claims)} pre-registered claims: "
                  + ", ".join(f"{n} {v}" for v, n in cc.items()) + " (each decided by its primary contrasts "
                  "under the pre-registered rule).", ""]
        for _, c in claims.iterrows():
            size = f"; {c['size']}" if c["size"] else ""
            lines.append(f"- **{c.claim_id}** {c.claim}: *{c.verdict}*{size} ({c['contrast verdicts']}).")
        lines.append("")
    counts = primary.verdict.value_counts()
    parts = [f"{counts.get(v, 0)} {v}" for v in VERDICTS] + [f"{counts[v]} {v}" for v in (TOO_FEW_SEEDS, NOT_RUN)
                                                             if counts.get(v, 0)]
    n_diff = int(primary.differs.fillna(False).astype(bool).sum()) if "differs" in primary else 0
    lines += [f"Of {len(primary)} primary contrasts (Holm-adjusted, alpha = {alpha}): " + ", ".join(parts)
              + f"; {n_diff} of them {'gets' if n_diff == 1 else 'get'} another verdict under the seed-level sensitivity analysis.", "", CI_NOTE]
    for family, title in (("primary", "Primary contrasts (these decide the paper's claims)"),
                          ("secondary", "Secondary contrasts (exploratory: unadjusted p, decide nothing)"),
                          ("sanity", "Sanity checks (cannot fail; not counted as reproduced claims)")):
        sub = df[df.family == family]
        if sub.empty:
            continue
        lines += ["", f"**{title}**", ""]
        for _, r in sub.iterrows():
            lines.append(f"- **{r.id}** {r.claim}: " + _sentence(r) + ".")
    return "\n".join(lines) + "\n"


CI_NOTE = ("*How to read the intervals:* the inference target is new training seeds and new test concepts of the same "
           "corpora. Each 95 % CI is diff ± t(df) × SE: the SE comes from a bootstrap that resamples seeds and test "
           "concepts (all queries of a concept together; `scipy.stats.bootstrap`), df from Satterthwaite's formula "
           "over the seed and concept variance components. The p-values, the equivalence test (TOST at the SESOI), "
           "the tests against the paper's effect and the MDE use the same SE and df; intervals are not adjusted for "
           "multiplicity, the primary verdicts are (Holm). A seed-level paired t test (test concepts held fixed, "
           "df = seeds - 1) is reported beside every verdict as a sensitivity analysis.")


def _sentence(r: pd.Series) -> str:
    """One contrast as a sentence from its table row."""
    if r.verdict == NOT_RUN:
        return f"*not run* ({r.note})"
    if pd.isna(r.get("ci_low")):
        return f"*{r.verdict}* ({r.note})"
    holm = r.family == "primary" and pd.notna(r.get("p_holm"))
    p_text = f"Holm p {_p(r.p_holm)}, raw p {_p(r.p_raw)}" if holm else f"p {_p(r.p_raw)}"
    paper = f"; the paper reports {r.paper}" + (" (unit not stated)" if isinstance(r.paper_note, str) and r.paper_note else "")
    effect = (f"{r.a} - {r.b} = {_pts(r['diff'])} points on {r.metric} ({r.mean_a:.2f} vs {r.mean_b:.2f}; "
              f"{r.rel_pct:+.1f} % relative; 95 % CI {_pts(r.ci_low)} to {_pts(r.ci_high)}, df {r.df:.0f}; "
              f"{int(r.n_seeds)} seeds, {int(r.n_concepts)} concepts)")
    if r.verdict == "reproduced":
        why = f"significant in the paper's direction, {p_text}"
    elif r.verdict == "contradicted":
        why = f"significant in the opposite direction to the paper's, {p_text}"
    elif r.verdict == "no effect":
        tp = r.tost_p_holm if r.family == "primary" and pd.notna(r.get("tost_p_holm")) else r.tost_p
        why = f"within ± {r.sesoi:g} points (equivalence test p {_p(tp)})"
    elif r.verdict == "inconclusive":
        why = (f"neither a difference ({p_text}) nor equivalence within ± {r.sesoi:g} points is shown; "
               f"these runs could detect {r.mde:.2f} points at 80 % power")
    else:
        why = str(r.note)
    if isinstance(r.get("vs_paper"), str) and r.vs_paper:
        why += f"; {r.vs_paper}"
    if isinstance(r.get("verdict_seed"), str) and r.verdict_seed != r.verdict:
        why += f"; **the seed-level test says {r.verdict_seed}**"
    note = f" ({r.note})" if isinstance(r.note, str) and r.note else ""
    return f"*{r.verdict}*{note}: {effect}, {why}{paper}"


# ----------------------------------------------------------------------------- per-query results, committed
def per_query_arrays(results, clusters: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """What :func:`save_per_query` stores: ``runs`` (JSON: [[variant, seed or null], ...]), ``r{i}__{list}``
    (float32 per-query values of run i) and ``clusters__{list}`` (the concept of every query)."""
    runs = _runs(results)
    arrays = {"runs": np.array(json.dumps([[v, s] for v, s, _ in runs]))}
    for i, (_, _, pq) in enumerate(runs):
        for name, values in pq.items():
            arrays[f"r{i}__{name}"] = np.asarray(values, dtype=np.float32)
    for name, labels in clusters.items():
        arrays[f"clusters__{name}"] = np.asarray([str(x) for x in labels])
    return arrays


def save_per_query(results, clusters: Mapping[str, Sequence[str]], path: str | Path) -> None:
    """Every run's per-query lists and the concept of every query (:func:`per_query_arrays`) in one
    compressed ``.npz``, written atomically: what :func:`claims_table` needs, so the claims recompute
    from the repository."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **per_query_arrays(results, clusters))
    os.replace(tmp, path)


def load_per_query(path: str | Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Read :func:`save_per_query`'s file: (runs as result dicts with variant, seed, per_query; clusters).
    Raises ValueError naming the file when it is missing or not such a file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            runs = json.loads(str(z["runs"]))
            results = [{"variant": v, "seed": s, "per_query": {}} for v, s in runs]
            clusters = {}
            for key in z.files:
                if key.startswith("clusters__"):
                    clusters[key[len("clusters__"):]] = z[key].tolist()
                elif key != "runs":
                    i, name = key.split("__", 1)
                    results[int(i[1:])]["per_query"][name] = z[key].astype(np.float64)
    except FileNotFoundError:
        raise ValueError(f"{path}: per-query results not found (written by the study's claims step)") from None
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a per-query results file ({e})") from None
    return results, clusters


def inputs_digest(arrays: Mapping[str, np.ndarray], n_resamples: int, prereg_path: str | Path = DEFAULT_PREREG) -> str:
    """sha256 over the pre-registration, the number of bootstrap resamples and the per-query arrays
    (:func:`per_query_arrays`): what the claims table is a function of. A claims.csv from other inputs is stale."""
    h = hashlib.sha256(Path(prereg_path).read_bytes())
    h.update(f"n_resamples={n_resamples}".encode())
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.asarray(arrays[key]).tobytes())
    return h.hexdigest()


def recompute(per_query_path: str | Path, n_resamples: int, prereg: str | Path = DEFAULT_PREREG) -> pd.DataFrame:
    """The claims table from the committed per-query file alone (what ``python -m
    cookie_lib.study.verdicts recompute`` prints or checks)."""
    results, clusters = load_per_query(per_query_path)
    return claims_table(results, prereg, n_resamples=n_resamples, clusters=clusters)


def conclusion(df: pd.DataFrame, variants: Iterable[str]) -> str:
    """Markdown for the end of a notebook: the verdict sentence of every contrast that involves one of
    ``variants`` (both families), generated from the claims table so the text matches the numbers."""
    vs = set(variants)
    sub = df[df.a.isin(vs) | df.b.isin(vs)].reset_index(drop=True)
    if sub.empty:
        return "No pre-registered contrast involves these variants.\n"
    return "\n".join([f"- **{r.id}** ({r.family}) {r.claim}: {_sentence(r)}." for _, r in sub.iterrows()]
                     + ["", CI_NOTE]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m cookie_lib.study.verdicts recompute [--per-query F] [--resamples N] [--check CSV | --out CSV]``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.verdicts",
                                 description="Recompute the claims table from the committed per-query results.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rc = sub.add_parser("recompute", help="claims.csv from per_query.npz + the pre-registration")
    rc.add_argument("--per-query", default="results/per_query.npz")
    rc.add_argument("--resamples", type=int, default=None,
                    help="bootstrap resamples (default: the value recorded in results/manifest.json beside the file)")
    rc.add_argument("--prereg", default=str(DEFAULT_PREREG))
    rc.add_argument("--check", metavar="CSV", help="exit 1 unless the recomputed table equals this file byte for byte")
    rc.add_argument("--out", metavar="CSV", help="write the table here (default: print it)")
    args = ap.parse_args(argv)
    pq = Path(args.per_query)
    n = args.resamples
    if n is None:
        man = pq.with_name("manifest.json")
        try:
            n = int(json.loads(man.read_text())["bootstrap_resamples"])
        except (OSError, KeyError, ValueError):
            ap.error(f"--resamples not given and {man} records no bootstrap_resamples")
    try:
        text = recompute(pq, n, args.prereg).to_csv(index=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        same = Path(args.check).read_text() == text
        print(f"{args.check}: {'identical to' if same else 'DIFFERS from'} the table recomputed from {pq} "
              f"({n} resamples)")
        return 0 if same else 1
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
