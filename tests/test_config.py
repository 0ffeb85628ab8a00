"""cookie_lib.config: every bad value is a ConfigError naming the key and what is allowed; the CLI fails
fast (before any data is read); data validation runs before any feature is computed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cookie_lib.config import Config, ConfigError, config_from_dict, load_config, parse_overrides

from conftest import EMOJI, ROOT


@pytest.mark.parametrize("overrides,patterns", [
    ({"bogus": 1}, ["'bogus'", "allowed keys in config", "model", "loss", "train", "data"]),
    ({"model.bogus": 1}, ["model.bogus", "allowed keys in model", "dim", "depth"]),
    ({"loss.temprature": 0.1}, ["loss.temprature", "temperature"]),
    ({"model.dim": "big"}, ["model.dim", "must be of type int", "str"]),
    ({"train.batch_size": 16.0}, ["train.batch_size", "int"]),
    ({"model.shared": "yes"}, ["model.shared", "bool"]),
    ({"train.epochs": True}, ["train.epochs", "not a bool"]),
    ({"train.amp": "fp16"}, ["train.amp", "'none'", "'bf16'"]),
    ({"model": 3}, ["model", "mapping"]),
    ({"loss.temperature": -0.1}, ["loss.temperature", "-0.1", "> 0"]),
    ({"loss.temperature": 0}, ["loss.temperature", "> 0"]),
    ({"loss.visual": -1}, ["loss.visual", "-1", ">= 0"]),
    ({"loss.cross_modal": -0.5}, ["loss.cross_modal", ">= 0"]),
    ({"loss.cross_modal": 0, "loss.visual": 0, "loss.textual": 0}, ["loss", "all losses are off"]),
    ({"loss.max_logit_scale": 5.0}, ["loss.max_logit_scale", "1/loss.temperature"]),
    ({"train.batch_size": 1}, ["train.batch_size", ">= 2", "negatives"]),
    ({"model.depth": -1}, ["model.depth", ">= 0"]),
    ({"model.dim": 64, "model.heads": 5}, ["model.heads", "divisor of model.dim=64"]),
    ({"model.heads": 0}, ["model.heads", "positive"]),
    ({"model.dropout": 1.0}, ["model.dropout", "[0, 1)"]),
    ({"model.visual_weights": "no/such/weights.pth"}, ["model.visual_weights", "no such file", "'auto'"]),
    ({"model.text_model": "no/such/bert"}, ["model.text_model", "no such file"]),
    ({"model.freeze_visual": "some"}, ["model.freeze_visual", "'all'", "'none'", "int >= 0"]),
    ({"model.freeze_text": -1}, ["model.freeze_text", "'all'", "'none'", "int >= 0"]),
    ({"model.freeze_text": True}, ["model.freeze_text", "int >= 0"]),
    ({"train.num_views": 1}, ["train.num_views", ">= 2"]),
    ({"train.grad_accum": 0}, ["train.grad_accum", ">= 1"]),
    ({"model.dim.x": 1}, ["model.dim.x", "not a section"]),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else None)
def test_bad_value_names_key_and_allowed(overrides, patterns):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides)
    msg = str(err.value)
    for p in patterns:
        assert p in msg, f"{p!r} not in {msg!r}"


def test_missing_profile_file(tmp_path):
    with pytest.raises(ConfigError, match="does_not_exist.yaml.*does not exist"):
        load_config("does_not_exist")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text,pattern", [
    ("config:\n  model: [dim: 3\n", "not valid YAML"),
    ("config:\n\tmodel: 1\n", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("config:\n  modle:\n    dim: 32\n", "modle"),
])
def test_malformed_yaml_profile(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path)
    assert "bad.yaml" in str(err.value) or pattern == "modle"


def test_valid_override_round_trips():
    cfg = load_config("smoke", {"loss.visual": 0.5, "model.freeze_text": 2, "train.lr": 1, "model.shared": False})
    assert cfg.loss.visual == 0.5 and cfg.model.freeze_text == 2 and cfg.model.shared is False
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int -> float is allowed
    assert cfg.model.dim == 64 and cfg.train.num_views == 4  # the profile's values are kept
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert config_from_dict() == Config()
    assert parse_overrides(["loss.visual=0.5", "model.shared=false", "data.cache_dir=data/.cache/x"]) == \
        {"loss.visual": 0.5, "model.shared": False, "data.cache_dir": "data/.cache/x"}


@pytest.mark.slow
def test_cli_rejects_bad_value_before_loading_data(tmp_path):
    out = tmp_path / "x"
    t0 = time.monotonic()
    # the dataset does not exist either: had the CLI read data first, the error would be about the dataset
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.train", "--set", "loss.visual=-1",
                           "data.dataset=/no/such/dataset.json", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2  # a ConfigError: one line `error: <message>`, no traceback (runtime.cli)
    assert proc.stderr.startswith("error: ") and "loss.visual=-1" in proc.stderr and ">= 0" in proc.stderr
    assert "dataset" not in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    assert elapsed < 60, f"the CLI took {elapsed:.0f} s to reject a bad value"


def test_missing_image_fails_validation_before_any_feature(tmp_path, monkeypatch):
    from cookie_lib import features, train
    from cookie_lib.data import DataValidationError

    data = json.loads(EMOJI.read_text())
    data["images"][5]["filename"] = "MISSING_EMOJI.png"
    ds = tmp_path / "dataset_emoji.json"
    ds.write_text(json.dumps(data))
    cache = tmp_path / "cache"
    profile = tmp_path / "broken.yaml"
    profile.write_text(f"config:\n  data:\n    dataset: {ds}\n    image_root: {EMOJI.parent / 'images'}\n"
                       f"    cache_dir: {cache}\n  train:\n    batch_size: 16\n")

    def boom(*a, **k):
        raise AssertionError("features were computed before the data was validated")

    monkeypatch.setattr(train, "split_features", boom)
    monkeypatch.setattr(features, "encode_images", boom)
    monkeypatch.setattr(train, "build_encoders", boom)
    cfg = load_config(profile)
    with pytest.raises(DataValidationError) as err:
        train.Trainer(cfg, tmp_path / "run", progress=False)
    msg = str(err.value)
    assert "MISSING_EMOJI.png" in msg and "missing" in msg and "images[5]" in msg
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_finished_runs_survive_a_new_option_with_its_default():
    """A run stored before an option existed stays valid (the option's default is the old behaviour); a key
    the code no longer knows, or another value, makes it stale."""
    from cookie_lib.config import load_config
    from cookie_lib.study.grid import same_config

    cfg = load_config("smoke")
    stored = cfg.to_dict()
    assert same_config(stored, cfg)
    older = {k: dict(v) for k, v in stored.items()}
    key = next(k for k, v in older["train"].items() if v == type(cfg.train)().__dict__[k])  # a key at its default
    del older["train"][key]  # as if the run predates the option
    assert same_config(older, cfg)
    assert not same_config({**older, "train": {**older["train"], "no_such_option": 1}}, cfg)
    assert not same_config({**stored, "train": {**stored["train"], "epochs": stored["train"]["epochs"] + 1}}, cfg)
    assert not same_config(None, cfg)


# ----------------------------------------------------------------------------- the one override syntax and profile reader
def test_override_syntax_types_values_as_yaml():
    assert parse_overrides(["train.lr=1e-3", "train.encoder_lr=2.5E-5", "train.epochs=3", "model.shared=false",
                            "data.image_root=", 'data.cache_dir=""', "model.freeze_visual=all", "a.b=[1, 2]"]) == \
        {"train.lr": 0.001, "train.encoder_lr": 2.5e-5, "train.epochs": 3, "model.shared": False,
         "data.image_root": "", "data.cache_dir": "", "model.freeze_visual": "all", "a.b": [1, 2]}
    assert parse_overrides(["train.lr=1", "train.lr=2"]) == {"train.lr": 2}  # the later one wins
    with pytest.raises(ConfigError, match=r"--set 'model.dim=\[64': the value is not valid YAML \(.*line 1"):
        parse_overrides(["model.dim=[64"])
    with pytest.raises(ConfigError, match="expects key=value, got '=3'"):
        parse_overrides(["=3"])


def test_formatted_overrides_read_back_unchanged():
    from cookie_lib.config import format_overrides
    from cookie_lib.study.variants import FINETUNE

    values = {**FINETUNE, "train.lr": 1e-5, "data.image_root": "", "data.cache_dir": "a b/c", "model.shared": False,
              "model.freeze_visual": "all", "model.visual_layer": 14}
    again = parse_overrides(format_overrides(values))
    assert again == values and all(type(again[k]) is type(v) for k, v in values.items())


def test_set_flags_add_up_on_every_command_line():
    import argparse

    from cookie_lib.config import add_override_argument

    p = argparse.ArgumentParser()
    add_override_argument(p)
    assert p.parse_args(["--set", "a.b=1", "c.d=2", "--set", "e.f="]).set == ["a.b=1", "c.d=2", "e.f="]
    assert p.parse_args([]).set == []  # the earlier parse did not grow the default


def test_profile_path_is_one_rule(tmp_path, monkeypatch):
    from cookie_lib.config import profile_path, project_root

    root = project_root()
    assert profile_path("smoke") == root / "profiles" / "smoke.yaml"  # a bare name
    assert profile_path("profiles/smoke.yaml") == root / "profiles" / "smoke.yaml"  # from the root, any cwd
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("config: {train: {epochs: 2}}\n")
    assert profile_path("mine.yaml") == tmp_path / "mine.yaml"  # exists from the working directory
    assert profile_path("profiles/smoke.yaml") == root / "profiles" / "smoke.yaml"
    assert load_config("mine.yaml").train.epochs == 2
    with pytest.raises(ConfigError, match=r"profile '.*mine.yaml' is not valid YAML: .* at line 2, column 1"):
        (tmp_path / "mine.yaml").write_text("config: {train: [\n")
        load_config("mine.yaml")


def test_training_config_and_run_level_keys_are_split_once():
    from cookie_lib.config import split_profile

    assert split_profile({"config": {"train": {"epochs": 2}}, "seeds": [0]}) == ({"train": {"epochs": 2}}, {"seeds": [0]})
    assert split_profile({"train": {"epochs": 2}}) == ({"train": {"epochs": 2}}, {})  # a bare training config
    assert split_profile({"seeds": [0]}) == ({}, {"seeds": [0]})
    assert split_profile({"config": None}) == ({}, {})
    with pytest.raises(ConfigError, match=r"p.yaml: training sections \['model'\] beside run-level key\(s\) \['seeds'\]"):
        split_profile({"model": {"dim": 8}, "seeds": [0]}, "p.yaml")
