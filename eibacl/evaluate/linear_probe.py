"""Linear probe on frozen features, and the classification metrics it reports.

The probe standardises features with TRAIN statistics, trains a softmax
regression (a linear layer) with Adam and an L2 penalty (minibatches, cosine
learning-rate decay, zero init: the problem is convex and the result depends
only on the seed), and picks learning rate and weight decay on VALIDATION
accuracy, ties broken by the lower validation loss. The test set is never
looked at here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

Features = torch.Tensor | np.ndarray


@dataclass
class LinearProbe:
    """A trained probe: standardisation, the linear layer, and how it was chosen."""

    linear: nn.Linear
    mean: torch.Tensor  # (D,) train feature mean
    std: torch.Tensor  # (D,) train feature std (clamped away from 0)
    lr: float
    weight_decay: float
    val_accuracy: float
    val_loss: float
    grid: list[dict[str, float]] = field(default_factory=list)  # every config tried

    def logits(self, feats: Features) -> torch.Tensor:
        """Float32 CPU logits for raw (unstandardised) features."""
        x = _features(feats).to(self.mean.device)
        with torch.inference_mode():
            return self.linear((x - self.mean) / self.std).float().cpu()

    def predict(self, feats: Features) -> torch.Tensor:
        """Predicted class indices (int64, CPU)."""
        return self.logits(feats).argmax(dim=1)


def _features(x: Features) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    return t


def _labels(y: Features | ArrayLike) -> torch.Tensor:
    t = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    return t.to(dtype=torch.int64).reshape(-1)


def _check_pair(x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"the {what} set is empty")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} features but {y.shape[0]} labels")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"{what} labels must be in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]"
        )


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run tiny CPU matmuls on one thread, restoring the setting afterwards.

    On a 2-core machine that is busy elsewhere, two OpenMP threads wait on each
    other at every op: the probe measured 5 s with 2 threads, 0.5 s with 1.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_grid(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: torch.Tensor,
    weight_decays: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """Train one softmax regression per (lr, weight_decay) pair, all at once.

    The G problems are independent, so they are stacked into one (G, D + 1, C)
    tensor (the last row is the bias) and updated together with Adam written
    out by hand on the analytic cross-entropy gradient: a few tensor ops per
    step for the whole grid instead of a module, autograd graph and optimizer
    per config. `weight_decay` is the L2 coefficient of the loss
    mean CE + wd / 2 * ||W||^2 (bias not decayed), i.e. scikit-learn's
    C = 1 / (wd * N): it sets the optimum, and lr only how fast it is reached.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n, d = x.shape
    g = lrs.numel()
    x1 = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    w = torch.zeros(g, d + 1, num_classes, dtype=x.dtype, device=x.device)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    decay = torch.ones(1, d + 1, 1, dtype=x.dtype, device=x.device)
    decay[:, -1] = 0.0  # no weight decay on the bias row
    lr = lrs.to(x).reshape(g, 1, 1)
    wd = weight_decays.to(x).reshape(g, 1, 1) * decay  # (G, D+1, 1)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    gen = torch.Generator(device="cpu").manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(x.device) if steps_per_epoch > 1 else None
        for s in range(steps_per_epoch):
            if order is None:
                xb, ob = x1, onehot
            else:
                idx = order[s * batch_size : (s + 1) * batch_size]
                xb, ob = x1[idx], onehot[idx]
            grad = xb.T @ ((torch.softmax(xb @ w, dim=-1) - ob) / xb.shape[0])  # (G, D+1, C)
            grad.addcmul_(wd, w)
            step += 1
            lr_t = lr * (0.5 * (1.0 + math.cos(math.pi * (step - 1) / total)))  # cosine decay
            m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = (v / (1.0 - beta2**step)).sqrt_().add_(eps)
            w.sub_(lr_t / (1.0 - beta1**step) * m / denom)
    return w


