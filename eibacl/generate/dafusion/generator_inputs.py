"""What the generator reads: the training images at the generator's own size, with masks.

The encoder's images are decoded at `image_size`; Stable Diffusion works at 512 px (its
model's sample size). Upsampling the encoder's images would hand it blurred crops, so the
generator gets the same crop taken from the source file at its size: for folder data the
file is decoded again (mask applied, cropped to the object, padded to a square) and resized
directly to the generator's side, its mask file transformed the same way (nearest) and grown
by `mask_dilation` pixels; for Fashion-MNIST the 28 px image is resized directly. The
variants come back at the generator's size and are resized to `image_size` like real
images (bilinear, antialiased).

Memory stays bounded: the crops are written once to a content-addressed cache
(`<cache>/generator_sources/<key>/`, keyed like the data cache by the source files, the
training ids and the size) and read back memory-mapped, so only the batches in use are
in memory (the masks are grown when written, so they stay on disk too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eibacl.data.folder import list_entries, load_image_and_mask
from eibacl.data.resize import resize_uint8
from eibacl.data.sources import load_source
from eibacl.data.training_data import TrainingData
from eibacl.paths import cache_dir

log = logging.getLogger(__name__)
MASK_KINDS = ("file", "threshold", "none")
FASHION_MNIST_PX = 28
_VERSION = 1


@dataclass
class GeneratorInputs:
    """The training split as the generator sees it (rows in `data.train_ids` order).

    `images`: uint8 N x C x S x S (S = `source_px`), memory-mapped; `masks`: uint8
    N x 1 x S x S, 1 = the region to regenerate, or None; `mask_kind`: file, threshold or
    none; `native_px`: median side of the crops in the source files; `unmasked`: training
    images without a mask file (regenerated whole) when `mask_kind` is file.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    mask_kind: str
    source_px: int
    native_px: int
    unmasked: int = 0

    def describe(self, image_size: int) -> str:
        how = "resized directly" if self.native_px != self.source_px else "as they are"
        masks = {
            "file": "the mask files",
            "threshold": "non-black pixels (no mask files)",
            "none": "none (plain img2img)",
        }[self.mask_kind]
        return (
            f"the generator reads the {len(self.images)} training images at {self.source_px} px "
            f"(source crops of ~{self.native_px} px {how}, variants resized to {image_size} px); "
            f"inpainting masks: {masks}"
            + (f"; {self.unmasked} without a mask file regenerated whole" if self.unmasked else "")
        )


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow binary N x 1 x H x W masks by `pixels` on each side (a square maximum filter of
    side 2 * pixels + 1, as DA-Fusion's `maximum_filter`)."""
    if pixels <= 0:
        return masks
    grown = F.max_pool2d(masks.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    return grown.to(masks.dtype)


def threshold_masks(images: torch.Tensor) -> torch.Tensor:
    """Objects on a black background without mask files (Fashion-MNIST): mask = non-black."""
    return (images.amax(dim=1, keepdim=True) > 0).to(torch.uint8)


def load_generator_inputs(
    data: TrainingData, size: int, *, use_masks: bool, mask_dilation: int
) -> GeneratorInputs:
    """The training images at `size` px with their masks (cached; see the module text)."""
    spec = str(data.split.params.get("data", "fashion-mnist"))
    folder = _cache_folder(data, spec, size, mask_dilation)
    if not (folder / "COMPLETE").is_file():
        _write(folder, data, spec, size, mask_dilation)
    meta = json.loads((folder / "meta.json").read_text())
    images = torch.from_numpy(np.load(folder / "images.npy", mmap_mode="c"))
    kind = meta["mask_kind"] if use_masks else "none"
    masks = None
    if kind != "none":
        masks = torch.from_numpy(np.load(folder / "masks.npy", mmap_mode="c"))
    unmasked = meta["unmasked"] if kind == "file" else 0
    return GeneratorInputs(images, masks, kind, size, int(meta["native_px"]), unmasked)


def _cache_folder(data: TrainingData, spec: str, size: int, mask_dilation: int) -> Path:
    parts = {
        "v": _VERSION,
        "data": data.split.source_fingerprint,
        "files": _file_stats(spec),
        "masks": str(data.split.params.get("masks", "auto")),
        "train": data.split.train,
        "size": size,
        "dilation": mask_dilation,
        "channels": data.imageset.channels,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "generator_sources" / key


def _file_stats(spec: str) -> list:
    if not spec.startswith("folder:"):
        return []
    root = Path(spec[len("folder:") :]).expanduser()
    stats = []
    for row in list_entries(root):
        for rel in (row["path"], row.get("mask") or ""):
            if rel and (root / rel).is_file():
                stat = (root / rel).stat()
                stats.append((rel, stat.st_size, stat.st_mtime_ns))
    return stats


def _write(folder: Path, data: TrainingData, spec: str, size: int, dilation: int) -> None:
    """Decode the training images one at a time into memory-mapped files, masks grown by
    `dilation`, then mark the folder complete (an interrupted write is redone)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, c = len(data.split.train), data.imageset.channels
    images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, c, size, size))
    masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, 1, size, size))
    if spec.startswith("folder:"):
        root = Path(spec[len("folder:") :]).expanduser()
        meta = _decode_folder(root, data, size, images, masks, dilation)
    else:
        meta = _decode_native(spec, data, size, images, masks, dilation)
    images.flush()
    masks.flush()
    del images, masks
    (tmp / "meta.json").write_text(json.dumps(meta))
    (tmp / "COMPLETE").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _decode_native(
    spec: str, data: TrainingData, size: int, out: np.ndarray, masks: np.ndarray, dilation: int
) -> dict:
    """Sources without files of their own (Fashion-MNIST): the native images, resized, and
    their non-black pixels as masks (objects on a black background)."""
    native = load_source(spec, FASHION_MNIST_PX, cache_dir())
    index = native.index_of()
    rows = torch.tensor([index[i] for i in data.split.train], dtype=torch.long)
    for lo in range(0, len(rows), 64):
        batch = resize_uint8(native.images[rows[lo : lo + 64]], size)
        out[lo : lo + len(batch)] = batch.numpy()
        masks[lo : lo + len(batch)] = dilate(threshold_masks(batch), dilation).numpy()
    return {"native_px": FASHION_MNIST_PX, "mask_kind": "threshold", "unmasked": 0}


def _decode_folder(
    root: Path, data: TrainingData, size: int, images: np.ndarray, masks: np.ndarray, dilation: int
) -> dict:
    """Folder data: each training file decoded again at `size`, with its mask file."""
    rows = {row["path"]: row for row in list_entries(root)}
    use_files = str(data.split.params.get("masks", "auto")) != "off"
    sides, unmasked = [], 0
    for i, image_id in enumerate(data.split.train):
        row = rows[image_id]
        mask_path = root / row["mask"] if row.get("mask") and use_files else None
        image, mask, side = load_image_and_mask(root / row["path"], mask_path, size)
        if mask is not None and not mask.any():
            raise ValueError(
                f"mask {mask_path} is empty after cropping and resizing to {size} px (no object "
                f"pixel left): fix or delete the mask file, or pass -P use_masks=false"
            )
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
        if data.imageset.channels == 1:
            pixels = pixels.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        images[i] = pixels[0].numpy()
        if mask is None:
            masks[i, 0] = 1
        else:
            grown = dilate(torch.from_numpy(mask[None, None].astype(np.uint8)), dilation)
            masks[i] = grown[0].numpy()
        unmasked += mask is None
        sides.append(side)
    return {
        "native_px": int(np.median(sides)) if sides else size,
        "mask_kind": "file" if unmasked < len(sides) else "none",
        "unmasked": unmasked,
    }
