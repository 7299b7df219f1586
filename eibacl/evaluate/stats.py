"""Paired comparison of two settings measured on the same seeds."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps


def paired_test(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> dict[str, float]:
    """Paired t-test of b against a (e.g. seed-matched runs of two settings).

    Returns `mean_diff` (mean of b - a), a Student-t confidence interval
    `ci_low`/`ci_high`, the two-sided `p_value` and `n`. With n < 2 the CI and
    p-value are NaN. When every difference is identical (zero spread) the CI
    collapses to that value and the p-value is 0 (or 1 if the difference is 0).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("paired samples contain NaN; drop the failed runs from both sides")
    d = y - x
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return {"mean_diff": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean_diff": mean, "ci_low": nan, "ci_high": nan, "p_value": nan, "n": n}
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return {"mean_diff": mean, "ci_low": mean, "ci_high": mean, "p_value": p, "n": n}
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sd / math.sqrt(n)
    p_value = float(sps.ttest_rel(y, x).pvalue)
    return {
        "mean_diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "p_value": p_value,
        "n": n,
    }


def variance_components(values: ArrayLike, blocks: ArrayLike) -> dict[str, float]:
    """Split-to-split and seed-to-seed variance of `values` grouped by `blocks` (splits).

    The one-way random-effects model value = mu + a_split + e_seed, estimated by the ANOVA
    method of moments: `seed_var` = the pooled within-split variance (SSW / (N - S)),
    `split_var` = max(0, (MSB - seed_var) / n0) with MSB = SSB / (S - 1) and
    n0 = (N - sum n_s^2 / N) / (S - 1) (= seeds per split when balanced). NaN where the
    layout cannot tell (one split: no `split_var`; one seed per split: no `seed_var`).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    groups = np.asarray(blocks).reshape(-1)
    if x.shape != groups.shape:
        raise ValueError(f"values and blocks need equal lengths, got {x.size} and {groups.size}")
    labels = list(dict.fromkeys(groups.tolist()))
    parts = [x[groups == label] for label in labels]
    n, s = x.size, len(parts)
    nan = math.nan
    ssw = sum(float(((p - p.mean()) ** 2).sum()) for p in parts)
    seed_var = ssw / (n - s) if n > s else nan
    split_var = nan
    if s > 1 and math.isfinite(seed_var):
        ssb = sum(p.size * (float(p.mean()) - float(x.mean())) ** 2 for p in parts)
        n0 = (n - sum(p.size**2 for p in parts) / n) / (s - 1)
        split_var = max(0.0, (ssb / (s - 1) - seed_var) / n0)
    return {"split_var": split_var, "seed_var": seed_var, "splits": s, "n": n}


def blocked_paired_test(
    a: ArrayLike, b: ArrayLike, blocks: ArrayLike, confidence: float = 0.95
) -> dict[str, float]:
    """Paired test of b against a with the split as a block: pairs are (split, seed), and
    the differences of one split share that split's objects, so they are not independent.

    The model is d = mu + a_split + e (random split effect); the test is the Student t on
    the per-split mean differences (S - 1 degrees of freedom), which for a balanced layout
    is exactly the REML mixed-model inference on mu. With one block it is `paired_test`.
    Returns `paired_test`'s keys (`n` = pairs) and `blocks` (splits).
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    groups = np.asarray(blocks).reshape(-1)
    if not x.shape == y.shape == groups.shape:
        raise ValueError(
            f"paired samples and blocks need equal lengths, got {x.size}, {y.size}, {groups.size}"
        )
    labels = list(dict.fromkeys(groups.tolist()))
    if len(labels) < 2:
        return paired_test(x, y, confidence) | {"blocks": len(labels)}
    d = y - x
    means = np.array([d[groups == label].mean() for label in labels])
    result = paired_test(np.zeros_like(means), means, confidence)
    return result | {"n": int(d.size), "blocks": len(labels)}