def train_linear_probe(
    train_feats: Features,
    train_labels: Features,
    val_feats: Features,
    val_labels: Features,
    num_classes: int,
    *,
    epochs: int = 100,
    lrs: Sequence[float] = (1e-2, 1e-1),
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Grid-search (lr, weight_decay) on validation accuracy; return the chosen probe.

    `weight_decay` is the L2 coefficient (loss = mean CE + wd / 2 * ||W||^2).
    Each configuration starts from the same zero init and sees the same
    minibatch order, so the whole search is deterministic given `seed`.
    `epochs` passes over the training set in minibatches of `batch_size`.
    """
    if not lrs or not weight_decays:
        raise ValueError("lrs and weight_decays must each contain at least one value")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    xtr, ytr = _features(train_feats), _labels(train_labels)
    xva, yva = _features(val_feats), _labels(val_labels)
    _check_pair(xtr, ytr, num_classes, "train")
    _check_pair(xva, yva, num_classes, "validation")
    if xtr.shape[1] != xva.shape[1]:
        raise ValueError(f"train features have {xtr.shape[1]} dims, validation {xva.shape[1]}")

    dev = torch.device(device)
    mean = xtr.mean(dim=0)
    std = xtr.std(dim=0, unbiased=False).clamp_min(1e-6)
    xtr_s = ((xtr - mean) / std).to(dev)
    xva_s = ((xva - mean) / std).to(dev)
    ytr, yva = ytr.to(dev), yva.to(dev)

    configs = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    with _one_cpu_thread(dev):
        w = _fit_grid(
            xtr_s,
            ytr,
            num_classes,
            torch.tensor([c[0] for c in configs]),
            torch.tensor([c[1] for c in configs]),
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
        )
    val_logits = xva_s @ w[:, :-1] + w[:, -1:]  # (G, N_val, C)
    val_acc = (val_logits.argmax(dim=-1) == yva).sum(dim=1).double() / yva.numel()
    val_loss = F.cross_entropy(
        val_logits.permute(0, 2, 1), yva.expand(len(configs), -1), reduction="none"
    ).mean(dim=1)
    grid = [
        {"lr": lr, "weight_decay": wd, "val_accuracy": float(a), "val_loss": float(lo)}
        for (lr, wd), a, lo in zip(configs, val_acc.tolist(), val_loss.tolist(), strict=True)
    ]
    # Best validation accuracy; ties go to the lower validation loss, then grid order.
    best = max(range(len(grid)), key=lambda i: (grid[i]["val_accuracy"], -grid[i]["val_loss"]))
    linear = nn.Linear(xtr.shape[1], num_classes).to(dev)
    with torch.no_grad():
        linear.weight.copy_(w[best, :-1].T)
        linear.bias.copy_(w[best, -1])
    linear.eval().requires_grad_(False)
    chosen = grid[best]
    with torch.no_grad():  # report exactly what the returned layer does on validation
        chosen["val_accuracy"] = float((linear(xva_s).argmax(dim=1) == yva).sum()) / yva.numel()
    return LinearProbe(
        linear=linear,
        mean=mean.to(dev),
        std=std.to(dev),
        lr=chosen["lr"],
        weight_decay=chosen["weight_decay"],
        val_accuracy=chosen["val_accuracy"],
        val_loss=chosen["val_loss"],
        grid=grid,
    )


def _np_labels(x: Features | ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64).reshape(-1)


def _pair(preds: Features | ArrayLike, labels: Features | ArrayLike) -> tuple[np.ndarray, ...]:
    p, y = _np_labels(preds), _np_labels(labels)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    return p, y


def accuracy(preds: Features | ArrayLike, labels: Features | ArrayLike) -> float:
    """Fraction of correct predictions (NaN for an empty set)."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y)) if y.size else math.nan


def confusion_matrix(
    preds: Features | ArrayLike, labels: Features | ArrayLike, num_classes: int
) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (scikit-learn's layout)."""
    p, y = _pair(preds, labels)
    for what, v in (("predictions", p), ("labels", y)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{what} must be in [0, {num_classes})")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(
    preds: Features | ArrayLike, labels: Features | ArrayLike, num_classes: int
) -> np.ndarray:
    """Recall of each class; NaN for a class with no examples."""
    cm = confusion_matrix(preds, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)
