"""Class conditioning learned on the shots with the prior frozen: the embedded DDPM's analogue
of textual inversion.

DA-Fusion keeps Stable Diffusion frozen and learns one token embedding per class. Here the
prior's UNet is frozen and one new embedding row per class is learned with the denoising
loss on the training split only. Each row starts in the prior's conditioning space: at the
mean of the pseudo-class rows its shots fall in (the rows "nearest" the class), so the
search starts where the prior already draws such images. The null row stays the prior's,
so guidance and every near-OOD recipe (they mix, push from or extrapolate class rows) work
on the learned rows as they do on a generator trained from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from eibacl.generate.backends.ddpm import DDPMBackend, _make_schedulers, _to_unit
from eibacl.generate.backends.ddpm_prior import (
    PRIOR_FILE,
    Prior,
    PseudoClasses,
    check_fits,
    load_prior,
    resolve_prior,
    shipped_prior,
)
from eibacl.generate.backends.ddpm_training import LoopState, _step

if TYPE_CHECKING:
    from eibacl.config import GenerateConfig
    from eibacl.data.training_data import TrainingData

log = logging.getLogger(__name__)
INVERSION_LR = 1e-2  # Adam on rows of unit-variance entries (DA-Fusion: 5e-4 on CLIP's ~0.015)
INVERSION_BATCH = 64


def initial_rows(
    prior: DDPMBackend, pseudo: PseudoClasses, images: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mean of the prior rows of the pseudo-classes its images fall in
    (weighted by how many fall in each); also the K x C assignment counts."""
    assigned = pseudo.assign(images)
    table = prior.model.class_embedding.weight.detach()[: prior.config.num_classes]
    counts = torch.zeros(prior.config.num_classes, k)
    for cluster, label in zip(assigned.tolist(), labels.tolist()):
        counts[cluster, label] += 1
    weights = counts / counts.sum(dim=0, keepdim=True).clamp_min(1)
    return weights.T @ table, counts


def inverted_model(prior: DDPMBackend, rows: torch.Tensor, class_names: list[str]) -> DDPMBackend:
    """A DDPM of `len(class_names)` classes: the prior's UNet, `rows`, the prior's null row."""
    cfg = prior.config
    hyper = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name not in ("image_size", "channels", "num_classes", "class_names")
    }
    backend = DDPMBackend(
        cfg.image_size, cfg.channels, len(class_names), device=prior.device, **hyper
    )
    backend.config.class_names = list(class_names)
    backend.model.unet.load_state_dict(prior.model.unet.state_dict())
    null = prior.model.class_embedding.weight.detach()[prior.model.null_index]
    with torch.no_grad():
        backend.model.class_embedding.weight.copy_(torch.cat([rows, null[None]]).to(prior.device))
    return backend


