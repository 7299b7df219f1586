"""The `generate` run: made once, found again; both backends through the same pipeline."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl.config import ConfigError, GenerateRunConfig
from eibacl.generate.dafusion.synthetic_set import SyntheticSet
from eibacl.generate.pipeline import generate
from tests import tiny

TINY = tiny.data(shots=4, val_per_class=4, test_per_class=5) | tiny.generation(
    num_synthetic=2, strength="0.25,0.75"
)


def test_second_identical_generate_reuses_the_set(fresh_experiment):
    config = GenerateRunConfig(**TINY)
    first = generate(config)
    assert not first.reused and not first.generator_reused
    second = generate(config)
    assert second.reused and second.generator_reused
    assert second.set_dir == first.set_dir
    rows = SyntheticSet.open(first.set_dir).rows
    assert len(rows) == 5 * 4 * (2 + 1)  # 5 ID classes x shots x (variants + near-OOD)
    assert {r.kind for r in rows} == {"id", "near_ood"}
    run = MlflowClient().get_run(first.run_id)
    assert run.data.metrics["synthetic/id_count"] == 5 * 4 * 2
    assert "quality/id/own_class_rate" in run.data.metrics
    assert "quality/near_ood/source_class_rate" in run.data.metrics
    artifacts = {f.path for f in MlflowClient().list_artifacts(first.run_id, "samples")}
    assert artifacts == {
        "samples/variants_by_strength.png",
        "samples/near_ood_by_recipe.png",
        "samples/judge_scores.png",
        "samples/closest_pairs.png",  # the judge's memorisation view
    }
    assert "judge/id/kept_rate" in run.data.metrics
    assert "judge/near_ood/mahalanobis/band_rate" in run.data.metrics
    assert "judge/real_ood_val/mahalanobis/auroc" in run.data.metrics
    assert 0 <= run.data.metrics["judge/id/memorised_rate"] <= 1  # vs the training images
    reused_samples = {f.path for f in MlflowClient().list_artifacts(second.run_id, "samples")}
    assert reused_samples == artifacts  # a reused set shows its stored grids
    generator_files = {f.path for f in MlflowClient().list_artifacts(first.run_id, "generator")}
    assert generator_files  # the trained generator is logged by the run that trained it
    assert not MlflowClient().list_artifacts(second.run_id, "generator")
    other = generate(GenerateRunConfig(**(TINY | {"num_near_ood": 2})))
    assert other.set_dir != first.set_dir
    assert other.generator_reused  # same generator settings: the model is not trained again


def test_new_recipes_through_the_pipeline(fresh_experiment):
    config = GenerateRunConfig(
        **(TINY | {"near_ood_recipes": "away,extrapolate", "extrapolate_factor": 2.0})
    )
    result = generate(config)
    synthetic = SyntheticSet.open(result.set_dir)
    assert {r.recipe for r in synthetic.rows if r.kind == "near_ood"} == {"away", "extrapolate"}
    assert synthetic.settings["generation"]["extrapolate_factor"] == 2.0
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for recipe in ("away", "extrapolate"):
        assert f"quality/near_ood/{recipe}/source_class_rate" in metrics
    samples = {f.path for f in MlflowClient().list_artifacts(result.run_id, "samples")}
    assert "samples/near_ood_by_recipe.png" in samples


@pytest.mark.parametrize(
    "change, message",
    [
        ({"strength": "0"}, "strength"),
        ({"strength": "1.5"}, "strength"),
        ({"num_synthetic": -1}, "num_synthetic"),
        ({"generator": "gan"}, "generator"),
    ],
)
def test_bad_generation_parameters(change, message):
    with pytest.raises(ConfigError, match=message):
        GenerateRunConfig(**(TINY | change))


def test_unknown_recipe_fails_before_any_work(fresh_experiment):
    with pytest.raises(ValueError, match="unknown near-OOD recipe"):
        generate(GenerateRunConfig(**(TINY | {"near_ood_recipes": "class-mix,nonsense"})))


def test_missing_sd_model_names_the_folder_layout(fresh_experiment, tmp_path):
    config = GenerateRunConfig(
        **(TINY | {"generator": "stable-diffusion", "sd_model": str(tmp_path / "none")})
    )
    with pytest.raises(FileNotFoundError, match="sd_model"):
        generate(config)


def test_stable_diffusion_backend_through_the_pipeline(fresh_experiment, tiny_sd_inpaint_dir):
    config = GenerateRunConfig(
        **(
            TINY
            | {
                "generator": "stable-diffusion",
                "sd_model": str(tiny_sd_inpaint_dir),
                "ti_steps": 2,
                "num_synthetic": 1,
                "shots": 2,
                "inference_steps": 2,
                "near_ood_recipes": "class-mix,away,extrapolate",
            }
        )
    )
    result = generate(config)
    synthetic = SyntheticSet.open(result.set_dir)
    assert len(synthetic) == 5 * 2 * 2  # 5 ID classes x 2 shots x (1 variant + 1 near-OOD)
    assert {r.recipe for r in synthetic.rows if r.kind == "near_ood"} == {
        "class-mix",
        "away",
        "extrapolate",
    }
    assert synthetic.images.shape[1:] == (1, 16, 16)
    assert {r.backend for r in synthetic.rows} == {"stable-diffusion"}


def test_textual_inversion_tokens_are_reused_by_run_id(fresh_experiment, tiny_sd_dir):
    sd = TINY | {
        "generator": "stable-diffusion",
        "sd_model": str(tiny_sd_dir),
        "use_masks": False,
        "ti_steps": 2,
        "num_synthetic": 1,
        "num_near_ood": 0,
        "shots": 2,
        "inference_steps": 2,
    }
    first = generate(GenerateRunConfig(**sd))
    run = MlflowClient().get_run(first.run_id)
    assert run.data.metrics["ti/steps"] == 2 and run.data.metrics["ti/steps_per_s"] > 0
    assert run.data.tags["generator/masks"] == "none"
    # another TI setting, so no cache hit: the tokens come from the first run's artifact
    again = generate(
        GenerateRunConfig(**(sd | {"ti_steps": 7, "ti_embeddings": f"runs:/{first.run_id}"}))
    )
    assert not again.generator_reused
    for token, vectors in first.backend.embeddings.items():
        assert torch.equal(again.backend.embeddings[token], vectors)
    assert "ti/steps" not in MlflowClient().get_run(again.run_id).data.metrics  # not trained
    other = sd | {"ood_classes": "Trouser", "ti_embeddings": f"runs:/{first.run_id}"}
    with pytest.raises(ValueError, match=r"ti_embeddings=.*learned tokens for .*same"):
        generate(GenerateRunConfig(**other))
