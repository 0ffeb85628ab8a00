"""Clean-sources gate for notebooks/*.ipynb (their execution is CI's ``pytest --nbval-lax notebooks/``).

Committed notebooks carry no outputs or execution counts, except the cells marked ``# NBVAL_CHECK_OUTPUT``
whose expected smoke-profile text output nbval compares (``scripts/update_nbval_refs.py`` writes them); they run on the ``python3`` kernel, and start with
exactly one ``parameters`` cell (papermill injects after it) that names the fast smoke profile, because nbval
cannot inject parameters; the smoke values themselves live in ``profiles/smoke.yaml`` only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from cookie_lib.config import project_root
from cookie_lib.study.profile import load_run_profile

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
def test_parameters_name_the_smoke_profile_and_setup_reads_the_rest(path):
    """The smoke values live in profiles/smoke.yaml only: the parameters cell names the profile, and the setup
    cell hands the notebook's namespace (what papermill injected) to setup, which reads the rest from the file."""
    nb = _read(path)
    assert _parameters(nb) == {"profile": "smoke"}, "the parameters cell holds only profile (values: its file)"
    setup_cell = [c for c in nb.cells if c.cell_type == "code"][1]
    calls = [n for n in ast.walk(ast.parse(setup_cell.source)) if isinstance(n, ast.Call)
             and getattr(n.func, "id", "") in ("setup", "setup_study")]
    assert len(calls) == 1 and [ast.unparse(a) for a in calls[0].args] == ["profile", "globals()"], setup_cell.source
    assert len(setup_cell.source.splitlines()) <= 2, "the setup cell is the import and one call"


def test_smoke_profile_is_the_fast_ci_profile():
    smoke = load_run_profile("smoke")  # exists and validates
    assert smoke.profile == "smoke" and not smoke.build_corpus  # CI never builds the full corpus
    assert smoke.results_path != project_root() / "results"  # CI never overwrites the committed results
    assert len(smoke.seeds) <= 2 and len(smoke.secondary_seeds) <= 2 and smoke.bootstrap_resamples <= 999
    assert smoke.config.train.epochs <= 3 and Path(smoke.config.data.dataset).parts[1].startswith("fixture")


# ----------------------------------------------------------------------------- executed: figures inline
# the fewest inline figures each notebook shows on the smoke profile (each figure it saves under results/)
SMOKE_FIGURES = {"01_data": 1, "02_pretraining": 3, "03_ablation_losses": 1, "04_ablation_head": 2,
                 "05_downstream": 4, "06_results": 1}


def inline_figures(nb) -> list[dict]:
    """The ``image/png`` outputs of a notebook's code cells, in order, each as {"png": bytes, "filename",
    "title"} (file name and title from the output metadata ``views.figures.save_figure`` writes; "" if absent)."""
    import base64

    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "image/png" in out.get("data", {}):
                meta = out.get("metadata", {}).get("image/png", {})
                found.append({"png": base64.b64decode(out["data"]["image/png"]), "filename": meta.get("filename", ""),
                              "title": meta.get("title", "")})
    return found


