"""Qualitative figures (cookie_lib.study.views.qualitative) and the modality gap (cookie_lib.study.qualitative)
on the fixture's test records with constructed embeddings whose answers are known."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from cookie_lib.config import resolve_path
from cookie_lib.data import load_karpathy
from cookie_lib.features import split_texts
from cookie_lib.study import qualitative as Q
from cookie_lib.study.views import qualitative as V

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def gallery():
    records = load_karpathy(resolve_path("data/fixture_emoji/dataset_emoji.json")).split("test")
    texts, ids = split_texts(records)
    keys = {}
    for r, row in zip(records, ids):
        for i in row:
            keys.setdefault(i, r.key)
    return Q.Gallery(records, texts, [keys[i] for i in range(len(texts))])


def _oracle(g: Q.Gallery, d: int = 32):
    """Every image and text of concept c gets the concept's own random direction (plus noise for images)."""
    torch.manual_seed(0)
    concepts = sorted(set(g.image_keys))
    base = F.normalize(torch.randn(len(concepts), d), dim=-1)
    at = {c: i for i, c in enumerate(concepts)}
    img = F.normalize(base[[at[r.key] for r in g.records]] + 0.05 * torch.randn(len(g.records), d), dim=-1)
    txt = base[[at[k] for k in g.text_keys]]
    return img, txt


def test_modality_gap_known_values():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    gap = Q.modality_gap(img, txt, [0, 1], [0, 1])
    assert gap["gap"] == pytest.approx(math.sqrt(2)) and gap["matched_cos"] == pytest.approx(0.0)
    assert gap["intra_img_cos"] == pytest.approx(1.0)
    same = Q.modality_gap(img, img, [0, 1], [0, 1])
    assert same["gap"] == pytest.approx(0.0) and same["matched_cos"] == pytest.approx(1.0)


def test_queries_are_distinct_concepts(gallery):
    tq, iq = gallery.pick_text_queries(4), gallery.pick_image_queries(3)
    assert len({gallery.text_keys[i] for i in tq}) == 4 and len({gallery.records[i].key for i in iq}) == 3
    assert tq == gallery.pick_text_queries(4)  # seeded


def test_oracle_retrieves_its_own_concept_and_figures_mark_hits(gallery):
    img, txt = _oracle(gallery)
    rand = F.normalize(torch.randn_like(img), dim=-1), F.normalize(torch.randn_like(txt), dim=-1)
    q = gallery.pick_text_queries(2)
    idx, scores = Q.top_k(txt[q[0]], img, 3)
    assert all(gallery.records[i].key == gallery.text_keys[q[0]] for i in idx[:1]) and scores == sorted(scores, reverse=True)
    fig = V.text_to_image_figure({"oracle": (img, txt), "random": rand}, gallery, q, k=3)
    assert len(fig.axes) == 2 * 2 * 4
    frames = [ax.spines["top"].get_edgecolor() for ax in fig.axes[1:4]]  # oracle's first query: top-1 is a hit
    assert matplotlib.colors.to_hex(frames[0]) == V.HIT
    fig2 = V.image_to_text_figure({"oracle": (img, txt), "random": rand}, gallery, gallery.pick_image_queries(2), k=3)
    assert len(fig2.axes) == 2 * 3


def test_embedding_space_figure_reports_the_gap(gallery):
    img, txt = _oracle(gallery)
    shifted = F.normalize(txt + 2.0 * F.normalize(torch.ones(txt.shape[1]), dim=0), dim=-1)  # push texts aside
    fig, table = V.embedding_space_figure({"aligned": (img, txt), "gapped": (img, shifted)}, gallery, max_concepts=6)
    assert list(table.index) == ["aligned", "gapped"] and len(fig.axes) == 2
    assert table.loc["gapped", "gap"] > table.loc["aligned", "gap"]
    assert table.loc["aligned", "matched_cos"] > 0.9
    a, b = Q.project_2d(img, txt, "tsne")
    assert a.shape == (len(img), 2) and b.shape == (len(txt), 2)
