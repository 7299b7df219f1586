"""The model registry: every probed encoder becomes a version of `eibacl-encoder`;
the alias `champion` moves to a version only when it wins on validation data.

Selection: higher `val/accuracy`; ties broken by the higher validation near-OOD AUROC of
the study's headline scorer (`SELECTION_NEAR_OOD`: images of the `ood_val_classes`, which
are disjoint from the reported near-OOD classes; never the test split); a full tie keeps
the current champion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from eibacl import tracking
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD

log = logging.getLogger(__name__)
SELECTION_METRICS = ("val/accuracy", SELECTION_NEAR_OOD)


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
    client = MlflowClient()
    version_tags = {k: str(v) for k, v in tags.items()}
    version_tags |= {m: str(metrics[m]) for m in SELECTION_METRICS if m in metrics}
    version_tags["eibacl.selection"] = " > ".join(SELECTION_METRICS)
    version = mlflow.register_model(model_uri, tracking.REGISTERED_MODEL, tags=version_tags)
    current = champion_version(client)
    is_new_champion = current is None or selection_key(version_tags) > selection_key(current.tags)
    if is_new_champion:
        client.set_registered_model_alias(
            tracking.REGISTERED_MODEL, tracking.CHAMPION, version.version
        )
        log.info("eibacl-encoder version %s is the new champion", version.version)
    return Registration(
        version=str(version.version),
        champion=is_new_champion,
        previous_champion=None if current is None else str(current.version),
    )


def champion_version(client: MlflowClient | None = None):  # noqa: ANN201 - MLflow type
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.CHAMPION)
    except MlflowException:
        return None
