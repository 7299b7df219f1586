"""The far-OOD set an evaluation reports on: `far_ood` = auto | mnist | folder:<path> | none.

MNIST digits are a meaningful "unknown thing" next to Fashion-MNIST, not next to photos of
car parts; so `auto` means MNIST for Fashion-MNIST and no far-OOD set for folder data (its
metrics and plots are then absent, not NaN). A folder is any tree of images (class
sub-folders are not needed; labels are not read).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from eibacl.data.folder import IMAGE_SUFFIXES, load_image
from eibacl.data.imageset import ImageSet
from eibacl.data.resize import match_channels
from eibacl.data.sources import load_far_ood

log = logging.getLogger(__name__)
FAR_OOD_CHOICES = ("auto", "mnist", "none")
_MEMORY: dict[tuple, ImageSet] = {}


def resolve_far_ood(far_ood: str, data: str) -> str:
    """'auto' -> 'mnist' for Fashion-MNIST, 'none' for any other source."""
    if far_ood != "auto":
        return far_ood
    return "mnist" if data == "fashion-mnist" else "none"


def load_far_ood_set(spec: str, image_size: int, channels: int) -> ImageSet | None:
    """The far-OOD images at the in-distribution size and channels; None for 'none'."""
    if spec == "none":
        return None
    if spec == "mnist":
        return load_far_ood(image_size, channels)
    if spec.startswith("folder:"):
        return load_image_tree(Path(spec[len("folder:") :]).expanduser(), image_size, channels)
    raise ValueError(
        f"far_ood={spec!r} is not known: use auto, mnist, none or folder:<path to images>"
    )


def load_image_tree(root: Path, image_size: int, channels: int) -> ImageSet:
    """Every image under `root` (any depth), resized and padded like folder data."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"far_ood=folder:{root}: the folder does not exist; give a folder of images of "
            "things that are none of your classes, or -P far_ood=none"
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(
            f"far_ood=folder:{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "add some or use -P far_ood=none"
        )
    key = (str(root), image_size, channels, tuple((str(p), p.stat().st_mtime_ns) for p in paths))
    if key not in _MEMORY:
        images = torch.stack(
            [
                torch.from_numpy(load_image(p, None, image_size).copy()).permute(2, 0, 1)
                for p in paths
            ]
        )
        _MEMORY[key] = ImageSet(
            images=match_channels(images.contiguous(), channels),
            labels=torch.zeros(len(paths), dtype=torch.int64),
            ids=[str(p.relative_to(root)) for p in paths],
            class_names=["far-OOD"],
            source=f"folder:{root}",
        )
    return _MEMORY[key]


def far_ood_name(spec: str) -> str:
    """How plots and logs name the set: 'MNIST' or the folder's name."""
    if spec == "mnist":
        return "MNIST"
    return Path(spec[len("folder:") :]).name if spec.startswith("folder:") else spec
