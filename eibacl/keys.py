"""MLflow key parts made from user values (class names, mode names, recipe specs).

MLflow accepts metric, parameter and tag keys made of word characters (Unicode letters and
digits, '_'), '-', '.', ' ', ':' and '/', and refuses a key that a path normalisation would
change (e.g. '..' or '//'). A user value such as ``positives+negatives``, ``T-shirt/top`` or
``class-mix@0.8`` is one *part* of a key, so every other character, '/' included, becomes '_'.
This is the one helper for that; mlflow's own checker is private, so tests run it against a
real tracking store.
"""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^\w.\- :]")


def key_part(value: object) -> str:
    """``value`` as one valid segment of an MLflow key (never empty, '.' or '..')."""
    part = _NOT_ALLOWED.sub("_", str(value)).strip()
    if part.strip(".") == "":
        part = "_" + part
    return part
