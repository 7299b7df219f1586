"""The study's two questions answered in plain words, from the paired tests alone.

RQ1: do DA-Fusion positives improve SupCon? (`positives` vs `none`, test accuracy)
RQ2: do near-OOD negatives improve the rejection of unknown objects without costing
accuracy? (`positives+negatives` vs `positives` on the headline near-OOD AUROC, with
accuracy not worse by more than `ACCURACY_MARGIN`.)

A verdict says "yes" or "no" only when the 95% CI excludes zero *and* the Holm-adjusted
p-value is below 0.05; otherwise it says what the data do not rule out. Nothing here
reads a number that the tests did not compute.
"""

from __future__ import annotations

import math

from eibacl.evaluate.comparison import effect_text
from eibacl.evaluate.evaluation import HEADLINE_NEAR_OOD

ACCURACY = "test/accuracy"
OBJECT_ACCURACY = "object/accuracy"
ACCURACY_MARGIN = 0.005  # 0.5 points: "without losing accuracy" means not worse than this
ALPHA = 0.05


NO_OBJECT_METRICS = (
    "Object-level metrics (object/accuracy, ood/near/<scorer>/object_auroc) are absent: the "
    "data source has no object ids, so every figure here is per image."
)


def object_metric(metric: str) -> str:
    """'ood/near/mahalanobis/auroc' -> 'ood/near/mahalanobis/object_auroc'."""
    head, _, last = metric.rpartition("/")
    return f"{head}/object_{last}" if head else f"object_{last}"


def _find(tests: list[dict], first: str, second: str, metric: str) -> dict | None:
    for t in tests:
        if t["first"] == first and t["second"] == second and t["metric"] == metric:
            return t
        if t["first"] == second and t["second"] == first and t["metric"] == metric:
            flipped = dict(t, first=first, second=second, mean_diff=-t["mean_diff"])
            flipped["ci_low"], flipped["ci_high"] = -t["ci_high"], -t["ci_low"]
            return flipped
    return None


def _figures(t: dict) -> str:
    metric = str(t["metric"])
    return (
        f"{effect_text(metric, t['mean_diff'])} (95% CI [{effect_text(metric, t['ci_low'])}, "
        f"{effect_text(metric, t['ci_high'])}], p = {t['p_value']:.3g}, "
        f"p_holm = {t.get('p_holm', math.nan):.3g}, {_sample(t)})"
    )


def _sample(t: dict) -> str:
    blocks = int(t.get("blocks", 1))
    if blocks > 1:
        return f"{int(t['n'])} (split, seed) pairs, {blocks} splits as blocks"
    return f"{int(t['n'])} seeds"


def verdict(t: dict | None) -> str:
    """'higher' | 'lower' | 'unclear' | 'missing' for `second - first`."""
    if t is None or not math.isfinite(t.get("ci_low", math.nan)):
        return "missing"
    significant = t.get("p_holm", t["p_value"]) < ALPHA
    if t["ci_low"] > 0 and significant:
        return "higher"
    if t["ci_high"] < 0 and significant:
        return "lower"
    return "unclear"


def _rq1(tests: list[dict], method: str) -> str:
    t = _find(tests, f"{method}/none", f"{method}/positives", ACCURACY)
    v = verdict(t)
    if v == "missing":
        return "not measured (needs the modes none and positives, and 2 or more seeds)."
    said = {
        "higher": "**Yes.** Positives raise test accuracy by",
        "lower": "**No, they hurt.** Positives change test accuracy by",
        "unclear": "**Not shown.** The difference in test accuracy is",
    }[v]
    tail = "" if v != "unclear" else " The interval includes zero or does not survive Holm."
    return f"{said} {_figures(t)}.{tail}"


def _rq2(tests: list[dict], method: str, headline: str) -> str:
    base, mode = f"{method}/positives", f"{method}/positives+negatives"
    ood = _find(tests, base, mode, headline)
    acc = _find(tests, base, mode, ACCURACY)
    if verdict(ood) == "missing" or verdict(acc) == "missing":
        return "not measured (needs the modes positives and positives+negatives, 2+ seeds)."
    kept = acc["ci_low"] > -ACCURACY_MARGIN
    v = verdict(ood)
    if v == "higher" and kept:
        head = "**Yes.** Near-OOD negatives raise"
    elif v == "higher":
        head = "**Only at a cost.** Near-OOD negatives raise"
    elif v == "lower":
        head = "**No, they hurt.** Near-OOD negatives change"
    else:
        head = "**Not shown.** Near-OOD negatives change"
    accuracy = f"accuracy changes by {_figures(acc)}, " + (
        f"within the {100 * ACCURACY_MARGIN:.1f}-point margin"
        if kept
        else f"and a loss of more than {100 * ACCURACY_MARGIN:.1f} points is not ruled out"
    )
    return f"{head} {headline} by {_figures(ood)}; {accuracy}."


def study_answer(
    tests: list[dict], methods: list[str], modes: list[str], headline: str = HEADLINE_NEAR_OOD
) -> str:
    """`comparison/answer.md`: RQ1 and RQ2 per method, then every other mode against none."""
    lines = ["# The study's answer", ""]
    for method in methods:
        lines += [
            f"## {method}",
            "",
            f"- RQ1, do DA-Fusion positives help ({method}/positives vs {method}/none)? "
            + _rq1(tests, method),
            f"- RQ2, do near-OOD negatives help ({method}/positives+negatives vs "
            f"{method}/positives)? " + _rq2(tests, method, headline),
        ]
        for mode in modes:
            if mode == "none":
                continue
            for metric in (ACCURACY, OBJECT_ACCURACY, headline, object_metric(headline)):
                t = _find(tests, f"{method}/none", f"{method}/{mode}", metric)
                if t is not None and verdict(t) != "missing":
                    lines.append(
                        f"- {method}/{mode} vs {method}/none, {metric}: {_figures(t)} "
                        f"({verdict(t)})."
                    )
        lines.append("")
    if not any(t["metric"] == OBJECT_ACCURACY for t in tests):
        lines += [NO_OBJECT_METRICS, ""]
    lines.append(
        f"Verdicts need a 95% CI that excludes zero and p_holm < {ALPHA} (Holm over the "
        "comparisons of one metric). Effects are second minus first; accuracy in points."
    )
    return "\n".join(lines) + "\n"
