"""Clean-sources gate for notebooks/*.ipynb (their execution is CI's ``pytest --nbval-lax notebooks/``).

Committed notebooks carry no outputs or execution counts, except the cells marked ``# NBVAL_CHECK_OUTPUT``
whose expected smoke-profile text output nbval compares (``scripts/update_nbval_refs.py`` writes them); they run on the ``python3`` kernel, and start with
exactly one ``parameters`` cell (papermill injects after it) whose defaults are the fast smoke profile,
because nbval cannot inject parameters.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from cookie_lib.config import load_config, project_root

NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_data", "02_pretraining", "03_ablation_losses", "04_ablation_head", "05_downstream", "06_results"]


def _read(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def _parameters(nb) -> dict:
    """The literal assignments of the first code cell (the parameters cell)."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"the parameters cell may only hold simple assignments, got: {ast.unparse(node)}"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_all_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_clean_sources(path):
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked, "each notebook needs at least one cell whose output nbval checks (# NBVAL_CHECK_OUTPUT)"
    for i, cell in enumerate(code):
        if cell in checked:  # nbval compares only cells that were run: they keep their expected smoke output
            assert cell.get("outputs") and all(o.output_type == "stream" for o in cell.outputs), \
                f"checked code cell {i} needs its expected text output (scripts/update_nbval_refs.py)"
            continue
        assert cell.get("outputs") == [], f"code cell {i} has outputs: strip them (nbstripout)"
        assert cell.get("execution_count") is None, f"code cell {i} has an execution count"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"exactly one cell must be tagged 'parameters', found {len(tagged)}"
    assert nb.cells[tagged[0]] is code[0], "the parameters cell must be the first code cell"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "start with a title"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameter_defaults_are_smoke(path):
    params = _parameters(_read(path))
    assert params["profile"] == "smoke"
    assert params["results_dir"] == "runs/smoke/results"
    assert params["seeds"] == [0, 1]
    assert params.get("build_corpus", False) is False  # CI never builds the full corpus
    assert params.get("secondary_seeds", [0, 1]) == [0, 1] and params.get("bootstrap_resamples", 499) <= 999
    load_config(params["profile"])  # the profile exists and validates
