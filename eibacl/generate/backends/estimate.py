"""A time estimate said before the embedded generator trains: a few steps of a throwaway
copy are timed, so the figure reflects this machine, its load and the image size."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

PROBE_STEPS = 3


def estimate_fit_seconds(
    make: Callable[[int], Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    steps: int,
) -> float:
    """Seconds `steps` training steps will take, from `PROBE_STEPS` of `make(PROBE_STEPS)`
    (a fresh backend; the one that is then trained is untouched). Pessimistic by the first
    steps' warm-up."""
    probe = make(PROBE_STEPS)
    start = time.perf_counter()
    probe.fit(images, labels, class_names, progress=False)
    return (time.perf_counter() - start) / PROBE_STEPS * steps
