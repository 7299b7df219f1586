"""`generate` split over 2 gloo processes makes the same content-addressed synthetic set as
one process: same folder (key), same manifest (ids, seeds, order), same pixels, complete."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests import tiny
from tests.distributed.dist_helpers import spawn
from tests.distributed.dist_workers import generate_worker

if not torch.distributed.is_gloo_available():  # pragma: no cover
    pytest.skip("torch was built without the gloo backend", allow_module_level=True)

TINY_GENERATE = tiny.data() | tiny.generation(generator_steps=5)


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, make_experiment) -> dict:
    """The set made by one process (cache `one`) and by two (cache `two`, from the same
    trained generator: training it is not what is compared). Every process uses one thread,
    as CPU kernels may round differently with another thread count (a pixel in ~30,000 off
    by one): the comparison is of the work split, on equal arithmetic."""
    from eibacl.config import GenerateRunConfig
    from eibacl.data.training_data import prepare_data
    from eibacl.generate import pipeline

    root = tmp_path_factory.mktemp("sharded")
    one, two, out = root / "one", root / "two", root / "out"
    out.mkdir()
    session_sources = Path(os.environ["EIBACL_CACHE"]) / "sources"
    for cache in (one, two):
        if session_sources.is_dir():  # the decoded data, shared to save time
            shutil.copytree(session_sources, cache / "sources")
    config = GenerateRunConfig(**TINY_GENERATE)
    experiment = f"sharded-{uuid.uuid4().hex[:8]}"
    make_experiment(experiment)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EIBACL_CACHE", str(one))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        mp.setattr(pipeline, "_quality", lambda *args: {})  # not compared; the workers do it
        try:
            data = prepare_data(config)
            single = pipeline.ensure_synthetic_set(config, data, torch.device("cpu"), False)
        finally:
            torch.set_num_threads(threads)
        shutil.copytree(one / "generators", two / "generators")
        mp.setenv("EIBACL_CACHE", str(two))
        mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
        spawn(generate_worker, 2, str(out), TINY_GENERATE, timeout=240)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {"single": single, "ranks": ranks, "experiment": experiment, "two": two}


def test_both_ranks_return_the_same_complete_set_named_by_the_same_key(two_sets):
    single, (rank0, rank1) = two_sets["single"], two_sets["ranks"]
    assert rank0["set_dir"] == rank1["set_dir"]
    assert rank0["key"] == rank1["key"] == single.key
    assert Path(rank0["set_dir"]).name == single.set_dir.name
    assert rank0["counts"] == rank1["counts"] == single.counts
    assert single.counts == {"id": 40, "near_ood": 40}  # 5 ID classes x 8 shots, 1 + 1 each
    folder = Path(rank0["set_dir"])
    assert (folder / "COMPLETE").is_file()
    assert not list(folder.parent.glob("*.shards"))  # merged and removed


def test_manifest_settings_and_pixels_equal_the_single_process_set(two_sets):
    from eibacl.generate.dafusion.synthetic_set import SyntheticSet

    one = two_sets["single"].set_dir
    many = Path(two_sets["ranks"][0]["set_dir"])
    for name in ("manifest.csv", "settings.json"):
        assert (many / name).read_bytes() == (one / name).read_bytes(), name
    a, b = SyntheticSet.open(one), SyntheticSet.open(many)
    assert a.synthetic_ids == b.synthetic_ids and a.seeds == b.seeds
    assert torch.equal(a.images, b.images)
    files = sorted(p.name for p in (one / "images").iterdir())
    assert files == sorted(p.name for p in (many / "images").iterdir())


def test_one_generate_run_is_logged_by_rank_0(two_sets):
    exp = mlflow.get_experiment_by_name(two_sets["experiment"])
    (run,) = MlflowClient().search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id == two_sets["ranks"][0]["run_id"] == two_sets["ranks"][1]["run_id"]
    assert run.data.tags["eibacl.synthetic_set_dir"] == two_sets["ranks"][0]["set_dir"]
    assert run.data.metrics["synthetic/id_count"] == 40
