"""Thesis-ready LaTeX of the comparison: `table.tex` and `paired_tests.tex` (booktabs).

Plain strings, no template engine: every text that comes from data (cell names, metric
names, the caption) goes through `escape`. The tables need `\\usepackage{booktabs}`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from eibacl.evaluate.comparison import CellRun, effect_text, runs_by_cell
from eibacl.evaluate.resolution import t_half_width

# What a thesis table shows (the Markdown and CSV keep every metric): accuracy and the
# OOD AUROCs, image- and object-level; columns a run lacks are left out.
LATEX_METRICS = (
    "test/accuracy",
    "object/accuracy",
    "ood/near/mahalanobis/auroc",
    "ood/near/mahalanobis/object_auroc",
    "ood/near/knn/auroc",
    "ood/near/knn/object_auroc",
    "ood/far/mahalanobis/auroc",
    "ood/far/knn/auroc",
)
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: str) -> str:
    """`text` as LaTeX prints it literally (underscores, %, &, braces, ...)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def lower_is_better(metric: str) -> bool:
    return "fpr" in metric.rsplit("/", 1)[-1]


def best_cells(table: dict[str, dict[str, tuple[float, float]]], metric: str) -> set[str]:
    """The cells with the best mean of `metric` (ties all win)."""
    means = {cell: row[metric][0] for cell, row in table.items() if metric in row}
    means = {c: m for c, m in means.items() if math.isfinite(m)}
    if not means:
        return set()
    best = (min if lower_is_better(metric) else max)(means.values())
    return {c for c, m in means.items() if m == best}


def cell_intervals(runs: list[CellRun]) -> dict[str, dict[str, float]]:
    """cell -> metric -> 95% CI half-width of the cell's mean: Student t over its runs (one
    split) or over its per-split means (several: the split is the unit, as in the tests)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for cell, by_pair in runs_by_cell(runs).items():
        for metric in LATEX_METRICS:
            by_split: dict[int, list[float]] = defaultdict(list)
            for (split, _), run in by_pair.items():
                if metric in run.metrics:
                    by_split[split].append(run.metrics[metric])
            units = [float(np.mean(v)) for v in by_split.values()]
            if len(by_split) == 1:
                units = next(iter(by_split.values()))
            if len(units) > 1:
                out[cell][metric] = t_half_width(float(np.std(units, ddof=1)), len(units))
    return dict(out)


def table_latex(
    table: dict[str, dict[str, tuple[float, float]]],
    caption: str,
    intervals: dict[str, dict[str, float]] | None = None,
    label: str = "tab:comparison",
) -> str:
    """One row per cell, one column per metric: mean ± sd and the mean's 95% CI (where
    `intervals` has it), the best cell per column bold."""
    intervals = intervals or {}
    metrics = [m for m in LATEX_METRICS if any(m in row for row in table.values())]
    best = {m: best_cells(table, m) for m in metrics}
    lines = _begin(caption, label, "l" + "c" * len(metrics))
    lines.append(" & ".join(["cell"] + [r"\texttt{" + escape(m) + "}" for m in metrics]) + r" \\")
    lines.append(r"\midrule")
    for cell, row in table.items():
        values = []
        for m in metrics:
            if m not in row:
                values.append("--")
                continue
            mean, sd = row[m]
            text = f"{mean:.3f} $\\pm$ {sd:.3f}"
            text = r"\textbf{" + text + "}" if cell in best[m] else text
            half = intervals.get(cell, {}).get(m, math.nan)
            if math.isfinite(half):
                text += r" {\scriptsize " + f"[{mean - half:.3f}, {mean + half:.3f}]" + "}"
            values.append(text)
        lines.append(" & ".join([escape(cell)] + values) + r" \\")
    return "\n".join(lines + _end()) + "\n"


def paired_tests_latex(tests: list[dict], caption: str, label: str = "tab:paired-tests") -> str:
    """One row per paired test of a thesis metric: difference, 95% CI, p and Holm's p (and
    the Holm family, with several generators)."""
    rows = [t for t in tests if t["metric"] in LATEX_METRICS]
    families = any("family" in t for t in rows)
    lines = _begin(caption, label, "lllrcrrr" + ("l" if families else ""))
    header = r"first & second & metric & difference & 95\% CI & $p$ & $p$ (Holm) & $n$"
    lines.append(header + (" & family" if families else "") + r" \\")
    lines.append(r"\midrule")
    for t in rows:
        metric = str(t["metric"])
        low, high = effect_text(metric, t["ci_low"]), effect_text(metric, t["ci_high"])
        cells = [
            escape(t["first"]),
            escape(t["second"]),
            r"\texttt{" + escape(metric) + "}",
            escape(effect_text(metric, t["mean_diff"])),
            escape(f"[{low}, {high}]"),
            f"{t['p_value']:.3g}",
            f"{t.get('p_holm', math.nan):.3g}",
            str(int(t["n"])),
        ] + ([escape(t.get("family", ""))] if families else [])
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join(lines + _end()) + "\n"


def _begin(caption: str, label: str, columns: str) -> list[str]:
    return [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[tbp]",
        r"\centering",
        r"\caption{" + escape(caption) + "}",
        r"\label{" + label + "}",
        r"\begin{tabular}{" + columns + "}",
        r"\toprule",
    ]


def _end() -> list[str]:
    return [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
