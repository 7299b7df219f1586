"""OOD scorers on features or logits. Every score: HIGHER = more in-distribution.

- `knn_score`: distance to the k-th nearest training feature after L2
  normalisation (Sun et al., ICML 2022).
- `fit_mahalanobis` / `mahalanobis_score`: class means with one shared
  covariance (Lee et al., NeurIPS 2018), shrunk (Ledoit-Wolf or OAS) by default.
- `msp_score`: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).
- `energy_score`: T * logsumexp(logits / T) (Liu et al., NeurIPS 2020).
- `knn_accuracy`: cosine kNN classifier, a cheap monitor of an encoder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf

from eibacl.config import COVARIANCES, EvalConfig
from eibacl.evaluate.arrays import as_tensor
from eibacl.evaluate.features import extract_features

Features = torch.Tensor | np.ndarray

DEFAULT_COVARIANCE: str = EvalConfig.covariance  # one default: the `covariance` parameter's
_CHUNK = 2048  # test rows per similarity block: 2048 x 50k floats = 400 MB at most


def _to_tensor(x: Features | ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return as_tensor(x, dtype, device="cpu")


def _as_matrix(x: Features, what: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = _to_tensor(x, dtype)
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    return t


def _chunks(n: int, size: int = _CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _check_dims(train: torch.Tensor, test: torch.Tensor) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"feature dimensions differ: train has {train.shape[1]}, test has {test.shape[1]}"
        )


def knn_score(train_feats: Features, test_feats: Features, k: int) -> np.ndarray:
    """Minus the Euclidean distance of each normalised test feature to its k-th neighbour."""
    train = F.normalize(_as_matrix(train_feats, "train_feats"), dim=1)
    test = F.normalize(_as_matrix(test_feats, "test_feats"), dim=1)
    _check_dims(train, test)
    if k < 1:
        raise ValueError(f"knn_k={k} must be >= 1")
    if k > train.shape[0]:
        raise ValueError(
            f"knn_k={k} is larger than the {train.shape[0]} training images; "
            f"choose knn_k <= {train.shape[0]}"
        )
    out = torch.empty(test.shape[0], dtype=torch.float32)
    for rows in _chunks(test.shape[0]):
        sim = test[rows] @ train.T
        kth_sim = torch.topk(sim, k, dim=1, largest=True, sorted=True).values[:, -1]
        # |a - b|^2 = 2 - 2 a.b for unit vectors
        out[rows] = -torch.sqrt(torch.clamp(2.0 - 2.0 * kth_sim, min=0.0))
    return out.numpy().astype(np.float64)


@dataclass(frozen=True)
class MahalanobisModel:
    """Class means and the shared precision matrix, float64 on CPU."""

    classes: torch.Tensor  # (C,) label values, sorted
    means: torch.Tensor  # (C, D)
    precision: torch.Tensor  # (D, D)
    normalize: bool  # whether features are L2-normalised before use


def fit_mahalanobis(
    train_feats: Features,
    train_labels: Features,
    *,
    covariance: str = DEFAULT_COVARIANCE,
    ridge: float = 1e-6,
    normalize: bool = False,
) -> MahalanobisModel:
    """Fit class means and the pooled within-class covariance.

    `covariance`: `ledoit-wolf` or `oas` shrink the pooled covariance toward a scaled
    identity by scikit-learn's estimate of the best amount (with resnet18's 512-d features
    and ~100 images the sample covariance has rank ~100, and its inverse would score by a
    null space); `ridge` is the sample covariance alone. The precision is then
    pinv(Sigma + ridge * mean_variance * I): the relative ridge keeps it finite.
    """
    x = _as_matrix(train_feats, "train_feats", torch.float64)
    y = _to_tensor(train_labels, torch.int64).reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} train features but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("cannot fit Mahalanobis on an empty training set")
    if normalize:
        x = F.normalize(x, dim=1)
    classes, index = torch.unique(y, sorted=True, return_inverse=True)
    counts = torch.bincount(index, minlength=classes.numel()).to(x.dtype)
    sums = torch.zeros(classes.numel(), x.shape[1], dtype=x.dtype).index_add_(0, index, x)
    means = sums / counts[:, None]
    cov = pooled_covariance((x - means[index]).numpy(), covariance)
    scale = torch.clamp(torch.trace(cov) / cov.shape[0], min=torch.finfo(x.dtype).tiny)
    eye = torch.eye(cov.shape[0], dtype=x.dtype)
    precision = torch.linalg.pinv(cov + ridge * scale * eye, hermitian=True)
    return MahalanobisModel(classes=classes, means=means, precision=precision, normalize=normalize)


def pooled_covariance(centred: np.ndarray, covariance: str) -> torch.Tensor:
    """(D, D) covariance of class-centred features by the estimator `covariance` names."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance={covariance!r} is unknown: use one of {COVARIANCES}")
    if covariance == "ridge":
        estimate = EmpiricalCovariance(assume_centered=True).fit(centred).covariance_
    elif covariance == "oas":
        estimate = OAS(assume_centered=True).fit(centred).covariance_
    else:
        estimate = LedoitWolf(assume_centered=True).fit(centred).covariance_
    return torch.from_numpy(np.asarray(estimate, dtype=np.float64))


