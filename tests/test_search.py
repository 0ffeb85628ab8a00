"""Export a smoke run and query it (cookie_lib.search): text -> images, image -> captions, contact sheet.

The reference is the run itself: the scores search() reports must be the cosines between the run's own
embeddings (cookie_lib.evaluate.load_run + embed_split) of the query and of the gallery.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from cookie_lib import search as S
from cookie_lib.config import load_config, resolve_path
from cookie_lib.data import load_karpathy
from cookie_lib.evaluate import embed_split, load_run
from cookie_lib.features import split_features
from cookie_lib.train import Trainer

CORPUS = "data/fixture_emoji/dataset_emoji.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, exported model file, reference image emb [N, d], text emb [M, d], test feats)."""
    root = tmp_path_factory.mktemp("search")
    cfg = load_config("smoke", {"train.max_steps": 3, "train.epochs": 1})
    Trainer(cfg, root / "run", progress=False).run()
    model_file = S.export_model(root / "run", root / "model" / "cookie.pt")
    run = load_run(root / "run", "cpu")
    records = load_karpathy(resolve_path(CORPUS)).split("test")
    feats = split_features(run.config, records, "test", 1, resolve_path(CORPUS))
    img, txt = embed_split(run.model, feats, torch.device("cpu"))
    return root / "run", model_file, img, txt, feats


def test_export_is_small_and_self_describing(exported):
    _, model_file, *_ = exported
    assert model_file.stat().st_size < 5 * 2**20
    blob = torch.load(model_file, weights_only=True)
    assert blob["format"] == S.EXPORT_FORMAT and blob["encoder_deltas"] == {}  # frozen encoders: head only
    assert blob["encoders"]["text_model"] == "auto" and "MiniLM" in blob["encoders"]["text_source"]
    assert all(k.split(".")[0] in {"visual_proj", "text_proj", "visual_pos", "shared_transformer"} for k in blob["model"])


def test_text_query_ranks_images_by_the_runs_own_cosines(exported, tmp_path):
    _, model_file, img, txt, feats = exported
    caption = feats.texts[7]
    res = S.search(caption, model_file, CORPUS, k=5, device="cpu")
    assert res.kind == "text" and len(res.hits) == 5 and [h.rank for h in res.hits] == [1, 2, 3, 4, 5]
    want = img @ txt[7]  # the query is a gallery caption: its embedding is the run's own (float16 cache path)
    top = torch.topk(want, 5)
    assert [h.score for h in res.hits] == pytest.approx(top.values.tolist(), abs=1e-3)
    by_path = {r.path: i for i, r in enumerate(feats.records)}
    assert [want[by_path[h.path]].item() for h in res.hits] == pytest.approx([h.score for h in res.hits], abs=1e-3)
    assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:]))
    png = S.save_sheet(res, tmp_path / "sheet.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200


def test_image_query_ranks_captions(exported, tmp_path):
    _, model_file, img, txt, feats = exported
    rec = feats.records[3]
    res = S.search(str(rec.path), model_file, CORPUS, k=4, device="cpu")
    assert res.kind == "image" and len(res.hits) == 4
    want = txt @ img[3]
    top = torch.topk(want, 4)
    assert [h.text for h in res.hits][:1] == [feats.texts[top.indices[0]]]
    assert [h.score for h in res.hits] == pytest.approx(top.values.tolist(), abs=1e-3)
    kind, q = S.embed_query(S.load_model(model_file, "cpu"), rec.path)
    assert kind == "image" and torch.allclose(q, img[3], atol=1e-4)


def test_cli_prints_and_writes_the_sheet(exported, tmp_path, capsys):
    _, model_file, *_ = exported
    out = tmp_path / "s.png"
    assert S.main(["a smiling face", "--model", str(model_file), "--corpus", CORPUS, "--k", "3",
                   "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "top 3 images" in printed and out.is_file()
    assert len([ln for ln in printed.splitlines() if ln.strip().startswith(("1 ", "2 ", "3 "))]) == 3


def test_cli_export_and_errors_name_the_file(exported, tmp_path, capsys):
    run, *_ = exported
    assert S.main(["--export-run", str(run), "--model", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").is_file()
    assert S.main(["x", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert S.main([str(tmp_path / "nope.png"), "--model", str(tmp_path / "m.pt")]) == 2
    assert "nope.png" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert S.main(["x", "--model", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err


def test_default_corpus_and_training_overlap_warning(exported, capsys):
    _, model_file, _, _, feats = exported
    res = S.search(feats.texts[0], model_file, k=2, device="cpu")  # no corpus: the model's own, it has a test split
    assert res.corpus_file == CORPUS and res.warning is None  # test concepts are not training concepts
    res = S.search(feats.texts[0], model_file, k=2, split="train", device="cpu")
    assert res.warning.startswith(f"{CORPUS} train shares 130 of 130 captions, 26 of 26 concepts, 72 of 72 images")
    assert S.main([feats.texts[0], "--model", str(model_file), "--split", "train", "--out", "", "--device", "cpu"]) == 0
    assert f"warning: {res.warning}" in capsys.readouterr().err


def test_committed_model_searches_the_committed_fixture_from_a_fresh_clone(capsys):
    """The README's search example: results/model/cookie.pt on the fixture, an image of a held-out concept."""
    model = resolve_path(S.DEFAULT_MODEL)
    query = "data/fixture_emoji/images/twemoji/26F9-200D-2642.png"
    assert S.main([query, "--corpus", CORPUS, "--k", "3", "--out", "", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == f"image query {query!r}: top 3 captions of {CORPUS} test" and len(lines) == 4
    em = S.load_model(model, "cpu")
    if em.info["training"] or resolve_path(em.config.data.dataset).is_file():  # a fingerprint to check against
        assert "warning: " in out.err and "of 7 concepts" in out.err
