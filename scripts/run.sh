#!/usr/bin/env bash
# Set up (see setup.sh), then run the main job on the default data: the MLproject entry
# point `main` (generate -> pretrain -> probe -> baseline, reusing steps already finished with
# the same parameters and code). It ends with SupCon and CE accuracy and OOD AUROC side by
# side, the judge's line on the synthetic set, and the links to open in the MLflow UI.
# Extra arguments go to `mlflow run`, e.g.: bash scripts/run.sh -P epochs=10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# one clear line for a store MLflow cannot write (it would retry ~100 s, then a traceback)
python -c "import sys; from eibacl.cli import check_tracking_store; sys.exit(check_tracking_store())"
mlflow run . -e main --env-manager local --experiment-name eibacl "$@"
