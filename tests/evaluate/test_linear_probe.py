import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.preprocessing import StandardScaler

from eibacl.evaluate.linear_probe import (
    C_GRID,
    LinearProbe,
    accuracy,
    confusion_matrix,
    per_class_accuracy,
    train_linear_probe,
)


def _blobs(
    n_per_class: int, n_classes: int, dim: int, noise: float, seed: int, centre_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(centre_seed).normal(size=(n_classes, dim))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + noise * rng.normal(size=(y.size, dim)) + 5.0  # offset: needs standardising
    return x.astype(np.float32), y


def test_separable_blobs_reach_high_accuracy() -> None:
    x, y = _blobs(70, 10, 128, 1.0, seed=1)
    xv, yv = _blobs(20, 10, 128, 1.0, seed=2)
    xt, yt = _blobs(30, 10, 128, 1.0, seed=3)
    probe = train_linear_probe(x, y, xv, yv, 10)
    assert isinstance(probe, LinearProbe)
    assert accuracy(probe.predict(xt), yt) >= 0.97
    assert probe.logits(xt).shape == (300, 10)
    assert probe.logits(xt).dtype == torch.float32
    assert probe.predict(torch.from_numpy(xt)).dtype == torch.int64
    assert [row["C"] for row in probe.grid] == list(C_GRID)
    assert probe.weight_decay == pytest.approx(1.0 / (probe.C * len(y)))


def test_reported_val_accuracy_is_the_accuracy_on_val() -> None:
    x, y = _blobs(40, 4, 16, 2.5, seed=4)
    xv, yv = _blobs(40, 4, 16, 2.5, seed=5)
    probe = train_linear_probe(x, y, xv, yv, 4)
    assert 0.4 < probe.val_accuracy < 1.0  # a non-trivial case
    assert probe.val_accuracy == accuracy(probe.predict(xv), yv)
    best = max(probe.grid, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert probe.C == best["C"]


def test_choice_is_made_on_validation_labels() -> None:
    # Two penalties that predict differently on val; whichever one the val labels
    # agree with must be chosen. Training never sees the val labels.
    x, y = _blobs(15, 3, 64, 3.0, seed=6)
    xv, _ = _blobs(30, 3, 64, 3.0, seed=7)
    dummy = np.zeros(len(xv), dtype=np.int64)
    strong = train_linear_probe(x, y, xv, dummy, 3, cs=(1e-4,))
    free = train_linear_probe(x, y, xv, dummy, 3, cs=(1e3,))
    p_strong, p_free = strong.predict(xv), free.predict(xv)
    assert (p_strong != p_free).any()
    for target, c in ((p_strong, 1e-4), (p_free, 1e3)):
        probe = train_linear_probe(x, y, xv, target, 3, cs=(1e-4, 1e3))
        assert probe.C == c
        assert probe.val_accuracy == 1.0


def _reference_optimum(x: np.ndarray, y: np.ndarray, k: int, c: float) -> np.ndarray:
    """The same objective written out and minimised with scipy, independent of
    scikit-learn: C * sum CE + 1/2 ||W||^2, bias not penalised."""
    from scipy.optimize import minimize

    n, d = x.shape
    x1 = np.c_[x, np.ones(n)]
    onehot = np.eye(k)[y]

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(d + 1, k)
        z = x1 @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        loss = -c * np.sum(onehot * np.log(p)) + 0.5 * np.sum(w[:-1] ** 2)
        grad = c * x1.T @ (p - onehot)
        grad[:-1] += w[:-1]
        return loss, grad.ravel()

    result = minimize(objective, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B", tol=1e-12)
    return result.x.reshape(d + 1, k)


def test_matches_the_penalised_optimum() -> None:
    x, y = _blobs(50, 5, 20, 2.0, seed=8)
    xv, yv = _blobs(50, 5, 20, 2.0, seed=9)
    probe = train_linear_probe(x, y, xv, yv, 5, cs=(0.5,))
    scaler = StandardScaler().fit(x)
    w = _reference_optimum(scaler.transform(x), y, 5, 0.5)
    z = np.c_[scaler.transform(xv), np.ones(len(xv))] @ w
    ref = np.exp(z - z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    probs = torch.softmax(probe.logits(xv), dim=1).numpy()
    np.testing.assert_allclose(probs, ref, atol=2e-3)


def test_the_same_probe_for_every_seed() -> None:
    x, y = _blobs(30, 3, 8, 2.0, seed=10)
    xv, yv = _blobs(10, 3, 8, 2.0, seed=11)
    a = train_linear_probe(x, y, xv, yv, 3, seed=3)
    b = train_linear_probe(x, y, xv, yv, 3, seed=4)
    assert torch.equal(a.linear.weight, b.linear.weight)


def test_two_classes_and_a_class_without_training_images() -> None:
    x, y = _blobs(20, 2, 6, 0.5, seed=12)
    probe = train_linear_probe(x, y, x, y, 2)
    assert probe.val_accuracy == 1.0 and probe.logits(x).shape == (40, 2)
    # class 2 exists (e.g. in validation) but has no training image: never predicted
    x3, y3 = _blobs(20, 3, 6, 0.5, seed=13)
    keep = y3 < 2
    probe = train_linear_probe(x3[keep], y3[keep], x3, y3, 3)
    assert probe.logits(x3).shape == (60, 3)
    assert (probe.predict(x3) != 2).all()
    assert probe.val_accuracy == pytest.approx(2 / 3)


def test_rejects_bad_labels_and_empty_val() -> None:
    x, y = _blobs(10, 2, 4, 1.0, seed=13)
    with pytest.raises(ValueError, match=r"train labels must be in \[0, 2\)"):
        train_linear_probe(x, y + 1, x, y, 2)
    with pytest.raises(ValueError, match="validation set is empty"):
        train_linear_probe(x, y, x[:0], y[:0], 2)


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(14)
    labels = rng.integers(0, 6, 200)
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 6, 200))
    labels[labels == 5] = 4  # class 5 has no true examples
    cm = confusion_matrix(torch.from_numpy(preds), labels, 6)
    np.testing.assert_array_equal(cm, sk_confusion_matrix(labels, preds, labels=range(6)))
    assert accuracy(preds, labels) == pytest.approx(accuracy_score(labels, preds))
    pca = per_class_accuracy(preds, labels, 6)
    ref = recall_score(labels, preds, labels=range(5), average=None)
    np.testing.assert_allclose(pca[:5], ref)
    assert np.isnan(pca[5])


def test_metrics_hand_case() -> None:
    preds, labels = [0, 1, 1, 2], [0, 1, 2, 2]
    np.testing.assert_array_equal(
        confusion_matrix(preds, labels, 3), [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    )
    np.testing.assert_allclose(per_class_accuracy(preds, labels, 3), [1.0, 1.0, 0.5])
    assert accuracy(preds, labels) == 0.75
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix([3], [0], 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_probe_matches_cpu_choice() -> None:
    x, y = _blobs(40, 4, 16, 1.0, seed=15)
    xv, yv = _blobs(20, 4, 16, 1.0, seed=16)
    gpu = train_linear_probe(x, y, xv, yv, 4, device="cuda")
    cpu = train_linear_probe(x, y, xv, yv, 4)
    assert gpu.linear.weight.device.type == "cuda"
    assert gpu.predict(xv).device.type == "cpu"
    assert gpu.val_accuracy == pytest.approx(cpu.val_accuracy, abs=0.03)
