"""Resolution (seed noise -> detectable effect) and the plain-words answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from eibacl.evaluate.answer import (
    ACCURACY,
    NO_OBJECT_METRICS,
    OBJECT_ACCURACY,
    study_answer,
    verdict,
)
from eibacl.evaluate.comparison import CellRun, paired_comparisons
from eibacl.evaluate.resolution import (
    detectable_effect,
    metric_noise,
    resolution_markdown,
    seeds_needed,
    t_half_width,
)


def test_half_width_and_seeds_needed_by_hand():
    # n = 5: t_0.975,4 = 2.7764; sd 0.02 -> 2.7764 * 0.02 / sqrt(5) = 0.024833
    assert t_half_width(0.02, 5) == pytest.approx(2.776445 * 0.02 / math.sqrt(5), rel=1e-5)
    n = seeds_needed(0.02, 0.02)
    assert t_half_width(0.02, n) <= 0.02 < t_half_width(0.02, n - 1)
    assert n == 7  # t_0.975,6 / sqrt(7) = 0.9248 <= 1 < t_0.975,5 / sqrt(6) = 1.0494
    assert math.isnan(t_half_width(0.02, 1))
    # power: the t approximation, checked against scipy's noncentral t at that effect
    effect = detectable_effect(1.0, 10)
    nc = effect * math.sqrt(10)
    crit = sps.t.ppf(0.975, 9)
    power = 1 - sps.nct.cdf(crit, 9, nc) + sps.nct.cdf(-crit, 9, nc)
    assert 0.77 < power < 0.83


def _runs(diffs_b, diffs_c, base=0.9):
    runs = []
    for seed, (db, dc) in enumerate(zip(diffs_b, diffs_c)):
        noise = 0.01 * seed
        runs.append(CellRun("supcon", "none", seed, {ACCURACY: base + noise, "m": 0.5}))
        runs.append(CellRun("supcon", "positives", seed, {ACCURACY: base + noise + db, "m": 0.5}))
        runs.append(
            CellRun(
                "supcon", "positives+negatives", seed, {ACCURACY: base + noise + dc, "m": 0.5 + dc}
            )
        )
    return runs


def test_metric_noise_pools_within_cells_and_paired_differences():
    runs = _runs([0.01, 0.02, 0.03], [0.0, 0.0, 0.0])
    (row,) = metric_noise(runs, (ACCURACY,))
    # within-cell: 'none' and 'p+n' move 0.01 per seed (sd 0.01); 'positives' 0.02 (sd 0.02)
    assert row["seed_sd"] == pytest.approx(math.sqrt((0.01**2 + 0.02**2 + 0.01**2) / 3))
    # paired differences: none->pos sd 0.01, none->p+n 0, pos->p+n sd 0.01
    assert row["paired_sd"] == pytest.approx(math.sqrt((0.01**2 + 0 + 0.01**2) / 3))
    assert row["n"] == 3


def test_answer_says_yes_only_when_ci_and_holm_agree():
    good = _runs([0.010, 0.011, 0.012, 0.0105, 0.0115], [0.0, 0.001, 0.0, 0.001, 0.0])
    tests = paired_comparisons(good, metrics=(ACCURACY, "m"))
    text = study_answer(tests, ["supcon"], ["none", "positives", "positives+negatives"], "m")
    assert "RQ1" in text and "**Yes.** Positives raise test accuracy by +1.10 pt" in text
    noisy = _runs([0.02, -0.02, 0.01, -0.01, 0.0], [0.0] * 5)
    tests = paired_comparisons(noisy, metrics=(ACCURACY, "m"))
    text = study_answer(tests, ["supcon"], ["none", "positives", "positives+negatives"], "m")
    assert "**Not shown.**" in text and "**Yes.**" not in text


def test_verdict_needs_holm_too():
    t = {"ci_low": 0.001, "ci_high": 0.01, "p_value": 0.04, "p_holm": 0.12, "mean_diff": 0.005}
    assert verdict(t) == "unclear"
    assert verdict(t | {"p_holm": 0.04}) == "higher"
    assert verdict({"ci_low": -0.02, "ci_high": -0.01, "p_value": 0.01, "p_holm": 0.02}) == "lower"
    assert verdict(None) == "missing"
    assert verdict({"ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}) == "missing"


def _split_runs() -> list[CellRun]:
    """supcon/none: splits 0, 1, 2 hold [1, 3], [4, 6], [7, 9] (seeds 0, 1); positives adds
    0, 1, 2 per split (a pure split effect on the paired difference)."""
    none = {0: [1, 3], 1: [4, 6], 2: [7, 9]}
    runs = []
    for split, values in none.items():
        for seed, value in enumerate(values):
            runs.append(CellRun("supcon", "none", seed, {ACCURACY: value}, split=split))
            runs.append(
                CellRun("supcon", "positives", seed, {ACCURACY: value + split}, split=split)
            )
    return runs


def test_metric_noise_splits_variance_into_split_and_seed_by_hand():
    (row,) = metric_noise(_split_runs(), (ACCURACY,))
    # none: seed_var 2, split means 2, 5, 8 -> MSB 18, split_var (18 - 2) / 2 = 8;
    # positives: seed_var 2, split means 2, 6, 10 -> MSB 32, split_var (32 - 2) / 2 = 15.
    assert row["seed_sd"] == pytest.approx(math.sqrt(2.0))
    assert row["split_sd"] == pytest.approx(math.sqrt((8 + 15) / 2))
    # differences [0, 0], [1, 1], [2, 2]: all split, no seed noise; split means sd 1.
    assert row["paired_split_sd"] == pytest.approx(1.0) and row["paired_seed_sd"] == 0.0
    assert row["paired_sd"] == pytest.approx(1.0)
    assert (row["n"], row["splits"], row["seeds"]) == (3, 3, 2)
    text = resolution_markdown([row])
    assert "| test/accuracy | 3.3912 | 1.4142 | 85% | 1.0000 | 0.0000 | 100% |" in text
    assert "splits for ±0.02" in text


def test_paired_comparison_blocks_by_split_and_counts_a_pair_once():
    (test,) = paired_comparisons(_split_runs(), (ACCURACY,))
    # per-split mean differences 0, 1, 2: mean 1, sd 1, t on 2 df (3 splits), not 5
    half = 4.302652729911275 / math.sqrt(3.0)
    assert (test["n"], test["blocks"]) == (6, 3)
    assert test["ci_low"] == pytest.approx(1 - half) and test["ci_high"] == pytest.approx(1 + half)
    twice = _split_runs() + [CellRun("supcon", "none", 0, {ACCURACY: 0.0}, split=0)]
    with pytest.raises(ValueError, match=r"supcon/none has two runs for \(split, seed\) \(0, 0\)"):
        paired_comparisons(twice, (ACCURACY,))


def test_one_split_says_the_split_variance_is_not_measured():
    (row,) = metric_noise(_runs([0.01, 0.02, 0.03], [0.0, 0.0, 0.0]), (ACCURACY,))
    assert math.isnan(row["split_sd"]) and row["splits"] == 1
    assert "split-to-split variance is not measured" in resolution_markdown([row])


def test_answer_reports_object_metrics_where_measured_and_says_once_when_absent():
    runs = _runs([0.01, 0.02, 0.03], [0.0, 0.01, 0.0])
    modes = ["none", "positives", "positives+negatives"]
    without = study_answer(paired_comparisons(runs, (ACCURACY, "m")), ["supcon"], modes, "m")
    assert without.count(NO_OBJECT_METRICS) == 1
    for run in runs:  # object accuracy 0.1 above the image accuracy, per run
        run.metrics |= {OBJECT_ACCURACY: run.metrics[ACCURACY] + 0.1, "object_m": 0.4}
    tests = paired_comparisons(runs, (ACCURACY, OBJECT_ACCURACY, "m", "object_m"))
    text = study_answer(tests, ["supcon"], modes, "m")
    assert NO_OBJECT_METRICS not in text
    assert "- supcon/positives vs supcon/none, object/accuracy: +2.00 pt" in text
    assert "- supcon/positives+negatives vs supcon/none, object_m:" in text
