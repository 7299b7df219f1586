"""One `tune` worker process of test_postgres_tune.py, run from the checkout:

    python -m tests.distributed.pg_tune_worker <storage URL> <study name> <n_trials> <far_ood>

Runs `eibacl.tune.tune` on the tune tests' tiny trials (`tiny.tune_settings`, far-OOD set
`far_ood`: the tests give noise images) and prints one JSON line: the study's parent MLflow
run and this worker's process id.
"""

from __future__ import annotations

import json
import os
import sys

from tests import tiny


def main(storage: str, study_name: str, n_trials: int, far_ood: str) -> None:
    import torch

    torch.set_num_threads(1)
    from eibacl.tune import tune

    config = tiny.tune_config(
        pruner="none",
        register=False,
        far_ood=far_ood,
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
    )
    result = tune(config)
    print(json.dumps({"parent_run_id": result.parent_run_id, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
