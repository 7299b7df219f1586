"""Holm-Bonferroni adjustment of a family of p-values.

Written here because scipy has only false-discovery-rate procedures
(`scipy.stats.false_discovery_control`) and statsmodels, which has Holm, is a large
dependency for ten lines; the tests check this against `statsmodels.stats.multitest`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and is not
    counted in the family. ``p_holm[i] <= alpha`` rejects hypothesis i at family-wise error
    rate alpha."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
