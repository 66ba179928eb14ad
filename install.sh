#!/usr/bin/env bash
# Set up a3d-mesh in ./.venv on a CPU machine (idempotent). GPU machines: see README "GPU set-up".
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# The Khronos glTF validator (export tests) and Google's <model-viewer> (the run page's 3D view).
# One npm call for both: a --no-save install prunes every package it was not given.
if command -v npm >/dev/null 2>&1 && { [ ! -d node_modules/gltf-validator ] || [ ! -d node_modules/@google/model-viewer ]; }; then
  npm install --no-save --no-audit --no-fund --silent gltf-validator @google/model-viewer >/dev/null
fi
echo "a3d-mesh installed in $(pwd)/.venv"