@pytest.fixture(scope="session")
def executed_smoke(tmp_path_factory):
    """(folder of executed notebooks, their results folder or None).

    By default the six notebooks run here with papermill on their smoke defaults, results written to a
    temporary folder (training what ``runs/smoke`` lacks, which the nbval run of CI then reuses). With
    ``COOKIE_EXECUTED_NOTEBOOKS=DIR`` (e.g. ``results/notebooks`` after ``./run_all.sh``) the notebooks
    already executed there are checked instead, against the results folder beside them.
    """
    import os

    given = os.environ.get("COOKIE_EXECUTED_NOTEBOOKS")
    if given:
        folder = Path(given) if Path(given).is_absolute() else project_root() / given
        if not folder.is_dir():
            pytest.fail(f"COOKIE_EXECUTED_NOTEBOOKS={given}: no such folder")
        return folder, folder.parent
    import papermill

    os.environ.setdefault("MPLBACKEND", "Agg")  # the kernels inherit it, as under run_all.sh
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = tmp_path_factory.mktemp("executed")
    results = out / "results"
    for path in NOTEBOOKS:
        papermill.execute_notebook(str(path), str(out / path.name), parameters={"results_dir": str(results)},
                                   kernel_name="python3", cwd=str(path.parent), progress_bar=False,
                                   execution_timeout=1800)
    return out, results


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_executed_notebook_shows_its_figures(executed_smoke, name):
    folder, results = executed_smoke
    figures = inline_figures(nbformat.read(folder / f"{name}.ipynb", as_version=4))
    assert len(figures) >= SMOKE_FIGURES[name], \
        f"{name}: {len(figures)} inline figures, expected at least {SMOKE_FIGURES[name]}"
    for fig in figures:  # each inline figure is the file saved under results/, byte for byte, and has a title
        assert fig["png"].startswith(b"\x89PNG") and fig["filename"] and fig["title"], (name, fig["filename"])
        saved = results / fig["filename"]
        assert saved.is_file() and saved.read_bytes() == fig["png"], f"{name}: {saved} differs from its inline copy"


@pytest.mark.slow
def test_every_saved_figure_is_inline(executed_smoke):
    folder, results = executed_smoke
    shown = {f["filename"] for p in folder.glob("*.ipynb") for f in inline_figures(nbformat.read(p, as_version=4))}
    # figures the benchmark CLI (not a notebook) writes when run_all.sh runs it
    made_elsewhere = {"fig_cost_model.png", "fig_inference_time.png"}
    saved = {p.name for p in results.glob("fig_*.png")} - made_elsewhere
    assert saved and saved <= shown, f"saved under {results} but never shown inline: {sorted(saved - shown)}"


@pytest.mark.slow
def test_report_of_the_executed_notebooks_embeds_every_figure(executed_smoke, tmp_path):
    import re

    from cookie_lib.study.views import htmlreport

    folder, _ = executed_smoke
    pages = htmlreport.build_report(folder, tmp_path / "report")
    assert [p.notebook.stem for p in pages] == EXPECTED
    index = (tmp_path / "report" / "index.html").read_text()
    for page in pages:
        text = (tmp_path / "report" / page.html).read_text()
        imgs = re.findall(r"<img\b[^>]*>", text)
        assert page.figures >= SMOKE_FIGURES[page.notebook.stem] and len(imgs) == page.figures, page.html
        assert all(re.search(r'\ssrc="data:image/png;base64,', i) for i in imgs), page.html
        assert htmlreport.external_references(text) == [], page.html
        figures = [i for i in page.items if i.kind == "figure"]
        assert len(figures) == page.figures and all(i.title for i in figures), page.html
        for item in page.items:
            assert f'href="{page.html}#{item.anchor}"' in index and f'id="{item.anchor}"' in text


@pytest.mark.slow
def test_claims_of_the_executed_run_recompute_byte_for_byte(executed_smoke):
    """The executed run's claims.csv follows from its per_query.npz and the pre-registration alone (the one
    command the README gives), and its claim-level table and factorial are written beside it."""
    from cookie_lib.study import verdicts

    _, results = executed_smoke
    assert verdicts.main(["recompute", "--per-query", str(results / "per_query.npz"),
                          "--check", str(results / "claims.csv")]) == 0
    for name in ("claims_by_claim.csv", "table_factorial.csv"):
        assert (results / name).stat().st_size > 0, name


def test_committed_claims_recompute_from_the_repository():
    """A fresh clone recomputes every CI and p-value of results/claims.csv from committed files."""
    from cookie_lib.study import verdicts

    results = project_root() / "results"
    if not (results / "per_query.npz").exists():
        pytest.skip("results/ predates the committed per-query file")
    assert verdicts.main(["recompute", "--per-query", str(results / "per_query.npz"),
                          "--check", str(results / "claims.csv")]) == 0
