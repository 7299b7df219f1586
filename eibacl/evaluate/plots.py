"""Evaluation figures.

Figures are built with the object-oriented API on an Agg canvas, never through
pyplot: nothing is shown, no global figure registry grows, and a figure is
freed as soon as it is dropped (``mlflow.log_figure(fig, ...)`` or
``fig.savefig(...)`` both work on it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from eibacl.evaluate.arrays import as_numpy
from eibacl.evaluate.ood_metrics import auroc, roc_curve

NEAR_PREFIX = "near-OOD"
FAR_PREFIX = "far-OOD"

_NEAR_MARKERS = ("x", "+", "1", "2", "3", "4")
_NEAR_GREYS = ("0.45", "0.6", "0.3", "0.7", "0.2", "0.55")
_FAR_MARKERS = (".", "s", "^", "v", "D", "P")


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def roc_figure(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str = "ROC") -> Figure:
    """One ROC curve per scorer (scikit-learn's display); each value is (id_scores,
    ood_scores), ID positive."""
    from sklearn.metrics import RocCurveDisplay

    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    for name, (ind, ood) in curves.items():
        fpr, tpr = roc_curve(as_numpy(ind), as_numpy(ood), name=name)
        RocCurveDisplay(fpr=fpr, tpr=tpr).plot(
            ax=ax,
            curve_kwargs={
                "drawstyle": "steps-post",
                "label": f"{name} (AUROC {auroc(ind, ood, name=name):.3f})",
            },
        )
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title, aspect="equal")
    ax.set_xlabel("false-positive rate (OOD accepted)")
    ax.set_ylabel("true-positive rate (ID accepted)")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def score_histogram_figure(
    id_scores: ArrayLike,
    near_scores: ArrayLike,
    far_scores: ArrayLike | None = None,
    title: str = "OOD scores",
    *,
    bins: int = 50,
) -> Figure:
    """Overlaid density histograms of ID, near-OOD and (optionally) far-OOD scores."""
    sets: list[tuple[str, np.ndarray, str]] = [
        ("in-distribution", as_numpy(id_scores).ravel(), "tab:blue"),
        (NEAR_PREFIX, as_numpy(near_scores).ravel(), "tab:orange"),
    ]
    if far_scores is not None:
        sets.append((FAR_PREFIX, as_numpy(far_scores).ravel(), "black"))
    finite = np.concatenate([s[np.isfinite(s)] for _, s, _ in sets])
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, scores, colour in sets:
        label = f"{name} (n={scores.size})"
        if name != "in-distribution" and scores.size and sets[0][1].size:
            label += f", AUROC {auroc(sets[0][1], scores, name=name):.3f}"
        ax.hist(
            scores, bins=edges, density=True, histtype="step", lw=1.5, color=colour, label=label
        )
    ax.set(title=title, xlabel="score (higher = more in-distribution)", ylabel="density")
    ax.legend(fontsize="small")
    return fig


def confusion_matrix_figure(
    cm: ArrayLike,
    class_names: Sequence[str],
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Figure:
    """Heat map, rows = true class; with `normalize`, each row sums to 1."""
    m = as_numpy(cm).astype(np.float64)
    k = len(class_names)
    if m.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {m.shape}, expected ({k}, {k})")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = new_figure(1.0 + 0.5 * max(k, 6), 0.5 + 0.5 * max(k, 6))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(m, display_labels=list(class_names)).plot(
        ax=ax,
        cmap="Blues",
        include_values=k <= 30,
        values_format=".2f" if normalize else ".0f",
        xticks_rotation=45,
        im_kw={"vmin": 0.0, "vmax": 1.0 if normalize else None},
        text_kw={"fontsize": "x-small"},
    )
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.tick_params(labelsize="small")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def _project_2d(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))  # D == 1 still gives 2 columns
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3.0)))
        tsne = TSNE(2, init="pca", perplexity=perplexity, random_state=seed)
        # Small maps: thread barriers cost more than they save (150 points: 15 s on
        # 2 busy cores with torch's and sklearn's OpenMP both loaded, 0.6 s on one).
        limit = threadpool_limits(1) if x.shape[0] < 1000 else contextlib.nullcontext()
        with limit:
            return tsne.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def embedding_figure(
    feats: ArrayLike,
    group_names: Sequence[str],
    *,
    method: str = "pca",
    max_points: int = 3000,
    seed: int = 0,
    title: str = "Test embedding",
) -> Figure:
    """2-D map of features, one scatter (legend entry) per group.

    `group_names[i]` names the group of point i: an ID class name (coloured),
    or a name starting with "near-OOD" (grey crosses) or "far-OOD" (black
    markers), e.g. "near-OOD: Shirt", "far-OOD (MNIST)". At most `max_points`
    points, sampled uniformly with `seed`, are projected.
    """
    x = as_numpy(feats).astype(np.float64)
    names = np.asarray(list(group_names), dtype=object)
    if x.ndim != 2 or x.shape[0] != names.shape[0]:
        raise ValueError(f"need (N, D) features and N group names, got {x.shape} and {names.size}")
    if x.shape[0] < 2:
        raise ValueError("an embedding map needs at least 2 points")
    if x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x, names = x[keep], names[keep]
    xy = _project_2d(x, method, seed)

    groups = list(dict.fromkeys(names.tolist()))  # first-appearance order
    near = [g for g in groups if g.startswith(NEAR_PREFIX)]
    far = [g for g in groups if g.startswith(FAR_PREFIX)]
    in_dist = [g for g in groups if g not in near and g not in far]
    cmap_name = "tab10" if len(in_dist) <= 10 else "tab20"
    fig = new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[cmap_name]
    for i, g in enumerate(in_dist):
        pts = xy[names == g]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.7, color=cmap(i % cmap.N), label=g)
    for i, g in enumerate(near):
        pts = xy[names == g]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=18,
            marker=_NEAR_MARKERS[i % len(_NEAR_MARKERS)],
            color=_NEAR_GREYS[i % len(_NEAR_GREYS)],
            linewidths=0.8,
            label=g,
        )
    for i, g in enumerate(far):
        pts = xy[names == g]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=6,
            marker=_FAR_MARKERS[i % len(_FAR_MARKERS)],
            color="black",
            alpha=0.6,
            label=g,
        )
    ax.set(title=f"{title} ({method.upper()})", xticks=[], yticks=[])
    ax.legend(fontsize="x-small", markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def bar_chart_figure(
    table: Mapping[str, Mapping[str, tuple[float, float]]],
    metric: str | Sequence[str],
    title: str | None = None,
    *,
    ylabel: str | None = None,
) -> Figure:
    """Grouped bars: one group per cell (outer key), one bar per metric, std error bars.

    `table[cell][metric] = (mean, std)`; a metric missing from a cell leaves a gap.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    cells = list(table)
    if not cells or not metrics:
        raise ValueError("bar chart needs at least one cell and one metric")
    width = 0.8 / len(metrics)
    fig = new_figure(max(4.0, 1.0 + 0.6 * len(cells) * len(metrics) ** 0.5), 4.0)
    ax = fig.add_subplot()
    centres = np.arange(len(cells))
    for j, m in enumerate(metrics):
        stats = [table[c].get(m, (np.nan, np.nan)) for c in cells]
        means = np.array([s[0] for s in stats], dtype=np.float64)
        stds = np.array([s[1] for s in stats], dtype=np.float64)
        offset = (j - (len(metrics) - 1) / 2.0) * width
        ax.bar(centres + offset, means, width, yerr=np.nan_to_num(stds), capsize=3, label=m)
    ax.set_xticks(centres, labels=cells, rotation=30, ha="right")
    ax.set(
        title=title or ", ".join(metrics),
        ylabel=ylabel or ("value" if len(metrics) > 1 else metrics[0]),
    )
    if len(metrics) > 1:
        ax.legend(fontsize="small")
    return fig


def training_curves_figure(curves: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """One panel per metric ((epoch, value) pairs), e.g. train/loss and val/knn_accuracy:
    the picture a pretrain run shows without a probe."""
    fig = new_figure(4.0 * max(1, len(curves)), 3.2)
    for i, (name, points) in enumerate(curves.items(), start=1):
        ax = fig.add_subplot(1, max(1, len(curves)), i)
        steps, values = zip(*sorted(points), strict=True) if points else ((), ())
        ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
    return fig
