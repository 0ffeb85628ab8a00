"""The package installs from a wheel and works without the source tree.

A wheel is built (``pip wheel --no-deps --no-build-isolation``) from a copy of the tracked files, so
nothing lands in the working tree, and installed with ``--no-deps`` into a fresh venv WITHOUT access to
the system or the project venv's site-packages. Its dependencies (torch, transformers, the encoder
packages: gigabytes, minutes) come from the project venv through one ``.pth`` line; the project venv's
own ``.pth`` files (e.g. the editable install of this repository) are not processed there, so
``cookie_lib`` can only come from the wheel. The test then checks that every subpackage shipped, that
the console scripts exist, and runs the README's API example in that venv, from the repository root
(its relative paths), with ``python -I`` (no current folder on sys.path).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("cookie-train", "cookie-evaluate", "cookie-search", "cookie-data", "cookie-study")


def readme_api_example() -> str:
    """The README's python block that calls ``cookie_lib.load_model`` (the documented API example)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if "cookie_lib.load_model(" in b]
    assert found, "README.md has no python block calling cookie_lib.load_model"
    return found[0]


def _source_packages() -> set[str]:
    return {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in (ROOT / "cookie_lib").rglob("__init__.py")}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for rel in tracked:  # the tracked and new (unignored) files: what a clone plus this change holds
        if rel.startswith(("cookie_lib/", "pyproject.toml", "README.md", "LICENSE")) and (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, venv, py


def test_wheel_ships_every_subpackage_and_the_console_scripts(wheel_venv):
    wheel, venv, _ = wheel_venv
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
        entry = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert _source_packages() <= shipped, f"missing from the wheel: {_source_packages() - shipped}"
    assert "cookie_lib.study.bench" in shipped
    for script in SCRIPTS:  # each a launcher of the venv's python calling cookie_lib.cli (not run: torch import)
        launcher = venv / "bin" / script
        assert script in entry and launcher.is_file(), script
        text = launcher.read_text()
        assert text.startswith(f"#!{venv / 'bin' / 'python'}") and "from cookie_lib.cli import" in text, text


def test_readme_api_example_runs_from_the_installed_wheel(wheel_venv, tmp_path):
    _, venv, py = wheel_venv
    script = tmp_path / "example.py"
    script.write_text("import cookie_lib, pathlib\n"
                      f"assert pathlib.Path(cookie_lib.__file__).is_relative_to({str(venv)!r}), cookie_lib.__file__\n"
                      + readme_api_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    run = subprocess.run([str(py), "-I", str(script)], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch.Size" in run.stdout  # the example prints the embeddings' shapes
