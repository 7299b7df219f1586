#!/usr/bin/env bash
# Set up (see setup.sh), then run the main job on the default data.
# Extra arguments go to `mlflow run`, e.g.: bash scripts/run.sh -P epochs=10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# one clear line for a store MLflow cannot write (it would retry ~100 s, then a traceback)
python -c "import sys; from eibacl.cli import check_tracking_store; sys.exit(check_tracking_store())"
mlflow run . -e pretrain --env-manager local --experiment-name eibacl "$@"
echo
echo "Results: mlflow ui --backend-store-uri sqlite:///mlflow.db   (then open http://127.0.0.1:5000)"
