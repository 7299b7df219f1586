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
from eibacl.train.stopping import StopFlag, Terminated, deferred_sigterm

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


@dataclass
class Optimisation:
    """What a step changes besides the weights: optimiser, learning-rate schedule and the
    generator of the batch augmentations. All of it is checkpointed."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment_gen: torch.Generator


@dataclass
class EpochTotals:
    """What one epoch's batches add up to, before they become metrics."""

    loss: float = 0.0
    images: int = 0
    batches: int = 0
    synthetic: int = 0
    feature_negatives: int = 0
    seconds: float = 0.0


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

    Every `optim.checkpoint_every` epochs, after the last epoch and on SIGTERM (which
    finishes the epoch in progress first, see `eibacl.train.stopping`) the full state, that
    epoch's metrics included, is checkpointed (atomically, and as the run's artifact
    `checkpoints/last.pt`) *before* the metrics are logged. Resuming continues from the
    newest checkpoint; steps already in the run are never logged again (the epochs after
    the checkpoint are trained again, identically), and the checkpoint's metrics are logged
    when the run lacks them (a kill between the two): a resumed run holds every epoch's
    metrics exactly once.

    Under torchrun the network trains in DistributedDataParallel on each rank's slice of
    the global batches (see `eibacl.distributed`); only rank 0 validates (its metrics are
    broadcast), writes the checkpoint and logs.
    """
    network, amp = place_network(objective.network, device, image_size=validation[0].shape[-1])
    opt = make_optimisation(network, optim, steps_per_epoch=len(sampler))
    state = LoopState(logged_steps=set(logged_steps or ()))
    if resume is not None:
        restore(resume, network, opt, sampler, state)
    ddp = distributed.wrap(network, device)
    if ddp is not None:
        objective.ddp = ddp
    primary = distributed.is_primary()
    checkpoint_path = Path(tempfile.mkdtemp(prefix="eibacl-ckpt-")) / names.CHECKPOINT_FILE
    bar = epoch_bar(objective.method, optim, state.epoch, show=optim.progress and primary)
    with deferred_sigterm() as stop:
        for epoch in bar:
            totals = run_epoch(objective, sampler, opt, device, amp, epoch, optim.lr)
            metrics = epoch_metrics(totals, objective, opt, distributed_run=ddp is not None)
            if primary and is_validation_epoch(epoch, optim):
                metrics[names.VAL_KNN_ACCURACY] = knn_validation(
                    network.encoder, *validation, device=device
                )
            if ddp is not None:
                metrics = distributed.broadcast_object(metrics)
            stopping = stop_requested(stop, distributed_run=ddp is not None)
            state.epoch = epoch
            if primary and (stopping or is_checkpoint_epoch(epoch, optim)):
                # the checkpoint first: a kill after it loses no logged step
                checkpoint = checkpoint_state(epoch, network, opt, sampler, metrics, extra_state)
                save_and_upload(checkpoint_path, checkpoint)
            log_once(state, metrics, epoch)
            state.metrics = metrics
            bar.set_postfix(loss=f"{metrics[names.TRAIN_LOSS]:.3f}")
            if stopping:
                raise Terminated(f"SIGTERM: stopped after epoch {epoch}, which is checkpointed")
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    return state


def epoch_bar(method: str, optim: OptimConfig, done: int, show: bool) -> tqdm:
    """Progress over epochs `done + 1 .. optim.epochs`."""
    return tqdm(
        range(done + 1, optim.epochs + 1),
        desc=method,
        unit="epoch",
        disable=not show,
        initial=done,
        total=optim.epochs,
    )


def place_network(
    network: torch.nn.Module, device: torch.device, image_size: int
) -> tuple[torch.nn.Module, bool]:
    """The network on `device` in the memory format `cuda_flags` chooses; whether to train
    under bf16 autocast."""
    network = network.to(device)
    amp, channels_last = cuda_flags(device, int(image_size))
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes (drop_last)
    return network, amp


def make_optimisation(
    network: torch.nn.Module, optim: OptimConfig, steps_per_epoch: int
) -> Optimisation:
    """AdamW on the trainable parameters, warm-up then cosine decay per step."""
    from eibacl.train.schedule import warmup_cosine

    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = warmup_cosine(
        optimizer, optim.warmup_epochs * steps_per_epoch, optim.epochs * steps_per_epoch
    )
    augment_gen = torch.Generator().manual_seed(optim.seed + 3_000_017)
    return Optimisation(optimizer, scheduler, augment_gen)


def checkpoint_state(
    epoch: int,
    network: torch.nn.Module,
    opt: Optimisation,
    sampler: BatchSampler,
    metrics: dict[str, float],
    extra_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything `restore` needs to continue after `epoch` exactly as if never stopped."""
    return {
        "epoch": epoch,
        "network": network.state_dict(),
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "sampler": sampler.state(),
        "augment": opt.augment_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "metrics": metrics,
        **(extra_state or {}),
    }


