"""Memorisation in the judge: planted copies of real images score memorised, fresh noise
does not; the threshold is the hand rule, checked against scikit-learn's neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from eibacl.generate.judge.judge import (
    MEMORISED_QUANTILE,
    add_pool,
    closest_pairs_figure,
    fit_judge,
    judge_report,
    memorised,
)
from tests.generate.judge.test_judge import _data


@pytest.fixture(scope="module")
def judge():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train_x, train_y = _data(40, 0)
    val_x, _ = _data(40, 10)
    yield fit_judge(train_x, train_y, val_x, 2, seed=0)
    torch.set_num_threads(before)


def _noise(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 16, 16), generator=gen, dtype=torch.uint8)


def test_threshold_is_a_low_quantile_of_real_nearest_neighbour_distances(judge):
    train_x, _ = _data(40, 0)
    feats = torch.nn.functional.normalize(judge.embed(train_x), dim=1).numpy()
    dists, _ = NearestNeighbors(n_neighbors=2).fit(feats).kneighbors(feats)
    expected = np.quantile(dists[:, 1], MEMORISED_QUANTILE)  # column 0 is the image itself
    assert judge.memorised_threshold == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert judge.memorised_threshold > 0


def test_planted_copies_score_memorised_and_fresh_noise_does_not(judge):
    train_x, train_y = _data(40, 0)
    picks = torch.arange(0, 80, 8)
    exact = train_x[picks]
    jitter = torch.randint(-2, 3, exact.shape, generator=torch.Generator().manual_seed(3))
    near = (exact.int() + jitter).clamp(0, 255).to(torch.uint8)
    groups = {
        "copies": (torch.cat([exact, near]), train_y[picks].repeat(2)),
        "noise": (_noise(20, 5), None),
    }
    metrics, _ = judge_report(judge, groups)
    assert metrics["judge/copies/memorised_rate"] == 1.0
    assert metrics["judge/noise/memorised_rate"] == 0.0


def test_pool_images_count_once_added(judge):
    pool = _noise(30, 7)
    copies = pool[:5].clone()
    assert not memorised(judge, copies).any()
    threshold = judge.memorised_threshold
    add_pool(judge, pool)
    try:
        assert memorised(judge, copies).all()
        assert judge.memorised_threshold == threshold  # calibrated on training data only
    finally:
        judge.references = judge.references[:-30]
        judge.reference_feats = judge.reference_feats[:-30]


def test_a_dense_pool_tightens_the_threshold_to_distinct_real_images(judge):
    pool, distinct = _noise(200, 11), _noise(40, 12)
    threshold = judge.memorised_threshold
    add_pool(judge, pool, calibration=distinct)
    try:
        dists, _ = judge.closest_real(distinct)
        expected = min(threshold, float(np.quantile(dists, 0.05)))
        assert judge.memorised_threshold == pytest.approx(expected)
        assert memorised(judge, distinct).mean() <= 0.05 + 1 / 40  # the quantile, by design
        assert memorised(judge, pool[:5].clone()).all()  # exact copies still count
    finally:
        judge.references = judge.references[:-200]
        judge.reference_feats = judge.reference_feats[:-200]
        judge.memorised_threshold = threshold


def test_closest_pairs_grid_puts_the_copy_first(judge):
    train_x, _ = _data(40, 0)
    images = torch.cat([_noise(5, 9), train_x[3:4]])
    figure = closest_pairs_figure(judge, images, count=4)
    assert len(figure.axes) == 4 * 2
    assert "mem" in figure.axes[0].get_ylabel()
    shown = figure.axes[1].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), train_x[3, 0].numpy())
