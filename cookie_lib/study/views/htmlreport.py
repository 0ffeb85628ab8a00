"""An offline HTML rendering of the executed notebooks, with a contents page.

    python scripts/build_report.py results/notebooks --out results/report

Each executed ``*.ipynb`` becomes ``NAME.html`` through nbconvert's HTMLExporter (the "lab" template,
whose CSS is inlined), and ``index.html`` links them in file order, listing each page's figures and
tables by title. The pages load nothing from the network: the template blocks that would pull
require.js, MathJax, Mermaid or the widget manager from a CDN are emptied (maths then shows as its TeX
source), figures are the base64 PNGs inside the notebooks (``data:`` URIs), and the build fails if any
external script, stylesheet or image is left. Every table sits in a horizontally scrolling box, so a wide
table scrolls instead of being clipped at the page edge. A figure's title is the ``title`` of its PNG
output's metadata (``views.figures.save_figure`` records the figure's suptitle there), else the heading above it;
a table's title is the heading above it. The report folder is built in a temporary folder beside ``out``
and then swapped in, so an interrupted build never leaves half a report.
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

# Extends the lab template: empties the blocks that reference a CDN (see module docstring), gives each
# PNG its title as alt text (from the output's metadata), and adds the CSS of the table scroll box. The lab
# input and output areas are CSS tables whose cells grow to their content; a fixed layout keeps them at the
# page width so the boxes inside (tables, long code lines, long printed lines) can scroll.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}<style type="text/css">
.jp-OutputArea-child, .jp-InputArea { table-layout: fixed; width: 100%; }
.jp-InputArea-editor pre, .jp-RenderedText pre { overflow-x: auto; }
.cookie-table-scroll { overflow-x: auto; max-width: 100%; }
.cookie-table-scroll table { margin-left: 0; }
</style>{% endblock extra_css %}
{% block data_png scoped %}
{%- set title = output | get_metadata('title', 'image/png') -%}
{%- set filename = output | get_metadata('filename', 'image/png') -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}" alt="{{ (title or filename or 'figure') | escape_html }}" data-filename="{{ (filename or '') | escape_html }}">
</div>
{%- endblock data_png %}
"""
# a <script src=...>, <link href=...>, <img src=...>, CSS @import/url() that would be fetched from the network
EXTERNAL = re.compile(r"""<script[^>]*\ssrc\s*=\s*["']?(?:https?:)?//|<link[^>]*\shref\s*=\s*["']?(?:https?:)?//|"""
                      r"""<(?:img|iframe|source|video|audio|embed)[^>]*\ssrc\s*=\s*["']?(?:https?:)?//|"""
                      r"""@import\s+(?:url\()?["']?(?:https?:)?//|import\(\s*["'](?:https?:)?//|"""
                      r"""url\(\s*["']?(?:https?:)?//""", re.IGNORECASE)
# what the contents page lists, in page order: headings (remembered as the current section), tables, images
_ITEMS = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1>|<table\b|</table>|<img\b[^>]*>", re.IGNORECASE | re.DOTALL)
_ATTR = re.compile(r"""\s([\w-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""")


@dataclass
class Item:
    """A figure or table of a page: its anchor in the page, its title and (figures) its file under results/."""
    kind: str  # "figure" or "table"
    anchor: str
    title: str
    filename: str = ""


@dataclass
class Page:
    notebook: Path
    html: str  # file name inside the report folder
    title: str
    code_cells: int
    figures: int  # image/png outputs of the notebook
    items: list[Item] = field(default_factory=list)

    @property
    def tables(self) -> int:
        return sum(i.kind == "table" for i in self.items)


def offline_exporter():
    """An nbconvert HTMLExporter (lab template) that references no external URL."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="cookie_offline.html.j2",
                        extra_loaders=[DictLoader({"cookie_offline.html.j2": OFFLINE_TEMPLATE})],
                        embed_images=True, exclude_anchor_links=True)


def is_executed(nb) -> bool:
    """True when some code cell carries an execution count or outputs (papermill/nbclient ran it)."""
    return any(c.cell_type == "code" and (c.get("execution_count") or c.get("outputs")) for c in nb.cells)


def notebook_title(nb, fallback: str) -> str:
    """The first Markdown heading of the notebook, without the leading #'s; else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.lstrip().startswith("#"):
                    return line.lstrip("# ").strip() or fallback
    return fallback


