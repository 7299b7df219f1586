"""Bring-your-own data (the EIBA case): a folder of class folders.

Layout (documented in the README):

    root/
      <class>/<image>.png|jpg            an image that is its own object
      <class>/<object_id>/<image>.png    several views of one physical object
      masks/<class>/.../<image>.png      optional object mask (same relative path, .png;
                                         non-zero = object), same size as its image
      manifest.csv                       optional, overrides the walk:
                                         path,label[,object_id][,mask] (paths relative to root)

With a mask the image is cropped to the object's bounding box plus a margin, the
background is set to black, and the crop is padded to a square before resizing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from eibacl.data.imageset import ImageSet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
MASK_DIR = "masks"
MANIFEST = "manifest.csv"
MASK_MARGIN = 0.1
# PIL raises SyntaxError for a broken PNG chunk (e.g. a flipped byte in a chunk header).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


class CorruptImageError(ValueError):
    """An image file cannot be decoded; the message names it."""


def list_entries(root: Path) -> list[dict[str, str]]:
    """(path, label, object_id, mask) rows from manifest.csv or from the folder walk."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist: give -P data=folder:<path> with one sub-folder "
            "per class"
        )
    manifest = root / MANIFEST
    if manifest.is_file():
        return _read_manifest(root, manifest)
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != MASK_DIR):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root)
            object_id = str(rel.parent) if len(rel.parts) > 2 else str(rel)
            mask = root / MASK_DIR / rel.with_suffix(".png")
            entries.append(
                {
                    "path": str(rel),
                    "label": class_dir.name,
                    "object_id": object_id,
                    "mask": str(mask.relative_to(root)) if mask.is_file() else "",
                }
            )
    if not entries:
        raise ValueError(
            f"data folder {root} holds no images: expected <class>/<image>.png|jpg "
            "(see the README, 'Your own images')"
        )
    return entries


def _read_manifest(root: Path, manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{manifest} needs a header with at least the columns path,label")
    for row in rows:
        row.setdefault("object_id", "")
        row.setdefault("mask", "")
        row["object_id"] = row["object_id"] or row["path"]
        row["mask"] = row["mask"] or ""
    return rows


def load_image(path: Path, mask_path: Path | None, size: int) -> np.ndarray:
    """Decode one image (RGB uint8 H x W x 3), masked, cropped to the object and resized."""
    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(
            f"cannot read image {path} ({exc}); replace or delete the file, or pass "
            "-P skip_corrupt=true to skip unreadable images"
        ) from exc
    if mask_path is not None:
        try:
            with Image.open(mask_path) as handle:
                mask = handle.convert("L")
        except _DECODE_ERRORS as exc:
            raise CorruptImageError(f"cannot read mask {mask_path} ({exc})") from exc
        if mask.size != image.size:
            raise ValueError(
                f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image {path} is "
                f"{image.size[0]}x{image.size[1]}: masks must have their image's size"
            )
        image = apply_mask(np.asarray(image), np.asarray(mask) > 0)
    else:
        image = np.asarray(image)
    square = pad_to_square(image)
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def apply_mask(image: np.ndarray, mask: np.ndarray, margin: float = MASK_MARGIN) -> np.ndarray:
    """Black background, cropped to the mask's bounding box grown by `margin` of its size."""
    if not mask.any():
        return image * 0
    image = image * mask[..., None]
    rows, cols = np.where(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dy, dx = int((bottom - top) * margin), int((right - left) * margin)
    top, left = max(0, top - dy), max(0, left - dx)
    bottom, right = min(mask.shape[0], bottom + dy), min(mask.shape[1], right + dx)
    return np.ascontiguousarray(image[top:bottom, left:right])


def pad_to_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def load_folder(root: Path, size: int, skip_corrupt: bool = False) -> ImageSet:
    entries = list_entries(root)
    class_names = sorted({row["label"] for row in entries})
    index = {name: i for i, name in enumerate(class_names)}
    images, labels, ids, groups, skipped = [], [], [], [], []
    for row in entries:
        path = root / row["path"]
        mask = root / row["mask"] if row.get("mask") else None
        try:
            images.append(load_image(path, mask, size))
        except CorruptImageError:
            if not skip_corrupt:
                raise
            skipped.append(row["path"])
            continue
        labels.append(index[row["label"]])
        ids.append(row["path"])
        groups.append(f"{row['label']}/{row['object_id']}")
    if not images:
        raise ValueError(f"no readable image in {root} ({len(skipped)} skipped as unreadable)")
    array = np.stack(images).transpose(0, 3, 1, 2)
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(array)),
        labels=torch.tensor(labels, dtype=torch.int64),
        ids=ids,
        class_names=class_names,
        source=f"folder:{root}",
        groups=groups,
        skipped=skipped,
    )
