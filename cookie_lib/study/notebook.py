"""The notebooks' setup in one call, so each notebook's setup cell is one or two lines::

    from cookie_lib.study.notebook import setup
    run, RESULTS = setup(dict(profile=profile, results_dir=results_dir, seeds=seeds))

``run`` is the validated :class:`~cookie_lib.study.profile.RunProfile` (``run.config`` is the training
config, ``run.seeds``, ...) and ``RESULTS`` the results folder, absolute and created. Paths do not depend
on the working directory (nbval runs in ``notebooks/``, papermill in the caller's folder): relative paths
are taken from the project root.
"""
from __future__ import annotations

import os
from pathlib import Path

from .profile import RunProfile, load_run_profile, run_keys, run_profile_from_dict


def setup(profile_or_params: str | Path | dict, quiet: bool = False) -> tuple[RunProfile, Path]:
    """Load the run profile, set the environment, create the results folder; returns ``(run, results)``.

    ``profile_or_params`` is a profile name or path, or the notebook's parameters as a dict: its
    ``profile`` names the profile file and its other keys (run-level keys only, e.g. ``seeds``,
    ``results_dir`` as papermill or the parameters cell set them) replace the file's values, validated
    the same way (ConfigError naming an unknown key or a bad value).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders are packaged; never stall on a hub lookup
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the tokenizer
    if isinstance(profile_or_params, dict):
        params = dict(profile_or_params)
        if "profile" not in params:
            raise ValueError(f"setup(params): params need a 'profile' key, got {sorted(params)}")
        base = load_run_profile(params["profile"])
        values = {k: getattr(base, k) for k in run_keys()}
        values.update({k: v for k, v in params.items() if k != "profile"})
        values["profile"] = Path(str(params["profile"])).stem
        run = run_profile_from_dict({**values, "config": base.config.to_dict()}, f"notebook parameters "
                                    f"(profile {base.path})")
        run.path = base.path
    else:
        run = load_run_profile(profile_or_params)
    results = run.results_path
    results.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print("profile:", run.profile, "| dataset:", run.config.data.dataset, "| seeds:", run.seeds,
              "| results ->", run.results_dir)  # as configured: no machine-specific absolute path in outputs
    return run, results
