"""The code version that keys step reuse: a commit, plus a digest of local changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from eibacl import tracking, version


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "eibacl").mkdir(parents=True)
    (root / "eibacl" / "a.py").write_text("x = 1\n")
    (root / "README.md").write_text("docs\n")
    for args in (
        ("init", "-q"),
        ("add", "."),
        ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"),
    ):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    return root


def _version_of(root: Path, monkeypatch) -> str:
    monkeypatch.setattr(version, "PACKAGE_DIR", root / "eibacl")
    version.code_version.cache_clear()
    try:
        return version.code_version()
    finally:
        version.code_version.cache_clear()


def test_commit_and_local_changes_make_the_version(tmp_path, monkeypatch):
    root = _repo(tmp_path)
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert _version_of(root, monkeypatch) == f"git:{commit}"
    (root / "README.md").write_text("more docs\n")  # not code: same version
    assert _version_of(root, monkeypatch) == f"git:{commit}"
    (root / "eibacl" / "a.py").write_text("x = 2\n")
    edited = _version_of(root, monkeypatch)
    assert edited.startswith(f"git:{commit}+")
    (root / "eibacl" / "a.py").write_text("x = 3\n")
    assert _version_of(root, monkeypatch) not in (edited, f"git:{commit}")
    (root / "eibacl" / "a.py").write_text("x = 1\n")
    (root / "eibacl" / "new.py").write_text("y = 1\n")  # an untracked module counts too
    assert _version_of(root, monkeypatch).startswith(f"git:{commit}+")


def test_without_git_the_package_version(tmp_path, monkeypatch):
    (tmp_path / "eibacl").mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert _version_of(tmp_path, monkeypatch).startswith("eibacl==")


def test_the_reuse_key_changes_with_the_code():
    params = {"epochs": 3, "progress": True}
    assert tracking.params_digest(params, code="git:a") == tracking.params_digest(
        params | {"progress": False}, code="git:a"
    )
    assert tracking.params_digest(params, code="git:a") != tracking.params_digest(
        params, code="git:b"
    )
    assert tracking.params_digest(params) == tracking.params_digest(
        params, code=version.code_version()
    )
