"""From a frozen encoder to the study's numbers and pictures.

Used by `probe` (linear classifier on frozen SupCon features) and by `baseline`
(the cross-entropy network's own head), so both report under the same metric names:

    val/accuracy, test/accuracy, test/accuracy/<class>,
    ood/{near,far}/{knn,mahalanobis,msp,energy}/{auroc,fpr95,aupr_in,aupr_out},
    val/ood/near/{knn,mahalanobis,msp,energy}/auroc  (validation OOD: for selection only)
    object/accuracy, ood/near/{scorer}/object_auroc   (where the data has object ids)
    ci_halfwidth/<metric> for test/accuracy, ood/near/mahalanobis/auroc and (with object
    ids) object/accuracy, ood/near/mahalanobis/object_auroc: 95% CI half-width by a
    bootstrap that resamples objects; data/images/*, data/objects/* (counts)

In-distribution is the positive class; every score is "higher = more in-distribution".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure

from eibacl.evaluate.features import extract_features
from eibacl.evaluate.linear_probe import (
    accuracy,
    confusion_matrix,
    per_class_accuracy,
    train_linear_probe,
)
from eibacl.evaluate.objects import CI, halfwidths, object_metrics
from eibacl.evaluate.ood_metrics import ood_report
from eibacl.evaluate.plots import (
    confusion_matrix_figure,
    embedding_figure,
    roc_figure,
    score_histogram_figure,
)
from eibacl.evaluate.scorers import (
    DEFAULT_COVARIANCE,
    energy_score,
    fit_mahalanobis,
    knn_score,
    mahalanobis_score,
    msp_score,
)
from eibacl.keys import key_part

log = logging.getLogger(__name__)
SCORERS = ("knn", "mahalanobis", "msp", "energy")
# The study's headline near-OOD scorer: the steadiest across training seeds (README, "The
# study's instrument"), so a paired difference is resolved with few seeds. Its validation
# twin (held-out `ood_val_classes`) is what selection reads; the test value is only reported.
HEADLINE_SCORER = "mahalanobis"
HEADLINE_NEAR_OOD = f"ood/near/{HEADLINE_SCORER}/auroc"
SELECTION_NEAR_OOD = f"val/ood/near/{HEADLINE_SCORER}/auroc"
OBJECT_NEAR_OOD = f"ood/near/{HEADLINE_SCORER}/object_auroc"  # the headline, per object
OOD_SETS = ("near", "far")


@dataclass
class EvalSets:
    """Images (uint8) of every set an evaluation reads; labels renumbered to ID classes."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    near_x: torch.Tensor
    near_names: list[str]
    near_val_x: torch.Tensor
    far_x: torch.Tensor | None  # None: no far-OOD set (far_ood=none), its metrics are absent
    class_names: list[str]
    far_name: str = "MNIST"
    # Physical-object id of each test / near-OOD image (views of one object share one);
    # None where the source has no object ids (every image is then its own object).
    test_groups: list[str] | None = None
    near_groups: list[str] | None = None

    @property
    def has_objects(self) -> bool:
        return self.test_groups is not None and self.near_groups is not None

    def object_ids(self, name: str) -> list[str]:
        """Object id of each image of the `test` or `near` set (its index where none)."""
        groups = self.test_groups if name == "test" else self.near_groups
        count = len(self.test_x if name == "test" else self.near_x)
        return list(groups) if groups is not None else [f"{name}/{i}" for i in range(count)]

    @property
    def ood_sets(self) -> tuple[str, ...]:
        return OOD_SETS if self.far_x is not None else ("near",)

    def check(self, knn_k: int) -> None:
        if len(self.near_x) == 0:
            raise ValueError(
                "the near-OOD test set is empty: hold out at least one class with -P ood_classes"
            )
        if self.far_x is not None and len(self.far_x) == 0:
            raise ValueError(f"the far-OOD set ({self.far_name}) is empty: see -P far_ood")
        if knn_k > len(self.train_x):
            raise ValueError(
                f"knn_k={knn_k} is larger than the {len(self.train_x)} training images; "
                f"use -P knn_k={len(self.train_x)} or less"
            )


