"""Console-script entry points of the installed package (``[project.scripts]`` in pyproject.toml).

Each runs the same ``main`` as ``python -m cookie_lib.<module>`` and exits with its status; user errors
print one line ``error: <message>`` (exit 2, :func:`cookie_lib.runtime.cli`), as the module form does.

    cookie-train    = python -m cookie_lib.train       cookie-evaluate = python -m cookie_lib.evaluate
    cookie-search   = python -m cookie_lib.search      cookie-data     = python -m cookie_lib.data
    cookie-study    = python -m cookie_lib.study.grid
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders are packaged; never wait on a hub lookup


def _run(module: str) -> None:
    import importlib

    from .runtime import cli

    cli(importlib.import_module(module).main)


def train() -> None:
    _run("cookie_lib.train")


def evaluate() -> None:
    _run("cookie_lib.evaluate")


def search() -> None:
    _run("cookie_lib.search")


def data() -> None:
    _run("cookie_lib.data")


def study() -> None:
    _run("cookie_lib.study.grid")
