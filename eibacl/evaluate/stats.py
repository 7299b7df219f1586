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