@dataclass
class Evaluation:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate_encoder(
    encoder: torch.nn.Module,
    sets: EvalSets,
    *,
    knn_k: int,
    seed: int = 0,
    device: str = "cpu",
    head: torch.nn.Module | None = None,
    plots: bool = True,
    covariance: str = DEFAULT_COVARIANCE,
) -> Evaluation:
    """Features once, then a classifier (the given `head`, else a linear probe trained on
    the training split and chosen on validation), then four OOD scorers on two OOD sets;
    where the data has object ids, the same decisions per object; CIs resample objects."""
    sets.check(knn_k)
    encoder = encoder.to(device)
    feats = {
        name: extract_features(encoder, x, device=device)
        for name, x in (
            ("train", sets.train_x),
            ("val", sets.val_x),
            ("test", sets.test_x),
            ("near", sets.near_x),
            ("near_val", sets.near_val_x),
            ("far", sets.far_x),
        )
        if x is not None
    }
    metrics: dict[str, float] = {}
    logits_fn = _classifier(feats, sets, seed, head, metrics)
    logits = {name: logits_fn(f) for name, f in feats.items()}
    test_pred = logits["test"].argmax(1)
    metrics |= _accuracies(logits, sets)
    maha = fit_mahalanobis(feats["train"], sets.train_y, covariance=covariance)
    scores = {
        "knn": lambda name: knn_score(feats["train"], feats[name], knn_k),
        "mahalanobis": lambda name: mahalanobis_score(maha, feats[name]),
        "msp": lambda name: msp_score(logits[name]),
        "energy": lambda name: energy_score(logits[name]),
    }
    per_scorer = {
        scorer: {name: fn(name) for name in feats if name != "train"}
        for scorer, fn in scores.items()
    }
    metrics |= _ood_metrics(per_scorer, sets.ood_sets)
    metrics |= _per_object(sets, logits["test"].numpy(), per_scorer)
    evaluation = Evaluation(metrics=metrics, summary=headline(metrics))
    if plots:
        evaluation.figures = _figures(sets, feats, per_scorer, test_pred)
    return evaluation


