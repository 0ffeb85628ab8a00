"""Copy the headline tables of results/ into README.md (between the `<!-- results:... -->` markers),
so every number in the README's results section comes from the committed results files.

    .venv/bin/python scripts/update_readme.py          # rewrite the block
    .venv/bin/python scripts/update_readme.py --check  # exit 1 if README.md is out of date (used by tests)
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"
BSTART, BEND = "<!-- bench:start -->", "<!-- bench:end -->"


def section(markdown: str, heading: str) -> str:
    """The body of one '## heading' section of a Markdown file."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    if not m:
        raise SystemExit(f"results/summary.md has no '## {heading}' section")
    return m.group(1).strip()


def results_block(results: Path = ROOT / "results") -> str:
    summary = (results / "summary.md").read_text()
    manifest = json.loads((results / "manifest.json").read_text())
    claims = (results / "claims.md").read_text().strip()
    return "\n".join([
        START,
        f"Profile `{manifest['profile']}`, seeds {manifest['seeds']}, {manifest['n_runs']} training runs "
        f"({manifest['total_train_seconds'] / 60:.0f} min of training summed over runs, two at a time), commit `{manifest['commit'][:7]}`. "
        "Test split, mean ± std over seeds. RSUM is out of 600, and every other metric is out of 100. Generated from "
        "[results/summary.md](results/summary.md) by `scripts/update_readme.py`.",
        "",
        section(summary, "Headline metrics"),
        "",
        "**The paper's claims** (Welch's t-test over seeds; p >= 0.05 means the difference is within noise; "
        "[results/claims.csv](results/claims.csv)):",
        "",
        claims,
        END,
    ])


def bench_block(results: Path = ROOT / "results") -> str:
    """Inference-time ratio per gallery size and training throughput, from results/benchmarks.csv."""
    with open(results / "benchmarks.csv", newline="") as f:
        v = {(r["benchmark"], r["setting"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    settings = sorted({s for b, s, m in v if b == "inference" and m == "ratio_two_over_one"},
                      key=lambda s: int(s.split("N=")[1].split()[0]))
    lines = [BSTART, "| gallery (CPU, 2 threads) | two-stream retrieval | one-stream (extrapolated) | ratio "
             "| paper | re-rank top-10 with one-stream |", "|---|---|---|---|---|---|"]
    for s in settings:
        g = lambda m: v[("inference", s, m)]  # noqa: E731
        lines.append(f"| {s.replace('cpu ', '')} | {g('two_stream_s'):.1f} s | {g('one_stream_s'):,.0f} s "
                     f"| {1000 * g('ratio_two_over_one'):.1f}/1000 | 3/1000 | {g('rerank_k10_s'):.1f} s |")
    lines += ["", "| training throughput (pairs/s, batch 128, d=256, L=2) | full COOKIE | cross-modal only | dual encoder, no head |",
              "|---|---|---|---|"]
    for mode in ("cached", "live"):
        cells = [f"{v[('training', f'cpu {mode} {n}', 'pairs_per_s')]:.0f}"
                 for n in ("cookie", "cross_modal_only", "dual_encoder")]
        lines.append(f"| {mode} {'features' if mode == 'cached' else 'MobileNetV2 (fine-tuned)'} | " + " | ".join(cells) + " |")
    frac = v[("compute", "cpu cached cookie", "fraction_of_ceiling")]
    ev = v[("eval_scale", "cpu 5000x25000 D=256", "seconds")]
    mem = v[("eval_scale", "cpu 5000x25000 D=256", "peak_rss_delta_mib")]
    lines += ["", f"A cached training step reaches {100 * frac:.0f} % of this machine's fp32 matmul FLOP/s. Recall over "
              f"5,000 images x 25,000 captions takes {ev:.1f} s with a peak of +{mem:.0f} MiB "
              "([results/benchmarks.csv](results/benchmarks.csv), "
              "[profile](results/profile_train_step.txt), [figure](results/fig_inference_time.png)).", BEND]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    readme = (ROOT / "README.md").read_text()
    for a_, b_ in ((START, END), (BSTART, BEND)):
        if a_ not in readme or b_ not in readme:
            raise SystemExit(f"README.md lacks the {a_} ... {b_} markers")
    new = re.sub(rf"{re.escape(START)}.*?{re.escape(END)}", lambda _: results_block(), readme, flags=re.S)
    new = re.sub(rf"{re.escape(BSTART)}.*?{re.escape(BEND)}", lambda _: bench_block(), new, flags=re.S)
    if a.check:
        if new != readme:
            print("README.md results block is out of date: run scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    (ROOT / "README.md").write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
