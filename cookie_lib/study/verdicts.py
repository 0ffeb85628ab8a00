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

Inference, all from one bootstrap:

* 95 % CI: ``scipy.stats.bootstrap`` (percentile) with the seed indices and the query indices of each
  list passed as independent samples, so the library resamples seeds and queries together (a two-way,
  crossed bootstrap); the statistic evaluates ``diff`` on the resampled rows and columns of ``D_k``.
* ``se`` = the bootstrap standard error; ``t = diff / se`` with ``df = S - 1``; ``p_raw`` two-sided.
* Holm over the primary family (``statsmodels.stats.multitest.multipletests``); a primary contrast that
  did not run keeps its place in the family with p = 1, so the family size stays the pre-registered one.
* TOST against ``+/- sesoi`` with the same ``se`` and ``df``: ``tost_p = max(P(T > (diff + sesoi)/se),
  P(T < (diff - sesoi)/se))``; Holm-adjusted over the primary family as well (``tost_p_holm``).
* MDE at 80 % power: ``(t_{1 - alpha'/2, df} + t_{power, df}) * se`` with ``alpha' = alpha / m`` for the
  primary family (Holm's strictest step, m = family size) and ``alpha`` otherwise.

Verdicts (primary: Holm-adjusted p-values; secondary and sanity: raw ones):
``reproduced`` (significant, paper's direction), ``contradicted`` (significant, opposite),
``no effect`` (TOST: |diff| < SESOI), ``inconclusive`` (neither; see ``mde``). A contrast whose variants
are missing is ``not run``; one with fewer seeds than the pre-registered minimum is ``insufficient seeds``
(its statistics are still shown, its verdict is not drawn).

    from cookie_lib.study.verdicts import load_prereg, claims_table, claims_figure, claims_prose
    df = claims_table(results, load_prereg())
    df.to_csv("results/claims.csv", index=False); claims_figure(df, "results/fig_claims.png")
    print(claims_prose(df))

Why one long module: the statistics, the verdict rules and their figure/prose must stay one consistent framework.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Iterable, Mapping

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
COLUMNS = ["id", "claim", "family", "a", "b", "metric", "direction", "n_seeds", "n_queries", "mean_a",
           "mean_b", "diff", "rel_pct", "ci_low", "ci_high", "se", "p_raw", "p_holm", "sesoi", "tost_p",
           "tost_p_holm", "mde", "verdict", "paper", "paper_note", "note"]


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
    if not any(c["family"] == "primary" for c in prereg["contrasts"]):
        raise ValueError(f"{source}: the primary family is empty")


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
def _row_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` indices occurs in each row of ``idx`` (batch, m) -> (batch, n)."""
    batch = idx.shape[0]
    flat = (idx + n * np.arange(batch)[:, None]).ravel()
    return np.bincount(flat, minlength=batch * n).reshape(batch, n)


def bootstrap_difference(diffs: list[np.ndarray], n_resamples: int = 9999, confidence: float = 0.95,
                         rng: int | np.random.Generator = 0, batch: int = 500) -> dict:
    """Two-way (seeds x queries) percentile bootstrap of ``diff = mean_k mean_{s,q} D_k[s, q]``.

    ``diffs``: K arrays of shape (S, Q_k). The samples handed to ``scipy.stats.bootstrap`` are the seed
    indices ``0..S-1`` and, per list, the query indices ``0..Q_k-1``; they are resampled independently.
    For a resample with seed counts c_s and query counts w_q (counts / sizes), the statistic is
    ``mean_k sum_s c_s/S * (D_k @ w_q/Q_k)[s]``: the mean of D_k over the resampled rows and columns,
    computed from counts so memory stays O(batch x Q_k). Returns diff, ci_low, ci_high, se."""
    S = diffs[0].shape[0]
    if S < 2:
        raise ValueError(f"bootstrap over seeds needs at least 2 paired seeds, got {S}")
    data = (np.arange(S),) + tuple(np.arange(d.shape[1]) for d in diffs)

    def statistic(seed_idx, *query_idx, axis=-1):
        # Called with 1-D index arrays (the observed data) or (batch, n) arrays (resamples).
        batched = np.ndim(seed_idx) > 1
        seed_idx = np.atleast_2d(np.asarray(seed_idx, dtype=np.int64))
        seed_w = _row_counts(seed_idx, S) / seed_idx.shape[1]  # (batch, S)
        total = 0.0
        for d, q in zip(diffs, query_idx):
            q = np.atleast_2d(np.asarray(q, dtype=np.int64))
            query_w = _row_counts(q, d.shape[1]) / q.shape[1]  # (batch, Q_k)
            per_seed = query_w @ d.T                            # (batch, S): each seed's mean over queries
            total = total + (seed_w * per_seed).sum(axis=-1)
        out = total / len(diffs)
        return out if batched else out[0]

    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=False, axis=-1,
                          confidence_level=confidence, method="percentile", batch=batch, rng=rng)
    diff = float(np.mean([d.mean() for d in diffs]))
    return {"diff": diff, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "se": float(res.standard_error)}


def t_test_p(diff: float, se: float, df: int) -> float:
    """Two-sided p of ``t = diff / se`` on ``df`` degrees of freedom (se = 0: 0 if diff != 0 else 1)."""
    if se <= 0:
        return 0.0 if diff != 0 else 1.0
    return float(2 * stats.t.sf(abs(diff) / se, df))


def tost_p(diff: float, se: float, df: int, sesoi: float) -> float:
    """Two one-sided tests of |true diff| < sesoi: ``max(P(T > (diff + sesoi)/se), P(T < (diff - sesoi)/se))``.
    Small values show equivalence (no effect as large as the SESOI)."""
    if se <= 0:
        return 0.0 if abs(diff) < sesoi else 1.0
    return float(max(stats.t.sf((diff + sesoi) / se, df), stats.t.cdf((diff - sesoi) / se, df)))


def mde(se: float, df: int, alpha: float = 0.05, power: float = 0.80) -> float:
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


# ----------------------------------------------------------------------------- the table
def claims_table(results, prereg: Mapping | str | Path | None = None, n_resamples: int = 9999,
                 rng: int = 0) -> pd.DataFrame:
    """One row per pre-registered contrast (in file order) with the columns of ``COLUMNS``.

    ``results``: runs as described in the module docstring (DataFrame or list of result dicts).
    ``prereg``: a loaded dict, a path, or None for ``docs/preregistration.yaml``. ``rng`` seeds the
    bootstrap (each contrast gets its own stream derived from it), so the table is reproducible."""
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
        row = {k: c[k] for k in ("id", "claim", "family", "a", "b", "metric", "direction", "sesoi", "paper")}
        row.update(paper_note=PAPER_UNIT_NOTE if "%" in str(c["paper"]) else "", note="")
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
        boot = bootstrap_difference(paired["diffs"], n_resamples, conf, np.random.default_rng(stream))
        df_t = S - 1
        level = alpha / m_primary if c["family"] == "primary" else alpha
        row.update(boot, rel_pct=100 * boot["diff"] / paired["mean_b"] if paired["mean_b"] else float("nan"),
                   p_raw=t_test_p(boot["diff"], boot["se"], df_t),
                   tost_p=tost_p(boot["diff"], boot["se"], df_t, c["sesoi"]),
                   mde=mde(boot["se"], df_t, level, power))
        if S < min_seeds[c["family"]]:
            row.update(verdict=TOO_FEW_SEEDS, note=f"{S} seeds < the pre-registered {min_seeds[c['family']]}")
        rows.append(row)

    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    df[["verdict", "note"]] = df[["verdict", "note"]].astype(object)  # all-NaN until decided below
    # Holm over the primary family; rows without a valid test enter as p = 1 (family size stays m).
    primary = (df.family == "primary").to_numpy()
    tested = df.verdict.isna().to_numpy()
    for col, adj in (("p_raw", "p_holm"), ("tost_p", "tost_p_holm")):
        p = np.where(tested, df[col].astype(float), np.nan)
        df.loc[primary, adj] = holm(p[primary], alpha)
    for i in np.flatnonzero(tested):
        r = df.iloc[i]
        p, pe = (r.p_holm, r.tost_p_holm) if r.family == "primary" else (r.p_raw, r.tost_p)
        verdict = decide(r["diff"], p, pe, r.direction, alpha)
        df.loc[df.index[i], "verdict"] = verdict
        if verdict == "reproduced" and abs(r["diff"]) < r.sesoi:
            df.loc[df.index[i], "note"] = "significant but smaller than the SESOI"
    return df


# ----------------------------------------------------------------------------- figure and prose
def claims_figure(df: pd.DataFrame, path: str | Path | None = None):
    """Forest plot: one row per contrast, its difference in the paper's direction (points) with the
    95 % CI, the +/- SESOI band shaded grey, the marker coloured by verdict; primary family on top.
    Returns the Figure; with ``path`` also writes it atomically (``plots.save_figure``)."""
    from .plots import save_figure  # plots imports the data layer; only needed here

    df = df.reset_index(drop=True)
    order = sorted(range(len(df)), key=lambda i: (FAMILIES.index(df.family[i]) if df.family[i] in FAMILIES else 9, i))
    fig, ax = plt.subplots(figsize=(9.5, 0.42 * len(df) + 1.4))
    labels = []
    for y, i in enumerate(reversed(order)):
        r = df.iloc[i]
        sign = DIRECTIONS.get(r.direction, 1)
        ax.fill_betweenx([y - 0.38, y + 0.38], -r.sesoi, r.sesoi, color="0.88", lw=0)
        colour = VERDICT_COLOURS.get(r.verdict, "#999999")
        if pd.notna(r.get("diff")):
            lo, hi = sorted((sign * r.ci_low, sign * r.ci_high)) if pd.notna(r.ci_low) else (np.nan, np.nan)
            x = sign * r["diff"]
            if pd.notna(lo):
                ax.plot([lo, hi], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
            ax.plot([x], [y], "o", color=colour, ms=6, mec="black", mew=0.5)
        tags = [t for t in (r.family if r.family != "primary" else "", r.verdict if r.verdict == NOT_RUN else "") if t]
        labels.append(f"{r.id}  {r.metric}: {r.a} vs {r.b}" + (f"  ({', '.join(tags)})" if tags else ""))
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    n_primary = int((df.family == "primary").sum())
    if 0 < n_primary < len(df):
        ax.axhline(len(df) - n_primary - 0.5, color="0.4", lw=0.8, ls="--")
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.set_xlabel("difference in the paper's direction (points; > 0 = as the paper claims)")
    present = [v for v in VERDICT_COLOURS if v in set(df.verdict) and v != NOT_RUN]
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in present] + [Patch(color="0.88", label="± SESOI")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Pre-registered contrasts: 95 % bootstrap CI over seeds and test queries", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _pts(x: float) -> str:
    return f"{x:+.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def claims_prose(df: pd.DataFrame, alpha: float = 0.05) -> str:
    """Markdown generated from the claims table (also works on ``pd.read_csv('claims.csv')``), so prose
    about what reproduces cannot disagree with the numbers: a count line, then one bullet per contrast."""
    df = df.reset_index(drop=True)
    primary = df[df.family == "primary"]
    counts = primary.verdict.value_counts()
    parts = [f"{counts.get(v, 0)} {v}" for v in VERDICTS] + [f"{counts[v]} {v}" for v in (TOO_FEW_SEEDS, NOT_RUN)
                                                             if counts.get(v, 0)]
    lines = [f"Of {len(primary)} pre-registered primary contrasts (Holm-adjusted, alpha = {alpha}): "
             + ", ".join(parts) + ".", "", CI_NOTE]
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


CI_NOTE = ("*How to read the intervals:* as pre-registered, each 95 % CI is a percentile bootstrap over seeds and "
           "test queries and is not adjusted for multiplicity; the p-values, the equivalence test and the MDE use the "
           "bootstrap standard error with a t distribution on seeds - 1 degrees of freedom, which is more "
           "conservative. An interval that excludes 0 can therefore go with p > 0.05; the verdict follows the test.")


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
              f"{r.rel_pct:+.1f} % relative; 95 % bootstrap CI {_pts(r.ci_low)} to {_pts(r.ci_high)}; {int(r.n_seeds)} seeds)")
    if r.verdict == "reproduced":
        why = f"significant in the paper's direction, {p_text}"
    elif r.verdict == "contradicted":
        why = f"significant in the opposite direction to the paper's, {p_text}"
    elif r.verdict == "no effect":
        tp = r.tost_p_holm if r.family == "primary" and pd.notna(r.get("tost_p_holm")) else r.tost_p
        why = f"within ± {r.sesoi:g} points (equivalence test p {_p(tp)})"
    elif r.verdict == "inconclusive":
        why = (f"neither a difference ({p_text}; t test, {int(r.n_seeds) - 1} df) nor equivalence within "
               f"± {r.sesoi:g} points is shown; "
               f"these runs could detect {r.mde:.2f} points at 80 % power")
    else:
        why = str(r.note)
    note = f" ({r.note})" if r.verdict == "reproduced" and isinstance(r.note, str) and r.note else ""
    return f"*{r.verdict}*{note}: {effect}, {why}{paper}"


# ----------------------------------------------------------------------------- the study's table, once
def inputs_digest(results: pd.DataFrame, n_resamples: int, prereg_path: str | Path = DEFAULT_PREREG) -> str:
    """sha256 over the pre-registration, the number of bootstrap resamples and every run's (variant, seed,
    per-query lists): what the claims table is a function of. A claims.csv computed from other inputs is stale."""
    h = hashlib.sha256(Path(prereg_path).read_bytes())
    h.update(f"n_resamples={n_resamples}".encode())
    for _, r in results.sort_values(["variant", "seed"], na_position="first").iterrows():
        h.update(repr((r.variant, None if pd.isna(r.seed) else int(r.seed),
                       sorted((k, tuple(np.round(v, 6))) for k, v in r.per_query.items()))).encode())
    return h.hexdigest()


def study_claims(results: pd.DataFrame, csv_path: str | Path, n_resamples: int = 9999) -> pd.DataFrame:
    """The claims table of ``results``, computed once: ``csv_path`` (with ``<csv>.digest`` beside it) is
    reused while :func:`inputs_digest` matches, else recomputed and written atomically. Notebooks 03-06
    all read the same table, so each shows the verdicts of the whole Holm family."""
    from ..runtime import atomic_write_text

    csv_path = Path(csv_path)
    digest_path = csv_path.with_name(csv_path.name + ".digest")
    digest = inputs_digest(results, n_resamples)
    if csv_path.exists() and digest_path.exists() and digest_path.read_text().strip() == digest:
        return pd.read_csv(csv_path)
    df = claims_table(results, n_resamples=n_resamples)
    atomic_write_text(df.to_csv(index=False), csv_path)
    atomic_write_text(digest + "\n", digest_path)
    return df


def conclusion(df: pd.DataFrame, variants: Iterable[str]) -> str:
    """Markdown for the end of a notebook: the verdict sentence of every contrast that involves one of
    ``variants`` (both families), generated from the claims table so the text matches the numbers."""
    vs = set(variants)
    sub = df[df.a.isin(vs) | df.b.isin(vs)].reset_index(drop=True)
    if sub.empty:
        return "No pre-registered contrast involves these variants.\n"
    return "\n".join([f"- **{r.id}** ({r.family}) {r.claim}: {_sentence(r)}." for _, r in sub.iterrows()]
                     + ["", CI_NOTE]) + "\n"
