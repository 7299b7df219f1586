"""Holm's adjustment against hand-computed values and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest

from eibacl.evaluate.multiple_testing import holm


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # sorted 0.005, 0.01, 0.3, 0.5 -> 0.02, 0.03, 0.6, max(0.6, 0.5) = 0.6
    assert holm([0.005, 0.01, 0.5, 0.3]) == pytest.approx([0.02, 0.03, 0.6, 0.6])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_holm_ignores_nan_in_the_family():
    out = holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1])
    assert out[[0, 2]] == pytest.approx([0.02, 0.04])
    assert holm([]).size == 0


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, size)
        expected = multitest.multipletests(p, method="holm")[1]
        assert holm(p) == pytest.approx(expected)
