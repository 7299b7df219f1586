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


@dataclass
class Prior:
    """A loaded prior: the frozen DDPM, its pseudo-class map and what its card says."""

    backend: DDPMBackend
    pseudo: PseudoClasses
    info: dict[str, Any]
    folder: Path

    @property
    def card(self) -> Path:
        return self.folder / CARD_FILE


def save_prior(
    folder: Path, backend: DDPMBackend, pseudo: PseudoClasses, info: dict[str, Any]
) -> None:
    """Write the prior's folder atomically (a half-written prior never looks whole)."""
    import shutil

    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    info = info | {"format_version": FORMAT_VERSION, "fingerprint": backend.fingerprint()}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        backend.save(tmp)
        save_file(pseudo.tensors(), str(tmp / PSEUDO_FILE))
        (tmp / PRIOR_FILE).write_text(json.dumps(info, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(card_text(info))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except OSError as exc:
        raise RuntimeError(
            f"prior_out={folder}: cannot write the prior there ({exc}); give a writable "
            "folder and run again (the training is kept in the cache and is not repeated)"
        ) from exc


def load_prior(folder: Path, device: str | torch.device = "cpu") -> Prior:
    """The prior in `folder`; a missing or unreadable part is one error naming the path and
    the command that retrains it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    needed = [folder / PRIOR_FILE, folder / PSEUDO_FILE, folder / "config.json"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise PriorError(folder, f"{missing[0]} is missing")
    try:
        info = json.loads((folder / PRIOR_FILE).read_text())
        backend = DDPMBackend.load(folder, device=device)
        pseudo = PseudoClasses(**load_file(str(folder / PSEUDO_FILE)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise PriorError(folder, f"it cannot be read ({type(exc).__name__}: {exc})") from exc
    if pseudo.centroids.shape[0] != backend.config.num_classes:
        raise PriorError(folder, "its pseudo-class map and its DDPM disagree on the class count")
    return Prior(backend, pseudo, info, folder)


class PriorError(ValueError):
    def __init__(self, folder: Path, problem: str):
        super().__init__(
            f"generator_prior={folder}: {problem}; retrain it with `{RETRAIN_COMMAND} -P "
            f"prior_out={folder}` (see its {CARD_FILE}), or use -P generator_prior=none"
        )


def check_fits(prior: Prior, size: int, channels: int, held_out: list[str]) -> None:
    """Refuse a prior of another image size or channel count, or whose pool holds a class
    the split holds out (its near-OOD results would be about images the prior has seen)."""
    cfg = prior.backend.config
    if (cfg.image_size, cfg.channels) != (size, channels):
        raise ValueError(
            f"generator_prior={prior.folder} works on {cfg.channels}-channel {cfg.image_size} px "
            f"images, this run's generator on {channels}-channel {size} px: set generator_size "
            f"(and image_size) to match it, or train a prior for these images "
            f"(`{RETRAIN_COMMAND} -P image_size={size} -P prior_out=<folder>`)"
        )
    seen = sorted(set(prior.info.get("pool", {}).get("classes", [])) & set(held_out))
    if seen:
        raise ValueError(
            f"generator_prior={prior.folder}: its pool holds {seen[0]!r}, a class this split "
            f"holds out (see {prior.card}); use a prior trained without it (`{RETRAIN_COMMAND} "
            "-P ood_classes=... -P prior_out=<folder>`) or -P generator_prior=none"
        )


def card_text(info: dict[str, Any]) -> str:
    """The prior's card: what it is, what it saw and excludes, and how to make it again."""
    pool, settings = info.get("pool", {}), info.get("settings", {})
    classes = ", ".join(pool.get("classes", [])) or "unknown (folder)"
    excluded = ", ".join(info.get("excluded_classes", []))
    parameters = info.get("parameters", 0)
    lines = [
        f"# Diffusion prior `{info.get('name', '')}` for the embedded DDPM",
        "",
        f"- Model: class-conditional pixel DDPM (diffusers UNet2DModel), {parameters:,} "
        f"parameters, {info.get('channels')}-channel {info.get('image_size')} px, conditioned on "
        f"{settings.get('pseudo_classes')} pseudo-classes (k-means of the pool's pixels after PCA "
        f"to {settings.get('pca_dims')} dims) plus the null row.",
        f"- Pool: {pool.get('size', 0):,} unlabelled images from `{pool.get('source')}`, digest "
        f"`{pool.get('digest', '')[:16]}`; classes it holds: {classes}.",
        "- Excludes: every test image, the split's training and validation images, and the "
        f"held-out classes {excluded}.",
        "- Other splits: a split holding out a class in the pool is refused; other `shots` or "
        "`split_seed` draw their training and validation images from the same training subset, "
        "so the prior may have seen them (never a test image).",
        f"- Training: {info.get('steps_done')} of {settings.get('steps')} steps, batch "
        f"{settings.get('batch_size')}, lr {settings.get('lr')}, EMA {settings.get('ema_decay')}, "
        f"{info.get('seconds', 0) / 60:.1f} min on {info.get('device')} (final loss "
        f"{info.get('final_loss', float('nan')):.4f}).",
        f"- Made by commit `{info.get('commit')}`, MLflow run `{info.get('run_id')}`.",
        f"- Retrain: `{info.get('command')}`",
        "",
    ]
    return "\n".join(lines)


SHIPPED = Path(__file__).resolve().parents[3] / "priors"  # the priors that ship with the project


def shipped_prior(data: str, size: int, channels: int) -> Path | None:
    """The shipped prior made for `data` at this size and channel count, if there is one."""
    for info_path in sorted(SHIPPED.glob(f"*/{PRIOR_FILE}")):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue  # a broken one is named when it is asked for by path
        if (info.get("data"), info.get("image_size"), info.get("channels")) == (
            data,
            size,
            channels,
        ):
            return info_path.parent
    return None


def resolve_prior(spec: str, data: str, size: int, channels: int) -> Path | None:
    """`generator_prior` as a folder: `none` -> None; `default` -> the shipped prior for this
    data, or None (said in one line) where none ships; anything else -> that folder."""
    text = spec.strip()
    if text == "none":
        return None
    if text != "default":
        return Path(text).expanduser()
    found = shipped_prior(data, size, channels)
    if found is None:
        log.info(
            "generator_prior=default: no prior ships for data %s at %d px, %d channel(s), so "
            "the generator learns from the shots alone (as generator_prior=none); train one "
            "with `%s -P data=%s -P prior_out=priors/<name>`",
            data,
            size,
            channels,
            RETRAIN_COMMAND,
            data,
        )
    return found
