"""The offline HTML report (cookie_lib.study.views.htmlreport, scripts/build_report.py) built from tiny notebooks
executed here with nbclient: pages and contents exist, links resolve, and nothing loads from the network."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from cookie_lib.study.views import htmlreport as H

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, title: str, code: str, execute: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nSome maths: $e^{{i\\pi}} + 1 = 0$."),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if execute:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbs")
    _notebook(d / "01_first.ipynb", "First notebook", "print(6 * 7)")
    _notebook(d / "02_figure.ipynb", "Second, with a figure",
              "import io\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
              "from IPython.display import Image, display\nfig = plt.figure(); plt.plot([1, 2, 3])\n"
              "buf = io.BytesIO(); fig.savefig(buf, format='png'); display(Image(buf.getvalue()))")
    _notebook(d / "03_clean.ipynb", "Never executed", "1 / 0", execute=False)
    return d


def test_report_pages_links_and_no_network(notebooks, tmp_path):
    out = tmp_path / "report"
    pages = H.build_report(notebooks, out)
    assert [p.html for p in pages] == ["01_first.html", "02_figure.html"]  # the unexecuted one is skipped
    assert pages[1].title == "Second, with a figure" and pages[1].figures == 1
    index = (out / "index.html").read_text()
    links = re.findall(r'href="([^"#]+)(?:#([^"]+))?"', index)
    assert [f for f, anchor in links if not anchor] == ["01_first.html", "02_figure.html"]
    for file, anchor in links:  # every page exists, every anchor of the contents page is an id on its page
        assert (out / file).is_file() and (not anchor or f'id="{anchor}"' in (out / file).read_text())
    assert ("02_figure.html", "figure-1") in links  # the figure is listed
    assert "03_clean.ipynb" in index  # named as not rendered
    first = (out / "01_first.html").read_text()
    assert "42" in first  # the executed output is in the page
    assert 'src="data:image/png;base64' in (out / "02_figure.html").read_text()
    for page in out.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"<script[^>]+src=[\"']?https?://", text), page
        assert not re.search(r"<link[^>]+href=[\"']?https?://", text), page
        assert H.external_references(text) == [], page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left behind


def test_default_nbconvert_would_have_used_a_cdn(notebooks):
    """The guard is not vacuous: the stock lab template references require.js/MathJax on a CDN."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(notebooks / "01_first.ipynb", 4))
    assert H.external_references(body)


def test_rebuild_replaces_the_old_report(notebooks, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.html").write_text("old")
    H.build_report(notebooks, out)
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()


def test_errors_name_the_folder(tmp_path, notebooks):
    with pytest.raises(FileNotFoundError, match="nothere"):
        H.build_report(tmp_path / "nothere", tmp_path / "r")
    empty = tmp_path / "unexecuted"
    empty.mkdir()
    (empty / "a.ipynb").write_bytes((notebooks / "03_clean.ipynb").read_bytes())
    with pytest.raises(FileNotFoundError, match="no executed notebook"):
        H.build_report(empty, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_script_entry_point(notebooks, tmp_path):
    out = tmp_path / "rep"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_report.py"), str(notebooks), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "index.html").is_file() and "contents:" in proc.stdout