def mahalanobis_distances(model: MahalanobisModel, feats: Features) -> torch.Tensor:
    """(N, C) squared Mahalanobis distances to every class mean."""
    x = _as_matrix(feats, "feats", torch.float64)
    if x.shape[1] != model.means.shape[1]:
        raise ValueError(
            f"feature dimension {x.shape[1]} does not match the model's {model.means.shape[1]}"
        )
    if model.normalize:
        x = F.normalize(x, dim=1)
    mu_p = model.means @ model.precision  # (C, D)
    mu_term = (mu_p * model.means).sum(dim=1)  # (C,)
    out = torch.empty(x.shape[0], model.means.shape[0], dtype=torch.float64)
    for rows in _chunks(x.shape[0]):
        xc = x[rows]
        x_term = ((xc @ model.precision) * xc).sum(dim=1, keepdim=True)
        out[rows] = torch.clamp(x_term - 2.0 * xc @ mu_p.T + mu_term, min=0.0)
    return out


def mahalanobis_score(model: MahalanobisModel, feats: Features) -> np.ndarray:
    """Minus the squared Mahalanobis distance to the closest class mean."""
    return (-mahalanobis_distances(model, feats).min(dim=1).values).numpy()


def msp_score(logits: Features) -> np.ndarray:
    """Maximum softmax probability."""
    z = _as_matrix(logits, "logits", torch.float64)
    return torch.softmax(z, dim=1).max(dim=1).values.numpy()


def energy_score(logits: Features, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy, T * logsumexp(logits / T)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = _as_matrix(logits, "logits", torch.float64)
    return (temperature * torch.logsumexp(z / temperature, dim=1)).numpy()


def knn_predict(
    train_feats: Features,
    train_labels: Features,
    test_feats: Features,
    k: int = 20,
    *,
    weighted: bool = False,
    weight_temperature: float = 0.07,
) -> np.ndarray:
    """Cosine kNN labels for the test features.

    Unweighted: majority vote, ties going to the smallest label (as scikit-learn).
    Weighted: each neighbour votes exp(cos / weight_temperature) (Wu et al., 2018).
    """
    train = F.normalize(_as_matrix(train_feats, "train_feats"), dim=1)
    test = F.normalize(_as_matrix(test_feats, "test_feats"), dim=1)
    _check_dims(train, test)
    labels = _to_tensor(train_labels, torch.int64).reshape(-1)
    if labels.shape[0] != train.shape[0]:
        raise ValueError(f"{train.shape[0]} train features but {labels.shape[0]} labels")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"knn_k={k} must be between 1 and the {train.shape[0]} training images")
    classes, index = torch.unique(labels, sorted=True, return_inverse=True)
    preds = torch.empty(test.shape[0], dtype=torch.int64)
    for rows in _chunks(test.shape[0]):
        sim, nn_idx = torch.topk(test[rows] @ train.T, k, dim=1)
        if weighted:
            weights = torch.exp((sim - 1.0) / weight_temperature)  # shift: no overflow
        else:
            weights = torch.ones_like(sim)
        votes = torch.zeros(sim.shape[0], classes.numel(), dtype=weights.dtype)
        votes.scatter_add_(1, index[nn_idx], weights)
        preds[rows] = classes[votes.argmax(dim=1)]
    return preds.numpy()


def knn_accuracy(
    train_feats: Features,
    train_labels: Features,
    test_feats: Features,
    test_labels: Features,
    k: int = 20,
    *,
    weighted: bool = False,
) -> float:
    """Accuracy of the cosine kNN classifier (see `knn_predict`)."""
    truth = _to_tensor(test_labels, torch.int64).reshape(-1).numpy()
    if truth.size == 0:
        raise ValueError("knn_accuracy needs at least one test image")
    preds = knn_predict(train_feats, train_labels, test_feats, k, weighted=weighted)
    if preds.shape[0] != truth.shape[0]:
        raise ValueError(f"{preds.shape[0]} test features but {truth.shape[0]} labels")
    return float(np.mean(preds == truth))


def knn_validation(
    encoder: torch.nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    device: torch.device,
) -> float:
    """Cosine kNN accuracy (k <= 20) of `encoder`'s features on the validation images: the
    training loop's per-epoch monitor, also logged by probe so the runs share a column."""
    was_training = encoder.training
    train_f = extract_features(encoder, train_x, device=str(device))
    val_f = extract_features(encoder, val_x, device=str(device))
    encoder.train(was_training)
    k = min(20, len(train_f))
    return knn_accuracy(train_f, train_y, val_f, val_y, k=k)
