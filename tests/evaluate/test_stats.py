import math

import numpy as np
import pytest
from scipy import stats as sps

from eibacl.evaluate.stats import paired_test


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    a = rng.normal(0.8, 0.05, n)
    b = a + rng.normal(0.02, 0.03, n)
    out = paired_test(a, b, confidence=0.9)
    ref = sps.ttest_rel(b, a)
    assert out["n"] == n
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["mean_diff"] == pytest.approx(np.mean(b - a))
    ci = ref.confidence_interval(confidence_level=0.9)
    assert out["ci_low"] == pytest.approx(ci.low) and out["ci_high"] == pytest.approx(ci.high)


def test_hand_computed_case() -> None:
    # d = [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t = 2 * sqrt(3), df = 2.
    # t_{0.975, 2} = 4.302652729911275 -> half width 2.4841377...
    out = paired_test([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert out["mean_diff"] == 2.0
    half = 4.302652729911275 / math.sqrt(3.0)
    assert out["ci_low"] == pytest.approx(2.0 - half) and out["ci_high"] == pytest.approx(
        2.0 + half
    )
    # two-sided p for t = 2 sqrt(3) with 2 df: 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14)
    assert out["p_value"] == pytest.approx(1.0 - math.sqrt(12.0 / 14.0))


def test_small_n_gives_nan_not_crash() -> None:
    one = paired_test([0.5], [0.7])
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.2)
    assert all(math.isnan(one[k]) for k in ("ci_low", "ci_high", "p_value"))
    zero = paired_test([], [])
    assert zero["n"] == 0 and math.isnan(zero["mean_diff"])


def test_zero_spread() -> None:
    out = paired_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert out["p_value"] == 0.0 and out["ci_low"] == out["ci_high"] == pytest.approx(0.5)
    assert paired_test([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0


def test_rejects_unpaired_or_nan() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_test([1.0, np.nan], [1.0, 2.0])
