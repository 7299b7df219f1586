import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import OAS, LedoitWolf
from sklearn.neighbors import KNeighborsClassifier

from eibacl.config import ConfigError, ProbeConfig
from eibacl.evaluate.ood_metrics import auroc
from eibacl.evaluate.scorers import (
    MahalanobisModel,
    energy_score,
    fit_mahalanobis,
    knn_accuracy,
    knn_predict,
    knn_score,
    mahalanobis_distances,
    mahalanobis_score,
    msp_score,
)


def _blobs(
    n_per_class: int, n_classes: int, dim: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (n_classes, dim)) * 3.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(y.size, dim))
    return x.astype(np.float32), y


def test_knn_score_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    test = rng.normal(size=(50, 16)).astype(np.float32)
    k = 7
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    dist = np.linalg.norm(te[:, None, :] - tr[None, :, :], axis=2)
    expected = -np.sort(dist, axis=1)[:, k - 1]
    np.testing.assert_allclose(knn_score(train, test, k), expected, atol=1e-5)
    # torch input, and chunking over the test rows, give the same answer
    from eibacl.evaluate import scorers

    old = scorers._CHUNK
    scorers._CHUNK = 8
    try:
        got = knn_score(torch.from_numpy(train), torch.from_numpy(test), k)
    finally:
        scorers._CHUNK = old
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_knn_score_is_higher_in_distribution() -> None:
    x, _ = _blobs(50, 3, 8, 0.3, seed=1)
    far = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32) * 5
    assert knn_score(x[:120], x[120:], 5).mean() > knn_score(x[:120], far, 5).mean()


def test_knn_score_k_too_large_suggests_a_fix() -> None:
    train = np.ones((40, 4), dtype=np.float32)
    with pytest.raises(
        ValueError,
        match=r"knn_k=50 is larger than the 40 training images; "
        r"choose knn_k <= 40",
    ):
        knn_score(train, train, 50)
    with pytest.raises(ValueError, match="knn_k=0"):
        knn_score(train, train, 0)


def test_knn_score_rejects_dimension_mismatch() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        knn_score(np.ones((5, 4)), np.ones((5, 3)), 1)


