"""The benchmark CLI: ``python -m cookie_lib.study.bench [--quick] [--out results] [--threads K]``.

Writes, atomically, under ``--out``:

* ``benchmarks.csv`` - tidy rows, columns :data:`cookie_lib.study.bench.timing.COLUMNS`
  (benchmark, setting, device, n_images, n_captions, mode, variant, metric, value, unit, note);
* ``benchmarks.json`` - the same rows, headline numbers, assumptions, provenance manifest;
* ``inference_cost_model.csv`` - the ratio curve (model, n_images, n_captions, two_stream_s, one_stream_s, ratio);
* ``inference_cost_model.json`` - a and b per model, FLOPs, crossing N of the paper's 3/1000 per model class,
  the fit points and the measured-vs-predicted exhaustive time;
* ``fig_inference_time.png``, ``fig_cost_model.png``, ``profile_train_step.txt``.

``--quick`` shrinks every size (CI: well under a minute); the full run takes a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ...runtime import atomic_write_json, atomic_write_text, manifest
from ..report import PAPER_INFERENCE_RATIO
from . import ASSUMPTIONS
from .costmodel import COST_CSV_COLUMNS, NOT_DETERMINED, curve, derived_fields, fit_cost_model, paper_class_model
from .inference import (default_encoders, exhaustive_benchmark, inference_benchmark, inference_figure,
                        measure_exhaustive)
from .scale import eval_benchmark
from .shapes import CAPS_PER_IMAGE, FULL, QUICK
from .timing import Rows
from .training import training_benchmark



def cost_model_benchmark(rows: Rows, device: torch.device, sizes: dict, inference: dict, exhaustive: dict,
                         out: Path, encoders) -> dict:
    """Fit both cost models, derive the paper-class one, write the curve CSV/JSON and figure."""
    print(f"\n[5] cost model time(N, M) = a (N + M) + b N M on {device}")
    curves = inference["curves"]
    ns = np.array(curves["N"], dtype=float)
    two = fit_cost_model(ns, CAPS_PER_IMAGE * ns, curves["two_stream"])
    last = sizes["fit_ns"][-1]
    measure_exhaustive(2, device, encoders, sizes["pair_batch"])  # warm-up: the first call pays one-off costs

    repeats = sizes["fit_repeats"]

    def median_of_repeats(n):  # the median run: other processes share these cores
        runs = [measure_exhaustive(n, device, encoders, sizes["pair_batch"], count=n == last and r == 0)
                for r in range(repeats)]
        mid = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        return {**mid, "joint_flops": runs[0].get("joint_flops"), "repeat_seconds": [r["seconds"] for r in runs]}
    points = [dict(n_images=n, n_captions=CAPS_PER_IMAGE * n, **median_of_repeats(n)) for n in sizes["fit_ns"]]
    fit_args = ([p["n_images"] for p in points], [p["n_captions"] for p in points])
    one = fit_cost_model(*fit_args, [p["seconds"] for p in points])
    # stability: the same fit on each repeat alone; b must be resolved (> 0) in every one, within 2x
    b_reps = [fit_cost_model(*fit_args, [p["repeat_seconds"][r] for p in points]).b for r in range(repeats)]
    stable = min(b_reps) > 0 and max(b_reps) <= 2 * min(b_reps)
    stability = {"b_per_repeat": b_reps, "stable": stable,
                 "reason": "" if stable else ("b fitted as 0 in some repeat" if min(b_reps) == 0 else
                                              f"b varies {max(b_reps) / min(b_reps):.2g}x across repeats")}
    # FLOP/s the measured joint passes achieve on this machine (largest fit point, real captions)
    achieved = points[-1]["joint_flops"] / points[-1]["joint_s"]
    flops_pair = points[-1]["joint_flops"] / points[-1]["pairs"]
    paper, paper_info = paper_class_model(one, achieved)
    models = {"measured one-stream (d256 L2, 21 tokens)": one, "paper class (12 x 768, 100 tokens)": paper}
    n_x = exhaustive["n_images"]
    predicted = float(one.time(n_x, CAPS_PER_IMAGE * n_x))
    dev = device.type
    result = {"paper_ratio": PAPER_INFERENCE_RATIO, "caps_per_image": CAPS_PER_IMAGE, "device": dev,
              "threads": torch.get_num_threads(), "two_stream": {"a": two.a, "b": two.b},
              "two_stream_points": [{"n_images": int(n), "n_captions": int(CAPS_PER_IMAGE * n), "seconds": t}
                                    for n, t in zip(curves["N"], curves["two_stream"])],
              "one_stream_points": points, "one_stream_fit_stability": stability,
              "one_stream_flops_per_pair": flops_pair, "paper_class": paper_info,
              "exhaustive_check": {"n_images": n_x, "measured_s": exhaustive["seconds"],
                                   "extrapolated_from_pair_sample_s": exhaustive["extrapolated_s"],
                                   "cost_model_predicted_s": predicted},
              "models": {}}
    for name, model in models.items():
        fields = derived_fields(two, model, PAPER_INFERENCE_RATIO, CAPS_PER_IMAGE)  # None + reason where undetermined
        n_star = fields["crossing_n_images"]
        result["models"][name] = fields
        cols = dict(device=dev, variant=name)
        rows.add("cost_model", f"{dev} {name}", "a_s_per_item", model.a, "s", "fitted, NNLS on relative error", **cols)
        rows.add("cost_model", f"{dev} {name}", "b_s_per_pair", model.b, "s", "", **cols)
        rows.add("cost_model", f"{dev} {name}", "crossing_n_images", n_star if n_star is not None else float("nan"),
                 "images", f"N where two-stream / one-stream = {PAPER_INFERENCE_RATIO} (5N captions)", **cols)
    rows.add("cost_model", f"{dev} two-stream (COOKIE)", "a_s_per_item", two.a, "s", "fitted on per-N times",
             device=dev, variant="two-stream")
    rows.add("cost_model", f"{dev} two-stream (COOKIE)", "b_s_per_pair", two.b, "s", "", device=dev,
             variant="two-stream")
    rows.add("inference", f"{dev} N={n_x} M={CAPS_PER_IMAGE * n_x} exhaustive", "one_stream_cost_model_s", predicted,
             "s", f"a (N + M) + b N M fitted at N in {list(sizes['fit_ns'])}", device=dev, n_images=n_x,
             n_captions=CAPS_PER_IMAGE * n_x, mode="exhaustive")
    table = curve(two, models, sizes["curve_ns"], CAPS_PER_IMAGE)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COST_CSV_COLUMNS)
    w.writeheader()
    for r in table:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(buf.getvalue(), out / "inference_cost_model.csv")
    atomic_write_json(manifest(None, **result), out / "inference_cost_model.json")
    cost_figure(table, result, out / "fig_cost_model.png")
    for name, m in result["models"].items():
        n_star = m["crossing_n_images"]
        print(f"  {name}: a {m['a']:.3g} s/item, b {m['b']:.3g} s/pair; ratio crosses 3/1000 at N = "
              + (f"{n_star:,.0f}" if n_star is not None else f"{NOT_DETERMINED} ({m['crossing_n_reason']})"))
    if not stable:
        print(f"  one-stream fit NOT stable across repeats: {stability['reason']}")
    return result


def cost_figure(table: list[dict], result: dict, path: Path) -> Path:
    """Ratio two-stream / one-stream against N (log-log) per one-stream model, with the paper's 3/1000."""
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name in result["models"]:
        rs = [r for r in table if r["model"] == name]
        ax.loglog([r["n_images"] for r in rs], [r["ratio"] for r in rs], "-", label=name)
        n_star = result["models"][name]["crossing_n_images"]
        if n_star:
            ax.axvline(n_star, color="grey", lw=0.6, ls=":")
    ax.axhline(result["paper_ratio"], color="k", ls="--", lw=0.8, label="paper: 3/1000")
    ax.set_xlabel("gallery size N images (5N captions)")
    ax.set_ylabel("two-stream time / one-stream time")
    ax.set_title(f"cost model a (N + M) + b N M, {result['device']} {result['threads']} threads", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.study.bench",
                                description="COOKIE systems benchmarks (see cookie_lib.study.bench).")
    p.add_argument("--quick", action="store_true", help="shrink every size (CI, < 60 s)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = QUICK if a.quick else FULL
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    print(f"cookie benchmarks ({'quick' if a.quick else 'full'}): torch {torch.__version__}, "
          f"{threads} threads (torch.get_num_threads()), device {device}")
    rows = Rows()
    rows.add("environment", "cpu", "torch_threads", threads, "threads", "torch.get_num_threads()", device="cpu")
    rows.add("environment", "cpu", "load_avg_1min_start", os.getloadavg()[0], "load",
             f"os.getloadavg() on {os.cpu_count()} CPUs: other processes share these cores", device="cpu")

    encoders = default_encoders()
    inf = inference_benchmark(rows, device, sizes, encoders)
    exh = exhaustive_benchmark(rows, device, sizes["exhaustive_n"], inf["unit_costs"], encoders)
    exh["n_images"] = sizes["exhaustive_n"]
    fig = out / "fig_inference_time.png"
    inference_figure(inf["curves"], fig, f"COOKIE retrieval time, CPU {threads} threads (one-stream extrapolated)")
    cost = cost_model_benchmark(rows, device, sizes, inf, exh, out, encoders)
    train = training_benchmark(rows, device, sizes, out)
    ev = eval_benchmark(rows, sizes["eval_images"], threads=a.threads)
    total = time.perf_counter() - t_start
    rows.add("environment", "cpu", "benchmark_wall_s", total, "s", "whole benchmark run", device="cpu")
    rows.add("environment", "cpu", "load_avg_1min_end", os.getloadavg()[0], "load", "os.getloadavg()", device="cpu")

    def inf_row(n, metric):
        return rows.get("inference", f"cpu N={n} M={CAPS_PER_IMAGE * n}", metric)

    headline = {
        "threads": threads,
        "inference": {str(n): {"two_stream_s": inf_row(n, "two_stream_s"), "one_stream_s": inf_row(n, "one_stream_s"),
                               "ratio": inf_row(n, "ratio_two_over_one"), "rerank_k10_s": inf_row(n, "rerank_k10_s"),
                               "rerank_k50_s": inf_row(n, "rerank_k50_s")} for n in sizes["ns"]},
        "paper_ratio": PAPER_INFERENCE_RATIO,
        "crossing_n_images": {k: v["crossing_n_images"] for k, v in cost["models"].items()},
        "exhaustive": cost["exhaustive_check"],
        "training_pairs_per_s": train["pairs_per_s"],
        "fraction_of_matmul_ceiling": {k: train["compute"][k] for k in ("cached", "live")},
        "matmul_ceiling_flops_per_s": train["compute"]["ceiling"],
        "eval_scale": ev,
    }
    print("\nheadline")
    for n, h in headline["inference"].items():
        print(f"  N={n:>5s}: two-stream {h['two_stream_s']:.3g} s, one-stream {h['one_stream_s']:.3g} s, "
              f"ratio {h['ratio']:.3g} (paper {PAPER_INFERENCE_RATIO:.3g}), re-rank top-10 {h['rerank_k10_s']:.3g} s, "
              f"top-50 {h['rerank_k50_s']:.3g} s")
    x = cost["exhaustive_check"]
    print(f"  one-stream exhaustive N={x['n_images']}: measured {x['measured_s']:.3g} s, extrapolated from pairs "
          f"{x['extrapolated_from_pair_sample_s']:.3g} s, cost model {x['cost_model_predicted_s']:.3g} s")
    for k, v in headline["crossing_n_images"].items():
        print(f"  ratio = 3/1000 at N = {v:,.0f} for {k}" if v is not None else
              f"  ratio = 3/1000: {NOT_DETERMINED} for {k} ({cost['models'][k]['crossing_n_reason']})")
    for k, v in headline["training_pairs_per_s"].items():
        print(f"  training {k:28s} {v:8.1f} pairs/s")
    print(f"  achieved / fp32 matmul ceiling ({headline['matmul_ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s): "
          f"cached {100 * headline['fraction_of_matmul_ceiling']['cached']:.1f} %, "
          f"live {100 * headline['fraction_of_matmul_ceiling']['live']:.1f} %")
    print(f"  eval {sizes['eval_images']} x {CAPS_PER_IMAGE * sizes['eval_images']}: {ev['seconds']:.2f} s "
          f"(matrix-product floor {ev['matmul_floor_s']:.2f} s per direction), peak RSS +{ev['delta_mib']:.0f} MiB "
          f"({'psutil sampling' if ev['psutil'] else 'ru_maxrss delta'}, fresh subprocess)")
    print(f"  total {total:.0f} s")

    bad = [r for r in rows.rows if not math.isfinite(r["value"]) and r["metric"] != "crossing_n_images"]
    if bad:
        raise RuntimeError(f"a benchmark produced a non-finite value: {bad[0]}")
    atomic_write_text(rows.csv_text(), out / "benchmarks.csv")
    atomic_write_json(manifest(None, benchmark="cookie_lib.study.bench", quick=a.quick, sizes=sizes, headline=headline,
                               assumptions=ASSUMPTIONS, rows=rows.rows), out / "benchmarks.json")
    print(f"wrote {out / 'benchmarks.csv'}, {out / 'benchmarks.json'}, {out / 'inference_cost_model.csv'}, "
          f"{out / 'inference_cost_model.json'}, {fig}, {out / 'fig_cost_model.png'}, {out / 'profile_train_step.txt'}")
    return 0


if __name__ == "__main__":
    from ...runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