def _plain(fragment: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, the pilcrow of anchor links removed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("¶", "").split())


def annotate(body: str) -> tuple[str, list[Item]]:
    """Wrap every ``<table>`` in a scroll box and give every table and embedded image an anchor id.

    Returns the new HTML and the page's items in order; an item's title is the image's alt text (its
    figure title) or, for a table or an image without one, the text of the nearest heading above it.
    """
    out, items, pos, heading = [], [], 0, ""
    for m in _ITEMS.finditer(body):
        out.append(body[pos:m.start()])
        tag = m.group(0)
        if m.group(1):  # a heading: the section title of what follows
            heading = _plain(m.group(2))
            out.append(tag)
        elif tag.lower() == "</table>":
            out.append("</table></div>")
        elif tag.lower().startswith("<table"):
            anchor = f"table-{sum(i.kind == 'table' for i in items) + 1}"
            items.append(Item("table", anchor, heading))
            out.append(f'<div class="cookie-table-scroll" id="{anchor}">{tag}')
        else:
            attrs = {k.lower(): html.unescape(v.strip("\"'")) for k, v in _ATTR.findall(tag)}
            if not attrs.get("src", "").startswith("data:image/"):  # not a notebook output (e.g. an icon)
                out.append(tag)
            else:
                anchor = f"figure-{sum(i.kind == 'figure' for i in items) + 1}"
                filename = attrs.get("data-filename", "")
                alt = attrs.get("alt", "")
                title = alt if alt and alt not in ("figure", filename) else heading or alt
                items.append(Item("figure", anchor, title, filename))
                out.append(f'<img id="{anchor}"' + tag[len("<img"):])
        pos = m.end()
    out.append(body[pos:])
    return "".join(out), items


def external_references(text: str) -> list[str]:
    """Snippets of ``text`` that would load a script/stylesheet over the network (should be [])."""
    return [text[max(0, m.start() - 20):m.end() + 60] for m in EXTERNAL.finditer(text)]


def _index_html(pages: list[Page], title: str, skipped: list[Path]) -> str:
    def item(p: Page, i: Item) -> str:
        file = f' <span class="meta">({html.escape(i.filename)})</span>' if i.filename else ""
        return (f'<li>{i.kind.capitalize()}: <a href="{html.escape(p.html)}#{i.anchor}">'
                f'{html.escape(i.title or "(untitled)")}</a>{file}</li>')

    rows = "\n".join(
        f'<li><a href="{html.escape(p.html)}">{html.escape(p.title)}</a> '
        f'<span class="meta">{html.escape(p.notebook.name)} &middot; {p.code_cells} code cells &middot; '
        f'{p.figures} figures &middot; {p.tables} tables</span>'
        + (f'\n<ul class="items">\n' + "\n".join(item(p, i) for i in p.items) + "\n</ul>" if p.items else "")
        + "</li>" for p in pages)
    note = ("<p class=\"meta\">Not executed, so not rendered: "
            + ", ".join(html.escape(s.name) for s in skipped) + "</p>") if skipped else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; line-height: 1.5; }}
