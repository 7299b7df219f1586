"""What `compare -P workers=N` buys: wall time of one grid in one process and in N.

    python bench/bench_compare_workers.py                  # default grid, 2 seeds, tiny sizes
    python bench/bench_compare_workers.py --workers 2 --seeds 3 --epochs 3

Runs in a temporary folder. A warm-up compare (one seed) first decodes the data and makes
the synthetic set into the shared cache, so the timed runs measure the cells alone; each
timed run then gets a fresh MLflow store (nothing is reused between them). The one-process
run uses torch's default threads (all cores), the workers one thread each, as `compare`
does. Prints the wall time of each and their ratio (the issue's goal: <= 0.6 on 2 cores).
Figures taken while other jobs share the cores say little: report the load with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TINY = dict(
    shots=6,
    val_per_class=6,
    test_per_class=10,
    image_size=16,
    width=8,
    batch_size=16,
    warmup_epochs=0,
    eval_every=0,
    generator_steps=4,
    num_synthetic=1,
    num_near_ood=1,
    inference_steps=4,
    strength="0.5",
    near_ood_recipes="class-mix",
    knn_k=5,
    near_ood_per_batch=4,
    progress=False,
    device="cpu",
    register=False,
)


def timed_compare(folder: Path, name: str, **settings: object) -> float:
    from eibacl.config import CompareConfig
    from eibacl.workflow.compare import compare

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / name / 'mlflow.db'}"
    (folder / name).mkdir(parents=True)
    os.chdir(folder / name)
    start = time.perf_counter()
    result = compare(CompareConfig(**(TINY | settings)))
    seconds = time.perf_counter() - start
    print(f"{name}: {len(result.runs)} cells in {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-compare-workers-"))
    os.environ.setdefault("EIBACL_CACHE", str(folder / "cache"))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "bench-compare-workers")
    grid = dict(epochs=args.epochs, seeds=args.seeds)
    timed_compare(folder, "warm-up", **(grid | dict(seeds=1, workers="1")))
    one = timed_compare(folder, "one-process", **(grid | dict(workers="1")))
    many = timed_compare(folder, f"{args.workers}-workers", **(grid | dict(workers=args.workers)))
    print(f"cores usable: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    print(f"workers={args.workers}: {many:.1f} s vs {one:.1f} s in one process = {many / one:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
