"""Checkpoints that make an interrupted run resumable, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
