"""The one place that talks to MLflow.

Default store: `sqlite:///mlflow.db` with artifacts in `./mlruns` (MLflow 3's default
layout), unless `MLFLOW_TRACKING_URI` says otherwise. Metrics are logged in batches.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from eibacl import distributed, names  # noqa: E402
from eibacl.config import VOLATILE_PARAMS, unused_settings  # noqa: E402

log = logging.getLogger(__name__)

EXPERIMENT = "eibacl"
DEFAULT_URI = "sqlite:///mlflow.db"
REGISTERED_MODEL = "eibacl-encoder"
CHAMPION = "champion"
MODEL_PACKAGES = ("torch", "torchvision", "numpy", "mlflow")
# MLflow 3's UI opens an experiment with this tag on its training-runs view, not on the
# GenAI overview of traces (the tag and value the UI reads: mlflow/server/js, ExperimentKind)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
# MLflow 3.17's UI lands on its GenAI view in a new browser whatever the experiment's kind;
# this query (its workflow switch, read from the URL) opens the "Model training" view
UI_VIEW = "?workflowType=machine_learning"
# error codes MLflow gives a missing run, model, version or artifact (a missing alias of an
# existing model is INVALID_PARAMETER_VALUE); anything else (a server down, auth) is no
# "not found" and surfaces as it is
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
NO_SUCH_ALIAS = "INVALID_PARAMETER_VALUE"


class TrackingError(RuntimeError):
    """The tracking location cannot be used; the message says which and how to fix it."""


class RunNotFound(ValueError):
    """No run with that id in the store (the store itself answered)."""


def is_not_found(exc: BaseException, *codes: str) -> bool:
    """True when MLflow answered that the thing asked for does not exist."""
    return isinstance(exc, MlflowException) and exc.error_code in (NOT_FOUND, *codes)


def primary_only(default: Callable[[], Any] = lambda: None) -> Callable:
    """Under torchrun only rank 0 writes to MLflow; other ranks get `default()`."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not distributed.is_primary():
                return default()
            return function(*args, **kwargs)

        return guarded

    return decorate


def _stand_in_run(run_id: str) -> SimpleNamespace:
    """What `start_run` yields on ranks other than 0: rank 0's run id, nothing logged."""
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=None)


def configure() -> str:
    """Point MLflow at the project's store and check that it is writable."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        uri = DEFAULT_URI
        os.environ["MLFLOW_TRACKING_URI"] = uri
    for path in _local_paths(uri):
        _check_writable(path)
    mlflow.set_tracking_uri(uri)
    return uri


def check_store() -> str:
    """`configure`, then one write transaction on a sqlite store: a store MLflow cannot write
    fails here in one line, instead of after MLflow's ~100 s of retries."""
    uri = configure()
    if uri.startswith("sqlite:///"):
        import sqlite3

        db = Path(uri[len("sqlite:///") :])
        if db.exists():
            try:
                with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.rollback()
            except sqlite3.Error as exc:
                raise TrackingError(
                    f"the MLflow store {db.resolve()} cannot be written ({exc}): run from a "
                    "folder you can write to, or set MLFLOW_TRACKING_URI (e.g. "
                    "sqlite:////tmp/eibacl/mlflow.db or http://host:5000)"
                ) from exc
    return uri


def _local_paths(uri: str) -> list[Path]:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return [db.parent if str(db.parent) else Path("."), Path("mlruns")]
    if uri.startswith("file:") or "://" not in uri:
        return [Path(uri.removeprefix("file://").removeprefix("file:"))]
    return []


def _check_writable(path: Path) -> None:
    """Write a file in the folder, or in its nearest existing parent (MLflow creates the
    rest): `os.access` says yes to root everywhere, and a file in the way is no folder."""
    target = path.resolve()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise TrackingError(
            f"the MLflow tracking location {target} is not writable ({exc.strerror or exc}): "
            "run from a folder you can write to, or set MLFLOW_TRACKING_URI (e.g. "
            "sqlite:////tmp/eibacl/mlflow.db or http://host:5000)"
        ) from exc


