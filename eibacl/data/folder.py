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
`masks` says what happens without one: `auto` uses the image whole and lists it in
`ImageSet.unmasked`, `required` stops naming the file, `off` ignores every mask.
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
MASK_MODES = ("auto", "required", "off")
# PIL raises SyntaxError for a broken PNG chunk (e.g. a flipped byte in a chunk header).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


class CorruptImageError(ValueError):
    """An image file cannot be decoded (or is missing); the message names it and the fix,
    `reason` is the short form listed in a run's data report when it is skipped."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


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
            inside = rel.relative_to(class_dir.name)  # the object id never repeats the class
            object_id = str(inside.parent) if len(inside.parts) > 1 else str(inside)
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
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        row["line"] = str(number)
        row.setdefault("object_id", "")
        row.setdefault("mask", "")
        row["object_id"] = row["object_id"] or row["path"]
        row["mask"] = row["mask"] or ""
    return rows


def load_image(path: Path, mask_path: Path | None, size: int) -> np.ndarray:
    """Decode one image (RGB uint8 H x W x 3), masked, cropped to the object and resized."""
    return load_image_and_mask(path, mask_path, size)[0]


def load_image_and_mask(
    path: Path, mask_path: Path | None, size: int
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """`load_image`, plus the mask transformed with its image (cropped, padded, resized
    nearest; bool size x size, None without a mask file) and the side of the square crop
    in the file's own pixels (what `size` resizes from)."""
    image = _open(path, "RGB", "image", "images")
    mask = None
    if mask_path is not None:
        mask = _open(mask_path, "L", "mask", "images with unreadable masks")
        if mask.size != image.size:
            raise ValueError(
                f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image {path} is "
                f"{image.size[0]}x{image.size[1]}: masks must have their image's size"
            )
        mask = np.asarray(mask) > 0
        box = mask_box(mask)
        image = crop(np.asarray(image) * mask[..., None], box)
        mask = crop(mask, box)
    else:
        image = np.asarray(image)
    square = pad_to_square(image)
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    if mask is not None:
        mask_square = pad_to_square(mask[..., None].astype(np.uint8))[..., 0]
        mask = np.asarray(
            Image.fromarray(mask_square).resize((size, size), Image.Resampling.NEAREST)
        ).astype(bool)
    return np.asarray(resized), mask, square.shape[0]


def _open(path: Path, mode: str, what: str, skipped: str) -> Image.Image:
    if not path.is_file():
        raise CorruptImageError(f"{what} {path} does not exist", "missing file")
    try:
        with Image.open(path) as handle:
            return handle.convert(mode)
    except _DECODE_ERRORS as exc:
        if what == "image":
            raise CorruptImageError(
                f"cannot read image {path} ({exc}); replace or delete the file, or pass "
                "-P skip_corrupt=true to skip unreadable images",
                f"unreadable image ({exc})",
            ) from exc
        raise CorruptImageError(
            f"cannot read mask {path} ({exc}); replace or delete the mask, or pass "
            f"-P skip_corrupt=true to skip {skipped}",
            f"unreadable mask {path.name} ({exc})",
        ) from exc


def apply_mask(image: np.ndarray, mask: np.ndarray, margin: float = MASK_MARGIN) -> np.ndarray:
    """Black background, cropped to the mask's bounding box grown by `margin` of its size."""
    return crop(image * mask[..., None], mask_box(mask, margin))


def mask_box(mask: np.ndarray, margin: float = MASK_MARGIN) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the mask's bounding box grown by `margin` of its size,
    clipped to the image; None for an empty mask (the image is kept whole, all black)."""
    if not mask.any():
        return None
    rows, cols = np.where(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dy, dx = int((bottom - top) * margin), int((right - left) * margin)
    top, left = max(0, top - dy), max(0, left - dx)
    bottom, right = min(mask.shape[0], bottom + dy), min(mask.shape[1], right + dx)
    return int(top), int(bottom), int(left), int(right)


def crop(array: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    if box is None:
        return array
    top, bottom, left, right = box
    return np.ascontiguousarray(array[top:bottom, left:right])


def pad_to_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def _check_manifest_row(root: Path, row: dict[str, str]) -> None:
    """A manifest row naming a missing file is the row's mistake, not the file's."""
    for column in ("path", "mask"):
        rel = row.get(column) or ""
        if rel and not (root / rel).is_file():
            raise CorruptImageError(
                f"{root / MANIFEST} line {row['line']} names {column} {rel!r}, which does not "
                f"exist under {root}: correct or delete that row (or pass -P skip_corrupt=true "
                "to skip such rows)",
                f"manifest line {row['line']}: {column} file missing",
            )


def _check_masks_present(root: Path, entries: list[dict[str, str]]) -> None:
    """masks=required: every image needs a mask; the error names the first missing one."""
    missing = [row for row in entries if not row.get("mask")]
    if not missing:
        return
    row = missing[0]
    where = (
        f"a mask in the mask column of {root / MANIFEST} line {row['line']}"
        if "line" in row
        else str(root / MASK_DIR / Path(row["path"]).with_suffix(".png"))
    )
    raise ValueError(
        f"masks=required but {len(missing)} of {len(entries)} images have no mask, e.g. "
        f"{root / row['path']}: add {where}, or use -P masks=auto to use images without a "
        "mask whole (counted as data/unmasked)"
    )


def load_folder(root: Path, size: int, skip_corrupt: bool = False, masks: str = "auto") -> ImageSet:
    """Decode a folder; skipped images (with why) and images used without a mask are listed
    in the ImageSet so every run can count and report them."""
    if masks not in MASK_MODES:
        raise ValueError(f"masks={masks!r} is invalid: use one of {', '.join(MASK_MODES)}")
    entries = list_entries(root)
    if masks == "required":
        _check_masks_present(root, entries)
    class_names = sorted({row["label"] for row in entries})
    index = {name: i for i, name in enumerate(class_names)}
    images, labels, ids, groups, skipped, reasons, unmasked = [], [], [], [], [], [], []
    for row in entries:
        path = root / row["path"]
        try:
            if "line" in row:
                _check_manifest_row(root, row)
            mask = root / row["mask"] if row.get("mask") and masks != "off" else None
            images.append(load_image(path, mask, size))
        except CorruptImageError as exc:
            if not skip_corrupt:
                raise
            skipped.append(row["path"])
            reasons.append(exc.reason)
            continue
        if mask is None:
            unmasked.append(row["path"])
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
        skip_reasons=reasons,
        unmasked=unmasked,
        masks=masks,
    )
