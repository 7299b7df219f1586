"""The embedded DDPM's training loop, resumable: the epsilon-prediction MSE loss with
classifier-free-guidance dropout, AdamW, warm-up + cosine learning rate, diffusers' EMA.

A loop that takes an hour (the prior, `eibacl.generate.backends.ddpm_prior`) must survive kill -9:
with a `checkpoint` path the whole loop state (weights, EMA shadow, optimiser, the data
order, the random generator, the loss history and the seconds spent) is written there
atomically every `checkpoint_every` steps, and a later call with the same path goes on from
the last one, drawing the same batches and noise as an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eibacl.device import autocast
from eibacl.lr_schedule import warmup_cosine_factor

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where the loop is: everything a resumed run needs besides the model and optimiser."""

    step: int = 0
    cursor: int = 0
    order: torch.Tensor | None = None
    rng: torch.Tensor | None = None
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _save_checkpoint(
    path: Path, state: LoopState, model: Any, opt: Any, ema: Any, gen: torch.Generator
) -> None:
    state.rng = gen.get_state()
    payload = {
        "loop": state.__dict__,
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "ema": ema.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill -9 leaves the previous checkpoint whole


def _load_checkpoint(path: Path, model: Any, opt: Any, ema: Any, gen: torch.Generator) -> LoopState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    opt.load_state_dict(payload["opt"])
    ema.load_state_dict(payload["ema"])
    state = LoopState(**payload["loop"])
    gen.set_state(state.rng)
    return state


def train_denoiser(
    backend: Any,
    data: torch.Tensor,
    targets: torch.Tensor,
    *,
    progress: bool = True,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
) -> LoopState:
    """Train `backend.model` on `data` (N x C x H x W in [-1, 1]) with class `targets`.

    Stops after `train_steps` or `max_minutes` (counted over every resumed part), whichever
    comes first; the cosine decay follows whichever budget is further spent. The model is
    left holding the EMA weights.
    """
    from eibacl.generate.backends.ddpm import _make_schedulers

    cfg, model, device = backend.config, backend.model, backend.device
    train_sched, _ = _make_schedulers(cfg)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    model.train()
    opt, ema, state, resumed = _begin(cfg, model, data.shape[0], gen, checkpoint)
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
    start = time.perf_counter() - state.seconds
    bar = tqdm(
        total=cfg.train_steps,
        initial=state.step,
        desc="ddpm train",
        disable=not progress,
        leave=False,
    )
    try:
        while state.step < cfg.train_steps and not (resumed and state.seconds > budget_s):
            _set_lr(opt, cfg, state.step, (time.perf_counter() - start) / budget_s)
            loss = _step(cfg, model, train_sched, data, targets, state, gen, device)
            _update(model, opt, ema, loss)
            state.losses.append(float(loss.item()))
            state.step += 1
            state.seconds = time.perf_counter() - start
            bar.update(1)
            if state.step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if checkpoint is not None and state.step % checkpoint_every == 0:
                _save_checkpoint(checkpoint, state, model, opt, ema, gen)
                log.info(
                    "ddpm training: step %d of %d, %.0f s",
                    state.step,
                    cfg.train_steps,
                    state.seconds,
                )
            if state.seconds > budget_s:
                break
        if checkpoint is not None:
            _save_checkpoint(checkpoint, state, model, opt, ema, gen)
    finally:
        bar.close()
        ema.copy_to(model.parameters())
        model.eval()
    return state


def _begin(
    cfg: Any, model: Any, n: int, gen: torch.Generator, checkpoint: Path | None
) -> tuple[Any, Any, LoopState, bool]:
    """Optimiser, EMA and loop state: fresh, or as the checkpoint left them."""
    from diffusers.training_utils import EMAModel

    # diffusers' EMA: the k-th update uses decay min(ema_decay, k / (9 + k)) (the first
    # copies the weights), so short runs are usable; the saved/sampling weights are these.
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if checkpoint is None or not checkpoint.is_file():
        return opt, ema, LoopState(order=torch.randperm(n, generator=gen)), False
    state = _load_checkpoint(checkpoint, model, opt, ema, gen)
    log.info(
        "ddpm training resumed at step %d of %d from %s", state.step, cfg.train_steps, checkpoint
    )
    return opt, ema, state, True


def _set_lr(opt: Any, cfg: Any, step: int, time_spent: float) -> None:
    """Warm-up, then cosine over whichever budget (steps or `max_minutes`) is further spent."""
    done = max(step / max(cfg.train_steps, 1), time_spent)
    factor = warmup_cosine_factor(step, cfg.warmup_steps, cfg.train_steps, done)
    for group in opt.param_groups:
        group["lr"] = cfg.lr * factor


def _update(model: Any, opt: Any, ema: Any, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    ema.step(model.parameters())


def _step(
    cfg: Any,
    model: Any,
    train_sched: Any,
    data: torch.Tensor,
    targets: torch.Tensor,
    state: LoopState,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One batch's loss (the data order is walked without replacement, reshuffled per pass)."""
    n = data.shape[0]
    batch_size = min(cfg.batch_size, n)
    if state.cursor + batch_size > n:
        state.order, state.cursor = torch.randperm(n, generator=gen), 0
    idx = state.order[state.cursor : state.cursor + batch_size].to(device)
    state.cursor += batch_size
    x0 = data[idx]
    y = targets[idx].clone()
    if cfg.hflip:
        flip = (torch.rand(batch_size, generator=gen) < 0.5).to(device)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    drop = (torch.rand(batch_size, generator=gen) < cfg.cond_dropout).to(device)
    y[drop] = cfg.num_classes
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (batch_size,), generator=gen).to(device)
    noisy = train_sched.add_noise(x0, noise, t)
    with autocast(device):
        pred = model(noisy, t, model.class_embedding(y))
    loss = F.mse_loss(pred.float(), noise)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"ddpm training loss became {loss.item()}")
    return loss
