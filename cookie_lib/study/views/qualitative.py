"""Pictures of what a model retrieves, and of its shared embedding space, with the sentences that describe them.

Everything takes embeddings and a :class:`~cookie_lib.study.qualitative.Gallery`, not runs, so a notebook
can call it on any model::

    from cookie_lib.evaluate import embed_split, load_run
    from cookie_lib.study.qualitative import Gallery
    from cookie_lib.study.views.figures import save_figure
    run = load_run("runs/cookie-s0"); img, txt = embed_split(run.model, feats, device)
    g = Gallery.from_features(feats)
    fig = text_to_image_figure({"COOKIE": (img, txt), "CLIP-style": (img2, txt2)}, g, g.pick_text_queries(4))
    save_figure(fig, "results/fig_qualitative_t2i.png")

Shapes as in :mod:`cookie_lib.study.qualitative` (image embeddings [N, d], text embeddings [M, d], unit
norm). A hit is a result with the query's key (same concept: another design of it, or one of its captions),
framed or written in green; a miss in red.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ...data import ImageRecord
from ...features import load_image
from ..qualitative import Gallery, concept_label, matched_pairs, modality_gap, project_2d, top_k

HIT, MISS = "#1a9850", "#d73027"
COLOUR_NAMES = {HIT: "green", MISS: "red"}  # the words the prose uses for the frame/text colours above
IMAGE_MARKER, TEXT_MARKER = ("o", "circles"), ("^", "triangles")  # (matplotlib marker, its name in prose)



def retrieval_caption(models, k: int = 5) -> str:
    """The sentence under the retrieval figures, built from the same names and colours the figures use."""
    names = " beside ".join(f"**{n}**" for n in models)
    return (f"Top {k} per query for {names}; a {COLOUR_NAMES[HIT]} frame (image) or {COLOUR_NAMES[HIT]} ✓ "
            f"(caption) = the query's concept, {COLOUR_NAMES[MISS]} / ✗ = another concept.")


def _image_cell(ax, record: ImageRecord, title: str, colour: str | None) -> None:
    ax.imshow(load_image(record.path))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=7)
    if colour is not None:  # a thick frame: green = same concept as the query, red = another concept
        for side in ax.spines.values():
            side.set_edgecolor(colour)
            side.set_linewidth(3)


def text_to_image_figure(models: dict[str, tuple[torch.Tensor, torch.Tensor]], gallery: Gallery,
                         queries: list[int], k: int = 5):
    """Rows: each text query x each model; columns: its top ``k`` images, framed green (hit) or red.

    ``models`` maps a name to (image emb [N, d], text emb [M, d]) of the same gallery; ``queries`` are rows
    of ``gallery.texts``. Only models with a shared image-text space belong here (not frozen encoders).
    """
    names = list(models)
    rows = len(queries) * len(names)
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.5 * k + 2.6, 1.55 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6] + [1] * k})
    for qi, q in enumerate(queries):
        for mi, name in enumerate(names):
            img, txt = models[name]
            idx, scores = top_k(txt[q], img, k)
            r = qi * len(names) + mi
            label = axes[r, 0]
            label.axis("off")
            head = textwrap.fill(gallery.texts[q], 26) + "\n" if mi == 0 else ""
            label.text(0, 0.5, head + textwrap.fill(f"[{name}]", 26), va="center", fontsize=8)
            for c, (i, s) in enumerate(zip(idx, scores), 1):
                rec = gallery.records[i]
                hit = rec.key == gallery.text_keys[q]
                _image_cell(axes[r, c], rec, f"#{c} {s:.2f}", HIT if hit else MISS)
            for c in range(len(idx) + 1, k + 1):
                axes[r, c].axis("off")
    fig.suptitle(f"text -> image, top {k} ({COLOUR_NAMES[HIT]} frame = same concept as the query, "
                 f"{COLOUR_NAMES[MISS]} = another)", fontsize=10)
    fig.tight_layout()
    return fig


def image_to_text_figure(models: dict[str, tuple[torch.Tensor, torch.Tensor]], gallery: Gallery,
                         queries: list[int], k: int = 5, width: int = 40):
    """Rows: image queries (titled with the concept's label); columns: the query image, then per model its
    top ``k`` captions marked with a check (same concept) or a cross, coloured the same way. Long captions
    and labels are wrapped at ``width`` characters, never cut; rows grow to fit. Shapes as in
    :func:`text_to_image_figure`."""
    names = list(models)
    cells = []  # per query row, per model: [(hit, score, wrapped caption)]
    for q in queries:
        rec = gallery.records[q]
        row = []
        for name in names:
            img, txt = models[name]
            idx, scores = top_k(img[q], txt, k)
            row.append([(gallery.text_keys[i] == rec.key, s, textwrap.fill(gallery.texts[i], width,
                                                                             subsequent_indent="      "))
                        for i, s in zip(idx, scores)])
        cells.append(row)
    # lines per row: the most any model needs (a wrapped caption counts all its lines)
    lines = [max(k, max(sum(c[2].count("\n") + 1 for c in col) for col in row)) for row in cells]
    fig, axes = plt.subplots(len(queries), len(names) + 1, figsize=(1.8 + 3.9 * len(names), 0.3 * sum(lines) + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": [0.6] + [1] * len(names),
                                                         "height_ratios": lines})
    for r, q in enumerate(queries):
        rec = gallery.records[q]
        _image_cell(axes[r, 0], rec, textwrap.fill(concept_label(gallery.records, rec.key), 18), None)
        for c, name in enumerate(names, 1):
            ax = axes[r, c]
            ax.axis("off")
            if r == 0:
                ax.set_title(textwrap.fill(name, 40), fontsize=9)
            y = 0
            for hit, s, text in cells[r][c - 1]:
                n = text.count("\n") + 1
                ax.text(0, 1 - (y + 0.5 * n) / lines[r], f"{'✓' if hit else '✗'} {s:.2f} {text}", va="center",
                        fontsize=7.5, color=HIT if hit else MISS, family="DejaVu Sans")
                y += n
    fig.suptitle(f"image -> text, top {k} captions (✓ = a caption of the query's concept)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the shared space
def embedding_space_figure(models: dict[str, tuple[torch.Tensor, torch.Tensor]], gallery: Gallery,
                           method: str = "pca", max_concepts: int = 12, seed: int = 0):
    """One panel per model: image (o) and text (^) points of up to ``max_concepts`` test concepts in 2-D,
    coloured by concept, with the modality gap measured on all points written beside it.

    Returns (figure, DataFrame of :func:`modality_gap` per model). ``models`` maps a name (e.g. "shared head",
    "separate heads") to (image emb [N, d], text emb [M, d]) of ``gallery``.
    """
    img_idx, txt_idx = matched_pairs(gallery)
    concepts = list(dict.fromkeys(gallery.image_keys))
    rng = np.random.default_rng(seed)
    chosen = [concepts[i] for i in sorted(rng.choice(len(concepts), min(max_concepts, len(concepts)), replace=False))]
    # tab20 comes in dark/light pairs of one hue: take the ten dark ones first, so up to ten concepts differ in hue
    colour = {c: plt.cm.tab20((2 * i) % 20 + (i // 10) % 2) for i, c in enumerate(chosen)}
    sel_img = [i for i, r in enumerate(gallery.records) if r.key in colour]
    sel_txt = [j for j, key in enumerate(gallery.text_keys) if key in colour]
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.4), squeeze=False)
    rows = []
    for ax, (name, (img, txt)) in zip(axes[0], models.items()):
        gap = modality_gap(img, txt, img_idx, txt_idx)
        rows.append({"model": name, **gap})
        pi, pt = project_2d(img[sel_img], txt[sel_txt], method, seed)
        ax.scatter(pi[:, 0], pi[:, 1], c=[colour[gallery.records[i].key] for i in sel_img], marker=IMAGE_MARKER[0],
                   s=28, edgecolors="k", linewidths=0.4)
        ax.scatter(pt[:, 0], pt[:, 1], c=[colour[gallery.text_keys[j]] for j in sel_txt], marker=TEXT_MARKER[0],
                   s=28, edgecolors="k", linewidths=0.4)
        ax.set_title(f"{name}\ngap {gap['gap']:.2f} | matched cos {gap['matched_cos']:.2f} | "
                     f"unmatched {gap['unmatched_cos']:.2f}", fontsize=8.5)
        ax.set_xticks([]), ax.set_yticks([])
    # one legend for the figure: the two markers (in grey: colour means concept), then each concept's colour
    # under its readable label
    from matplotlib.lines import Line2D
    marker = [Line2D([], [], ls="", marker=m, color="0.6", mec="k", mew=0.4, label=f"{kind} ({word})")
              for kind, (m, word) in (("image", IMAGE_MARKER), ("text", TEXT_MARKER))]
    concept = [Line2D([], [], ls="", marker="s", ms=8, color=colour[c],
                      label=textwrap.fill(concept_label(gallery.records, c), 40)) for c in chosen]
    fig.suptitle(f"shared space ({method.upper()} of image and text embeddings, {len(chosen)} test concepts; "
                 "colour = concept)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.legend(handles=marker + concept, loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=7.5, frameon=False,
               title="marker / concept", title_fontsize=8)
    return fig, pd.DataFrame(rows).set_index("model")


def embedding_space_caption(method: str = "pca") -> str:
    """The sentence above the embedding-space figure, from the markers the figure draws."""
    return (f"Image ({IMAGE_MARKER[1]}) and text ({TEXT_MARKER[1]}) embeddings of the same emoji test concepts, "
            f"one colour per concept (named in the legend), projected jointly to 2-D with {method.upper()}; "
            "the modality gap is measured in the full space.")
