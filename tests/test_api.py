"""The exported-model API: ``model, preprocess, tokenizer = cookie_lib.load_model(file)``.

A 3-step smoke run is trained and exported here (format cookie-model/2). The reference for every
embedding is the run itself: ``encode_image`` / ``encode_text`` must give the embeddings that
``evaluate`` ranks (cookie_lib.evaluate.embed_split over the feature cache). The README's API block is
executed as written, with only the model path pointed at this export.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

import cookie_lib
from cookie_lib import api, search
from cookie_lib.config import ConfigError, load_config, resolve_path
from cookie_lib.data import load_karpathy
from cookie_lib.evaluate import embed_split, load_run
from cookie_lib.features import split_features
from cookie_lib.modelcard import model_card
from cookie_lib.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "data/fixture_emoji/dataset_emoji.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, export file, test feats, reference image emb [N, d], text emb [M, d])."""
    root = tmp_path_factory.mktemp("api")
    cfg = load_config("smoke", {"train.max_steps": 3, "train.epochs": 1})
    Trainer(cfg, root / "run", progress=False).run()
    model_file = search.export_model(root / "run", root / "model" / "cookie.pt")
    run = load_run(root / "run", "cpu")
    records = load_karpathy(resolve_path(CORPUS)).split("test")
    feats = split_features(run.config, records, "test", 1, resolve_path(CORPUS))
    img, txt = embed_split(run.model, feats, torch.device("cpu"))
    return root / "run", model_file, feats, img, txt


def readme_api_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if "cookie_lib.load_model(" in b]
    assert len(found) == 1, "README.md must hold exactly one python block calling cookie_lib.load_model"
    return found[0]


