"""The notebooks' setup in one call, so each notebook's setup cell is two lines::

    from cookie_lib.study.notebook import setup
    study, RESULTS = setup(profile, globals())

or, in the notebooks that look at the whole study (every run and the claims table)::

    from cookie_lib.study.notebook import setup_study
    study, RESULTS, runs, claims = setup_study(profile, globals())

The parameters cell holds only ``profile = "smoke"`` (the fast CI profile, since nbval cannot inject
parameters); every other value comes from the profile file. ``globals()`` hands over what papermill
injected after that cell (``-f profiles/NAME.yaml`` injects every top-level key of the file, ``-p
results_dir DIR`` one of them): its run-level keys replace the file's, validated by
:func:`cookie_lib.study.profile.load_run_profile` like the file itself (ConfigError naming a bad value).

``run`` is the validated :class:`~cookie_lib.study.profile.RunProfile` (``run.config`` is the training
config, ``run.seeds``, ...) and ``RESULTS`` the results folder, absolute and created. Paths do not depend
on the working directory (nbval runs in ``notebooks/``, papermill in the caller's folder): relative paths
are taken from the project root.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..config import CONFIG_KEY, ConfigError
from .profile import RunProfile, load_run_profile, run_keys


def setup(profile: str | Path, params: Mapping | None = None, quiet: bool = False) -> tuple[RunProfile, Path]:
    """Load the run profile, set the environment, create the results folder; returns ``(study, results)``.

    ``profile`` is a profile name or path. ``params`` is the notebook's namespace (``globals()``) or any
    mapping: its run-level keys (``results_dir``, ``seeds``, ...) override the file's; its ``profile`` (a name
    papermill injected) and ``config`` (the file's training section, which ``-f`` injects; the grid reads the
    training config from the file) are skipped, and so is every other name. ``quiet`` skips the one-line
    summary.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders are packaged; never stall on a hub lookup
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the tokenizer
    if not isinstance(profile, (str, Path)):
        raise ConfigError(f"notebook parameter profile={profile!r} must be a profile name or a path")
    overrides = {k: v for k, v in (params or {}).items() if k in run_keys() and k not in ("profile", CONFIG_KEY)}
    study = load_run_profile(profile, overrides)
    results = study.results_path
    results.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print("profile:", study.profile, "| dataset:", study.config.data.dataset, "| seeds:", study.seeds,
              "| results ->", study.results_dir)  # as configured: no machine-specific absolute path in outputs
    return study, results


def setup_study(profile: str | Path, params: Mapping | None = None, quiet: bool = False
                ) -> tuple[RunProfile, Path, pd.DataFrame, pd.DataFrame]:
    """:func:`setup`, then every run of the profile's study and its claims table: ``(study, results, runs, claims)``.

    ``runs`` is :func:`cookie_lib.study.grid.run_study` (trains what is missing, loads the rest: after
    ``run_all.sh`` everything is loaded) and ``claims`` :func:`cookie_lib.study.analyses.study_claims` of
    them, the whole Holm family computed once and written to ``results/claims.csv``."""
    from . import analyses, grid  # heavy: only the notebooks that look at the study import them

    study, results = setup(profile, params, quiet)
    runs = grid.run_study(study.profile)
    claims = analyses.study_claims(runs, results / "claims.csv", study.bootstrap_resamples)
    return study, results, runs, claims
