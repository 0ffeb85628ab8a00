"""The claims table as a figure and as prose: the forest plot of the pre-registered contrasts, the
Markdown that says what reproduces, and the closing sentences of the notebooks. Everything here is read
off the table (:func:`cookie_lib.study.verdicts.claims_table`, or ``pd.read_csv('claims.csv')``), so the
text cannot disagree with the numbers.

    from cookie_lib.study.views.claims import claims_figure, claims_prose, conclusion
    claims_figure(df, "fig_claims.png"); print(claims_prose(df)); print(conclusion(df, ["cookie"]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from ..prereg import DIRECTIONS, FAMILIES
from ..verdicts import NOT_RUN, TOO_FEW_SEEDS, VERDICTS, claim_verdicts

VERDICT_COLOURS = {"reproduced": "#1a9850", "contradicted": "#d73027", "no effect": "#4575b4",
                   "inconclusive": "#fdae61", TOO_FEW_SEEDS: "#7f7f7f", NOT_RUN: "#7f7f7f"}

CI_NOTE = ("*How to read the intervals:* the inference target is new training seeds and new test concepts of the same "
           "corpora. Each 95 % CI is diff ± t(df) × SE: the SE comes from a bootstrap that resamples seeds and test "
           "concepts (all queries of a concept together; `scipy.stats.bootstrap`), df from Satterthwaite's formula "
           "over the seed and concept variance components. The p-values, the equivalence test (TOST at the SESOI), "
           "the tests against the paper's effect and the MDE use the same SE and df; intervals are not adjusted for "
           "multiplicity, the primary verdicts are (Holm). A seed-level paired t test (test concepts held fixed, "
           "df = seeds - 1) is reported beside every verdict as a sensitivity analysis.")


def claims_figure(df: pd.DataFrame, path: str | Path | None = None):
    """Forest plot: one row per contrast, its difference ``a - b`` exactly as in the table (points) with the
    95 % CI, the +/- SESOI band shaded grey, the marker coloured by verdict, the paper's effect (read as
    points) as a grey cross on the side the paper predicts, "paper: a < b" in the label where the paper
    predicts a negative difference; primary family on top. Returns the Figure; with ``path`` also writes
    it atomically and shows it inline in a notebook (``save_figure``)."""
    from .figures import save_figure  # figures imports the data layer; only needed here

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


def claims_prose(df: pd.DataFrame, alpha: float = 0.05, prereg: Mapping | str | Path | None = None) -> str:
    """Markdown generated from the claims table (also works on ``pd.read_csv('claims.csv')``), so prose
    about what reproduces cannot disagree with the numbers: the claim-level count (one verdict per claim of
    the paper, :func:`~cookie_lib.study.verdicts.claim_verdicts`), the contrast-level count, how to read the
    intervals, then one bullet per claim and one per contrast."""
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


def conclusion(df: pd.DataFrame, variants: Iterable[str]) -> str:
    """Markdown for the end of a notebook: the verdict sentence of every contrast that involves one of
    ``variants`` (both families), generated from the claims table so the text matches the numbers."""
    vs = set(variants)
    sub = df[df.a.isin(vs) | df.b.isin(vs)].reset_index(drop=True)
    if sub.empty:
        return "No pre-registered contrast involves these variants.\n"
    return "\n".join([f"- **{r.id}** ({r.family}) {r.claim}: {_sentence(r)}." for _, r in sub.iterrows()]
                     + ["", CI_NOTE]) + "\n"


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


def _pts(x: float) -> str:
    return f"{x:+.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"

