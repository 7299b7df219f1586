"""From a frozen encoder to the study's numbers and pictures.

Used by `probe` (linear classifier on frozen SupCon features) and by `baseline`
(the cross-entropy network's own head), so both report under the same metric names:

    val/accuracy, test/accuracy, test/accuracy/<class>,
    ood/{near,far}/{knn,mahalanobis,msp,energy}/{auroc,fpr95,aupr_in,aupr_out},
    val/ood/near/{knn,mahalanobis,msp,energy}/auroc  (validation OOD: for selection only)

In-distribution is the positive class; every score is "higher = more in-distribution".
"""

from __future__ import annotations

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

SCORERS = ("knn", "mahalanobis", "msp", "energy")
# The study's headline near-OOD scorer: the steadiest across training seeds (README, "The
# study's instrument"), so a paired difference is resolved with few seeds. Its validation
# twin (held-out `ood_val_classes`) is what selection reads; the test value is only reported.
HEADLINE_SCORER = "mahalanobis"
HEADLINE_NEAR_OOD = f"ood/near/{HEADLINE_SCORER}/auroc"
SELECTION_NEAR_OOD = f"val/ood/near/{HEADLINE_SCORER}/auroc"
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
    the training split and chosen on validation), then four OOD scorers on two OOD sets."""
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
    num_classes = len(sets.class_names)
    metrics: dict[str, float] = {}
    if head is None:
        probe = train_linear_probe(
            feats["train"], sets.train_y, feats["val"], sets.val_y, num_classes, seed=seed
        )
        logits_fn: LogitsFn = probe.logits
        metrics["probe/weight_decay"] = probe.weight_decay
        metrics["probe/C"] = probe.C
    else:
        head = head.cpu().eval()

        def logits_fn(f: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return head(f.float()).float()

    logits = {name: logits_fn(f) for name, f in feats.items()}
    val_pred = logits["val"].argmax(1)
    test_pred = logits["test"].argmax(1)
    metrics["val/accuracy"] = accuracy(val_pred, sets.val_y)
    metrics["test/accuracy"] = accuracy(test_pred, sets.test_y)
    for name, acc in zip(
        sets.class_names, per_class_accuracy(test_pred, sets.test_y, num_classes), strict=True
    ):
        metrics[f"test/accuracy/{key_part(name)}"] = float(acc)

    maha = fit_mahalanobis(feats["train"], sets.train_y, covariance=covariance)
    scores = {
        "knn": lambda name: knn_score(feats["train"], feats[name], knn_k),
        "mahalanobis": lambda name: mahalanobis_score(maha, feats[name]),
        "msp": lambda name: msp_score(logits[name]),
        "energy": lambda name: energy_score(logits[name]),
    }
    per_scorer: dict[str, dict[str, np.ndarray]] = {}
    for scorer, fn in scores.items():
        per_scorer[scorer] = {name: fn(name) for name in feats if name != "train"}
        s = per_scorer[scorer]
        for ood in sets.ood_sets:
            report = ood_report(s["test"], s[ood], name=f"{ood}-OOD")
            for key, value in report.items():
                metrics[f"ood/{ood}/{scorer}/{key}"] = value
        if len(s["near_val"]):  # absent when the split holds out no ood_val_classes
            metrics[f"val/ood/near/{scorer}/auroc"] = ood_report(
                s["val"], s["near_val"], name="validation near-OOD"
            )["auroc"]
    evaluation = Evaluation(metrics=metrics, summary=headline(metrics))
    if plots:
        evaluation.figures = _figures(sets, feats, per_scorer, test_pred)
    return evaluation


def headline(metrics: dict[str, float]) -> dict[str, float]:
    keys = ["val/accuracy", "test/accuracy"] + [
        f"ood/{ood}/{scorer}/{m}" for ood in OOD_SETS for scorer in SCORERS for m in ("auroc",)
    ]
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
