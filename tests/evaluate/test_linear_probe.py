import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.preprocessing import StandardScaler

from eibacl.evaluate.linear_probe import (
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


def test_separable_blobs_reach_high_accuracy_fast() -> None:
    x, y = _blobs(70, 10, 128, 1.0, seed=1)
    xv, yv = _blobs(20, 10, 128, 1.0, seed=2)
    xt, yt = _blobs(30, 10, 128, 1.0, seed=3)
    start = time.perf_counter()
    probe = train_linear_probe(x, y, xv, yv, 10)
    elapsed = time.perf_counter() - start
    assert isinstance(probe, LinearProbe)
    assert elapsed < 5.0, f"probe took {elapsed:.1f} s on 700x128"
    assert accuracy(probe.predict(xt), yt) >= 0.97
    assert probe.logits(xt).shape == (300, 10)
    assert probe.logits(xt).dtype == torch.float32
    assert probe.predict(torch.from_numpy(xt)).dtype == torch.int64
    assert len(probe.grid) == 2 * 5  # default lrs x weight decays


def test_reported_val_accuracy_is_the_accuracy_on_val() -> None:
    x, y = _blobs(40, 4, 16, 2.5, seed=4)
    xv, yv = _blobs(40, 4, 16, 2.5, seed=5)
    probe = train_linear_probe(x, y, xv, yv, 4, epochs=30)
    assert 0.4 < probe.val_accuracy < 1.0  # a non-trivial case
    assert probe.val_accuracy == accuracy(probe.predict(xv), yv)
    best = max(probe.grid, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert (probe.lr, probe.weight_decay) == (best["lr"], best["weight_decay"])


def test_choice_is_made_on_validation_labels() -> None:
    # Two configs that predict differently on val; whichever one the val labels
    # agree with must be chosen. Training never sees the val labels.
    x, y = _blobs(15, 3, 64, 3.0, seed=6)
    xv, _ = _blobs(30, 3, 64, 3.0, seed=7)
    dummy = np.zeros(len(xv), dtype=np.int64)
    kwargs = dict(epochs=30, lrs=(0.1,))
    weak = train_linear_probe(x, y, xv, dummy, 3, weight_decays=(10.0,), **kwargs)
    free = train_linear_probe(x, y, xv, dummy, 3, weight_decays=(0.0,), **kwargs)
    p_weak, p_free = weak.predict(xv), free.predict(xv)
    assert (p_weak != p_free).any()
    for target, wd in ((p_weak, 10.0), (p_free, 0.0)):
        probe = train_linear_probe(x, y, xv, target, 3, weight_decays=(0.0, 10.0), **kwargs)
        assert probe.weight_decay == wd
        assert probe.val_accuracy == 1.0


def test_matches_sklearn_logistic_regression_optimum() -> None:
    x, y = _blobs(50, 5, 20, 2.0, seed=8)
    xv, yv = _blobs(50, 5, 20, 2.0, seed=9)
    wd = 1e-2
    probe = train_linear_probe(x, y, xv, yv, 5, epochs=300, lrs=(0.05,), weight_decays=(wd,))
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=1.0 / (wd * len(x)), max_iter=10_000, tol=1e-8)
    ref.fit(scaler.transform(x), y)
    ref_pred = ref.predict(scaler.transform(xv))
    assert np.mean(probe.predict(xv).numpy() == ref_pred) >= 0.97
    ref_probs = ref.predict_proba(scaler.transform(xv))
    probs = torch.softmax(probe.logits(xv), dim=1).numpy()
    np.testing.assert_allclose(probs, ref_probs, atol=0.03)


def test_deterministic_given_seed() -> None:
    x, y = _blobs(30, 3, 8, 2.0, seed=10)
    xv, yv = _blobs(10, 3, 8, 2.0, seed=11)
    a = train_linear_probe(x, y, xv, yv, 3, epochs=20, batch_size=32, seed=3)
    b = train_linear_probe(x, y, xv, yv, 3, epochs=20, batch_size=32, seed=3)
    c = train_linear_probe(x, y, xv, yv, 3, epochs=20, batch_size=32, seed=4)
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert not torch.equal(a.linear.weight, c.linear.weight)  # minibatch order differs


def test_restores_thread_count() -> None:
    x, y = _blobs(10, 2, 4, 1.0, seed=12)
    before = torch.get_num_threads()
    train_linear_probe(x, y, x, y, 2, epochs=2)
    assert torch.get_num_threads() == before


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
    gpu = train_linear_probe(x, y, xv, yv, 4, epochs=20, device="cuda")
    cpu = train_linear_probe(x, y, xv, yv, 4, epochs=20)
    assert gpu.predict(xv).device.type == "cpu"
    assert gpu.val_accuracy == pytest.approx(cpu.val_accuracy, abs=0.03)
