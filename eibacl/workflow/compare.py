"""`compare`: the study's grid {SupCon, CE} x synthetic modes (`modes`) x seeds.

All cells share the split (`split_seed`) and the synthetic set (generation has its own
`generator_seed`), so results are paired by training seed. Finished cell runs with the
same parameters are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging

from eibacl import names, tracking
from eibacl.config import CompareConfig, needs_synthetic_set
from eibacl.evaluate.answer import study_answer
from eibacl.evaluate.comparison import (
    TABLE_METRICS,
    CellRun,
    aggregate,
    paired_comparisons,
    paired_tests_markdown,
    table_csv,
    table_markdown,
)
from eibacl.evaluate.evaluation import HEADLINE_NEAR_OOD
from eibacl.evaluate.plots import bar_chart_figure
from eibacl.evaluate.resolution import metric_noise, resolution_markdown
from eibacl.keys import key_part
from eibacl.workflow.steps import (
    baseline_step,
    generate_step,
    pretrain_step,
    probe_step,
    run_metrics,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CompareResult:
    runs: list[CellRun]
    table: dict[str, dict[str, tuple[float, float]]]
    tests: list[dict]
    run_id: str
    answer: str


def compare(config: CompareConfig) -> CompareResult:
    methods = [m for m in config.methods.split(",") if m]
    modes = [m for m in config.modes.split(",") if m]
    seeds = [config.seed + i for i in range(config.seeds)]
    with tracking.start_run(run_name="compare", tags={names.ENTRY_TAG: "compare"}) as parent:
        tracking.log_params(dataclasses.asdict(config))
        if any(needs_synthetic_set(mode) for mode in modes) and not config.synthetic_set:
            generate_step(config)
        runs: list[CellRun] = []
        for method in methods:
            for mode in modes:
                for seed in seeds:
                    run_id = _cell(config, method, mode, seed)
                    runs.append(CellRun(method, mode, seed, run_metrics(run_id), run_id))
                    tracking.set_tags({cell_tag(method, mode, seed): run_id})
        table = aggregate(runs)
        tests = paired_comparisons(runs)
        answer = study_answer(tests, methods, modes)
        tracking.log_text(table_csv(table), "comparison/table.csv")
        tracking.log_text(table_markdown(table, len(seeds)), "comparison/table.md")
        tracking.log_text(paired_tests_markdown(tests), "comparison/paired_tests.md")
        tracking.log_dict({"tests": tests}, "comparison/paired_tests.json")
        tracking.log_text(
            resolution_markdown(metric_noise(runs, TABLE_METRICS)), "comparison/resolution.md"
        )
        tracking.log_text(answer, "comparison/answer.md")
        for metric in (
            "test/accuracy",
            HEADLINE_NEAR_OOD,
            "ood/near/knn/auroc",
            "ood/far/knn/auroc",
        ):
            if not any(metric in row for row in table.values()):
                continue  # e.g. far-OOD metrics with far_ood=none
            figure = bar_chart_figure(table, metric, title=f"{metric} (mean ± std over seeds)")
            tracking.log_figure(figure, f"comparison/{metric.replace('/', '_')}.png")
        tracking.log_metrics(
            {
                f"{cell_key(cell)}/{m}": mean
                for cell, row in table.items()
                for m, (mean, _) in row.items()
            }
        )
        print(table_markdown(table, len(seeds)))
        print(answer)
        return CompareResult(runs, table, tests, parent.info.run_id, answer)


def cell_key(cell: str) -> str:
    """'supcon/positives+negatives' -> 'supcon/positives_negatives' (a valid MLflow key)."""
    return "/".join(key_part(part) for part in cell.split("/"))


def cell_tag(method: str, mode: str, seed: int) -> str:
    """Tag naming one cell run, e.g. eibacl.cell.supcon.positives_negatives.0."""
    return f"{names.CELL_TAG_PREFIX}{key_part(method)}.{key_part(mode)}.{seed}"


def _cell(config: CompareConfig, method: str, mode: str, seed: int) -> str:
    changes = {"synthetic": mode, "seed": seed}
    if method == "supcon":
        pretrain_run, _ = pretrain_step(config, **changes)
        probe_run, _ = probe_step(config, pretrain_run, register=False)
        return probe_run
    baseline_run, _ = baseline_step(config, register=False, **changes)
    return baseline_run
