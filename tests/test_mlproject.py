"""`MLproject` is generated from the config dataclasses and works with `mlflow run`.

When the first test fails, regenerate the file:

    python -m eibacl.mlproject > MLproject
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.projects import _project_spec
from mlflow.tracking import MlflowClient

from eibacl import mlproject
from eibacl.cli import parse_config

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "MLproject is stale: run `python -m eibacl.mlproject > MLproject` and commit it"


def _entry_points() -> dict[str, tuple[type, str]]:
    return {
        name: (mlproject._config_class(config), script)
        for name, (config, script) in mlproject.ENTRY_POINTS.items()
    }


def test_committed_mlproject_is_the_rendering_of_the_configs():
    assert (ROOT / "MLproject").read_text() == mlproject.render(), REGENERATE


def test_every_entry_point_script_exists():
    for name, (_, script) in _entry_points().items():
        assert (ROOT / script).is_file(), f"entry point {name}: {script} is missing"


def test_parameters_are_typed_and_carry_the_dataclass_defaults():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(spec["entry_points"]) == set(mlproject.ENTRY_POINTS)
    for name, (cls, script) in _entry_points().items():
        entry = spec["entry_points"][name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(entry["parameters"]) == set(fields), name
        for key, f in fields.items():
            parameter = entry["parameters"][key]
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            expected_type = "float" if kind in ("int", "float") else "string"
            assert parameter["type"] == expected_type, (name, key)
            assert parameter["default"] == f.default, (name, key)
            assert type(parameter["default"]) is type(f.default), (name, key)
            assert f"--{key} {{{key}}}" in entry["command"], (name, key)
        assert entry["command"].startswith(f"python {script} ")


@pytest.mark.parametrize("name", list(mlproject.ENTRY_POINTS))
def test_mlflow_command_parses_back_to_the_defaults(name, tmp_path):
    """What `mlflow run` executes (its own parser and quoting) gives the Python defaults."""
    cls, script = _entry_points()[name]
    entry = _project_spec.load_project(str(ROOT)).get_entry_point(name)
    command = shlex.split(entry.compute_command({}, str(tmp_path)))
    assert command[:2] == ["python", script]
    assert parse_config(cls, command[2:]) == cls()


def test_mlflow_command_passes_user_values_through(tmp_path):
    entry = _project_spec.load_project(str(ROOT)).get_entry_point("pretrain")
    user = {"epochs": "3", "temperature": "0.07", "progress": "false", "ood_classes": "Bag,Coat"}
    command = shlex.split(entry.compute_command(user, str(tmp_path)))
    config = parse_config(_entry_points()["pretrain"][0], command[2:])
    assert (config.epochs, config.temperature, config.progress) == (3, 0.07, False)
    assert config.ood_classes == "Bag,Coat"


def _repo_outputs() -> set[str]:
    """What a run could leave in the checkout."""
    found = {p.name for p in ROOT.iterdir() if p.name in ("mlflow.db", ".eibacl-cache")}
    return found | {f"mlruns/{p.name}" for p in (ROOT / "mlruns").glob("*")}


def test_mlflow_run_pretrain_end_to_end(make_experiment, isolated_environment):
    """The real `mlflow run . -e pretrain --env-manager local` path, into the test store."""
    experiment = f"mlflow-run-{uuid.uuid4().hex[:8]}"
    experiment_id = make_experiment(experiment)
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")
    }
    env |= isolated_environment | {"MLFLOW_EXPERIMENT_NAME": experiment}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    parameters = {
        "epochs": 1,
        "shots": 4,
        "image_size": 16,
        "width": 8,
        "val_per_class": 5,
        "test_per_class": 10,
        "synthetic": "none",
        "progress": "false",
        "batch_size": 16,
        "device": "cpu",
    }
    command = [sys.executable, "-m", "mlflow", "run", ".", "-e", "pretrain"]
    command += ["--env-manager", "local", "--experiment-name", experiment]
    for key, value in parameters.items():
        command += ["-P", f"{key}={value}"]
    before = _repo_outputs()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert _repo_outputs() == before, "mlflow run wrote into the checkout"

    (run,) = MlflowClient().search_runs([experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] in ("1", "1.0")
    assert run.data.tags["eibacl.entry_point"] == "pretrain"
    assert run.data.tags["mlflow.project.entryPoint"] == "pretrain"
    assert run.data.tags["eibacl.encoder_uri"]
    assert run.outputs.model_outputs, "no logged model"
    models = MlflowClient().search_logged_models(experiment_ids=[experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    steps = [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [1]


def test_readme_parameter_table_is_the_rendering_of_the_configs():
    readme = (ROOT / "README.md").read_text()
    assert mlproject.TABLE_START in readme and mlproject.TABLE_END in readme
    assert mlproject.readme_with_table(readme) == readme, (
        "README parameter table is stale: run `python -m eibacl.mlproject --readme`"
    )
    for name in ("temperature", "strength", "shots", "synthetic", "knn_k", "seeds"):
        assert f"| `{name}` |" in readme


def test_parameter_table_rows_have_four_cells_even_when_a_help_text_has_a_pipe():
    """synthetic_filter's help says 'none | judge': unescaped, it splits its row."""
    from eibacl.mlproject import TABLE_END, TABLE_START, parameter_table

    rows = [r for r in parameter_table().splitlines() if r not in (TABLE_START, TABLE_END)]
    assert any("none \\| judge" in r for r in rows)
    for row in rows:
        cells = [c for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == 4, row
