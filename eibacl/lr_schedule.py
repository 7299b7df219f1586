"""The one warm-up cosine learning-rate factor, shared by the encoder's training loop
(eibacl.train.schedule) and the embedded DDPM (eibacl.generate.backends.ddpm); it lives outside both
packages so that generate/ never imports train/."""

from __future__ import annotations

import math


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
