"""The study's figures (Optuna's matplotlib plots), for the parent MLflow run.

A plot that cannot be drawn yet (parameter importances need at least two completed
trials whose values differ) is skipped with a note instead of failing the study.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure

from eibacl import tracking  # noqa: F401 - selects the Agg backend before pyplot loads

log = logging.getLogger(__name__)
HISTORY = "plots/optimization_history.png"
IMPORTANCES = "plots/param_importances.png"
INTERMEDIATE = "plots/intermediate_values.png"
PARETO = "plots/pareto_front.png"


def _figure(axes: Any) -> Figure:
    """Optuna returns one Axes, or an array of them; the Figure is what MLflow logs."""
    first = axes if hasattr(axes, "figure") else np.asarray(axes).flat[0]
    return first.figure


def study_figures(
    study: optuna.Study, names: list[str]
) -> tuple[dict[str, Figure], dict[str, str]]:
    """(artifact path -> figure, artifact path -> why it was skipped)."""
    from optuna.visualization import matplotlib as vm

    figures: dict[str, Figure] = {}
    skipped: dict[str, str] = {}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    multi = len(names) > 1

    def draw(path: str, make: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                figures[path] = _figure(make())
        except Exception as exc:  # noqa: BLE001 - a plot never fails the study
            skipped[path] = f"{type(exc).__name__}: {exc}"
            log.info("%s not drawn: %s", path, skipped[path])

    if not complete:
        return figures, {HISTORY: "no completed trial yet"}
    if multi:
        for i, name in enumerate(names):
            draw(
                f"plots/optimization_history_{name}.png",
                lambda i=i, name=name: vm.plot_optimization_history(
                    study, target=lambda t: t.values[i], target_name=name
                ),
            )
        draw(PARETO, lambda: vm.plot_pareto_front(study, target_names=names))
    else:
        draw(HISTORY, lambda: vm.plot_optimization_history(study, target_name=names[0]))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            draw(INTERMEDIATE, lambda: vm.plot_intermediate_values(study))
    values = {tuple(t.values) for t in complete}
    if len(complete) < 2 or len(values) < 2:
        skipped[IMPORTANCES] = (
            f"parameter importances need 2 or more completed trials with different values "
            f"({len(complete)} completed, {len(values)} distinct)"
        )
    else:
        draw(IMPORTANCES, lambda: vm.plot_param_importances(study))
    return figures, skipped
