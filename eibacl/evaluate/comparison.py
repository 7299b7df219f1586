"""The study's comparison table: mean and spread per cell, and paired tests across runs.

A cell is (method, synthetic mode); its runs differ in the training seed and, with
`splits` > 1, in the object-grouped split (each split with its own synthetic set). Runs
with the same (split, seed) share the split and the synthetic set, so differences between
two cells are paired by (split, seed); with several splits the split is a block of the
paired test (`stats.blocked_paired_test`).

When `compare` runs several generators, a mode that reads the generator is one cell per
generator, labelled `positives [ddpm-prior]`; the other modes are shared by every generator.
The tests then come in Holm families (`family`): one per generator (the tests that
generator would have alone: its cells and the shared ones), and `generators`: each
generator-dependent cell against the first generator's.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from eibacl.evaluate.multiple_testing import holm
from eibacl.evaluate.stats import blocked_paired_test

TABLE_METRICS = (
    "test/accuracy",
    "object/accuracy",  # object-level metrics: only sources with object ids have them
    "ood/near/mahalanobis/auroc",
    "ood/near/mahalanobis/object_auroc",
    "ood/near/knn/auroc",
    "ood/near/knn/object_auroc",
    "ood/near/knn/fpr95",
    "ood/far/mahalanobis/auroc",
    "ood/far/knn/auroc",
    "ood/far/knn/fpr95",
    "ood/near/energy/auroc",
    "ood/near/energy/object_auroc",
    "ood/near/energy/fpr95",
    "ood/far/energy/auroc",
    "ood/far/energy/fpr95",
    "val/accuracy",
    "val/ood/near/mahalanobis/auroc",
    "val/ood/near/knn/auroc",
    "val/ood/near/energy/auroc",
)
GENERATOR_FAMILY = "generators"  # the Holm family of the tests between generators


@dataclass
class CellRun:
    method: str
    mode: str
    seed: int
    metrics: dict[str, float]
    run_id: str = ""
    split: int = 0  # the split_seed the run was trained on
    generator: str = ""  # label of the generator with several; "" for one, or a shared cell

    @property
    def cell(self) -> str:
        return cell_label(self.method, self.mode, self.generator)

    @property
    def pair(self) -> tuple[int, int]:
        """What pairs two cells' runs: the same split and the same training seed."""
        return (self.split, self.seed)


def cell_label(method: str, mode: str, generator: str = "") -> str:
    """'supcon/positives' with one generator, 'supcon/positives [ddpm-prior]' with several."""
    return f"{method}/{mode}" + (f" [{generator}]" if generator else "")


