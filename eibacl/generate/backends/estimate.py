"""A time estimate said before the embedded generator trains: a few steps of a throwaway
copy are timed, so the figure reflects this machine, its load and the image size."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from eibacl.config import GenerateConfig
    from eibacl.data.training_data import TrainingData

log = logging.getLogger(__name__)
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


def say_estimate(
    config: GenerateConfig, data: TrainingData, device: torch.device, names: list[str]
) -> None:
    """One line before the ddpm generator trains: how long it will take, measured here."""
    from eibacl.data.resize import resize_uint8
    from eibacl.generate.backends import work_size
    from eibacl.generate.backends.ddpm import DDPMBackend

    size = work_size(config, data)
    seconds = estimate_fit_seconds(
        lambda steps: DDPMBackend.from_settings(config, data, device, train_steps=steps),
        resize_uint8(data.train_x, size),
        data.train_y,
        names,
        config.generator_steps,
    )
    log.info(
        "training the ddpm generator: %d steps on %d images at %d px%s on %s, about %.1f min "
        "(from %d timed steps; generator_steps and generator_size set it)",
        config.generator_steps,
        len(data.train_x),
        size,
        f" (variants resized up to {data.imageset.image_size} px)"
        if size != data.imageset.image_size
        else "",
        device,
        seconds / 60,
        PROBE_STEPS,
    )
