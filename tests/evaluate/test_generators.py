"""Several generators in one comparison: labels, Holm families, and the answer per generator
with the paired CI of one generator's gain minus the other's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from eibacl.evaluate.answer import ACCURACY, study_answer
from eibacl.evaluate.comparison import (
    GENERATOR_FAMILY,
    CellRun,
    aggregate,
    effect_text,
    paired_comparisons,
    paired_tests_markdown,
    table_csv,
    table_markdown,
)
from eibacl.evaluate.latex import paired_tests_latex, table_latex

HEADLINE = "m"  # stands for the headline near-OOD AUROC
NONE = np.array([0.80, 0.81, 0.83, 0.82])
GAIN = {  # accuracy gain over none per seed, by (mode, generator)
    ("positives", "ddpm"): np.array([0.001, -0.002, 0.000, 0.003]),
    ("positives", "ddpm-prior"): np.array([0.010, 0.012, 0.011, 0.014]),
    ("positives+negatives", "ddpm"): np.array([0.000, 0.001, -0.001, 0.000]),
    ("positives+negatives", "ddpm-prior"): np.array([0.002, 0.001, 0.003, 0.001]),
}
HEAD_GAIN = {  # headline gain over none per seed (positives: none)
    "ddpm": np.array([0.001, -0.001, 0.002, 0.000]),
    "ddpm-prior": np.array([0.030, 0.020, 0.025, 0.028]),
}


def _runs(labelled: bool = True) -> list[CellRun]:
    runs = []
    for seed, base in enumerate(NONE):
        runs.append(CellRun("supcon", "none", seed, {ACCURACY: base, HEADLINE: 0.7}))
        for (mode, gen), gain in GAIN.items():
            head = 0.7 + (HEAD_GAIN[gen][seed] if "negatives" in mode else 0.0)
            metrics = {ACCURACY: base + gain[seed], HEADLINE: head}
            runs.append(CellRun("supcon", mode, seed, metrics, generator=gen if labelled else ""))
    return runs


def test_generator_dependent_cells_are_labelled_and_shared_ones_are_not():
    table = aggregate(_runs(), (ACCURACY,))
    assert list(table) == [
        "supcon/none",
        "supcon/positives [ddpm]",
        "supcon/positives [ddpm-prior]",
        "supcon/positives+negatives [ddpm]",
        "supcon/positives+negatives [ddpm-prior]",
    ]
    mean = float(np.mean(NONE + GAIN[("positives", "ddpm-prior")]))
    assert f"| supcon/positives [ddpm-prior] | {mean:.4f} ± " in table_markdown(table, 4)
    assert f"\nsupcon/positives [ddpm-prior],{mean:.6f}," in table_csv(table)
    assert r"supcon/positives+negatives [ddpm-prior] & " in table_latex(table, "c")


def test_each_generator_keeps_the_holm_family_it_would_have_alone():
    tests = paired_comparisons(_runs(), (ACCURACY, HEADLINE))
    for generator in ("ddpm", "ddpm-prior"):
        alone = [
            CellRun(r.method, r.mode, r.seed, r.metrics)
            for r in _runs()
            if r.generator in ("", generator)
        ]
        expected = paired_comparisons(alone, (ACCURACY, HEADLINE))
        family = [t for t in tests if t["family"] == generator]
        assert len(family) == len(expected) == 3 * 2 * 2 // 2  # 3 pairs x 2 metrics
        for got, want in zip(family, expected):
            suffix = f" [{generator}]"
            assert got["first"].removesuffix(suffix) == want["first"]
            assert got["second"].removesuffix(suffix) == want["second"]
            assert got["p_holm"] == pytest.approx(want["p_holm"])
    between = [t for t in tests if t["family"] == GENERATOR_FAMILY]
    assert {(t["first"], t["second"]) for t in between} == {
        ("supcon/positives [ddpm]", "supcon/positives [ddpm-prior]"),
        ("supcon/positives+negatives [ddpm]", "supcon/positives+negatives [ddpm-prior]"),
    }
    assert "| family |" in paired_tests_markdown(tests)
    assert r"& family \\" in paired_tests_latex(tests, "c", "t")


def test_one_generator_gives_todays_tests_and_answer():
    runs = [r for r in _runs() if r.generator in ("", "ddpm") and "negatives" not in r.mode]
    runs = [CellRun(r.method, r.mode, r.seed, r.metrics) for r in runs]
    tests = paired_comparisons(runs, (ACCURACY,))
    assert [(t["first"], t["second"]) for t in tests] == [("supcon/none", "supcon/positives")]
    assert all("family" not in t for t in tests)
    assert "family" not in paired_tests_markdown(tests) + paired_tests_latex(tests, "c", "t")
    text = study_answer(tests, ["supcon"], ["none", "positives"])
    assert text.startswith(
        "# The study's answer\n\n## supcon\n\n- RQ1, do DA-Fusion positives help "
        "(supcon/positives vs supcon/none)? **Not shown.**"
    )
    assert "Generator" not in text and "Holm runs per generator" not in text


def test_answer_per_generator_and_the_ci_of_the_gain_difference_by_hand():
    tests = paired_comparisons(_runs(), (ACCURACY, HEADLINE))
    modes = ["none", "positives", "positives+negatives"]
    text = study_answer(tests, ["supcon"], modes, HEADLINE, generators=("ddpm", "ddpm-prior"))
    ddpm, prior = text.index("## Generator ddpm\n"), text.index("## Generator ddpm-prior")
    change = text.index("## Did the prior change the answer?")
    assert ddpm < prior < change
    assert "(supcon/positives [ddpm] vs supcon/none)? **Not shown.**" in text[ddpm:prior]
    assert "(supcon/positives [ddpm-prior] vs supcon/none)? **Yes.**" in text[prior:change]
    # the change: positives[prior] - positives[ddpm] = the gain difference (none cancels)
    for mode, metric, diff in (
        ("positives", ACCURACY, GAIN[("positives", "ddpm-prior")] - GAIN[("positives", "ddpm")]),
        ("positives+negatives", HEADLINE, HEAD_GAIN["ddpm-prior"] - HEAD_GAIN["ddpm"]),
    ):
        pair = (f"supcon/{mode} [ddpm]", f"supcon/{mode} [ddpm-prior]", metric)
        (t,) = [t for t in tests if (t["first"], t["second"], t["metric"]) == pair]
        low, high = stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)
        assert (t["ci_low"], t["ci_high"]) == pytest.approx((low, high))
        assert t["mean_diff"] == pytest.approx(diff.mean())
        ci = f"95% CI [{effect_text(metric, t['ci_low'])}, {effect_text(metric, t['ci_high'])}]"
        assert ci in text[change:]
    lines = text[change:].splitlines()
    rq1 = next(line for line in lines if line.startswith("- supcon, RQ1"))
    assert "**Yes, it gains more.** The gain over none is higher by +1.1" in rq1
    assert rq1.endswith("RQ1 verdicts: ddpm not shown, ddpm-prior yes.")
    rq2 = next(line for line in lines if line.startswith("- supcon, RQ2"))
    assert rq2.endswith("RQ2 verdicts: ddpm not shown, ddpm-prior only at a cost.")
    assert "Holm runs per generator" in text
