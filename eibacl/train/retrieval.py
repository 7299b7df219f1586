"""The retrieval control (`synthetic=retrieval`): real pool images in the variants' place.

A prior's gain is only the generator's gain if it beats handing the same pool's real images
to training (Burg et al., TMLR 2023). So each training image gets the `num_synthetic` pool
images nearest to it in the judge's feature space (the reference CNN trained on the
training split, L2-normalised features, seed 0 as the judge's), labelled with its class and
used exactly like DA-Fusion variants (`alpha`, `positive_mode`). The neighbour indices are
cached per split, pool and count, so every cell of a `compare` retrieves once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from eibacl import tracking
from eibacl.config import ConfigError
from eibacl.data.logged import pool_dataset
from eibacl.data.pool import UnlabelledPool, load_unlabelled_pool
from eibacl.data.training_data import TrainingData
from eibacl.device import resolve_device
from eibacl.generate.dafusion.grids import rows_grid_figure
from eibacl.generate.judge.judge import embed_images, nearest
from eibacl.generate.judge.quality import train_reference_classifier
from eibacl.paths import cache_dir
from eibacl.train.batches import SyntheticPool

log = logging.getLogger(__name__)
SEED = 0  # the judge's reference CNN seed (fit_judge's default)
VERSION = 1  # bump when the retrieval rule changes: old caches are then ignored
GRID_ARTIFACT = "retrieval/neighbours.png"


@dataclass
class Retrieved:
    """Per training image, its k nearest pool rows and their feature distances (N x k)."""

    indices: np.ndarray
    distances: np.ndarray


def retrieval_features(
    data: TrainingData, pool: UnlabelledPool, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised judge features of the training images and of the pool images."""
    classifier = train_reference_classifier(
        data.train_x, data.train_y, data.num_classes, device=resolve_device(device), seed=SEED
    )
    norm = torch.nn.functional.normalize
    anchors = norm(embed_images(classifier, data.train_x), dim=1)
    return anchors, norm(embed_images(classifier, pool.images), dim=1)


def retrieve(data: TrainingData, pool: UnlabelledPool, k: int, device: str = "cpu") -> Retrieved:
    """The `k` nearest pool images of every training image in the judge's feature space."""
    dists, idx = nearest(*retrieval_features(data, pool, device), k)
    return Retrieved(idx.numpy(), dists.numpy())


def cached_retrieve(
    data: TrainingData, pool: UnlabelledPool, k: int, device: str = "cpu"
) -> tuple[Retrieved, str]:
    """`retrieve`, read from or written to the cache; also the key naming the result."""
    key = retrieval_key(data, pool, k)
    path = cache_dir() / "retrieval" / f"{key[:32]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            return Retrieved(saved["indices"], saved["distances"]), key
    found = retrieve(data, pool, k, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, indices=found.indices, distances=found.distances)
    os.replace(tmp, path)  # parallel cells: the last identical write wins
    return found, key


def retrieval_key(data: TrainingData, pool: UnlabelledPool, k: int) -> str:
    payload = {
        "data": data.split.source_fingerprint,
        "split": data.split.fingerprint(),
        "pool": pool.digest(),
        "k": k,
        "seed": SEED,
        "version": VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def retrieved_set(
    data: TrainingData, pool: UnlabelledPool, found: Retrieved
) -> tuple[torch.Tensor, torch.Tensor]:
    """The retrieved images (anchor by anchor) and their labels: each anchor's class."""
    flat = torch.from_numpy(found.indices.reshape(-1)).long()
    k = found.indices.shape[1]
    return pool.images[flat], data.train_y.repeat_interleave(k)


def retrieval_pool(config: Any, data: TrainingData) -> SyntheticPool:
    """The training pool of `synthetic=retrieval`: `num_synthetic` pool images per training
    image as its variants, no near-OOD images; counts, distances and a grid logged."""
    pool = load_unlabelled_pool(config.prior_pool, data.imageset, data.split)
    if pool is None:
        raise ConfigError(
            f"synthetic={config.synthetic} needs an unlabelled pool, and prior_pool="
            f"{config.prior_pool} gives none for this data: use -P prior_pool=folder:<path>"
        )
    k = config.num_synthetic
    if not 1 <= k <= len(pool):
        raise ConfigError(
            f"synthetic={config.synthetic} retrieves num_synthetic={k} pool images per training "
            f"image from {len(pool)}: use 1 <= num_synthetic <= {len(pool)}"
        )
    found, key = cached_retrieve(data, pool, k, config.device)
    variants = [pool.images[torch.from_numpy(row).long()] for row in found.indices]
    _log_retrieval(data, pool, found, key)
    return SyntheticPool(
        variants=variants,
        near_ood=data.train_x[:0],
        set_id=key[:16],
        fingerprint=key,
        counts={"id": int(found.indices.size), "near_ood": 0},
    )


def _log_retrieval(data: TrainingData, pool: UnlabelledPool, found: Retrieved, key: str) -> None:
    unique = len(np.unique(found.indices))
    log.info(
        "retrieval: %d pool images (%d distinct of %d) for %d training images, mean "
        "neighbour distance %.3f",
        found.indices.size,
        unique,
        len(pool),
        len(found.indices),
        float(found.distances.mean()),
    )
    tracking.log_params({"prior_pool_digest": pool.digest(), "retrieval_key": key})
    tracking.set_tags({"prior_pool_classes": ",".join(pool.classes) or "unknown (folder)"})
    tracking.log_dataset(pool_dataset(pool), "prior_pool")
    tracking.log_metrics(
        {
            "retrieval/count": float(found.indices.size),
            "retrieval/distinct": float(unique),
            "retrieval/pool_size": float(len(pool)),
            "retrieval/mean_distance": float(found.distances.mean()),
        }
    )
    tracking.log_figure(neighbours_figure(data, pool, found), GRID_ARTIFACT)


def neighbours_figure(
    data: TrainingData, pool: UnlabelledPool, found: Retrieved, rows: int = 8
) -> Figure:
    """One training image per row (spread over the classes), then its retrieved images."""
    picks = _one_per_class_first(data.train_y, rows)
    grid = [[data.train_x[i]] + [pool.images[j] for j in found.indices[i]] for i in picks]
    labels = [
        f"{data.split.id_classes[int(data.train_y[i])]}\nd={found.distances[i].mean():.2f}"
        for i in picks
    ]
    cols = ["training"] + [f"#{r + 1}" for r in range(found.indices.shape[1])]
    return rows_grid_figure(grid, labels, cols, title="Retrieval: nearest pool images")


def _one_per_class_first(labels: torch.Tensor, count: int) -> list[int]:
    """Up to `count` rows, cycling over the classes (first images of each class first)."""
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    picks: list[int] = []
    for depth in range(max(len(rows) for rows in by_class)):
        picks += [rows[depth] for rows in by_class if depth < len(rows)]
    return picks[:count]
