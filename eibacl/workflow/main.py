"""`main`: generate -> pretrain -> probe -> baseline for the configured method, nested under
one parent run; steps already finished with the same parameters are reused."""

from __future__ import annotations

import dataclasses
import logging

import mlflow

from eibacl import names, tracking
from eibacl.config import MainConfig, needs_synthetic_set
from eibacl.evaluate.evaluation import headline
from eibacl.workflow.steps import (
    baseline_step,
    generate_step,
    pretrain_step,
    probe_step,
    run_metrics,
)

log = logging.getLogger(__name__)


def main(config: MainConfig) -> dict[str, dict[str, float]]:
    tags = {names.ENTRY_TAG: "main", names.SYNTHETIC_TAG: config.synthetic}
    with tracking.start_run(run_name="main", tags=tags):
        tracking.log_params(dataclasses.asdict(config))
        steps: dict[str, tuple[str, bool]] = {}
        if needs_synthetic_set(config.synthetic) and not config.synthetic_set:
            steps["generate"] = generate_step(config)
        steps["pretrain"] = pretrain_step(config)
        steps["probe"] = probe_step(config, steps["pretrain"][0], config.register)
        steps["baseline"] = baseline_step(config, config.register)
        tracking.set_tags(
            {f"{names.STEP_TAG_PREFIX}{name}": run_id for name, (run_id, _) in steps.items()}
        )
        results = {
            "supcon": headline(run_metrics(steps["probe"][0])),
            "ce": headline(run_metrics(steps["baseline"][0])),
        }
        tracking.log_metrics(
            {f"{method}/{k}": v for method, values in results.items() for k, v in values.items()}
        )
        print(report(steps, results))
        return results


def report(steps: dict[str, tuple[str, bool]], results: dict[str, dict[str, float]]) -> str:
    lines = ["", "eibacl main: done."]
    for name, (run_id, reused) in steps.items():
        lines.append(f"  {name:<9} run {run_id}{' (reused)' if reused else ''}")
    for method, values in results.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if "/knn/" in k or "acc" in k)
        lines.append(f"  {method}: {shown}")
    lines += [
        "",
        f"Look at it: mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}",
        "  then open http://127.0.0.1:5000 (experiment 'eibacl').",
        "Champion encoder: models:/eibacl-encoder@champion",
    ]
    return "\n".join(lines)
