"""Learning-rate schedule: linear warm-up, then cosine decay to zero, per step."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, progress: float | None = None
) -> float:
    """The learning-rate factor at `step`: linear warm-up, then cosine from 1 to 0.

    `progress` (0..1) replaces the step count's share of the decay, for loops that stop on
    a time budget as well (the embedded ddpm): the decay follows whichever is further spent.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if progress is not None:
        done = max(done, progress)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps)
    )
