"""Everything the study writes as text: Markdown tables, the per-variant summary table, ``summary.md``
and the README's generated blocks. Notebook 06 and ``scripts/update_readme.py`` both use it, so a
number reaches the README only through these functions.

    from cookie_lib.study.report import summary_table, to_markdown
    print(to_markdown(summary_table(runs, ["rsum", "img_r1"])))

The verdicts themselves (which claim holds, Welch's test) are computed in
:mod:`cookie_lib.study.verdicts`; this module only formats their rows.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd

# The paper's inference-time claim: a two-stream model needs "about 3/1000 of the inference time" of
# a one-stream cross-encoder (at 5,000 images x 25,000 captions).
PAPER_INFERENCE_RATIO = 3 / 1000
# The headline metric per task: cross-modal RSUM, cross-design image R@1, label->keywords text R@1.
TASK_METRICS = {"cross-modal retrieval": "rsum", "image retrieval": "img_r1", "text matching": "txt_r1"}
METRIC_COLUMNS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
                  "img_r1", "img_r5", "img_map", "txt_r1", "txt_r5", "txt_mrr"]
HEADLINE_METRICS = ["rsum", "i2t_r1", "t2i_r1", "img_r1", "img_map", "txt_r1", "txt_mrr"]

RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"


# ----------------------------------------------------------------------------- tables
def summary_table(df: pd.DataFrame, metrics: list[str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """Per variant (rows, index ``variant``): ``seeds`` = number of runs, then for each metric present in
    ``df`` the string ``"{mean:.1f} ± {std:.1f}"`` over seeds (sample std, ddof = 1), or
    ``"{mean:.1f} (1 seed)"`` when a variant has a single run (no spread to report, rather than "± 0.0").
    ``df`` has one row per run with columns ``variant``, ``seed`` and the metrics; rows follow ``order``
    (variants absent from ``df`` are skipped), else first appearance."""
    metrics = [m for m in (metrics or METRIC_COLUMNS) if m in df.columns]
    g = df.groupby("variant", sort=False)
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1).fillna(0.0), g["seed"].count()
    table = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    single = n[n < 2].index
    table.loc[single] = mean.loc[single].round(1).astype(str) + " (1 seed)"
    table.insert(0, "seeds", n)
    return table.reindex([v for v in (order or table.index) if v in table.index])


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table: header, ``|---|`` rule, one line per row, ending in a newline. A named or
    non-range index becomes the first column (pandas.to_markdown would need tabulate)."""
    frame = df.reset_index() if df.index.name or not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- benchmark CSV
def _gallery_size(rows: pd.DataFrame) -> pd.Series:
    """Images in the gallery per row: the ``n_images`` column when the CSV has it, else parsed from the
    older ``setting`` strings ("cpu N=5000 M=25000")."""
    if "n_images" in rows.columns:
        return rows["n_images"].astype(float)
    return rows["setting"].str.extract(r"N=(\d+)", expand=False).astype(float)


def inference_ratio(bench_csv: str | Path) -> dict | None:
    """From ``python -m cookie_lib.study.bench``'s CSV: the two-stream / one-stream inference-time ratio at
    the largest gallery measured, as ``{"setting", "ratio"}``; None when the file or the rows are absent."""
    path = Path(bench_csv)
    if not path.exists():
        return None
    b = pd.read_csv(path)
    rows = b[(b.benchmark == "inference") & (b.metric == "ratio_two_over_one")].copy()
    rows = rows[_gallery_size(rows).notna()] if len(rows) else rows
    if rows.empty:
        return None
    rows["n"] = _gallery_size(rows)
    best = rows.sort_values("n").iloc[-1]
    return {"setting": best.setting, "ratio": float(best.value)}


def inference_claim_row(bench: dict) -> dict:
    """The inference-time claim as a row of the claims table (columns of verdicts.claims_table)."""
    r = bench["ratio"]
    return {"claim": "two-stream inference takes ~3/1000 of one-stream", "paper": "3/1000",
            "comparison": f"two-stream / one-stream ({bench['setting']})", "metric": "time ratio",
            "a": round(r, 5), "b": PAPER_INFERENCE_RATIO, "diff (points)": float("nan"),
            "diff (relative %)": round(100 * (r / PAPER_INFERENCE_RATIO - 1), 1), "p (Welch)": float("nan"),
            "reproduced?": f"measured {r * 1000:.1f}/1000 ({r / PAPER_INFERENCE_RATIO:.2f}x the paper's ratio)"}


# ----------------------------------------------------------------------------- sentences and summary.md
def claim_sentence(row: dict | pd.Series) -> str:
    """One plain sentence per row of the claims table: reproduced or not, and by how much."""
    verdict = row["reproduced?"]
    gap = f"{row['diff (points)']:+.2f} points ({row['diff (relative %)']:+.1f} %), p = {row['p (Welch)']}"
    what = f"**{row['claim']}** ({row['comparison']}, {row['metric']}; paper: {row['paper']}):"
    if verdict == "yes":
        return f"{what} reproduced, {gap}."
    if verdict == "no: within noise":
        return f"{what} not reproduced: the difference is within noise, {gap}."
    if verdict == "no: opposite":
        return f"{what} not reproduced: the opposite holds, {gap}."
    return f"{what} {verdict}, {gap}."


def inference_sentence(bench: dict) -> str:
    r = bench["ratio"]
    return (f"**Two-stream inference is much cheaper than one-stream** (paper: 3/1000): measured "
            f"{r * 1000:.1f}/1000 at {bench['setting']} ({r / PAPER_INFERENCE_RATIO:.2f}x the paper's ratio; "
            "one-stream cost extrapolated from a subset of pairs).")


