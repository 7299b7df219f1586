"""The in-memory form every image source is decoded into, once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """Decoded images of one source.

    `images` is uint8 N x C x H x W at the run's image size; `ids` are stable names
    (e.g. 'train/00042' or a relative file path) that split files refer to; `groups`
    are physical-object ids (views of one object share one); `subsets` holds the
    source's own train/test assignment where it has one ('' otherwise).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    source: str
    groups: list[str] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    # Images used whole because they have no mask; `masks` is the folder's mask mode
    # ('' for sources without masks, e.g. Fashion-MNIST).
    unmasked: list[str] = field(default_factory=list)
    masks: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not self.groups:
            self.groups = list(self.ids)
        if not self.subsets:
            self.subsets = [""] * n
        if not (self.images.shape[0] == self.labels.shape[0] == n == len(self.groups)):
            raise ValueError("ImageSet fields disagree in length")
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("ImageSet.images must be uint8 N x C x H x W")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def index_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}

    def fingerprint(self) -> str:
        """Content digest: identical pixels, labels, ids and classes give the same value."""
        h = hashlib.sha256()
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().astype("int64").tobytes())
        h.update("\n".join(self.ids).encode())
        h.update("\n".join(self.class_names).encode())
        return h.hexdigest()
