"""`compare` across generators: which cells run (shared ones once), each generator's
settings and synthetic set, the labels of its outputs. The cell runner is replaced by a
stand-in (a generator_prior run may not work end to end yet), so no model is trained."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from eibacl.config import CompareConfig, ConfigError
from eibacl.workflow import compare as compare_module
from eibacl.workflow.compare import Cell, compare, generator_settings, grid, synthetic_sets

TWO = dict(generators="ddpm,ddpm-prior")


def test_auto_gives_todays_grid_exactly():
    config = CompareConfig()
    methods, modes = config.methods.split(","), config.modes.split(",")
    splits = [config.split_seed + i for i in range(config.split_count())]
    seeds = [config.seed + i for i in range(config.seeds)]
    today = [Cell(a, b, s, k) for s in splits for a in methods for b in modes for k in seeds]
    assert grid(config) == today
    assert config.cell_count() == len(today) == 2 * 4 * 6
    assert synthetic_sets(config, today) == [(0, "")]
    assert generator_settings(config, "") == {}


def test_modes_that_read_the_generator_run_once_per_generator_the_rest_once():
    modes = "none,positives,retrieval,positives+negatives,features"
    config = CompareConfig(modes=modes, seeds=2, **TWO)
    cells = grid(config)
    per_mode = {m: sorted({c.generator for c in cells if c.mode == m}) for m in modes.split(",")}
    assert per_mode == {
        "none": [""],
        "positives": ["ddpm", "ddpm-prior"],
        "retrieval": [""],
        "positives+negatives": ["ddpm", "ddpm-prior"],
        "features": [""],
    }
    assert len(cells) == len(set(cells)) == config.cell_count() == 2 * (3 + 2 * 2) * 2
    assert synthetic_sets(config, cells) == [(0, "ddpm"), (0, "ddpm-prior")]
    split_config = CompareConfig(modes="none,positives", splits="2", seeds=2, **TWO)
    assert synthetic_sets(split_config, grid(split_config)) == [
        (0, "ddpm"),
        (0, "ddpm-prior"),
        (1, "ddpm"),
        (1, "ddpm-prior"),
    ]


def test_generator_settings_follow_the_runs_prior():
    assert generator_settings(CompareConfig(), "ddpm") == {
        "generator": "ddpm",
        "generator_prior": "none",
    }
    assert generator_settings(CompareConfig(), "ddpm-prior")["generator_prior"] == "default"
    own = CompareConfig(generator_prior="/my/prior")
    assert generator_settings(own, "ddpm-prior")["generator_prior"] == "/my/prior"
    assert generator_settings(own, "stable-diffusion") == {
        "generator": "stable-diffusion",
        "generator_prior": "none",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            dict(generators="ddpm,dalle"),
            r"^generators='ddpm,dalle' is invalid: 'dalle' is not one of auto or a comma list "
            r"of ddpm, ddpm-prior, stable-diffusion\.$",
        ),
        (
            dict(generators="ddpm,ddpm"),
            r"^generators='ddpm,ddpm' is invalid: 'ddpm' is named twice; name each once\.$",
        ),
        (
            dict(generators="ddpm,ddpm-prior", workers="9", seeds=1, modes="none,positives"),
            r"^workers='9' is invalid: the grid has 6 cells .* use workers <= 6, or auto\.$",
        ),
    ],
)
def test_bad_generators_are_one_line(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        CompareConfig(**changes)
    assert "\n" not in str(error.value)


def test_a_given_synthetic_set_cannot_serve_named_generators():
    config = CompareConfig(synthetic_set="/some/set", generators="ddpm-prior", modes="positives")
    with pytest.raises(ConfigError, match=r"^synthetic_set=/some/set is a set made already, but"):
        synthetic_sets(config, grid(config))


class StandIn:
    """Records what compare asks of the steps and hands back made-up runs: accuracy 0.8 +
    0.01 * seed, +0.01 for ddpm-prior's cells (ddpm-prior is the prior's settings)."""

    def __init__(self) -> None:
        self.generated: list[tuple[int, str, str]] = []
        self.trained: list[dict] = []
        self.metrics: dict[str, dict[str, float]] = {}

    def generate_step(self, config):
        self.generated.append((config.split_seed, config.generator, config.generator_prior))
        return f"gen{len(self.generated)}", False

    def train(self, config, **changes):
        changes = {"generator_prior": config.generator_prior} | changes
        self.trained.append(changes)
        run_id = f"run{len(self.trained)}"
        seed = changes["seed"]
        prior = changes["generator_prior"] != "none" and changes["synthetic"] != "none"
        accuracy = 0.8 + 0.01 * seed + (0.01 + 0.001 * seed if prior else 0.0)
        self.metrics[run_id] = {"test/accuracy": accuracy, "ood/near/mahalanobis/auroc": 0.7}
        return run_id, False


def test_two_generators_share_the_none_cells_and_label_the_rest(fresh_experiment, monkeypatch):
    stand_in = StandIn()
    monkeypatch.setattr(compare_module, "generate_step", stand_in.generate_step)
    monkeypatch.setattr(compare_module, "pretrain_step", stand_in.train)
    monkeypatch.setattr(compare_module, "probe_step", lambda config, run, register: (run, False))
    monkeypatch.setattr(compare_module, "run_metrics", stand_in.metrics.get)
    config = CompareConfig(
        methods="supcon", modes="none,positives", workers="1", register=False, seeds=3, **TWO
    )
    result = compare(config)
    assert stand_in.generated == [(0, "ddpm", "none"), (0, "ddpm", "default")]
    trained = {
        (c["synthetic"], c.get("generator", ""), c["generator_prior"], c["seed"])
        for c in stand_in.trained
    }
    assert len(stand_in.trained) == len(trained) == 3 * 3  # none once, positives per generator
    assert ("none", "", "default", 0) in trained  # the shared cell: the run's own settings
    assert ("positives", "ddpm", "default", 2) in trained
    assert list(result.table) == [
        "supcon/none",
        "supcon/positives [ddpm]",
        "supcon/positives [ddpm-prior]",
    ]
    assert "## Generator ddpm-prior" in result.answer
    assert "## Did the prior change the answer?" in result.answer
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["eibacl.cell.supcon.positives.ddpm-prior.2"]
    assert run.data.tags["eibacl.cell.supcon.none.1"]
    assert "supcon/positives/ddpm-prior/test/accuracy" in run.data.metrics
    assert run.data.params["generators"] == "ddpm,ddpm-prior"
    table = open(client.download_artifacts(result.run_id, "comparison/table.md")).read()
    assert "| supcon/positives [ddpm-prior] |" in table
    tests = open(client.download_artifacts(result.run_id, "comparison/paired_tests.md")).read()
    assert "| supcon/positives [ddpm] | supcon/positives [ddpm-prior] |" in tests
