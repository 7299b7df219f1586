"""Class rows learned on the shots with the prior frozen (the textual-inversion analogue), and
the generate run on a prior at its defaults with sizes shrunk."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl.config import ConfigError, GenerateRunConfig
from eibacl.data.training_data import prepare_data
from eibacl.generate.backends.ddpm import DDPMBackend
from eibacl.generate.backends.ddpm_inversion import initial_rows, invert
from eibacl.generate.backends.ddpm_prior import fit_pseudo_classes
from eibacl.generate.pipeline import generate, generator_dir
from tests import tiny

SMALL = dict(block_out_channels=(8, 16), norm_num_groups=4, attention=False, batch_size=8)


def _prior() -> tuple[DDPMBackend, object, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=gen)
    pseudo = fit_pseudo_classes(pool, 3, 4, seed=0)
    prior = DDPMBackend(8, 1, 3, train_steps=2, **SMALL)
    prior.fit(pool, pseudo.assign(pool), ["p0", "p1", "p2"], progress=False)
    shots = pool[:10]
    return prior, pseudo, shots, torch.arange(10) % 2


def test_rows_start_at_the_mean_of_the_prior_rows_their_shots_fall_in():
    prior, pseudo, shots, labels = _prior()
    rows, _ = initial_rows(prior, pseudo, shots, labels, 2)
    table = prior.model.class_embedding.weight.detach()
    assigned = pseudo.assign(shots)
    for c in range(2):
        expected = torch.stack([table[k] for k in assigned[labels == c].tolist()]).mean(0)
        assert torch.allclose(rows[c], expected, atol=1e-6)


def test_inversion_learns_only_the_class_rows():
    prior, pseudo, shots, labels = _prior()
    backend = invert(prior, pseudo, shots, labels, ["a", "b"], steps=5)
    for key, value in prior.model.unet.state_dict().items():
        assert torch.equal(value, backend.model.unet.state_dict()[key]), key
    table, prior_table = backend.model.class_embedding.weight, prior.model.class_embedding.weight
    assert torch.equal(table[-1], prior_table[-1])  # the null row is the prior's
    start, _ = initial_rows(prior, pseudo, shots, labels, 2)
    assert not torch.allclose(table[:2], start)  # the class rows moved
    assert backend.config.num_classes == 2 and backend.trained_steps == 5
    assert backend.ti_stats["inversion/steps"] == 5 and backend.ti_stats["inversion/seconds"] > 0
    out = backend.img2img(shots[:2], torch.eye(2), 0.5, guidance_scale=3.0, seeds=[0, 1])
    assert out.shape == shots[:2].shape  # samples as any embedded ddpm


GENERATE = tiny.data(shots=4, val_per_class=4, test_per_class=5) | tiny.generation(
    inversion_steps=3,
    generator_seed=5,  # a generator of its own (the cache is per session)
)


def test_generate_on_a_prior_at_its_defaults(tiny_prior, fresh_experiment):
    _, folder = tiny_prior
    config = GenerateRunConfig(**GENERATE, generator_prior=str(folder))
    result = generate(config)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["inversion/steps"] == 3
    assert "inversion/loss_end" in run.data.metrics
    assert 0 <= run.data.metrics["judge/id/memorised_rate"] <= 1  # vs training and pool images
    again = generate(config)
    assert again.generator_reused and again.reused
    plain = GenerateRunConfig(**GENERATE)
    assert generator_dir(plain, prepare_data(plain)) != result.generator_dir  # prior in the key


def test_default_prior_falls_back_in_one_line_where_none_ships(caplog, fresh_experiment):
    config = GenerateRunConfig(**GENERATE, generator_prior="default")  # 16 px: none ships
    with caplog.at_level("INFO"):
        result = generate(config)
    assert "no prior ships for data fashion-mnist at 16 px" in caplog.text
    assert result.generator_dir == generate(GenerateRunConfig(**GENERATE)).generator_dir


def test_a_prior_folder_with_stable_diffusion_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="generator_prior=.* is invalid: a prior is for"):
        GenerateRunConfig(generator="stable-diffusion", generator_prior=str(tmp_path))
    GenerateRunConfig(generator="stable-diffusion")  # default: no prior for SD, no error


def test_a_missing_prior_folder_is_named(tmp_path, fresh_experiment):
    config = GenerateRunConfig(**GENERATE, generator_prior=str(tmp_path / "none-here"))
    with pytest.raises(ValueError, match=r"none-here.*missing.*-e prior -P prior_out="):
        generate(config)
