#!/usr/bin/env bash
# Set up (see setup.sh), then lint, check formatting and run the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
ruff check .
ruff format --check .
python -m pytest "$@"
