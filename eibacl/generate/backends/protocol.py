"""The interface every image generator implements, and small shared checks.

A backend learns class conditioning from the real training split (`fit`), then turns real
images into variants with image-to-image diffusion (SDEdit, `img2img`). Conditioning is a
row of class weights per image: one-hot is "a photo of class k"; a row that mixes two
classes interpolates their learned embeddings (the DA-Fusion textual-inversion tokens, or
the class embeddings of the embedded DDPM).

Rows sum to 1. A row may carry one more column, the null (unconditional) conditioning,
and may have negative entries: an affine combination past the classes (extrapolation),
which backends rescale to the mean norm of the class conditionings so that it stays at
the scale the model was trained on. ``negative_weights`` (B x (K+1), null last; default
the null) is the negative of classifier-free guidance:
``eps = eps_neg + guidance_scale * (eps_cond - eps_neg)``.
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
        negative_weights: torch.Tensor | None = None,
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
    negative_weights: torch.Tensor | None = None,
) -> None:
    """Check the shapes, dtypes and value ranges of an ``img2img`` call."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 N×C×H×W, got {images.dtype} of shape {tuple(images.shape)}"
        )
    n = images.shape[0]
    k = num_classes
    if class_weights.ndim != 2 or class_weights.shape not in ((n, k), (n, k + 1)):
        raise ValueError(
            f"class_weights must have shape ({n}, {k}) (one row per image, one column per "
            f"class) or ({n}, {k + 1}) (the null last), got {tuple(class_weights.shape)}"
        )
    _check_rows("class_weights", class_weights)
    if negative_weights is not None:
        if tuple(negative_weights.shape) != (n, k + 1):
            raise ValueError(
                f"negative_weights must have shape ({n}, {k + 1}) (the null last), got "
                f"{tuple(negative_weights.shape)}"
            )
        _check_rows("negative_weights", negative_weights)
    if len(seeds) != n:
        raise ValueError(f"need one seed per image: got {len(seeds)} seeds for {n} images")
    if masks is not None:
        expected = (n, 1, images.shape[2], images.shape[3])
        if tuple(masks.shape) != expected:
            raise ValueError(f"masks must have shape {expected}, got {tuple(masks.shape)}")


def _check_rows(name: str, weights: torch.Tensor) -> None:
    rows = weights.detach().float().cpu()
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} must be finite")
    if len(rows) and not torch.allclose(rows.sum(dim=1), torch.ones(len(rows)), atol=1e-4):
        raise ValueError(f"each row of {name} must sum to 1")


def mix_rows(weights: torch.Tensor, table: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Conditionings (B x ...) mixed from ``table`` ((K+1) x ..., null last) by ``weights``
    (B x K or B x (K+1)); rows with a negative weight (extrapolations) are rescaled to the
    mean norm of the K class rows, position by position over the last dimension."""
    w = weights.to(table.dtype)
    mixed = torch.einsum("bk,k...->b...", w, table[: w.shape[1]])
    outside = (w < 0).any(dim=1)
    if outside.any():
        target = table[:num_classes].norm(dim=-1).mean(dim=0)  # ... (per position)
        norms = mixed[outside].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        mixed[outside] = mixed[outside] / norms * target.unsqueeze(-1)
    return mixed
