"""The comparison's LaTeX is well-formed without compiling it."""

from __future__ import annotations

import re

from eibacl.evaluate.comparison import CellRun, aggregate, paired_comparisons
from eibacl.evaluate.latex import cell_intervals, escape, paired_tests_latex, table_latex

CAPTION = "supcon vs ce, 50% of shots_per_class & 3 seeds"


def _runs() -> list[CellRun]:
    values = {"supcon/none": 0.80, "supcon/positives+negatives": 0.85, "ce/none": 0.82}
    runs = []
    for cell, base in values.items():
        method, mode = cell.split("/")
        for seed in range(3):
            metrics = {
                "test/accuracy": base + 0.01 * seed,
                "ood/near/knn/auroc": 1.5 - base + 0.001 * seed,
                "ood/near/knn/fpr95": 0.5,  # not a thesis column
            }
            runs.append(CellRun(method, mode, seed, metrics))
    return runs


def unescaped(text: str, char: str) -> int:
    """How many `char` in non-comment lines are not preceded by a backslash."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    return len(re.findall(rf"(?<!\\){re.escape(char)}", body))


def balanced(text: str) -> bool:
    depth = 0
    for token in re.findall(r"\\[{}]|[{}]", text):
        if token in ("{", "}"):
            depth += 1 if token == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def _body_rows(text: str) -> list[str]:
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    return [line for line in body.splitlines() if line.strip()]


def test_table_is_well_formed_with_one_row_per_cell_and_the_best_in_bold():
    runs = _runs()
    table = aggregate(runs)
    tex = table_latex(table, CAPTION, cell_intervals(runs))
    assert balanced(tex) and unescaped(tex, "_") == 0 and unescaped(tex, "%") == 0
    assert unescaped(tex, "&") == tex.count(" & ")  # only column separators
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert r"\toprule" in tex and r"\bottomrule" in tex
    rows = _body_rows(tex)
    assert len(rows) == 3 and all(row.endswith(r"\\") for row in rows)
    assert all(row.count(" & ") == 2 for row in rows)  # cell + accuracy + near knn AUROC
    assert r"supcon/positives+negatives & \textbf{0.860 $\pm$ 0.010}" in tex
    # CI of the mean over 3 runs: t(2) = 4.3027 x sd / sqrt(3): 0.81 +- 0.0248, 0.701 +- 0.0025
    assert (
        r"supcon/none & 0.810 $\pm$ 0.010 {\scriptsize [0.785, 0.835]} & "
        r"\textbf{0.701 $\pm$ 0.001} {\scriptsize [0.699, 0.703]} \\"
    ) in tex
    assert r"50\% of shots\_per\_class \& 3 seeds" in tex
    assert "fpr95" not in tex


def test_paired_tests_are_well_formed():
    tests = paired_comparisons(_runs(), ("test/accuracy", "ood/near/knn/auroc"))
    tex = paired_tests_latex(tests, CAPTION)
    assert balanced(tex) and unescaped(tex, "_") == 0 and unescaped(tex, "%") == 0
    rows = _body_rows(tex)
    assert len(rows) == len(tests) == 4  # two pairs of cells x two metrics
    assert all(row.count(" & ") == 7 for row in rows)


def test_checks_catch_what_they_check():
    assert not balanced(r"\textbf{a") and balanced(r"\{ a")
    assert unescaped("a_b", "_") == 1 and unescaped(escape("a_b 5%"), "%") == 0
    assert escape(r"{x}\y") == r"\{x\}\textbackslash{}y"
