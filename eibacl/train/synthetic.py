"""Attach a synthetic set to a training run (the synthetic-training issue fills this in)."""

from __future__ import annotations

from typing import Any

from eibacl.train.batches import SyntheticPool
from eibacl.train.data import TrainingData


def load_pool(config: Any, data: TrainingData) -> SyntheticPool | None:
    if getattr(config, "synthetic", "none") == "none":
        return None
    raise NotImplementedError("synthetic data in training is not wired yet")
