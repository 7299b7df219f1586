from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Polygon, Rectangle

from eibacl.evaluate.ood_metrics import auroc
from eibacl.evaluate.plots import (
    bar_chart_figure,
    confusion_matrix_figure,
    embedding_figure,
    roc_figure,
    score_histogram_figure,
)

RNG = np.random.default_rng(0)


def _png_ok(fig: Figure, tmp_path: Path) -> None:
    path = tmp_path / "figure.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_no_pyplot_figures_are_left_open(tmp_path: Path) -> None:
    before = plt.get_fignums()
    fig = roc_figure({"knn": (RNG.normal(1, 1, 50), RNG.normal(0, 1, 40))})
    _png_ok(fig, tmp_path)
    assert plt.get_fignums() == before


def test_roc_figure_lines_and_legend(tmp_path: Path) -> None:
    ind, ood = RNG.normal(1, 1, 100), RNG.normal(0, 1, 80)
    curves = {"knn": (ind, ood), "msp": (ind * 0.5, ood), "energy": (ind, ood + 0.5)}
    fig = roc_figure(curves, title="near-OOD")
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 3 + 1  # one per scorer + chance diagonal
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == f"knn (AUROC {auroc(ind, ood):.3f})"
    assert ax.get_title() == "near-OOD"
    # the knn curve ends at (1, 1) and is monotone
    x, y = ax.get_lines()[0].get_data()
    assert x[-1] == 1.0 and y[-1] == 1.0 and np.all(np.diff(x) >= 0)
    _png_ok(fig, tmp_path)


@pytest.mark.parametrize("with_far", [False, True])
def test_score_histogram(tmp_path: Path, with_far: bool) -> None:
    far = RNG.normal(-2, 1, 60) if with_far else None
    fig = score_histogram_figure(RNG.normal(1, 1, 100), RNG.normal(0, 1, 80), far, "knn")
    (ax,) = fig.axes
    polys = [p for p in ax.patches if isinstance(p, Polygon)]
    assert len(polys) == (3 if with_far else 2)
    assert len(ax.get_legend().get_texts()) == len(polys)
    _png_ok(fig, tmp_path)


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix_figure(tmp_path: Path, normalize: bool) -> None:
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    fig = confusion_matrix_figure(cm, ["a", "b", "c"], normalize=normalize)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # matrix + colour bar
    image = ax.get_images()[0].get_array()
    expected = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    np.testing.assert_allclose(image, expected)
    assert len(ax.texts) == 9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    _png_ok(fig, tmp_path)
    with pytest.raises(ValueError, match="expected"):
        confusion_matrix_figure(cm, ["a", "b"])


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_figure_groups(tmp_path: Path, method: str) -> None:
    n = 40
    feats = RNG.normal(size=(5 * n, 16))
    names = (
        ["T-shirt"] * n
        + ["Trouser"] * n
        + ["Bag"] * n
        + ["near-OOD: Shirt"] * n
        + ["far-OOD (MNIST)"] * n
    )
    fig = embedding_figure(feats, names, method=method, max_points=150, seed=1)
    (ax,) = fig.axes
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 5
    assert sum(len(c.get_offsets()) for c in scatters) == 150
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["T-shirt", "Trouser", "Bag", "near-OOD: Shirt", "far-OOD (MNIST)"]
    far = scatters[4].get_facecolors()
    np.testing.assert_allclose(far[:, :3], 0.0)  # black
    near = scatters[3].get_edgecolors()
    assert np.allclose(near[:, 0], near[:, 1]) and 0.0 < near[0, 0] < 1.0  # grey
    _png_ok(fig, tmp_path)


def test_embedding_pca_separates_two_clusters() -> None:
    feats = np.r_[np.zeros((20, 5)), np.ones((20, 5)) * 10] + RNG.normal(0, 0.1, (40, 5))
    fig = embedding_figure(feats, ["a"] * 20 + ["far-OOD"] * 20)
    a, b = (c.get_offsets()[:, 0] for c in fig.axes[0].collections)
    assert abs(np.mean(a) - np.mean(b)) > 10 * (np.std(a) + np.std(b))
    with pytest.raises(ValueError, match="method"):
        embedding_figure(feats, ["a"] * 40, method="umap")
    with pytest.raises(ValueError, match="group names"):
        embedding_figure(feats, ["a"] * 39)


def test_bar_chart_grouped_with_error_bars(tmp_path: Path) -> None:
    table = {
        "supcon/none": {"near_auroc": (0.78, 0.016), "far_auroc": (0.86, 0.04)},
        "supcon/dafusion": {"near_auroc": (0.80, 0.02), "far_auroc": (0.90, 0.03)},
        "ce/none": {"near_auroc": (0.75, 0.01)},  # far missing: gap
    }
    fig = bar_chart_figure(table, ["near_auroc", "far_auroc"])
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 3 * 2
    assert [b.get_height() for b in bars[:3]] == pytest.approx([0.78, 0.80, 0.75])
    assert len(ax.containers) == 2 * 2  # a BarContainer and an ErrorbarContainer per metric
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table)
    _png_ok(fig, tmp_path)

    single = bar_chart_figure(table, "near_auroc")
    assert len([p for p in single.axes[0].patches if isinstance(p, Rectangle)]) == 3
    assert single.axes[0].get_ylabel() == "near_auroc"