def experiment_id() -> str:
    """The active experiment: MLflow project's env, else 'eibacl' (created if missing)."""
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if env_id:
        return env_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    return experiment.experiment_id


_KIND_SET: set[str] = set()  # experiments this process has checked for the tag


def mark_experiment_kind(exp_id: str) -> None:
    """Tag the experiment (also one `mlflow run` created) as model training, once a process."""
    if exp_id in _KIND_SET:
        return
    client = MlflowClient()
    if client.get_experiment(exp_id).tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    _KIND_SET.add(exp_id)


_TOP_RUN: dict[str, str] = {}  # the newest top-level run of this process: for `run_links`


def unshown_links() -> str:
    """`run_links` of this process's top-level run, unless its entry point showed them."""
    return "" if _TOP_RUN.get("shown") == _TOP_RUN.get("run_id") else run_links()


def forget_top_run() -> None:
    """A new entry point starts: the links it prints are those of its own run."""
    _TOP_RUN.clear()


def ui_base(uri: str | None = None) -> str:
    """The UI's address: the tracking server itself, or `mlflow ui`'s default for a local
    store."""
    uri = uri or mlflow.get_tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_DEFAULT


def run_links(run_id: str | None = None) -> str:
    """Where to look: the direct link to the run and to its experiment's runs page (and how
    to start the UI for a local store); '' when no run was started."""
    if run_id is None:
        run_id, exp_id = _TOP_RUN.get("run_id"), _TOP_RUN.get("experiment_id")
    else:
        exp_id = get_run(run_id).info.experiment_id
    if not run_id or not distributed.is_primary():
        return ""
    if run_id == _TOP_RUN.get("run_id"):
        _TOP_RUN["shown"] = run_id
    uri = mlflow.get_tracking_uri()
    runs = f"{ui_base(uri)}/#/experiments/{exp_id}/runs"
    lines = [f"Run:  {runs}/{run_id}{UI_VIEW}", f"Runs: {runs}{UI_VIEW}"]
    if not uri.startswith(("http://", "https://")):
        lines.append(f"(start the UI first: mlflow ui --backend-store-uri {uri})")
    return "\n".join(lines)


