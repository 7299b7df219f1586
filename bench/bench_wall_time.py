"""Wall time of entry points run as users run them: `mlflow run . -e <entry> --env-manager local`.

    python bench/bench_wall_time.py pretrain                 # cold: empty store and caches
    python bench/bench_wall_time.py pretrain --warm          # then again on the same caches
    python bench/bench_wall_time.py pretrain probe baseline  # in order, sharing the store
    python bench/bench_wall_time.py pretrain -P synthetic=none

Everything is written under --workdir (default: a new temporary folder): the MLflow
store, the artifacts and the eibacl cache, so the checkout stays clean and "cold" means
cold. Prints one line per run and the key metrics of the last run of each entry point.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_entry(entry: str, params: list[str], env: dict[str, str], cwd: Path) -> float:
    command = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    for p in params:
        command += ["-P", p]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-5000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{entry} failed with exit code {done.returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("entries", nargs="+")
    parser.add_argument("-P", dest="params", action="append", default=[])
    parser.add_argument("--warm", action="store_true", help="run each entry a second time")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eibacl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "EIBACL_CACHE": str(workdir / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MLFLOW_RUN_ID", None)
    print(f"workdir {workdir}; {os.cpu_count()} CPUs")
    for entry in args.entries:
        rounds = ("cold", "warm") if args.warm else ("cold",)
        for label in rounds:
            seconds = run_entry(entry, args.params, env, workdir)
            print(f"{entry:<9} {label}: {seconds / 60:.1f} min ({seconds:.0f} s)", flush=True)
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    shown = (
        "test/accuracy",
        "val/knn_accuracy",
        "ood/near/knn/auroc",
        "ood/far/knn/auroc",
        "quality/id/own_class_rate",
        "quality/near_ood/source_class_rate",
    )
    for run in runs:
        metrics = {k: round(v, 3) for k, v in run.data.metrics.items() if k in shown}
        entry = run.data.tags.get("eibacl.entry_point", "?")
        print(f"  {entry:<9} {run.info.run_id[:8]} {run.info.status}: {metrics}")


if __name__ == "__main__":
    main()
