"""One `tune` worker process of test_postgres_tune.py:

    python pg_tune_worker.py <storage URL> <study name> <n_trials>

Runs `eibacl.tune.tune` on tiny trials (far-OOD replaced by noise, as in tests/tune) and
prints one JSON line: the study's parent MLflow run and this worker's process id.
"""

from __future__ import annotations

import json
import os
import sys

TINY_TUNE = dict(
    shots=6,
    val_per_class=8,
    test_per_class=10,
    image_size=16,
    width=8,
    projection_dim=16,
    epochs=2,
    batch_size=16,
    warmup_epochs=1,
    eval_every=1,
    synthetic="none",
    search="temperature",
    knn_k=5,
    progress=False,
    device="cpu",
    pruner="none",
    register=False,
)


def main(storage: str, study_name: str, n_trials: int) -> None:
    import torch

    torch.set_num_threads(1)
    from dist_workers import noise_far_ood

    from eibacl.config import TuneConfig
    from eibacl.train import data
    from eibacl.tune import tune

    data.load_far_ood = noise_far_ood
    changes = {"storage": storage, "study_name": study_name, "n_trials": n_trials}
    result = tune(TuneConfig(**(TINY_TUNE | changes)))
    print(json.dumps({"parent_run_id": result.parent_run_id, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
