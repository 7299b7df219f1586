"""The data of a run in MLflow: the split as an artifact, each side as a dataset input."""

from __future__ import annotations

from pathlib import Path

from eibacl import tracking
from eibacl.data.report import REPORT_ARTIFACT, report, report_metrics
from eibacl.data.training_data import TrainingData

SPLIT_ARTIFACT = "split.json"


def log_data(data: TrainingData, resumed: bool = False) -> None:
    """The split (ids on each side) as an artifact, each side as an MLflow dataset, and what
    the source skipped or used without a mask (metrics data/skipped, data/unmasked; a
    resumed run has them already)."""
    tracking.log_text(data.split.to_json(), SPLIT_ARTIFACT)
    if not resumed:
        tracking.log_metrics(report_metrics(data.imageset))
    tracking.log_dict(report(data.imageset), REPORT_ARTIFACT)
    source = data.imageset.source
    digest = data.split.source_fingerprint
    tracking.set_tags(
        {tracking.DATA_TAG: digest[:16], "eibacl.split": data.split.fingerprint()[:16]}
    )
    for side in ("train", "val", "test"):
        ids = data.split.side(side)
        tracking.log_dataset(
            name=dataset_name(source, side),
            source=source,
            digest=f"{digest[:16]}-{data.split.fingerprint()[:8]}-{side}",
            context="training" if side == "train" else ("validation" if side == "val" else "test"),
            size=len(ids),
        )


def dataset_name(source: str, side: str) -> str:
    """'fashion-mnist-train'; for folder data the folder's name, not a path that looks like
    a real folder ('eiba (folder): train' rather than 'folder:/data/eiba-train')."""
    if source.startswith("folder:"):
        return f"{Path(source[len('folder:') :]).name} (folder): {side}"
    return f"{source.split(' ')[0]}-{side}"
