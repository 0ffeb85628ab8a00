"""The study's figures: the corpora (notebook 01), training curves (02), the ablations (03, 04), the
downstream design matrix and the speed/accuracy Pareto figure (05), and the benchmark's inference-time and
cost-model figures (``python -m cookie_lib.study.bench``); the retrieval pictures and the embedding-space
figure are in :mod:`.qualitative`. Text, tables and the parsing of the benchmark CSV are in
:mod:`cookie_lib.study.views.report`.

Every figure function returns a matplotlib Figure (the benchmark's two save theirs and return the path);
``save_figure`` writes it atomically (temp file in the same folder, then ``os.replace``), so an interrupted
notebook never leaves a truncated PNG, and inside a notebook displays the saved file as the cell's output
(so every figure is inline as well as on disk).

    from cookie_lib.study.views.figures import loss_curves, save_figure
    fig = loss_curves([result["history"] for result in results])
    save_figure(fig, results_dir / "fig_loss_curves.png")
"""
from __future__ import annotations

import os
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ...data import KarpathyCorpus

LOSS_TERMS = ("cross_modal", "visual", "textual")


def figure_title(fig) -> str:
    """The figure's suptitle, else the first non-empty axes title (joined lines), else ""."""
    sup = getattr(fig, "_suptitle", None)  # matplotlib keeps the suptitle Text here (None when unset)
    texts = [sup.get_text() if sup is not None else ""] + [ax.get_title(loc) for ax in fig.axes
                                                         for loc in ("center", "left", "right")]
    return next((" ".join(t.split()) for t in texts if t and t.strip()), "")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill, nbval, JupyterLab), False in a script or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_saved(path: str | Path, title: str = "") -> None:
    """Display the PNG at ``path`` as a cell output: the bytes of the file itself, so what the reader sees
    is what was saved. The output's ``image/png`` metadata carries ``title`` and the file name (no folder,
    so no machine-specific path lands in a notebook), which the HTML report's contents page lists."""
    from IPython.display import Image, display

    path = Path(path)
    meta = {"filename": path.name, **({"title": title} if title else {})}
    display(Image(filename=str(path), metadata=meta))


