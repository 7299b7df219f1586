"""The judge: OOD scorers fitted on real ID data, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eibacl.evaluate.ood_metrics import auroc
from eibacl.generate.judge.judge import (
    ID_TPR,
    fit_judge,
    judge_figure,
    judge_report,
    load_verdicts,
    save_verdicts,
    shuffled_pixels,
    synthetic_groups,
    verdicts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bars(n: int, vertical: bool, seed: int) -> torch.Tensor:
    """Bright bars on black (objects on a background, like Fashion-MNIST), jittered."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 1, 16, 16)
    for i in range(n):
        lo = int(torch.randint(2, 6, (1,), generator=gen))
        if vertical:
            out[i, 0, 2:14, lo : lo + 8 : 2] = 1
        else:
            out[i, 0, lo : lo + 8 : 2, 2:14] = 1
    noise = torch.rand(n, 1, 16, 16, generator=gen) * 0.2
    return ((out * 0.8 + noise) * 255).to(torch.uint8)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([_bars(n, False, seed), _bars(n, True, seed + 1)])
    return x, torch.arange(2).repeat_interleave(n)


@pytest.fixture(scope="module")
def judge():
    train_x, train_y = _data(40, 0)
    val_x, _ = _data(40, 10)
    return fit_judge(train_x, train_y, val_x, 2, seed=0)


def test_threshold_keeps_95_percent_of_real_validation(judge):
    for scorer, scores in judge.val_scores.items():
        kept = np.mean(scores >= judge.id_threshold(scorer))
        assert kept >= ID_TPR and kept <= ID_TPR + 0.05, scorer


def test_noise_is_ood_and_new_real_images_stay_id(judge):
    fresh_x, fresh_y = _data(30, 20)
    noise = torch.randint(0, 256, (60, 1, 16, 16), dtype=torch.uint8)
    metrics, scores = judge_report(judge, {"fresh": (fresh_x, fresh_y), "noise": (noise, None)})
    for scorer in ("knn", "mahalanobis"):
        assert metrics[f"judge/noise/{scorer}/auroc"] > 0.95
        assert metrics[f"judge/noise/{scorer}/ood_rate"] > 0.9
        assert metrics[f"judge/fresh/{scorer}/auroc"] < 0.75  # indistinguishable-ish
        assert metrics[f"judge/fresh/{scorer}/ood_rate"] < 0.25
        # the AUROC is the library's, on the judge's own scores
        assert metrics[f"judge/noise/{scorer}/auroc"] == pytest.approx(
            auroc(judge.val_scores[scorer], scores["noise"][scorer])
        )
    assert metrics["judge/fresh/keeps_class_rate"] > 0.9
    assert metrics["judge/fresh/kept_rate"] > 0.7
    assert metrics["judge/fresh/count"] == 60
    # a wrong label is not "kept"
    flipped, _ = judge_report(judge, {"fresh": (fresh_x, 1 - fresh_y)})
    assert flipped["judge/fresh/keeps_class_rate"] < 0.1


def test_shuffled_pixels_keep_intensities_and_lose_structure(judge):
    x, _ = _data(5, 3)
    s = shuffled_pixels(x, seed=1)
    assert torch.equal(x.flatten(1).sort(dim=1).values, s.flatten(1).sort(dim=1).values)
    assert not torch.equal(x, s)
    assert np.median(judge.far_scores["mahalanobis"]) < judge.id_threshold("mahalanobis")


def test_verdicts_round_trip_and_band(judge, tmp_path):
    fresh_x, fresh_y = _data(10, 30)
    noise = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    images = torch.cat([fresh_x, noise])
    labels = torch.cat([fresh_y, torch.zeros(20, dtype=torch.long)])
    v = verdicts(judge, images, labels)
    assert v.stays_id[:20].mean() > 0.7 and v.stays_id[20:].mean() < 0.1
    assert not (v.in_band & v.stays_id).any()  # the band is past the ID threshold
    save_verdicts(tmp_path / "judge.npz", v)
    again = load_verdicts(tmp_path / "judge.npz")
    assert np.array_equal(again.stays_id, v.stays_id) and np.array_equal(again.in_band, v.in_band)
    assert np.array_equal(again.scores["knn"], v.scores["knn"])


def test_groups_by_kind_strength_and_recipe_and_the_figure(judge):
    x, y = _data(3, 40)  # 6 images
    kinds = ["id", "id", "id", "near_ood", "near_ood", "near_ood"]
    recipes = ["id", "id", "id", "class-mix", "away@0.8", "away@0.8"]
    strengths = torch.tensor([0.25, 0.5, 0.5, 0.9, 0.8, 0.8])
    groups = synthetic_groups(x, y, kinds, recipes, strengths)
    assert set(groups) == {
        "id",
        "id/s0.25",
        "id/s0.50",
        "near_ood",
        "near_ood/class-mix",
        "near_ood/away/s0.80",
    }
    assert len(groups["id/s0.50"][0]) == 2 and groups["near_ood"][1] is None
    _, scores = judge_report(judge, groups)
    figure = judge_figure(judge, scores)
    assert len(figure.axes[0].patches) >= len(groups) + 1  # one histogram per group + ID


def test_band_edge_follows_real_validation_near_ood_when_given():
    train_x, train_y = _data(40, 0)
    val_x, _ = _data(40, 10)
    near = torch.cat([_bars(20, False, 50), _bars(20, True, 51)]).flip(-2)  # shifted bars
    judge = fit_judge(train_x, train_y, val_x, 2, seed=0, near_val_x=near)
    edge = judge.band_edge("mahalanobis")
    assert edge == pytest.approx(np.quantile(judge.scores(near)["mahalanobis"], 0.05))
    noise = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    metrics, _ = judge_report(judge, {"noise": (noise, None), "near": (near, None)})
    # noise lies past the band (farther out than real near-OOD); real near-OOD mostly in it
    assert metrics["judge/noise/mahalanobis/band_rate"] < 0.2
    assert (
        metrics["judge/near/mahalanobis/band_rate"]
        >= metrics["judge/near/mahalanobis/ood_rate"] - 0.06
    )


def test_judge_shrinks_its_covariance_like_the_evaluation(judge):
    # The judge's Mahalanobis model is the default (Ledoit-Wolf) fit on its training
    # features, not the sample covariance's: the two precisions differ on these features.
    from eibacl.evaluate.scorers import DEFAULT_COVARIANCE, fit_mahalanobis

    train_x, train_y = _data(40, 0)
    feats = judge.embed(train_x)
    expected = fit_mahalanobis(feats, train_y, covariance=DEFAULT_COVARIANCE)
    sample = fit_mahalanobis(feats, train_y, covariance="ridge")
    assert DEFAULT_COVARIANCE == "ledoit-wolf"
    torch.testing.assert_close(judge.maha.precision, expected.precision)
    assert not torch.allclose(judge.maha.precision, sample.precision, rtol=1e-3)
