"""Linear probe: the hand-written Adam grid against scikit-learn's LogisticRegression.

    python bench/bench_linear_probe.py                 # 7 classes x 50 shots (the default study)
    python bench/bench_linear_probe.py --shots 500     # a bigger training set

Features: a small SupCon-free stand-in for frozen encoder features, the first 128
principal components of the 32 px Fashion-MNIST images of the default split (fitted on
the training side only), so the problem has the default study's shape (N x 128, 7
classes). Each method is timed over `--repeats` runs (best of, one CPU thread) and
reports validation accuracy (what selects) and test accuracy (for information).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from eibacl.config import PretrainConfig
from eibacl.data.training_data import prepare_data
from eibacl.evaluate.linear_probe import train_linear_probe

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def features(shots: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.decomposition import PCA

    data = prepare_data(PretrainConfig(shots=shots, val_per_class=100))
    sides = {s: data.side(s) for s in ("train", "val", "test")}
    flat = {s: (x.flatten(1).float().numpy() / 255.0, y.numpy()) for s, (x, y) in sides.items()}
    pca = PCA(128, random_state=0).fit(flat["train"][0])
    return {s: (pca.transform(x).astype(np.float32), y) for s, (x, y) in flat.items()}


def adam_probe(sets: dict, num_classes: int) -> tuple[float, float]:
    (xtr, ytr), (xva, yva), (xte, yte) = sets["train"], sets["val"], sets["test"]
    probe = train_linear_probe(xtr, ytr, xva, yva, num_classes)
    return probe.val_accuracy, float((probe.predict(xte).numpy() == yte).mean())


def sklearn_probe(sets: dict, num_classes: int) -> tuple[float, float]:
    """Standardise on train, fit one LogisticRegression per C (warm-started), pick C on
    validation accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xva, yva), (xte, yte) = sets["train"], sets["val"], sets["test"]
    scaler = StandardScaler().fit(xtr)
    xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
    model = LogisticRegression(max_iter=1000, warm_start=True)
    best = (-1.0, None)
    for c in C_GRID:
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(xtr, ytr)
        acc = float((model.predict(xva) == yva).mean())
        if acc > best[0]:
            best = (acc, (model.coef_.copy(), model.intercept_.copy()))
    coef, intercept = best[1]
    test_acc = float(((xte @ coef.T + intercept).argmax(1) == yte).mean())
    return best[0], test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = features(args.shots)
    num_classes = int(sets["train"][1].max()) + 1
    print(f"train {sets['train'][0].shape}, val {sets['val'][0].shape}, {num_classes} classes")
    for name, fit in (
        ("adam grid (10 configs)", adam_probe),
        ("sklearn lbfgs C grid", sklearn_probe),
    ):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            val_acc, test_acc = fit(sets, num_classes)
            times.append(time.perf_counter() - start)
        print(f"{name:24s} {min(times):6.2f} s  val {val_acc:.3f}  test {test_acc:.3f}")


if __name__ == "__main__":
    main()
