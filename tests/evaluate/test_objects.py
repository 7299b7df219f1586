"""Object-level decisions and the cluster bootstrap, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from eibacl.evaluate.objects import (
    auroc_halfwidth,
    halfwidths,
    mean_halfwidth,
    object_accuracy,
    object_auroc,
    object_means,
    object_metrics,
    weighted_auroc,
)
from eibacl.evaluate.ood_metrics import auroc

# Two objects of class 0 ("a", "b"), one of class 1 ("c"), three views each.
GROUPS = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
LOGITS = np.array(
    [
        [2.0, 0.0],  # a: right, right, wrong; mean (1.0, 0.667) -> 0, right
        [1.0, 0.0],
        [0.0, 2.0],
        [0.0, 1.0],  # b: wrong, wrong, right; mean (1.0, 1.333) -> 1, wrong
        [0.0, 3.0],
        [3.0, 0.0],
        [0.0, 1.0],  # c: right, right, wrong; mean (0.333, 0.667) -> 1, right
        [0.0, 1.0],
        [1.0, 0.0],
    ]
)


def test_object_means_average_each_objects_views_in_sorted_order():
    means = object_means(np.array([1.0, 2.0, 3.0, 10.0]), ["y", "x", "y", "x"])
    np.testing.assert_allclose(means, [6.0, 2.0])  # x: (2 + 10) / 2, y: (1 + 3) / 2


def test_object_accuracy_averages_logits_before_the_decision():
    per_image = np.mean(LOGITS.argmax(1) == LABELS)
    assert per_image == pytest.approx(5 / 9)  # hand count: a 2/3, b 1/3, c 2/3 right
    assert object_accuracy(LOGITS, LABELS, GROUPS) == pytest.approx(2 / 3)  # a, c right


def test_an_object_with_views_of_two_classes_is_refused():
    labels = LABELS.copy()
    labels[1] = 1
    with pytest.raises(ValueError, match="object 'a' has views with different labels"):
        object_accuracy(LOGITS, labels, GROUPS)


def test_object_auroc_scores_the_mean_of_each_objects_views():
    # ID objects p (mean 0.5), q (mean 3.0); OOD objects r (mean 1.0), s (mean -1.0).
    # Pairs (ID > OOD): p>r no, p>s yes, q>r yes, q>s yes -> 3 / 4.
    id_scores, id_groups = np.array([0.0, 1.0, 3.0]), ["p", "p", "q"]
    ood_scores, ood_groups = np.array([2.0, 0.0, -1.0]), ["r", "r", "s"]
    assert object_auroc(id_scores, id_groups, ood_scores, ood_groups) == pytest.approx(0.75)
    # Per image it differs: 9 pairs, 6 wins and one tie (0.0 vs 0.0) -> 6.5 / 9.
    assert auroc(id_scores, ood_scores) == pytest.approx(6.5 / 9)


def test_object_metrics_name_every_scorer():
    out = object_metrics(
        LOGITS,
        LABELS,
        GROUPS,
        ["r", "r", "s"],
        {"knn": (np.arange(9.0), np.array([0.0, 1.0, 2.0]))},
    )
    assert set(out) == {"object/accuracy", "ood/near/knn/object_auroc"}
    # ID object means a=1, b=4, c=7; OOD r=0.5, s=2: pairs won 1 + 2 + 2 of 6.
    assert out["ood/near/knn/object_auroc"] == pytest.approx(5 / 6)


def test_bootstrap_halfwidth_of_a_mean_matches_the_normal_approximation():
    # 400 independent objects, half right: the 95% half-width is 1.96 * sqrt(.25 / 400).
    correct = np.tile([0.0, 1.0], 200)
    groups = [str(i) for i in range(400)]
    half = mean_halfwidth(correct, groups)
    assert half == pytest.approx(1.96 * np.sqrt(0.25 / 400), rel=0.1)


def test_weighted_auroc_matches_sklearns_with_sample_weights():
    # Ties within and across the sets, zero weights (objects not drawn) and repeated ones.
    rng = np.random.default_rng(1)
    id_s, ood_s = rng.integers(0, 6, 25).astype(float), rng.integers(0, 5, 15).astype(float)
    id_w, ood_w = rng.integers(0, 3, (4, 25)).astype(float), rng.integers(0, 3, (4, 15))
    got = weighted_auroc(id_s, ood_s, id_w, ood_w.astype(float))
    for row in range(4):
        truth = np.r_[np.ones(25), np.zeros(15)]
        weight = np.r_[id_w[row], ood_w[row]]
        expected = roc_auc_score(truth, np.r_[id_s, ood_s], sample_weight=weight)
        assert got[row] == pytest.approx(expected)


def test_views_that_repeat_an_object_add_no_information():
    # Each object's score repeated on 3 identical views: resampling objects gives exactly
    # the interval of one view per object (same draws), resampling images a narrower one.
    rng = np.random.default_rng(0)
    id_obj, ood_obj = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 20)
    id_names, ood_names = [f"i{k:02d}" for k in range(30)], [f"o{k:02d}" for k in range(20)]
    one_view = auroc_halfwidth(id_obj, id_names, ood_obj, ood_names)
    id_img, ood_img = np.repeat(id_obj, 3), np.repeat(ood_obj, 3)
    id_grp, ood_grp = list(np.repeat(id_names, 3)), list(np.repeat(ood_names, 3))
    by_object = auroc_halfwidth(id_img, id_grp, ood_img, ood_grp)
    assert by_object == pytest.approx(one_view)
    by_image = auroc_halfwidth(
        id_img, [str(k) for k in range(90)], ood_img, [str(k) for k in range(60)]
    )
    assert by_image < 0.75 * by_object  # treating views as independent understates it


def test_halfwidths_name_the_image_and_object_intervals():
    near = np.array([0.0, 1.0, 2.0])
    out = halfwidths(
        LOGITS, LABELS, GROUPS, ("ood/near/maha", np.arange(9.0), near), ["r", "r", "s"], True
    )
    assert set(out) == {
        "ci_halfwidth/test/accuracy",
        "ci_halfwidth/ood/near/maha/auroc",
        "ci_halfwidth/object/accuracy",
        "ci_halfwidth/ood/near/maha/object_auroc",
    }
    assert all(0.0 <= v <= 0.5 for v in out.values())
    images_only = halfwidths(
        LOGITS, LABELS, GROUPS, ("ood/near/maha", np.arange(9.0), near), ["r", "r", "s"], False
    )
    assert set(images_only) == {"ci_halfwidth/test/accuracy", "ci_halfwidth/ood/near/maha/auroc"}


def _sets(test_groups, near_groups):
    import torch

    from eibacl.evaluate.evaluation import EvalSets

    empty = torch.zeros(0, 1, 2, 2, dtype=torch.uint8)
    return EvalSets(
        train_x=empty,
        train_y=torch.zeros(0, dtype=torch.long),
        val_x=empty,
        val_y=torch.zeros(0, dtype=torch.long),
        test_x=torch.zeros(9, 1, 2, 2, dtype=torch.uint8),
        test_y=torch.from_numpy(LABELS),
        near_x=torch.zeros(3, 1, 2, 2, dtype=torch.uint8),
        near_names=["x"] * 3,
        near_val_x=empty,
        far_x=None,
        class_names=["p", "q"],
        test_groups=test_groups,
        near_groups=near_groups,
    )


def test_evaluation_reports_objects_where_the_data_has_them_and_says_so_once_where_not(caplog):
    from eibacl.evaluate.evaluation import _per_object

    scores = {"mahalanobis": {"test": np.arange(9.0), "near": np.array([0.0, 1.0, 2.0])}}
    with_objects = _per_object(_sets(GROUPS, ["r", "r", "s"]), LOGITS, scores)
    assert with_objects["object/accuracy"] == pytest.approx(2 / 3)
    assert with_objects["ood/near/mahalanobis/object_auroc"] == pytest.approx(5 / 6)
    assert with_objects["data/objects/test"] == 3 and with_objects["data/images/test"] == 9
    sets = _sets(None, None)
    sets.class_names = ["never", "seen"]  # said once per process and data: fresh names
    with caplog.at_level("INFO", logger="eibacl.evaluate.evaluation"):
        without = _per_object(sets, LOGITS, scores)
        again = _per_object(sets, LOGITS, scores)
    lines = [r.getMessage() for r in caplog.records if "object-level" in r.getMessage()]
    assert len(lines) == 1 and "no object ids" in lines[0] and "never, seen" in lines[0]
    assert again == without
    assert not [k for k in without if "object" in k]
    assert "ci_halfwidth/ood/near/mahalanobis/auroc" in without