def aggregate(
    runs: list[CellRun], metrics: tuple[str, ...] = TABLE_METRICS
) -> dict[str, dict[str, tuple[float, float]]]:
    """cell -> metric -> (mean, sample std; 0 for one seed)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for metric in metrics:
            if metric in run.metrics:
                values[run.cell][metric].append(run.metrics[metric])
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for cell, by_metric in values.items():
        table[cell] = {
            m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for m, v in by_metric.items()
        }
    return table


def paired_comparisons(
    runs: list[CellRun], metrics: tuple[str, ...] = TABLE_METRICS
) -> list[dict[str, float | str]]:
    """Every pair of modes within a method, and every pair of methods within a mode:
    difference (second minus first), its confidence interval and p-value over the
    (split, seed) pairs, the split as a block (`blocks`: number of splits). With several
    generators, those tests per generator (`family`: its name; a test of two shared cells
    is in each family) and each generator-dependent cell against the first generator's
    (`family`: generators), Holm within each family."""
    generators = list(dict.fromkeys(r.generator for r in runs if r.generator))
    if not generators:
        return with_holm(_tests(runs, _within_pairs(runs), metrics))
    results = []
    for generator in generators:
        view = [r for r in runs if r.generator in ("", generator)]
        tests = with_holm(_tests(view, _within_pairs(view), metrics))
        results += [t | {"family": generator} for t in tests]
    tests = with_holm(_tests(runs, generator_pairs(runs, generators), metrics))
    return results + [t | {"family": GENERATOR_FAMILY} for t in tests]


def _within_pairs(runs: list[CellRun]) -> list[tuple[str, str]]:
    methods = sorted({r.method for r in runs})
    variants = list(dict.fromkeys(r.cell.split("/", 1)[1] for r in runs))
    pairs = [
        (f"{m}/{a}", f"{m}/{b}") for m in methods for a, b in itertools.combinations(variants, 2)
    ]
    return pairs + [
        (f"{a}/{v}", f"{b}/{v}") for v in variants for a, b in itertools.combinations(methods, 2)
    ]


def generator_pairs(runs: list[CellRun], generators: list[str]) -> list[tuple[str, str]]:
    """(a cell of the first generator, the same cell of another generator) where both ran."""
    cells = {r.cell for r in runs}
    firsts = dict.fromkeys((r.method, r.mode) for r in runs if r.generator == generators[0])
    return [
        (cell_label(method, mode, generators[0]), cell_label(method, mode, other))
        for other in generators[1:]
        for method, mode in firsts
        if cell_label(method, mode, other) in cells
    ]


def _tests(
    runs: list[CellRun], pairs: list[tuple[str, str]], metrics: tuple[str, ...]
) -> list[dict[str, float | str]]:
    by_cell = runs_by_cell(runs)
    results = []
    for first, second in pairs:
        keys = sorted(set(by_cell.get(first, {})) & set(by_cell.get(second, {})))
        for metric in metrics:
            a = [by_cell[first][k].metrics.get(metric, np.nan) for k in keys]
            b = [by_cell[second][k].metrics.get(metric, np.nan) for k in keys]
            if not keys or np.isnan(a).any() or np.isnan(b).any():
                continue
            test = blocked_paired_test(a, b, [split for split, _ in keys])
            results.append({"first": first, "second": second, "metric": metric} | test)
    return results


def runs_by_cell(runs: list[CellRun]) -> dict[str, dict[tuple[int, int], CellRun]]:
    """cell -> (split, seed) -> run; a (split, seed) of one cell is counted once."""
    by_cell: dict[str, dict[tuple[int, int], CellRun]] = defaultdict(dict)
    for run in runs:
        if run.pair in by_cell[run.cell]:
            raise ValueError(f"{run.cell} has two runs for (split, seed) {run.pair}")
        by_cell[run.cell][run.pair] = run
    return by_cell


def with_holm(results: list[dict]) -> list[dict]:
    """Add `p_holm`: Holm-Bonferroni over the tests of one metric (one family per metric:
    the table of that metric's comparisons, so a claim about accuracy is not diluted by the
    number of OOD scores that happen to be reported)."""
    for metric in dict.fromkeys(r["metric"] for r in results):
        family = [r for r in results if r["metric"] == metric]
        for r, adjusted in zip(family, holm([r["p_value"] for r in family])):
            r["p_holm"] = float(adjusted)
    return results


def table_csv(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    metrics = sorted({m for row in table.values() for m in row}, key=_metric_order)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cell"] + [f"{m} {stat}" for m in metrics for stat in ("mean", "std")])
    for cell, row in table.items():
        writer.writerow(
            [cell] + [f"{v:.6f}" for m in metrics for v in row.get(m, (np.nan, np.nan))]
        )
    return out.getvalue()


def table_markdown(
    table: dict[str, dict[str, tuple[float, float]]], seeds: int, splits: int = 1
) -> str:
    metrics = sorted({m for row in table.values() for m in row}, key=_metric_order)
    lines = [
        f"Mean ± std over {seeds} seed(s) x {splits} split(s); AUROC higher is better, FPR95 "
        "lower is better.",
        "",
        "| cell | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for cell, row in table.items():
        cells = [f"{row[m][0]:.4f} ± {row[m][1]:.4f}" if m in row else "" for m in metrics]
        lines.append(f"| {cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_tests_markdown(results: list[dict[str, float | str]]) -> str:
    lines = [
        "Paired t-tests over (split, seed) pairs: difference = second - first with its 95% "
        "confidence interval; with several splits the split is a block (t on the per-split "
        "mean differences, splits - 1 degrees of freedom); `effect` is the difference in the "
        "metric's own units (accuracy in percentage points); `p_holm` is Holm-Bonferroni "
        "adjusted over the comparisons of one metric; `n` pairs over `splits` splits.",
        "",
        "| first | second | metric | effect | difference | 95% CI | p-value | p_holm | n | "
        "splits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    families = any("family" in r for r in results)
    if families:
        lines[0] += FAMILY_NOTE
        lines[2:4] = [lines[2] + " family |", lines[3] + "---|"]
    for r in results:
        effect = effect_text(str(r["metric"]), float(r["mean_diff"]))
        lines.append(
            f"| {r['first']} | {r['second']} | {r['metric']} | {effect} | "
            f"{r['mean_diff']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
            f"{r['p_value']:.3g} | {r.get('p_holm', np.nan):.3g} | {int(r['n'])} | "
            f"{int(r.get('blocks', 1))} |" + (f" {r.get('family', '')} |" if families else "")
        )
    return "\n".join(lines) + "\n"


FAMILY_NOTE = (
    " With several generators, Holm runs within a `family` (and one metric): a generator's "
    "family holds the tests it would have alone (its cells and the shared ones, so a test of "
    "two shared cells is listed once per generator), `generators` each generator-dependent "
    "cell against the first generator's."
)


def effect_text(metric: str, difference: float) -> str:
    """A difference in the metric's own units: accuracy in percentage points, AUROC/FPR95
    as fractions."""
    if metric.endswith("accuracy"):
        return f"{100 * difference:+.2f} pt"
    return f"{difference:+.3f}"


def _metric_order(metric: str) -> int:
    return TABLE_METRICS.index(metric) if metric in TABLE_METRICS else len(TABLE_METRICS)