def test_readme_example_runs_as_written(exported, capsys):
    _, model_file, *_ = exported
    code = readme_api_block()
    assert '"results/model/cookie.pt"' in code  # the documented file; pointed at this test's export below
    exec(compile(code.replace('"results/model/cookie.pt"', repr(str(model_file))), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "torch.Size([2, 64]) torch.Size([2, 64])" in printed  # the smoke profile's d = 64


def test_encode_image_accepts_paths_pil_and_tensors_and_matches_the_evaluated_embeddings(exported):
    _, model_file, feats, img, _ = exported
    model, preprocess, _ = cookie_lib.load_model(model_file, device="cpu")
    paths = [r.path for r in feats.records[:5]]
    by_path = model.encode_image(paths)
    assert by_path.shape == (5, model.dim) and by_path.dtype == torch.float32 and not by_path.requires_grad
    assert torch.allclose(by_path.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(by_path, img[:5], atol=1e-4)  # the embeddings evaluate and search rank
    with Image.open(paths[0]) as im:
        assert torch.allclose(model.encode_image([im.copy()]), by_path[:1], atol=1e-6)
    x = torch.stack([preprocess(p) for p in paths])
    assert x.shape == (5, 3, model.image_size, model.image_size)
    assert torch.allclose(model.encode_image(x), by_path, atol=1e-6)
    # one path = a batch of 1 (another batch size: float noise, amplified by the float16 rounding)
    assert torch.allclose(model.encode_image(str(paths[1])), by_path[1:2], atol=1e-4)


def test_encode_text_matches_the_evaluated_embeddings_and_takes_the_tokenizer_output(exported):
    _, model_file, feats, _, txt = exported
    model, _, tokenizer = cookie_lib.load_model(model_file, device="cpu")
    texts = feats.texts[:6]
    emb = model.encode_text(texts)
    assert emb.shape == (6, model.dim) and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(emb, txt[:6], atol=1e-4)
    enc = tokenizer(texts)
    assert set(enc) == {"input_ids", "attention_mask"} and enc["input_ids"].shape[0] == 6
    assert enc["input_ids"].shape[1] <= tokenizer.max_len
    assert torch.allclose(model.encode_text(enc), emb, atol=1e-6)
    with pytest.raises(ValueError, match=r"texts\[1\] must be a non-empty string"):
        model.encode_text(["a cat", "  "])


def test_model_stays_in_eval_mode_and_gives_the_same_embedding_twice(exported):
    _, model_file, feats, *_ = exported
    model, _, _ = cookie_lib.load_model(model_file, device="cpu")
    model.train()  # dropout in the head would make two calls differ
    assert not model.training and not model.head.training
    a = model.encode_text(feats.texts[:3])
    assert torch.equal(a, model.encode_text(feats.texts[:3]))


def test_bad_images_give_one_line_errors_naming_the_file(exported, tmp_path):
    _, model_file, *_ = exported
    model, _, _ = cookie_lib.load_model(model_file, device="cpu")
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png does not decode") as err:
        model.encode_image([fake])
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="gone.png does not exist"):
        model.encode_image([tmp_path / "gone.png"])
    with pytest.raises(ValueError, match=r"expected a tensor \[B, 3, H, W\]"):
        model.encode_image(torch.zeros(2, 1, 64, 64))


def test_a_run_folder_or_training_checkpoint_is_refused_with_the_export_command(exported):
    run, *_ = exported
    for given in (run, run / "checkpoint.pt"):
        with pytest.raises(ValueError, match="export it first with python -m cookie_lib.search --export-run") as err:
            cookie_lib.load_model(given, device="cpu")
        assert "\n" not in str(err.value) and str(given) in str(err.value)


def test_a_cuda_device_without_a_gpu_is_one_config_error(exported):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, model_file, *_ = exported
    with pytest.raises(ConfigError, match="no CUDA GPU is available") as err:
        cookie_lib.load_model(model_file, device="cuda")
    assert "\n" not in str(err.value)


def test_export_records_the_training_data_and_an_old_format_file_still_loads(exported, tmp_path):
    _, model_file, feats, img, _ = exported
    blob = torch.load(model_file, weights_only=True)
    assert blob["format"] == api.EXPORT_FORMAT == "cookie-model/2"
    tr = blob["training"]
    corpus = load_karpathy(resolve_path(CORPUS))
    train = corpus.split("train")
    assert tr["dataset"] == CORPUS and tr["counts"] == corpus.counts() and tr["split"] == "train"
    assert len(tr["captions"]) == len({c for r in train for c in r.captions})
    assert len(tr["concepts"]) == len({r.key for r in train}) and len(tr["images"]) == len(train)
    # a cookie-model/1 file (before the fingerprint) loads and embeds the same
    old = {k: v for k, v in blob.items() if k != "training"}
    old["format"] = "cookie-model/1"
    torch.save(old, tmp_path / "old.pt")
    model, _, _ = cookie_lib.load_model(tmp_path / "old.pt", device="cpu")
    assert model.info["training"] == {}
    assert torch.allclose(model.encode_image([feats.records[0].path]), img[:1], atol=1e-4)


def test_model_card_is_written_beside_the_export_from_the_results_files(exported, tmp_path):
    _, model_file, *_ = exported
    card = model_file.with_suffix(".md")
    text = card.read_text()
    for heading in ("## Model", "## Encoders and licences", "## Training data", "## Metrics",
                    "## Intended use and limits"):
        assert heading in text
    assert "MIT" in text and "mobilenet_v2-b0353104.pth" in text  # the MiniLM package's declared licence
    assert "| train | 72 |" in text  # the fixture's train split, read from the export
    assert "Not available" in text  # no runs.csv / claims.csv under this temporary folder
    # with results files: the numbers come from them, the interval is computed over the seeds
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame({"variant": ["cookie", "cookie", "cross_modal_only"], "seed": [0, 1, 0],
                  "emoji_rsum": [100.0, 110.0, 5.0], "img_r1": [30.0, 34.0, 1.0]}).to_csv(results / "runs.csv")
    pd.DataFrame({"id": ["P1"], "claim": ["x"], "a": ["cookie"], "b": ["cross_modal_only"], "metric": ["img_r1"],
                  "diff": [1.25], "ci_low": [0.5], "ci_high": [2.0], "verdict": ["reproduced"]}).to_csv(
        results / "claims.csv")
    text = model_card(torch.load(model_file, weights_only=True), model_file, results)
    assert "| emoji_rsum | 100.00 | 105.00 | 7.07 |" in text  # seed 0's row, mean and std of the 2 seeds
    # t interval: 105 +- t(0.975, 1) * 7.07 / sqrt(2) = 105 +- 63.53
    assert "[41.47, 168.53]" in text
    assert "| P1 | cookie | cross_modal_only | img_r1 | 1.25 | [0.50, 2.00] | reproduced |" in text
