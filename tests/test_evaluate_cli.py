"""``python -m cookie_lib.evaluate --run RUN --split test``: a smoke run trained here, then evaluated from its folder.

The command must rebuild the model from checkpoint.pt alone and give exactly the metrics the trainer's own
model gives on the same split, write them as JSON, and fail with a message naming the missing file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cookie_lib import evaluate as E
from cookie_lib.config import load_config
from cookie_lib.metrics import cross_modal_retrieval
from cookie_lib.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A 3-step smoke run (fixture emoji corpus); returns (run folder, trainer)."""
    out = tmp_path_factory.mktemp("evalcli") / "run"
    cfg = load_config("smoke", {"train.max_steps": 3, "train.epochs": 1})
    tr = Trainer(cfg, out, progress=False)
    tr.run()
    return out, tr


def test_cli_writes_every_metric_and_matches_the_trainer(smoke_run, tmp_path, capsys):
    run, tr = smoke_run
    out = tmp_path / "sub" / "eval.json"
    assert E.main(["--run", str(run), "--split", "test", "--out", str(out), "--device", "cpu",
                   "--protocol", "karpathy"]) == 0  # the trainer's validation protocol
    result = json.loads(out.read_text())
    m = result["metrics"]
    # the three tasks the emoji corpus supports: cross-modal, cross-design image retrieval, text matching
    for key in ("i2t_r1", "t2i_r10", "rsum", "img_r1", "img_map", "txt_r1", "txt_mrr"):
        assert key in m and math.isfinite(m[key]), key
    assert result["split"] == "test" and result["images"] == len(tr.corpus.split("test"))
    assert result["steps"] == 3 and "commit" in result and "coco_1k" not in result
    # the rebuilt model is the trained one: identical metrics to evaluating the trainer's model in memory
    from cookie_lib.features import split_features
    from cookie_lib.config import resolve_path
    feats = split_features(tr.cfg, tr.corpus.split("test"), "test", 1, resolve_path(tr.cfg.data.dataset))
    direct = tr.evaluate(feats)
    assert {k: v for k, v in m.items() if k != "mr"} == pytest.approx(direct, abs=1e-9)
    assert m["mr"] == pytest.approx(m["rsum"] / 6) and result["protocol"] == "karpathy"
    printed = capsys.readouterr().out
    assert "RSUM" in printed and "image -> text" in printed and str(out) in printed


def test_default_output_is_in_the_run_folder(smoke_run):
    run, _ = smoke_run
    assert E.main(["--run", str(run), "--split", "val", "--device", "cpu"]) == 0
    assert json.loads((run / "eval_val.json").read_text())["split"] == "val"


