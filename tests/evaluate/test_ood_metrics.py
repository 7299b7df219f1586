import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from eibacl.evaluate.ood_metrics import aupr_in, auroc, fpr_at_tpr, ood_report, roc_curve


def _labelled(ind: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[np.ones(ind.size), np.zeros(ood.size)], np.r_[ind, ood]


def _random_sets(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(5, 300, size=2)
    ind = rng.normal(0.5, 1.0, n_id)
    ood = rng.normal(0.0, 1.0, n_ood)
    if ties:  # coarse rounding makes many ties within and across the sets
        ind, ood = np.round(ind, 1), np.round(ood, 1)
    return ind, ood


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(seed: int, ties: bool) -> None:
    ind, ood = _random_sets(seed, ties)
    y, s = _labelled(ind, ood)
    assert auroc(ind, ood) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
def test_aupr_in_matches_sklearn(seed: int, ties: bool) -> None:
    ind, ood = _random_sets(seed, ties)
    y, s = _labelled(ind, ood)
    assert aupr_in(ind, ood) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("tpr", [0.95, 0.8, 0.5, 1.0])
def test_fpr_matches_first_sklearn_roc_point(seed: int, ties: bool, tpr: float) -> None:
    ind, ood = _random_sets(seed, ties)
    y, s = _labelled(ind, ood)
    fpr_sk, tpr_sk, _ = sk_roc_curve(y, s, drop_intermediate=False)
    expected = fpr_sk[np.argmax(tpr_sk >= tpr - 1e-12)]
    assert fpr_at_tpr(ind, ood, tpr) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_matches_sklearn() -> None:
    ind, ood = _random_sets(3, ties=True)
    y, s = _labelled(ind, ood)
    fpr_sk, tpr_sk, _ = sk_roc_curve(y, s, drop_intermediate=False)
    fpr, tpr = roc_curve(ind, ood)
    np.testing.assert_allclose(fpr, fpr_sk)
    np.testing.assert_allclose(tpr, tpr_sk)


def test_fpr95_hand_made_case() -> None:
    # 20 ID scores 1..20: keeping >= 95% (19 of 20) puts the threshold at 2.
    ind = np.arange(1, 21, dtype=float)
    ood = np.array([0.5, 1.5, 2.0, 2.5, 30.0])  # 2.0, 2.5, 30 are >= 2 -> 3/5
    assert fpr_at_tpr(ind, ood) == pytest.approx(0.6)
    # At TPR 0.5 the threshold is the 10th largest ID score, 11.
    assert fpr_at_tpr(ind, ood, tpr=0.5) == pytest.approx(0.2)
    # Ties at the threshold count as accepted for both sets.
    assert fpr_at_tpr(np.array([1.0, 1.0, 1.0, 5.0]), np.array([1.0, 0.0])) == 0.5


def test_hand_made_auroc_and_aupr() -> None:
    # Pairs (id, ood): (2,1) win, (2,2) tie, (2,3) loss, (4,*) 3 wins -> 4.5 / 6.
    assert auroc([2.0, 4.0], [1.0, 2.0, 3.0]) == pytest.approx(0.75)
    # Perfect separation.
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert aupr_in([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert fpr_at_tpr([3.0, 4.0], [1.0, 2.0]) == 0.0
    # Reversed: OOD scores all higher than ID.
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0


def test_ood_report_keys_and_values() -> None:
    ind, ood = _random_sets(7, ties=False)
    report = ood_report(ind, ood)
    assert list(report) == ["auroc", "fpr95", "aupr_in"]
    assert report["auroc"] == auroc(ind, ood)
    assert report["fpr95"] == fpr_at_tpr(ind, ood, 0.95)
    assert report["aupr_in"] == aupr_in(ind, ood)
    assert all(isinstance(v, float) for v in report.values())


def test_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    assert auroc(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(0.75)


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, ood_report])
def test_empty_ood_set_is_named(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="near-OOD set is empty"):
        fn(np.ones(5), np.array([]), name="near-OOD")


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, ood_report])
def test_empty_id_set_is_named(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"in-distribution \(vs far-OOD\) set is empty"):
        fn(np.array([]), np.ones(5), name="far-OOD")


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, ood_report])
def test_nan_is_rejected(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="far-OOD scores contain 1 NaN"):
        fn(np.ones(5), np.array([0.0, np.nan]), name="far-OOD")
    with pytest.raises(ValueError, match="in-distribution.*NaN"):
        fn(np.array([np.nan, 1.0]), np.ones(3))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_fpr_rejects_bad_tpr(bad: float) -> None:
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(np.ones(3), np.ones(3), tpr=bad)
