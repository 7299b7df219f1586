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
import logging
import time

import torch
from tqdm.auto import tqdm

from eibacl.generate.backends.ddpm import DDPMBackend, _make_schedulers, _to_unit
from eibacl.generate.backends.ddpm_prior import PseudoClasses
from eibacl.generate.backends.ddpm_training import LoopState, _step

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
