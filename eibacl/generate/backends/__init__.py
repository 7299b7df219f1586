"""Generator backends: the embedded pixel DDPM and Stable Diffusion (with textual
inversion), behind the `GeneratorBackend` protocol of `protocol`.

Each backend builds itself from the run's settings (`from_settings`), fits, saves and loads
itself; this module picks the one `generator` names. Backends are imported lazily: the SD
backend pulls in transformers, which the default never needs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from eibacl.generate.backends.resized import ResizedBackend, generator_size

if TYPE_CHECKING:
    from eibacl.config import GenerateConfig
    from eibacl.data.training_data import TrainingData

log = logging.getLogger(__name__)


def backend_class(config: GenerateConfig) -> type:
    """The backend class `generator` names (imported only when asked for)."""
    if config.generator == "ddpm":
        from eibacl.generate.backends.ddpm import DDPMBackend

        return DDPMBackend
    from eibacl.generate.backends.stable_diffusion import StableDiffusionBackend

    return StableDiffusionBackend


def work_size(config: GenerateConfig, data: TrainingData) -> int:
    """The side the embedded ddpm works at (image_size for SD, which reads its own inputs)."""
    if config.generator != "ddpm":
        return data.imageset.image_size
    return generator_size(config.generator_size, data.imageset.image_size)


def _resized(backend: Any, config: GenerateConfig, data: TrainingData) -> Any:
    """The backend as the run sees it: images in and out at image_size."""
    size = work_size(config, data)
    if size == data.imageset.image_size:
        return backend
    return ResizedBackend(backend, size, data.imageset.image_size)


def build_backend(config: GenerateConfig, data: TrainingData, device: torch.device) -> Any:
    """The untrained generator these settings describe, taking images at image_size."""
    backend = backend_class(config).from_settings(config, data, device)
    return _resized(backend, config, data)


def train_backend(
    config: GenerateConfig,
    data: TrainingData,
    device: torch.device,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    progress: bool,
) -> Any:
    """The generator built and fitted on the training split's `images` (what it reads, with
    their `masks` for SD); for Stable Diffusion with `ti_embeddings`, the class tokens of an
    earlier run instead of training them."""
    names = list(data.split.id_classes)
    if config.generator == "stable-diffusion" and config.ti_embeddings:
        from eibacl.generate.backends.stable_diffusion import reuse_embeddings

        return reuse_embeddings(config, names, device)
    if config.generator == "ddpm":
        from eibacl.generate.backends.ddpm_inversion import (
            fit_on_prior,
            prior_identity,
            prior_of_run,
        )

        prior = prior_of_run(config, data, device) if prior_identity(config, data) else None
        if prior is not None:
            return _resized(fit_on_prior(prior, config, data, images, progress), config, data)
    backend = build_backend(config, data, device)
    if config.generator == "ddpm":
        from eibacl.generate.backends.estimate import say_estimate

        say_estimate(config, data, device, names)
        backend.fit(images, data.train_y, names, progress=progress)
    else:
        backend.fit(images, data.train_y, names, progress=progress, masks=masks)
    return backend


def load_backend(
    folder: Path, config: GenerateConfig, data: TrainingData, device: torch.device
) -> Any:
    """The generator saved in `folder`, on `device`, taking images at image_size."""
    kwargs: dict[str, Any] = {"device": str(device)}
    if config.generator == "stable-diffusion":
        kwargs["sd_model"] = config.sd_model
    return _resized(backend_class(config).load(folder, **kwargs), config, data)
