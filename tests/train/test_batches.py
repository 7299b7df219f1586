"""`BatchSampler`: DA-Fusion replacement, extra views and near-OOD negatives."""

from __future__ import annotations

import pytest
import torch

from eibacl.train.batches import BatchSampler, SyntheticPool

N, SIZE = 24, 4


def _filled(values: list[int]) -> torch.Tensor:
    """One 1 x SIZE x SIZE uint8 image per value, every pixel equal to it."""
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE)


@pytest.fixture
def real():
    images = _filled(list(range(N))).clone()  # image i has pixel value i
    labels = torch.arange(N) % 3
    return images, labels


@pytest.fixture
def pool():
    """Images with even index have 3 variants (values 100+i, 130+i, 160+i, so a variant
    names its source); odd ones have none. Near-OOD values are 200..209."""
    variants = [
        _filled([100 + i, 130 + i, 160 + i]) if i % 2 == 0 else torch.empty(0, 1, SIZE, SIZE)
        for i in range(N)
    ]
    return SyntheticPool(
        variants=[v.to(torch.uint8) for v in variants], near_ood=_filled(list(range(200, 210)))
    )


def _source(value: int) -> int:
    """The real image a pixel value belongs to (real i, or a variant 100/130/160 + i)."""
    return value if value < 100 else (value - 100) % 30


def _epochs(sampler: BatchSampler, n: int = 3):
    return [batch for _ in range(n) for batch in sampler.epoch()]


def test_pool_with_alpha_zero_gives_the_batches_of_a_run_without_pool(real, pool):
    plain = _epochs(BatchSampler(*real, batch_size=8, seed=5))
    pooled = _epochs(BatchSampler(*real, batch_size=8, seed=5, pool=pool, alpha=0.0))
    assert len(plain) == len(pooled) == 3 * (N // 8)
    for a, b in zip(plain, pooled, strict=True):
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)
        assert b.synthetic_drawn == 0 and b.negatives is None and b.extra_views is None
    other_seed = _epochs(BatchSampler(*real, batch_size=8, seed=6))
    assert any(not torch.equal(a.labels, b.labels) for a, b in zip(plain, other_seed))


def test_alpha_zero_with_negatives_keeps_the_real_batches(real, pool):
    plain = _epochs(BatchSampler(*real, batch_size=8, seed=5))
    pooled = _epochs(
        BatchSampler(*real, batch_size=8, seed=5, pool=pool, alpha=0.0, near_ood_per_batch=4)
    )
    for a, b in zip(plain, pooled, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_alpha_one_replaces_every_image_with_variants_by_one_of_its_own(real, pool):
    sampler = BatchSampler(*real, batch_size=8, seed=0, pool=pool, alpha=1.0)
    order_only = BatchSampler(*real, batch_size=8, seed=0)
    seen_variants: set[int] = set()
    for batch, reference in zip(_epochs(sampler, 4), _epochs(order_only, 4), strict=True):
        assert torch.equal(batch.labels, reference.labels)  # labels preserved, same order
        for image, real_image, label in zip(batch.images, reference.images, batch.labels):
            value, source = int(image[0, 0, 0]), int(real_image[0, 0, 0])
            assert torch.all(image == value)
            if source % 2 == 0:
                assert value >= 100, "an image with variants was not replaced at alpha=1"
                assert _source(value) == source
                seen_variants.add(value)
            else:
                assert value == source  # nothing to replace it with
            assert int(label) == source % 3
        assert batch.synthetic_drawn == sum(int(r[0, 0, 0]) % 2 == 0 for r in reference.images)
    assert len(seen_variants) > N // 2  # more than one variant per image gets used


def test_alpha_half_replaces_about_half(real, pool):
    sampler = BatchSampler(*real, batch_size=8, seed=1, pool=pool, alpha=0.5)
    batches = _epochs(sampler, 40)
    replaced = sum(b.synthetic_drawn for b in batches)
    eligible = sum(int((b.labels >= 0).sum()) for b in batches) / 2  # half have variants
    assert 0.35 < replaced / eligible < 0.65


def test_near_ood_negatives_come_only_from_the_pool(real, pool):
    sampler = BatchSampler(*real, batch_size=8, seed=0, pool=pool, alpha=0.5, near_ood_per_batch=5)
    for batch in _epochs(sampler):
        assert batch.negatives is not None
        assert batch.negatives.shape == (5, 1, SIZE, SIZE)
        assert batch.negatives.dtype == torch.uint8
        values = batch.negatives[:, 0, 0, 0]
        assert bool(((values >= 200) & (values < 210)).all())
        assert len(batch.labels) == 8  # negatives have no labels and are not in the batch


def test_no_pool_means_no_negatives(real):
    sampler = BatchSampler(*real, batch_size=8, seed=0, near_ood_per_batch=5)
    assert all(b.negatives is None for b in _epochs(sampler))


def test_extra_view_mode_adds_a_view_per_image(real, pool):
    sampler = BatchSampler(*real, batch_size=8, seed=0, pool=pool, positive_mode="extra-view")
    order_only = BatchSampler(*real, batch_size=8, seed=0)
    for batch, reference in zip(_epochs(sampler), _epochs(order_only), strict=True):
        assert torch.equal(batch.images, reference.images)  # the real images stay
        assert batch.extra_views is not None
        assert batch.extra_views.shape == batch.images.shape
        for view, image in zip(batch.extra_views, batch.images):
            source = int(image[0, 0, 0])
            value = int(view[0, 0, 0])
            assert _source(value) == source
            assert (value >= 100) == (source % 2 == 0)


def test_sampler_state_round_trip_continues_identically(real, pool):
    a = BatchSampler(*real, batch_size=8, seed=3, pool=pool, alpha=0.5, near_ood_per_batch=2)
    _epochs(a, 2)
    state = a.state()
    expected = _epochs(a, 2)
    b = BatchSampler(*real, batch_size=8, seed=99, pool=pool, alpha=0.5, near_ood_per_batch=2)
    b.load_state(state)
    for x, y in zip(expected, _epochs(b, 2), strict=True):
        assert torch.equal(x.images, y.images) and torch.equal(x.negatives, y.negatives)


def test_batch_size_larger_than_data_and_bad_mode(real):
    sampler = BatchSampler(*real, batch_size=1000, seed=0)
    (batch,) = list(sampler.epoch())
    assert len(batch.images) == N
    with pytest.raises(ValueError, match="positive_mode"):
        BatchSampler(*real, batch_size=8, seed=0, positive_mode="bogus")
