"""The benchmark CLI: ``python -m cookie_lib.study.bench [--quick] [--profile P] [--out results] [--threads K]``.

Writes, atomically, under ``--out``:

* ``benchmarks.csv`` - tidy rows, columns :data:`cookie_lib.study.bench.timing.COLUMNS`
  (benchmark, setting, device, n_images, n_captions, mode, variant, metric, value, unit, note);
* ``benchmarks.json`` - the same rows, headline numbers, assumptions, provenance manifest;
* ``inference_cost_model.json`` - the end-to-end retrieval timings of the trained models (every repeat),
  the fitted a and b per strategy, the held-out check, the crossing N of 3/1000 with its bootstrap
  interval for the trained cross-encoder and for the FLOP-costed paper-class joint model
  (:mod:`cookie_lib.study.bench.endtoend`);
* ``inference_cost_model.csv`` - the fitted ratio curve (model, n_images, n_captions, two_stream_s, one_stream_s, ratio);
* ``fig_inference_time.png`` (measured times and the fits), ``fig_cost_model.png`` (ratio curve with the
  crossing intervals), ``profile_train_step.txt``;
* ``profile_study_step.txt``: torch.profiler tables of the study's frozen and cached-prefix fine-tuning
  steps in fp32 and bf16 (:mod:`cookie_lib.study.bench.studystep`, timed at ``--study-threads``, default 1:
  the thread count of each of the grid's training processes).

``--quick`` shrinks every size (CI: about a minute); the full run takes a few minutes on 2 cores.
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

from ...config import native_bf16
from ...runtime import atomic_write_json, atomic_write_text, manifest
from . import ASSUMPTIONS
from .costmodel import COST_CSV_COLUMNS, NOT_DETERMINED, PAPER_INFERENCE_RATIO
from .endtoend import CAPS, STRATEGIES, fit_all, load_pipeline, measure, ratio_curve
from .scale import eval_benchmark
from .shapes import FULL, QUICK
from .projection import project_study
from .studystep import study_step_benchmark
from .timing import Rows
from .training import training_benchmark


def inference_benchmark(rows: Rows, device: torch.device, sizes: dict, out: Path, profile: str, seed: int,
                        runs_root: str = "runs") -> dict:
    """Time the trained models end to end, fit the one cost model, write its JSON/CSV and figures."""
    p = load_pipeline(profile, seed, runs_root).to(device)
    fit_ns, holdout, reps = sizes["fit_ns"], sizes["holdout_n"], sizes["repeats"]
    print(f"\n[1] retrieval end to end on {device}: {p.label}\n    N = {list(fit_ns)} fitted, N = {holdout} held out, "
          f"{reps} repeats, M = {CAPS} N captions")
    points = measure(p, device, fit_ns, holdout, reps, sizes.get("holdout_repeats"))
    res = fit_all(points, p, device, sizes["resamples"])
    dev = device.type
    for s in STRATEGIES:
        for n in sorted({r["n_images"] for r in points}):
            reps_s = [r["seconds"] for r in points if r["strategy"] == s and r["n_images"] == n]
            cols = dict(device=dev, n_images=n, n_captions=CAPS * n, mode=s, variant="trained" if p.trained else "untrained")
            role = "held out" if n == holdout else "fitted"
            rows.add("inference", f"{dev} N={n} M={CAPS * n}", f"{s}_median_s", float(np.median(reps_s)), "s",
                     f"end to end, median of {len(reps_s)} repeats ({role})", **cols)
            rows.add("inference", f"{dev} N={n} M={CAPS * n}", f"{s}_spread_s", float(np.ptp(reps_s)), "s",
                     "max - min over the repeats", show=False, **cols)
        fit = res["fits"][s]
        rows.add("cost_model", f"{dev} {s}", "a_s_per_item", fit["a"], "s", "NNLS on relative error", device=dev,
                 mode=s)
        rows.add("cost_model", f"{dev} {s}", "b_s_per_pair", fit["b"], "s", "", device=dev, mode=s)
        if s in res["holdout"]:
            rows.add("cost_model", f"{dev} {s}", "holdout_relative_error", res["holdout"][s]["relative_error"], "ratio",
                     f"predicted / measured - 1 at N = {holdout}", device=dev, mode=s)
    for name, c in res["classes"].items():
        n_star = c["crossing_n_images"]
        rows.add("cost_model", f"{dev} {name}", "crossing_n_images", n_star if n_star is not None else float("nan"),
                 "images", f"two-stream / one-stream = {PAPER_INFERENCE_RATIO} (5N captions)", device=dev, variant=name)
        iv = c["interval"]
        print(f"  {name}: ratio = 3/1000 at N = "
              + (f"{n_star:,.0f}" if n_star is not None else f"{NOT_DETERMINED} ({c['crossing_n_reason']})")
              + (f", 95 % interval [{iv['low']:,.0f}, {iv['high']:,.0f}]" if iv["low"] is not None
                 else f", interval {NOT_DETERMINED} ({iv['reason']})"))
    for s, h in res["holdout"].items():
        print(f"  held-out N = {h['n_images']}: {s:10s} measured {h['measured_s']:.3g} s, cost model "
              f"{h['predicted_s']:.3g} s ({100 * h['relative_error']:+.0f} %)")
    result = {"paper_ratio": PAPER_INFERENCE_RATIO, "caps_per_image": CAPS, "device": dev,
              "threads": torch.get_num_threads(), "pipeline": p.label, "trained": p.trained, "seed": seed,
              "profile": p.profile, "fit_ns": list(fit_ns), "holdout_n": holdout, "repeats": reps,
              "points": points, **res}
    table = ratio_curve(result, sizes["curve_ns"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COST_CSV_COLUMNS)
    w.writeheader()
    for r in table:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(buf.getvalue(), out / "inference_cost_model.csv")
    atomic_write_json(manifest(None, **result), out / "inference_cost_model.json")
    from ..views.figures import cost_figure, time_figure  # matplotlib is only needed here

    cost_figure(table, result, out / "fig_cost_model.png")
    time_figure(result, out / "fig_inference_time.png")
    return result


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def study_cost(a) -> int:
    """``--study-cost``: :func:`study_step_benchmark` and :func:`project_study` alone, with the machine they
    ran on in the record."""
    out, profile = Path(a.out), a.profile or ("smoke" if a.quick else "default")
    out.mkdir(parents=True, exist_ok=True)
    rows = Rows()
    rows.add("environment", "cpu", "load_avg_1min_start", os.getloadavg()[0], "load",
             f"os.getloadavg() on {os.cpu_count()} CPUs: other processes share these cores", device="cpu")
    study = study_step_benchmark(rows, profile, out, dict(QUICK if a.quick else FULL), threads=a.study_threads)
    rows.add("environment", "cpu", "load_avg_1min_end", os.getloadavg()[0], "load", "os.getloadavg()", device="cpu")
    for key, v in study.items():
        if isinstance(v, dict) and "pairs_per_s" in v:
            print(f"  {key:24s} {v['pairs_per_s']:7.1f} pairs/s, {100 * v['fraction_of_ceiling']:5.1f} % of its "
                  f"precision's matmul ceiling ({100 * v['fraction_of_ceiling_cpu_time']:.1f} % on CPU time)")
    print(f"\n[6] projected training time of the {profile} study on this machine (train.amp resolves to "
          f"{'bf16' if native_bf16('cpu') else 'none'} here; one thread per run)")
    proj = project_study(profile, **({"steps": 1, "warmup": 0} if a.quick else {}))
    for name, sec in proj["training_s"].items():
        rows.add("study_cost", f"{profile} study, {proj['workers']} workers", "training_s", sec, "s",
                 f"{name}: sum over {len(proj['jobs'])} runs of epochs x (steps x step s + validation s) / workers",
                 device="cpu", mode=name)
        print(f"  {name}: {sec / 60:.0f} min of training at {proj['workers']} runs at a time "
              f"({len(proj['jobs'])} runs; caches, cross-encoders and notebooks not included)")
    atomic_write_text(rows.csv_text(), out / "study_cost.csv")
    atomic_write_json(manifest(None, benchmark="cookie_lib.study.bench --study-cost", profile=profile,
                               cpu_model=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                               native_bf16=native_bf16("cpu"), study_step=study, projection=proj, rows=rows.rows),
                      out / "study_cost.json")
    print(f"wrote {out / 'study_cost.csv'}, {out / 'study_cost.json'}, {out / 'profile_study_step.txt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cookie_lib.study.bench",
                                description="COOKIE systems benchmarks (see cookie_lib.study.bench).")
    p.add_argument("--quick", action="store_true", help="shrink every size (CI, about a minute)")
    p.add_argument("--profile", default=None, help="whose trained runs to time (default: smoke with --quick, else default)")
    p.add_argument("--seed", type=int, default=None, help="the COOKIE / cross-encoder seed timed (default: the "
                   "profile's first onestream_seeds)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--fit-ns", type=int, nargs="+", default=None, help="gallery sizes N the cost model is fitted on")
    p.add_argument("--holdout-n", type=int, default=None, help="gallery size N it is checked on (not fitted)")
    p.add_argument("--repeats", type=int, nargs="+", default=None,
                   help="runs of every strategy at each fitted N (one count, or one per --fit-ns)")
    p.add_argument("--holdout-repeats", type=int, default=None, help="runs at the held-out N")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--study-threads", type=int, default=1, help="threads of the study-step benchmark (default 1, "
                   "as each of the grid's training processes)")
    p.add_argument("--study-cost", action="store_true", help="only the study's training cost on this machine: "
                   "the study-step benchmark (both precisions, each cost setting of studystep.SETTINGS) and the "
                   "projected training time of the profile's whole study (cookie_lib.study.bench.projection); writes "
                   "study_cost.csv, study_cost.json and profile_study_step.txt to --out (tens of minutes on a CPU; its "
                   "bf16 steps are slowest where bf16 is emulated)")
    a = p.parse_args(argv)
    if a.study_cost:
        return study_cost(a)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = dict(QUICK if a.quick else FULL)
    for key, v in (("fit_ns", a.fit_ns), ("holdout_n", a.holdout_n), ("repeats", a.repeats),
                   ("holdout_repeats", a.holdout_repeats)):
        if v is not None:
            sizes[key] = (v[0] if len(v) == 1 else tuple(v)) if key == "repeats" else tuple(v) if key == "fit_ns" else v
    reps = sizes["repeats"]
    counts = [reps] * len(sizes["fit_ns"]) if isinstance(reps, int) else list(reps)
    if len(sizes["fit_ns"]) < 2 or sizes["holdout_n"] in sizes["fit_ns"] or len(counts) != len(sizes["fit_ns"]) \
            or min(counts) < 1:
        raise ValueError(f"bench: need >= 2 --fit-ns, a --holdout-n not among them and --repeats >= 1 (one, or one "
                         f"per N), got {sizes['fit_ns']}, {sizes['holdout_n']}, {reps}")
    profile = a.profile or ("smoke" if a.quick else "default")
    if a.seed is None:
        from ..profile import load_run_profile
        a.seed = (load_run_profile(profile).onestream_seeds or [0])[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    print(f"cookie benchmarks ({'quick' if a.quick else 'full'}, profile {profile}): torch {torch.__version__}, "
          f"{threads} threads (torch.get_num_threads()), device {device}")
    rows = Rows()
    rows.add("environment", "cpu", "torch_threads", threads, "threads", "torch.get_num_threads()", device="cpu")
    rows.add("environment", "cpu", "load_avg_1min_start", os.getloadavg()[0], "load",
             f"os.getloadavg() on {os.cpu_count()} CPUs: other processes share these cores", device="cpu")

    inf = inference_benchmark(rows, device, sizes, out, profile, a.seed, a.runs_root)
    train = training_benchmark(rows, device, sizes, out)
    ev = eval_benchmark(rows, sizes["eval_images"], threads=a.threads)
    study = study_step_benchmark(rows, profile, out, sizes, threads=a.study_threads)
    total = time.perf_counter() - t_start
    rows.add("environment", "cpu", "benchmark_wall_s", total, "s", "whole benchmark run", device="cpu")
    rows.add("environment", "cpu", "load_avg_1min_end", os.getloadavg()[0], "load", "os.getloadavg()", device="cpu")

    medians = {s: {str(n): rows.get("inference", f"cpu N={n} M={CAPS * n}", f"{s}_median_s")
                   for n in sorted({r["n_images"] for r in inf["points"]})} for s in STRATEGIES}
    headline = {
        "threads": threads,
        "profile": profile,
        "trained": inf["trained"],
        "inference_median_s": medians,
        "paper_ratio": PAPER_INFERENCE_RATIO,
        "crossing_n_images": {k: v["crossing_n_images"] for k, v in inf["classes"].items()},
        "holdout": inf["holdout"],
        "training_pairs_per_s": train["pairs_per_s"],
        "fraction_of_matmul_ceiling": {k: train["compute"][k] for k in ("cached", "live")},
        "matmul_ceiling_flops_per_s": train["compute"]["ceiling"],
        "eval_scale": ev,
        "study_step": {k: {m: v[m] for m in ("pairs_per_s", "flops_per_step", "achieved_flops_per_s",
                                             "fraction_of_ceiling", "fraction_of_ceiling_cpu_time")}
                       for k, v in study.items() if isinstance(v, dict) and "pairs_per_s" in v},
        "study_step_ceilings_flops_per_s": study["ceilings"],
        "study_step_ceilings_cpu_time_flops_per_s": study["ceilings_cpu_time"],
        "study_step_threads": study["threads"],
    }
    print("\nheadline")
    for s, by_n in medians.items():
        print(f"  {s:10s} " + ", ".join(f"N={n}: {v:.3g} s" for n, v in by_n.items()))
    for k, v in headline["crossing_n_images"].items():
        print(f"  ratio = 3/1000 at N = {v:,.0f} for {k}" if v is not None else
              f"  ratio = 3/1000: {NOT_DETERMINED} for {k} ({inf['classes'][k]['crossing_n_reason']})")
    for k, v in headline["training_pairs_per_s"].items():
        print(f"  training {k:28s} {v:8.1f} pairs/s")
    print(f"  achieved / fp32 matmul ceiling ({headline['matmul_ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s): "
          f"cached {100 * headline['fraction_of_matmul_ceiling']['cached']:.1f} %, "
          f"live {100 * headline['fraction_of_matmul_ceiling']['live']:.1f} %")
    print(f"  eval {sizes['eval_images']} x {CAPS * sizes['eval_images']}: {ev['seconds']:.2f} s "
          f"(matrix-product floor {ev['matmul_floor_s']:.2f} s per direction), peak RSS +{ev['delta_mib']:.0f} MiB "
          f"({'psutil sampling' if ev['psutil'] else 'ru_maxrss delta'}, fresh subprocess)")
    cw, cc = study["ceilings"], study["ceilings_cpu_time"]
    print(f"  the study's step ({profile} profile, {study['threads']} thread(s); matmul ceilings fp32 "
          f"{cw['fp32'] / 1e9:.0f}, bf16 {cw['bf16'] / 1e9:.0f} GFLOP/s on wall seconds, {cc['fp32'] / 1e9:.0f} and "
          f"{cc['bf16'] / 1e9:.0f} on CPU seconds):")
    for k, v in headline["study_step"].items():
        print(f"    {k:16s} {v['pairs_per_s']:7.1f} pairs/s, {v['achieved_flops_per_s'] / 1e9:6.1f} GFLOP/s = "
              f"{100 * v['fraction_of_ceiling']:4.1f} % of its precision's ceiling "
              f"({100 * v['fraction_of_ceiling_cpu_time']:.1f} % on CPU time)")
    print(f"  total {total:.0f} s")

    bad = [r for r in rows.rows if not math.isfinite(r["value"]) and r["metric"] != "crossing_n_images"]
    if bad:
        raise RuntimeError(f"a benchmark produced a non-finite value: {bad[0]}")
    atomic_write_text(rows.csv_text(), out / "benchmarks.csv")
    atomic_write_json(manifest(None, benchmark="cookie_lib.study.bench", quick=a.quick, sizes=sizes, headline=headline,
                               assumptions=ASSUMPTIONS, rows=rows.rows), out / "benchmarks.json")
    print(f"wrote {out / 'benchmarks.csv'}, {out / 'benchmarks.json'}, {out / 'inference_cost_model.csv'}, "
          f"{out / 'inference_cost_model.json'}, {out / 'fig_inference_time.png'}, {out / 'fig_cost_model.png'}, "
          f"{out / 'profile_train_step.txt'}, {out / 'profile_study_step.txt'}")
    return 0


if __name__ == "__main__":
    from ...runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
