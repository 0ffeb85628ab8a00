"""Faults a user meets outside the happy path: derived files heal, user files are never lost.

- a corrupt feature cache is deleted with a one-line warning and rebuilt, and trains to the same metrics;
- a corrupt ``checkpoint.pt`` under ``--resume`` gives one error naming it, and nothing is overwritten;
- the atomic writer gives files the mode the umask gives an ordinary file, and on a full disk (ENOSPC)
  keeps the previous file and names the file in the error;
- one writer per run folder (flock held for the run, released by the kernel even on kill -9);
- ``--no-progress`` also silences the encoding bars; command lines print ``error: <message>`` (exit 2);
- ``--set key=`` means the empty string.

Everything runs on the committed smoke fixture; the rebuild test re-encodes one split (seconds).
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cookie_lib import runtime
from cookie_lib.config import ConfigError, load_config, parse_overrides, resolve_path
from cookie_lib.data import DataValidationError, load_corpus
from cookie_lib.features import _load_cache, cache_key, encode_texts, split_texts
from cookie_lib.runtime import (AtomicWriteError, CheckpointError, RunFolderLockedError, RunLock, atomic_save,
                                atomic_write_json, atomic_write_text, cli)
from cookie_lib.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TINY = {"train.epochs": 1, "train.max_steps": 3}  # 3 optimiser steps, then the epoch-end evaluation


@pytest.fixture(scope="module")
def corpus():
    """The validated smoke corpus; also makes sure the shared smoke feature cache exists."""
    cfg = load_config("smoke")
    c = load_corpus(cfg)
    Trainer(cfg, "/nonexistent-unused", progress=False, corpus=c)  # loads or builds the shared cache only
    return c


def _no_time(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


# ----------------------------------------------------------------------------- 1. corrupt feature cache
def test_corrupt_feature_cache_is_rebuilt_with_a_warning_and_trains_the_same(tmp_path, corpus, caplog, capsys):
    shared = resolve_path(load_config("smoke").data.cache_dir)
    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = load_config("smoke", {**TINY, "data.cache_dir": str(cache)})
    dataset = resolve_path(cfg.data.dataset)
    names = [f"{split}-{cache_key(cfg, dataset, split, views, corpus.split(split))}.pt"  # the files this config reads
             for split, views in (("train", cfg.train.num_views), ("val", 1))]
    for name in names:
        shutil.copy2(shared / name, cache / name)
    clean = Trainer(cfg, tmp_path / "clean", progress=False, corpus=corpus)
    clean.run()

    # the train cache cut short, as by a full disk or an interrupted copy outside the project
    train_file = cache / names[0]
    original = torch.load(train_file, weights_only=True)
    data = train_file.read_bytes()
    train_file.write_bytes(data[:len(data) // 2])
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="cookie_lib.features"):
        healed = Trainer(cfg, tmp_path / "healed", progress=False, corpus=corpus)
    warnings = [r.getMessage() for r in caplog.records if r.name == "cookie_lib.features"]
    assert len(warnings) == 1 and str(train_file) in warnings[0] and "rebuilding" in warnings[0]
    assert "\n" not in warnings[0]
    assert "encode" not in capsys.readouterr().err  # progress=False silences the encoding bars too (case 6)

    rebuilt = torch.load(train_file, weights_only=True)  # the same name: same key, now complete
    for k in original:
        assert torch.equal(original[k], rebuilt[k]), f"rebuilt cache entry {k} differs"
    healed.run()
    assert healed.state.history == clean.state.history
    assert _no_time(healed.state.epochs) == _no_time(clean.state.epochs) and "rsum" in clean.state.epochs[-1]


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong_shape", "other_images"])
def test_damaged_cache_file_is_detected_deleted_and_named(tmp_path, corpus, caplog, damage):
    records = corpus.split("val")
    texts, _ = split_texts(records)
    good = dict(image_tokens=torch.zeros(1, len(records), 4, 8, dtype=torch.float16),
                text_tokens=torch.zeros(len(texts), 3, 8, dtype=torch.float16),
                text_mask=torch.ones(len(texts), 3, dtype=torch.bool),
                imgids=torch.tensor([r.imgid for r in records]))
    path = tmp_path / "val-x.pt"
    torch.save(good, path)
    assert _load_cache(path, records, len(texts), views=1) is not None  # the control: a sound file loads
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong_shape":
        torch.save({**good, "image_tokens": good["image_tokens"][:, :-1]}, path)
    else:
        torch.save({**good, "imgids": good["imgids"].flip(0)}, path)
    with caplog.at_level(logging.WARNING, logger="cookie_lib.features"):
        assert _load_cache(path, records, len(texts), views=1) is None
    assert not path.exists()
    assert [str(path) in r.getMessage() for r in caplog.records] == [True]


# ----------------------------------------------------------------------------- 2. corrupt checkpoint
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_under_resume_names_the_file_and_overwrites_nothing(tmp_path, corpus, damage):
    cfg = load_config("smoke", TINY)
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False, corpus=corpus).run()
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 3] if damage == "truncated" else b"\x00garbage" * 100)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError) as err:
        Trainer(cfg, run, progress=False, corpus=corpus).run(resume=True)
    msg = str(err.value)
    assert str(ckpt) in msg and "unreadable" in msg and "Move it away" in msg and "\n" not in msg
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [".cookie.lock", "checkpoint.pt"]


# ----------------------------------------------------------------------------- 3. file modes follow the umask
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_json({"a": 1}, tmp_path / "result.json")
        atomic_save({"w": torch.zeros(2)}, tmp_path / "checkpoint.pt")
        (tmp_path / "ordinary.txt").write_text("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (tmp_path / "ordinary.txt").stat().st_mode & 0o777 == want
    for name in ("result.json", "checkpoint.pt"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(want), name


# ----------------------------------------------------------------------------- 4. one writer per run folder
def _hold_lock(folder: Path) -> subprocess.Popen:
    """A process that takes the run folder's lock and sleeps; returns once it holds it."""
    code = ("import sys, time; from cookie_lib.runtime import RunLock; RunLock(sys.argv[1]).__enter__(); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_into_a_run_folder_stops_at_once_and_kill_9_frees_the_lock(tmp_path, corpus):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        with pytest.raises(RunFolderLockedError, match=rf"{run}.*in use by another process \(pid {holder.pid}"):
            RunLock(run).__enter__()
        trainer = Trainer(load_config("smoke", TINY), run, progress=False, corpus=corpus)
        with pytest.raises(RunFolderLockedError):
            trainer.run()
        assert not (run / "checkpoint.pt").exists()
        t0 = time.monotonic()
        cli_run = subprocess.run([sys.executable, "-m", "cookie_lib.train", "--profile", "smoke", "--out", str(run),
                                  "--no-progress"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - t0
        assert cli_run.returncode == 2, cli_run.stderr[-2000:]
        assert cli_run.stderr.startswith(f"error: run folder {run} is in use") and "Traceback" not in cli_run.stderr
        assert len(cli_run.stderr.strip().splitlines()) == 1
        assert elapsed < 60, f"the second writer took {elapsed:.0f} s to stop"
    finally:
        holder.kill()  # SIGKILL: no handler runs; the kernel drops the flock with the process
        holder.wait()
    assert holder.returncode == -9
    with RunLock(run):  # free again
        trainer.run()
    assert (run / "checkpoint.pt").exists()


def test_run_lock_is_reentrant_in_one_process_and_released_on_exit(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # the CLI holds it around a Trainer that takes it again
            pass
        probe = subprocess.run([sys.executable, "-c", "import sys; from cookie_lib.runtime import RunLock; "
                                "RunLock(sys.argv[1]).__enter__()", str(tmp_path)], cwd=ROOT, env=ENV,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode == 1 and "RunFolderLockedError" in probe.stderr  # still held after the inner exit
    assert not runtime._held
    probe = subprocess.run([sys.executable, "-c", "import sys; from cookie_lib.runtime import RunLock; "
                            "RunLock(sys.argv[1]).__enter__()", str(tmp_path)], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


# ----------------------------------------------------------------------------- 5. full disk while writing
def _enospc_after_half(write):
    """Wrap a writer ``write(obj, path)`` so it writes half of its bytes, then fails as a full disk does."""
    def failing(obj, path):
        write(obj, path)
        p = Path(path)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return failing


def test_full_disk_keeps_the_previous_checkpoint_and_result_and_names_the_file(tmp_path, corpus, monkeypatch):
    cfg = load_config("smoke", TINY)
    tr = Trainer(cfg, tmp_path / "run", progress=False, corpus=corpus)
    tr.run()
    result = tmp_path / "run" / "result.json"
    atomic_write_json({"rsum": 1.0}, result)
    before = {p: p.read_bytes() for p in (tr.checkpoint_path, result)}

    monkeypatch.setattr(torch, "save", _enospc_after_half(torch.save))
    with pytest.raises(AtomicWriteError) as err:
        tr.save_checkpoint()
    assert err.value.errno == errno.ENOSPC and str(tr.checkpoint_path) in str(err.value)
    real_write_text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, text: _enospc_after_half(
        lambda t, p: real_write_text(Path(p), t))(text, self))
    with pytest.raises(AtomicWriteError) as err:
        atomic_write_json({"rsum": 2.0}, result)
    assert err.value.errno == errno.ENOSPC and str(result) in str(err.value)
    monkeypatch.undo()

    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".cookie.lock", "checkpoint.pt", "result.json"]
    with pytest.raises(SystemExit) as code:  # and a command line reports it in one line
        cli(lambda: atomic_write_text("x", Path("/proc/cannot/write/here")))
    assert code.value.code == 2


# ----------------------------------------------------------------------------- 6. --no-progress and the bars
class _FakeTextEncoder:
    """Stands in for TextEncoder: tokenize(texts) -> ids [M, 3]; forward -> (states [M, 3, 4], mask [M, 3])."""
    out_dim = 4

    def eval(self):
        return self

    def tokenize(self, texts):
        return {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long)}

    def __call__(self, input_ids):
        return torch.ones(len(input_ids), 3, 4), torch.ones(len(input_ids), 3, dtype=torch.bool)


@pytest.mark.parametrize("progress", [True, False])
def test_progress_flag_controls_the_encoding_bars(capsys, progress):
    tokens, mask = encode_texts(["a cat", "a dog"], _FakeTextEncoder(), progress=progress)
    assert tokens.shape == (2, 3, 4) and mask.all()
    assert ("encode captions" in capsys.readouterr().err) == progress


# ----------------------------------------------------------------------------- 7. command-line errors
@pytest.mark.parametrize("error", [ConfigError("model.dim='big' must be of type int"),
                                   DataValidationError("data.json: file not found"),
                                   RunFolderLockedError("run folder x is in use"),
                                   CheckpointError("checkpoint x is unreadable")])
def test_cli_prints_one_error_line_and_exits_2_for_user_errors(capsys, error):
    def main():
        raise error
    with pytest.raises(SystemExit) as code:
        cli(main)
    assert code.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_cli_keeps_the_traceback_for_unexpected_errors_and_passes_the_status():
    def bug():
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        cli(bug)
    for status, want in ((None, 0), (0, 0), (1, 1)):
        with pytest.raises(SystemExit) as code:
            cli(lambda: status)
        assert code.value.code == want


def test_train_command_line_config_error_is_one_line_exit_2(tmp_path):
    out = tmp_path / "x"
    proc = subprocess.run([sys.executable, "-m", "cookie_lib.train", "--profile", "smoke", "--out", str(out),
                           "--set", "model.dim=big"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: model.dim='big' must be of type int, got str\n"
    assert not out.exists()


# ----------------------------------------------------------------------------- 8. --set key= is the empty string
def test_empty_override_is_the_empty_string_not_none():
    # the shell turns --set data.image_root="" into data.image_root=; from Python the quotes may arrive
    assert parse_overrides(["data.image_root=", 'data.cache_dir=""', "train.max_steps=0"]) == \
        {"data.image_root": "", "data.cache_dir": "", "train.max_steps": 0}
    assert load_config("smoke", parse_overrides(["data.image_root="])).data.image_root == ""
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["data.image_root"])


# ----------------------------------------------------------------------------- 9. evaluate and search: one validation path
@pytest.fixture(scope="module")
def exported_model(tmp_path_factory, corpus):
    """A 3-step smoke run and its export: (run folder, model file)."""
    from cookie_lib.search import export_model

    root = tmp_path_factory.mktemp("faults-export")
    Trainer(load_config("smoke", TINY), root / "run", progress=False, corpus=corpus).run()
    return root / "run", export_model(root / "run", root / "model" / "cookie.pt", card=False)


def _broken_corpus(tmp_path: Path, fault: str) -> tuple[Path, str]:
    """A copy of the emoji fixture with one fault in its test split -> (JSON path, the expected problem line)."""
    import json

    dst = tmp_path / "emoji"
    shutil.copytree(ROOT / "data" / "fixture_emoji", dst)
    path = dst / "dataset_emoji.json"
    data = json.loads(path.read_text())
    i = next(i for i, im in enumerate(data["images"]) if im["split"] == "test")
    rec = data["images"][i]
    where = f"{path}: images[{i}] (imgid={rec['imgid']})"
    image = dst / "images" / rec.get("filepath", "") / rec["filename"]
    if fault == "non-image file":
        image.write_text("this is not a PNG")
        return path, f"{where}: image does not decode (UnidentifiedImageError"
    if fault == "missing image":
        image.unlink()
        return path, f"{where}: image file missing: {image}"
    if fault == "empty caption":
        rec["sentences"][1]["raw"] = "  "
        path.write_text(json.dumps(data))
        return path, f"{where}: sentences[1] 'raw' must be a non-empty string, got '  '"
    assert fault == "malformed JSON"
    path.write_text(path.read_text()[:-2])
    return path, f"{path}: invalid JSON at line"


FAULTS = ["non-image file", "missing image", "empty caption", "malformed JSON"]


def _error(err: str) -> str:
    """stderr from its ``error: `` line on (the text encoder's loading bar may precede it); no traceback."""
    assert "error: " in err and "Traceback" not in err, err
    return err[err.index("error: "):]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", ["evaluate", "search"])
def test_evaluate_and_search_report_a_bad_corpus_like_data_validate(tmp_path, exported_model, fault, command, capsys):
    from cookie_lib import data, evaluate, search

    _, model = exported_model
    path, problem = _broken_corpus(tmp_path, fault)
    assert data.main(["validate", str(path)]) == 1  # the reference: python -m cookie_lib.data validate
    reference = capsys.readouterr().err
    assert problem in reference
    if command == "evaluate":
        status = evaluate.main(["--model", str(model), "--dataset", str(path), "--device", "cpu"])
    else:
        status = search.main(["a grinning face", "--model", str(model), "--corpus", str(path), "--device", "cpu",
                              "--out", ""])
    err = _error(capsys.readouterr().err)
    assert status == 2
    assert problem in err  # the same line, naming the file and the record
    assert all(line.startswith((str(path), "error: ")) for line in err.strip().splitlines())


def test_search_image_query_that_is_not_an_image_is_one_line(tmp_path, exported_model, capsys):
    from cookie_lib import search

    _, model = exported_model
    fake = tmp_path / "photo.png"
    fake.write_text("not an image")
    assert search.main([str(fake), "--model", str(model), "--corpus", "data/fixture_emoji/dataset_emoji.json",
                        "--device", "cpu", "--out", ""]) == 2
    err = _error(capsys.readouterr().err)
    assert err.startswith(f"error: image {fake} does not decode") and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_device_without_a_gpu_is_one_line_everywhere(tmp_path, exported_model, corpus, capsys):
    from cookie_lib import evaluate, search

    run, model = exported_model
    for command in (lambda: evaluate.main(["--model", str(model), "--device", "cuda"]),
                    lambda: evaluate.main(["--run", str(run), "--device", "cuda:1"]),
                    lambda: search.main(["x", "--model", str(model), "--device", "cuda", "--out", ""])):
        status = command()
        err = _error(capsys.readouterr().err)
        assert status == 2 and "no CUDA GPU is available on this machine; use --device cpu" in err
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):  # train and the grid build a Trainer
        Trainer(load_config("smoke", {**TINY, "train.device": "cuda"}), tmp_path / "r", progress=False, corpus=corpus)


@pytest.mark.parametrize("command", ["evaluate", "search"])
def test_training_checkpoint_where_an_export_is_expected_says_export_it_first(exported_model, command, capsys):
    from cookie_lib import evaluate, search

    run, _ = exported_model
    for given in (run / "checkpoint.pt", run):
        if command == "evaluate":
            status = evaluate.main(["--model", str(given), "--device", "cpu"])
        else:
            status = search.main(["x", "--model", str(given), "--device", "cpu", "--out", ""])
        err = _error(capsys.readouterr().err)
        assert status == 2 and len(err.strip().splitlines()) == 1
        assert f"export it first with python -m cookie_lib.search --export-run {run} --model {run / 'cookie.pt'}" in err


def test_search_missing_corpus_says_how_to_build_it(exported_model, monkeypatch, capsys):
    from cookie_lib import search
    from cookie_lib.data import BUILD_HINTS

    _, model = exported_model
    monkeypatch.setitem(BUILD_HINTS, "data/absent/dataset_emoji.json", BUILD_HINTS["data/emoji/dataset_emoji.json"])
    assert search.main(["x", "--model", str(model), "--corpus", "data/absent/dataset_emoji.json", "--out", ""]) == 2
    err = capsys.readouterr().err
    assert "dataset_emoji.json does not exist (build it with python -m cookie_lib.study.corpora build" in err
