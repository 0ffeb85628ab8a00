"""The inference behind the verdicts: paired differences, the seeds x concepts cluster bootstrap, t tests,
TOST, tests against the paper's size, MDE, Holm and the four-way decision.

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
* Whether "no effect" is reachable at all: ``z_{1 - alpha} * sqrt(v_concept) < sesoi``
  (:func:`reachable_no_effect`).

:func:`cookie_lib.study.verdicts.claims_table` applies these to every pre-registered contrast.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .prereg import DIRECTIONS


# ----------------------------------------------------------------------------- paired data
def run_records(results) -> list[tuple[str, int | None, Mapping]]:
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
    runs = sorted(((s, pq) for v, s, pq in run_records(results) if v == variant),
                  key=lambda t: (t[0] is not None, t[0]))
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


def reachable_no_effect(v_concept: float, sesoi: float, alpha: float) -> bool:
    """Whether TOST at level ``alpha`` can show |diff| < sesoi with infinitely many seeds: the test set's
    own standard error sqrt(v_concept) must satisfy ``z_{1 - alpha} * sqrt(v_concept) < sesoi`` (a true
    difference of 0, the best case)."""
    return bool(stats.norm.ppf(1 - alpha) * math.sqrt(max(v_concept, 0.0)) < sesoi)

