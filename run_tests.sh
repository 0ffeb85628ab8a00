#!/usr/bin/env bash
# Set up the venv if needed, then run the test suite and execute every notebook on the smoke profile.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/python -m pytest tests/ -q --durations=10 "$@"
.venv/bin/python -m pytest --nbval-lax --nbval-current-env notebooks/[0-9]*.ipynb -q -p no:cacheprovider
