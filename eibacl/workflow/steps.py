"""Steps that are reused when a finished run with the same parameters exists."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from eibacl import names, tracking
from eibacl.config import BaselineConfig, PretrainConfig, ProbeConfig
from eibacl.evaluate.probe import probe
from eibacl.generate.pipeline import generate
from eibacl.train.baseline import baseline
from eibacl.train.pretrain import pretrain
from eibacl.train.synthetic import generation_config

log = logging.getLogger(__name__)
T = TypeVar("T")


def subset(config_cls: type[T], source: Any, **changes: Any) -> T:
    """Build `config_cls` from the fields of a larger config, with changes."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {n: getattr(source, n) for n in names if hasattr(source, n)}
    return config_cls(**(values | changes))


def reuse_or_run(entry_point: str, config: Any, run: Callable[[], str]) -> tuple[str, bool]:
    """(run id, reused): a finished run of this step with the same parameters, or a new one."""
    digest = tracking.params_digest(dataclasses.asdict(config))
    found = tracking.find_finished(entry_point, digest)
    if found is not None:
        log.info("reusing finished %s run %s", entry_point, found.info.run_id)
        return found.info.run_id, True
    return run(), False


def generate_step(config: Any) -> tuple[str, bool]:
    gen = generation_config(config)
    return reuse_or_run("generate", gen, lambda: generate(gen, nested=True).run_id or "")


def pretrain_step(config: Any, **changes: Any) -> tuple[str, bool]:
    cfg = subset(PretrainConfig, config, **changes)
    return reuse_or_run("pretrain", cfg, lambda: pretrain(cfg, nested=True).run_id)


def probe_step(config: Any, pretrain_run_id: str, register: bool) -> tuple[str, bool]:
    encoder_uri = tracking.get_run(pretrain_run_id).data.tags[names.ENCODER_URI_TAG]
    cfg = subset(ProbeConfig, config, encoder_uri=encoder_uri, register=register)
    return reuse_or_run("probe", cfg, lambda: probe(cfg, nested=True).run_id)


def baseline_step(config: Any, register: bool, **changes: Any) -> tuple[str, bool]:
    cfg = subset(BaselineConfig, config, register=register, **changes)
    return reuse_or_run("baseline", cfg, lambda: baseline(cfg, nested=True).run_id)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(tracking.get_run(run_id).data.metrics)
