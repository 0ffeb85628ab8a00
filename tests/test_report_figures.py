"""Figures inline and the report's figure/table handling, on tiny inputs: ``figures.save_figure`` displays
the very file it saved (in a kernel only) and closes the figure; ``htmlreport.annotate`` wraps tables in a
scroll box and lists figures and tables with their titles; nothing external survives the build. The same
checks on the real smoke notebooks are in test_notebooks.py."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib
import nbformat
import pytest
from nbclient import NotebookClient

from cookie_lib.study.views import htmlreport as H
from cookie_lib.study.views import figures

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CELL = """import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cookie_lib.study.views.figures import save_figure
fig, ax = plt.subplots()
ax.plot([1, 2, 3])
fig.suptitle("A   wide\\ntitle")
save_figure(fig, {path!r})
print("open figures:", plt.get_fignums())
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A two-cell notebook executed in a real kernel: a markdown heading, then a figure saved with save_figure
    and a Markdown table."""
    d = tmp_path_factory.mktemp("inline")
    png = d / "results" / "fig_demo.png"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo\n\n## Section heading"),
                nbformat.v4.new_code_cell(CELL.format(path=str(png))),
                nbformat.v4.new_markdown_cell("## A wide table"),
                nbformat.v4.new_code_cell("from IPython.display import Markdown, display\n"
                                          "display(Markdown('| ' + ' | '.join(f'col{i}' for i in range(40)) + ' |\\n|'"
                                          " + '---|' * 40 + '\\n| ' + ' | '.join('1' * 40) + ' |'))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    nbformat.write(nb, d / "01_demo.ipynb")
    return d, nb, png


def test_save_figure_displays_the_saved_file_and_closes(executed):
    _, nb, png = executed
    outputs = nb.cells[1].outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, outputs
    assert base64.b64decode(images[0].data["image/png"]) == png.read_bytes()  # the same bytes as on disk
    meta = images[0].metadata["image/png"]
    assert meta == {"filename": "fig_demo.png", "title": "A wide title"}  # no folder: no machine path in outputs
    assert "open figures: []" in "".join(o.get("text", "") for o in outputs)


def test_save_figure_outside_a_kernel_only_saves(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(figures, "show_saved", lambda *a, **k: shown.append(a))
    fig, ax = plt.subplots()
    ax.set_title("axes title only")
    assert not figures.in_notebook()
    out = figures.save_figure(fig, tmp_path / "sub" / "f.png")
    assert out.read_bytes().startswith(b"\x89PNG") and shown == [] and not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.png"]  # no temporary file left
    fig2, _ = plt.subplots()
    figures.save_figure(fig2, tmp_path / "g.png", show=True, close=False)
    assert len(shown) == 1 and plt.fignum_exists(fig2.number)
    plt.close(fig2)


def test_figure_title_prefers_the_suptitle():
    fig, ax = plt.subplots()
    assert figures.figure_title(fig) == ""
    ax.set_title("panel\ntitle")
    assert figures.figure_title(fig) == "panel title"
    fig.suptitle("the figure")
    assert figures.figure_title(fig) == "the figure"
    plt.close(fig)


def test_report_embeds_lists_and_scrolls(executed, tmp_path):
    d, _, _ = executed
    pages = H.build_report(d, tmp_path / "report")
    assert len(pages) == 1 and pages[0].figures == 1 and pages[0].tables == 1
    page = (tmp_path / "report" / "01_demo.html").read_text()
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert len(imgs) == 1 and 'src="data:image/png;base64,' in imgs[0] and 'alt="A wide title"' in imgs[0]
    assert 'id="figure-1"' in imgs[0]
    assert re.search(r'<div class="cookie-table-scroll" id="table-1"><table', page)
    assert page.count("<table") == page.count('class="cookie-table-scroll"')
    assert "overflow-x: auto" in page and H.external_references(page) == []
    index = (tmp_path / "report" / "index.html").read_text()
    assert '<a href="01_demo.html#figure-1">A wide title</a>' in index and "fig_demo.png" in index
    assert '<a href="01_demo.html#table-1">A wide table</a>' in index
    assert "1 figures &middot; 1 tables" in index


def test_annotate_titles_from_headings_and_alt():
    body = ('<h2 id="x">Section one<a class="anchor-link" href="#x">¶</a></h2><table><tr><td>1</td></tr></table>'
            '<img src="data:image/png;base64,AAAA" alt="figure" data-filename="">'
            '<img src="data:image/png;base64,BBBB" alt="Its own title" data-filename="fig_b.png">'
            '<img src="icon.svg">')
    out, items = H.annotate(body)
    assert [(i.kind, i.anchor, i.title, i.filename) for i in items] == [
        ("table", "table-1", "Section one", ""), ("figure", "figure-1", "Section one", ""),
        ("figure", "figure-2", "Its own title", "fig_b.png")]
    assert out.count("</table></div>") == 1 and '<img src="icon.svg">' in out


@pytest.mark.parametrize("snippet", ['<img src="https://example.org/a.png">', "<img alt=x src=//cdn.example/a.png>",
                                     '<div style="background: url(https://example.org/a.png)">',
                                     '<script src="https://cdn.example/require.js"></script>'])
def test_external_references_are_caught(snippet):
    assert H.external_references(f"<p>ok</p>{snippet}")
    assert not H.external_references('<img src="data:image/png;base64,AAAA"><a href="https://example.org">a link</a>')


def _screenshot_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshot_report", ROOT / "scripts" / "screenshot_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screenshots_skip_with_a_reason_without_chromium(executed, tmp_path, monkeypatch, capsys):
    S = _screenshot_module()
    d, _, _ = executed
    H.build_report(d, tmp_path / "report")
    monkeypatch.setattr(S, "find_chromium", lambda *a, **k: None)
    assert S.main([str(tmp_path / "report"), "--page", "01_demo.html"]) == S.NO_CHROMIUM
    assert "screenshots skipped: no chromium found" in capsys.readouterr().err
    assert S.main([str(tmp_path / "nothere")]) == 2


@pytest.mark.slow
def test_report_renders_in_headless_chromium(executed, tmp_path):
    """Where a Chromium runs (``scripts/screenshot_report.py --fetch`` unpacks Debian's), the page renders
    from the file system with networking off, and the screenshot is not blank."""
    import numpy as np
    from PIL import Image

    S = _screenshot_module()
    found = S.find_chromium()
    if found is None or S.missing_libraries(*found):
        pytest.skip("no runnable chromium (scripts/screenshot_report.py --fetch makes one)")
    d, _, _ = executed
    H.build_report(d, tmp_path / "report")
    assert S.main([str(tmp_path / "report"), "--page", "01_demo.html", "--height", "900"]) == 0
    with Image.open(tmp_path / "report" / "screenshot_01_demo.png") as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (900, 1280) and (pixels < 128).mean() > 0.005  # text and the plotted line, not blank