def save_figure(fig, path: str | Path, dpi: int = 120, show: bool | None = None, close: bool = True,
                title: str | None = None) -> Path:
    """``fig.savefig`` to a temporary PNG beside ``path``, rename it over ``path`` (atomic on POSIX), then
    display that file inline when ``show`` (default: when running in a Jupyter kernel) and close the figure.

    Displaying the saved file rather than the figure means the notebook output and ``results/`` hold the
    same image, whatever the matplotlib backend (``run_all.sh`` sets Agg, where nothing is shown by
    itself). Closing frees the figure (a notebook makes a dozen) and keeps Jupyter's inline backend from
    showing it a second time; a closed Figure can still be saved or returned. ``title`` (default: the
    figure's suptitle or first axes title, :func:`figure_title`) names it in the output metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a results figure is meant to be read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if show if show is not None else in_notebook():
        show_saved(path, title if title is not None else figure_title(fig))
    if close:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- data (01)
def design_of(record) -> str:
    """The designer of an emoji image: the folder it lies in (``images/<design>/<KEY>.png``)."""
    return record.path.parent.name


def caption_kinds(corpus: KarpathyCorpus) -> pd.DataFrame:
    """Captions per kind (cldr_label, cldr_keywords, short_name, template, ...), with the share in %
    and whether the kind is templated (generated from a fixed phrase) or human-written."""
    counts = Counter(k for r in corpus.records for k in r.caption_kinds)
    df = pd.DataFrame({"kind": list(counts), "captions": list(counts.values())})
    df["source"] = np.where(df.kind == "template", "templated", "human")
    df["share (%)"] = (100 * df.captions / df.captions.sum()).round(1)
    return df.sort_values("captions", ascending=False).reset_index(drop=True)


def contact_sheet(corpus: KarpathyCorpus, n_concepts: int = 8, width: int = 28):
    """Rows: ``n_concepts`` evenly spaced concepts drawn by every design; columns: the designs, then the
    concept's human captions (CLDR label + keywords, wrapped)."""
    by_concept: dict[str, dict[str, object]] = {}
    for r in corpus.records:
        by_concept.setdefault(r.key, {})[design_of(r)] = r
    designs = sorted({design_of(r) for r in corpus.records})
    complete = [k for k, d in by_concept.items() if len(d) == len(designs)] or list(by_concept)
    picks = [complete[i] for i in np.linspace(0, len(complete) - 1, min(n_concepts, len(complete))).astype(int)]
    fig, axes = plt.subplots(len(picks), len(designs) + 1, squeeze=False,
                             figsize=(1.3 * len(designs) + 3.2, 1.35 * len(picks)),
                             gridspec_kw={"width_ratios": [1] * len(designs) + [2.6]})
    for i, key in enumerate(picks):
        for j, design in enumerate(designs):
            ax = axes[i, j]
            ax.axis("off")
            rec = by_concept[key].get(design)
            if rec is not None:
                with Image.open(rec.path) as im:
                    ax.imshow(im.convert("RGB"))
            if i == 0:
                ax.set_title(design, fontsize=9)
        rec = next(iter(by_concept[key].values()))
        caps = dict(zip(rec.caption_kinds, rec.captions))
        text = caps.get("cldr_label", rec.captions[0])
        if "cldr_keywords" in caps:
            text += "\n" + textwrap.shorten(caps["cldr_keywords"], 3 * width, placeholder=" ...")
        ax = axes[i, -1]
        ax.axis("off")
        ax.text(0, 0.5, "\n".join(textwrap.fill(line, width) for line in text.split("\n")),
                va="center", fontsize=7.5, family="monospace")
        if i == 0:
            ax.set_title("label / keywords", fontsize=9, loc="left")
    fig.suptitle("The same concept drawn by independent designers, with its CLDR captions", fontsize=10)
    fig.tight_layout()
    return fig


def drawing_sheet(records, n: int = 24, cols: int = 8, width: int = 16):
    """A grid of ``n`` evenly spaced drawings (e.g. Open Clip Art) titled with their first caption."""
    picks = [records[i] for i in np.linspace(0, len(records) - 1, min(n, len(records))).astype(int)]
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, picks):
        with Image.open(r.path) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(textwrap.shorten(r.captions[0], width, placeholder="..."), fontsize=7)
    fig.suptitle("Pre-training drawings with their human titles", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- training curves (02)
def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first points average over what exists so far)."""
    v = np.asarray(values, float)
    if window <= 1 or len(v) < 2:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def mean_loss_history(histories: list[list[dict]], terms=LOSS_TERMS) -> pd.DataFrame:
    """Per optimiser step, the mean over seeds of each loss term (rows: step; columns: terms present)."""
    frames = [pd.DataFrame(h).set_index("step") for h in histories]
    present = [t for t in terms if all(t in f.columns for f in frames)]
    return pd.concat([f[present] for f in frames]).groupby(level=0).mean()


def loss_curves(histories: list[list[dict]], terms=LOSS_TERMS, window: int | None = None):
    """One line per loss term (mean over seeds, moving-average smoothed), against the optimiser step."""
    mean = mean_loss_history(histories, terms)
    window = window or max(1, len(mean) // 20)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for term in mean.columns:
        ax.plot(mean.index, mean[term].to_numpy(), alpha=0.25)
        ax.plot(mean.index, smooth(mean[term], window), color=ax.lines[-1].get_color(), label=term)
    ax.set(xlabel="optimiser step", ylabel="InfoNCE loss",
           title=f"Training losses (mean of {len(histories)} seed(s), moving average {window})")
    ax.legend()
    fig.tight_layout()
    return fig


def val_curves(val_epochs: list[list[dict]], metrics=("rsum", "img_r1", "txt_r1")):
    """Validation metric per epoch, one panel per metric: mean over seeds with a +-1 std band."""
    frames = [pd.DataFrame(e).set_index("epoch") for e in val_epochs]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        table = pd.concat([f[m] for f in frames], axis=1)
        mean, std = table.mean(axis=1), table.std(axis=1, ddof=1).fillna(0.0)
        ax.plot(mean.index, mean, marker="o")
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2)
        ax.set(xlabel="epoch", title=f"val {m}")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"Validation retrieval per epoch (mean ± std over {len(frames)} seed(s))", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- ablations (03, 04)
def variant_val_curves(results: dict[str, list[dict]], metric: str = "rsum"):
    """Validation ``metric`` per epoch, one line per variant (mean over its seeds)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for v, rs in results.items():
        curve = np.mean([[e[metric] for e in r["val_epochs"]] for r in rs], axis=0)
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", ms=3, label=v)
    ax.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"validation {metric}, mean over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def grouped_bars(df: pd.DataFrame, variants: list[str], metrics: dict[str, str]):
    """One panel per task (``{task: metric}``, tasks the runs lack are left out), one bar per variant:
    mean over seeds, error bar = std."""
    metrics = {t: m for t, m in metrics.items() if m in df.columns and df[m].notna().any()}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.6), squeeze=False)
    g = df.groupby("variant")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, m) in zip(axes[0], metrics.items()):
        mean = g[m].mean().reindex(variants)
        std = g[m].std(ddof=1).reindex(variants).fillna(0.0)
        ax.bar(range(len(variants)), mean, yerr=std, capsize=3, color=colors[:len(variants)])
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(task, fontsize=9)
    fig.tight_layout()
    return fig