@contextmanager
def start_run(
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    nested: bool = False,
    log_system_metrics: bool | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume, or attach to the `mlflow run` project's) run.

    `log_system_metrics`: MLflow samples CPU, memory, disk, network (and GPU) metrics into
    the run while it lasts (see `system_metrics_wanted`; None: MLflow's own setting,
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING); not for a run already active.

    An exception ends the run as FAILED; KeyboardInterrupt as KILLED. Everything logged
    before stays in the store, and checkpoints allow `resume`.

    Under torchrun only rank 0 starts a run; the other ranks get a stand-in whose
    `info.run_id` is rank 0's (every rank must call this, as it broadcasts the id).
    """
    if not distributed.is_primary():
        yield _stand_in_run(distributed.broadcast_object(None))
        return
    configure()
    active = mlflow.active_run()
    if active is not None and not nested and run_id in (None, active.info.run_id):
        if tags:
            mlflow.set_tags(tags)
        distributed.broadcast_object(active.info.run_id)
        yield active
        return
    # Launched by `mlflow run`: the project's run is taken once, as MLflow itself does, so
    # that a nested run started later (e.g. generate inside pretrain) is a new child run
    # and not the project's run again.
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)
    if run_id is None and not nested and project_run:
        run_id = project_run
    exp = None if run_id else experiment_id()
    from eibacl.version import code_version

    tags = (tags or {}) | {names.PROCESS_TAG: process_label(), names.CODE_TAG: code_version()}
    adopted = _ADOPTED_PARENT if nested and run_id is None and active is None else None
    with mlflow.start_run(
        run_id=run_id,
        run_name=run_name,
        experiment_id=exp,
        nested=nested,
        tags=tags,
        log_system_metrics=log_system_metrics,
        parent_run_id=adopted,
    ) as run:
        distributed.broadcast_object(run.info.run_id)
        mark_experiment_kind(run.info.experiment_id)
        if not nested and active is None:
            _TOP_RUN.update(run_id=run.info.run_id, experiment_id=run.info.experiment_id)
        try:
            yield run
        except KeyboardInterrupt:
            # mlflow.ActiveRun ends every exception as FAILED; an interrupt is KILLED
            mlflow.end_run("KILLED")
            raise


def system_metrics_wanted(setting: str, device_type: str) -> bool:
    """Whether a run on `device_type` logs MLflow's system metrics: `setting` true or false,
    or auto (on for CUDA). They need psutil (GPU metrics also nvidia-ml-py): missing, auto
    skips them with one warning line, true is an error."""
    import importlib.util

    wanted = setting == "true" or (setting == "auto" and device_type == "cuda")
    if not wanted:
        return False
    if importlib.util.find_spec("psutil") is None:
        if setting == "true":
            raise ValueError(
                "system_metrics=true needs the package psutil (and nvidia-ml-py for GPU "
                "metrics): pip install psutil nvidia-ml-py, or use system_metrics=false"
            )
        log.warning("system metrics skipped: psutil is not installed (pip install psutil)")
        return False
    if device_type == "cuda" and importlib.util.find_spec("pynvml") is None:
        log.warning("system metrics without GPU metrics: pip install nvidia-ml-py for them")
    return True


_ADOPTED_PARENT: str | None = None


@contextmanager
def children_of(parent_run_id: str) -> Iterator[None]:
    """Nested runs started while this process has no active run become children of
    `parent_run_id` (a run another process holds, e.g. `compare`'s in its worker processes),
    as they would inside that process; the parent itself is neither resumed nor ended."""
    global _ADOPTED_PARENT
    previous, _ADOPTED_PARENT = _ADOPTED_PARENT, parent_run_id
    try:
        yield
    finally:
        _ADOPTED_PARENT = previous


def process_label(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def _process_gone(label: str) -> bool:
    """True only when `label` names a process of this machine that no longer exists."""
    host, _, pid = label.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@primary_only(int)
def end_stale_runs(entry_point: str, digest: str) -> int:
    """End as KILLED the RUNNING runs of this step and parameters whose process is gone
    (kill -9, a power cut: nothing could end them); returns how many.

    Only processes of this machine can be checked: runs started elsewhere are left as they
    are, and counted in the log.
    """
    active = mlflow.active_run()
    current = active.info.run_id if active is not None else ""
    runs = find_runs(
        f"tags.`{names.ENTRY_TAG}` = '{entry_point}' and tags.`{names.PARAMS_TAG}` = '{digest}' "
        "and attributes.status = 'RUNNING'",
        max_results=200,
    )
    client = MlflowClient()
    ended, unknown = 0, 0
    for run in runs:
        if run.info.run_id == current:
            continue
        if _process_gone(run.data.tags.get(names.PROCESS_TAG, "")):
            client.set_tag(run.info.run_id, names.SUPERSEDED_TAG, current)
            client.set_terminated(run.info.run_id, status="KILLED")
            ended += 1
        else:
            unknown += 1
    if ended:
        log.info("ended %d stale %s run(s) as KILLED (their process is gone)", ended, entry_point)
    if unknown:
        log.info(
            "%d other %s run(s) with these parameters are RUNNING elsewhere or alive; left as "
            "they are",
            unknown,
            entry_point,
        )
    return ended


@primary_only()
def log_params(params: dict[str, Any], attempts: int = 1) -> None:
    """Log the parameters not logged yet (those logged are kept as they are). With
    `attempts` > 1 a write that collides with another process's is tried again (tune's
    workers log to the study's parent run together)."""
    for attempt in range(attempts):
        try:
            _log_new_params(params)
            return
        except mlflow.exceptions.MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + attempt)


def _log_new_params(params: dict[str, Any]) -> None:
    existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    new = {k: _param_text(v) for k, v in params.items() if k not in existing}
    changed = {k: v for k, v in params.items() if k in existing and existing[k] != _param_text(v)}
    if changed:
        log.debug("parameters already logged are kept as they are: %s", changed)
    if new:
        try:
            mlflow.log_params(new)
        except mlflow.exceptions.MlflowException:
            # another process logged to this run in between (e.g. tune workers starting
            # together on the study's parent run): log what is still missing
            existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
            missing = {k: v for k, v in new.items() if k not in existing}
            if missing:
                mlflow.log_params(missing)


def _param_text(value: Any) -> str:
    return str(value)[:6000]


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as MLflow records it: name, where it comes from, digest, number of items."""

    name: str
    source: str
    digest: str
    size: int
    tags: tuple[tuple[str, str], ...] = ()  # shown beside the dataset in the UI


@primary_only()
def log_metrics(
    metrics: dict[str, float],
    step: int | None = None,
    model_uri: str = "",
    dataset: DatasetRef | None = None,
) -> None:
    """One batched write (each sqlite write costs milliseconds). With the URI of a logged
    model, the metrics are also linked to it (MLflow 3's model_id), and with a dataset, to
    the data they were measured on: the Models tab then compares encoders by them."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if clean:
        mlflow.log_metrics(
            clean,
            step=step,
            model_id=model_id_of(model_uri),
            dataset=None if dataset is None else _meta_dataset(dataset),
        )


def model_id_of(model_uri: str) -> str | None:
    """The logged-model id behind models:/m-<id>, models:/<name>@<alias> or
    models:/<name>/<version>; None for anything else (e.g. runs:/ URIs)."""
    if not model_uri.startswith("models:/"):
        return None
    kind, name, ref = parse_models_uri(model_uri)
    if kind == "logged":
        return name
    try:
        return model_source(model_uri)[0]
    except MlflowException as exc:  # linking is a convenience: only "no such model" is skipped
        if not is_not_found(exc, NO_SUCH_ALIAS):
            raise
        log.info("no logged model found behind %s: metrics not linked to it", model_uri)
        return None


def parse_models_uri(uri: str) -> tuple[str, str, str]:
    """('logged', model id, ''), ('alias', name, alias) or ('version', name, number) of a
    models:/m-<id>, models:/<name>@<alias> or models:/<name>/<version> URI."""
    ref = uri.removeprefix("models:/")
    if ref.startswith("m-"):
        return "logged", ref.split("/")[0], ""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return "alias", name, alias
    name, _, number = ref.partition("/")
    return "version", name, number


def model_source(uri: str) -> tuple[str, str]:
    """(logged-model id, id of the run that logged it) behind a models:/ URI; MLflow's
    exception when the store has no such model, version or alias."""
    kind, name, ref = parse_models_uri(uri)
    if kind == "logged":
        model = mlflow.get_logged_model(name)
        return model.model_id, model.source_run_id
    client = MlflowClient()
    if kind == "alias":
        version = client.get_model_version_by_alias(name, ref)
    else:
        version = client.get_model_version(name, ref)
    return version.model_id, version.run_id


def active_run_id() -> str | None:
    """The id of this process's active run; None outside a run."""
    active = mlflow.active_run()
    return None if active is None else active.info.run_id


def set_run_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Tag a run that need not be the active one (e.g. a finished child run)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def end_run_as(run_id: str, status: str) -> None:
    """Set the status (KILLED, FAILED, ...) of a run that need not be the active one."""
    MlflowClient().set_terminated(run_id, status)


def create_run(tags: dict[str, str], run_name: str) -> str:
    """A new run of the active experiment, not started in this process; its id."""
    return MlflowClient().create_run(experiment_id(), tags=tags, run_name=run_name).info.run_id


def delete_run(run_id: str) -> None:
    MlflowClient().delete_run(run_id)


@primary_only()
def set_tags(tags: dict[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_figure(figure: Figure, artifact_file: str, also: tuple[str, ...] = ()) -> None:
    """Log `figure` as `artifact_file`, and as the same name with each suffix of `also`
    (e.g. ('.pdf',) for a vector copy), then close it."""
    import matplotlib.pyplot as plt

    if distributed.is_primary():
        mlflow.log_figure(figure, artifact_file)
        for suffix in also:
            mlflow.log_figure(figure, str(Path(artifact_file).with_suffix(suffix)))
    plt.close(figure)


@primary_only()
def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


@primary_only()
def log_dict(data: dict, artifact_file: str) -> None:
    mlflow.log_dict(data, artifact_file)


@primary_only()
def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


@primary_only()
def log_dataset(ref: DatasetRef, context: str) -> None:
    """Record the data a run saw as an MLflow dataset input (shown in the UI)."""
    tags = {"size": str(ref.size), "source": ref.source} | dict(ref.tags)
    for attempt in range(DATASET_ATTEMPTS):
        try:
            mlflow.log_input(_meta_dataset(ref), context=context, tags=tags)
            return
        except MlflowException as exc:  # only the insert race below is retried
            if not _lost_dataset_insert_race(exc) or attempt == DATASET_ATTEMPTS - 1:
                raise
            log.debug("dataset %s: another process inserted it first; linking it", ref.name)


# MLflow's store looks a dataset up, then inserts it: two processes (tune or compare
# workers) logging the same dataset to one experiment at once can both miss it, and the
# second insert fails on the (experiment, name, digest) unique key. Once the first has
# committed, the lookup finds the row, so a retry links the run to it.
DATASET_ATTEMPTS = 3


def _lost_dataset_insert_race(exc: MlflowException) -> bool:
    from sqlalchemy.exc import IntegrityError

    return isinstance(exc.__cause__, IntegrityError) and "datasets" in str(exc.__cause__)


def _meta_dataset(ref: DatasetRef) -> Any:
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.schema import ColSpec, Schema

    return MetaDataset(
        source=dataset_source(ref.source),
        name=ref.name,
        digest=ref.digest[:36],
        schema=Schema([ColSpec("long", "images")]) if ref.size >= 0 else None,
    )


def dataset_source(source: str) -> Any:
    """The MLflow source of an image source's description: the local folder it was read
    from ('folder:<path>', 'fashion-mnist (<how>: <path>)'), else the code that made it."""
    import re

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.sources import LocalArtifactDatasetSource

    found = re.fullmatch(r"folder:(.+)|[^(]+\([^:]+: (.+)\)", source)
    if found:
        return LocalArtifactDatasetSource(found.group(1) or found.group(2))
    return CodeDatasetSource(tags={names.SOURCE_TAG: source})


@primary_only(str)
def log_encoder(encoder: torch.nn.Module, name: str = "encoder") -> str:
    """Log the encoder (torch.export format, float images in [0, 1]) and return its URI."""
    import mlflow.pytorch

    encoder = encoder.cpu().eval()
    example = torch.rand(2, encoder.in_channels, encoder.image_size, encoder.image_size)
    info = mlflow.pytorch.log_model(
        encoder,
        name=name,
        input_example=example.numpy(),
        pip_requirements=model_requirements(),
        serialization_format="pt2",
    )
    return info.model_uri


def model_requirements() -> list[str]:
    """The logged encoder's pip requirements, pinned to the versions that wrote it (public
    part only: a '+cu130' build tag would not install on another machine)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in MODEL_PACKAGES]


class ExportedEncoder(torch.nn.Module):
    """A logged (torch.export) encoder: its graph is fixed in eval semantics, so
    `train()`/`eval()` are no-ops instead of errors."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.training = False

    def train(self, mode: bool = True) -> ExportedEncoder:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def load_encoder(uri: str) -> torch.nn.Module:
    """Load a logged encoder: float images in [0, 1], N x C x H x W -> features."""
    import mlflow.pytorch

    configure()
    return ExportedEncoder(mlflow.pytorch.load_model(uri, map_location="cpu"))


def download(run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    configure()
    dst = dst or Path(tempfile.mkdtemp(prefix="eibacl-"))
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
        )
    )


def get_run(run_id: str) -> Run:
    configure()
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as exc:  # a server or auth error is not "not found": it surfaces
        if not is_not_found(exc):
            raise
        raise RunNotFound(
            f"run {run_id!r} was not found in {mlflow.get_tracking_uri()}: check the id in the "
            "MLflow UI (mlflow ui --backend-store-uri sqlite:///mlflow.db)"
        ) from exc


def find_runs(filter_string: str, max_results: int = 50) -> list[Run]:
    """Runs of the active experiment, newest first."""
    configure()
    return MlflowClient().search_runs(
        [experiment_id()],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


@primary_only(set)
def logged_metric_steps(run_id: str, key: str) -> set[int]:
    return {m.step for m in MlflowClient().get_metric_history(run_id, key)}


@primary_only(list)
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of `key`, in the order MLflow returns them."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


def newest_finished_run(entry_point: str) -> Run:
    runs = find_runs(
        f"tags.`{names.ENTRY_TAG}` = '{entry_point}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs:
        raise ValueError(
            f"no finished {entry_point} run in experiment {experiment_id()} of "
            f"{mlflow.get_tracking_uri()}: run `mlflow run . -e {entry_point} --env-manager "
            "local` first, or pass -P encoder_uri=runs:/<run id>/encoder"
        )
    return runs[0]


def resolve_encoder(uri: str) -> tuple[str, str]:
    """(model URI, id of the run that trained it) for '', runs:/..., models:/... URIs."""
    configure()
    if not uri:
        run = newest_finished_run("pretrain")
        return _encoder_of(run), run.info.run_id
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/")[0]
        run = get_run(run_id)
        return (uri if uri.rstrip("/") != f"runs:/{run_id}" else _encoder_of(run)), run_id
    if uri.startswith("models:/"):
        try:
            return uri, model_source(uri)[1]
        except MlflowException as exc:  # only "no such model/version/alias" is the user's
            if not is_not_found(exc, NO_SUCH_ALIAS):
                raise
            raise ValueError(f"encoder_uri={uri!r} is not in the registry ({exc})") from exc
    raise ValueError(
        f"encoder_uri={uri!r} is not understood: use runs:/<run id>/encoder, "
        "models:/eibacl-encoder@champion, or leave it empty for the newest pretrain run"
    )


def _encoder_of(run: Run) -> str:
    uri = run.data.tags.get(names.ENCODER_URI_TAG)
    if not uri:
        raise ValueError(
            f"run {run.info.run_id} has no logged encoder (it did not finish): resume it with "
            f"-P resume={run.info.run_id}, or probe another run"
        )
    return uri


CODE_KEY = "__code__"  # in the digest only: no parameter of that name can exist


def params_digest(params: dict[str, Any], code: str | None = None) -> str:
    """Identity of a step's work, parameters and code version (`eibacl.version`): equal
    digests mean a finished run can be reused; results of other code never are. Volatile
    settings and those the run's synthetic mode never reads are not part of it."""
    import hashlib

    from eibacl.version import code_version

    skip = set(VOLATILE_PARAMS) | unused_settings(params)
    stable = {k: str(v) for k, v in sorted(params.items()) if k not in skip}
    stable[CODE_KEY] = code_version() if code is None else code
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:20]


def find_finished(entry_point: str, digest: str) -> Run | None:
    """The newest FINISHED run of `entry_point` with these parameters (MLflow's multistep
    workflow reuse, keyed by a digest instead of comparing every parameter)."""
    runs = find_runs(
        f"tags.`{names.ENTRY_TAG}` = '{entry_point}' and tags.`{names.PARAMS_TAG}` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None
