"""`prior`: train the embedded DDPM's diffusion prior on an unlabelled pool, as an MLflow run.

The run logs its parameters, the pool (digest, size, the classes it holds), the loss curve,
sample grids per pseudo-class, the judge's view of the prior's samples (how in-distribution
they look to a judge fitted on the split's real images, and how many are near-duplicates of
a pool or training image) and the seconds it took. Training checkpoints into the cache
(keyed by the settings and the pool's digest), so a run killed with -9 resumes where it
stopped when started again with the same parameters. The finished prior is written to
`prior_out` (a folder with its weights, its pseudo-class map, prior.json and CARD.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eibacl import names, tracking
from eibacl.config import ConfigError, PriorConfig
from eibacl.data.logged import log_data, pool_dataset
from eibacl.data.pool import UnlabelledPool, load_unlabelled_pool
from eibacl.data.training_data import TrainingData, prepare_data
from eibacl.device import resolve_device
from eibacl.evaluate.ood_metrics import auroc
from eibacl.generate.backends.ddpm import DDPMBackend
from eibacl.generate.backends.ddpm_prior import (
    RETRAIN_COMMAND,
    PriorSettings,
    cluster_sizes,
    pseudo_names,
    save_prior,
    train_prior,
    training_key,
)
from eibacl.generate.dafusion.grids import rows_grid_figure
from eibacl.generate.judge.judge import (
    PRIMARY_SCORER,
    add_pool,
    closest_pairs_figure,
    fit_judge,
    memorised,
)
from eibacl.paths import cache_dir
from eibacl.version import code_version

log = logging.getLogger(__name__)
SAMPLE_GUIDANCE = 3.0  # the generate default's guidance scale
GRID_CLASSES, GRID_SAMPLES = 8, 8
LOSS_WINDOW = 50  # the loss curve is logged as means over this many steps


@dataclass
class PriorResult:
    folder: Path
    run_id: str
    key: str
    steps: int
    seconds: float


def prior_settings(config: PriorConfig) -> PriorSettings:
    return PriorSettings(
        pseudo_classes=config.prior_classes,
        steps=config.prior_steps,
        max_minutes=config.max_minutes or None,
    )


def require_pool(config: PriorConfig, data: TrainingData) -> UnlabelledPool:
    pool = load_unlabelled_pool(config.prior_pool, data.imageset, data.split)
    if pool is None or len(pool) == 0:
        raise ConfigError(
            f"prior_pool={config.prior_pool} gives no images for data {config.data}: a prior "
            "needs an unlabelled pool; give -P prior_pool=folder:<path> with images of your "
            "domain (none of a held-out class)"
        )
    return pool


def run_prior(config: PriorConfig, nested: bool = False) -> PriorResult:
    """The `prior` entry point."""
    with tracking.start_run(
        run_name="prior", tags={names.ENTRY_TAG: "prior"}, nested=nested
    ) as run:
        start = time.perf_counter()
        data = prepare_data(config)
        params = dataclasses.asdict(config)
        tracking.log_params(params)
        digest = tracking.params_digest(params)
        tracking.set_tags({names.PARAMS_TAG: digest})
        tracking.end_stale_runs("prior", digest)  # an earlier one killed with -9
        log_data(data)
        pool = require_pool(config, data)
        settings = prior_settings(config)
        size, channels = data.imageset.image_size, data.imageset.channels
        key = training_key(settings, pool.digest(), size, channels)
        _log_pool(pool, key)
        device = resolve_device(config.device)
        work = cache_dir() / "priors" / key
        log.info(
            "training the prior: %d steps on %d pool images at %d px on %s, %d pseudo-classes; "
            "checkpoints in %s (a killed run resumes from them)",
            settings.steps,
            len(pool),
            size,
            device,
            settings.pseudo_classes,
            work,
        )
        backend, pseudo, labels = train_prior(
            pool.images, settings, work, device=device, progress=config.progress
        )
        _log_training(backend, labels, settings)
        judged = _judge_samples(backend, data, pool, config.prior_samples)
        folder = Path(config.prior_out).expanduser() if config.prior_out else work / "prior"
        info = _card_info(config, data, pool, backend, settings, key, run.info.run_id, device)
        save_prior(folder.resolve(), backend, pseudo, info)
        for path in sorted(folder.iterdir()):
            tracking.log_artifact(path, "prior")
        tracking.set_tags({"eibacl.prior_dir": str(folder.resolve())})
        tracking.log_metrics(judged | {"prior/run_seconds": time.perf_counter() - start})
        log.info(
            "prior written to %s (%d steps, %.1f min of training)",
            folder,
            backend.trained_steps,
            backend.train_seconds / 60,
        )
        return PriorResult(
            folder, run.info.run_id, key, backend.trained_steps, backend.train_seconds
        )


def _log_pool(pool: UnlabelledPool, key: str) -> None:
    tracking.log_params({"prior_pool_digest": pool.digest(), "prior_key": key})
    tracking.set_tags({"prior_pool_classes": ",".join(pool.classes) or "unknown (folder)"})
    tracking.log_metrics({"prior/pool_size": len(pool), "prior/pool_skipped": len(pool.skipped)})
    tracking.log_dataset(pool_dataset(pool), "prior_pool")


def _log_training(backend: DDPMBackend, labels: torch.Tensor, settings: PriorSettings) -> None:
    losses = np.asarray(backend.loss_history)
    for end in range(LOSS_WINDOW, len(losses) + 1, LOSS_WINDOW):
        tracking.log_metrics(
            {"prior/loss": float(losses[end - LOSS_WINDOW : end].mean())}, step=end
        )
    sizes = cluster_sizes(labels, settings.pseudo_classes)
    tracking.log_metrics(
        {
            "prior/steps": backend.trained_steps,
            "prior/seconds": backend.train_seconds,
            "prior/loss_final": float(losses[-LOSS_WINDOW:].mean()),
            "prior/smallest_pseudo_class": int(sizes.min()),
            "prior/largest_pseudo_class": int(sizes.max()),
        }
    )
    order = [int(i) for i in np.argsort(-sizes, kind="stable")[:GRID_CLASSES]]
    grid = sample_grid(backend, order)
    labels_ = [f"{pseudo_names(settings.pseudo_classes)[i]}\n{sizes[i]} images" for i in order]
    cols = [f"#{j + 1}" for j in range(GRID_SAMPLES)]
    figure = rows_grid_figure(grid, labels_, cols, title="Prior samples per pseudo-class")
    tracking.log_figure(figure, "samples/prior_samples.png")


def sample(backend: DDPMBackend, rows: list[int], seed: int = 0) -> torch.Tensor:
    """One sample from pure noise (strength 1.0) per entry of `rows` (pseudo-class ids)."""
    cfg = backend.config
    weights = torch.zeros(len(rows), cfg.num_classes)
    weights[torch.arange(len(rows)), torch.tensor(rows)] = 1.0
    blank = torch.zeros(len(rows), cfg.channels, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    seeds = [seed + i for i in range(len(rows))]
    return backend.img2img(blank, weights, 1.0, guidance_scale=SAMPLE_GUIDANCE, seeds=seeds)


def sample_grid(backend: DDPMBackend, classes: list[int]) -> list[list[torch.Tensor]]:
    images = sample(backend, [c for c in classes for _ in range(GRID_SAMPLES)])
    return [list(images[i * GRID_SAMPLES : (i + 1) * GRID_SAMPLES]) for i in range(len(classes))]


def _judge_samples(
    backend: DDPMBackend, data: TrainingData, pool: UnlabelledPool, count: int
) -> dict[str, float]:
    """How the prior's samples look to the judge fitted on the split's real images: AUROC of
    real ID validation vs samples on its primary score (0.5 = indistinguishable), the share
    that stays in distribution, and the share that near-duplicates a training or pool image."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, backend.config.num_classes, (count,), generator=gen).tolist()
    images = sample(backend, rows, seed=10_000)
    near_val, _ = data.side("ood_val")
    judge = fit_judge(data.train_x, data.train_y, data.val_x, data.num_classes, near_val_x=near_val)
    add_pool(judge, pool.images, calibration=data.val_x)
    scores = judge.scores(images)[PRIMARY_SCORER]
    real = judge.val_scores[PRIMARY_SCORER]
    tracking.log_figure(closest_pairs_figure(judge, images), "samples/closest_pairs.png")
    return {
        "prior/judge/auroc_real_vs_samples": auroc(real, scores, name="prior samples"),
        "prior/judge/stays_id_rate": float(np.mean(scores >= judge.id_threshold(PRIMARY_SCORER))),
        "prior/judge/memorised_rate": float(np.mean(memorised(judge, images))),
    }


