"""Fashion-MNIST: the Debian package's IDX files, else torchvision's download."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from eibacl.data.idx import read_idx
from eibacl.data.imageset import ImageSet

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data source is not on this machine; the message says how to get it."""


def candidate_dirs(cache_dir: Path) -> list[Path]:
    dirs = []
    if os.environ.get("EIBACL_FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["EIBACL_FASHION_MNIST_DIR"]))
    dirs += [DEBIAN_DIR, cache_dir / "torchvision" / "FashionMNIST" / "raw"]
    return dirs


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for pair in FILES.values() for name in pair)


def locate(cache_dir: Path, allow_download: bool = True) -> tuple[Path, str]:
    """Return the folder holding the IDX files and how it was found."""
    for directory in candidate_dirs(cache_dir):
        if _complete(directory):
            how = "debian package" if directory == DEBIAN_DIR else f"files in {directory}"
            return directory, how
    if allow_download:
        target = cache_dir / "torchvision"
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(str(target), train=train, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            raise DatasetNotFoundError(_missing_message(cache_dir, exc)) from exc
        raw = target / "FashionMNIST" / "raw"
        if _complete(raw):
            return raw, "torchvision download"
    raise DatasetNotFoundError(_missing_message(cache_dir, None))


def _missing_message(cache_dir: Path, exc: Exception | None) -> str:
    reason = f" (download failed: {exc})" if exc else ""
    return (
        "Fashion-MNIST was not found" + reason + ". Either install the Debian/Ubuntu package "
        "('sudo apt-get install dataset-fashion-mnist', which puts the IDX files in "
        f"{DEBIAN_DIR}), or run once with network so torchvision downloads it into "
        f"{cache_dir / 'torchvision'}, or set EIBACL_FASHION_MNIST_DIR to a folder with "
        + ", ".join(name for pair in FILES.values() for name in pair)
        + "."
    )


def load_fashion_mnist(cache_dir: Path) -> tuple[ImageSet, str]:
    directory, how = locate(cache_dir)
    images, labels, ids, subsets = [], [], [], []
    for subset, (image_file, label_file) in FILES.items():
        x = read_idx(directory / image_file)
        y = read_idx(directory / label_file)
        images.append(x)
        labels.append(y)
        ids += [f"{subset}/{i:05d}" for i in range(len(y))]
        subsets += [subset] * len(y)
    image_tensor = torch.from_numpy(np.concatenate(images)).unsqueeze(1).contiguous()
    label_tensor = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    imageset = ImageSet(
        images=image_tensor,
        labels=label_tensor,
        ids=ids,
        class_names=list(CLASS_NAMES),
        source=f"fashion-mnist ({how}: {directory})",
        subsets=subsets,
    )
    return imageset, how
