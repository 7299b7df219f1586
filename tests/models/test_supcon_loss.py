"""SupCon L_out against a slow, obvious reference written with Python loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from eibacl.models.losses.supcon import supcon_loss


def reference_terms(features, labels, temperature, contrast_only=None):
    """Per-anchor (loss, log-denominator), anchors in (view, sample) order; loss None when the
    anchor has no positive. Plain loops over anchors, positives and the contrast set."""
    n, views, _ = features.shape
    items = [(v, s) for v in range(views) for s in range(n)]
    extra = [] if contrast_only is None else list(contrast_only)
    terms = []
    for v, s in items:
        anchor = features[s, v]
        denominator = 0.0
        for w, t in items:
            if (w, t) != (v, s):
                denominator = denominator + torch.exp(
                    torch.dot(anchor, features[t, w]) / temperature
                )
        for c in extra:
            denominator = denominator + torch.exp(torch.dot(anchor, c) / temperature)
        log_denominator = torch.log(denominator)
        log_probs = []
        for w, t in items:
            if (w, t) != (v, s) and int(labels[t]) == int(labels[s]):
                log_probs.append(torch.dot(anchor, features[t, w]) / temperature - log_denominator)
        loss = -sum(log_probs) / len(log_probs) if log_probs else None
        terms.append((loss, log_denominator))
    return terms


def reference_loss(features, labels, temperature, contrast_only=None):
    losses = [
        loss
        for loss, _ in reference_terms(features, labels, temperature, contrast_only)
        if loss is not None
    ]
    if not losses:
        return features.sum() * 0.0
    return sum(losses) / len(losses)


def _unit(*shape, generator):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def _case(seed, n, views, dim, n_classes, n_contrast):
    g = torch.Generator().manual_seed(seed)
    features = _unit(n, views, dim, generator=g).requires_grad_()
    labels = torch.randint(0, n_classes, (n,), generator=g)
    contrast = _unit(n_contrast, dim, generator=g).requires_grad_() if n_contrast else None
    return features, labels, contrast


CASES = [
    # seed, N, V, D, classes, contrast-only M
    (0, 6, 1, 5, 3, 0),
    (1, 6, 1, 5, 3, 4),
    (2, 5, 2, 4, 2, 0),
    (3, 7, 2, 3, 4, 3),
    (4, 4, 3, 6, 3, 0),
    (5, 5, 3, 4, 5, 2),
    (6, 8, 1, 8, 8, 2),  # V=1 with many singleton labels
    (7, 6, 2, 5, 6, 5),  # V=2, some singletons (their other view is the positive)
]


@pytest.mark.parametrize("seed,n,views,dim,n_classes,n_contrast", CASES)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_value_and_gradients_match_reference(
    seed, n, views, dim, n_classes, n_contrast, temperature
):
    features, labels, contrast = _case(seed, n, views, dim, n_classes, n_contrast)
    inputs = [features] + ([contrast] if contrast is not None else [])

    loss = supcon_loss(features, labels, temperature, contrast_only=contrast)
    expected = reference_loss(features, labels, temperature, contrast)
    assert loss.dtype == torch.float64
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)

    grads = torch.autograd.grad(loss, inputs)
    expected_grads = torch.autograd.grad(expected, inputs)
    for got, want in zip(grads, expected_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    assert grads[0].abs().sum() > 0


def test_float32_input_is_close_to_float64_reference():
    features, labels, contrast = _case(11, 6, 2, 4, 3, 3)
    loss = supcon_loss(features.detach().float(), labels, 0.1, contrast.detach().float())
    assert loss.dtype == torch.float32
    expected = reference_loss(features.detach(), labels, 0.1, contrast.detach())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_half_precision_is_computed_in_float32():
    features, labels, _ = _case(12, 6, 2, 4, 3, 0)
    loss = supcon_loss(features.detach().half(), labels, 0.1)
    assert loss.dtype == torch.float32
    expected = reference_loss(features.detach().half().double(), labels, 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_hand_computed_two_samples_two_views():
    # Sample 0 has views (1,0) and (0,1); sample 1 has views (-1,0) and (0,-1); T = 0.5.
    # Different labels: each anchor's one positive is its other view, at dot product 0.
    # Anchor (1,0): others have dot products -1 (sample 1 view 0), 0 (positive), 0
    # (sample 1 view 1), so the denominator is exp(-1/0.5) + exp(0) + exp(0) = 2 + e^-2 and
    # L = -(0 - log(2 + e^-2)) = log(2.1353353) = 0.7586237. Every anchor is in the same
    # situation by symmetry, so the loss is log(2 + e^-2).
    features = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64
    )
    loss = supcon_loss(features, torch.tensor([0, 1]), 0.5)
    assert loss.item() == pytest.approx(math.log(2 + math.exp(-2)), rel=1e-12)
    assert loss.item() == pytest.approx(0.7586237, abs=1e-7)

    # Same label: anchor (1,0) now has 3 positives with dot products -1, 0, 0, so
    # L = log(2 + e^-2) - (1/3) * (-1/0.5 + 0 + 0) = log(2 + e^-2) + 2/3.
    loss_same = supcon_loss(features, torch.tensor([4, 4]), 0.5)
    assert loss_same.item() == pytest.approx(math.log(2 + math.exp(-2)) + 2 / 3, rel=1e-12)


def test_singleton_anchors_are_excluded_not_zero_or_nan():
    g = torch.Generator().manual_seed(3)
    features = _unit(5, 1, 4, generator=g).requires_grad_()
    labels = torch.tensor([0, 0, 1, 2, 2])  # sample 2 has no positive when V=1
    loss = supcon_loss(features, labels, 0.2)
    terms = reference_terms(features, labels, 0.2)
    assert terms[2][0] is None
    kept = [t[0] for i, t in enumerate(terms) if i != 2]
    assert loss.item() == pytest.approx((sum(kept) / 4).item(), rel=1e-12)
    # Diluting with a zero for the singleton would give 4/5 of that.
    assert loss.item() != pytest.approx((sum(kept) / 5).item(), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("with_contrast", [False, True])
def test_all_singletons_with_one_view_give_zero_and_finite_grads(with_contrast):
    g = torch.Generator().manual_seed(4)
    features = _unit(4, 1, 3, generator=g).requires_grad_()
    contrast = _unit(2, 3, generator=g).requires_grad_() if with_contrast else None
    loss = supcon_loss(features, torch.tensor([0, 1, 2, 3]), 0.1, contrast)
    assert loss.item() == 0.0
    inputs = [features] + ([contrast] if with_contrast else [])
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    for grad in grads:
        assert grad is None or (torch.isfinite(grad).all() and (grad == 0).all())


def test_single_sample_single_view_gives_zero():
    features = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    loss = supcon_loss(features, torch.tensor([0]), 0.1)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(grad).all()


def test_contrast_only_changes_loss_only_through_denominators():
    features, labels, _ = _case(21, 6, 2, 4, 3, 0)
    features = features.detach()
    # A contrast-only vector far from every anchor: the opposite of their mean direction.
    far = -F.normalize(features.reshape(-1, 4).mean(dim=0), dim=0)[None]
    without = supcon_loss(features, labels, 0.2)
    with_far = supcon_loss(features, labels, 0.2, contrast_only=far)

    before = reference_terms(features, labels, 0.2)
    after = reference_terms(features, labels, 0.2, far)
    changes = [
        (a_den - b_den).item()
        for (b_loss, b_den), (_, a_den) in zip(before, after)
        if b_loss is not None
    ]
    assert all(change > 0 for change in changes)
    # Each anchor's L_i grows by exactly its log-denominator change; the mean follows.
    assert (with_far - without).item() == pytest.approx(sum(changes) / len(changes), rel=1e-9)
    assert with_far.item() > without.item()


def test_contrast_only_is_never_a_positive():
    # A contrast-only copy of an anchor's positive only adds to the denominator: the loss
    # must rise, whereas a positive would have lowered it.
    features, labels, _ = _case(22, 4, 2, 3, 2, 0)
    features = features.detach()
    copy = features[0, 1][None]
    without = supcon_loss(features, labels, 0.1)
    with_copy = supcon_loss(features, labels, 0.1, contrast_only=copy)
    assert with_copy.item() > without.item()
    assert with_copy.item() == pytest.approx(
        reference_loss(features, labels, 0.1, copy).item(), rel=1e-10
    )


def test_empty_contrast_only_equals_none():
    features, labels, _ = _case(23, 5, 2, 3, 2, 0)
    empty = torch.zeros(0, 3, dtype=torch.float64)
    assert supcon_loss(features, labels, 0.1, empty).item() == pytest.approx(
        supcon_loss(features, labels, 0.1).item(), rel=1e-12
    )


def test_invariant_to_permuting_samples_and_views():
    features, labels, contrast = _case(31, 7, 3, 4, 3, 2)
    features, contrast = features.detach(), contrast.detach()
    base = supcon_loss(features, labels, 0.1, contrast)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(7))
    permuted = supcon_loss(features[perm], labels[perm], 0.1, contrast)
    torch.testing.assert_close(permuted, base, rtol=1e-12, atol=0)
    views = supcon_loss(features[:, [2, 0, 1]], labels, 0.1, contrast.flip(0))
    torch.testing.assert_close(views, base, rtol=1e-12, atol=0)


def test_label_values_do_not_matter_only_equality():
    features, labels, _ = _case(32, 6, 2, 4, 3, 0)
    relabelled = labels * 7 + 100
    torch.testing.assert_close(
        supcon_loss(features, relabelled, 0.1), supcon_loss(features, labels, 0.1)
    )


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_raises(temperature):
    features, labels, _ = _case(41, 3, 2, 3, 2, 0)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(features, labels, temperature)


def test_bad_shapes_raise():
    features, labels, _ = _case(42, 3, 2, 3, 2, 0)
    with pytest.raises(ValueError, match="N x V x D"):
        supcon_loss(features[:, 0], labels, 0.1)
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(features, labels[:2], 0.1)
