"""The retrieval control: true nearest neighbours (checked with scikit-learn on the same
features), num_synthetic per training image, the anchor's class, logged, and a compare cell."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.neighbors import NearestNeighbors

from eibacl.config import (
    CompareConfig,
    ConfigError,
    PretrainConfig,
    synthetic_components,
    unused_settings,
)
from eibacl.data.pool import load_unlabelled_pool
from eibacl.data.training_data import TrainingData
from eibacl.train.pretrain import pretrain
from eibacl.train.retrieval import (
    GRID_ARTIFACT,
    retrieval_features,
    retrieval_pool,
    retrieve,
    retrieved_set,
)
from eibacl.workflow.compare import compare
from tests import tiny
from tests.data.test_pool import hand_made
from tests.workflow.test_main_and_compare import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data() -> TrainingData:
    imageset, split = hand_made()
    data = TrainingData(imageset, split, *([torch.empty(0)] * 4))
    data.train_x, data.train_y = data.side("train")
    data.val_x, data.val_y = data.side("val")
    return data


def test_retrieved_images_are_the_true_nearest_neighbours_with_the_anchor_class():
    data = _data()
    pool = load_unlabelled_pool("auto", data.imageset, data.split)
    k = 2
    found = retrieve(data, pool, k)
    anchors, candidates = retrieval_features(data, pool)
    dists, idx = NearestNeighbors(n_neighbors=k).fit(candidates).kneighbors(anchors)
    assert np.array_equal(found.indices, idx)
    np.testing.assert_allclose(found.distances, dists, rtol=1e-4, atol=1e-6)
    images, labels = retrieved_set(data, pool, found)
    assert len(images) == k * len(data.train_x) == 6
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]  # train a0, a1, b0: each anchor's class
    assert torch.equal(images[2], pool.images[found.indices[1, 0]])


def test_retrieval_pool_logs_counts_distance_and_grid(fresh_experiment):
    data = _data()
    config = SimpleNamespace(
        prior_pool="auto", num_synthetic=2, synthetic="retrieval", device="cpu"
    )
    with mlflow.start_run() as run:
        pool = retrieval_pool(config, data)
        again = retrieval_pool(config, data)  # read from the cache
    assert [len(v) for v in pool.variants] == [2, 2, 2] and len(pool.near_ood) == 0
    assert all(torch.equal(a, b) for a, b in zip(pool.variants, again.variants))
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["retrieval/count"] == 6 and metrics["retrieval/pool_size"] == 5
    assert metrics["retrieval/mean_distance"] > 0
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "retrieval")}
    assert GRID_ARTIFACT in names


def test_bad_retrieval_inputs_are_one_clear_line():
    data = _data()
    for changes, match in (
        ({"prior_pool": "none"}, "needs an unlabelled pool"),
        ({"num_synthetic": 6}, "use 1 <= num_synthetic <= 5"),
    ):
        config = SimpleNamespace(
            prior_pool="auto", num_synthetic=2, synthetic="retrieval", device="cpu"
        )
        config.__dict__.update(changes)
        with pytest.raises(ConfigError, match=match):
            retrieval_pool(config, data)
    with pytest.raises(ConfigError, match="retrieval is the control of positives"):
        synthetic_components("positives+retrieval")


def test_retrieval_reads_the_pool_and_count_and_not_the_generator():
    params = {"synthetic": "retrieval", "num_synthetic": 4, "prior_pool": "auto", "strength": "1"}
    params |= {"alpha": 0.5, "synthetic_set": ""}
    assert unused_settings(params) == {"strength", "synthetic_set"}
    assert "prior_pool" in unused_settings(params | {"synthetic": "positives"})


def test_compare_runs_none_against_retrieval(fresh_experiment):
    config = CompareConfig(
        seeds=1, methods="supcon", modes="none,retrieval", workers=1, register=False, **TINY
    )
    result = compare(config)
    assert set(result.table) == {"supcon/none", "supcon/retrieval"}
    trained = mlflow.search_runs(
        experiment_names=[fresh_experiment],
        filter_string="metrics.`retrieval/count` > 0",
        output_format="list",
    )
    assert len(trained) == 1  # the one retrieval cell (supcon)
    generated = mlflow.search_runs(
        experiment_names=[fresh_experiment],
        filter_string="tags.`eibacl.entry_point` = 'generate'",
        output_format="list",
    )
    assert generated == []  # retrieval alone makes no synthetic set
    assert trained[0].data.params["synthetic"] == "retrieval"
    count = trained[0].data.metrics["retrieval/count"]
    assert count == TINY["num_synthetic"] * 5 * TINY["shots"]


def test_retrieval_plus_negatives_draws_pool_variants_and_the_sets_negatives(fresh_experiment):
    config = PretrainConfig(
        **tiny.data(shots=6, val_per_class=6, test_per_class=10)
        | tiny.training(batch_size=16)
        | tiny.generation(num_synthetic=2, strength="0.5", near_ood_recipes="class-mix"),
        near_ood_per_batch=8,
        synthetic="retrieval+negatives",
    )
    run = MlflowClient().get_run(pretrain(config).run_id)
    shots, classes = 6, 5
    assert run.data.metrics["retrieval/count"] == shots * classes * 2
    assert (
        run.data.metrics["synthetic/id_count"] == shots * classes * 2
    )  # the pool's, not the set's
    assert run.data.metrics["synthetic/near_ood_count"] == shots * classes * 1
    assert run.data.metrics["train/synthetic_drawn"] > 0
