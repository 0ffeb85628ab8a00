"""Frozen-baseline sensitivity (cookie_lib.study.baselines): every candidate tabled, one chosen per modality
on validation, and the study's current choice reproduces baselines.frozen_baseline."""
import pytest

from cookie_lib.study import baselines as B


@pytest.fixture(scope="module")
def table(smoke_corpus):
    return B.profile_table("smoke")


def test_every_candidate_is_tabled_and_one_is_chosen_on_validation(table):
    assert len(table) == len(B.IMAGE_CANDIDATES) + len(B.TEXT_CANDIDATES)
    for modality, metric in B.SELECT_ON.items():
        sub = table[table.modality == modality]
        assert sub.chosen.sum() == 1
        assert sub.loc[sub.chosen, f"val_{metric}"].item() == sub[f"val_{metric}"].max()
    img = table[table.modality == "image"]
    assert {"test_img_r1", "val_img_r1"} <= set(img.columns) and img.test_img_r1.notna().all()
    txt = table[table.modality == "text"]
    assert txt.test_wn_r1.notna().all() and txt.val_txt_r1.notna().all()


def test_the_studys_choice_equals_frozen_baseline(table):
    import copy

    from cookie_lib.config import load_config, resolve_path
    from cookie_lib.features import split_features
    from cookie_lib.study.baselines import frozen_baseline
    from cookie_lib.study.baselines import whole_network_images
    from cookie_lib.study.grid import downstream_suite
    from cookie_lib.data import load_corpus

    cfg = load_config("smoke")
    corpus = load_corpus(cfg)
    pre = split_features(cfg, corpus.split("train"), "train", cfg.train.num_views, resolve_path(cfg.data.dataset))
    suite = copy.copy(downstream_suite("smoke", cfg))
    suite.emoji = whole_network_images(cfg, suite.emoji)
    metrics, _ = frozen_baseline(suite, whole_network_images(cfg, pre), cfg.model.dim)
    row = table[(table.modality == "image") & (table.source == "whole") & table.whitened].iloc[0]
    assert row.test_img_r1 == pytest.approx(metrics["img_r1"])
    row = table[(table.modality == "text") & table.whitened].iloc[0]
    assert row.test_wn_r1 == pytest.approx(metrics["wn_r1"]) and row.test_txt_r1 == pytest.approx(metrics["txt_r1"])
