#!/usr/bin/env bash
# The whole replication, end to end, from a fresh clone:
#   1. set up .venv;  2. build the corpora (emoji, Open Clip Art, WordNet, the pre-training corpus);
#   3. train every run of the pre-registered study (two single-threaded runs at a time);
#   4. the systems benchmark;  5. execute notebooks 01-06 with papermill (they load the runs of step 3);
#   6. export the best COOKIE run for `python -m cookie_lib.search`, render the HTML report (and screenshot it
#      when Chromium runs), regenerate the README's results blocks;  7. check that every expected results file was written by this run.
# Usage: ./run_all.sh [PROFILE]   (default: profiles/default.yaml; `./run_all.sh smoke` takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=${1:-default}
PARAMS="profiles/$PROFILE.yaml"
[[ -f $PARAMS ]] || { echo "run_all: no profile $PARAMS" >&2; exit 2; }

scripts/setup_env.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
# the run-level keys, validated (an unknown key or bad value stops here, before any work starts)
RESULTS=$($PY -m cookie_lib.study.profile get results_dir --profile "$PARAMS")
BENCH_ARGS=$($PY -m cookie_lib.study.profile get bench_args --profile "$PARAMS")
BUILD=$($PY -m cookie_lib.study.profile get build_corpus --profile "$PARAMS")
EXECUTED="$RESULTS/notebooks"
mkdir -p "$EXECUTED"
stamp=$(mktemp); trap 'rm -f "$stamp"' EXIT   # files older than this were not produced by this run
t0=$(date +%s)
say() { echo "[run_all $(date +%T) +$(( $(date +%s) - t0 ))s] $*"; }

if [[ $BUILD == true ]]; then
  say "corpora: python -m cookie_lib.study.corpora build"
  $PY -m cookie_lib.study.corpora build
fi
say "study: python -m cookie_lib.study.grid study --profile $PROFILE"
$PY -m cookie_lib.study.grid study --profile "$PARAMS" --no-progress
say "benchmark: python -m cookie_lib.study.bench $BENCH_ARGS --out $RESULTS"
$PY -m cookie_lib.study.bench $BENCH_ARGS --out "$RESULTS" || { say "FAILED: benchmark" >&2; exit 1; }

rm -f "$RESULTS/claims.csv.digest"   # the claims table is computed once per run (notebook 03), then shared by 04-06
for nb in notebooks/0[1-6]_*.ipynb; do
  out="$EXECUTED/$(basename "$nb")"
  say "executing $nb -> $out"
  # the notebooks default to the smoke profile; papermill injects this one (setup reads every value from its file)
  if ! $PY -m papermill "$nb" "$out" -k python3 -p profile "$PROFILE" --cwd notebooks --no-progress-bar; then
    say "FAILED: $nb (executed copy with the error: $out)" >&2
    exit 1
  fi
done

say "check: the claims table recomputes (byte for byte, or to rounding on another CPU) from the committed per-query file"
$PY -m cookie_lib.study.verdicts recompute --per-query "$RESULTS/per_query.npz" --check "$RESULTS/claims.csv"
say "export the best COOKIE run and render the report"
$PY -m cookie_lib.study.grid export --profile "$PARAMS" --out "$RESULTS/model/cookie.pt"
$PY scripts/build_report.py "$EXECUTED" --out "$RESULTS/report"
# screenshots of the report in headless Chromium (fetched once with apt-get); where it cannot run, the run goes on
$PY scripts/screenshot_report.py "$RESULTS/report" --fetch || say "report screenshots skipped (reason above)"
if [[ $RESULTS == results ]]; then $PY scripts/update_readme.py; fi

expected=(data_counts.csv fig_contact_sheet_emoji.png fig_loss_curves.png fig_val_curves.png table_convergence.csv
          table_convergence_variants.csv fig_val_curves_variants.png
          table_loss_ablation.csv fig_loss_ablation.png table_head_ablation.csv fig_depth.png fig_embedding_space.png
          table_modality_gap.csv table_downstream.csv runs.csv fig_design_matrix.png fig_qualitative_t2i.png
          fig_qualitative_i2t.png speed_accuracy.csv fig_speed_accuracy.png benchmarks.csv inference_cost_model.json
          fig_cost_model.png claims.csv per_query.npz claims_by_claim.csv table_factorial.csv claims.md fig_claims.png summary.md manifest.json model/cookie.pt model/cookie.md
          report/index.html notebooks/06_results.ipynb)
missing=0
for f in "${expected[@]}"; do
  if [[ ! -f $RESULTS/$f ]]; then say "MISSING: $RESULTS/$f" >&2; missing=1
  elif [[ ! $RESULTS/$f -nt $stamp ]]; then say "STALE (not written by this run): $RESULTS/$f" >&2; missing=1
  fi
done
(( missing == 0 )) || exit 1
say "done in $(( $(date +%s) - t0 )) s; results in $RESULTS/ (headline: $RESULTS/summary.md, report: $RESULTS/report/index.html)"
