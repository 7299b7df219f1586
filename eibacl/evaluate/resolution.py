"""How small an effect the study can see: the noise of every metric.

Runs of one cell differ in the training seed (and, with several splits, in the split);
two cells with the same (split, seed) share the split and the synthetic set, so a
comparison is paired. What limits a paired comparison is the spread of the paired
*differences* (per seed with one split; per split, averaged over its seeds, with several),
pooled here over every pair of cells of one method. From it: the 95% CI half-width at the
study's number of seeds (or splits), the effect a paired t-test detects with 80% power, and
the number of seeds (or splits) a target half-width needs. With several splits the noise
is also split into its split-to-split and seed-to-seed parts.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
from scipy import stats as sps

from eibacl.evaluate.comparison import CellRun, runs_by_cell
from eibacl.evaluate.stats import variance_components


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
    """Per metric, pooled over cells (mean of variances):

    - `seed_sd`, `split_sd`: a cell's seed-to-seed sd (within a split) and split-to-split
      sd (`stats.variance_components`; NaN with one split);
    - `paired_seed_sd`, `paired_split_sd`: the same for the (split, seed)-paired differences
      between two cells of one method, the noise a paired comparison sees;
    - `paired_sd`: the sd of the unit of the paired test (the per-seed difference with one
      split; the per-split mean difference with several), and `n` such units;
    - `splits` and `seeds` (per split).
    """
    by_cell = runs_by_cell(runs)
    rows = []
    for metric in metrics:
        cells = [_values(cell_runs, metric) for cell_runs in by_cell.values()]
        cells = [c for c in cells if len(c) > 1]
        if not cells:
            continue
        diffs = []
        for a, b in itertools.combinations(by_cell, 2):
            if a.split("/")[0] != b.split("/")[0]:
                continue
            keys = sorted(set(by_cell[a]) & set(by_cell[b]))
            d = {
                k: by_cell[b][k].metrics[metric] - by_cell[a][k].metrics[metric]
                for k in keys
                if metric in by_cell[a][k].metrics and metric in by_cell[b][k].metrics
            }
            if len(d) > 1:
                diffs.append(d)
        splits = max(len({split for split, _ in c}) for c in cells)
        rows.append(
            {"metric": metric}
            | _pooled(cells, "")
            | _pooled(diffs, "paired_")
            | {
                "paired_sd": _unit_sd(diffs, splits),
                "n": splits if splits > 1 else max(len(c) for c in cells),
                "splits": splits,
                "seeds": max(len(c) for c in cells) // splits,
            }
        )
    return rows


def _values(cell_runs: dict[tuple[int, int], CellRun], metric: str) -> dict[tuple[int, int], float]:
    return {k: r.metrics[metric] for k, r in cell_runs.items() if metric in r.metrics}


def _pooled(groups: list[dict[tuple[int, int], float]], prefix: str) -> dict[str, float]:
    """Pooled split and seed sd of values keyed by (split, seed)."""
    parts = [variance_components(list(g.values()), [split for split, _ in g]) for g in groups if g]
    out = {}
    for name in ("split", "seed"):
        found = [p[f"{name}_var"] for p in parts if math.isfinite(p[f"{name}_var"])]
        out[f"{prefix}{name}_sd"] = float(math.sqrt(np.mean(found))) if found else math.nan
    return out


def _unit_sd(diffs: list[dict[tuple[int, int], float]], splits: int) -> float:
    """Pooled sd of what the paired test averages: per-seed differences (one split) or
    per-split mean differences (several: the split is the block)."""
    variances = []
    for d in diffs:
        if splits > 1:
            by_split: dict[int, list[float]] = defaultdict(list)
            for (split, _), value in d.items():
                by_split[split].append(value)
            units = [float(np.mean(v)) for v in by_split.values()]
        else:
            units = list(d.values())
        if len(units) > 1:
            variances.append(np.var(units, ddof=1))
    return float(math.sqrt(np.mean(variances))) if variances else math.nan


def resolution_markdown(rows: list[dict], target: float = 0.02) -> str:
    splits = max((int(r.get("splits", 1)) for r in rows), default=1)
    unit = "splits" if splits > 1 else "seeds"
    lines = [
        "Noise of each metric (pooled over cells), and what it lets the study resolve. "
        f"`CI ±` is the 95% half-width of a paired difference at n {unit}, `MDE` the "
        f"difference detected with 80% power, `{unit} for ±{target}` the {unit} a paired "
        f"difference needs for a 95% half-width of {target}"
        + (" (at the same seeds per split; the split is the test's block)." if splits > 1 else "."),
        "",
        f"| metric | seed sd | paired sd | n | CI ± | MDE | {unit} for ±{target} |",
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
    return "\n".join(lines + [""] + variance_markdown(rows, splits)) + "\n"


def variance_markdown(rows: list[dict], splits: int) -> list[str]:
    """The split-to-split vs seed-to-seed section of `resolution.md`."""
    if splits < 2:
        return [
            "One split: the split-to-split variance is not measured (every cell ran on the "
            "same objects); `compare -P splits=N` measures it."
        ]
    lines = [
        f"Split-to-split vs seed-to-seed ({splits} object-grouped splits): variance components "
        "of the one-way random-effects model value = mean + split + seed (ANOVA estimates, "
        "the split part truncated at 0), for a cell's values and for paired differences "
        "between cells of one method. `split share` = split variance / total.",
        "",
        "| metric | split sd | seed sd | split share | paired split sd | paired seed sd | "
        "paired split share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['split_sd']:.4f} | {r['seed_sd']:.4f} | "
            f"{_share(r['split_sd'], r['seed_sd'])} | {r['paired_split_sd']:.4f} | "
            f"{r['paired_seed_sd']:.4f} | {_share(r['paired_split_sd'], r['paired_seed_sd'])} |"
        )
    return lines


def _share(split_sd: float, seed_sd: float) -> str:
    total = split_sd**2 + seed_sd**2
    return f"{split_sd**2 / total:.0%}" if math.isfinite(total) and total > 0 else "n/a"
