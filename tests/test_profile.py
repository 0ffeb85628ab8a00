"""cookie_lib.study.profile (run-level profile keys) and cookie_lib.study.notebook.setup."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cookie_lib.config import ConfigError, read_profile
from cookie_lib.study.notebook import setup
from cookie_lib.study.profile import RunProfile, load_run_profile, run_keys

from conftest import ROOT


def _write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["smoke", "default"])
def test_committed_profiles_load(name):
    prof = load_run_profile(name)
    assert prof.profile == name and prof.seeds and prof.workers >= 1
    assert prof.config.data.dataset.endswith((".json"))
    assert prof.results_path.is_absolute()
    if name == "default":  # the pre-registered contrasts need >= 5 paired seeds; downstream sets are separate files
        assert len(prof.seeds) >= 5 and len(prof.secondary_seeds) >= 3
        assert prof.config.data.dataset not in (prof.downstream_emoji, prof.downstream_oca)


@pytest.mark.parametrize("text,patterns", [
    ("seed: [0, 1, 2]\n", ["unknown run-level key", "'seed'", "seeds", "config:"]),
    ("seeds: 3\n", ["seeds=3", "list of ints"]),
    ("seeds: [0, 0]\n", ["repeats a seed"]),
    ("seeds: [-1]\n", ["seeds=[-1]", ">= 0"]),
    ("workers: 0\n", ["workers=0", ">= 1"]),
    ("workers: true\n", ["workers=True", "an int"]),
    ("build_corpus: 'yes'\n", ["build_corpus='yes'", "bool"]),
    ("results_dir: 3\n", ["results_dir=3", "string"]),
    ("config: {train: {epochz: 3}}\n", ["train.epochz", "allowed keys in train"]),
    ("- 1\n", ["mapping"]),
])
def test_bad_profile_names_key_and_file(tmp_path, text, patterns):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_run_profile(path)
    for p in patterns:
        assert p in str(err.value), (p, str(err.value))
    if text != "- 1\n":
        assert str(path) in str(err.value)


def test_defaults_and_missing_profile(tmp_path):
    prof = load_run_profile(_write(tmp_path, "workers: 2\n"))
    assert prof.workers == 2 and prof.profile == "p" and prof.bench_args == "" and prof.config.train.seed == 0
    assert set(run_keys()) == {f for f in RunProfile.__dataclass_fields__} - {"config", "path"}
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_profile(tmp_path / "nope.yaml")


def test_cli_get_and_error_exit():
    run = [sys.executable, "-m", "cookie_lib.study.profile"]
    out = subprocess.run(run + ["get", "seeds", "--profile", "smoke"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == " ".join(map(str, load_run_profile("smoke").seeds))
    bad = subprocess.run(run + ["get", "seed", "--profile", "smoke"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown run-level key 'seed'" in bad.stderr


def test_notebook_setup_overrides_and_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths must not depend on the working directory
    # a notebook's namespace: papermill's injected values, the parameters cell's profile, and unrelated names
    namespace = {"profile": "smoke", "results_dir": str(tmp_path / "res"), "seeds": [4], "In": [], "pd": object()}
    run, results = setup("smoke", namespace, quiet=True)
    assert results == tmp_path / "res" and results.is_dir()
    assert run.seeds == [4] and run.profile == "smoke" and run.config == load_run_profile("smoke").config
    assert run.secondary_seeds == load_run_profile("smoke").secondary_seeds  # the rest comes from the file
    run2, results2 = setup("smoke", quiet=True)
    assert results2 == ROOT / load_run_profile("smoke").results_dir
    with pytest.raises(ConfigError, match=r"seeds=3 must be a list of ints"):
        setup("smoke", {"seeds": 3}, quiet=True)
    with pytest.raises(ConfigError, match="does not exist"):
        setup("no_such_profile", quiet=True)


def test_papermill_f_injection_is_the_profile_itself():
    """``papermill -f profiles/NAME.yaml`` injects every top-level key of the file (its ``config`` too): the
    notebook then sees exactly what ``-p profile NAME`` (setup reading the file) gives."""
    path, injected = read_profile("smoke")
    run, results = setup(injected["profile"], injected, quiet=True)
    plain, plain_results = setup("smoke", quiet=True)
    assert run == plain and results == plain_results


def test_run_profile_overrides_run_level_and_dotted_config_keys():
    prof = load_run_profile("smoke", {"seeds": [7], "workers": 2, "loss.visual": 0.0, "train.lr": 1e-3})
    assert prof.seeds == [7] and prof.workers == 2 and prof.config.loss.visual == 0.0 and prof.config.train.lr == 1e-3
    assert prof.config.model.dim == load_run_profile("smoke").config.model.dim
    with pytest.raises(ConfigError, match=r"unknown run-level key\(s\) \['seed'\]"):
        load_run_profile("smoke", {"seed": [0]})
    with pytest.raises(ConfigError, match=r"loss.visual=-1.0 is invalid"):
        load_run_profile("smoke", {"loss.visual": -1})


def test_profile_without_config_section(tmp_path):
    bare = load_run_profile(_write(tmp_path, "train: {epochs: 2}\n"))  # a bare training config
    assert bare.config.train.epochs == 2 and bare.seeds == RunProfile().seeds
    with pytest.raises(ConfigError, match=r"training sections \['train'\] beside run-level key\(s\) \['seeds'\]"):
        load_run_profile(_write(tmp_path, "train: {epochs: 2}\nseeds: [0]\n"))