def depth_plot(df: pd.DataFrame, depth: dict[str, int], metrics: dict[str, str]):
    """Metric vs transformer depth L (mean over seeds, error bar = std), one panel per task present."""
    metrics = {t: m for t, m in metrics.items() if m in df.columns and df[m].notna().any()}
    d = df[df.variant.isin(depth)].assign(depth=lambda x: x.variant.map(depth))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, (task, m) in zip(axes[0], metrics.items()):
        s = d.groupby("depth")[m]
        ax.errorbar(s.mean().index, s.mean(), yerr=s.std(ddof=1).fillna(0.0), marker="o", capsize=3)
        ax.set(xlabel="depth L of the shared head", title=f"{task} ({m})")
        ax.set_xticks(sorted(set(depth.values())))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- downstream (05)
def design_matrix_caption(mats: dict[str, pd.DataFrame], seed: int) -> str:
    """The sentence above :func:`design_matrix_figure`, naming the models it plots, in its panel order."""
    names = " beside ".join(f"**{name}**" for name in mats)
    designs = sorted({d for m in mats.values() for d in (*m.index, *m.columns)})
    return (f"R@1 (%) of a query drawn by one designer (rows) against the gallery of another designer (columns), "
            f"emoji test concepts, {len(designs)} designs ({', '.join(designs)}); seed {seed} of {names}, "
            "one heatmap each, left to right.")


