"""Checkpoints that make an interrupted run resumable, bit for bit.

A checkpoint holds only tensors and plain values, and is read with
`torch.load(weights_only=True)`: resume checkpoints come from a tracking server others can
write to, and a full unpickle would run whatever code a crafted file carries.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely; the message says what to do instead."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state, refusing anything but tensors and plain containers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"resume: the checkpoint {path} holds objects other than tensors and plain values, "
            "so it is not loaded (unpickling could run code); start a new run instead"
        ) from exc
