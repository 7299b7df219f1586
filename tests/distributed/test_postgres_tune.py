"""Two `tune` workers on one Optuna study in a real PostgreSQL server on loopback.

The server is Debian's `postgresql` package (installed here with apt-get when missing and
this runs as root), started as the `postgres` user in a temporary folder on a free port,
and stopped afterwards; the driver is psycopg2 (`pip install psycopg2-binary` when
missing). Where either cannot be had, or the server does not start, the test is skipped
with the reason.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.dist_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = "tests.distributed.pg_tune_worker"
APT_TIMEOUT_S = 600


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _apt_install(package: str) -> str:
    """'' when installed, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    for step in ([], ["apt-get", "update", "-qq"]):
        if step:
            subprocess.run(step, env=env, capture_output=True, timeout=APT_TIMEOUT_S)
        done = subprocess.run(
            install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
        if done.returncode == 0:
            return ""
    return f"apt-get install {package} failed: {done.stderr.strip()[-300:]}"


def _ensure_driver() -> str:
    if importlib.util.find_spec("psycopg2") is not None:
        return ""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "psycopg2-binary"],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_S,
    )
    importlib.invalidate_caches()
    if done.returncode != 0 or importlib.util.find_spec("psycopg2") is None:
        reason = done.stderr.strip()[-300:]
        return f"the PostgreSQL driver psycopg2 is missing and pip could not install it: {reason}"
    return ""


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """postgresql+psycopg2://postgres@127.0.0.1:<port>/optuna on a server of our own."""
    bindir = _postgres_bin()
    if bindir is None:
        why = _apt_install("postgresql")
        bindir = _postgres_bin()
        if bindir is None:
            pytest.skip(f"no PostgreSQL server binaries (initdb/pg_ctl): {why or 'not found'}")
    why = _ensure_driver()
    if why:
        pytest.skip(why)
    user: str | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            import pwd

            pwd.getpwnam("postgres")
            user = "postgres"
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
    folder = Path(tempfile.mkdtemp(prefix="eibacl-pg-"))
    data = folder / "data"
    if user:
        shutil.chown(folder, user)
    port = free_port()

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            user=user,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    started = False
    try:
        init = run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "-N")
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"
        )
        if start.returncode != 0:
            log = (
                (folder / "log").read_text(errors="replace")[-500:]
                if (folder / "log").exists()
                else ""
            )
            pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]} {log}")
        started = True
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE optuna")
        connection.close()
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
        # Optuna's tables are made once before the workers start (the cluster recipe of the
        # README): two processes creating them at once on an empty database collide in
        # PostgreSQL's catalog (UniqueViolation on pg_type_typname_nsp_index).
        import optuna

        optuna.storages.RDBStorage(url).engine.dispose()
        yield url
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_tune_workers_share_one_study_in_postgresql(
    postgres_url, fresh_experiment, noise_far_ood
):
    import optuna
    from mlflow.tracking import MlflowClient

    study_name = "pg-two-workers"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", WORKER, postgres_url, study_name, "1", noise_far_ood],
            cwd=REPO,  # the checkout on sys.path: the worker imports tests.*
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-4000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1]  # one trial each, numbers handed out once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params["temperature"] != trials[1].params["temperature"]
    # both workers logged under the study's one parent MLflow run
    assert outputs[0]["parent_run_id"] == outputs[1]["parent_run_id"]
    parent = MlflowClient().get_run(outputs[0]["parent_run_id"])
    assert parent.data.tags["eibacl.optuna_storage"].startswith("postgresql+psycopg2://postgres@")
