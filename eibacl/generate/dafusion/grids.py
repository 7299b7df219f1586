"""Sample grids of synthetic images, to log as run artifacts.

Figures are built with the object API (``matplotlib.figure.Figure``), not pyplot: no global
figure state, nothing to close, and it renders with Agg on machines without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure


def _as_hwc(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    arr = image.detach().cpu()
    if arr.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    arr = arr.numpy()
    if arr.shape[0] == 1:
        return arr[0], "gray"
    return arr.transpose(1, 2, 0), None


def _grid(
    rows: Sequence[Sequence[torch.Tensor]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str | None,
    cell_inches: float,
) -> Figure:
    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=0)
    fig = Figure(figsize=(1.0 + cell_inches * max(n_cols, 1), 0.4 + cell_inches * max(n_rows, 1)))
    axes = fig.subplots(max(n_rows, 1), max(n_cols, 1), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            arr, cmap = _as_hwc(image)
            axes[r, c].imshow(arr, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        if r < len(row_labels):
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    for c, label in enumerate(col_labels[:n_cols]):
        axes[0, c].set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def variants_grid_figure(
    sources: torch.Tensor,
    variants_by_strength: Mapping[float, torch.Tensor],
    class_names: Sequence[str],
    *,
    title: str | None = "In-distribution variants by strength",
    cell_inches: float = 1.0,
) -> Figure:
    """One row per source (one per class): the source, then its variant at each strength.

    ``sources`` uint8 N×C×H×W; ``variants_by_strength[s]`` the N variants at strength s;
    ``class_names[i]`` labels row i.
    """
    strengths = sorted(variants_by_strength)
    for s in strengths:
        if variants_by_strength[s].shape[0] != sources.shape[0]:
            raise ValueError(f"strength {s}: need one variant per source ({sources.shape[0]})")
    if len(class_names) != sources.shape[0]:
        raise ValueError("need one class name (row label) per source")
    rows = [
        [sources[i]] + [variants_by_strength[s][i] for s in strengths]
        for i in range(sources.shape[0])
    ]
    cols = ["source"] + [f"t0={s:g}" for s in strengths]
    return _grid(rows, list(class_names), cols, title, cell_inches)


def near_ood_grid_figure(
    sources: torch.Tensor,
    variants_by_recipe: Mapping[str, torch.Tensor],
    *,
    source_names: Sequence[str] | None = None,
    title: str | None = "Near-OOD variants by recipe",
    cell_inches: float = 1.0,
) -> Figure:
    """First row the sources, then one row per recipe with its variant of each source."""
    for recipe, images in variants_by_recipe.items():
        if images.shape[0] != sources.shape[0]:
            raise ValueError(f"recipe {recipe!r}: need one variant per source")
    rows = [list(sources)] + [list(v) for v in variants_by_recipe.values()]
    labels = ["source"] + list(variants_by_recipe)
    cols = list(source_names) if source_names is not None else []
    return _grid(rows, labels, cols, title, cell_inches)


def rows_grid_figure(
    rows: Sequence[Sequence[torch.Tensor]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str | None = None,
    cell_inches: float = 1.0,
) -> Figure:
    """A grid of uint8 C×H×W images given row by row (e.g. an image beside its nearest real
    images), with row and column labels."""
    return _grid(rows, row_labels, col_labels, title, cell_inches)
