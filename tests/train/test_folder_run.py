"""Folder data end to end (the EIBA case, shrunk): a skipped image and images without
their mask are counted and listed, the far-OOD set is absent unless given, dataset inputs
are named after the folder, and a pretrain run logs its training curves."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from eibacl import tracking
from eibacl.config import ProbeConfig
from tests import tiny

CLASSES = ("ring", "bolt", "gear", "hose")  # 'hose' is held out


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def build_folder(root):
    """4 classes x 6 objects x 2 views, 12 px RGB; masks for all but ring/obj0 (2 images);
    bolt/obj5/v1.png is corrupt."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        for o in range(6):
            for v in range(2):
                image = rng.integers(0, 60, (12, 12, 3))
                image[3:9, 3:9, c % 3] = 200
                write_png(root / name / f"obj{o}" / f"v{v}.png", image)
                if not (name == "ring" and o == 0):
                    mask = np.zeros((12, 12))
                    mask[2:10, 2:10] = 255
                    write_png(root / "masks" / name / f"obj{o}" / f"v{v}.png", mask)
    (root / "bolt" / "obj5" / "v1.png").write_bytes(b"not a png")
    far = root.parent / "far"
    for i in range(5):
        write_png(far / f"thing{i}.png", rng.integers(0, 256, (12, 12, 3)))
    return root, far


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory, make_experiment):
    from eibacl.evaluate.probe import probe
    from eibacl.train.baseline import baseline
    from eibacl.train.pretrain import pretrain

    root, far = build_folder(tmp_path_factory.mktemp("eiba") / "parts")
    name = f"folder-{uuid.uuid4().hex[:8]}"
    make_experiment(name)
    data = dict(
        data=f"folder:{root}",
        ood_classes="hose",
        shots=4,
        val_per_class=2,
        test_per_class=0,
        image_size=16,
        skip_corrupt=True,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_EXPERIMENT_NAME", name)
        mp.setattr(tracking, "REGISTERED_MODEL", f"eibacl-encoder-{name}")
        pretrained = pretrain(tiny.pretrain_config(**data))
        probed = probe(ProbeConfig(device="cpu", knn_k=1, far_ood=f"folder:{far}", register=False))
        ce = baseline(tiny.baseline_config(knn_k=1, register=False, **data))
    client = MlflowClient()
    return {
        "pretrain": client.get_run(pretrained.run_id),
        "probe": client.get_run(probed.run_id),
        "baseline": client.get_run(ce.run_id),
    }


def artifacts(run, folder=""):
    return {a.path for a in MlflowClient().list_artifacts(run.info.run_id, folder)}


def test_skipped_and_unmasked_images_are_counted_and_listed(folder_runs):
    for kind in ("pretrain", "baseline"):
        metrics = folder_runs[kind].data.metrics
        assert metrics["data/skipped"] == 1 and metrics["data/unmasked"] == 2
    path = tracking.download(folder_runs["pretrain"].info.run_id, "data_report.json")
    report = json.loads(path.read_text())
    assert [s["path"] for s in report["skipped"]] == ["bolt/obj5/v1.png"]
    assert report["unmasked"] == ["ring/obj0/v0.png", "ring/obj0/v1.png"]


def test_far_ood_is_absent_for_folder_data_unless_given(folder_runs):
    ce = folder_runs["baseline"]
    assert any(k.startswith("ood/near/") for k in ce.data.metrics)
    assert not any(k.startswith("ood/far/") for k in ce.data.metrics)
    assert "plots/roc_near.png" in artifacts(ce, "plots")
    assert "plots/roc_far.png" not in artifacts(ce, "plots")
    probed = folder_runs["probe"]
    assert 0 <= probed.data.metrics["ood/far/knn/auroc"] <= 1
    assert "plots/roc_far.png" in artifacts(probed, "plots")


def test_dataset_inputs_are_named_after_the_folder(folder_runs):
    inputs = folder_runs["pretrain"].inputs.dataset_inputs
    names = {d.dataset.name for d in inputs}
    assert names == {"parts (folder): train", "parts (folder): val", "parts (folder): test"}


def test_pretrain_logs_training_curves(folder_runs):
    assert "plots/training_curves.png" in artifacts(folder_runs["pretrain"], "plots")


def test_object_level_metrics_and_counts_in_probe_and_baseline(folder_runs):
    # hose is held out whole: 6 objects x 2 views = 12 near-OOD images (every one of them);
    # ood_val_classes=auto holds one more class out, and each of the 2 ID classes puts
    # round(0.2 * 6) = 1 object in test.
    for kind in ("probe", "baseline"):
        metrics = folder_runs[kind].data.metrics
        assert metrics["data/images/near_ood"] == 12 and metrics["data/objects/near_ood"] == 6
        assert metrics["data/objects/test"] == 2
        for key in (
            "object/accuracy",
            "ood/near/mahalanobis/object_auroc",
            "ood/near/knn/object_auroc",
            "ci_halfwidth/test/accuracy",
            "ci_halfwidth/object/accuracy",
            "ci_halfwidth/ood/near/mahalanobis/auroc",
            "ci_halfwidth/ood/near/mahalanobis/object_auroc",
        ):
            assert 0.0 <= metrics[key] <= 1.0, (kind, key)
