"""One `tune` worker process of test_postgres_tune.py:

    python -m tests.distributed.pg_tune_worker <storage URL> <study name> <n_trials>

Runs `eibacl.tune.tune` on tiny trials (far-OOD replaced by noise, as in tests/tune) and
prints one JSON line: the study's parent MLflow run and this worker's process id.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def tiny_tune() -> dict:
    """The tune tests' tiny settings (tests/tune/conftest.py), without pruning or registry."""
    spec = importlib.util.spec_from_file_location(
        "tune_fixtures", HERE.parent / "tune" / "conftest.py"
    )
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    return fixtures.TINY_TUNE | {"pruner": "none", "register": False}


def main(storage: str, study_name: str, n_trials: int) -> None:
    import torch

    torch.set_num_threads(1)
    from eibacl.config import TuneConfig
    from eibacl.train import data
    from eibacl.tune import tune
    from tests.distributed.dist_workers import noise_far_ood

    data.load_far_ood_set = noise_far_ood
    changes = {"storage": storage, "study_name": study_name, "n_trials": n_trials}
    result = tune(TuneConfig(**(tiny_tune() | changes)))
    print(json.dumps({"parent_run_id": result.parent_run_id, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
