"""Command lines into configs: MLflow's number formats, booleans, and one-line errors."""

from __future__ import annotations

import dataclasses
import time

import pytest

from eibacl.cli import parse_config, run_entry_point
from eibacl.config import BaselineConfig, PretrainConfig, ProbeConfig, parse_bool, parse_int
from eibacl.mlproject import ENTRY_POINTS, _config_class


def test_mlflow_number_and_bool_formats():
    config = parse_config(PretrainConfig, ["--epochs", "5.0", "--progress", "false"])
    assert config.epochs == 5 and isinstance(config.epochs, int)
    assert config.progress is False
    config = parse_config(PretrainConfig, ["--lr", "1e-3", "--use_masks", "True", "--shots", "7"])
    assert config.lr == 0.001 and config.use_masks is True and config.shots == 7


def test_defaults_are_the_dataclass_defaults():
    for cls in (PretrainConfig, ProbeConfig, BaselineConfig):
        assert parse_config(cls, []) == cls()


def test_empty_string_parameters_stay_empty():
    config = parse_config(PretrainConfig, ["--resume", "", "--id_classes", ""])
    assert config.resume == "" and config.id_classes == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--progress", "maybe"],
        ["--epochs", "2.5"],
        ["--epochs", "five"],
        ["--lr", "fast"],
        ["--no_such_parameter", "1"],
    ],
)
def test_bad_values_exit_through_argparse(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(PretrainConfig, argv)
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_parse_helpers():
    assert [parse_bool(v) for v in ("1", "yes", "ON", "0", "no", "Off")] == [True] * 3 + [False] * 3
    assert parse_int("100.0") == 100 and parse_int("-3") == -3


def test_config_error_becomes_exit_code_2_naming_the_parameter(capsys):
    called = []
    code = run_entry_point(PretrainConfig, ["--temperature", "0"], called.append, "pretrain")
    assert code == 2
    assert not called
    err = capsys.readouterr().err
    assert "temperature" in err and "eibacl: error:" in err
    assert "Traceback" not in err


def test_value_error_from_the_library_becomes_exit_code_2(capsys):
    from eibacl.tracking import resolve_encoder

    def main(config):
        resolve_encoder(config.encoder_uri)

    assert run_entry_point(ProbeConfig, ["--encoder_uri", "bogus:9"], main, "probe") == 2
    err = capsys.readouterr().err
    assert "encoder_uri='bogus:9'" in err and "Traceback" not in err


def test_errors_raised_outside_eibacl_keep_their_traceback():
    """A RuntimeError from torch (CUDA out of memory, a shape bug) is no user mistake."""
    import torch

    def main(config):
        torch.zeros(2, 3) @ torch.zeros(2, 3)

    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        run_entry_point(ProbeConfig, [], main, "probe")

    def broken(config):
        raise ValueError("raised here, in a test, not by eibacl")

    with pytest.raises(ValueError, match="not by eibacl"):
        run_entry_point(ProbeConfig, [], broken, "probe")


def test_sigterm_is_an_interrupt_with_exit_code_143(capsys):
    import os
    import signal

    def terminated(config):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends

    before = signal.getsignal(signal.SIGTERM)
    assert run_entry_point(ProbeConfig, [], terminated, "probe") == 143
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_interrupt_is_exit_code_130_and_success_is_0(capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    assert run_entry_point(ProbeConfig, [], interrupted, "probe") == 130
    assert "resume" in capsys.readouterr().err
    seen = []
    assert run_entry_point(ProbeConfig, ["--knn_k", "3.0"], seen.append, "probe") == 0
    assert seen == [dataclasses.replace(ProbeConfig(), knn_k=3)]


def test_debug_mode_reraises(monkeypatch):
    monkeypatch.setenv("EIBACL_DEBUG", "1")
    from eibacl.config import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        run_entry_point(PretrainConfig, ["--temperature", "-1"], lambda c: None, "pretrain")


def test_store_check_is_one_line_and_runs_before_mlflow_run(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from eibacl.cli import check_tracking_store

    (tmp_path / "file").write_text("in the way")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    assert check_tracking_store() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err and "MLFLOW_TRACKING_URI" in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ok' / 'mlflow.db'}")
    assert check_tracking_store() == 0
    run_sh = (Path(__file__).resolve().parents[1] / "scripts" / "run.sh").read_text()
    assert run_sh.index("check_tracking_store") < run_sh.index("mlflow run .")


def test_store_check_refuses_a_sqlite_store_it_cannot_write(tmp_path, monkeypatch, capsys):
    import sqlite3

    from eibacl.cli import check_tracking_store

    db = tmp_path / "mlflow.db"
    holder = sqlite3.connect(db)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another writer that never lets go
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    try:
        assert check_tracking_store() == 2
    finally:
        holder.rollback()
        holder.close()
    assert "cannot be written (database is locked)" in capsys.readouterr().err


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_points_help_prints(entry, capsys):
    """`--help` formats every field's help (a bare "%" in one once crashed `compare --help`)."""
    config_cls = _config_class(ENTRY_POINTS[entry][0])
    with pytest.raises(SystemExit) as exited:
        parse_config(config_cls, ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    for field in dataclasses.fields(config_cls):
        assert f"--{field.name}" in printed