def restore(
    resume: dict[str, Any],
    network: torch.nn.Module,
    opt: Optimisation,
    sampler: BatchSampler,
    state: LoopState,
) -> None:
    """Load a `checkpoint_state`; log its epoch's metrics when the run lacks them (killed
    between the checkpoint and the logging)."""
    network.load_state_dict(resume["network"])
    opt.optimizer.load_state_dict(resume["optimizer"])
    opt.scheduler.load_state_dict(resume["scheduler"])
    sampler.load_state(resume["sampler"])
    opt.augment_gen.set_state(resume["augment"])
    torch.set_rng_state(resume["torch_rng"])
    state.epoch = resume["epoch"]
    state.metrics = dict(resume.get("metrics", {}))
    if state.epoch in state.logged_steps:
        return
    if state.metrics:
        log_once(state, state.metrics, state.epoch)
    elif distributed.is_primary():
        log.warning(
            "resume: epoch %d's metrics are neither in the run nor in its (older) "
            "checkpoint; that step stays missing",
            state.epoch,
        )


def run_epoch(
    objective: Any,
    sampler: BatchSampler,
    opt: Optimisation,
    device: torch.device,
    amp: bool,
    epoch: int,
    lr: float,
) -> EpochTotals:
    """One pass over the sampler's batches: forward (under autocast when `amp`), backward,
    optimiser and schedule step per batch."""
    objective.network.train()
    totals = EpochTotals()
    start = time.perf_counter()
    for batch in sampler.epoch():
        with autocast(device) if amp else contextlib.nullcontext():
            loss, n_images = objective(batch, opt.augment_gen, device)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at epoch {epoch}: lower lr (now {lr})"
                " or raise temperature"
            )
        opt.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        opt.optimizer.step()
        opt.scheduler.step()
        totals.loss += loss.item()
        totals.images += n_images
        totals.batches += 1
        totals.synthetic += batch.synthetic_drawn
        totals.feature_negatives += getattr(objective, "last_feature_negatives", 0)
    totals.seconds = time.perf_counter() - start
    return totals


def epoch_metrics(
    totals: EpochTotals, objective: Any, opt: Optimisation, distributed_run: bool
) -> dict[str, float]:
    """The epoch's train/* metrics; under DDP over the global batches (mean of the ranks'
    losses, images of all ranks)."""
    loss, images = totals.loss, totals.images
    if distributed_run:
        loss, images = distributed.all_reduce_sum([loss, images])
        loss /= distributed.world_size()
    metrics = {
        names.TRAIN_LOSS: loss / max(1, totals.batches),
        "train/lr": opt.scheduler.get_last_lr()[0],
        "train/images_per_s": images / max(totals.seconds, 1e-9),
        "train/synthetic_drawn": float(totals.synthetic),
    }
    if getattr(objective, "feature_negatives", None) is not None:
        metrics["train/feature_negatives"] = float(totals.feature_negatives)
    return metrics


def is_validation_epoch(epoch: int, optim: OptimConfig) -> bool:
    """Every `eval_every` epochs (0: never) and always the last."""
    return bool(optim.eval_every and epoch % optim.eval_every == 0) or epoch == optim.epochs


def is_checkpoint_epoch(epoch: int, optim: OptimConfig) -> bool:
    """Every `checkpoint_every` epochs and always the last."""
    return epoch % optim.checkpoint_every == 0 or epoch == optim.epochs


def stop_requested(stop: StopFlag, distributed_run: bool) -> bool:
    """Whether SIGTERM reached this process (under DDP: any rank, so all stop together)."""
    if not distributed_run:
        return stop.requested
    return distributed.all_reduce_sum([float(stop.requested)])[0] > 0


def save_and_upload(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint atomically and replace the run's `checkpoints/last.pt`."""
    save_checkpoint(path, state)
    tracking.log_artifact(path, names.CHECKPOINT_DIR)


def log_once(state: LoopState, metrics: dict[str, float], epoch: int) -> None:
    """Log the epoch's metrics unless the run has that step already (a resumed run)."""
    if epoch not in state.logged_steps:
        tracking.log_metrics(metrics, step=epoch)
        state.logged_steps.add(epoch)
