"""The run-level keys of a profile (``profiles/NAME.yaml``): a typed view over :mod:`cookie_lib.config`'s reader.

A profile holds the training config under ``config:`` and, beside it, the keys that describe the whole
study run: where results go, which seeds, how many runs at a time, the benchmark's arguments. The file is
found, read and split by :func:`cookie_lib.config.read_profile` / :func:`~cookie_lib.config.split_profile`
(the same reader as :func:`~cookie_lib.config.load_config`); this module types and checks the run-level part.
papermill injects these top-level keys into the notebooks; ``run_all.sh`` and the grid read them through
:func:`load_run_profile`, so a typo (``seed: [0, 1, 2]``) or a bad value fails with a
:class:`~cookie_lib.config.ConfigError` naming it instead of being ignored.

    python -m cookie_lib.study.profile get results_dir --profile default     # prints: results
    python -m cookie_lib.study.profile check --profile smoke                 # validates, prints the keys

To add a run-level key, add a field (with its default and a one-line reason) to :class:`RunProfile`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (CONFIG_KEY, Config, ConfigError, config_from_dict, read_profile, resolve_path,
                      split_profile)


@dataclass
class RunProfile:
    """The run-level part of a profile; ``config`` is the validated training config."""
    profile: str = ""  # the profile's name, as the notebooks print and record it ("": the file's stem)
    results_dir: str = "results"  # tables and figures (relative = to the project root)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # seeds of the primary variants
    secondary_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # seeds of the secondary variants
    onestream_seeds: list[int] = field(default_factory=lambda: [0])  # one-stream cross-encoder (speed claim)
    finetune_seeds: list[int] = field(default_factory=list)  # the fine-tuned arm (variants.FINETUNED); [] = not run
    finetune_epochs: int = 0  # epochs of the fine-tuned arm and its budget-matched frozen comparator (0 = train.epochs)
    bootstrap_resamples: int = 9999  # resamples of the claims table's bootstrap CIs
    downstream_emoji: str = ""  # Karpathy JSON whose test split is the emoji downstream set ("" = none)
    downstream_oca: str = ""  # Karpathy JSON whose test split is the Open Clip Art downstream set ("" = none)
    downstream_wordnet: str = ""  # WordNet lemma -> gloss task JSON ("" = none)
    workers: int = 1  # training runs at a time, each in its own single-threaded process
    bench_args: str = ""  # extra arguments of python -m cookie_lib.study.bench (e.g. "--quick")
    build_corpus: bool = False  # build the emoji corpus from the cached npm packages when it is missing
    config: Config = field(default_factory=Config)
    path: Path | None = None  # the YAML file it was read from (None: built in code)

    @property
    def results_path(self) -> Path:
        """``results_dir`` as an absolute path (relative paths are taken from the project root)."""
        return resolve_path(self.results_dir)

    def get(self, key: str):
        """One run-level value by name (the CLI's ``get``); ConfigError for an unknown key."""
        if key not in run_keys():
            raise ConfigError(f"unknown run-level key {key!r}; allowed: {run_keys()}")
        return getattr(self, key)


def run_keys() -> list[str]:
    """The run-level keys a profile may hold beside ``config``."""
    return [f.name for f in dataclasses.fields(RunProfile) if f.name not in ("config", "path")]


def _check(where: str, key: str, value, annotation):
    """``value`` if it matches ``annotation`` (str, int, bool, list[int]), else ConfigError naming it."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key}={value!r} must be {expected}, got {type(value).__name__}")
    if typing.get_origin(annotation) is list:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of ints")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: {key}={value!r} repeats a seed")
        return list(value)
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("an int")
    if annotation is bool and not isinstance(value, bool):
        raise bad("a bool (true/false)")
    if annotation is str and not isinstance(value, str):
        raise bad("a string")
    return value


def run_profile_from_dict(values: dict, where: str = "profile", overrides: dict | None = None) -> RunProfile:
    """Validate a profile's top-level mapping (run-level keys + ``config``) into a :class:`RunProfile`.

    ``overrides`` are those of :func:`load_run_profile`. Raises ConfigError naming ``where`` and the first
    unknown key or bad value."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a YAML mapping, got {type(values).__name__}")
    config_values, run_values = split_profile(values, where)
    run_overrides, config_overrides = _split_overrides(overrides)
    run_values = {**run_values, **run_overrides}
    unknown = sorted(set(run_values) - set(run_keys()), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown run-level key(s) {unknown}; allowed: {run_keys() + [CONFIG_KEY]} "
                          f"(training settings go under '{CONFIG_KEY}:')")
    hints = typing.get_type_hints(RunProfile)
    kwargs = {k: _check(where, k, run_values[k], hints[k]) for k in run_keys() if k in run_values}
    if kwargs.get("bootstrap_resamples", 9999) < 99:
        raise ConfigError(f"{where}: bootstrap_resamples={kwargs['bootstrap_resamples']!r} must be >= 99")
    if kwargs.get("finetune_epochs", 0) < 0:
        raise ConfigError(f"{where}: finetune_epochs={kwargs['finetune_epochs']!r} must be >= 0 (0 = train.epochs)")
    if kwargs.get("workers", 1) < 1:
        raise ConfigError(f"{where}: workers={kwargs['workers']!r} must be an int >= 1")
    for key in ("seeds", "secondary_seeds", "onestream_seeds", "finetune_seeds"):
        if any(s < 0 for s in kwargs.get(key, [])):
            raise ConfigError(f"{where}: {key}={kwargs[key]!r} must hold seeds >= 0")
    try:
        config = config_from_dict(config_values, config_overrides)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return RunProfile(**kwargs, config=config)


def _split_overrides(overrides: dict | None) -> tuple[dict, dict]:
    """``(run-level, training-config)`` overrides: run-level keys are single names (``seeds``), training keys
    dotted (``loss.visual``), as :func:`cookie_lib.config.parse_overrides` reads ``--set`` items."""
    items = (overrides or {}).items()
    return {k: v for k, v in items if "." not in k}, {k: v for k, v in items if "." in k}


def load_run_profile(name_or_path: str | Path, overrides: dict | None = None) -> RunProfile:
    """Read and validate ``profiles/NAME.yaml`` (or a path): run-level keys and the training config.

    ``overrides`` replace values of the file: run-level keys by name (``{"seeds": [0]}``, what the notebooks'
    parameters give) and training-config keys dotted (``{"loss.visual": 0.0}``, as for
    :func:`~cookie_lib.config.load_config`)."""
    path, values = read_profile(name_or_path)
    prof = run_profile_from_dict(values, str(path), overrides)
    prof.path = path
    prof.profile = prof.profile or path.stem
    return prof


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Validate a profile and print its run-level keys.")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get", help="print one run-level value (lists space-separated, bools true/false)")
    g.add_argument("key")
    g.add_argument("--profile", required=True, help="profiles/NAME.yaml or a path")
    c = sub.add_parser("check", help="validate the whole profile and print its run-level keys")
    c.add_argument("--profile", required=True)
    a = p.parse_args(argv)
    prof = load_run_profile(a.profile)  # ConfigError -> "error: <message>", exit 2 (runtime.cli)
    if a.cmd == "get":
        value = prof.get(a.key)
        print(" ".join(map(str, value)) if isinstance(value, list) else
              str(value).lower() if isinstance(value, bool) else value)
    else:
        for key in run_keys():
            print(f"{key}: {getattr(prof, key)!r}")
    return 0


if __name__ == "__main__":
    from ..runtime import cli
    cli(main)
