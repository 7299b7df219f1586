"""The main job on folder data (the EIBA case, shrunk): RGB photos with masks, with the
Stable Diffusion backend (tiny random pipeline: textual inversion, inpainting of the
object region, judge, pretrain, probe, baseline) and with the embedded ddpm working
below the image size."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from PIL import Image

from eibacl.config import MainConfig
from eibacl.workflow.main import main
from tests import tiny

CLASSES = ("ring", "bolt", "gear", "hose")  # 'hose' is held out


def build_folder(root):
    """4 classes x 6 objects x 2 views, 24 px RGB, a mask for every image."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(CLASSES):
        for o in range(6):
            for v in range(2):
                image = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
                image[6:18, 6:18, c % 3] = 200
                path = root / name / f"obj{o}" / f"v{v}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
                mask = np.zeros((24, 24), dtype=np.uint8)
                mask[5:19, 5:19] = 255
                path = root / "masks" / name / f"obj{o}" / f"v{v}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(path)
    return root


TINY = dict(
    ood_classes="hose",
    shots=4,
    val_per_class=2,
    **tiny.training(epochs=1, batch_size=8, warmup_epochs=0, eval_every=0),
    knn_k=1,
    num_synthetic=1,
    num_near_ood=1,
    inference_steps=2,
    strength="0.5",
    near_ood_recipes="class-mix",
    near_ood_per_batch=2,
    register=False,
)


def _steps(parent_id: str) -> dict[str, str]:
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
        search_all_experiments=True,
    )
    return {r.data.tags["eibacl.entry_point"]: r.info.run_id for r in children}


def _newest_main(experiment: str):
    return mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.`eibacl.entry_point` = 'main'",
        output_format="list",
    )[0]


def test_main_on_folder_data_with_stable_diffusion(fresh_experiment, tiny_sd_inpaint_dir, tmp_path):
    root = build_folder(tmp_path / "parts")
    config = MainConfig(
        data=f"folder:{root}",
        image_size=16,
        generator="stable-diffusion",
        sd_model=str(tiny_sd_inpaint_dir),
        ti_steps=2,
        use_masks=True,
        **TINY,
    )
    results = main(config)
    assert set(results) == {"supcon", "ce"}
    steps = _steps(_newest_main(fresh_experiment).info.run_id)
    assert set(steps) == {"generate", "pretrain", "probe", "baseline"}
    generate = mlflow.get_run(steps["generate"])
    assert generate.data.tags["eibacl.generator"] == "stable-diffusion"
    assert generate.data.tags["generator/masks"] == "file"
    assert generate.data.metrics["generator/source_px"] == 32  # the tiny SD's own size
    # the 14 px mask box grown by 1 px a side
    assert generate.data.metrics["generator/source_native_px"] == 16
    # 4 classes: hose held out (ood_classes), one drawn for ood_val_classes=auto, 2 ID x 4
    assert generate.data.metrics["synthetic/id_count"] == 2 * 4
    assert "quality/id/own_class_rate" in generate.data.metrics
    for step in ("probe", "baseline"):
        metrics = mlflow.get_run(steps[step]).data.metrics
        assert 0 <= metrics["ood/near/knn/auroc"] <= 1
        assert not any(k.startswith("ood/far/") for k in metrics)  # far_ood=auto: none
    assert mlflow.get_run(steps["pretrain"]).data.metrics["data/unmasked"] == 0


@pytest.mark.parametrize("generator_size", [16])
def test_main_on_folder_data_with_ddpm_below_the_image_size(
    fresh_experiment, tmp_path, generator_size
):
    root = build_folder(tmp_path / "parts")
    config = MainConfig(
        data=f"folder:{root}",
        image_size=32,
        generator_size=generator_size,
        generator_steps=2,
        **TINY,
    )
    main(config)
    steps = _steps(_newest_main(fresh_experiment).info.run_id)
    generate = mlflow.get_run(steps["generate"])
    # 4 classes: hose held out (ood_classes), one drawn for ood_val_classes=auto, 2 ID x 4
    assert generate.data.metrics["synthetic/id_count"] == 2 * 4
