"""The interface every image generator implements, and small shared checks.

A backend learns class conditioning from the real training split (`fit`), then turns real
images into variants with image-to-image diffusion (SDEdit, `img2img`). Conditioning is a
row of class weights per image: one-hot is "a photo of class k"; a row that mixes two
classes interpolates their learned embeddings (the DA-Fusion textual-inversion tokens, or
the class embeddings of the embedded DDPM).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class GeneratorBackend(Protocol):
    """A class-conditional image-to-image generator.

    Tensors: ``images`` uint8 N×C×H×W, ``labels`` int64 N, ``class_weights`` float B×K with
    rows summing to 1, one seed per image; ``img2img`` returns uint8 of the input's shape.
    The same seed gives the same output for an image whatever else is in the batch.
    """

    name: str

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        *,
        progress: bool = True,
    ) -> None: ...

    def img2img(
        self,
        images: torch.Tensor,
        class_weights: torch.Tensor,
        strength: float,
        *,
        guidance_scale: float,
        seeds: list[int],
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path, **kwargs: object) -> GeneratorBackend: ...

    def fingerprint(self) -> str: ...


def validate_strength(value: float) -> float:
    """Return ``value`` as a float if it is a valid img2img strength (in (0, 1])."""
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number in (0, 1], got {value!r}") from None
    if not (math.isfinite(strength) and 0.0 < strength <= 1.0):
        raise ValueError(f"strength must be in (0, 1], got {value}")
    return strength


def parse_strengths(text: str | float | Iterable[float]) -> list[float]:
    """Parse ``"0.25,0.5,0.75,1.0"`` (or a number, or a list) into validated strengths."""
    if isinstance(text, (int, float)):
        items: list[object] = [text]
    elif isinstance(text, str):
        items = [part.strip() for part in text.split(",") if part.strip()]
    else:
        items = list(text)
    if not items:
        raise ValueError("no strength given: pass one value or a comma-separated list in (0, 1]")
    return [validate_strength(item) for item in items]  # type: ignore[arg-type]


def validate_img2img_inputs(
    images: torch.Tensor,
    class_weights: torch.Tensor,
    seeds: list[int],
    num_classes: int,
    masks: torch.Tensor | None = None,
) -> None:
    """Check the shapes, dtypes and value ranges of an ``img2img`` call."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 N×C×H×W, got {images.dtype} of shape {tuple(images.shape)}"
        )
    n = images.shape[0]
    if class_weights.ndim != 2 or class_weights.shape != (n, num_classes):
        raise ValueError(
            f"class_weights must have shape ({n}, {num_classes}) (one row per image, one column "
            f"per class), got {tuple(class_weights.shape)}"
        )
    weights = class_weights.detach().float().cpu()
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("class_weights must be finite and non-negative")
    if n and not torch.allclose(weights.sum(dim=1), torch.ones(n), atol=1e-4):
        raise ValueError("each row of class_weights must sum to 1")
    if len(seeds) != n:
        raise ValueError(f"need one seed per image: got {len(seeds)} seeds for {n} images")
    if masks is not None:
        expected = (n, 1, images.shape[2], images.shape[3])
        if tuple(masks.shape) != expected:
            raise ValueError(f"masks must have shape {expected}, got {tuple(masks.shape)}")
