"""Threshold-free OOD detection metrics.

Convention everywhere: a HIGHER score means MORE in-distribution, and the
in-distribution (ID) set is the positive class. Ties are handled exactly
(they count one half in AUROC, and are grouped in the precision-recall and
ROC curves), so the numbers match scikit-learn's.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def _as_scores(scores: ArrayLike, what: str) -> np.ndarray:
    """Flatten to a 1-D float64 array and reject empty or NaN input."""
    if hasattr(scores, "detach"):  # torch.Tensor without importing torch
        scores = scores.detach().cpu().double().numpy()  # type: ignore[union-attr]
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
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


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties receiving the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    is_new = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(is_new)  # 1-based group index, in sorted order
    bounds = np.r_[np.flatnonzero(is_new), xs.size]  # group start positions + end
    sorted_ranks = 0.5 * (bounds[group] + bounds[group - 1] + 1)
    ranks = np.empty_like(sorted_ranks)
    ranks[order] = sorted_ranks
    return ranks


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD") -> float:
    """Area under the ROC curve, ID positive (Mann-Whitney U / (n_id * n_ood))."""
    ind, ood = _validate(id_scores, ood_scores, name)
    ranks = _average_ranks(np.concatenate([ind, ood]))
    n_id, n_ood = ind.size, ood.size
    u = ranks[:n_id].sum() - n_id * (n_id + 1) / 2.0
    return float(u / (n_id * n_ood))


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

    The threshold t is the largest value with mean(id_scores >= t) >= tpr; it is
    always an ID score (the k-th largest, k = ceil(tpr * n_id)). The result is
    mean(ood_scores >= t): the first ROC point reaching the TPR, not interpolated.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    ind, ood = _validate(id_scores, ood_scores, name)
    k = _smallest_count(ind.size, tpr)
    threshold = np.sort(ind)[::-1][k - 1]
    return float(np.mean(ood >= threshold))


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD") -> float:
    """Average precision with ID as the positive class (step-wise, as scikit-learn)."""
    ind, ood = _validate(id_scores, ood_scores, name)
    tp, fp = _cumulative_counts(ind, ood)
    precision = tp / (tp + fp)
    recall = tp / ind.size
    recall_step = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_step * precision))


def _cumulative_counts(ind: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ID (true-positive) and OOD (false-positive) counts at each distinct threshold.

    Thresholds run from the highest score down; a point is `score >= threshold`.
    """
    scores = np.concatenate([ind, ood])
    is_id = np.r_[np.ones(ind.size), np.zeros(ood.size)]
    order = np.argsort(-scores, kind="mergesort")
    scores, is_id = scores[order], is_id[order]
    last_of_group = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(is_id)[last_of_group]
    fp = np.cumsum(1.0 - is_id)[last_of_group]
    return tp, fp


def roc_curve(
    id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD"
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr), starting at (0, 0), one point per distinct score."""
    ind, ood = _validate(id_scores, ood_scores, name)
    tp, fp = _cumulative_counts(ind, ood)
    return np.r_[0.0, fp / ood.size], np.r_[0.0, tp / ind.size]


def ood_report(
    id_scores: ArrayLike, ood_scores: ArrayLike, *, name: str = "OOD"
) -> dict[str, float]:
    """The three reported metrics: keys `auroc`, `fpr95`, `aupr_in`."""
    ind, ood = _validate(id_scores, ood_scores, name)
    return {
        "auroc": auroc(ind, ood, name=name),
        "fpr95": fpr_at_tpr(ind, ood, 0.95, name=name),
        "aupr_in": aupr_in(ind, ood, name=name),
    }
