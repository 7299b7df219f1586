#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py); its output is also kept in $OUT (or /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python bench/gpu_check.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.txt"
