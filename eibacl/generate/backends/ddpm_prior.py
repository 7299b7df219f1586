"""A diffusion prior for the embedded DDPM: the same UNet, trained once on an unlabelled pool
with k-means pseudo-classes as its conditioning vocabulary.

Why pseudo-classes: Stable Diffusion reads class tokens through a text space it learned on
far more images than the shots; textual inversion only finds where each class sits in it.
The embedded DDPM's conditioning is one embedding row per class added to the timestep
embedding. Training the prior with one row per k-means cluster of the pool (plus the null
row, dropped in at `cond_dropout` for guidance) teaches the UNet to read a space of such rows
that spans the pool's modes; inverting a new class then means finding a row in that space
(`eibacl.generate.ddpm_inversion`), initialised from the rows of the clusters its shots fall
in. The clusters live in a PCA space of the pixels: the pool has no labels and the judge's
features are trained on the shots' labels, so pixels are the one space that reads nothing
but the pool.

A saved prior is a folder: the DDPM (`config.json`, `model.safetensors`), the pseudo-class
map (`pseudo_classes.safetensors`: PCA mean, components, centroids), `prior.json` (what it
was trained on and how) and `CARD.md` for people.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eibacl.generate.backends.ddpm import DDPMBackend

log = logging.getLogger(__name__)
PSEUDO_FILE = "pseudo_classes.safetensors"
PRIOR_FILE = "prior.json"
CARD_FILE = "CARD.md"
FORMAT_VERSION = 1
RETRAIN_COMMAND = "mlflow run . -e prior"


@dataclass(frozen=True)
class PriorSettings:
    """How a prior is trained; the DDPM's architecture is `DDPMConfig`'s default."""

    pseudo_classes: int = 32
    pca_dims: int = 32
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    max_minutes: float | None = None

    def ddpm_hyper(self) -> dict[str, Any]:
        return {
            "train_steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "warmup_steps": self.warmup_steps,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "max_minutes": self.max_minutes,
        }


@dataclass
class PseudoClasses:
    """The pixel-PCA + k-means map that assigns any image to a prior row."""

    mean: torch.Tensor  # D
    components: torch.Tensor  # P x D
    centroids: torch.Tensor  # K x P

    def project(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1).float() / 255.0
        return (flat - self.mean) @ self.components.T

    def assign(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cdist(self.project(images), self.centroids).argmin(dim=1)

    def tensors(self) -> dict[str, torch.Tensor]:
        parts = {"mean": self.mean, "components": self.components, "centroids": self.centroids}
        return {name: t.contiguous() for name, t in parts.items()}


def fit_pseudo_classes(images: torch.Tensor, k: int, dims: int, seed: int) -> PseudoClasses:
    """PCA of the pool's pixels to `dims`, then k-means with `k` clusters (scikit-learn)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if images.shape[0] < k:
        raise ValueError(
            f"the pool has {images.shape[0]} images, fewer than prior_classes={k}: give a "
            "larger pool or fewer pseudo-classes"
        )
    flat = images.reshape(images.shape[0], -1).float().numpy() / 255.0
    pca = PCA(n_components=min(dims, flat.shape[1], flat.shape[0]), random_state=seed)
    projected = pca.fit_transform(flat)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(projected)
    return PseudoClasses(
        mean=torch.from_numpy(pca.mean_).float(),
        components=torch.from_numpy(pca.components_).float(),
        centroids=torch.from_numpy(km.cluster_centers_).float(),
    )


def pseudo_names(k: int) -> list[str]:
    return [f"pseudo-{i:03d}" for i in range(k)]


def build_prior_model(
    settings: PriorSettings, image_size: int, channels: int, device: str | torch.device = "cpu"
) -> DDPMBackend:
    return DDPMBackend(
        image_size, channels, settings.pseudo_classes, device=device, **settings.ddpm_hyper()
    )


def training_key(settings: PriorSettings, pool_digest: str, image_size: int, channels: int) -> str:
    """The key of one prior's training (its checkpoint and its outputs)."""
    parts = dataclasses.asdict(settings) | {
        "pool": pool_digest,
        "image_size": image_size,
        "channels": channels,
        "version": FORMAT_VERSION,
    }
    parts.pop("max_minutes")  # a time budget does not change what a step computes
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def train_prior(
    images: torch.Tensor,
    settings: PriorSettings,
    work_dir: Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[DDPMBackend, PseudoClasses, torch.Tensor]:
    """Pseudo-classes of `images` (cached in `work_dir`), then the DDPM trained on them,
    resumable from `work_dir/checkpoint.pt`. Returns the model, the map and the labels."""
    from safetensors.torch import load_file, save_file

    work_dir.mkdir(parents=True, exist_ok=True)
    pseudo_path = work_dir / PSEUDO_FILE
    if pseudo_path.is_file():
        pseudo = PseudoClasses(**load_file(str(pseudo_path)))
    else:
        pseudo = fit_pseudo_classes(
            images, settings.pseudo_classes, settings.pca_dims, settings.seed
        )
        save_file(pseudo.tensors(), str(pseudo_path))
    labels = pseudo.assign(images)
    backend = build_prior_model(settings, images.shape[-1], images.shape[1], device)
    backend.fit(
        images,
        labels,
        pseudo_names(settings.pseudo_classes),
        progress=progress,
        checkpoint=work_dir / "checkpoint.pt",
    )
    return backend, pseudo, labels


def cluster_sizes(labels: torch.Tensor, k: int) -> np.ndarray:
    return np.bincount(labels.numpy(), minlength=k)