def _classifier(
    feats: dict[str, torch.Tensor],
    sets: EvalSets,
    seed: int,
    head: torch.nn.Module | None,
    metrics: dict[str, float],
) -> LogitsFn:
    """The given `head`, else a linear probe (its chosen strength goes into `metrics`)."""
    if head is None:
        probe = train_linear_probe(
            feats["train"], sets.train_y, feats["val"], sets.val_y, len(sets.class_names), seed=seed
        )
        metrics["probe/weight_decay"] = probe.weight_decay
        metrics["probe/C"] = probe.C
        return probe.logits
    head = head.cpu().eval()

    def logits_fn(f: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return head(f.float()).float()

    return logits_fn


def _accuracies(logits: dict[str, torch.Tensor], sets: EvalSets) -> dict[str, float]:
    test_pred = logits["test"].argmax(1)
    metrics = {
        "val/accuracy": accuracy(logits["val"].argmax(1), sets.val_y),
        "test/accuracy": accuracy(test_pred, sets.test_y),
    }
    per_class = per_class_accuracy(test_pred, sets.test_y, len(sets.class_names))
    for name, acc in zip(sets.class_names, per_class, strict=True):
        metrics[f"test/accuracy/{key_part(name)}"] = float(acc)
    return metrics


def _ood_metrics(
    per_scorer: dict[str, dict[str, np.ndarray]], ood_sets: tuple[str, ...]
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for scorer, s in per_scorer.items():
        for ood in ood_sets:
            report = ood_report(s["test"], s[ood], name=f"{ood}-OOD")
            for key, value in report.items():
                metrics[f"ood/{ood}/{scorer}/{key}"] = value
        if len(s["near_val"]):  # absent when the split holds out no ood_val_classes
            metrics[f"val/ood/near/{scorer}/auroc"] = ood_report(
                s["val"], s["near_val"], name="validation near-OOD"
            )["auroc"]
    return metrics


def _per_object(
    sets: EvalSets, test_logits: np.ndarray, per_scorer: dict[str, dict[str, np.ndarray]]
) -> dict[str, float]:
    """Counts, object-level metrics (where the data has object ids) and CI half-widths
    that resample objects (images, where every image is its own object)."""
    test_groups, near_groups = sets.object_ids("test"), sets.object_ids("near")
    metrics = {
        "data/images/test": float(len(sets.test_x)),
        "data/images/near_ood": float(len(sets.near_x)),
        "data/images/near_ood_val": float(len(sets.near_val_x)),
    }
    if sets.has_objects:
        metrics["data/objects/test"] = float(len(set(test_groups)))
        metrics["data/objects/near_ood"] = float(len(set(near_groups)))
        near = {s: (v["test"], v["near"]) for s, v in per_scorer.items()}
        metrics |= object_metrics(test_logits, sets.test_y.numpy(), test_groups, near_groups, near)
    else:
        _say_no_objects(tuple(sets.class_names))
    headline_scores = per_scorer[HEADLINE_SCORER]
    prefix = HEADLINE_NEAR_OOD.removesuffix("/auroc")
    return metrics | halfwidths(
        test_logits,
        sets.test_y.numpy(),
        test_groups,
        (prefix, headline_scores["test"], headline_scores["near"]),
        near_groups,
        sets.has_objects,
    )


@functools.cache
def _say_no_objects(class_names: tuple[str, ...]) -> None:
    """Once per process and data (a compare evaluates many cells of one source)."""
    log.info(
        "object-level metrics (object/*, */object_auroc) are off: the data (classes %s) has "
        "no object ids (every image is its own object); CIs resample images",
        ", ".join(class_names),
    )


def headline(metrics: dict[str, float]) -> dict[str, float]:
    keys = ["val/accuracy", "test/accuracy", "object/accuracy"] + [
        f"ood/{ood}/{scorer}/{m}" for ood in OOD_SETS for scorer in SCORERS for m in ("auroc",)
    ]
    keys += [f"ood/near/{scorer}/object_auroc" for scorer in SCORERS]
    keys += [f"{CI}/{k}" for k in ("test/accuracy", "object/accuracy")]
    keys += [f"{CI}/{HEADLINE_NEAR_OOD}", f"{CI}/{OBJECT_NEAR_OOD}"]
    return {k: metrics[k] for k in keys if k in metrics}


def summary_markdown(summary: dict[str, float], title: str) -> str:
    rows = [f"# {title}", "", "| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v:.4f} |" for k, v in summary.items()]
    return "\n".join(rows) + "\n"


def _figures(
    sets: EvalSets,
    feats: dict[str, torch.Tensor],
    per_scorer: dict[str, dict[str, np.ndarray]],
    test_pred: torch.Tensor,
) -> dict[str, Figure]:
    num_classes = len(sets.class_names)
    figures = {
        "plots/confusion_matrix.png": confusion_matrix_figure(
            confusion_matrix(test_pred, sets.test_y, num_classes), sets.class_names
        )
    }
    for ood in sets.ood_sets:
        label = "near-OOD (held-out classes)" if ood == "near" else f"far-OOD ({sets.far_name})"
        figures[f"plots/roc_{ood}.png"] = roc_figure(
            {s: (v["test"], v[ood]) for s, v in per_scorer.items()}, title=f"ROC: test vs {label}"
        )
    for scorer, values in per_scorer.items():
        figures[f"plots/scores_{scorer}.png"] = score_histogram_figure(
            values["test"], values["near"], values.get("far"), title=f"{scorer} score"
        )
    groups = [sets.class_names[int(y)] for y in sets.test_y]
    groups += [f"near-OOD: {n}" for n in sets.near_names]
    parts = [feats["test"], feats["near"]]
    if sets.far_x is not None:
        groups += [f"far-OOD ({sets.far_name})"] * len(sets.far_x)
        parts.append(feats["far"])
    all_feats = torch.cat(parts)
    figures["plots/embedding.png"] = embedding_figure(all_feats, groups, method="pca")
    return figures