def test_missing_run_folder_and_checkpoint_are_named(tmp_path, capsys):
    assert E.main(["--run", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert E.main(["--run", str(tmp_path / "empty")]) == 2
    assert str(tmp_path / "empty" / "checkpoint.pt") in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert E.main(["--run", str(tmp_path / "bad")]) == 2
    assert "checkpoint.pt is not a readable checkpoint" in capsys.readouterr().err


def test_unknown_split_is_an_error(smoke_run, capsys):
    run, _ = smoke_run
    assert E.main(["--run", str(run), "--split", "nosuch", "--device", "cpu"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_coco_branch_reports_1k_and_5k_on_a_foreign_corpus(smoke_run, monkeypatch):
    """--dataset: the emoji-trained run evaluated on the COCO-format fixture (same encoders, another corpus).

    A COCO test split of COCO_TEST_IMAGES images gets the 1K protocol (mean over COCO_FOLDS folds) and 5K
    (the whole split); the fixture's 3 test images stand in for 5,000 and 3 folds for 5.
    """
    run, _ = smoke_run
    coco = ROOT / "tests" / "fixtures" / "karpathy_coco_mini" / "dataset_coco.json"
    monkeypatch.setattr(E, "COCO_TEST_IMAGES", 3)
    monkeypatch.setattr(E, "COCO_FOLDS", 3)
    res = E.evaluate_run(run, "test", "cpu", dataset=coco)
    assert res["corpus"] == "coco" and res["images"] == 3 and res["captions"] == 15  # first 5 captions kept
    assert "img_r1" not in res["metrics"] and "txt_r1" not in res["metrics"]  # COCO supports cross-modal only
    assert res["coco_5k"]["rsum"] == res["metrics"]["rsum"]
    # recompute 1K by hand: one image per fold, its own 5 captions among the fold's 5
    run_model = E.load_run(run, "cpu")
    from cookie_lib.features import split_features
    corpus = E.load_karpathy(coco, None, max_captions=5)
    feats = split_features(run_model.config, corpus.split("test"), "test", 1, coco)
    img, txt = E.embed_split(run_model.model, feats, torch.device("cpu"))
    rows, owner = feats.caption_index()
    folds = [cross_modal_retrieval(img[f:f + 1], txt[rows][owner == f], torch.zeros(5, dtype=torch.long))
             for f in range(3)]
    assert res["coco_1k"]["rsum"] == pytest.approx(sum(f["rsum"] for f in folds) / 3)
    assert res["coco_1k"]["i2t_r1"] == 100.0  # a single image in the gallery is always ranked first
    monkeypatch.setattr(E, "COCO_TEST_IMAGES", 5000)
    res = E.evaluate_run(run, "test", "cpu", dataset=coco)
    assert "coco_1k" not in res and "COCO 1K/5K skipped" in res["notes"][0]


def test_missing_corpus_is_named(smoke_run, tmp_path, capsys):
    run, _ = smoke_run
    assert E.main(["--run", str(run), "--dataset", str(tmp_path / "gone.json")]) == 2
    assert "gone.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- exported models, protocols
@pytest.fixture(scope="module")
def exported(smoke_run):
    from cookie_lib.search import export_model

    run, _ = smoke_run
    return export_model(run, run.parent / "model" / "cookie.pt")


def test_study_protocol_is_the_downstream_suites_and_karpathy_is_the_trainers(smoke_run, exported):
    """One protocol: --protocol study gives exactly the study's emoji_* / img_* / txt_* numbers."""
    from cookie_lib.config import resolve_path
    from cookie_lib.features import split_features
    from cookie_lib.study.downstream import DownstreamSuite

    run, tr = smoke_run
    study = E.evaluate_model(model=exported, split="test", device="cpu")
    assert study["protocol"] == "study" and study["model"] == str(exported)
    feats = split_features(tr.cfg, tr.corpus.split("test"), "test", 1, resolve_path(tr.cfg.data.dataset))
    suite, _ = DownstreamSuite.from_features(emoji=feats).evaluate(E.load_run(run, "cpu").model)
    m = study["metrics"]
    for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "mr"):
        assert m[k] == pytest.approx(suite[f"emoji_{k}"], abs=1e-9), k
    for k in ("img_r1", "img_map", "txt_r1", "txt_mrr"):
        assert m[k] == pytest.approx(suite[k], abs=1e-9), k
    karpathy = E.evaluate_model(model=exported, split="test", device="cpu", protocol="karpathy")["metrics"]
    direct = tr.evaluate(feats)
    assert {k: karpathy[k] for k in direct} == pytest.approx(direct, abs=1e-9)
    # the emoji designs share captions, so the two protocols differ on image -> text
    assert karpathy["i2t_r5"] != m["i2t_r5"]
    # the run folder and its export give the same numbers
    assert E.evaluate_model(run=run, split="test", device="cpu")["metrics"] == pytest.approx(m, abs=1e-6)


def test_cli_model_flag_prints_one_table_and_warns_on_training_overlap(exported, tmp_path, capsys):
    assert E.main(["--model", str(exported), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    table = out.out.splitlines()
    assert "protocol study" in table[0]
    assert [ln.split()[0] for ln in table[3:7]] == ["image", "text", "cross-modal", "image"]
    assert "RSUM" in out.out and "mR" in out.out and "mAP" in out.out and "MRR" in out.out
    assert "warning" not in out.err  # the fixture's test concepts are not in its train split
    assert not (exported.parent / "eval_test.json").exists()  # --model writes JSON only with --out
    assert E.main(["--model", str(exported), "--split", "train", "--device", "cpu",
                   "--out", str(tmp_path / "e.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: data/fixture_emoji/dataset_emoji.json train shares 130 of 130 captions, 26 of 26 concepts, " \
           "72 of 72 images with the model's training data" in err
    assert json.loads((tmp_path / "e.json").read_text())["training_overlap"] in err


def test_run_and_model_flags_point_to_each_other(smoke_run, exported, capsys):
    run, _ = smoke_run
    assert E.main(["--run", str(exported)]) == 2
    assert f"evaluated with --model {exported}" in capsys.readouterr().err
    assert E.main(["--run", str(exported.parent)]) == 2  # e.g. results/model: an export, not a run
    assert f"evaluate an exported model with --model {exported}" in capsys.readouterr().err
    assert E.main(["--model", str(run / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err
    assert "is a training checkpoint" in err and "export it first with python -m cookie_lib.search --export-run" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_study_corpus_says_how_to_build_it(exported, monkeypatch, capsys):
    from cookie_lib.data import BUILD_HINTS

    # the hint table maps the study's corpus files to the build command; point one entry at an absent file
    monkeypatch.setitem(BUILD_HINTS, "data/absent/dataset_emoji.json", BUILD_HINTS["data/emoji/dataset_emoji.json"])
    assert E.main(["--model", str(exported), "--dataset", "data/absent/dataset_emoji.json"]) == 2
    err = capsys.readouterr().err
    assert "data/absent/dataset_emoji.json does not exist (build it with python -m cookie_lib.study.corpora build" in err
