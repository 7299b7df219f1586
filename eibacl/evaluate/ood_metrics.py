"""Threshold-free OOD detection metrics: a thin wrapper around scikit-learn.

Convention everywhere: a HIGHER score means MORE in-distribution, and the
in-distribution (ID) set is the positive class (AUPR-Out swaps the roles). Ties are
grouped, as scikit-learn does; what this module adds is input checking that names the
set, and FPR at a TPR read off the ROC curve.

FPR95 here is the fraction of OOD images still accepted at the strictest threshold that
keeps 95% of the ID images (Liu et al. 2020, Sun et al. 2022). OpenOOD v1.5 treats OOD
as the positive class instead: its FPR@95 is the fraction of ID images rejected when 95%
of the OOD images are caught, which differs whenever the two score distributions differ
in shape; its AUPR is the trapezoidal area under the precision-recall curve, ours
scikit-learn's step-wise average precision. AUROC is the same in both.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from eibacl.evaluate.arrays import as_numpy


def _as_scores(scores: ArrayLike, what: str) -> np.ndarray:
    """Flatten to a 1-D float64 array and reject empty or NaN input."""
    arr = as_numpy(scores, np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(
            f"{what} set is empty: no scores to evaluate; check the split that produces it"
        )
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"{what} scores contain {n_nan} NaN value(s) out of {arr.size}; "
            "the scorer produced NaN (check the features for NaN/inf)"
        )
    return arr


def _validate(
    id_scores: ArrayLike, ood_scores: ArrayLike, name: str
) -> tuple[np.ndarray, np.ndarray]:
    ood = _as_scores(ood_scores, name)
    ind = _as_scores(id_scores, f"in-distribution (vs {name})")
    return ind, ood


def _labelled(ind: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_id, score) as scikit-learn takes them; +-inf (which it refuses) become finite
    values just beyond the others, an order-preserving change that leaves every metric
    as it is."""
    score = np.r_[ind, ood]
    finite = score[np.isfinite(score)]
    if finite.size < score.size:
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        score = np.nan_to_num(score, posinf=high + 1.0, neginf=low - 1.0)
    return np.r_[np.ones(ind.size), np.zeros(ood.size)], score


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD") -> float:
    """Area under the ROC curve, ID positive (ties count one half)."""
    is_id, score = _labelled(*_validate(id_scores, ood_scores, name))
    return float(skm.roc_auc_score(is_id, score))


def _smallest_count(n: int, tpr: float) -> int:
    """Smallest integer k with k / n >= tpr, robust to float rounding of tpr * n."""
    k = max(1, math.ceil(tpr * n))
    while k > 1 and (k - 1) / n >= tpr:
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return k


def fpr_at_tpr(
    id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95, *, name: str = "OOD"
) -> float:
    """False-positive rate on OOD at the strictest threshold that keeps >= `tpr` of ID.

    The first point of scikit-learn's ROC curve (ties grouped) whose ID count reaches
    ceil(tpr * n_id): the threshold is an ID score, the result mean(ood_scores >= t),
    not interpolated.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    ind, ood = _validate(id_scores, ood_scores, name)
    fpr, true_rate = roc_curve(ind, ood, name=name)
    id_counts = np.rint(true_rate * ind.size)  # exact counts, no float comparison of rates
    first = int(np.argmax(id_counts >= _smallest_count(ind.size, tpr)))
    return float(fpr[first])


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD") -> float:
    """Average precision with ID as the positive class (high score = ID)."""
    is_id, score = _labelled(*_validate(id_scores, ood_scores, name))
    return float(skm.average_precision_score(is_id, score))


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD") -> float:
    """Average precision with OOD as the positive class (low score = OOD)."""
    is_id, score = _labelled(*_validate(id_scores, ood_scores, name))
    return float(skm.average_precision_score(1 - is_id, -score))


def roc_curve(
    id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD"
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr), starting at (0, 0), one point per distinct score."""
    is_id, score = _labelled(*_validate(id_scores, ood_scores, name))
    fpr, tpr, _ = skm.roc_curve(is_id, score, drop_intermediate=False)
    return fpr, tpr


def ood_report(
    id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD"
) -> dict[str, float]:
    """The reported metrics: keys `auroc`, `fpr95`, `aupr_in`, `aupr_out`."""
    ind, ood = _validate(id_scores, ood_scores, name)
    return {
        "auroc": auroc(ind, ood, name=name),
        "fpr95": fpr_at_tpr(ind, ood, 0.95, name=name),
        "aupr_in": aupr_in(ind, ood, name=name),
        "aupr_out": aupr_out(ind, ood, name=name),
    }
