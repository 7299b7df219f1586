"""Object-level decisions and confidence intervals over objects.

Views of one physical object are not independent samples: an object is what the
application identifies, and what a confidence interval must resample. Here:

- `object_means`: per-object means of per-image values (logits, OOD scores);
- `object_accuracy`: the classifier's logits averaged over an object's views, then argmax;
- `object_auroc`: OOD scores averaged over an object's views, then AUROC (scikit-learn);
- `mean_halfwidth` / `auroc_halfwidth`: 95% percentile-bootstrap half-widths that resample
  whole objects (each side of an ID/OOD comparison on its own, so both stay present); with
  one image per object, the ordinary bootstrap over images. A resample is a row of image
  weights (how often its object was drawn), so 1,000 resamples cost one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from eibacl.evaluate.ood_metrics import auroc

BOOTSTRAP_RESAMPLES = 1000
CI = "ci_halfwidth"  # ci_halfwidth/<metric>: half the width of <metric>'s 95% CI
CONFIDENCE = 0.95


def object_index(groups: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(object ids sorted, index of each image's object)."""
    names, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    return names.tolist(), inverse.reshape(-1)


def object_means(values: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Mean of `values` (N, ...) over the images of each object, objects sorted by id."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] != len(groups):
        raise ValueError(f"{values.shape[0]} values but {len(groups)} object ids")
    names, inverse = object_index(groups)
    sums = np.zeros((len(names), *values.shape[1:]))
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(names)).reshape(-1, *([1] * (values.ndim - 1)))
    return sums / counts


def object_labels(labels: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """The one label of each object (objects sorted by id); views must agree."""
    labels = np.asarray(labels).reshape(-1)
    names, inverse = object_index(groups)
    out = np.full(len(names), -1, dtype=np.int64)
    out[inverse] = labels
    mixed = np.flatnonzero(labels != out[inverse])
    if mixed.size:
        raise ValueError(
            f"object {names[inverse[mixed[0]]]!r} has views with different labels: one "
            "object, one class (check the object ids of the data)"
        )
    return out


def object_correct(logits: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Per object (sorted by id): is argmax(mean logits over its views) its label?"""
    return object_means(logits, groups).argmax(axis=1) == object_labels(labels, groups)


def object_accuracy(logits: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> float:
    """Accuracy of argmax(mean logits over an object's views) against the object's label."""
    return float(np.mean(object_correct(logits, labels, groups)))


def object_auroc(
    id_scores: np.ndarray,
    id_groups: Sequence[str],
    ood_scores: np.ndarray,
    ood_groups: Sequence[str],
    name: str = "near-OOD objects",
) -> float:
    """AUROC of per-object mean scores, in-distribution objects positive."""
    return auroc(
        object_means(id_scores, id_groups), object_means(ood_scores, ood_groups), name=name
    )


def resample_weights(groups: Sequence[str], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) image weights of a bootstrap over objects: each resample draws as many
    objects as there are, with replacement; an image weighs as often as its object is drawn
    (the same statistic as concatenating the drawn objects' images)."""
    names, inverse = object_index(groups)
    counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=resamples)
    return counts[:, inverse].astype(np.float64)


def weighted_auroc(
    id_scores: np.ndarray, ood_scores: np.ndarray, id_w: np.ndarray, ood_w: np.ndarray
) -> np.ndarray:
    """AUROC (ID positive, ties one half) under each row of image weights: (B,) values.
    Per row it equals scikit-learn's roc_auc_score with those sample weights."""
    values, inverse = np.unique(np.r_[id_scores, ood_scores], return_inverse=True)
    n_id = len(id_scores)

    def mass(weights: np.ndarray, where: np.ndarray) -> np.ndarray:  # (B, distinct scores)
        onehot = sparse.csr_matrix(
            (np.ones(len(where)), (np.arange(len(where)), where)), shape=(len(where), len(values))
        )
        return np.asarray((onehot.T @ weights.T).T)

    id_m, ood_m = mass(id_w, inverse[:n_id]), mass(ood_w, inverse[n_id:])
    id_total = id_m.sum(axis=1, keepdims=True)
    above = id_total - np.cumsum(id_m, axis=1)  # ID weight strictly above each score
    wins = (ood_m * (above + 0.5 * id_m)).sum(axis=1)
    return wins / (id_total[:, 0] * ood_m.sum(axis=1))


def _interval(stats: np.ndarray, confidence: float) -> float:
    low, high = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float((high - low) / 2)


def mean_halfwidth(
    values: np.ndarray,
    groups: Sequence[str],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> float:
    """Half-width of the percentile-bootstrap CI of mean(values), resampling objects."""
    weights = resample_weights(groups, resamples, np.random.default_rng(seed))
    stats = weights @ np.asarray(values, dtype=np.float64) / weights.sum(axis=1)
    return _interval(stats, confidence)


def auroc_halfwidth(
    id_scores: np.ndarray,
    id_groups: Sequence[str],
    ood_scores: np.ndarray,
    ood_groups: Sequence[str],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> float:
    """Half-width of the percentile-bootstrap CI of the AUROC, resampling ID objects and
    OOD objects each on their own (so both sides stay present)."""
    rng = np.random.default_rng(seed)
    id_w = resample_weights(id_groups, resamples, rng)
    ood_w = resample_weights(ood_groups, resamples, rng)
    stats = np.concatenate(
        [
            weighted_auroc(id_scores, ood_scores, id_w[rows], ood_w[rows])
            for rows in np.array_split(np.arange(resamples), max(1, resamples // 100))
        ]
    )
    return _interval(stats, confidence)


def object_metrics(
    test_logits: np.ndarray,
    test_y: np.ndarray,
    test_groups: Sequence[str],
    near_groups: Sequence[str],
    near_scores: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """`object/accuracy` and `ood/near/<scorer>/object_auroc` from per-image values;
    `near_scores` maps a scorer to its (ID test scores, near-OOD scores)."""
    out = {"object/accuracy": object_accuracy(test_logits, test_y, test_groups)}
    for scorer, (id_s, ood_s) in near_scores.items():
        out[f"ood/near/{scorer}/object_auroc"] = object_auroc(id_s, test_groups, ood_s, near_groups)
    return out


def halfwidths(
    test_logits: np.ndarray,
    test_y: np.ndarray,
    test_groups: Sequence[str],
    headline: tuple[str, np.ndarray, np.ndarray],
    near_groups: Sequence[str],
    objects: bool,
) -> dict[str, float]:
    """`ci_halfwidth/<metric>`: 95% CI half-widths, resampling objects, of `test/accuracy`
    and of the headline near-OOD AUROC (`headline`: its key prefix, ID test scores, near-OOD
    scores); with `objects`, also of their object-level twins (`object/accuracy`,
    `.../object_auroc`)."""
    prefix, id_scores, near_scores = headline
    correct = np.asarray(test_logits).argmax(axis=1) == np.asarray(test_y).reshape(-1)
    out = {
        f"{CI}/test/accuracy": mean_halfwidth(correct, test_groups),
        f"{CI}/{prefix}/auroc": auroc_halfwidth(id_scores, test_groups, near_scores, near_groups),
    }
    if objects:
        id_names, ood_names = object_index(test_groups)[0], object_index(near_groups)[0]
        right = object_correct(test_logits, test_y, test_groups)
        out[f"{CI}/object/accuracy"] = mean_halfwidth(right, id_names)
        id_obj = object_means(id_scores, test_groups)
        ood_obj = object_means(near_scores, near_groups)
        out[f"{CI}/{prefix}/object_auroc"] = auroc_halfwidth(id_obj, id_names, ood_obj, ood_names)
    return out
