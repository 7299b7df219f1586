"""How much of a metric's noise is split-to-split on multi-view folder data, at tiny size.

    python bench/bench_split_variance.py                        # 5 splits x 2 seeds
    python bench/bench_split_variance.py --splits 3 --seeds 3 --epochs 10

Makes the README's folder case (10 part classes x 12 objects x 3 views, masks;
`bench_folder_main.make_folder`) with 3 near-OOD classes and 1 validation-OOD class held out
by name, so every split keeps the same classes and moves only objects; runs `compare` with
SupCon on the modes `none` and `features` (no generator: the split's effect alone) on N
object-grouped splits, and prints `comparison/resolution.md`: the split sd, seed sd and the
split's share per metric.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", default="auto")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-split-variance-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    os.environ.setdefault("EIBACL_CACHE", str(folder / "cache"))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "bench-split-variance")
    os.chdir(folder)

    from bench.bench_folder_main import make_folder
    from eibacl import tracking
    from eibacl.config import CompareConfig
    from eibacl.workflow.compare import compare

    data = make_folder(folder / "parts")
    config = CompareConfig(
        data=f"folder:{data}",
        ood_classes="Teil disc grün,Teil ring grün,Teil square grün",  # named: the split
        ood_val_classes="Teil frame grün",  # seed then moves objects only, not classes
        shots=18,
        val_per_class=9,
        image_size=32,
        width=16,
        epochs=args.epochs,
        batch_size=32,
        warmup_epochs=0,
        eval_every=0,
        knn_k=1,
        methods="supcon",
        modes="none,features",
        seeds=args.seeds,
        splits=str(args.splits),
        workers=args.workers,
        register=False,
        progress=False,
        device="cpu",
    )
    result = compare(config)
    path = tracking.download(result.run_id, "comparison/resolution.md")
    print(Path(path).read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
