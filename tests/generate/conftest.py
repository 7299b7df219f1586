"""Fixtures for the generator tests: a tiny random Stable Diffusion folder, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised SD 1.x pipeline saved in the diffusers folder layout."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tests.generate.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture(scope="session")
def tiny_sd_inpaint_dir(tmp_path_factory) -> Path:
    """The tiny pipeline with a 9-channel (inpainting) UNet, for runs with masks."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tests.generate.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-inpaint") / "sd", inpaint_unet=True)


TINY_PRIOR = {
    "shots": 4,
    "val_per_class": 4,
    "test_per_class": 5,
    "image_size": 16,
    "prior_steps": 3,
    "prior_classes": 4,
    "prior_samples": 16,
    "progress": False,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory) -> tuple:
    """(PriorResult, folder): the `prior` run at its defaults with only sizes shrunk."""
    from eibacl.config import PriorConfig
    from eibacl.generate.prior_run import run_prior

    out = tmp_path_factory.mktemp("priors") / "tiny-prior"
    return run_prior(PriorConfig(**TINY_PRIOR, prior_out=str(out))), out
