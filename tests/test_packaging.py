"""One source for dependency pins; no declared dependency the code does not use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_torch_is_pinned_only_in_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tested = project["optional-dependencies"]["tested"]
    assert any(r.startswith("torch==") for r in tested)
    for name in ("conda.yaml", "scripts/setup.sh"):
        text = (ROOT / name).read_text()
        assert "torch==" not in text and "torchvision==" not in text, name
        assert "tested]" in text, name


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_every_declared_dependency_is_imported():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    code = "\n".join(p.read_text() for p in (ROOT / "eibacl").rglob("*.py"))
    imports = {"scikit-learn": "sklearn", "pillow": "PIL"}
    indirect = {"transformers"}  # the Stable Diffusion text encoder, loaded by diffusers
    for requirement in project["dependencies"]:
        name = requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        if name in indirect:
            continue
        module = imports.get(name, name.replace("-", "_"))
        assert f"import {module}" in code or f"from {module}" in code, name