def frozen_row(frozen: dict, metrics: list[str] = HEADLINE_METRICS) -> str:
    """A Markdown row for the frozen encoders under a :func:`summary_table` of ``metrics`` (with its
    ``variant`` and ``seeds`` columns): their unimodal metrics, "-" where they have none."""
    cells = ["frozen encoders", "-"] + [f"{frozen[m]:.1f}" if m in frozen else "-" for m in metrics]
    return "| " + " | ".join(cells) + " |\n"


def summary_markdown(profile: str, seeds: list[int], runs: pd.DataFrame, frozen: dict, claims: pd.DataFrame,
                     bench: dict | None = None) -> str:
    """``summary.md``: headline metrics of the cached-feature variants (fine-tuned ``*_ft`` runs left out)
    with the frozen encoders' row, one sentence per claim, and the claims table."""
    cached = runs[~runs.variant.str.endswith("_ft")]
    headline = summary_table(cached, HEADLINE_METRICS)
    sentences = [claim_sentence(r) for _, r in claims.iterrows() if r["metric"] != "time ratio"]
    if bench is not None:
        sentences.append(inference_sentence(bench))
    return "\n".join([
        f"# COOKIE replication: results ({profile} profile, seeds {seeds})", "",
        "Test split; mean ± std over seeds. RSUM is out of 600, every other metric out of 100.", "",
        "## Headline metrics", "", to_markdown(headline) + frozen_row(frozen, [m for m in HEADLINE_METRICS
                                                                              if m in headline.columns]),
        "## Claims", "", "p >= 0.05 is reported as *within noise*: this run cannot distinguish the two variants.", "",
        *[f"- {s}" for s in sentences], "",
        "## Claims table", "", to_markdown(claims),
    ])


# ----------------------------------------------------------------------------- README blocks
def section(markdown: str, heading: str) -> str:
    """The body of one ``## heading`` section of a Markdown text (ValueError naming it when absent)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    if not m:
        raise ValueError(f"no '## {heading}' section")
    return m.group(1).strip()


def results_block(results: Path) -> str:
    """The README's results block, from ``results/{summary.md, manifest.json, claims.md}``."""
    summary = (results / "summary.md").read_text()
    manifest = json.loads((results / "manifest.json").read_text())
    claims = (results / "claims.md").read_text().strip()
    try:
        headline = section(summary, "Headline metrics")
    except ValueError as err:
        raise ValueError(f"{results / 'summary.md'}: {err}") from None
    return "\n".join([
        RESULTS_START,
        f"Profile `{manifest['profile']}`, seeds {manifest['seeds']}, {manifest['n_runs']} training runs "
        f"({manifest['total_train_seconds'] / 60:.0f} min of training summed over runs, two at a time), commit `{manifest['commit'][:7]}`. "
        "Test split, mean ± std over seeds. RSUM is out of 600, and every other metric is out of 100. Generated from "
        "[results/summary.md](results/summary.md) by `scripts/update_readme.py`.",
        "",
        headline,
        "",
        "**The paper's claims** (Welch's t-test over seeds; p >= 0.05 means the difference is within noise; "
        "[results/claims.csv](results/claims.csv)):",
        "",
        claims,
        RESULTS_END,
    ])


def bench_block(results: Path) -> str:
    """The README's benchmark block: inference-time ratio per gallery size and training throughput, from
    ``results/benchmarks.csv`` (TODO(H5): read the structured n_images/n_captions columns once written)."""
    with open(results / "benchmarks.csv", newline="") as f:
        v = {(r["benchmark"], r["setting"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    settings = sorted({s for b, s, m in v if b == "inference" and m == "ratio_two_over_one"},
                      key=lambda s: int(s.split("N=")[1].split()[0]))
    lines = [BENCH_START, "| gallery (CPU, 2 threads) | two-stream retrieval | one-stream (extrapolated) | ratio "
             "| paper | re-rank top-10 with one-stream |", "|---|---|---|---|---|---|"]
    for s in settings:
        g = lambda m: v[("inference", s, m)]  # noqa: E731
        lines.append(f"| {s.replace('cpu ', '')} | {g('two_stream_s'):.1f} s | {g('one_stream_s'):,.0f} s "
                     f"| {1000 * g('ratio_two_over_one'):.1f}/1000 | {1000 * PAPER_INFERENCE_RATIO:g}/1000 "
                     f"| {g('rerank_k10_s'):.1f} s |")
    lines += ["", "| training throughput (pairs/s, batch 128, d=256, L=2) | full COOKIE | cross-modal only | dual encoder, no head |",
              "|---|---|---|---|"]
    for mode in ("cached", "live"):
        cells = [f"{v[('training', f'cpu {mode} {n}', 'pairs_per_s')]:.0f}"
                 for n in ("cookie", "cross_modal_only", "dual_encoder")]
        lines.append(f"| {mode} {'features' if mode == 'cached' else 'MobileNetV2 (fine-tuned)'} | " + " | ".join(cells) + " |")
    frac = v[("compute", "cpu cached cookie", "fraction_of_ceiling")]
    ev = v[("eval_scale", "cpu 5000x25000 D=256", "seconds")]
    mem = v[("eval_scale", "cpu 5000x25000 D=256", "peak_rss_delta_mib")]
    lines += ["", f"A cached training step reaches {100 * frac:.0f} % of this machine's fp32 matmul FLOP/s. Recall over "
              f"5,000 images x 25,000 captions takes {ev:.1f} s with a peak of +{mem:.0f} MiB "
              "([results/benchmarks.csv](results/benchmarks.csv), "
              "[profile](results/profile_train_step.txt), [figure](results/fig_inference_time.png)).", BENCH_END]
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
