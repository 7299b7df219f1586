"""Command-line parsing for the entry points, built from the config dataclasses.

The library never reads `sys.argv`: entry-point scripts pass their arguments in.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eibacl.config import ConfigError

T = TypeVar("T")
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false")


def parse_int(text: str) -> int:
    """Accept '100' and '100.0' (MLflow passes numbers as typed by the user)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def field_type(field: dataclasses.Field) -> Callable[[str], Any]:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    return {"int": parse_int, "float": float, "bool": parse_bool}.get(kind, str)


def build_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_cls):
        parser.add_argument(
            f"--{field.name}",
            type=field_type(field),
            default=field.default,
            help=f"{field.metadata.get('help', '')} (default: {field.default!r})",
        )
    return parser


def parse_config(config_cls: type[T], argv: Sequence[str], description: str = "") -> T:
    args = build_parser(config_cls, description).parse_args(list(argv))
    return config_cls(**vars(args))


def run_entry_point(
    config_cls: type[T], argv: Sequence[str], main: Callable[[T], Any], description: str
) -> int:
    """Parse, run, and turn a user's mistake into one clear line instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(config_cls, argv, description)
        main(config)
    except (ConfigError, FileNotFoundError, ValueError, PermissionError, RuntimeError) as exc:
        if _debug():
            raise
        print(f"eibacl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "eibacl: interrupted; what was logged is kept. Resume with -P resume=<run id>.",
            file=sys.stderr,
        )
        return 130
    return 0


def _debug() -> bool:
    import os

    return os.environ.get("EIBACL_DEBUG", "") not in ("", "0")
