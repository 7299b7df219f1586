"""Measurement on the README's folder case (10 classes x 12 objects x 3 views, 64 px):
near-OOD test images before and after "every held-out image is used", the headline's 95% CI
half-width per image and per object, and the Mahalanobis AUROC's stability when the ridge
(sample covariance) or the shrinkage target (Ledoit-Wolf, OAS) is perturbed 10x.

    python bench/bench_measure_folder.py        # the README's case: 3 classes drawn, 64 px
    python bench/bench_measure_folder.py --train-epochs 30   # features of a trained encoder
    python bench/bench_measure_folder.py --image-size 32 \
        --ood-classes "Teil disc grün,Teil square grün,Teil bar grün"   # a harder hold-out

Features: torchvision's resnet18 (512-d), randomly initialised (seed 0; no ImageNet weights
offline), or trained `--train-epochs` with cross-entropy on the training split. 6 ID
classes x 18 shots = 108 training images, so the covariance has more dimensions than images.
Prints the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eibacl.config import DataConfig  # noqa: E402
from eibacl.data import splits  # noqa: E402
from eibacl.data.training_data import TrainingData, evaluation_sets, prepare_data  # noqa: E402
from eibacl.evaluate.features import extract_features  # noqa: E402
from eibacl.evaluate.objects import auroc_halfwidth, object_auroc, object_means  # noqa: E402
from eibacl.evaluate.ood_metrics import auroc  # noqa: E402
from eibacl.evaluate.scorers import (  # noqa: E402
    MahalanobisModel,
    fit_mahalanobis,
    mahalanobis_score,
)


def old_split(data: TrainingData) -> splits.Split:
    """Today's rule: held-out classes give only their test_fraction share of objects
    (near-OOD) and val_per_class images (validation OOD)."""
    config, imageset, split = data.split.params, data.imageset, data.split
    members: dict[str, list[int]] = {name: [] for name in imageset.class_names}
    for i, y in enumerate(imageset.labels.tolist()):
        members[imageset.class_names[y]].append(i)
    ood_test, ood_val = [], []
    for name in split.ood_classes + split.ood_val_classes:
        rng = splits._class_rng(config["split_seed"], name, "test")
        pool, test = splits._test_split(imageset, members[name], config["test_fraction"], rng, name)
        if name in split.ood_classes:
            ood_test += [imageset.ids[i] for i in test]
        else:
            rng = splits._class_rng(config["split_seed"], name, "train")
            val, _ = splits._take_groups(imageset, pool, config["val_per_class"], rng, False)
            ood_val += [imageset.ids[i] for i in val]
    return replace(split, ood_test=ood_test, ood_val=ood_val)


def headline_cis(config: DataConfig, split: splits.Split, encoder: torch.nn.Module) -> str:
    data = prepare_data(config, split)
    sets = evaluation_sets(data, "none")
    feats = {
        k: extract_features(encoder, x)
        for k, x in (("train", sets.train_x), ("test", sets.test_x), ("near", sets.near_x))
    }
    model = fit_mahalanobis(feats["train"], sets.train_y)
    test, near = mahalanobis_score(model, feats["test"]), mahalanobis_score(model, feats["near"])
    tg, ng = sets.object_ids("test"), sets.object_ids("near")
    per_image = auroc_halfwidth(test, tg, near, ng)
    naive = auroc_halfwidth(
        test, list(map(str, range(len(test)))), near, list(map(str, range(len(near))))
    )
    ids = (sorted(set(tg)), sorted(set(ng)))
    per_object = auroc_halfwidth(object_means(test, tg), ids[0], object_means(near, ng), ids[1])
    return (
        f"near-OOD {len(near)} images / {len(set(ng))} objects: headline AUROC "
        f"{auroc(test, near):.3f} +- {per_image:.3f} (95% CI half-width, objects resampled; "
        f"+- {naive:.3f} if views were independent); per object "
        f"{object_auroc(test, tg, near, ng):.3f} +- {per_object:.3f}"
    )


def shrunk_precision(centred: np.ndarray, shrinkage: float, target_scale: float) -> torch.Tensor:
    """pinv((1 - s) S + s * target_scale * mu I): sklearn's shrunk covariance with its
    target mu = trace(S) / D multiplied by `target_scale`."""
    s = centred.T @ centred / len(centred)
    mu = np.trace(s) / s.shape[0]
    cov = (1 - shrinkage) * s + shrinkage * target_scale * mu * np.eye(s.shape[0])
    return torch.linalg.pinv(torch.from_numpy(cov), hermitian=True)


def stability(data: TrainingData, encoder: torch.nn.Module) -> None:
    from sklearn.covariance import OAS, LedoitWolf

    sets = evaluation_sets(data, "none")
    train = extract_features(encoder, sets.train_x).double()
    test, near = extract_features(encoder, sets.test_x), extract_features(encoder, sets.near_x)
    val, near_val = (
        extract_features(encoder, sets.val_x),
        extract_features(encoder, sets.near_val_x),
    )
    print(
        f"features: {train.shape[1]}-d, {len(train)} training images, test {len(test)}, "
        f"near-OOD {len(near)}; validation {len(val)} vs validation-OOD {len(near_val)}"
    )

    def area(model: MahalanobisModel, a, b) -> float:
        return auroc(mahalanobis_score(model, a), mahalanobis_score(model, b))

    for ridge in (1e-7, 1e-6, 1e-5):
        m = fit_mahalanobis(train, sets.train_y, covariance="ridge", ridge=ridge)
        print(
            f"ridge (old) {ridge:.0e}: test AUROC {area(m, test, near):.4f}, "
            f"validation {area(m, val, near_val):.4f}"
        )
    base = fit_mahalanobis(train, sets.train_y, covariance="ridge")
    centred = (train - base.means[torch.searchsorted(base.classes, sets.train_y)]).numpy()
    for name, estimator in (("ledoit-wolf", LedoitWolf), ("oas", OAS)):
        shrinkage = estimator(assume_centered=True).fit(centred).shrinkage_
        row = []
        for scale in (0.1, 1.0, 10.0):
            m = replace(base, precision=shrunk_precision(centred, shrinkage, scale))
            row.append(f"x{scale:g}: {area(m, test, near):.4f}")
        fitted = fit_mahalanobis(train, sets.train_y, covariance=name)
        print(
            f"{name} (shrinkage {shrinkage:.3f}) test AUROC with the target {', '.join(row)}; "
            f"validation {area(fitted, val, near_val):.4f}"
        )


def null_space_share(data: TrainingData, encoder: torch.nn.Module) -> None:
    """How much of the old (ridge) squared distance of a test image to its class mean comes
    from directions the training images never spread into (sample-covariance eigenvalues
    below 1e-9 of the largest)."""
    sets = evaluation_sets(data, "none")
    train = extract_features(encoder, sets.train_x).double()
    test = extract_features(encoder, sets.test_x).double()
    base = fit_mahalanobis(train, sets.train_y, covariance="ridge")
    centred = train - base.means[torch.searchsorted(base.classes, sets.train_y)]
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(train))
    null = values < 1e-9 * values.max()
    diff = (test - base.means[sets.test_y]) @ vectors  # own class mean
    scale = values.mean()
    terms = diff**2 / (values.clamp(min=0) + 1e-6 * scale)
    share = (terms[:, null].sum(1) / terms.sum(1)).mean()
    print(
        f"ridge (old): rank {int((~null).sum())} of {len(values)}; the null space gives "
        f"{share:.1%} of a test image's squared distance to its class mean"
    )


def train_quickly(encoder: torch.nn.Module, data: TrainingData, epochs: int) -> None:
    """Cross-entropy on the training split (Adam 1e-3, batch 36, flips): a quickly trained
    encoder, so the features have a class structure."""
    from eibacl.models.heads import ClassifierNetwork

    network = ClassifierNetwork(encoder, data.num_classes).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    x, y = data.train_x.float() / 255.0, data.train_y
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for rows in order.split(36):
            batch = x[rows]
            flip = torch.rand(len(rows)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(network(batch), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    print(f"trained {epochs} epochs of cross-entropy; last batch loss {loss.item():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ood-classes", default="3", help="as -P ood_classes")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--train-epochs", type=int, default=0, help="cross-entropy epochs first (0: random init)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="eibacl-measure-bench-"))
    os.environ.setdefault("EIBACL_CACHE", str(work / "cache"))
    from bench_folder_main import make_folder

    from eibacl.models.encoders import build_encoder

    folder = make_folder(work / "parts")
    config = DataConfig(
        data=f"folder:{folder}",
        ood_classes=args.ood_classes,
        shots=18,
        val_per_class=9,
        image_size=args.image_size,
    )
    data = prepare_data(config)
    before = old_split(data)
    print(
        f"classes: id {data.split.id_classes}, near-OOD {data.split.ood_classes}, "
        f"validation-OOD {data.split.ood_val_classes}; {args.image_size} px"
    )
    print(
        f"near-OOD test images: today {len(before.ood_test)}, now {len(data.split.ood_test)} "
        f"({len(data.split.ood_test) / len(before.ood_test):.1f}x); validation-OOD images: "
        f"today {len(before.ood_val)}, now {len(data.split.ood_val)}"
    )
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", 3, 32, args.image_size)
    if args.train_epochs:
        train_quickly(encoder, data, args.train_epochs)
    encoder.eval()
    for label, split in (("today", before), ("now", data.split)):
        print(f"{label:>5}: {headline_cis(config, split, encoder)}")
    stability(data, encoder)
    null_space_share(data, encoder)


if __name__ == "__main__":
    main()
