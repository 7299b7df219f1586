"""Augmentations applied to whole batches of tensors on the training device.

One affine `grid_sample` call does random-resized-crop and flip for the whole batch,
so augmenting costs a fraction of a training step and never touches PIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eibacl.config import DEFAULT_CROP_SCALE


@dataclass(frozen=True)
class AugmentSettings:
    scale: tuple[float, float] = (DEFAULT_CROP_SCALE, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4


def training_augmentation(crop_scale: float) -> AugmentSettings:
    """The training views' settings for a run's `crop_scale` (the rest are fixed)."""
    return AugmentSettings(scale=(crop_scale, 1.0))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]."""
    return images.float().div_(255.0)


def random_resized_crop_flip(
    x: torch.Tensor, generator: torch.Generator, settings: AugmentSettings
) -> torch.Tensor:
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    area = uniform(*settings.scale)
    log_ratio = uniform(math.log(settings.ratio[0]), math.log(settings.ratio[1]))
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=generator) < settings.flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # Crops lie inside the image, but bilinear taps at a crop's edge can reach up to half an
    # input pixel beyond the last pixel centre: "border" keeps black padding out of them.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(
    x: torch.Tensor, generator: torch.Generator, settings: AugmentSettings
) -> torch.Tensor:
    b = x.shape[0]

    def factor(strength: float) -> torch.Tensor:
        f = 1 + (torch.rand(b, generator=generator) * 2 - 1) * strength
        return f.view(b, 1, 1, 1).to(x.device, x.dtype)

    x = x * factor(settings.brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(settings.contrast) + mean
    if x.shape[1] == 3:
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * factor(settings.saturation) + grey
    return x.clamp(0, 1)


def augment(
    images: torch.Tensor, generator: torch.Generator, settings: AugmentSettings | None = None
) -> torch.Tensor:
    """One random view of each image: uint8 or [0,1] float in, [0,1] float out.

    Randomness comes from the CPU `generator` only, so a seed reproduces the views on
    any device.
    """
    settings = settings or AugmentSettings()
    x = to_float(images) if images.dtype == torch.uint8 else images
    x = random_resized_crop_flip(x, generator, settings)
    return colour_jitter(x, generator, settings)
