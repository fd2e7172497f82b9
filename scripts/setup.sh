#!/usr/bin/env bash
# Sets up everything from nothing: the C++ toolchain (if missing), a virtual environment in .venv, and the pinned
# Python dependencies (constraints.txt) with the CPU build of torch 2.13.0.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  echo "[setup] installing cmake and g++ (needed to build the C++ runner)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq cmake g++ make
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --progress-bar on -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU build we test with.
.venv/bin/python -m pip install --progress-bar on -q "torch==2.13.0"
.venv/bin/python -m pip install --progress-bar on -q -c constraints.txt -e ".[dev]"
.venv/bin/python -c "import torch, transformers, torch_pruning, prefect, mlflow; \
print(f'[setup] ok: torch {torch.__version__}, transformers {transformers.__version__}, prefect {prefect.__version__}, mlflow {mlflow.__version__}')"
