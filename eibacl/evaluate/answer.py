"""The study's two questions answered in plain words, from the paired tests alone.

RQ1: do DA-Fusion positives improve SupCon? (`positives` vs `none`, test accuracy)
RQ2: do near-OOD negatives improve the rejection of unknown objects without costing
accuracy? (`positives+negatives` vs `positives` on the headline near-OOD AUROC, with
accuracy not worse by more than `ACCURACY_MARGIN`.)

A verdict says "yes" or "no" only when the 95% CI excludes zero *and* the Holm-adjusted
p-value is below 0.05; otherwise it says what the data do not rule out. Nothing here
reads a number that the tests did not compute.

With several generators, RQ1 and RQ2 are answered per generator (its Holm family, against
the shared `none`), then whether the generator changed the answer: the paired CI of one
generator's gain over `none` minus the first generator's, i.e. mode[g] - mode[first].
"""

from __future__ import annotations

import math
from collections.abc import Callable

from eibacl.config import needs_synthetic_set
from eibacl.evaluate.comparison import GENERATOR_FAMILY, cell_label, effect_text
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


def _rq1(tests: list[dict], none: str, positives: str) -> str:
    t = _find(tests, none, positives, ACCURACY)
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


def _rq2(tests: list[dict], base: str, mode: str, headline: str) -> str:
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


def _labeller(method: str, generator: str) -> Callable[[str], str]:
    """mode -> its cell: labelled with the generator only where the mode reads it."""
    return lambda mode: cell_label(method, mode, generator if needs_synthetic_set(mode) else "")


def _method_lines(
    tests: list[dict], method: str, modes: list[str], headline: str, generator: str = ""
) -> list[str]:
    """RQ1, RQ2 and every other mode against none, for one method (and generator)."""
    cell = _labeller(method, generator)
    none, pos, both = cell("none"), cell("positives"), cell("positives+negatives")
    lines = [
        f"- RQ1, do DA-Fusion positives help ({pos} vs {none})? " + _rq1(tests, none, pos),
        f"- RQ2, do near-OOD negatives help ({both} vs {pos})? " + _rq2(tests, pos, both, headline),
    ]
    for mode in modes:
        if mode == "none":
            continue
        for metric in (ACCURACY, OBJECT_ACCURACY, headline, object_metric(headline)):
            t = _find(tests, none, cell(mode), metric)
            if t is not None and verdict(t) != "missing":
                lines.append(f"- {cell(mode)} vs {none}, {metric}: {_figures(t)} ({verdict(t)}).")
    return lines


def study_answer(
    tests: list[dict],
    methods: list[str],
    modes: list[str],
    headline: str = HEADLINE_NEAR_OOD,
    generators: tuple[str, ...] = (),
) -> str:
    """`comparison/answer.md`: RQ1 and RQ2 per method, then every other mode against none;
    with several `generators` (the cells' labels), that per generator from its Holm family,
    then whether the generator changed the answer."""
    lines = ["# The study's answer", ""]
    if not generators:
        for method in methods:
            lines += [f"## {method}", "", *_method_lines(tests, method, modes, headline), ""]
    for generator in generators:
        family = [t for t in tests if t.get("family") == generator]
        lines += [f"## Generator {generator}", ""]
        for method in methods:
            body = _method_lines(family, method, modes, headline, generator)
            lines += [f"### {method}", "", *body, ""]
    if generators:
        lines += generator_change(tests, methods, headline, generators)
    if not any(t["metric"] == OBJECT_ACCURACY for t in tests):
        lines += [NO_OBJECT_METRICS, ""]
    lines.append(
        f"Verdicts need a 95% CI that excludes zero and p_holm < {ALPHA} (Holm over the "
        "comparisons of one metric). Effects are second minus first; accuracy in points."
    )
    if generators:
        lines[-1] += HOLM_FAMILIES
    return "\n".join(lines) + "\n"


HOLM_FAMILIES = (
    " With several generators Holm runs per generator over the comparisons it would have "
    "alone (its cells and the shared ones: each generator's verdicts are the ones a compare "
    "of that generator alone gives), and once over the between-generator comparisons."
)
CHANGES = (
    ("RQ1", "positives", ACCURACY),
    ("RQ2", "positives+negatives", None),  # None: the headline near-OOD AUROC
)


def generator_change(
    tests: list[dict], methods: list[str], headline: str, generators: tuple[str, ...]
) -> list[str]:
    """Each generator against the first: the paired CI of its gain over `none` minus the
    first's (mode[g] - mode[first]: the shared `none` cancels), and the verdicts side by
    side."""
    prior = "ddpm-prior" in generators
    first = generators[0]
    cross = [t for t in tests if t.get("family") == GENERATOR_FAMILY]
    lines = [
        f"## Did the {'prior' if prior else 'generator'} change the answer?",
        "",
        "Each generator's gain over the shared none cells minus the gain with "
        f"{first}, paired by (split, seed), so none cancels: mode[other] - mode[{first}], "
        "the same blocked paired t as the tests above, Holm over these between-generator "
        "comparisons of one metric.",
        "",
    ]
    for method in methods:
        for other in generators[1:]:
            for question, mode, metric in CHANGES:
                metric = metric or headline
                a, b = cell_label(method, mode, first), cell_label(method, mode, other)
                said = _change_words(_find(cross, a, b, metric), mode, metric)
                heads = _heads(tests, method, (first, other), question, headline)
                lines.append(f"- {method}, {question} ({b} vs {a}, {metric}): {said} {heads}")
    return lines + [""]


def _change_words(t: dict | None, mode: str, metric: str) -> str:
    v = verdict(t)
    if v == "missing":
        return f"not measured (needs {mode} with both generators, and 2 or more seeds)."
    said = {
        "higher": "**Yes, it gains more.** The gain over none is higher by",
        "lower": "**Yes, it gains less.** The gain over none is lower by",
        "unclear": "**Not shown.** The gain over none differs by",
    }[v]
    tail = " The interval includes zero or does not survive Holm." if v == "unclear" else ""
    return f"{said} {_figures(t)}.{tail}"


def _heads(
    tests: list[dict], method: str, pair: tuple[str, str], question: str, headline: str
) -> str:
    """'Verdicts: ddpm not shown, ddpm-prior yes.' from each generator's own answer."""
    said = []
    for generator in pair:
        family = [t for t in tests if t.get("family") == generator]
        cell = _labeller(method, generator)
        none, pos, both = cell("none"), cell("positives"), cell("positives+negatives")
        text = _rq1(family, none, pos) if question == "RQ1" else _rq2(family, pos, both, headline)
        head = text.split("**")[1].rstrip(".").lower() if "**" in text else "not measured"
        said.append(f"{generator} {head}")
    return f"{question} verdicts: {', '.join(said)}."
