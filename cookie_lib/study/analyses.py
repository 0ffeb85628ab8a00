"""Two analyses beside the claims table: the precision analysis that sized the confirmatory run, and the
2 x 2 factorial analysis of the two single-modal losses.

Precision. A primary contrast's standard error has two parts (:func:`cookie_lib.study.stats.
variance_components`): seeds, which more runs shrink, and test concepts, which they do not. With the
variance of one seed's difference ``sigma2 = S * v_seed`` (from a pilot) and the test set's ``v_concept``::

    se(S') = sqrt(sigma2 / S' + v_concept)

The seeds needed to detect an effect E at power 1 - beta with a two-sided test at level alpha' (Holm's
strictest step, alpha / m, for the primary family) is the smallest S' with
``(t_{1 - alpha'/2, df} + t_{1 - beta, df}) * se(S') <= E``; "no effect" (TOST at +/- SESOI, true
difference 0) needs ``(t_{1 - alpha', df} + t_{1 - beta/2, df}) * se(S') <= SESOI`` and is unreachable
at any number of seeds when ``z_{1 - alpha'} * sqrt(v_concept) >= SESOI``. df is Satterthwaite's, as in
the claims table.

Factorial. ft_cookie, ft_no_visual, ft_no_textual and ft_cross_modal_only (the fine-tuned arm, where the
encoders learn) are the four cells of a 2 x 2 design (visual loss on/off x textual loss on/off). Per metric, an OLS on the per-seed metric values with seeds
as blocks and effect-coded factors (v, t = +/- 1/2)::

    y[variant, seed] = mu + block[seed] + b_v v + b_t t + b_vt (v t) + e

so ``b_v`` is the visual loss's average effect over both levels of the textual loss, ``b_t`` likewise,
and ``b_vt`` the interaction (ft_cookie - ft_no_visual) - (ft_no_textual - ft_cross_modal_only) (statsmodels; CIs and
p-values from its t distribution; exploratory: seeds only, no concept resampling).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from ..runtime import atomic_write_text
from .prereg import load_prereg
from .stats import reachable_no_effect, satterthwaite_df
from .verdicts import claim_verdicts, claims_table, inputs_digest, load_per_query, per_query_arrays, save_per_query

FACTORIAL = {"ft_cookie": (1, 1), "ft_no_visual": (0, 1), "ft_no_textual": (1, 0), "ft_cross_modal_only": (0, 0)}
MAX_SEEDS = 200  # the search for the seeds needed stops here ("> 200")


def seeds_needed(sigma2: float, v_concept: float, n_concepts: int, effect: float, alpha: float, power: float,
                 equivalence: bool = False) -> int | None:
    """Smallest S' in 2..MAX_SEEDS whose test reaches ``power`` for ``effect`` (module docstring); None when
    no number of seeds does (``effect`` is below what the test set's own variance allows)."""
    if effect is None or not effect > 0:
        return None
    for s in range(2, MAX_SEEDS + 1):
        d = satterthwaite_df(sigma2 / s, s, v_concept, n_concepts)
        se = math.sqrt(sigma2 / s + v_concept)
        if equivalence:
            crit = stats.t.ppf(1 - alpha, d) + stats.t.ppf(1 - (1 - power) / 2, d)
        else:
            crit = stats.t.ppf(1 - alpha / 2, d) + stats.t.ppf(power, d)
        if crit * se <= effect:
            return s
    return None


def precision_table(claims: pd.DataFrame, alpha: float = 0.05, power: float = 0.80) -> pd.DataFrame:
    """Per primary contrast of a (pilot) claims table: the seed SD of one run's difference, the test set's
    own SE, the seeds needed for ``power`` at the SESOI and at the paper's effect (both readings), the seeds
    needed to show "no effect", and whether "no effect" is reachable at all."""
    prim = claims[claims.family == "primary"].dropna(subset=["v_seed"])
    level = alpha / max(int((claims.family == "primary").sum()), 1)
    rows = []
    for _, r in prim.iterrows():
        sigma2 = float(r.v_seed) * int(r.n_seeds)
        vc, C = float(r.v_concept), int(r.n_concepts)
        eff_pts = float(r.paper_effect) if pd.notna(r.get("paper_effect")) else None
        eff_rel = eff_pts / 100 * abs(float(r.mean_b)) if eff_pts is not None else None

        def need(e, eq=False):
            n = seeds_needed(sigma2, vc, C, e, level, power, eq)
            return "-" if e is None else (f"> {MAX_SEEDS}" if n is None else n)

        rows.append({"id": r.id, "metric": r.metric, "sd of one seed's difference": math.sqrt(sigma2),
                     "test-set SE (concepts)": math.sqrt(vc), "concepts": C, "SESOI": float(r.sesoi),
                     "seeds for 80 % power at the SESOI": need(float(r.sesoi)),
                     "paper's effect as points": eff_pts, "seeds at the paper's effect (points)": need(eff_pts),
                     "paper's effect as relative % (points)": eff_rel,
                     "seeds at the paper's effect (relative)": need(eff_rel),
                     "seeds to show no effect": need(float(r.sesoi), True),
                     "no effect reachable": reachable_no_effect(vc, float(r.sesoi), level)})
    return pd.DataFrame(rows)


def factorial_table(runs: pd.DataFrame, metrics: list[str], cells: Mapping[str, tuple[int, int]] = FACTORIAL
                    ) -> pd.DataFrame:
    """The 2 x 2 analysis (module docstring) of every metric in ``metrics`` present in ``runs`` (one row per
    run: ``variant``, ``seed`` and the metric columns): per metric and term (visual, textual, interaction)
    the estimate in points, its 95 % CI and p. Seeds missing from any cell are dropped (blocks must be
    complete). Empty when a cell has no run."""
    d = runs[runs.variant.isin(list(cells)) & runs.seed.notna()].copy()
    if d.empty or set(d.variant) != set(cells):
        return pd.DataFrame(columns=["metric", "term", "estimate", "ci_low", "ci_high", "p", "seeds"])
    complete = d.groupby("seed").variant.nunique()
    d = d[d.seed.isin(complete[complete == len(cells)].index)]
    d["v"] = [cells[v][0] - 0.5 for v in d.variant]
    d["t"] = [cells[v][1] - 0.5 for v in d.variant]
    d["block"] = d.seed.astype(int).astype(str)
    rows = []
    for m in metrics:
        if m not in d.columns or d[m].isna().any():
            continue
        fit = smf.ols(f"Q('{m}') ~ C(block) + v * t", data=d).fit()
        ci = fit.conf_int()
        for term, name in (("v", "visual loss (main effect)"), ("t", "textual loss (main effect)"),
                           ("v:t", "interaction")):
            rows.append({"metric": m, "term": name, "estimate": float(fit.params[term]),
                         "ci_low": float(ci.loc[term, 0]), "ci_high": float(ci.loc[term, 1]),
                         "p": float(fit.pvalues[term]), "seeds": int(d.seed.nunique())})
    return pd.DataFrame(rows)


FACTORIAL_METRICS = ["emoji_mr", "oca_mr", "img_r1", "wn_r1", "txt_r1"]


def run_metrics(results, lists_of: Mapping[str, list[str]], metrics: list[str]) -> pd.DataFrame:
    """One row per run (``variant``, ``seed``) with each metric = the mean over its lists of the list's mean
    over queries, computed from the per-query results (so it is recomputable from ``per_query.npz``)."""
    rows = []
    for r in (results.to_dict("records") if isinstance(results, pd.DataFrame) else results):
        row = {"variant": r["variant"], "seed": r["seed"]}
        for m in metrics:
            lists = lists_of.get(m, [m])
            if all(name in r["per_query"] for name in lists):
                row[m] = float(np.mean([np.mean(r["per_query"][name]) for name in lists]))
        rows.append(row)
    return pd.DataFrame(rows)


def factorial_markdown(table: pd.DataFrame) -> str:
    """The factorial table as Markdown, rounded (points; p to 3 decimals)."""
    from .views.tables import to_markdown

    if table.empty:
        return f"The 2 x 2 factorial needs {', '.join(FACTORIAL)} on common seeds.\n"
    t = table.copy()
    t["95 % CI"] = [f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(t.ci_low, t.ci_high)]
    t["estimate"] = t.estimate.map(lambda x: f"{x:+.2f}")
    t["p"] = t.p.map(lambda p: "< 0.001" if p < 0.001 else f"{p:.3f}")
    return to_markdown(t[["metric", "term", "estimate", "95 % CI", "p", "seeds"]])


# ----------------------------------------------------------------------------- SESOIs from the pilot
def sesoi_rule(pilot: pd.DataFrame) -> dict[str, float]:
    """The pre-registered SESOI of every contrast with pilot data (docs/preregistration.yaml, "SESOI rule"):
    ``max(half the paper's effect under its smaller reading, the pilot's SD of one seed's difference rounded
    up to 0.25 points, 0.5)``; the smaller reading of a paper effect E is ``min(E, E/100 * |mean_b|)``."""
    out = {}
    for _, r in pilot.dropna(subset=["v_seed"]).iterrows():
        sd = math.ceil(math.sqrt(float(r.v_seed) * int(r.n_seeds)) * 4 - 1e-9) / 4
        half = 0.0
        if pd.notna(r.get("paper_effect")):
            e = float(r.paper_effect)
            half = 0.5 * min(e, e / 100 * abs(float(r.mean_b)))
        out[r.id] = round(max(half, sd, 0.5), 2)
    return out


def precision_report(pilot_per_query: str, n_resamples: int = 999) -> str:
    """Markdown: the pilot's claims table recomputed under the committed pre-registration, the SESOIs the
    rule gives (and whether the pre-registration holds them), and :func:`precision_table`."""
    from .views.tables import to_markdown
    from .verdicts import recompute

    pre = load_prereg()
    pilot = recompute(pilot_per_query, n_resamples)
    rule = sesoi_rule(pilot)
    registered = {c["id"]: float(c["sesoi"]) for c in pre["contrasts"]}
    ses = pd.DataFrame([{"id": i, "metric": pilot.set_index("id").metric[i], "rule": v,
                         "pre-registered": registered[i], "match": registered[i] == v} for i, v in rule.items()])
    table = precision_table(pilot, pre["alpha"], pre["power"])
    fmt = table.copy()
    for col in fmt.columns:
        if fmt[col].dtype == float:
            fmt[col] = fmt[col].map(lambda x: "-" if pd.isna(x) else f"{x:.2f}")
    return "\n".join([
        f"Pilot: `{pilot_per_query}` ({int(pilot.n_seeds.max())} seeds per variant), recomputed with "
        f"{n_resamples} resamples under pre-registration version {pre.get('version')} "
        f"(sha256 `{pre['sha256'][:12]}`).", "", "### SESOIs from the rule", "", to_markdown(ses),
        "### Precision of each primary contrast", "",
        "Level: Holm's strictest step (alpha / number of primary contrasts); power 80 %. The test-set SE is "
        "what no number of seeds removes.", "", to_markdown(fmt)])


# ----------------------------------------------------------------------------- the study's claims files
def study_claims(results: pd.DataFrame, csv_path: str | Path, n_resamples: int = 9999,
                 clusters: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """The claims table of ``results``, computed once and recomputable from the repository.

    When :func:`inputs_digest` of the per-query arrays matches ``<csv>.digest``, the existing files are
    returned untouched. Otherwise ``per_query.npz`` is written beside ``csv_path`` (clusters default to
    ``results.attrs['clusters']``, which :func:`cookie_lib.study.grid.run_study` sets) and the table is
    computed *from that file*, so ``recompute`` on the committed file gives the same bytes. Notebooks 03-06 all read the same table (the whole Holm family)."""
    csv_path = Path(csv_path)
    clusters = clusters if clusters is not None else getattr(results, "attrs", {}).get("clusters")
    if clusters is None:
        raise ValueError("study_claims: no test-concept labels (pass clusters=, or use grid.run_study's frame)")
    pq_path = csv_path.with_name("per_query.npz")
    digest_path = csv_path.with_name(csv_path.name + ".digest")
    digest = inputs_digest(per_query_arrays(results, clusters), n_resamples)
    if all(p.exists() for p in (csv_path, digest_path, pq_path)) and digest_path.read_text().strip() == digest:
        return pd.read_csv(csv_path)  # notebooks 04-06 reuse what 03 computed: nothing rewritten
    save_per_query(results, clusters, pq_path)
    stored, stored_clusters = load_per_query(pq_path)  # the table is computed from the file, as recompute does
    df = claims_table(stored, n_resamples=n_resamples, clusters=stored_clusters)
    atomic_write_text(df.to_csv(index=False), csv_path)
    df = pd.read_csv(csv_path)
    write_claim_tables(df, stored, pq_path.parent)
    atomic_write_text(digest + "\n", digest_path)
    return df


def write_claim_tables(claims: pd.DataFrame, results, folder: str | Path) -> None:
    """Beside ``claims.csv`` in ``folder``: ``claims_by_claim.csv``/``.md`` (one verdict per claim of the
    paper) and ``table_factorial.csv``/``.md`` (the 2 x 2 analysis of the single-modal losses), both from the
    per-query ``results`` the claims came from and the same pre-registration."""
    from .views.tables import write_table

    folder = Path(folder)
    write_table(claim_verdicts(claims), folder / "claims_by_claim", index=False)
    fac = factorial_table(run_metrics(results, load_prereg().get("metrics") or {}, FACTORIAL_METRICS),
                          FACTORIAL_METRICS)
    atomic_write_text(fac.to_csv(index=False), folder / "table_factorial.csv")
    atomic_write_text(factorial_markdown(fac), folder / "table_factorial.md")


# ----------------------------------------------------------------------------- training convergence and the plateau rule
def convergence_table(results: list[dict], metrics: list[str]) -> pd.DataFrame:
    """Per validation metric, mean over seeds: the value after the last epoch, its change over the last
    epoch and over the last half of training, and the learning rate at the end relative to its peak. A
    change near 0 while the learning rate is still > 0 means the plateau is the model's, not the schedule's."""
    rows = []
    for m in metrics:
        curves = np.array([[e[m] for e in r["val_epochs"]] for r in results if all(m in e for e in r["val_epochs"])])
        if curves.size == 0:
            continue
        half = curves.shape[1] // 2
        rows.append({"metric": m, "final": curves[:, -1].mean(),
                     "change, last epoch": (curves[:, -1] - curves[:, -2]).mean() if curves.shape[1] > 1 else np.nan,
                     "change, last half": (curves[:, -1] - curves[:, half]).mean() if half else np.nan})
    lr = [r["history"][-1]["lr"] / max(h["lr"] for h in r["history"]) for r in results]
    df = pd.DataFrame(rows).set_index("metric").round(2)
    df["final lr / peak lr"] = round(float(np.mean(lr)), 3)
    return df


def plateau_slope(val_mr: list[float], window: int) -> float:
    """Least-squares slope (points per epoch) of the last ``window`` values of a validation curve:
    sum_e (e - ebar)(y_e - ybar) / sum_e (e - ebar)^2 over those epochs (``scipy.stats.linregress``)."""
    from scipy.stats import linregress

    y = np.asarray(val_mr[-window:], dtype=float)
    return float(linregress(np.arange(len(y)), y).slope) if len(y) >= 2 else float("nan")


def plateau_rule(prereg: dict | None = None) -> dict:
    """The pre-registered plateau rule (``docs/preregistration.yaml``, ``plateau``): ``window`` epochs,
    ``delta`` points of validation mR per epoch."""
    if prereg is None:
        prereg = load_prereg()
    rule = prereg.get("plateau") or {}
    return {"window": int(rule.get("window", 3)), "delta": float(rule.get("delta", 0.1))}


def convergence_by_variant(results: dict[str, list[dict]], metric: str = "rsum", rule: dict | None = None
                           ) -> pd.DataFrame:
    """:func:`convergence_table` of one validation metric for every variant (rows), so a reader sees whether
    each compared model, not only COOKIE, had stopped improving while the learning rate was above zero;
    and the plateau rule on validation mR = RSUM / 6: the mean over seeds of :func:`plateau_slope` over the
    last ``rule['window']`` epochs, its standard error over seeds, and whether it is below ``rule['delta']``
    (the variant is at its plateau). One epoch's change is mostly epoch-to-epoch jitter of a few tenths of
    a point, so the rule reads the slope over a window, averaged over the seeds."""
    rule = rule or plateau_rule()
    rows = {}
    for v, rs in results.items():
        if not rs:
            continue
        row = convergence_table(rs, [metric]).iloc[0].to_dict()
        slopes = [plateau_slope([e["rsum"] / 6 for e in r["val_epochs"]], rule["window"]) for r in rs]
        row.update({"epochs": len(rs[0]["val_epochs"]),
                    f"mR slope, last {rule['window']} epochs": round(float(np.mean(slopes)), 3),
                    "slope se": round(float(np.std(slopes, ddof=1) / np.sqrt(len(slopes))), 3) if len(slopes) > 1
                    else np.nan,
                    "at plateau": bool(np.mean(slopes) < rule["delta"])})
        rows[v] = row
    return pd.DataFrame(rows).T.rename_axis("variant")


def main(argv: list[str] | None = None) -> int:
    """``python -m cookie_lib.study.analyses precision --pilot docs/pilot/per_query.npz [--out FILE]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.analyses")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("precision", help="SESOIs and seeds needed, from a pilot's per-query results")
    pr.add_argument("--pilot", default="docs/pilot/per_query.npz")
    pr.add_argument("--resamples", type=int, default=999)
    pr.add_argument("--out", help="write the Markdown here (default: print it)")
    args = ap.parse_args(argv)
    text = precision_report(args.pilot, args.resamples) + "\n"
    if args.out:

        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