def invert(
    prior: DDPMBackend,
    pseudo: PseudoClasses,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    *,
    steps: int,
    seed: int = 0,
    progress: bool = False,
) -> DDPMBackend:
    """Learn one row per class of `class_names` on `images` (uint8, the prior's size) with the
    prior frozen. The returned backend samples like any embedded DDPM; `ti_stats` holds the
    inversion's loss, steps and seconds."""
    prior._check_images(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    rows, _ = initial_rows(prior, pseudo, images, labels, len(class_names))
    backend = inverted_model(prior, rows, class_names)
    model = backend.model
    model.unet.requires_grad_(False)
    table = model.class_embedding.weight
    opt = torch.optim.Adam([table], lr=INVERSION_LR)  # no decay: the null row must not move
    cfg = dataclasses.replace(backend.config, cond_dropout=0.0, batch_size=INVERSION_BATCH)
    train_sched, _ = _make_schedulers(cfg)
    data, targets = _to_unit(images).to(backend.device), labels.to(backend.device)
    gen = torch.Generator(device="cpu").manual_seed(seed + 2)
    state = LoopState(order=torch.randperm(images.shape[0], generator=gen))
    start = time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc="ddpm inversion", disable=not progress, leave=False):
        loss = _step(cfg, model, train_sched, data, targets, state, gen, backend.device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        table.grad[model.null_index] = 0.0
        opt.step()
        state.losses.append(float(loss.item()))
    model.eval()
    model.unet.requires_grad_(True)
    seconds = time.perf_counter() - start
    backend.loss_history, backend.trained_steps, backend.train_seconds = (
        state.losses,
        steps,
        seconds,
    )
    backend.ti_stats = inversion_stats(state.losses, seconds, rows, table.detach()[:-1])
    log.info(
        "inversion: %d class rows learned on %d images in %d steps, %.0f s (loss %.4f -> %.4f)",
        len(class_names),
        images.shape[0],
        steps,
        seconds,
        *_ends(state.losses),
    )
    return backend


def _ends(losses: list[float], window: int = 20) -> tuple[float, float]:
    """Mean loss of the first and of the last `window` steps (one step's loss is noisy)."""
    head, tail = losses[:window], losses[-window:]
    return sum(head) / len(head), sum(tail) / len(tail)


def inversion_stats(
    losses: list[float], seconds: float, start: torch.Tensor, end: torch.Tensor
) -> dict[str, float]:
    first, last = _ends(losses)
    moved = (end.cpu() - start.cpu()).norm(dim=1) / start.cpu().norm(dim=1).clamp_min(1e-8)
    return {
        "inversion/loss_start": first,
        "inversion/loss_end": last,
        "inversion/steps": float(len(losses)),
        "inversion/seconds": seconds,
        "inversion/row_change": float(moved.mean()),
    }


def prior_of_run(config: GenerateConfig, data: TrainingData, device: torch.device) -> Prior | None:
    """The prior `generator_prior` names for this run (checked against its data and split),
    or None: `none`, or `default` where no prior ships for this data."""
    from eibacl.generate.backends import work_size

    source = str(data.split.params.get("data", ""))
    size, channels = work_size(config, data), data.imageset.channels
    folder = resolve_prior(config.generator_prior, source, size, channels)
    if folder is None:
        return None
    prior = load_prior(folder, device=device)
    held_out = list(data.split.ood_classes) + list(data.split.ood_val_classes)
    check_fits(prior, size, channels, held_out)
    return prior


def fit_on_prior(
    prior: Prior,
    config: GenerateConfig,
    data: TrainingData,
    images: torch.Tensor,
    progress: bool,
) -> DDPMBackend:
    """The run's generator: `prior` with one row per class learned on the training split."""
    from eibacl.data.resize import resize_uint8

    size = prior.backend.config.image_size
    backend = invert(
        prior.backend,
        prior.pseudo,
        resize_uint8(images, size) if images.shape[-1] != size else images,
        data.train_y,
        list(data.split.id_classes),
        steps=config.inversion_steps,
        seed=config.generator_seed,
        progress=progress,
    )
    backend.config.inference_steps = config.inference_steps
    backend.prior_info = {"folder": str(prior.folder), "fingerprint": prior.info["fingerprint"]}
    return backend


def prior_identity(config: GenerateConfig, data: TrainingData) -> dict[str, object] | None:
    """What the generator key needs of the prior (its fingerprint and the inversion's steps),
    without loading it or saying anything; None when the run uses no prior."""
    from eibacl.generate.backends import work_size

    if config.generator != "ddpm" or config.generator_prior.strip() == "none":
        return None
    if config.generator_prior.strip() == "default":
        source = str(data.split.params.get("data", ""))
        folder = shipped_prior(source, work_size(config, data), data.imageset.channels)
        if folder is None:
            return None
    else:
        folder = Path(config.generator_prior.strip()).expanduser()
    try:
        fingerprint = json.loads((folder / PRIOR_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        fingerprint = f"unreadable:{folder}"  # loading it names the problem
    return {"prior": fingerprint, "inversion_steps": config.inversion_steps}


def say_prior(config: GenerateConfig, data: TrainingData) -> str:
    """One line on the prior this run's generator starts from; returns its folder or 'none'."""
    from eibacl.generate.backends import work_size

    if config.generator != "ddpm":
        return "none"
    source = str(data.split.params.get("data", ""))
    size = work_size(config, data)
    folder = resolve_prior(config.generator_prior, source, size, data.imageset.channels)
    if folder is None:
        return "none"
    log.info(
        "generator_prior: %s; %d class rows learned on the training split in %d steps, the "
        "prior frozen",
        folder,
        data.num_classes,
        config.inversion_steps,
    )
    return str(folder)
