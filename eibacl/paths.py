"""Where the project keeps caches (decoded data, synthetic sets, generator models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`EIBACL_CACHE` if set, else `.eibacl-cache` in the working directory."""
    return Path(os.environ.get("EIBACL_CACHE", ".eibacl-cache")).resolve()
