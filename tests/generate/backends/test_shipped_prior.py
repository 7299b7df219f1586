"""The prior that ships in priors/: found by `generator_prior=default` for the default data,
small, loadable, and its card says what it saw."""

from __future__ import annotations

from eibacl.config import DataConfig, GenerateConfig
from eibacl.generate.backends.ddpm_prior import SHIPPED, check_fits, load_prior, shipped_prior


def test_the_default_prior_ships_for_the_default_data_and_is_small():
    data = DataConfig()
    assert GenerateConfig().generator_prior == "default"
    folder = shipped_prior(data.data, data.image_size, 1)
    assert folder is not None and folder.parent == SHIPPED
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= 10 * 2**20, f"{folder} holds {total / 2**20:.1f} MiB (at most ~10 MB ships)"
    prior = load_prior(folder)
    held_out = data.ood_classes.split(",")
    check_fits(prior, data.image_size, 1, held_out)  # the default split is allowed
    card = prior.card.read_text()
    for needed in ("T-shirt/top", prior.info["pool"]["digest"][:16], "mlflow run . -e prior"):
        assert needed in card
    assert prior.info["run_id"] and prior.info["commit"] and prior.info["steps_done"] > 0
    assert not set(prior.info["pool"]["classes"]) & set(held_out)
