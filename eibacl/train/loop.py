"""The epoch loop shared by every method: schedule, metrics, checkpoints, resume."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from eibacl import distributed, names, tracking
from eibacl.config import OptimConfig
from eibacl.device import autocast
from eibacl.evaluate.scorers import knn_validation
from eibacl.train.batches import BatchSampler
from eibacl.train.checkpoint import save_checkpoint

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, dict[str, float]], None]
# CUDA speed flags (environment variables; no effect on CPU). Measured on an H200 with
# bench/bench_scaling.py: bf16 autocast gains ~10% for the small ResNet at 32 px and is within
# +-7% for resnet18 at 64-128 px; with bf16, channels-last gains ~70% for resnet18 at 128 px
# and loses 10-20% at 64 px (nothing at 32 px).
AMP_ENV = "EIBACL_AMP"  # bf16 (default) | off
CHANNELS_LAST_ENV = "EIBACL_CHANNELS_LAST"  # auto (default: images >= 96 px) | on | off
CHANNELS_LAST_MIN_SIDE = 96


def cuda_flags(device: torch.device, image_size: int) -> tuple[bool, bool]:
    """(bf16 autocast, channels-last) for training on `device` at `image_size` pixels."""
    if device.type != "cuda":
        return False, False
    amp = os.environ.get(AMP_ENV, "bf16").strip().lower() not in ("off", "0", "false", "no")
    flag = os.environ.get(CHANNELS_LAST_ENV, "auto").strip().lower()
    if flag in ("on", "1", "true", "yes"):
        return amp, True
    if flag in ("off", "0", "false", "no"):
        return amp, False
    return amp, image_size >= CHANNELS_LAST_MIN_SIDE


@dataclass
class LoopState:
    """Everything that makes epoch e+1 identical whether or not the run stopped after e."""

    epoch: int = 0  # epochs completed
    logged_steps: set[int] = field(default_factory=set)
    metrics: dict[str, float] = field(default_factory=dict)


def train_epochs(
    objective: Any,
    sampler: BatchSampler,
    optim: OptimConfig,
    device: torch.device,
    validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    resume: dict[str, Any] | None = None,
    logged_steps: set[int] | None = None,
    on_epoch: EpochCallback | None = None,
    extra_state: dict[str, Any] | None = None,
) -> LoopState:
    """Train `objective.network` for `optim.epochs` epochs, logging to the active MLflow run.

    After every epoch the full state, that epoch's metrics included, is checkpointed
    (atomically, and as the run's artifact `checkpoints/last.pt`) *before* the metrics are
    logged. Resuming logs the checkpoint's metrics when the run lacks them (a kill between
    the two), and steps already in the run are never logged again: a resumed run holds
    every epoch's metrics exactly once.

    Under torchrun the network trains in DistributedDataParallel on each rank's slice of
    the global batches (see `eibacl.distributed`); only rank 0 validates (its metrics are
    broadcast), writes the checkpoint and logs.
    """
    network = objective.network.to(device)
    amp, channels_last = cuda_flags(device, int(validation[0].shape[-1]))
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes (drop_last)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    steps_per_epoch = len(sampler)
    from eibacl.train.schedule import warmup_cosine

    scheduler = warmup_cosine(
        optimizer, optim.warmup_epochs * steps_per_epoch, optim.epochs * steps_per_epoch
    )
    augment_gen = torch.Generator().manual_seed(optim.seed + 3_000_017)
    state = LoopState(logged_steps=set(logged_steps or ()))
    if resume is not None:
        network.load_state_dict(resume["network"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        sampler.load_state(resume["sampler"])
        augment_gen.set_state(resume["augment"])
        torch.set_rng_state(resume["torch_rng"])
        state.epoch = resume["epoch"]
        state.metrics = dict(resume.get("metrics", {}))
        if state.epoch not in state.logged_steps:
            if state.metrics:
                tracking.log_metrics(state.metrics, step=state.epoch)
                state.logged_steps.add(state.epoch)
            elif distributed.is_primary():
                log.warning(
                    "resume: epoch %d's metrics are neither in the run nor in its (older) "
                    "checkpoint; that step stays missing",
                    state.epoch,
                )
    ddp = distributed.wrap(network, device)
    if ddp is not None:
        objective.ddp = ddp
    primary = distributed.is_primary()
    checkpoint_path = Path(tempfile.mkdtemp(prefix="eibacl-ckpt-")) / names.CHECKPOINT_FILE
    bar = tqdm(
        range(state.epoch + 1, optim.epochs + 1),
        desc=objective.method,
        unit="epoch",
        disable=not optim.progress or not primary,
        initial=state.epoch,
        total=optim.epochs,
    )
    for epoch in bar:
        network.train()
        start, total_loss, seen, batches, synthetic = time.perf_counter(), 0.0, 0, 0, 0
        feature_negatives = 0
        for batch in sampler.epoch():
            with autocast(device) if amp else contextlib.nullcontext():
                loss, n_images = objective(batch, augment_gen, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at epoch {epoch}: lower lr (now {optim.lr})"
                    " or raise temperature"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            seen += n_images
            batches += 1
            synthetic += batch.synthetic_drawn
            feature_negatives += getattr(objective, "last_feature_negatives", 0)
        elapsed = time.perf_counter() - start
        if ddp is not None:  # global batches: mean of the ranks' losses, images of all ranks
            total_loss, seen = distributed.all_reduce_sum([total_loss, seen])
            total_loss /= distributed.world_size()
        metrics = {
            names.TRAIN_LOSS: total_loss / max(1, batches),
            "train/lr": scheduler.get_last_lr()[0],
            "train/images_per_s": seen / max(elapsed, 1e-9),
            "train/synthetic_drawn": float(synthetic),
        }
        if getattr(objective, "feature_negatives", None) is not None:
            metrics["train/feature_negatives"] = float(feature_negatives)
        is_last = epoch == optim.epochs
        if primary and ((optim.eval_every and epoch % optim.eval_every == 0) or is_last):
            metrics[names.VAL_KNN_ACCURACY] = knn_validation(
                network.encoder, *validation, device=device
            )
        if ddp is not None:
            metrics = distributed.broadcast_object(metrics)
        state.epoch = epoch
        if primary:
            save_checkpoint(
                checkpoint_path,
                {
                    "epoch": epoch,
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state(),
                    "augment": augment_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "metrics": metrics,
                    **(extra_state or {}),
                },
            )
            tracking.log_artifact(checkpoint_path, names.CHECKPOINT_DIR)
        if epoch not in state.logged_steps:
            tracking.log_metrics(metrics, step=epoch)
            state.logged_steps.add(epoch)
        state.metrics = metrics
        bar.set_postfix(loss=f"{metrics[names.TRAIN_LOSS]:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return state
