"""What one `tune` trial costs: wall time of the study and of each run it made.

    python bench/bench_tune.py                              # one trial at the defaults
    python bench/bench_tune.py --synthetic none --search temperature
    python bench/bench_tune.py --epochs 5 --generator_steps 50 --strength_grid 0.5

Any `tune` parameter can be given (same flags as entrypoints/tune.py; --n_trials
defaults to 1 here). Runs in a temporary folder with its own MLflow store, study
storage and cache (EIBACL_CACHE is kept when set, so a cached generator or synthetic set
is reused: say which in the report). Prints one line per run: generate (nested in the
first pretrain that needed the set), pretrain, probe, and the study total.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    os.environ.setdefault("EIBACL_CACHE", str(folder / "cache"))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "bench-tune")
    os.chdir(folder)

    from mlflow.tracking import MlflowClient

    from eibacl import names, tracking
    from eibacl.cli import parse_config
    from eibacl.config import TuneConfig
    from eibacl.tune import tune

    if not any(a.startswith("--n_trials") for a in argv):
        argv = [*argv, "--n_trials", "1"]
    if not any(a.startswith("--storage") for a in argv):
        argv = [*argv, "--storage", f"sqlite:///{folder / 'optuna.db'}"]
    config = parse_config(TuneConfig, argv, "bench tune")
    start = time.perf_counter()
    result = tune(config)
    total = time.perf_counter() - start
    client = MlflowClient()
    runs = client.search_runs([tracking.experiment_id()], max_results=1000)
    print(f"cache: {os.environ['EIBACL_CACHE']}  store: {os.environ['MLFLOW_TRACKING_URI']}")
    for run in sorted(runs, key=lambda r: r.info.start_time):
        seconds = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
        entry = run.data.tags.get(names.ENTRY_TAG, "?")
        trial = run.data.tags.get(names.TRIAL_TAG, "-")
        print(f"{entry:9s} trial {trial:>3s}  {seconds:8.1f} s  {run.info.status}")
    print(f"study total {total:.1f} s for {len(result.study.trials)} trial(s)")
    for trial in result.study.trials:
        print(f"trial {trial.number}: {trial.state.name} {trial.values} {trial.params}")


if __name__ == "__main__":
    main(sys.argv[1:])