def _numpy_mahalanobis(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    precision = np.linalg.inv(centred.T @ centred / train.shape[0])
    dists = np.stack(
        [np.einsum("nd,de,ne->n", test - mu, precision, test - mu) for mu in means], axis=1
    )
    return -dists.min(axis=1)


def test_mahalanobis_matches_numpy() -> None:
    x, y = _blobs(60, 4, 10, 1.0, seed=3)
    y = np.array([2, 5, 7, 9])[y]  # non-contiguous label values
    test = np.random.default_rng(4).normal(size=(40, 10)) * 3
    model = fit_mahalanobis(x, y, covariance="ridge")
    assert isinstance(model, MahalanobisModel)
    assert model.classes.tolist() == [2, 5, 7, 9]
    expected = _numpy_mahalanobis(x.astype(np.float64), y, test)
    np.testing.assert_allclose(mahalanobis_score(model, test), expected, rtol=1e-4)
    # Torch inputs give the same model.
    model_t = fit_mahalanobis(torch.from_numpy(x), torch.from_numpy(y), covariance="ridge")
    np.testing.assert_allclose(model_t.precision, model.precision)


def _low_rank(seed: int = 0, dim: int = 64, rank: int = 8, eps: float = 1e-3):
    """More feature dimensions (64) than training images (24): two classes living in an
    8-d subspace plus tiny isotropic noise (as a CNN's features do), ID test images and
    near-OOD images shifted inside the subspace."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T
    means = rng.normal(size=(2, rank)) * 3

    def sample(m: int, cls: int, shift: np.ndarray | float = 0.0) -> np.ndarray:
        z = means[cls] + rng.normal(size=(m, rank)) + shift
        return z @ basis + eps * rng.normal(size=(m, dim))

    train = np.concatenate([sample(12, 0), sample(12, 1)])
    test = np.concatenate([sample(50, 0), sample(50, 1)])
    ood = sample(100, 0, shift=rng.normal(size=rank) * 1.5)
    return train, np.repeat([0, 1], 12), test, ood


def _maha_auroc(covariance: str, ridge: float) -> float:
    train, labels, test, ood = _low_rank()
    model = fit_mahalanobis(train, labels, covariance=covariance, ridge=ridge)
    return auroc(mahalanobis_score(model, test), mahalanobis_score(model, ood))


def test_shrinkage_is_stable_where_the_sample_covariance_is_not() -> None:
    # The sample covariance has rank 22 in 64 dimensions: its inverse scores by a null space
    # scaled by 1 / ridge, so a ridge change from 1e-6 to 1e-5 moves the AUROC (measured:
    # 0.046). Shrinkage fills the null space from the data: the same change moves nothing.
    old = abs(_maha_auroc("ridge", 1e-6) - _maha_auroc("ridge", 1e-5))
    assert old > 0.02
    for covariance in ("ledoit-wolf", "oas"):
        new = abs(_maha_auroc(covariance, 1e-6) - _maha_auroc(covariance, 1e-5))
        assert new < 0.002, covariance


@pytest.mark.parametrize("covariance,estimator", [("ledoit-wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_distances_match_an_inverse_of_sklearns_covariance(covariance, estimator):
    train, labels, test, _ = _low_rank(seed=3)
    model = fit_mahalanobis(train, labels, covariance=covariance, ridge=0.0)
    means = np.stack([train[labels == c].mean(axis=0) for c in (0, 1)])
    centred = train - means[labels]
    precision = np.linalg.inv(estimator(assume_centered=True).fit(centred).covariance_)
    expected = np.array(
        [[(x - mu) @ precision @ (x - mu) for mu in means] for x in test[:20]]
    )  # the slow obvious way: one row, one class mean at a time
    np.testing.assert_allclose(mahalanobis_distances(model, test[:20]), expected, rtol=1e-6)


def test_unknown_covariance_is_refused_with_the_choices() -> None:
    x, y = _blobs(5, 2, 3, 1.0, seed=0)
    with pytest.raises(ValueError, match="covariance='lw' is unknown: use one of"):
        fit_mahalanobis(x, y, covariance="lw")
    with pytest.raises(ConfigError, match="covariance='lw' is invalid: use one of ledoit-wolf"):
        ProbeConfig(covariance="lw")


def test_mahalanobis_stays_finite_when_covariance_is_singular() -> None:
    x, y = _blobs(3, 3, 32, 1.0, seed=5)  # 9 images in 32 dimensions
    scores = mahalanobis_score(fit_mahalanobis(x, y), x)
    assert np.all(np.isfinite(scores))
    far = mahalanobis_score(fit_mahalanobis(x, y), x + 100.0)
    assert scores.mean() > far.mean()


def test_mahalanobis_normalize_option() -> None:
    x, y = _blobs(30, 3, 6, 0.5, seed=6)
    model = fit_mahalanobis(x, y, normalize=True)
    # Scaling a feature vector does not change its normalised score.
    np.testing.assert_allclose(
        mahalanobis_score(model, x), mahalanobis_score(model, 3.0 * x), rtol=1e-5
    )
    with pytest.raises(ValueError, match="feature dimension"):
        mahalanobis_score(model, x[:, :3])


def test_msp_and_energy_match_scipy() -> None:
    logits = np.random.default_rng(7).normal(size=(30, 5)) * 4
    np.testing.assert_allclose(msp_score(logits), softmax(logits, axis=1).max(axis=1))
    np.testing.assert_allclose(energy_score(logits), logsumexp(logits, axis=1))
    np.testing.assert_allclose(
        energy_score(torch.from_numpy(logits), temperature=2.0),
        2.0 * logsumexp(logits / 2.0, axis=1),
    )
    with pytest.raises(ValueError, match="temperature"):
        energy_score(logits, temperature=0.0)


def test_msp_energy_hand_values() -> None:
    logits = np.array([[0.0, 0.0], [10.0, -10.0]])
    np.testing.assert_allclose(msp_score(logits), [0.5, 1.0 / (1.0 + np.exp(-20.0))])
    np.testing.assert_allclose(energy_score(logits)[0], np.log(2.0))


@pytest.mark.parametrize("spread", [0.3, 2.0])
def test_knn_predict_matches_sklearn_cosine(spread: float) -> None:
    x, y = _blobs(40, 5, 12, spread, seed=8)
    rng = np.random.default_rng(9)
    idx = rng.permutation(y.size)
    train, test = idx[:150], idx[150:]
    ref = KNeighborsClassifier(n_neighbors=7, metric="cosine").fit(x[train], y[train])
    expected = ref.predict(x[test])
    got = knn_predict(x[train], y[train], x[test], k=7)
    assert np.mean(got == expected) >= 0.98  # only exact distance ties could differ
    acc = knn_accuracy(x[train], y[train], x[test], y[test], k=7)
    assert acc == pytest.approx(ref.score(x[test], y[test]), abs=0.02)
    if spread < 1:
        assert acc == 1.0


def test_knn_accuracy_weighted_and_label_values() -> None:
    x, y = _blobs(30, 3, 8, 0.3, seed=10)
    y = y + 10
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=5, weighted=True) == 1.0
    # Shuffled labels are not learnable: accuracy must drop.
    wrong = np.random.default_rng(0).permutation(y[::2])
    assert knn_accuracy(x[::2], wrong, x[1::2], y[1::2], k=5) < 0.7


def test_knn_majority_vote_hand_case() -> None:
    train = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 2])
    # neighbours of (1, 0) with k=3: labels 0, 1, 1 -> majority 1
    assert knn_predict(train, labels, np.array([[1.0, 0.0]]), k=3).tolist() == [1]
    # k=1: the exact match, label 0
    assert knn_predict(train, labels, np.array([[1.0, 0.0]]), k=1).tolist() == [0]
