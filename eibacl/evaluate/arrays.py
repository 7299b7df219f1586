"""The one conversion between torch tensors and NumPy arrays that the metrics, scorers,
probe and plots accept interchangeably (detached, on the CPU)."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike


def as_numpy(x: torch.Tensor | ArrayLike, dtype: DTypeLike = None) -> np.ndarray:
    """`x` as a NumPy array (a tensor detached and copied to the CPU; bf16/fp16 as float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def as_tensor(
    x: torch.Tensor | ArrayLike, dtype: torch.dtype, device: str | torch.device | None = None
) -> torch.Tensor:
    """`x` as a detached tensor of `dtype` (on `device`; a tensor stays where it is if None)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype)
