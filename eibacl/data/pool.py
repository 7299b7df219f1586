"""The unlabelled pool: real images outside the split that a prior may learn from and the
retrieval control draws on (`prior_pool` = auto | none | folder:<path>).

`auto` is defined for sources with their own training subset (Fashion-MNIST): the training
subset's images of the in-distribution classes that no side of the split uses (about 29,000
at the defaults). Never a test image, never an image of a held-out class (`ood_classes`,
`ood_val_classes`), never a training or validation image. Other sources have no `auto`
pool (none is used, and that is said). A folder pool is unlabelled: its classes are not
known, so keeping held-out classes out of it is the user's part.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eibacl.config import ConfigError, check_prior_pool
from eibacl.data.folder import IMAGE_SUFFIXES, CorruptImageError, load_image
from eibacl.data.imageset import ImageSet
from eibacl.data.resize import match_channels
from eibacl.data.splits import SIDES, Split

log = logging.getLogger(__name__)
FOLDER = "folder:"


@dataclass
class UnlabelledPool:
    """Pool images (uint8 N x C x H x W at the run's size), their ids, where they come
    from, the classes they hold where known (empty for a folder) and the files skipped."""

    images: torch.Tensor
    ids: list[str]
    source: str
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """Content digest: the same pixels and ids give the same value."""
        h = hashlib.sha256()
        h.update(self.images.contiguous().numpy().tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()


def load_unlabelled_pool(spec: str, imageset: ImageSet, split: Split) -> UnlabelledPool | None:
    """The pool `spec` names for this split; None for `none` (or `auto` on a source without
    a training subset of its own, which is logged)."""
    check_prior_pool(spec)
    text = spec.strip()
    if text == "none":
        return None
    if text.startswith(FOLDER):
        root = Path(text[len(FOLDER) :].strip()).expanduser()
        return folder_pool(root, imageset.image_size, imageset.channels)
    if "train" not in set(imageset.subsets):
        log.info(
            "prior_pool=auto: %s has no training subset of its own, so no pool; give "
            "-P prior_pool=folder:<path> with unlabelled images of your domain",
            imageset.source,
        )
        return None
    return split_complement(imageset, split)


def split_complement(imageset: ImageSet, split: Split) -> UnlabelledPool:
    """The source's training-subset images of the split's ID classes on no side of it."""
    used = {image_id for side in SIDES for image_id in split.side(side)}
    allowed = {imageset.class_names.index(c) for c in split.id_classes}
    labels = imageset.labels.tolist()
    keep = [
        i
        for i, (image_id, subset) in enumerate(zip(imageset.ids, imageset.subsets))
        if subset == "train" and labels[i] in allowed and image_id not in used
    ]
    if not keep:
        raise ConfigError(
            f"prior_pool=auto is empty: every training-subset image of {split.id_classes} in "
            f"{imageset.source} is on a side of the split; use fewer shots or val_per_class, "
            "or -P prior_pool=folder:<path>"
        )
    held = sorted({labels[i] for i in keep})
    return UnlabelledPool(
        images=imageset.images[torch.tensor(keep, dtype=torch.long)],
        ids=[imageset.ids[i] for i in keep],
        source=f"{imageset.source}:train-subset-outside-split",
        classes=[imageset.class_names[y] for y in held],
    )


def folder_pool(root: Path, size: int, channels: int) -> UnlabelledPool:
    """Every image under `root` (any depth), resized and padded like folder data; unreadable
    files are skipped, counted and said in one line."""
    if not root.is_dir():
        raise ConfigError(
            f"prior_pool=folder:{root}: the folder does not exist; give a folder of unlabelled "
            "images of your domain (none of a held-out class), or -P prior_pool=none"
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images, ids, skipped = [], [], []
    for path in paths:
        try:
            images.append(torch.from_numpy(load_image(path, None, size).copy()))
        except CorruptImageError as exc:
            skipped.append(f"{path.relative_to(root)} ({exc.reason})")
            continue
        ids.append(str(path.relative_to(root)))
    if skipped:
        log.warning(
            "prior_pool=folder:%s: skipped %d unreadable of %d images (e.g. %s)",
            root,
            len(skipped),
            len(paths),
            skipped[0],
        )
    if not images:
        raise ConfigError(
            f"prior_pool=folder:{root} holds no readable image ({len(skipped)} unreadable; "
            f"suffixes {', '.join(sorted(IMAGE_SUFFIXES))}): add images or use -P prior_pool=none"
        )
    stacked = torch.stack(images).permute(0, 3, 1, 2).contiguous()
    return UnlabelledPool(
        images=match_channels(stacked, channels),
        ids=ids,
        source=f"folder:{root}",
        skipped=skipped,
    )
