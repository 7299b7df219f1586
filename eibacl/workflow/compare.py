"""`compare`: the study's grid {SupCon, CE} x synthetic modes (`modes`) x seeds x splits.

Every split (`split_seed`, `split_seed` + 1, ... for `splits`) has its own synthetic set
(generation is keyed by the split: it learns from that split's training images); all
cells of one split share it, so results are paired by (split, seed), the split a block of
the paired tests. Cells run in `workers` processes against the one store. Finished cell
runs with the same parameters are reused, so an interrupted comparison continues where it
stopped.

With `generators` (e.g. ddpm,ddpm-prior), a mode that reads the generator (positives or
negatives) runs once per generator, on that generator's synthetic set of the split; the
other modes run once and are shared, so every cell stays paired by (split, seed).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from eibacl import names, tracking
from eibacl.config import CompareConfig, ConfigError, GenerateConfig, needs_synthetic_set
from eibacl.evaluate.answer import NO_OBJECT_METRICS, OBJECT_ACCURACY, study_answer
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
from eibacl.evaluate.latex import cell_intervals, paired_tests_latex, table_latex
from eibacl.evaluate.plots import bar_chart_figure
from eibacl.evaluate.resolution import metric_noise, resolution_markdown
from eibacl.keys import key_part
from eibacl.workflow.parallel import WorkerPool, auto_workers
from eibacl.workflow.steps import (
    baseline_step,
    generate_step,
    pretrain_step,
    probe_step,
    run_metrics,
)

log = logging.getLogger(__name__)
CHART_METRICS = ("test/accuracy", HEADLINE_NEAR_OOD, "ood/near/knn/auroc", "ood/far/knn/auroc")


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    mode: str
    split: int  # the split_seed
    seed: int
    generator: str = ""  # a `generators` name; "" = the run's own settings (auto, shared)


@dataclasses.dataclass
class CompareResult:
    runs: list[CellRun]
    table: dict[str, dict[str, tuple[float, float]]]
    tests: list[dict]
    run_id: str
    answer: str


def grid(config: CompareConfig) -> list[Cell]:
    """Every cell, split-major: a mode that reads the generator once per generator."""
    generators = config.generator_names() or ("",)
    return [
        Cell(method, mode, split, seed, generator)
        for split in range(config.split_seed, config.split_seed + config.split_count())
        for method in [m for m in config.methods.split(",") if m]
        for mode in [m for m in config.modes.split(",") if m]
        for generator in (generators if needs_synthetic_set(mode) else ("",))
        for seed in range(config.seed, config.seed + config.seeds)
    ]


def synthetic_sets(config: CompareConfig, cells: list[Cell]) -> list[tuple[int, str]]:
    """(split, generator) of each synthetic set the cells need; none with `synthetic_set`
    (refused where one set cannot serve every split and generator)."""
    sets = list(dict.fromkeys((c.split, c.generator) for c in cells if needs_synthetic_set(c.mode)))
    if sets and config.synthetic_set and config.split_count() > 1:
        raise ConfigError(
            f"synthetic_set={config.synthetic_set} is one split's set, but "
            f"splits={config.split_count()} needs one per split: leave synthetic_set empty "
            "(each split makes or reuses its own)"
        )
    if sets and config.synthetic_set and config.generator_names():
        raise ConfigError(
            f"synthetic_set={config.synthetic_set} is a set made already, but "
            f"generators={config.generators} makes one per generator: leave synthetic_set "
            "empty, or use generators=auto"
        )
    return [] if config.synthetic_set else sets


def generator_settings(config: GenerateConfig, name: str) -> dict[str, str]:
    """The generate settings of a `generators` name ("" = the run's own: no change)."""
    if name == "":
        return {}
    if name == "stable-diffusion":
        return {"generator": "stable-diffusion", "generator_prior": "none"}
    own = config.generator_prior.strip()
    prior = "none" if name == "ddpm" else (own if own != "none" else "default")
    return {"generator": "ddpm", "generator_prior": prior}


def compare(config: CompareConfig) -> CompareResult:
    methods = [m for m in config.methods.split(",") if m]
    modes = [m for m in config.modes.split(",") if m]
    cells = grid(config)
    splits = sorted({c.split for c in cells})
    sets = synthetic_sets(config, cells)
    auto = str(config.workers) == "auto"
    workers = auto_workers(len(cells), config.device) if auto else int(config.workers)
    quiet = config if workers == 1 else dataclasses.replace(config, progress=False)
    labelled = len(config.generator_names()) > 1  # one generator keeps today's labels
    with tracking.start_run(run_name="compare", tags={names.ENTRY_TAG: "compare"}) as parent:
        tracking.log_params(dataclasses.asdict(config))
        log.info(
            "compare: %d cells on %d split(s) in %d process(es)", len(cells), len(splits), workers
        )
        multi = len(splits) > 1

        def tag(cell: Cell, run_id: str) -> None:
            label = cell.generator if labelled else ""
            tracking.set_tags(
                {cell_tag(cell.method, cell.mode, cell.seed, cell.split, multi, label): run_id}
            )

        with WorkerPool(workers, parent.info.run_id) as pool:
            pool.map(functools.partial(generate_split, quiet), sets)
            run_ids = pool.map(functools.partial(run_cell, quiet), cells, on_done=tag)
        runs = [cell_run(c, run_id, labelled) for c, run_id in zip(cells, run_ids)]
        table = aggregate(runs)
        tests = paired_comparisons(runs)
        generators = config.generator_names() if labelled else ()
        answer = study_answer(tests, methods, modes, generators=generators)
        _log_outputs(config, runs, table, tests, answer, (config.seeds, len(splits)))
        print(table_markdown(table, config.seeds, len(splits)))
        print(answer)
        return CompareResult(runs, table, tests, parent.info.run_id, answer)


def cell_run(cell: Cell, run_id: str, labelled: bool) -> CellRun:
    """The finished cell's metrics, labelled with its generator when several are compared."""
    label = cell.generator if labelled else ""
    metrics = run_metrics(run_id)
    return CellRun(cell.method, cell.mode, cell.seed, metrics, run_id, cell.split, label)


def _log_outputs(
    config: CompareConfig,
    runs: list[CellRun],
    table: dict[str, dict[str, tuple[float, float]]],
    tests: list[dict],
    answer: str,
    layout: tuple[int, int],
) -> None:
    """Every artifact of `comparison/`, and each cell's means as metrics of the parent."""
    seeds, splits = layout
    if not any(OBJECT_ACCURACY in run.metrics for run in runs):
        log.warning(NO_OBJECT_METRICS)
    caption = settings_caption(config, seeds, splits)
    tracking.log_text(table_csv(table), "comparison/table.csv")
    tracking.log_text(table_markdown(table, seeds, splits), "comparison/table.md")
    tracking.log_text(table_latex(table, caption, cell_intervals(runs)), "comparison/table.tex")
    tracking.log_text(paired_tests_markdown(tests), "comparison/paired_tests.md")
    tracking.log_text(paired_tests_latex(tests, caption), "comparison/paired_tests.tex")
    tracking.log_dict({"tests": tests}, "comparison/paired_tests.json")
    noise = metric_noise(runs, TABLE_METRICS)
    tracking.log_text(resolution_markdown(noise), "comparison/resolution.md")
    tracking.log_text(answer, "comparison/answer.md")
    for metric in CHART_METRICS:
        if not any(metric in row for row in table.values()):
            continue  # e.g. far-OOD metrics with far_ood=none
        figure = bar_chart_figure(table, metric, title=f"{metric} (mean ± std over runs)")
        tracking.log_figure(figure, f"comparison/{metric.replace('/', '_')}.png", also=(".pdf",))
    tracking.log_metrics(
        {
            f"{cell_key(cell)}/{m}": mean
            for cell, row in table.items()
            for m, (mean, _) in row.items()
        }
    )


def settings_caption(config: CompareConfig, seeds: int, splits: int) -> str:
    """The settings a thesis table's caption names."""
    return (
        f"{config.methods.replace(',', ', ')} x synthetic modes {config.modes.replace(',', ', ')} "
        f"on {config.data} ({config.shots} shots per class at {config.image_size} px; near-OOD "
        f"classes {config.ood_classes}); encoder {config.encoder}, {config.epochs} epochs, "
        f"temperature {config.temperature}, alpha {config.alpha}, {_generators_text(config)}. "
        f"Mean and sd over {seeds} seed(s) x {splits} split(s), [95% CI of the mean] (over "
        "splits when there are several); best mean per column in bold."
    )


def _generators_text(config: CompareConfig) -> str:
    names = config.generator_names()
    return f"generators {', '.join(names)}" if names else f"generator {config.generator}"


def cell_key(cell: str) -> str:
    """'supcon/positives+negatives' -> 'supcon/positives_negatives' (a valid MLflow key);
    'supcon/positives [ddpm-prior]' -> 'supcon/positives/ddpm-prior'."""
    cell, _, generator = cell.removesuffix("]").partition(" [")
    return "/".join(key_part(part) for part in cell.split("/") + ([generator] if generator else []))


def cell_tag(
    method: str, mode: str, seed: int, split: int = 0, multi: bool = False, generator: str = ""
) -> str:
    """Tag naming one cell run, e.g. eibacl.cell.supcon.positives_negatives.0 (one split),
    eibacl.cell.supcon.positives_negatives.split1.0 (several),
    eibacl.cell.supcon.positives.ddpm-prior.0 (several generators)."""
    where = f"split{split}." if multi else ""
    which = f"{key_part(generator)}." if generator else ""
    return f"{names.CELL_TAG_PREFIX}{key_part(method)}.{key_part(mode)}.{which}{where}{seed}"


def generate_split(config: CompareConfig, synthetic_set: tuple[int, str]) -> str:
    """Make (or reuse) the synthetic set of one (split, generator); returns the generate
    run's id."""
    split, generator = synthetic_set
    changes = generator_settings(config, generator)
    return generate_step(dataclasses.replace(config, split_seed=split, **changes))[0]


def run_cell(config: CompareConfig, cell: Cell) -> str:
    """Train and evaluate one cell (reusing a finished run); returns the evaluated run's id."""
    changes = {"synthetic": cell.mode, "seed": cell.seed, "split_seed": cell.split}
    changes |= generator_settings(config, cell.generator)
    if cell.method == "supcon":
        pretrain_run, _ = pretrain_step(config, **changes)
        probe_run, _ = probe_step(config, pretrain_run, register=False)
        return probe_run
    baseline_run, _ = baseline_step(config, register=False, **changes)
    return baseline_run
