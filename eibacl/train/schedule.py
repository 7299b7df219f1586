"""Learning-rate schedule: linear warm-up, then cosine decay to zero, per step."""

from __future__ import annotations

import torch

from eibacl.lr_schedule import warmup_cosine_factor


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps)
    )
