#!/usr/bin/env bash
# The whole replication, end to end: set up the venv, build the data, execute the numbered notebooks
# with papermill on one profile, run the benchmark, and check that every expected results file was
# (re)written by this run.   Usage: ./run_all.sh [PROFILE]   (default: profiles/default.yaml)
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=${1:-default}
PARAMS="profiles/$PROFILE.yaml"
[[ -f $PARAMS ]] || { echo "run_all: no profile $PARAMS" >&2; exit 2; }

scripts/setup_env.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
PY=.venv/bin/python
# the run-level keys, validated (an unknown key or bad value stops here, before any notebook runs)
RESULTS=$($PY -m cookie_lib.study.profile get results_dir --profile "$PARAMS")
BENCH_ARGS=$($PY -m cookie_lib.study.profile get bench_args --profile "$PARAMS")
mkdir -p notebooks/executed "$RESULTS"
stamp=$(mktemp); trap 'rm -f "$stamp"' EXIT   # files older than this were not produced by this run
t0=$(date +%s)
say() { echo "[run_all $(date +%T) +$(( $(date +%s) - t0 ))s] $*"; }

run_notebook() {
  local nb=$1 out="notebooks/executed/$PROFILE-$(basename "$1")"
  say "executing $nb -> $out"
  if ! $PY -m papermill "$nb" "$out" -k python3 -f "$PARAMS" --cwd notebooks --progress-bar; then
    say "FAILED: $nb (executed copy with the error: $out)" >&2
    exit 1
  fi
}

for nb in notebooks/0[1-5]_*.ipynb; do run_notebook "$nb"; done
say "benchmark: python -m cookie_lib.study.bench --out $RESULTS"
$PY -m cookie_lib.study.bench $BENCH_ARGS --out "$RESULTS" || { say "FAILED: benchmark" >&2; exit 1; }
run_notebook notebooks/06_results.ipynb

expected=(data_counts.csv fig_contact_sheet.png fig_loss_curves.png fig_val_curves.png
          table_loss_ablation.csv table_loss_ablation.md fig_loss_ablation.png
          table_head_ablation.csv table_head_ablation.md fig_depth.png
          table_downstream.csv table_downstream.md runs.csv frozen_baseline.json table_finetune.md
          benchmarks.csv fig_inference_time.png claims.csv claims.md summary.md manifest.json)
missing=0
for f in "${expected[@]}"; do
  if [[ ! -f $RESULTS/$f ]]; then say "MISSING: $RESULTS/$f" >&2; missing=1
  elif [[ ! $RESULTS/$f -nt $stamp ]]; then say "STALE (not written by this run): $RESULTS/$f" >&2; missing=1
  fi
done
(( missing == 0 )) || exit 1
say "done in $(( $(date +%s) - t0 )) s; results in $RESULTS/ (headline: $RESULTS/summary.md)"
