"""The study's tables as DataFrames and everything it writes as text from them: ``summary.md``, ``manifest.json`` and the README's
generated blocks. The notebooks and ``scripts/update_readme.py`` use it, so a number reaches the README
only through these functions; the verdicts themselves come from :mod:`cookie_lib.study.verdicts`, the Markdown
table writer from :mod:`cookie_lib.study.views.tables`.

    from cookie_lib.study.views.report import summary_table
    from cookie_lib.study.views.tables import to_markdown
    print(to_markdown(summary_table(runs, ["emoji_mr", "img_r1", "wn_r1"])))
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ... import metric_names as N
from ...runtime import atomic_write_json, manifest
from .tables import to_markdown

# The downstream tasks (none trained by any loss) and their headline metric.
TASK_METRICS = {
    "cross-modal, emoji test (mR)": N.EMOJI_MR,
    "cross-modal, Open Clip Art test (mR)": N.OCA_MR,
    "image retrieval across designs (R@1)": N.IMG_R1,
    "WordNet lemma -> gloss (R@1)": N.WN_R1,
    "emoji label -> keywords (R@1)": N.TXT_R1,
}
ALL_METRICS = [N.EMOJI_I2T_R1, N.EMOJI_T2I_R1, N.EMOJI_RSUM, N.EMOJI_MR, N.OCA_I2T_R1, N.OCA_T2I_R1, N.OCA_RSUM,
               N.OCA_MR, N.IMG_R1, N.IMG_MAP, N.WN_R1, N.WN_MRR, N.TXT_R1, N.TXT_MRR]
HEADLINE_METRICS = [N.EMOJI_MR, N.OCA_MR, N.IMG_R1, N.IMG_MAP, N.WN_R1, N.WN_MRR, N.TXT_R1]
CLAIM_COLUMNS = {"id": "id", "claim_id": "claim", "family": "family", "claim": "contrast", "a": "a", "b": "b",
                 "metric": "metric", "n_seeds": "seeds", "n_concepts": "concepts", "diff": "diff (points)",
                 "rel_pct": "diff (relative %)", "ci": "95 % CI", "seed_share": "seed share of SE^2", "p_raw": "p",
                 "p_holm": "p (Holm)", "mde": "MDE (80 %)", "verdict": "verdict", "verdict_seed": "seed-level verdict",
                 "paper": "paper", "vs_paper": "vs the paper's size"}

RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"


# ----------------------------------------------------------------------------- tables
def summary_table(df: pd.DataFrame, metrics: list[str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """Per variant (rows, index ``variant``): ``seeds`` = number of runs, then for each metric present in
    ``df`` the string ``"{mean:.1f} ± {std:.1f}"`` over seeds (sample std, ddof = 1), ``"{mean:.1f} (1 seed)"``
    for a single run, and ``"{value:.1f}"`` for the seedless frozen baseline (deterministic; ``seeds`` = 0).
    Metrics a variant lacks (the frozen encoders have no cross-modal space) are "-"."""
    metrics = [m for m in (metrics or ALL_METRICS) if m in df.columns]
    g = df.groupby("variant", sort=False)
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1).fillna(0.0), g["seed"].count()
    table = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    single = n[n == 1].index
    table.loc[single] = mean.loc[single].round(1).astype(str) + " (1 seed)"
    seedless = n[n == 0].index
    table.loc[seedless] = mean.loc[seedless].round(1).astype(str)
    table = table.mask(mean.isna(), "-")
    table.insert(0, "seeds", n)
    return table.reindex([v for v in (order or table.index) if v in table.index])


def claims_view(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table as a reader wants it: rounded, CI as one string, Holm p only where it applies, the
    seed-level verdict marked with "(differs)" where it is not the primary one."""
    c = claims.copy()
    c["ci"] = [f"[{lo:+.2f}, {hi:+.2f}]" if pd.notna(lo) else "-" for lo, hi in zip(c.ci_low, c.ci_high)]
    for col, nd in (("diff", 2), ("rel_pct", 1), ("mde", 2), ("seed_share", 2)):
        c[col] = c[col].astype(float).round(nd)
    for col in ("p_raw", "p_holm"):
        c[col] = [("< 0.001" if p < 0.001 else f"{p:.3f}") if pd.notna(p) else "-" for p in c[col].astype(float)]
    c["verdict_seed"] = [("-" if not isinstance(s, str) else f"{s} (differs)" if s != v else s)
                         for s, v in zip(c.verdict_seed, c.verdict)]
    c["vs_paper"] = c.vs_paper.fillna("-")
    c["n_concepts"] = c.n_concepts.map(lambda x: "-" if pd.isna(x) else f"{int(x)}")
    c["claim_id"] = c.claim_id.fillna("-")
    return c[list(CLAIM_COLUMNS)].rename(columns=CLAIM_COLUMNS)


