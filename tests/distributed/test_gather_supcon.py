"""SupCon over the global batch under DDP: the gathered loss and the parameter gradients
of 2 gloo processes equal those of one process on the same global batch (the same for the
cross-entropy baseline), and the gradient-preserving all-gather itself."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.dist_helpers import spawn
from tests.distributed.dist_workers import gather_worker, loss_and_gradients, objectives

pytest.importorskip("torch.distributed")
if not torch.distributed.is_gloo_available():  # pragma: no cover
    pytest.skip("torch was built without the gloo backend", allow_module_level=True)

WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gather")
    spawn(gather_worker, WORLD, str(out), timeout=150)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict:
    return {name: loss_and_gradients(objective) for name, objective in objectives()}


def test_all_gather_concatenates_uneven_rows_in_rank_order_and_sums_gradients(ranks):
    expected = torch.cat([10.0 * r + torch.arange(r + 2.0) for r in range(WORLD)])
    for result in ranks:
        torch.testing.assert_close(result["gathered"][:, 0], expected.double())
        # every rank computed the same loss: each row's gradient is world x its weight
        torch.testing.assert_close(result["x_grad"], result["expected_x_grad"])


def test_supcon_loss_and_gradients_equal_one_process_on_the_global_batch(ranks, single):
    reference = single["supcon"]
    for result in ranks:
        got = result["supcon"]
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-6)
        for mine, ref in zip(got["grads"], reference["grads"]):
            torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
    # each rank forwarded its own slice: 4 + 3 of 7 images x 3 views, 3 + 2 of 5 negatives
    assert [r["supcon"]["count"] for r in ranks] == [4 * 3 + 3, 3 * 3 + 2]


def test_feature_negatives_are_made_alike_on_every_rank_from_the_global_batch(ranks, single):
    reference = single["supcon_features"]
    assert reference["loss"] > single["supcon"]["loss"]  # 6 more terms in every denominator
    for result in ranks:
        got = result["supcon_features"]
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-6)
        for mine, ref in zip(got["grads"], reference["grads"]):
            torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_cross_entropy_loss_and_gradients_equal_one_process_on_the_global_batch(ranks, single):
    reference = single["ce"]
    mean_loss = sum(r["ce"]["loss"] for r in ranks) / WORLD  # what the loop logs
    assert mean_loss == pytest.approx(reference["loss"], rel=1e-6)
    for result in ranks:
        for mine, ref in zip(result["ce"]["grads"], reference["grads"]):
            torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_gradients_are_not_trivially_zero(single):
    assert all(g.abs().sum() > 0 for g in single["supcon"]["grads"])
    assert all(g.abs().sum() > 0 for g in single["ce"]["grads"])
