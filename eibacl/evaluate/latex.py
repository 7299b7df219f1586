"""Thesis-ready LaTeX of the comparison: `table.tex` and `paired_tests.tex` (booktabs).

Plain strings, no template engine: every text that comes from data (cell names, metric
names, the caption) goes through `escape`. The tables need `\\usepackage{booktabs}`.
"""

from __future__ import annotations

import math

from eibacl.evaluate.comparison import effect_text

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


def table_latex(
    table: dict[str, dict[str, tuple[float, float]]], caption: str, label: str = "tab:comparison"
) -> str:
    """One row per cell, one column per metric: mean ± sd, the best cell per column bold."""
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
            values.append(r"\textbf{" + text + "}" if cell in best[m] else text)
        lines.append(" & ".join([escape(cell)] + values) + r" \\")
    return "\n".join(lines + _end()) + "\n"


def paired_tests_latex(tests: list[dict], caption: str, label: str = "tab:paired-tests") -> str:
    """One row per paired test of a thesis metric: difference, 95% CI, p and Holm's p."""
    rows = [t for t in tests if t["metric"] in LATEX_METRICS]
    lines = _begin(caption, label, "lllrcrrr")
    lines.append(r"first & second & metric & difference & 95\% CI & $p$ & $p$ (Holm) & $n$ \\")
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
        ]
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
