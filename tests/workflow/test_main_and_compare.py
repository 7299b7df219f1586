"""`main` chains the steps and reuses finished ones; `compare` runs the grid and its tests."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from eibacl.config import CompareConfig, MainConfig
from eibacl.tracking import process_label
from eibacl.workflow.compare import compare
from eibacl.workflow.main import main
from tests import tiny

TINY = (
    tiny.data(shots=6, val_per_class=6, test_per_class=10)
    | tiny.training(epochs=1, batch_size=16, warmup_epochs=0, eval_every=0)
    | tiny.generation(strength="0.5", near_ood_recipes="class-mix")
    | dict(knn_k=5, near_ood_per_batch=4)
)


def _children(parent_id: str) -> list:
    return mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
        search_all_experiments=True,
    )


def test_main_runs_every_step_then_reuses_them(fresh_experiment, capsys):
    config = MainConfig(register=False, **TINY)
    first = main(config)
    assert set(first) == {"supcon", "ce"}
    assert 0 <= first["supcon"]["test/accuracy"] <= 1
    out = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri" in out
    parents = mlflow.search_runs(
        experiment_names=[fresh_experiment],
        filter_string="tags.`eibacl.entry_point` = 'main'",
        output_format="list",
    )
    assert len(parents) == 1
    entries = sorted(r.data.tags["eibacl.entry_point"] for r in _children(parents[0].info.run_id))
    assert entries == ["baseline", "generate", "pretrain", "probe"]
    second = main(config)
    assert second == first
    assert "(reused)" in capsys.readouterr().out
    newest = mlflow.search_runs(
        experiment_names=[fresh_experiment],
        filter_string="tags.`eibacl.entry_point` = 'main'",
        output_format="list",
    )[0]
    assert _children(newest.info.run_id) == []  # nothing ran again
    tags = newest.data.tags
    for step in ("generate", "pretrain", "probe", "baseline"):
        assert tags[f"eibacl.step.{step}"]


def test_compare_at_its_default_grid(fresh_experiment):
    """The default methods and modes (a '+' in a mode name crashed MLflow tag keys once), on
    two object-grouped splits (one seed each: pairs are (split, seed)), in the default
    workers=auto processes (one per usable core: two on CI's 2 cores)."""
    defaults = CompareConfig()
    config = CompareConfig(seeds=1, splits=2, register=False, **TINY)
    assert (config.methods, config.modes) == (defaults.methods, defaults.modes)
    assert (defaults.splits, defaults.workers, defaults.split_count()) == ("auto", "auto", 1)
    methods, modes = config.methods.split(","), config.modes.split(",")
    result = compare(config)
    assert len(result.runs) == len(methods) * len(modes) * 2
    assert {(r.split, r.seed) for r in result.runs} == {(0, 0), (1, 0)}
    assert set(result.table) == {f"{m}/{mode}" for m in methods for mode in modes}
    pairs = {(t["first"], t["second"]) for t in result.tests}
    assert ("supcon/none", "supcon/positives") in pairs
    assert ("supcon/positives", "supcon/positives+negatives") in pairs
    assert ("ce/positives+negatives", "supcon/positives+negatives") in pairs
    assert all(t["n"] == 2 and t["blocks"] == 2 for t in result.tests)
    assert all(0 <= t["p_holm"] <= 1 for t in result.tests if t["p_holm"] == t["p_holm"])
    client = MlflowClient()
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "comparison")}
    for name in (
        "table.csv",
        "table.md",
        "table.tex",
        "paired_tests.md",
        "paired_tests.tex",
        "paired_tests.json",
        "resolution.md",
        "answer.md",
        "test_accuracy.png",
        "test_accuracy.pdf",
        "ood_near_mahalanobis_auroc.png",
        "ood_near_mahalanobis_auroc.pdf",
    ):
        assert f"comparison/{name}" in artifacts
    answer = client.download_artifacts(result.run_id, "comparison/answer.md")
    text = open(answer).read()
    assert text == result.answer and "RQ1" in text and "RQ2" in text
    assert "2 (split, seed) pairs, 2 splits as blocks" in text
    assert "Object-level metrics" in text  # Fashion-MNIST has no object ids: said once
    resolution = open(client.download_artifacts(result.run_id, "comparison/resolution.md")).read()
    assert "Split-to-split vs seed-to-seed (2 object-grouped splits)" in resolution
    tex = open(client.download_artifacts(result.run_id, "comparison/table.tex")).read()
    assert tex.count(r"\\") == len(result.table) + 1  # header + one row per cell
    tags = client.get_run(result.run_id).data.tags
    assert tags["eibacl.cell.supcon.positives_negatives.split1.0"]
    metrics = client.get_run(result.run_id).data.metrics
    assert "supcon/positives_negatives/test/accuracy" in metrics
    children = _children(result.run_id)
    entries = [c.data.tags["eibacl.entry_point"] for c in children]
    cells = len(modes) * 2  # per method: modes x splits, each run exactly once
    assert entries.count("pretrain") == cells and entries.count("probe") == cells
    assert entries.count("baseline") == cells and entries.count("generate") == 2
    by_entry = {
        entry: sorted(
            c.data.params.get("split_seed", "")
            for c in children
            if c.data.tags["eibacl.entry_point"] == entry
        )
        for entry in ("pretrain", "generate")
    }
    assert by_entry["generate"] == ["0", "1"]  # each split its own synthetic set
    assert by_entry["pretrain"] == ["0"] * len(modes) + ["1"] * len(modes)
    processes = {c.data.tags["eibacl.process"] for c in children}
    assert process_label() not in processes  # the cells ran in the worker processes
