"""Training on the committed emoji fixture (smoke profile, CPU): learning, determinism, resume, NaN guard.

The in-process tests share the smoke feature cache and the validated corpus (session fixture). The
kill -9 / --resume test runs ``python -m cookie_lib.train`` as subprocesses (marked ``slow``; runs in CI).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cookie_lib import losses as L
from cookie_lib.config import load_config
from cookie_lib.metrics import cross_modal_retrieval
from cookie_lib.train import NonFiniteLossError, Trainer

from conftest import ROOT


@pytest.fixture(scope="session")
def corpus(smoke_corpus):
    """The validated smoke corpus with its feature cache (tests/conftest.py)."""
    return smoke_corpus


def _run(tmp_path, corpus, name="run", resume=False, **overrides):
    cfg = load_config("smoke", overrides)
    tr = Trainer(cfg, tmp_path / name, progress=False, corpus=corpus)
    tr.run(resume=resume)
    return tr


def _no_time(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """One 6-epoch smoke run shared by the learning tests."""
    return _run(tmp_path_factory.mktemp("trained"), corpus, **{"train.epochs": 6})


def _chance_rsum(feats, n: int = 30) -> tuple[float, float]:
    """Mean and sd of rsum for random unit embeddings (one per image, one per DISTINCT caption text, as the
    real evaluation embeds texts) through cookie_lib.metrics: the empirical chance level of this split."""
    rows, owner = feats.caption_index()
    keys = [r.key for r in feats.records]
    g = torch.Generator().manual_seed(0)
    unit = lambda m: torch.nn.functional.normalize(torch.randn(m, 64, generator=g), dim=-1)  # noqa: E731
    vals = [cross_modal_retrieval(unit(len(keys)), unit(len(feats.texts))[rows], owner, img_keys=keys)["rsum"]
            for _ in range(n)]
    mean = sum(vals) / n
    return mean, (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5


def test_loss_falls(trained):
    hist = trained.state.history
    assert len(hist) == 6 * trained.steps_per_epoch
    first = sum(sum(h[n] for n in L.LOSS_NAMES) for h in hist[:4]) / 4
    last = sum(sum(h[n] for n in L.LOSS_NAMES) for h in hist[-4:]) / 4
    assert last < 0.8 * first, f"summed loss did not fall: first {first:.3f}, last {last:.3f}"


def test_retrieval_on_seen_concepts_beats_chance(trained):
    from cookie_lib.evaluate import evaluate_split

    mean, sd = _chance_rsum(trained.train_feats)
    rsum = evaluate_split(trained.model, trained.train_feats, trained.device)["rsum"]
    assert rsum > mean + max(100.0, 5 * sd), f"train rsum {rsum:.1f} vs chance {mean:.1f} +- {sd:.1f}"


@pytest.mark.xfail(strict=True, reason="known limitation: the fixture's val split holds 7 concepts unseen in "
                   "training (21 images); after a few smoke epochs on 72 images val rsum stays below the "
                   "random-embedding chance level of that split. strict: this test fails loudly once it starts passing")
def test_val_retrieval_beats_chance(trained):
    mean, sd = _chance_rsum(trained.val_feats)
    rsum = trained.state.epochs[-1]["rsum"]
    assert rsum > mean + 2 * sd, f"val rsum {rsum:.1f} vs chance {mean:.1f} +- {sd:.1f}"


def test_same_seed_same_config_is_bitwise_deterministic(tmp_path, corpus):
    a = _run(tmp_path, corpus, "a", **{"train.epochs": 2})
    b = _run(tmp_path, corpus, "b", **{"train.epochs": 2})
    assert _no_time(a.state.epochs) == _no_time(b.state.epochs)
    assert a.state.history == b.state.history
    _assert_same_weights(a.step_module.state_dict(), b.step_module.state_dict())
    c = _run(tmp_path, corpus, "c", **{"train.epochs": 2, "train.max_steps": 1, "train.seed": 1})
    assert c.state.history[0] != a.state.history[0]  # and the seed matters


def test_resume_after_interrupt_mid_epoch_is_bitwise(tmp_path, corpus, monkeypatch):
    """Ctrl-C / SIGTERM inside epoch 2 -> on-demand checkpoint at that data position -> --resume."""
    full = _run(tmp_path, corpus, "full")
    stop_at = full.steps_per_epoch + 2  # the third step of epoch 2
    real_step = Trainer._train_step

    def interrupt(self, step, batches, gen):
        if step == stop_at:
            raise KeyboardInterrupt
        return real_step(self, step, batches, gen)

    monkeypatch.setattr(Trainer, "_train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, corpus, "cut")
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert ck["state"]["global_step"] == stop_at and ck["state"]["step_in_epoch"] == 2
    resumed = _run(tmp_path, corpus, "cut", resume=True)
    assert resumed.state.history == full.state.history
    assert _no_time(resumed.state.epochs) == _no_time(full.state.epochs)
    _assert_same_weights(resumed.step_module.state_dict(), full.step_module.state_dict())
    assert resumed.optimizer.state_dict()["state"].keys() == full.optimizer.state_dict()["state"].keys()


def test_resume_with_another_config_is_refused(tmp_path, corpus):
    _run(tmp_path, corpus, "r", **{"train.epochs": 1})
    with pytest.raises(ValueError, match="another config"):
        _run(tmp_path, corpus, "r", resume=True, **{"train.epochs": 2})


def test_non_finite_loss_names_step_and_term_and_keeps_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    cfg = load_config("smoke")
    bad_step = None
    calls = []
    real = L.info_nce

    def nan_on_visual(a, b, keys, scale):
        out = real(a, b, keys, scale)
        calls.append(1)
        # CookieLoss calls cross_modal, visual, textual in this order: call 3k+2 is step k's visual loss
        if len(calls) == 3 * bad_step + 2:
            return out * float("nan")
        return out

    tr = Trainer(cfg, tmp_path / "nan", progress=False, corpus=corpus)
    bad_step = tr.steps_per_epoch + 1  # inside epoch 2, after epoch 1's checkpoint
    monkeypatch.setattr(L, "info_nce", nan_on_visual)
    with pytest.raises(NonFiniteLossError, match=rf"non-finite visual loss \(nan\) at step {bad_step}") as err:
        tr.run()
    assert str(tr.checkpoint_path) in str(err.value)
    ck = torch.load(tr.checkpoint_path, weights_only=False)
    assert ck["state"]["epoch"] == 1 and ck["state"]["global_step"] == tr.steps_per_epoch
    assert all(torch.isfinite(v).all() for v in ck["step_module"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- kill -9 and --resume
def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cookie_lib.train", "--profile", "smoke", "--out", str(out), "--no-progress",
            "--set", *KILL_SET, *extra]


KILL_EPOCHS = 12  # long enough that the run is still going when epoch 2's checkpoint appears
KILL_SET = [f"train.epochs={KILL_EPOCHS}", "train.checkpoint_every=1", "train.num_threads=1"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _ckpt_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=False)["state"]["epoch"]
    except Exception:  # not there yet (written atomically, so never half-written)
        return -1


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path, corpus):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _ckpt_epoch(killed / "checkpoint.pt") < 2:
            assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no epoch-2 checkpoint within 120 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before the kill; raise KILL_EPOCHS"
        proc.kill()  # SIGKILL: no handler runs, no final checkpoint
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9
    at_kill = _ckpt_epoch(killed / "checkpoint.pt")
    assert 2 <= at_kill < KILL_EPOCHS
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(_cli(killed, "--resume"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = subprocess.run(_cli(tmp_path / "ref"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    a = torch.load(killed / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)
    assert a["state"]["epoch"] == b["state"]["epoch"] == KILL_EPOCHS
    _assert_same_weights(a["step_module"], b["step_module"])
    assert a["state"]["history"] == b["state"]["history"]
    ma = json.loads((killed / "metrics.json").read_text())
    mb = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert _no_time([ma["final"]]) == _no_time([mb["final"]]) and "rsum" in ma["final"]
    assert _no_time(ma["epochs"]) == _no_time(mb["epochs"])


def test_plateau_rule_gains():
    """The rule stops after `patience` epochs that each gained < delta (a fall counts as no gain)."""
    from cookie_lib.train import plateau_reached

    assert not plateau_reached([10.0, 12.0, 12.05], 0.1, 2)          # one small gain is not enough
    assert plateau_reached([10.0, 12.0, 12.05, 12.1], 0.1, 2)        # two gains of 0.05
    assert plateau_reached([10.0, 12.0, 11.5, 11.55], 0.1, 2)        # a fall, then a small gain
    assert not plateau_reached([10.0, 12.0, 12.05, 12.3], 0.1, 2)    # the last epoch still gains 0.25
    assert not plateau_reached([10.0, 10.0, 10.0], 0.0, 2)           # delta 0: the rule is off
    assert plateau_reached([10.0, 10.05], 0.1, 1)


def test_trainer_stops_at_the_plateau_and_records_it(tmp_path, corpus):
    """With a huge delta every epoch 'gains too little': the run stops after patience + 1 epochs, before
    the cap, and the state says where; the epochs it did train equal a run without the rule."""
    stopped = _run(tmp_path, corpus, "stopped", **{"train.epochs": 4, "train.plateau_delta": 1000.0,
                                                   "train.plateau_patience": 1}).state
    assert stopped.plateau_epoch == 2 and len(stopped.epochs) == 2
    full = _run(tmp_path, corpus, "full", **{"train.epochs": 4}).state
    assert full.plateau_epoch is None and len(full.epochs) == 4
    assert [e["rsum"] for e in stopped.epochs] == [e["rsum"] for e in full.epochs[:2]]
