"""Generation beyond 32 px: the generator works at generator_size, variants come back at
the image size with the source's own fine detail."""

from __future__ import annotations

import json
import logging

import torch

from eibacl.config import GenerateRunConfig
from eibacl.data.resize import resize_uint8
from eibacl.generate.backends.resized import ResizedBackend, detail, generator_size
from tests import tiny


class Recording:
    """A fake inner backend: returns its input (identity) or a constant, records calls."""

    name = "fake"

    def __init__(self, constant: int | None = None) -> None:
        self.constant = constant
        self.seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def fit(self, images, labels, class_names, *, progress=True):
        self.seen.append((images, None))

    def img2img(self, images, class_weights, strength, *, guidance_scale, seeds, masks=None):
        self.seen.append((images, masks))
        return images.clone() if self.constant is None else torch.full_like(images, self.constant)

    def fingerprint(self):
        return "inner"


def sources(n=3, size=16):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_an_identity_generator_gives_back_the_sources_exactly():
    # up(down(x)) + (x - up(down(x))) = x: no blur, nothing lost by working at 8 px.
    inner = Recording()
    backend = ResizedBackend(inner, 8, 16)
    x = sources()
    masks = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:12, 4:12] = True
    out = backend.img2img(
        x, torch.ones(3, 1), 0.5, guidance_scale=1.0, seeds=[0, 1, 2], masks=masks
    )
    assert torch.equal(out, x)
    small, small_masks = inner.seen[-1]
    assert small.shape == (3, 3, 8, 8) and torch.equal(small, resize_uint8(x, 8))
    assert small_masks.shape == (3, 1, 8, 8) and small_masks[:, :, 2:6, 2:6].all()
    assert not small_masks[:, :, :2].any()
    backend.fit(x, torch.zeros(3, dtype=torch.long), ["a"])
    assert inner.seen[-1][0].shape == (3, 3, 8, 8)
    assert backend.fingerprint() == "inner@8->16"


def test_a_generated_image_keeps_the_source_detail():
    backend = ResizedBackend(Recording(constant=100), 8, 16)
    x = sources()
    out = backend.img2img(x, torch.ones(3, 1), 1.0, guidance_scale=1.0, seeds=[0, 1, 2])
    expected = (100.0 + detail(x, 8)).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(out, expected)
    assert detail(x, 8).mean().abs() < 5  # a zero-mean high-frequency band


def test_generator_size_never_exceeds_the_image_size():
    assert generator_size(32, 64) == 32
    assert generator_size(32, 16) == 16
    assert generator_size(0, 64) == 64


TINY = tiny.data(shots=4, val_per_class=4, test_per_class=5) | tiny.generation(strength="0.5")


def test_pipeline_trains_at_generator_size_and_says_how_long(fresh_experiment, caplog):
    from eibacl.data.training_data import prepare_data
    from eibacl.generate.dafusion.synthetic_set import SyntheticSet
    from eibacl.generate.pipeline import generate, generator_key

    config = GenerateRunConfig(**(TINY | {"generator_size": 8}))
    with caplog.at_level(logging.INFO, logger="eibacl.generate"):
        result = generate(config)
    (line,) = [
        r.getMessage() for r in caplog.records if "training the ddpm generator" in r.getMessage()
    ]
    assert "4 steps on 20 images at 8 px (variants resized up to 16 px)" in line and "min" in line
    saved = json.loads((result.generator_dir / "config.json").read_text())
    assert saved["config"]["image_size"] == 8
    assert SyntheticSet.open(result.set_dir).images.shape[-2:] == (16, 16)
    # A generator at the image size keeps its cache key: generator_size >= image_size
    # and 0 mean the same model.
    data = prepare_data(config)
    at_size = generator_key(GenerateRunConfig(**(TINY | {"generator_size": 16})), data)
    assert generator_key(GenerateRunConfig(**(TINY | {"generator_size": 0})), data) == at_size
    assert generator_key(GenerateRunConfig(**(TINY | {"generator_size": 32})), data) == at_size
    assert generator_key(config, data) != at_size
