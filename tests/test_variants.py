"""cookie_lib.study.variants' variants derive their depths and parameter matching from the profile: the
paper-scale head ablation (model.depth 4) builds with matched parameters, the default one (depth 2) is the
stored study's, and ``grid one --set`` reads the one override syntax."""
from __future__ import annotations

import json

import pytest

from cookie_lib.config import ConfigError, parse_overrides
from cookie_lib.study import grid, variants

from conftest import ROOT

# the paper-scale profile names encoder files of a GPU machine; the head's size does not depend on them
NO_ENCODER_FILES = {"model.visual_weights": "none", "model.text_model": "auto"}


@pytest.mark.parametrize("profile,extra,depth", [("paper_scale_coco", NO_ENCODER_FILES, 4), ("smoke", None, 2),
                                                 ("default", None, 2)])
def test_head_ablation_is_parameter_matched_at_the_profiles_depth(profile, extra, depth):
    """The checks of notebook 04, on heads built from each profile (no training)."""
    cfg = {v: variants.variant_config(profile, v, 0, extra) for v in variants.HEAD_ABLATION}
    assert cfg["cookie"].model.depth == depth and cfg["cookie"].model.shared
    assert cfg["separate_1"].model.depth == depth // 2 and not cfg["separate_1"].model.shared
    assert cfg["separate_2"].model.depth == depth and not cfg["separate_2"].model.shared
    params = {v: grid.head_parameters(profile, v, extra) for v in variants.HEAD_ABLATION}
    assert params["separate_1"] == params["cookie"] > 0
    assert params["separate_2"] == 2 * params["cookie"] and params["depth_0"] == 0
    assert params["depth_1"] * depth == params["cookie"]  # every layer holds the same parameters
    if extra is None:  # the depth plot's labels are the configs' depths
        assert variants.sweep_depths(profile) == {"depth_0": 0, "depth_1": 1, "cookie": depth}


def test_matched_depth_needs_an_even_depth():
    assert [variants.matched_depth(L) for L in (2, 4, 6)] == [1, 2, 3]
    for depth in (0, 1, 3):
        with pytest.raises(ConfigError, match=rf"model.depth={depth}: .*separate_1.* even depth >= 2"):
            variants.matched_depth(depth)
    with pytest.raises(ConfigError, match="model.depth=3"):
        variants.variant_config("smoke", "separate_1", 0, {"model.depth": 3})
    assert variants.variant_config("smoke", "separate_1", 0, {"model.depth": 4}).model.depth == 2  # follows extra's L


def test_finetuned_arm_and_its_comparator_train_for_finetune_epochs(tmp_path):
    """The fine-tuned arm and cookie_long read the profile's ``finetune_epochs``; the frozen arm keeps
    train.epochs; 0 means train.epochs; a negative value fails naming the key."""
    from cookie_lib.study.profile import load_run_profile

    epochs = {v: variants.variant_config("smoke", v, 0).train.epochs for v in variants.STUDIED}
    assert {v for v, e in epochs.items() if e == 4} == set(variants.LONG_BUDGET) == set(variants.FINETUNED + ["cookie_long"])
    assert {e for v, e in epochs.items() if v not in variants.LONG_BUDGET} == {3}
    cfg = {v: variants.variant_config("smoke", v, 0) for v in ("cookie", "cookie_long")}
    cfg["cookie"].train.epochs = cfg["cookie_long"].train.epochs
    assert cfg["cookie"].to_dict() == cfg["cookie_long"].to_dict()  # the budget is the only difference
    assert load_run_profile("default").finetune_epochs == 20
    profile = tmp_path / "p.yaml"
    profile.write_text((ROOT / "profiles" / "smoke.yaml").read_text().replace("finetune_epochs: 4", "finetune_epochs: 0"))
    assert variants.variant_config(str(profile), "ft_cookie", 0).train.epochs == 3
    profile.write_text((ROOT / "profiles" / "smoke.yaml").read_text().replace("finetune_epochs: 4", "finetune_epochs: -2"))
    with pytest.raises(ConfigError, match="finetune_epochs=-2"):
        variants.variant_config(str(profile), "ft_cookie", 0)


def test_default_profile_variants_are_the_stored_runs():
    """At depth 2 every variant's config is the one the finished runs of the default study were trained with
    (read only; runs of earlier profiles in the same folder, e.g. other seeds or budgets, are not the study's)."""
    from cookie_lib.study.profile import load_run_profile

    jobs = [(v, s) for v, s in grid.study_jobs(load_run_profile("default"))
            if (ROOT / "runs" / "default" / v / f"seed{s}" / "result.json").exists()]
    if not jobs:
        pytest.skip("no finished default runs in this checkout (runs/ is not committed)")
    for variant, seed in jobs:
        path = ROOT / "runs" / "default" / variant / f"seed{seed}" / "result.json"
        assert grid._same_run(json.loads(path.read_text()), variants.variant_config("default", variant, seed), variant), path


def test_grid_one_reads_set_and_rejects_a_bad_value_before_any_work(monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work started before the overrides were validated")

    monkeypatch.setattr(grid, "load_corpus", no_work)
    one = ["one", "--profile", "smoke", "--variant", "cookie", "--seed", "0"]
    with pytest.raises(ConfigError, match=r"loss.visual=-1.0 is invalid"):
        grid.main(one + ["--set", "loss.visual=-1"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['loss.visul'\]"):
        grid.main(one + ["--set", "train.epochs=1", "--set", "loss.visul=0"])


def test_parallel_runs_get_the_overrides_of_the_parent(monkeypatch, tmp_path):
    """A worker process (``grid one --set ...``) reads back exactly the parent's overrides."""
    seen = {}

    class Failed:
        returncode, stderr = 1, "stopped by the test"

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return Failed()

    monkeypatch.setattr(grid.subprocess, "run", fake_run)
    extra = {**variants.FINETUNE, "data.image_root": "", "train.lr": 1e-5}
    with pytest.raises(RuntimeError, match="stopped by the test"):
        grid._run_in_subprocess("smoke", "ft_cookie", 0, extra, tmp_path)
    cmd = seen["cmd"]
    assert parse_overrides(cmd[cmd.index("--set") + 1:]) == extra
    with pytest.raises(RuntimeError):
        grid._run_in_subprocess("smoke", "cookie", 0, None, tmp_path)
    assert "--set" not in seen["cmd"]


def test_a_checkpoint_of_another_config_is_discarded_not_resumed(tmp_path):
    """A grid run folder whose checkpoint was written with another config (the profile changed) starts over;
    the same config's checkpoint is kept for resuming, an unreadable one is left for the trainer to report."""
    import torch

    path = tmp_path / "cookie" / "seed0" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save({"config": {"train": {"epochs": 3}}}, path)
    assert not grid.discard_other_config(path, {"train": {"epochs": 3}}) and path.exists()
    with pytest.warns(UserWarning, match=r"another config .* training cookie/seed0 from the start"):
        assert grid.discard_other_config(path, {"train": {"epochs": 4}})
    assert not path.exists()
    path.write_bytes(b"truncated")
    assert not grid.discard_other_config(path, {"train": {"epochs": 4}}) and path.exists()
