import numpy as np
import pytest

from eibacl.evaluate.ood_metrics import (
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_tpr,
    ood_report,
    roc_curve,
)


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


# The wrapper against brute-force references written from the definitions (every pair,
# every threshold), independent of scikit-learn, which the wrapper calls.


def _pairwise_auroc(ind: np.ndarray, ood: np.ndarray) -> float:
    diff = ind[:, None] - ood[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _thresholds(ind: np.ndarray, ood: np.ndarray) -> np.ndarray:
    return np.unique(np.r_[ind, ood])[::-1]  # every distinct score, highest first


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """sum over thresholds of (recall step) x precision, 'accepted' meaning score >= t."""
    total, last_recall = 0.0, 0.0
    for t in _thresholds(pos, neg):
        tp, fp = np.sum(pos >= t), np.sum(neg >= t)
        recall = tp / pos.size
        total += (recall - last_recall) * tp / (tp + fp)
        last_recall = recall
    return total


def _first_fpr(ind: np.ndarray, ood: np.ndarray, tpr: float) -> float:
    for t in _thresholds(ind, ood):
        if np.sum(ind >= t) >= tpr * ind.size - 1e-9:
            return float(np.mean(ood >= t))
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_every_pair(seed: int, ties: bool) -> None:
    ind, ood = _random_sets(seed, ties)
    assert auroc(ind, ood) == pytest.approx(_pairwise_auroc(ind, ood), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
def test_aupr_in_and_out_match_the_definition(seed: int, ties: bool) -> None:
    ind, ood = _random_sets(seed, ties)
    assert aupr_in(ind, ood) == pytest.approx(_average_precision(ind, ood), abs=1e-12)
    assert aupr_out(ind, ood) == pytest.approx(_average_precision(-ood, -ind), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("tpr", [0.95, 0.8, 0.5, 1.0])
def test_fpr_is_the_first_threshold_reaching_the_tpr(seed: int, ties: bool, tpr: float) -> None:
    ind, ood = _random_sets(seed, ties)
    assert fpr_at_tpr(ind, ood, tpr) == pytest.approx(_first_fpr(ind, ood, tpr), abs=1e-12)


def test_roc_curve_has_one_point_per_distinct_score() -> None:
    ind, ood = _random_sets(3, ties=True)
    thresholds = _thresholds(ind, ood)
    fpr, tpr = roc_curve(ind, ood)
    np.testing.assert_allclose(fpr, np.r_[0.0, [np.mean(ood >= t) for t in thresholds]])
    np.testing.assert_allclose(tpr, np.r_[0.0, [np.mean(ind >= t) for t in thresholds]])


def test_infinite_scores_keep_their_order() -> None:
    ind, ood = np.array([np.inf, 2.0, 1.0]), np.array([-np.inf, 1.0, 3.0])
    assert auroc(ind, ood) == pytest.approx(_pairwise_auroc(ind, ood))
    assert aupr_out(ind, ood) == pytest.approx(_average_precision(-ood, -ind))


def test_hand_made_aupr_out() -> None:
    # OOD positive, low score = OOD: thresholds on -score: OOD 1 (P=1, R=1/2), then ID 2
    # (P=1/2), then OOD 3 (P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert aupr_out([2.0], [1.0, 3.0]) == pytest.approx(5 / 6)


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
    assert list(report) == ["auroc", "fpr95", "aupr_in", "aupr_out"]
    assert report["auroc"] == auroc(ind, ood)
    assert report["fpr95"] == fpr_at_tpr(ind, ood, 0.95)
    assert report["aupr_in"] == aupr_in(ind, ood)
    assert report["aupr_out"] == aupr_out(ind, ood)
    assert all(isinstance(v, float) for v in report.values())


def test_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    assert auroc(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(0.75)


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, aupr_out, ood_report])
def test_empty_ood_set_is_named(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="near-OOD set is empty"):
        fn(np.ones(5), np.array([]), name="near-OOD")


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, aupr_out, ood_report])
def test_empty_id_set_is_named(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"in-distribution \(vs far-OOD\) set is empty"):
        fn(np.array([]), np.ones(5), name="far-OOD")


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, aupr_in, aupr_out, ood_report])
def test_nan_is_rejected(fn) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="far-OOD scores contain 1 NaN"):
        fn(np.ones(5), np.array([0.0, np.nan]), name="far-OOD")
    with pytest.raises(ValueError, match="in-distribution.*NaN"):
        fn(np.array([np.nan, 1.0]), np.ones(3))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_fpr_rejects_bad_tpr(bad: float) -> None:
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(np.ones(3), np.ones(3), tpr=bad)
