import math

import numpy as np
import pytest
from scipy import stats as sps

from eibacl.evaluate.stats import blocked_paired_test, paired_test, variance_components


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


def test_variance_components_by_hand() -> None:
    # Splits A [1, 3], B [4, 6], C [7, 9]: within-split variance 2 each, so seed_var = 6 / 3;
    # split means 2, 5, 8 -> MSB = 2 * 18 / 2 = 18, n0 = 2 -> split_var = (18 - 2) / 2 = 8.
    out = variance_components([1, 3, 4, 6, 7, 9], ["A", "A", "B", "B", "C", "C"])
    assert out == {"split_var": 8.0, "seed_var": 2.0, "splits": 3, "n": 6}
    # Unbalanced: A [0, 2], B [5]: SSW = 2 on 1 df; grand mean 7/3, SSB = 32/3 on 1 df,
    # n0 = (3 - 5/3) / 1 = 4/3 -> split_var = (32/3 - 2) * 3/4 = 6.5.
    out = variance_components([0, 2, 5], [0, 0, 1])
    assert out["seed_var"] == pytest.approx(2.0) and out["split_var"] == pytest.approx(6.5)
    # A split effect smaller than the seed noise is estimated as 0, not negative.
    assert variance_components([0, 4, 1, 3], [0, 0, 1, 1])["split_var"] == 0.0
    one_split = variance_components([1, 2, 3], [0, 0, 0])
    assert math.isnan(one_split["split_var"]) and one_split["seed_var"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_blocked_test_matches_statsmodels_mixed_model(seed: int) -> None:
    """Balanced (split, seed) pairs: the t on split means is the REML mixed model's
    inference on the mean difference (same estimate, same standard error)."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(seed)
    splits, seeds = 5, 3
    blocks = np.repeat(np.arange(splits), seeds)
    a = rng.normal(80, 1, splits * seeds)  # percentage points: the optimiser's scale
    b = a + 1 + rng.normal(0, 3, splits)[blocks] + rng.normal(0, 1, a.size)
    out = blocked_paired_test(a, b, blocks)
    fit = sm.MixedLM(b - a, np.ones((a.size, 1)), groups=blocks).fit(reml=True)
    se = (out["ci_high"] - out["mean_diff"]) / sps.t.ppf(0.975, splits - 1)
    assert out["mean_diff"] == pytest.approx(fit.fe_params[0], abs=1e-9)
    assert se == pytest.approx(fit.bse_fe[0], rel=1e-3)
    assert (out["n"], out["blocks"]) == (15, 5)
    parts = variance_components(b - a, blocks)
    assert parts["split_var"] == pytest.approx(float(np.asarray(fit.cov_re)[0, 0]), rel=1e-3)
    assert parts["seed_var"] == pytest.approx(fit.scale, rel=1e-3)


def test_blocked_test_counts_splits_not_pairs() -> None:
    # Split means of d: 1, 2, 3 (seeds within a split vary): the t has 2 df, not 5.
    d = np.array([0.5, 1.5, 2.0, 2.0, 2.0, 4.0])
    out = blocked_paired_test(np.zeros(6), d, [0, 0, 1, 1, 2, 2])
    assert out["mean_diff"] == 2.0
    half = 4.302652729911275 / math.sqrt(3.0)
    assert out["ci_low"] == pytest.approx(2.0 - half) and out["ci_high"] == pytest.approx(2 + half)
    single = blocked_paired_test([0, 0, 0], [1, 2, 3], [7, 7, 7])
    assert single == paired_test([0, 0, 0], [1, 2, 3]) | {"blocks": 1}
