"""The comparison table and paired tests, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from eibacl.evaluate.comparison import (
    CellRun,
    aggregate,
    paired_comparisons,
    paired_tests_markdown,
    table_csv,
    table_markdown,
)


def _runs() -> list[CellRun]:
    acc = {"none": [0.80, 0.82, 0.84], "positives": [0.85, 0.86, 0.90]}
    return [
        CellRun("supcon", mode, seed, {"test/accuracy": values[seed]})
        for mode, values in acc.items()
        for seed in range(3)
    ]


def test_aggregate_mean_and_sample_std():
    table = aggregate(_runs(), metrics=("test/accuracy",))
    mean, std = table["supcon/none"]["test/accuracy"]
    assert mean == pytest.approx(0.82)
    assert std == pytest.approx(0.02)  # sample std of 0.80, 0.82, 0.84
    assert table["supcon/positives"]["test/accuracy"][0] == pytest.approx(0.87)


def test_single_seed_has_zero_spread():
    table = aggregate([CellRun("ce", "none", 0, {"test/accuracy": 0.5})], ("test/accuracy",))
    assert table["ce/none"]["test/accuracy"] == (0.5, 0.0)


def test_paired_comparison_pairs_by_seed():
    (result,) = paired_comparisons(_runs(), metrics=("test/accuracy",))
    assert (result["first"], result["second"]) == ("supcon/none", "supcon/positives")
    diffs = np.array([0.05, 0.04, 0.06])
    assert result["mean_diff"] == pytest.approx(0.05)
    assert result["p_value"] == pytest.approx(
        stats.ttest_rel([0.85, 0.86, 0.90], [0.80, 0.82, 0.84]).pvalue
    )
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert result["ci_low"] == pytest.approx(0.05 - half)
    assert result["ci_high"] == pytest.approx(0.05 + half)


def test_methods_are_compared_within_a_mode():
    runs = _runs() + [
        CellRun("ce", "none", seed, {"test/accuracy": 0.7 + 0.01 * seed}) for seed in range(3)
    ]
    pairs = {(r["first"], r["second"]) for r in paired_comparisons(runs, ("test/accuracy",))}
    assert ("ce/none", "supcon/none") in pairs
    assert ("supcon/none", "supcon/positives") in pairs
    assert ("ce/positives", "supcon/positives") not in pairs  # no CE run with positives


def test_renderings_contain_every_cell():
    runs = _runs()
    table = aggregate(runs, ("test/accuracy",))
    csv_text = table_csv(table)
    assert csv_text.splitlines()[0] == "cell,test/accuracy mean,test/accuracy std"
    assert "supcon/positives,0.870000" in csv_text
    assert "| supcon/none | 0.8200 ± 0.0200 |" in table_markdown(table, 3)
    assert "+0.0500" in paired_tests_markdown(paired_comparisons(runs, ("test/accuracy",)))
