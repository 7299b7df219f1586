"""Checkpoint and metric-logging overhead as a share of the training loop's wall time.

    python bench/bench_checkpoint_overhead.py [--epochs 30] [--checkpoint-every N]

Runs `pretrain` at the CPU defaults (only `epochs` shrunk; no synthetic data unless asked,
so no generator is trained) against a throwaway sqlite store, and times, inside the epoch
loop, the checkpoint (state dict, `torch.save`, upload as the run's artifact) and the metric
logging. Prints both, the loop's wall time and their share of it. `--checkpoint-every` is
passed only where the code has that parameter (so the script measures older code too,
which checkpointed every epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(table: dict[str, float], key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            table[key] = table.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--synthetic", default="none")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    store = Path(tempfile.mkdtemp(prefix="eibacl-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "bench-checkpoint")
    import mlflow

    from eibacl import tracking
    from eibacl.config import PretrainConfig
    from eibacl.train import loop, pretrain, runner

    mlflow.create_experiment(
        os.environ["MLFLOW_EXPERIMENT_NAME"], artifact_location=(store / "art").as_uri()
    )
    table: dict[str, float] = {}
    loop.save_and_upload = timed(table, "checkpoint", loop.save_and_upload)
    loop.checkpoint_state = timed(table, "checkpoint", loop.checkpoint_state)
    tracking.log_metrics = timed(table, "metrics", tracking.log_metrics)
    runner.train_epochs = timed(table, "loop", runner.train_epochs)
    tracking.log_encoder = lambda encoder, name="encoder": "skipped"  # not part of the loop

    changes: dict[str, Any] = dict(
        epochs=args.epochs, synthetic=args.synthetic, device=args.device, progress=False
    )
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    if args.checkpoint_every is not None and "checkpoint_every" in fields:
        changes["checkpoint_every"] = args.checkpoint_every
    config = PretrainConfig(**changes)
    pretrain.pretrain(config)
    every = getattr(config, "checkpoint_every", 1)
    overhead = table.get("checkpoint", 0.0) + table.get("metrics", 0.0)
    print(
        f"epochs {config.epochs}, checkpoint_every {every}, encoder {config.encoder} "
        f"(width {config.width}), {config.image_size} px, synthetic {config.synthetic}"
    )
    print(
        f"loop {table['loop']:.2f} s; checkpoints {table.get('checkpoint', 0.0):.2f} s; "
        f"metric logging {table.get('metrics', 0.0):.2f} s; "
        f"overhead {100 * overhead / table['loop']:.1f}% of the loop"
    )


if __name__ == "__main__":
    main()
