"""Batches of real images, with DA-Fusion replacements and near-OOD negatives.

Each source of randomness has its own generator, so `alpha=0` (no replacement) and
`near_ood_per_batch=0` give exactly the batches of a run without synthetic data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from eibacl.config import POSITIVE_MODES


@dataclass
class SyntheticPool:
    """Synthetic images aligned with the training images.

    `variants[i]` holds the in-distribution variants (uint8 K_i x C x H x W) of training
    image i; `near_ood` the near-OOD images (uint8 M x C x H x W), negatives only.
    """

    variants: list[torch.Tensor]
    near_ood: torch.Tensor
    set_id: str = ""
    fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    extra_views: torch.Tensor | None = None  # a synthetic variant per image (extra positive)
    negatives: torch.Tensor | None = None  # near-OOD, contrast-only
    synthetic_drawn: int = 0


class BatchSampler:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        pool: SyntheticPool | None = None,
        alpha: float = 0.0,
        positive_mode: str = "replace",
        near_ood_per_batch: int = 0,
        drop_last: bool = True,
    ) -> None:
        if positive_mode not in POSITIVE_MODES:
            raise ValueError(f"positive_mode={positive_mode!r}: use one of {POSITIVE_MODES}")
        self.images, self.labels = images, labels
        self.batch_size = min(batch_size, len(images))
        self.pool, self.alpha, self.positive_mode = pool, alpha, positive_mode
        self.near_ood_per_batch = near_ood_per_batch if pool is not None else 0
        self.drop_last = drop_last
        self.order_gen = torch.Generator().manual_seed(seed)
        self.synthetic_gen = torch.Generator().manual_seed(seed + 1_000_003)
        self.negative_gen = torch.Generator().manual_seed(seed + 2_000_003)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "order": self.order_gen.get_state(),
            "synthetic": self.synthetic_gen.get_state(),
            "negative": self.negative_gen.get_state(),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.order_gen.set_state(state["order"])
        self.synthetic_gen.set_state(state["synthetic"])
        self.negative_gen.set_state(state["negative"])

    def epoch(self) -> Iterator[Batch]:
        order = torch.randperm(len(self.images), generator=self.order_gen)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self._batch(idx)

    def _batch(self, idx: torch.Tensor) -> Batch:
        images, labels = self.images[idx], self.labels[idx]
        batch = Batch(images=images, labels=labels)
        if self.pool is None:
            return batch
        if self.positive_mode == "replace" and self.alpha > 0:
            batch.images, batch.synthetic_drawn = self._replace(idx, images)
        elif self.positive_mode == "extra-view":
            batch.extra_views, batch.synthetic_drawn = self._replace(idx, images, always=True)
        if self.near_ood_per_batch > 0 and len(self.pool.near_ood) > 0:
            pick = torch.randint(
                len(self.pool.near_ood), (self.near_ood_per_batch,), generator=self.negative_gen
            )
            batch.negatives = self.pool.near_ood[pick]
        return batch

    def _replace(
        self, idx: torch.Tensor, images: torch.Tensor, always: bool = False
    ) -> tuple[torch.Tensor, int]:
        """DA-Fusion's rule: with probability alpha a drawn image becomes one of its variants."""
        out = images.clone()
        coins = torch.rand(len(idx), generator=self.synthetic_gen)
        choice = torch.rand(len(idx), generator=self.synthetic_gen)
        drawn = 0
        for row, (i, coin, u) in enumerate(zip(idx.tolist(), coins, choice)):
            variants = self.pool.variants[i]
            if len(variants) and (always or coin < self.alpha):
                out[row] = variants[int(u * len(variants))]
                drawn += 1
        return out, drawn