li {{ margin: 0.5em 0; }} .meta {{ color: #666; font-size: 0.9em; }}
ul.items {{ margin: 0.2em 0 0.8em; }} ul.items li {{ margin: 0.1em 0; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>The project's notebooks as executed, with their outputs. These pages need no network.</p>
<ol>
{rows}
</ol>
{note}
</body></html>
"""


def build_report(notebook_dir: str | Path, out_dir: str | Path, title: str = "cookie: executed notebooks") -> list[Page]:
    """Render every executed notebook of ``notebook_dir`` to ``out_dir/NAME.html`` plus ``out_dir/index.html``.

    Notebooks without any execution are skipped (listed on the contents page). Raises FileNotFoundError
    when the folder is missing or holds no executed notebook, and RuntimeError naming the page if a
    rendered page would still load something from the network. ``out_dir`` is replaced as a whole.
    """
    src = Path(notebook_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"notebook folder {src} does not exist")
    notebooks = sorted(src.glob("*.ipynb"))
    out = Path(out_dir)
    exporter = offline_exporter()
    pages, skipped = [], []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            if not is_executed(nb):
                skipped.append(path)
                continue
            body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
            body, items = annotate(body)
            bad = external_references(body)
            if bad:
                raise RuntimeError(f"{path.name}: the rendered page would load from the network: {bad[0]!r}")
            name = f"{path.stem}.html"
            (tmp / name).write_text(body, encoding="utf-8")
            figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                          for o in c.get("outputs", []))
            pages.append(Page(path, name, notebook_title(nb, path.stem),
                              sum(c.cell_type == "code" for c in nb.cells), figures, items))
        if not pages:
            raise FileNotFoundError(f"no executed notebook in {src} ({len(notebooks)} *.ipynb, none with outputs)")
        (tmp / "index.html").write_text(_index_html(pages, title, skipped), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes the folder private; a report is meant to be read
        # swap the finished folder in: the old report stays whole until the new one is complete
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return pages


FIGURES_START, FIGURES_END = "<!-- figures:start -->", "<!-- figures:end -->"


def inline_counts(notebook_dir: str | Path) -> list[dict]:
    """Per ``*.ipynb`` of ``notebook_dir`` (file order): its inline figures (``image/png`` outputs) and the
    tables among its outputs (Markdown pipe tables and HTML ``<table>``s), counted in the notebook itself."""
    rows = []
    for path in sorted(Path(notebook_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        data = [o.get("data", {}) for o in outputs]
        tables = sum(len(re.findall(r"^\s*\|?\s*:?-{3,}", d.get("text/markdown", ""), re.M)) > 0
                     or "<table" in d.get("text/html", "") for d in data)
        rows.append({"notebook": path.name, "figures": sum("image/png" in d for d in data), "tables": tables})
    return rows


def figures_block(notebook_dir: str | Path, shown_as: str = "results/notebooks") -> str:
    """The README block (between :data:`FIGURES_START` and :data:`FIGURES_END`): inline figures and tables
    per executed notebook, from :func:`inline_counts`."""
    rows = inline_counts(notebook_dir)
    lines = [FIGURES_START, f"Inline outputs of the executed notebooks in `{shown_as}/` (counted by "
             "`cookie_lib.study.views.htmlreport.inline_counts`):", "", "| notebook | inline figures | tables |",
             "|---|---:|---:|"]
    lines += [f"| `{r['notebook']}` | {r['figures']} | {r['tables']} |" for r in rows]
    lines += [f"| total | {sum(r['figures'] for r in rows)} | {sum(r['tables'] for r in rows)} |", FIGURES_END]
    return "\n".join(lines)


def update_figures_block(readme: str, notebook_dir: str | Path) -> str:
    """``readme`` with its figures block regenerated; ValueError when the markers are missing."""
    if FIGURES_START not in readme or FIGURES_END not in readme:
        raise ValueError(f"README.md lacks the {FIGURES_START} ... {FIGURES_END} markers")
    return re.sub(rf"{re.escape(FIGURES_START)}.*?{re.escape(FIGURES_END)}", lambda _: figures_block(notebook_dir),
                  readme, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/build_report.py", description="Render executed notebooks to offline HTML.")
    p.add_argument("notebooks", nargs="?", default="results/notebooks", help="folder of executed *.ipynb")
    p.add_argument("--out", default="results/report", help="report folder (replaced as a whole)")
    p.add_argument("--title", default="cookie: executed notebooks")
    a = p.parse_args(argv)
    try:
        pages = build_report(a.notebooks, a.out, a.title)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for page in pages:
        print(f"{page.notebook} -> {Path(a.out) / page.html}")
    print(f"contents: {Path(a.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