# ----------------------------------------------------------------------------- training (02)
def plateau_note(conv: pd.DataFrame, claims: pd.DataFrame) -> str:
    """One line for the claims: how many variants met the pre-registered plateau rule (``conv`` = the
    convergence table of :func:`convergence_by_variant`, its CSV read back) and which contrasts involve a
    variant that did not (their verdicts stand, flagged: they compare models still improving)."""
    from ..analyses import plateau_rule  # lazy: statsmodels is only needed here
    if "at plateau" not in conv:
        return ""
    at = conv["at plateau"].astype(str).str.lower().isin(["true", "1"])
    off = set(conv.index[~at])
    rule = plateau_rule()
    text = (f"Plateau rule (pre-registered: mean validation-mR slope over the last {rule['window']} epochs < "
            f"{rule['delta']:g} points per epoch): {int(at.sum())} of {len(conv)} variants at their plateau")
    if not off:
        return text + ".\n"
    flagged = claims[claims.a.isin(off) | claims.b.isin(off)].id.tolist()
    return (text + f"; not at plateau: {', '.join(sorted(off))}, so these contrasts compare a model still "
            f"improving: {', '.join(flagged) or 'none'}.\n")


def convergence_conclusion(conv: pd.DataFrame, first: pd.Series, last: pd.Series,
                           by_variant: pd.DataFrame | None = None) -> str:
    """Closing text of notebook 02, generated from its convergence table and loss means."""
    from ..analyses import plateau_rule  # lazy: statsmodels is only needed here
    falls = ", ".join(f"{k} {first[k]:.2f} -> {last[k]:.2f}" for k in first.index)
    lines = [f"- Every loss term falls (mean of the first vs the last 20 % of steps: {falls})."]
    for m, r in conv.iterrows():
        lines.append(f"- Validation {m}: {r['final']:.1f} after the last epoch; it moved {r['change, last epoch']:+.2f} "
                     f"over the last epoch and {r['change, last half']:+.2f} over the last half of training.")
    if by_variant is not None and len(by_variant):
        ch = by_variant["change, last epoch"].astype(float)
        lines.append(f"- Across all {len(ch)} variants, validation RSUM moved between {ch.min():+.2f} "
                     f"({ch.idxmin()}) and {ch.max():+.2f} ({ch.idxmax()}) over the last epoch.")
        slope_col = next((c for c in by_variant.columns if str(c).startswith("mR slope")), None)
        if slope_col is not None:
            rule = plateau_rule()
            off = by_variant.index[~by_variant["at plateau"].astype(bool)]
            slopes = by_variant[slope_col].astype(float)
            lines.append(f"- Plateau rule (pre-registered: mean over seeds of the validation-mR slope over the last "
                         f"{rule['window']} epochs < {rule['delta']:g} points per epoch): "
                         f"{len(by_variant) - len(off)} of {len(by_variant)} variants at their plateau (slopes "
                         f"{slopes.min():+.2f} to {slopes.max():+.2f})"
                         + (f"; not at plateau: {', '.join(off)} -- contrasts with them compare models still improving."
                            if len(off) else "."))
    lr = conv["final lr / peak lr"].iloc[0]
    lines.append(f"- The learning rate ends at {lr:.2f} x its peak (not zero), so a flat curve at the end is a plateau "
                 "of the model, not the schedule stopping it; a curve still rising says the budget, not convergence, "
                 "bounds these numbers.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- head (04), speed (05)
def gap_sentence(gap: pd.DataFrame) -> str:
    """One line per model of the modality-gap table (rows = models)."""
    cols = gap.columns
    lines = []
    for name, r in gap.iterrows():
        parts = [f"{c} {r[c]:.3f}" for c in cols if isinstance(r[c], (int, float, np.floating))]
        lines.append(f"- Modality gap, {name}: " + ", ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def speed_view(speed: pd.DataFrame, results: Path | None = None) -> pd.DataFrame:
    """The speed/accuracy table: one row per (gallery, method), R@1 both ways as mean ± sd over the
    cross-encoder's seeds, distinct pairs the joint model scored, and the end-to-end retrieval time of
    the benchmark (:func:`end_to_end_seconds`: measured at this N, else its cost model) when ``results``
    holds it. ``speed`` has one row per seed (:func:`cookie_lib.study.grid.speed_accuracy`)."""
    from ..bench.costmodel import end_to_end_seconds  # lazy: imports torch
    keys = ["gallery", "n_images", "n_captions", "method", "k"]
    g = speed.groupby(keys, sort=False, dropna=False)

    def pm(col):
        mean, sd, n = g[col].mean(), g[col].std(), g.size()
        return [f"{a:.1f} ± {b:.1f}" if c > 1 else f"{a:.1f}" for a, b, c in zip(mean, sd.fillna(0.0), n)]
    out = g.size().rename("seeds").reset_index()
    out["i2t R@1"], out["t2i R@1"] = pm(N.I2T_R1), pm(N.T2I_R1)
    out["i2t_r1_mean"], out["t2i_r1_mean"] = g.i2t_r1.mean().values, g.t2i_r1.mean().values
    out["pairs_scored"] = g.pairs_scored.mean().round().astype(int).values
    times = [end_to_end_seconds(results, r.method, int(r.n_images), int(r.n_captions)) for r in out.itertuples()]
    out["seconds"] = [float("nan") if t is None else t for t, _ in times]
    out["time source"] = [src for _, src in times]
    return out


def speed_sentence(speed: pd.DataFrame, results: Path | None = None) -> str:
    """Closing text on speed vs accuracy, from the per-seed speed/accuracy table (and the benchmark's times)."""
    v = speed_view(speed, results)
    lines = []
    for gallery, rows in v.groupby("gallery", sort=False):
        two = rows[rows.method == "two-stream"].iloc[0]
        for _, r in rows[rows.method != "two-stream"].iterrows():
            better = "above" if (r.i2t_r1_mean + r.t2i_r1_mean) > (two.i2t_r1_mean + two.t2i_r1_mean) else "not above"
            t = ("" if r.seconds is None or two.seconds is None or pd.isna(r.seconds) else
                 f" in {r.seconds:.3g} s against {two.seconds:.3g} s ({r.seconds / max(two.seconds, 1e-9):,.0f} x the "
                 f"time, {r['time source']})")
            lines.append(f"- {gallery}: {r.method} reaches R@1 {r['i2t R@1']} / {r['t2i R@1']} (i2t / t2i, "
                         f"{r.seeds} seed(s)) against {two['i2t R@1']} / {two['t2i R@1']} for the two-stream model "
                         f"({better} it on the mean of both directions){t}.")
    return "\n".join(lines) + "\n"


def fmt_or_reason(value, spec: str, reason: str = "", scale: float = 1.0, suffix: str = "") -> str:
    """``value * scale`` formatted with ``spec`` (+ ``suffix``), or "not determined (reason)" when the
    measurement left it empty (None or NaN): a degenerate timing fit is printed, never raised."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "not determined" + (f" ({reason})" if reason else "")
    return f"{value * scale:{spec}}{suffix}"


def inference_claim(results: Path) -> pd.DataFrame | None:
    """The inference-time claim from the benchmark's cost model (``inference_cost_model.json``): per
    one-stream model class (the trained cross-encoder, measured; a paper-class joint model, FLOP-costed),
    a and b, the gallery size N at which two-stream / one-stream crosses the paper's 3/1000 with its 95 %
    bootstrap interval, and the large-N limit; ``attrs["exhaustive"]`` says how it was timed and how well
    the fit predicts the held-out N. Every value a fit can leave empty prints as "not determined (reason)".
    None when the benchmark has not run."""
    path = Path(results) / "inference_cost_model.json"
    if not path.exists():
        return None
    cm = json.loads(path.read_text())
    if "classes" not in cm:
        return _inference_claim_v1(cm)
    rows = []
    for name, m in cm["classes"].items():
        iv = m["interval"]
        ci = (f"[{iv['low']:,.0f}, {iv['high']:,.0f}]" if iv.get("low") is not None
              else "not determined" + (f" ({iv['reason']})" if iv.get("reason") else ""))
        rows.append({"one-stream model": name, "a (s per item)": f"{m['a']:.3g}", "b (s per pair)": f"{m['b']:.3g}",
                     "N where the ratio = 3/1000": fmt_or_reason(m.get("crossing_n_images"), ",.0f",
                                                                 m.get("crossing_n_reason")),
                     "95 % interval (bootstrap over repeats)": ci,
                     "ratio as N -> infinity": fmt_or_reason(m.get("ratio_large_n_limit"), ".3g",
                                                             m.get("ratio_large_n_reason"), 1000, "/1000")})
    df = pd.DataFrame(rows)
    reps = cm["repeats"]
    checks = "; ".join(f"{s} {h['measured_s']:.3g} s measured vs {h['predicted_s']:.3g} s predicted "
                       f"({100 * h['relative_error']:+.0f} %)" for s, h in cm["holdout"].items())
    df.attrs["exhaustive"] = (f"Timed end to end (images and caption strings to the top 10 both ways) on "
                              f"{cm['pipeline']}; {cm['device']}, {cm['threads']} threads; "
                              f"{' / '.join(map(str, reps if isinstance(reps, list) else [reps]))} repeats at N = "
                              f"{' / '.join(map(str, cm['fit_ns']))} fitted; held-out N = {cm['holdout_n']}: "
                              f"{checks}")
    return df


def _inference_claim_v1(cm: dict) -> pd.DataFrame:
    """The same table from a cost-model file of the earlier benchmark (pair-sample extrapolation)."""
    x = cm["exhaustive_check"]
    rows = [{"one-stream model": name, "a (s per item)": f"{m['a']:.3g}", "b (s per pair)": f"{m['b']:.3g}",
             "N where the ratio = 3/1000": fmt_or_reason(m.get("crossing_n_images"), ",.0f", m.get("crossing_n_reason")),
             "ratio as N -> infinity": fmt_or_reason(m.get("ratio_large_n_limit"), ".3g", m.get("ratio_large_n_reason"),
                                                     1000, "/1000")}
            for name, m in cm["models"].items()]
    df = pd.DataFrame(rows)
    df.attrs["exhaustive"] = (f"one-stream exhaustive at N = {x['n_images']}: measured {x['measured_s']:.3g} s end to "
                              f"end, {x['extrapolated_from_pair_sample_s']:.3g} s extrapolated from a pair sample, "
                              f"{x['cost_model_predicted_s']:.3g} s predicted by the cost model ({cm['device']}, "
                              f"{cm['threads']} threads)")
    st = cm.get("one_stream_fit_stability")
    if st and not st["stable"]:
        df.attrs["exhaustive"] += f"; the one-stream fit is not stable across repeats ({st['reason']})"
    return df


# ----------------------------------------------------------------------------- summary.md, manifest
def summary_markdown(study, runs: pd.DataFrame, claims: pd.DataFrame, inference: pd.DataFrame | None) -> str:
    """``summary.md``: headline metrics per variant (frozen baseline included), the claims in prose
    (generated from the claims table), the claims table, and the inference-time answer."""
    from .claims import claims_prose

    headline = summary_table(runs, HEADLINE_METRICS)
    conv = study.results_path / "table_convergence_variants.csv"  # written by notebook 02
    plateau = plateau_note(pd.read_csv(conv, index_col=0), claims) if conv.exists() else ""
    parts = [f"# COOKIE replication: results ({study.profile} profile)", "",
             f"Primary variants: seeds {study.seeds}; secondary: seeds {study.secondary_seeds}. Downstream test sets "
             "(never trained on); mean ± std over seeds, every metric out of 100 (mR = RSUM / 6).", "",
             "## Headline metrics", "", to_markdown(headline),
             "## Claims", "", claims_prose(claims), plateau,
             "## Claims table", "", to_markdown(claims_view(claims))]
    if inference is not None:
        parts += ["## Inference time", "", to_markdown(inference), inference.attrs.get("exhaustive", ""), ""]
    return "\n".join(parts)


def write_manifest(study, runs: pd.DataFrame, results: Path) -> dict:
    """``manifest.json``: config, versions, commit (from :func:`cookie_lib.runtime.manifest`), the profile's
    run-level keys, the pre-registration's sha256 and the list of runs."""
    from ..prereg import load_prereg, prereg_sha256

    run_list = runs[["variant", "seed", "train_seconds"]].astype(object).where(runs[["variant", "seed",
                                                                                        "train_seconds"]].notna(), None)
    man = manifest(study.config.to_dict(), profile=study.profile, seeds=study.seeds, secondary_seeds=study.secondary_seeds,
                   preregistration_sha256=prereg_sha256(), preregistration_version=load_prereg().get("version"),
                   bootstrap_resamples=study.bootstrap_resamples, runs=run_list.to_dict("records"), n_runs=int(runs.seed.notna().sum()),
                   total_train_seconds=float(runs.train_seconds.sum()))
    atomic_write_json(man, Path(results) / "manifest.json")
    return man


# ----------------------------------------------------------------------------- README blocks
def section(markdown: str, heading: str) -> str:
    """The body of one ``## heading`` section of a Markdown text (ValueError naming it when absent)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    if not m:
        raise ValueError(f"no '## {heading}' section")
    return m.group(1).strip()


def results_block(results: Path) -> str:
    """The README's results block, from ``results/{summary.md, manifest.json}``."""
    summary = (results / "summary.md").read_text()
    man = json.loads((results / "manifest.json").read_text())
    try:
        headline, claims, table = (section(summary, h) for h in ("Headline metrics", "Claims", "Claims table"))
    except ValueError as err:
        raise ValueError(f"{results / 'summary.md'}: {err}") from None
    return "\n".join([
        RESULTS_START,
        f"Profile `{man['profile']}`: {man['n_runs']} training runs ({man['total_train_seconds'] / 60:.0f} min of "
        f"training summed over runs, two at a time), commit `{man['commit'][:7]}`, pre-registration sha256 "
        f"`{man['preregistration_sha256'][:12]}`. Downstream test sets, never trained on; mean ± std over seeds; "
        "every metric out of 100 (mR = RSUM / 6). Generated from [results/summary.md](results/summary.md) by "
        "`scripts/update_readme.py`.", "", headline, "", claims, "",
        "<details><summary>The claims table (also <a href=\"results/claims.csv\">results/claims.csv</a>)</summary>",
        "", table, "", "</details>", RESULTS_END])


def bench_block(results: Path) -> str:
    """The README's benchmark block, from ``results/benchmarks.json``, ``inference_cost_model.json`` and
    ``speed_accuracy.csv`` (the structured files the benchmark and notebook 05 write)."""
    b = json.loads((results / "benchmarks.json").read_text())["headline"]
    lines = [BENCH_START]
    if "inference_median_s" in b:
        med = b["inference_median_s"]
        ns = sorted({int(n) for by_n in med.values() for n in by_n}, key=int)
        lines += [f"| retrieval end to end, median (CPU, {b['threads']} threads) | "
                  + " | ".join(f"N={n:,}, M={5 * n:,}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
        for s, by_n in med.items():
            lines.append(f"| {s} | " + " | ".join(f"{by_n[str(n)]:.3g} s" for n in ns) + " |")
    else:  # a file of the earlier benchmark (per-item costs extrapolated)
        lines += [f"| gallery (CPU, {b['threads']} threads) | two-stream | one-stream (extrapolated) | ratio "
                  "| re-rank top-10 | re-rank top-50 |", "|---|---|---|---|---|---|"]
        for n, h in sorted(b["inference"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| N={int(n):,} images, {5 * int(n):,} captions | {h['two_stream_s']:.2f} s | "
                         f"{h['one_stream_s']:,.0f} s | {1000 * h['ratio']:.2f}/1000 | {h['rerank_k10_s']:.2f} s | "
                         f"{h['rerank_k50_s']:.2f} s |")
    inf = inference_claim(results)
    if inf is not None:
        lines += ["", to_markdown(inf).strip(), "", inf.attrs["exhaustive"] + "."]
    speed = results / "speed_accuracy.csv"
    if speed.exists():
        table = pd.read_csv(speed)
        if "seed" in table.columns:  # per-seed rows (an earlier notebook 05)
            table = speed_view(table, results)
        cols = [c for c in table.columns if not c.endswith("_mean")]
        lines += ["", "Accuracy on both sides (emoji test; COOKIE and the cross-encoder trained on it, mean ± sd "
                  "over seeds; time end to end from the benchmark):", "", to_markdown(table[cols]).strip()]
    ev = b["eval_scale"]
    tp = ", ".join(f"{k} {v:.0f}" for k, v in b["training_pairs_per_s"].items())
    lines += ["", f"Training throughput (pairs/s): {tp}. Recall over 5,000 images x 25,000 captions: "
              f"{ev['seconds']:.2f} s (matrix-product floor {ev['matmul_floor_s']:.2f} s per direction), peak "
              f"+{ev['delta_mib']:.0f} MiB ([benchmarks.csv](results/benchmarks.csv), "
              "[cost model](results/fig_cost_model.png), [speed/accuracy](results/fig_speed_accuracy.png))."]
    if "study_step" in b:  # benchmarks.json files before the study-step benchmark lack it
        c = b["study_step_ceilings_flops_per_s"]
        steps = "; ".join(f"{k} {v['pairs_per_s']:.0f} pairs/s, {100 * v['fraction_of_ceiling']:.0f} % "
                          f"({100 * v['fraction_of_ceiling_cpu_time']:.0f} %)" for k, v in b["study_step"].items())
        lines += ["", f"The study's own training step ({b['profile']} profile, {b['study_step_threads']} "
                  "thread(s), as each of the study's training processes; FLOPs / step time as a share of the same "
                  f"run's matmul ceiling of its precision, fp32 {c['fp32'] / 1e9:.0f} and bf16 "
                  f"{c['bf16'] / 1e9:.0f} GFLOP/s; in brackets the same on CPU seconds, which other processes on "
                  f"the cores disturb less): {steps} ([profile](results/profile_study_step.txt))."]
    lines.append(BENCH_END)
    return "\n".join(lines)


def update_readme_text(readme: str, results: Path) -> str:
    """``readme`` with its results and benchmark blocks (between the markers) regenerated from ``results``;
    ValueError naming the missing markers."""
    for a, b in ((RESULTS_START, RESULTS_END), (BENCH_START, BENCH_END)):
        if a not in readme or b not in readme:
            raise ValueError(f"README.md lacks the {a} ... {b} markers")
    new = re.sub(rf"{re.escape(RESULTS_START)}.*?{re.escape(RESULTS_END)}", lambda _: results_block(results),
                 readme, flags=re.S)
    return re.sub(rf"{re.escape(BENCH_START)}.*?{re.escape(BENCH_END)}", lambda _: bench_block(results), new,
                  flags=re.S)
