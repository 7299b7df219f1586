"""Command-line parsing for the entry points, built from the config dataclasses.

The library never reads `sys.argv`: entry-point scripts pass their arguments in.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from eibacl.config import ConfigError, field_type
from eibacl.train.stopping import Terminated

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parent
# Raised with a message for the user by eibacl's own code (a parameter, a file, the store):
# one line. The same types raised inside torch, numpy, MLflow, ... (CUDA out of memory, a
# bug) keep their traceback.
USER_ERROR_TYPES = (ValueError, FileNotFoundError, PermissionError, RuntimeError)


def build_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_cls):
        parser.add_argument(
            f"--{field.name}",
            type=field_type(field),
            default=field.default,
            # argparse %-formats help text: a literal "%" in a field's help must be doubled.
            help=(
                f"{field.metadata.get('help', '')} (default: {field.default!r})".replace("%", "%%")
            ),
        )
    return parser


def parse_config(config_cls: type[T], argv: Sequence[str], description: str = "") -> T:
    args = build_parser(config_cls, description).parse_args(list(argv))
    return config_cls(**vars(args))


def run_entry_point(
    config_cls: type[T], argv: Sequence[str], main: Callable[[T], Any], description: str
) -> int:
    """Parse, run, and turn a user's mistake into one clear line instead of a traceback.

    SIGTERM (a scheduler, `kill`, torchrun stopping a worker) ends the run like Ctrl-C.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    previous = _on_sigterm(_raise_terminated)
    try:
        config = parse_config(config_cls, argv, description)
        _forget_links()
        main(config)
        _print_links()
    except Exception as exc:  # noqa: BLE001 - the top level: user errors in one line, else re-raised
        if _debug() or not is_user_error(exc):
            raise
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(
            "eibacl: interrupted; what was logged is kept. Resume with -P resume=<run id>.",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        _on_sigterm(previous)
    return 0


def error_line(exc: BaseException) -> str:
    """The user's line, with the cause it was raised from when its text does not say it
    already (a store's answer, an OS error): the cause is never dropped."""
    line = f"eibacl: error: {exc}"
    cause = exc.__cause__
    if cause is None:
        return line
    said = str(cause) in line or bool(getattr(cause, "strerror", None) and cause.strerror in line)
    return line if said else f"{line}\n  caused by {type(cause).__name__}: {cause}"


def _forget_links() -> None:
    from eibacl.tracking import forget_top_run

    forget_top_run()


def _print_links() -> None:
    """Every entry point ends with the links to its run and its experiment's runs page."""
    from eibacl.tracking import unshown_links

    links = unshown_links()
    if links:
        print(f"\n{links}")


def check_tracking_store() -> int:
    """For scripts/run.sh, before `mlflow run` touches the store: 0, or 2 and one line."""
    from eibacl.tracking import TrackingError, check_store

    try:
        check_store()
    except TrackingError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    return 0


def is_user_error(exc: BaseException) -> bool:
    """The project's own errors, and the errors eibacl raises itself with a message."""
    if isinstance(exc, ConfigError):
        return True
    return isinstance(exc, USER_ERROR_TYPES) and _raised_in_package(exc.__traceback__)


def _raised_in_package(tb: TracebackType | None) -> bool:
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def _on_sigterm(handler: Any) -> Any:
    """Install `handler` for SIGTERM (main thread only, as Python allows); the old one back."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _debug() -> bool:
    import os

    return os.environ.get("EIBACL_DEBUG", "") not in ("", "0")
