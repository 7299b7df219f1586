"""How small an effect the study can see: seed-to-seed noise of every metric.

Runs of one cell differ only in the training seed; two cells with the same seed share the
split and the synthetic set, so a comparison is paired. What limits a paired comparison is
the spread of the per-seed *differences*, pooled here over every pair of cells of one
method. From it: the 95% CI half-width at the study's number of seeds, the effect a paired
t-test detects with 80% power, and the number of seeds a target half-width needs.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
from scipy import stats as sps

from eibacl.evaluate.comparison import CellRun


def t_half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the Student-t CI of a mean of `n` values with standard deviation `sd`."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    return float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true mean difference a two-sided paired t-test at `alpha` finds with
    `power` (the usual t approximation: (t_{1-alpha/2} + t_{power}) * sd / sqrt(n))."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    df = n - 1
    return float(sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * sd / math.sqrt(n)


def seeds_needed(sd: float, half_width: float, confidence: float = 0.95, cap: int = 1000) -> int:
    """Fewest seeds (>= 2) whose paired CI half-width is <= `half_width`; `cap` + 1 if none."""
    if not np.isfinite(sd):
        return cap + 1
    for n in range(2, cap + 1):
        if t_half_width(sd, n, confidence) <= half_width:
            return n
    return cap + 1


def metric_noise(runs: list[CellRun], metrics: tuple[str, ...]) -> list[dict[str, float | str]]:
    """Per metric: `seed_sd` (pooled within-cell sd over seeds), `paired_sd` (pooled sd of
    per-seed differences between cells of one method) and the number of seeds `n`."""
    by_cell: dict[str, dict[int, CellRun]] = defaultdict(dict)
    for run in runs:
        by_cell[run.cell][run.seed] = run
    rows = []
    for metric in metrics:
        within, diffs = [], []
        for cell_runs in by_cell.values():
            values = [r.metrics[metric] for r in cell_runs.values() if metric in r.metrics]
            if len(values) > 1:
                within.append(np.var(values, ddof=1))
        for a, b in itertools.combinations(by_cell, 2):
            if a.split("/")[0] != b.split("/")[0]:
                continue
            seeds = sorted(set(by_cell[a]) & set(by_cell[b]))
            d = [
                by_cell[b][s].metrics[metric] - by_cell[a][s].metrics[metric]
                for s in seeds
                if metric in by_cell[a][s].metrics and metric in by_cell[b][s].metrics
            ]
            if len(d) > 1:
                diffs.append(np.var(d, ddof=1))
        if not within:
            continue
        n = max(len(c) for c in by_cell.values())
        rows.append(
            {
                "metric": metric,
                "seed_sd": float(math.sqrt(np.mean(within))),
                "paired_sd": float(math.sqrt(np.mean(diffs))) if diffs else math.nan,
                "n": n,
            }
        )
    return rows


def resolution_markdown(rows: list[dict], target: float = 0.02) -> str:
    lines = [
        "Seed-to-seed noise of each metric (pooled over cells), and what it lets the study "
        f"resolve. `CI ±` is the 95% half-width of a paired difference at n seeds, `MDE` the "
        f"difference detected with 80% power, `seeds for ±{target}` the seeds a paired "
        f"difference needs for a 95% half-width of {target}.",
        "",
        f"| metric | seed sd | paired sd | n | CI ± | MDE | seeds for ±{target} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sd, n = r["paired_sd"], int(r["n"])
        need = seeds_needed(sd, target)
        lines.append(
            f"| {r['metric']} | {r['seed_sd']:.4f} | {sd:.4f} | {n} | "
            f"{t_half_width(sd, n):.4f} | {detectable_effect(sd, n):.4f} | "
            f"{need if need <= 1000 else '>1000'} |"
        )
    return "\n".join(lines) + "\n"
