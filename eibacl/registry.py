"""The model registry: every probed encoder becomes a version of `eibacl-encoder`;
the alias `champion` moves to a version only when it wins on validation data.

Selection: higher `val/accuracy`; ties broken by the higher validation near-OOD AUROC of
the study's headline scorer (`SELECTION_NEAR_OOD`: images of the `ood_val_classes`, which
are disjoint from the reported near-OOD classes; never the test split); a full tie keeps
the current champion. The alias always ends on the best version of all, also when several
workers register at the same moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from eibacl import names, tracking
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD

log = logging.getLogger(__name__)
SELECTION_METRICS = ("val/accuracy", SELECTION_NEAR_OOD)
SEARCH_PAGE = 10_000  # versions read at once (MLflow's largest page)


@dataclass
class Registration:
    version: str
    champion: bool
    previous_champion: str | None


def selection_key(values: dict[str, float | str]) -> tuple[float, ...]:
    return tuple(float(values.get(m, float("-inf"))) for m in SELECTION_METRICS)


def register_encoder(
    model_uri: str, metrics: dict[str, float], tags: dict[str, str]
) -> Registration:
    """Register a version, then point `champion` at the best version of all.

    Safe with several workers registering at once (see `settle_champion`).
    """
    client = MlflowClient()
    version_tags = {k: str(v) for k, v in tags.items()}
    version_tags |= {m: str(metrics[m]) for m in SELECTION_METRICS if m in metrics}
    version_tags[names.SELECTION_TAG] = " > ".join(SELECTION_METRICS)
    current = champion_version(client)
    version = mlflow.register_model(model_uri, tracking.REGISTERED_MODEL, tags=version_tags)
    champion = settle_champion(client)
    is_new_champion = str(champion.version) == str(version.version)
    if is_new_champion:
        log.info("eibacl-encoder version %s is the new champion", version.version)
    return Registration(
        version=str(version.version),
        champion=is_new_champion,
        previous_champion=None if current is None else str(current.version),
    )


def best_version(client: MlflowClient, current: str | None = None):  # noqa: ANN201
    """The version the selection rule picks among all registered ones: a full tie keeps
    `current` (the champion), else goes to the oldest version."""
    versions = client.search_model_versions(
        f"name = '{tracking.REGISTERED_MODEL}'", max_results=SEARCH_PAGE
    )
    return max(
        versions,
        key=lambda v: (selection_key(v.tags), str(v.version) == current, -int(v.version)),
    )


def settle_champion(client: MlflowClient, attempts: int = 20):  # noqa: ANN201
    """Move `champion` to the best version and check that it is still there afterwards.

    MLflow has no compare-and-set for aliases: two workers can both read, then write in
    the wrong order. Every writer therefore reads again after its own write and corrects
    a stale choice, so the last writer always leaves the alias on the best version.
    """
    for _ in range(attempts):
        current = champion_version(client)
        current_number = None if current is None else str(current.version)
        best = best_version(client, current_number)
        if current_number == str(best.version):
            return best
        client.set_registered_model_alias(
            tracking.REGISTERED_MODEL, tracking.CHAMPION, best.version
        )
    log.warning("the champion alias kept changing under %d attempts; left as it is", attempts)
    return best


def champion_version(client: MlflowClient | None = None):  # noqa: ANN201 - MLflow type
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.CHAMPION)
    except MlflowException as exc:  # no model or no alias yet; a store error surfaces
        if tracking.is_not_found(exc, tracking.NO_SUCH_ALIAS):
            return None
        raise


def registered_version(run_id: str) -> str | None:
    """The version of the registered encoder that run `run_id` logged, if any (a store
    error surfaces: taken for "none", the best trial would be registered twice)."""
    found = MlflowClient().search_model_versions(
        f"name='{tracking.REGISTERED_MODEL}' and run_id='{run_id}'"
    )  # no such registered model yet: an empty list
    return str(found[0].version) if found else None