def design_matrix_figure(mats: dict[str, pd.DataFrame]):
    """Heatmaps of cross-design image R@1 (rows: the query's designer, columns: the gallery's), one per model."""
    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 3.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m.to_numpy(float), vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(m.shape[1]), m.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(m.shape[0]), m.index, fontsize=8)
        for (i, j), v in np.ndenumerate(m.to_numpy(float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("gallery design")
    axes[0, 0].set_ylabel("query design")
    fig.colorbar(im, ax=axes[0, -1], fraction=0.046, label="R@1 (%)")
    fig.suptitle("Cross-design image retrieval, emoji test concepts", fontsize=10)
    fig.tight_layout()
    return fig


def pareto_figure(table: list[dict], results: str | Path | None = None):
    """The speed/accuracy table (rows of :func:`cookie_lib.study.onestream.speed_accuracy_table`) as a Pareto
    figure: R@1 (mean of i2t and t2i; mean ± sd over seeds when the table has several per method) against time
    (log x) per gallery, one marker per method. The time is the benchmark's end-to-end retrieval time
    (:func:`cookie_lib.study.bench.costmodel.end_to_end_seconds`) when ``results`` holds it, else the seconds over
    cached encoder tokens of the table itself (the axis says which)."""
    from ..bench.costmodel import end_to_end_seconds

    df = pd.DataFrame(table)
    df["r1"] = (df.i2t_r1 + df.t2i_r1) / 2
    galleries = list(dict.fromkeys(df.gallery))
    fig, axes = plt.subplots(1, len(galleries), figsize=(5 * len(galleries), 4), squeeze=False)
    for ax, gallery in zip(axes[0], galleries):
        sources = set()
        for method, r in df[df.gallery == gallery].groupby("method", sort=False):
            t, src = end_to_end_seconds(results, method, int(r.n_images.iloc[0]), int(r.n_captions.iloc[0]))
            if t is None:
                t, src = float(r.seconds.mean()), "over cached encoder tokens"
            sources.add("end to end (benchmark)" if src != "over cached encoder tokens" else src)
            sd = r.r1.std() if len(r) > 1 else 0.0
            ax.errorbar(t, r.r1.mean(), yerr=sd, fmt="o", capsize=3,
                        label=f"{method} ({len(r)} seed{'s' if len(r) > 1 else ''})")
        first = df[df.gallery == gallery].iloc[0]
        ax.set_xscale("log")
        ax.set_xlabel(f"retrieval seconds, {' / '.join(sorted(sources))} (log)")
        ax.set_ylabel("R@1, mean of both directions (%)")
        ax.set_title(f"{gallery}: {first.n_images} images x {first.n_captions} captions", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- benchmark (bench CLI)
def time_figure(result: dict, path: Path) -> Path:
    """Measured end-to-end time (every repeat) against N per strategy, with the fitted cost model."""
    from ..bench.costmodel import CostModel
    from ..bench.endtoend import CAPS, STRATEGIES

    fig, ax = plt.subplots(figsize=(6, 4.2))
    pts = result["points"]
    grid = np.geomspace(min(r["n_images"] for r in pts) / 2, max(r["n_images"] for r in pts) * 2, 50)
    for s, marker in zip(STRATEGIES, "so^v"):
        rs = [r for r in pts if r["strategy"] == s]
        line = ax.loglog(grid, CostModel(**result["fits"][s]).time(grid, CAPS * grid), "-", lw=0.8)[0]
        ax.scatter([r["n_images"] for r in rs], [r["seconds"] for r in rs], marker=marker, color=line.get_color(),
                   label=f"{s} (points: repeats; line: fit)", s=14)
    ax.axvline(result["holdout_n"], color="grey", lw=0.6, ls=":", label=f"held out: N = {result['holdout_n']}")
    ax.set_xlabel("gallery size N images (5N captions)")
    ax.set_ylabel("retrieval time end to end, both directions (s)")
    ax.set_title(f"{'trained' if result['trained'] else 'untrained'} models, {result['device']} "
                 f"{result['threads']} threads", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def cost_figure(table: list[dict], result: dict, path: Path) -> Path:
    """Fitted two-stream / one-stream time ratio against N (log-log) per one-stream model class, with the
    paper's 3/1000, each crossing N and its bootstrap interval (shaded)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, c in result["classes"].items():
        rs = [r for r in table if r["model"] == name]
        line = ax.loglog([r["n_images"] for r in rs], [r["ratio"] for r in rs], "-" if c["measured"] else "--",
                         label=name)[0]
        if c["crossing_n_images"] is not None:
            ax.axvline(c["crossing_n_images"], color=line.get_color(), lw=0.6, ls=":")
        iv = c["interval"]
        if iv["low"] is not None:
            ax.axvspan(iv["low"], iv["high"], color=line.get_color(), alpha=0.15)
    ax.axhline(result["paper_ratio"], color="k", ls="--", lw=0.8, label="paper: 3/1000")
    ax.set_xlabel("gallery size N images (5N captions)")
    ax.set_ylabel("two-stream time / one-stream time")
    ax.set_title(f"a (N + M) + b N M fitted at N = {result['fit_ns']}, {result['device']} {result['threads']} "
                 "threads; shaded: 95 % bootstrap interval of the crossing", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
