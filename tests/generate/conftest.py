"""Fixtures for the generator tests: a tiny random Stable Diffusion folder, built once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _load_tiny_sd():
    path = Path(__file__).with_name("tiny_sd.py")
    spec = importlib.util.spec_from_file_location("eibacl_tests_tiny_sd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_sd_module():
    """The helper module ``tests/generate/tiny_sd.py`` (imported by path: tests is no package)."""
    return _load_tiny_sd()


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory, tiny_sd_module) -> Path:
    """A tiny randomly initialised SD 1.x pipeline saved in the diffusers folder layout."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    return tiny_sd_module.build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")
