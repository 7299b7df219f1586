"""The data of a run in MLflow: the split as an artifact, each side as a dataset input;
and the exact data of a logged run, read back."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException

from eibacl import names, tracking
from eibacl.config import DataConfig, config_from_params
from eibacl.data.far_ood import far_ood_name, load_far_ood_set, resolve_far_ood
from eibacl.data.pool import UnlabelledPool
from eibacl.data.report import report, report_metrics
from eibacl.data.splits import Split
from eibacl.data.training_data import TrainingData, prepare_data


def log_data(data: TrainingData, resumed: bool = False, far_ood: str | None = None) -> None:
    """The split (ids on each side) as an artifact, each side as an MLflow dataset, and what
    the source skipped or used without a mask (metrics data/skipped, data/unmasked; a
    resumed run has them already)."""
    tracking.log_text(data.split.to_json(), names.SPLIT_ARTIFACT)
    if not resumed:
        tracking.log_metrics(report_metrics(data.imageset))
    tracking.log_dict(report(data.imageset), names.REPORT_ARTIFACT)
    digest = data.split.source_fingerprint
    tracking.set_tags({names.DATA_TAG: digest[:16], names.SPLIT_TAG: data.split.fingerprint()[:16]})
    log_datasets(data, far_ood)


CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
# the held-out classes' images, read by runs that evaluate OOD detection
OOD_CONTEXTS = {"ood_val": "near-ood-validation", "ood_test": "near-ood-test"}
FAR_CONTEXT = "far-ood"


def log_datasets(data: TrainingData, far_ood: str | None = None) -> None:
    """Each side of the split as an MLflow dataset input of the active run; with `far_ood`
    (runs that evaluate OOD detection) also the near-OOD sides and the far-OOD set."""
    contexts = CONTEXTS | (OOD_CONTEXTS if far_ood is not None else {})
    for side, context in contexts.items():
        if side in CONTEXTS or data.split.side(side):
            tracking.log_dataset(side_dataset(data, side), context)
    far = None if far_ood is None else far_dataset(data, far_ood)
    if far is not None:
        tracking.log_dataset(far, FAR_CONTEXT)


def far_dataset(data: TrainingData, far_ood: str) -> tracking.DatasetRef | None:
    """The far-OOD set of `far_ood` (resolved against the run's data) as an MLflow dataset;
    None for 'none'. Loaded from the same cache evaluation reads."""
    spec = resolve_far_ood(far_ood, str(data.split.params.get("data", "fashion-mnist")))
    far = load_far_ood_set(spec, data.imageset.image_size, data.imageset.channels)
    if far is None:
        return None
    return tracking.DatasetRef(
        name=f"{far_ood_name(spec)}-far-ood",
        source=far.source,
        digest=far.fingerprint()[:24],
        size=len(far.images),
    )


def side_dataset(data: TrainingData, side: str) -> tracking.DatasetRef:
    """The MLflow dataset of one side of the split (train, val, test)."""
    source = data.imageset.source
    return tracking.DatasetRef(
        name=dataset_name(source, side),
        source=source,
        digest=f"{data.split.source_fingerprint[:16]}-{data.split.fingerprint()[:8]}-{side}",
        size=len(data.split.side(side)),
    )


def metrics_by_dataset(
    metrics: dict[str, float], data: TrainingData
) -> list[tuple[dict[str, float], tracking.DatasetRef | None]]:
    """Evaluation metrics grouped by the split side they were measured on: val/* on the
    validation side, test/* on the test side; the rest (ood/*: test images against held-out
    and far-OOD sets) on no single dataset."""
    groups: dict[str | None, dict[str, float]] = {}
    for key, value in metrics.items():
        side = key.split("/", 1)[0]
        groups.setdefault(side if side in ("val", "test") else None, {})[key] = value
    return [
        (part, None if side is None else side_dataset(data, side)) for side, part in groups.items()
    ]


def dataset_name(source: str, side: str) -> str:
    """'fashion-mnist-train'; for folder data the folder's name, not a path that looks like
    a real folder ('eiba (folder): train' rather than 'folder:/data/eiba-train')."""
    if source.startswith("folder:"):
        return f"{Path(source[len('folder:') :]).name} (folder): {side}"
    return f"{source.split(' ')[0]}-{side}"


def load_run_data(run_id: str) -> TrainingData:
    """The exact data and split of a logged training run."""
    run = tracking.get_run(run_id)
    try:
        text = tracking.download(run_id, names.SPLIT_ARTIFACT).read_text()
    except (MlflowException, OSError) as exc:
        raise ValueError(
            f"run {run_id} has no {names.SPLIT_ARTIFACT}: it is not a pretrain or baseline run; "
            "probe one of those (-P encoder_uri=runs:/<run id>/encoder)"
        ) from exc
    split = Split.from_json(text)
    return prepare_data(config_from_params(DataConfig, run.data.params), split)


def pool_dataset(pool: UnlabelledPool) -> tracking.DatasetRef:
    """The pool as an MLflow dataset: source, digest, size, classes where known."""
    return tracking.DatasetRef(
        name=f"prior-pool-{pool.digest()[:8]}",
        source=pool.source,
        digest=pool.digest(),
        size=len(pool),
        tags=(
            ("classes", ",".join(pool.classes) or "unknown"),
            ("skipped", str(len(pool.skipped))),
        ),
    )
