"""Linear probe on frozen features, and the classification metrics it reports.

The probe standardises features with TRAIN statistics and fits scikit-learn's
multinomial `LogisticRegression` (lbfgs, L2) for every C of a grid, warm-started from
the previous C; it picks C on VALIDATION accuracy, ties broken by the lower validation
log-loss, then the stronger penalty. The problem is convex, so the result does not
depend on a seed. The test set is never looked at here. (`bench/bench_linear_probe.py`:
5-10x faster than the hand-written Adam grid this replaced, same accuracy.)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from eibacl.evaluate.arrays import as_numpy, as_tensor

log = logging.getLogger(__name__)
Features = torch.Tensor | np.ndarray
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strength, scikit-learn's convention
ABSENT_CLASS_BIAS = -1e4  # a class with no training image is never predicted


@dataclass
class LinearProbe:
    """A trained probe: standardisation, the linear layer, and how it was chosen."""

    linear: nn.Linear
    mean: torch.Tensor  # (D,) train feature mean
    std: torch.Tensor  # (D,) train feature std (clamped away from 0)
    C: float  # noqa: N815 - scikit-learn's name
    weight_decay: float  # the same penalty as an L2 coefficient on mean CE: 1 / (C * N)
    val_accuracy: float
    val_loss: float
    grid: list[dict[str, float]] = field(default_factory=list)  # every C tried

    def logits(self, feats: Features) -> torch.Tensor:
        """Float32 CPU logits for raw (unstandardised) features."""
        x = _features(feats).to(self.mean.device)
        with torch.inference_mode():
            return self.linear((x - self.mean) / self.std).float().cpu()

    def predict(self, feats: Features) -> torch.Tensor:
        """Predicted class indices (int64, CPU)."""
        return self.logits(feats).argmax(dim=1)


def _features(x: Features) -> torch.Tensor:
    t = as_tensor(x, torch.float32)
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    return t


def _labels(y: Features | ArrayLike) -> torch.Tensor:
    return as_tensor(y, torch.int64).reshape(-1)


def _check_pair(x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"the {what} set is empty")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} features but {y.shape[0]} labels")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"{what} labels must be in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]"
        )


def _full_weights(model: object, num_classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(C x D weights, C biases) over all `num_classes`, from a fitted LogisticRegression
    (which keeps one row for two classes and only the classes it saw)."""
    coef, intercept = model.coef_, model.intercept_  # type: ignore[attr-defined]
    if coef.shape[0] == 1:  # binary: softmax([-z/2, z/2]) = sigmoid(z)
        coef, intercept = np.r_[-coef, coef] / 2, np.r_[-intercept, intercept] / 2
    weight = np.zeros((num_classes, dim))
    bias = np.full(num_classes, ABSENT_CLASS_BIAS)
    classes = model.classes_.astype(np.int64)  # type: ignore[attr-defined]
    weight[classes], bias[classes] = coef, intercept
    return weight, bias


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(y.size), y].mean())


def train_linear_probe(
    train_feats: Features,
    train_labels: Features,
    val_feats: Features,
    val_labels: Features,
    num_classes: int,
    *,
    cs: Sequence[float] = C_GRID,
    max_iter: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Grid-search C on validation accuracy; return the chosen probe on `device`.

    `seed` is passed to scikit-learn (`random_state`); lbfgs does not use it, so the
    probe is the same for every seed.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not cs or min(cs) <= 0:
        raise ValueError(f"cs must hold at least one C > 0, got {tuple(cs)}")
    xtr, ytr = _features(train_feats), _labels(train_labels)
    xva, yva = _features(val_feats), _labels(val_labels)
    _check_pair(xtr, ytr, num_classes, "train")
    _check_pair(xva, yva, num_classes, "validation")
    if xtr.shape[1] != xva.shape[1]:
        raise ValueError(f"train features have {xtr.shape[1]} dims, validation {xva.shape[1]}")

    mean = xtr.mean(dim=0)
    std = xtr.std(dim=0, unbiased=False).clamp_min(1e-6)
    xtr_s = ((xtr - mean) / std).double().cpu().numpy()
    xva_s = ((xva - mean) / std).double().cpu().numpy()
    ytr_np, yva_np = ytr.cpu().numpy(), yva.cpu().numpy()
    model = LogisticRegression(max_iter=max_iter, warm_start=True, random_state=seed)
    grid, fits, unconverged = [], [], 0
    for c in sorted(float(c) for c in cs):  # small C first: each fit starts near the next
        model.set_params(C=c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(xtr_s, ytr_np)
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        weight, bias = _full_weights(model, num_classes, xtr_s.shape[1])
        val_logits = xva_s @ weight.T + bias
        grid.append(
            {
                "C": c,
                "weight_decay": 1.0 / (c * len(ytr_np)),
                "val_accuracy": float(np.mean(val_logits.argmax(axis=1) == yva_np)),
                "val_loss": _log_loss(val_logits, yva_np),
            }
        )
        fits.append((weight, bias))
    if unconverged:
        log.warning(
            "linear probe: %d of %d C values stopped at max_iter=%d before converging",
            unconverged,
            len(grid),
            max_iter,
        )
    # Best validation accuracy; ties go to the lower validation loss, then the smaller C.
    best = max(range(len(grid)), key=lambda i: (grid[i]["val_accuracy"], -grid[i]["val_loss"]))
    dev = torch.device(device)
    linear = nn.Linear(xtr.shape[1], num_classes).to(dev)
    weight, bias = fits[best]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight))
        linear.bias.copy_(torch.as_tensor(bias))
    linear.eval().requires_grad_(False)
    chosen = grid[best]
    with torch.no_grad():  # report exactly what the returned float32 layer does on validation
        xva_dev = ((xva - mean) / std).to(dev)
        predicted = linear(xva_dev).argmax(dim=1).cpu()
        chosen["val_accuracy"] = float((predicted == yva.cpu()).sum()) / yva.numel()
    return LinearProbe(
        linear=linear,
        mean=mean.to(dev),
        std=std.to(dev),
        C=chosen["C"],
        weight_decay=chosen["weight_decay"],
        val_accuracy=chosen["val_accuracy"],
        val_loss=chosen["val_loss"],
        grid=grid,
    )


def _np_labels(x: Features | ArrayLike) -> np.ndarray:
    return as_numpy(x).astype(np.int64).reshape(-1)


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
