"""Generation beyond 32 px at 32 px cost: the generator works at `generator_size`, the
variants come back at the run's image size.

A pixel DDPM's cost grows with the square of the side (64 px: 18-31 s per training step
on 2 busy cores instead of ~1 s), so the embedded generator is trained and sampled on
images resized down to `generator_size`. A variant is then its low-resolution generated
image resized up, plus the source image's own high-frequency detail (the source minus its
down-and-up-sampled copy): plain upsampling would make every synthetic image blurry, a
cue the encoder could learn instead of the content ("blurry = synthetic = negative").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from eibacl.data.resize import resize_uint8


def _up(images: torch.Tensor, size: int) -> torch.Tensor:
    """float N x C x size x size, bilinear (antialiased when shrinking)."""
    return F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def detail(images: torch.Tensor, work_size: int) -> torch.Tensor:
    """What resizing to `work_size` and back loses: the image's high-frequency band."""
    size = images.shape[-1]
    return images.float() - _up(resize_uint8(images, work_size), size)


class ResizedBackend:
    """Wraps a `GeneratorBackend` built for `work_size` so it takes and returns images of
    `out_size` (the run's image size)."""

    def __init__(self, inner: Any, work_size: int, out_size: int) -> None:
        self.inner = inner
        self.work_size = work_size
        self.out_size = out_size
        self.name = inner.name

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        *,
        progress: bool = True,
    ) -> None:
        self.inner.fit(resize_uint8(images, self.work_size), labels, class_names, progress=progress)

    def img2img(
        self,
        images: torch.Tensor,
        class_weights: torch.Tensor,
        strength: float,
        *,
        guidance_scale: float,
        seeds: list[int],
        masks: torch.Tensor | None = None,
        negative_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        small_masks = None
        if masks is not None:
            small_masks = F.interpolate(masks.float(), size=(self.work_size,) * 2, mode="nearest")
            small_masks = small_masks.to(masks.dtype)
        small = self.inner.img2img(
            resize_uint8(images, self.work_size),
            class_weights,
            strength,
            guidance_scale=guidance_scale,
            seeds=seeds,
            masks=small_masks,
            **({"negative_weights": negative_weights} if negative_weights is not None else {}),
        )
        out = _up(small, images.shape[-1]) + detail(images, self.work_size)
        return out.round().clamp(0, 255).to(torch.uint8)

    def save(self, directory: Path) -> None:
        self.inner.save(directory)

    def fingerprint(self) -> str:
        return f"{self.inner.fingerprint()}@{self.work_size}->{self.out_size}"


def generator_size(requested: int, image_size: int) -> int:
    """The side the embedded generator works at: `requested` (0 = the run's image size),
    never above the image size."""
    return image_size if requested <= 0 else min(requested, image_size)
