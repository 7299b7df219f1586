"""Which code produced a result: part of the key under which finished steps are reused.

In a git checkout: the commit, plus a digest of the uncommitted changes to the code (so
two different edits of the same commit are two versions). Installed without git: the
package version.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CODE_PATHS = ("eibacl", "entrypoints")  # what decides results (tests, docs, bench do not)


@functools.cache
def code_version() -> str:
    """'git:<commit>' or 'git:<commit>+<digest of local changes>', else 'eibacl==<version>'."""
    root = PACKAGE_DIR.parent
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return f"eibacl=={_package_version()}"
    diff = _git(root, "diff", "HEAD", "--", *CODE_PATHS) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS) or ""
    for name in untracked.split():
        path = root / name
        diff += f"\n{name}\n" + (path.read_text(errors="replace") if path.is_file() else "")
    if not diff.strip():
        return f"git:{commit}"
    return f"git:{commit}+{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _package_version() -> str:
    try:
        return version("eibacl")
    except PackageNotFoundError:
        return "unknown"