def _card_info(
    config: PriorConfig,
    data: TrainingData,
    pool: UnlabelledPool,
    backend: DDPMBackend,
    settings: PriorSettings,
    key: str,
    run_id: str,
    device: torch.device,
) -> dict:
    split = data.split
    name = Path(config.prior_out).name if config.prior_out else key
    command = f"{RETRAIN_COMMAND} -P data={config.data} -P image_size={config.image_size}"
    if config.max_minutes:
        command += f" -P max_minutes={config.max_minutes:g}"
    return {
        "name": name,
        "data": config.data,
        "image_size": backend.config.image_size,
        "channels": backend.config.channels,
        "parameters": backend.num_parameters,
        "pool": {
            "source": pool.source,
            "size": len(pool),
            "digest": pool.digest(),
            "classes": pool.classes,
        },
        "excluded_classes": list(split.ood_classes) + list(split.ood_val_classes),
        "settings": dataclasses.asdict(settings),
        "key": key,
        "steps_done": backend.trained_steps,
        "seconds": backend.train_seconds,
        "final_loss": float(np.mean(backend.loss_history[-LOSS_WINDOW:])),
        "device": str(device),
        "commit": code_version(),
        "command": command + (f" -P prior_out={config.prior_out}" if config.prior_out else ""),
        "run_id": run_id,
    }
