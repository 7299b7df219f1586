"""The judge of synthetic images: OOD detectors fitted on real in-distribution data only.

A classifier's argmax cannot tell a near-OOD image from noise: both can "leave the source
class". The judge asks what a synthetic image is *for*: where it falls on an OOD score
between real in-distribution images and far-away images. It works on images alone, so
any generator (the embedded DDPM, Stable Diffusion) is judged the same way.

- Features: the penultimate layer of the reference CNN of `eibacl.generate.judge.quality`,
  trained on the real training split only (cheap: seconds on a CPU).
- Scores (higher = more in-distribution): kNN distance on normalised features (Sun et al.
  2022; k = 1, as the study's few-shot default) and Mahalanobis distance to the nearest
  class mean with a shared covariance (Lee et al. 2018; Ledoit-Wolf shrinkage by default),
  both fitted on real training features.
- Calibration: the threshold of each score is the one that keeps 95% of the real ID
  *validation* images (95% TPR); "stays in-distribution" = at or above it.
- The near-OOD band: past the ID threshold, yet no farther out than real near-OOD images
  are: at or above the score that 95% of the real *validation* near-OOD images (the
  `ood_val_classes`, held out for selection) reach (NPOS / BOOD keep boundary samples).
  Without validation OOD classes the lower edge falls back to the median score of
  pixel-shuffled training images (same intensities, no structure), a much looser edge:
  measured on the default study, even MNIST digits score above it. Neither edge reads a
  test or far-OOD set.
- Memorisation: an image is a near-duplicate of a real one when its nearest training (or,
  once added with `add_pool`, pool) image lies at most as far, on L2-normalised features, as
  the closest `MEMORISED_QUANTILE` of real pairs: each training image's distance to its
  nearest *other* training image, that low quantile (real near-duplicate pairs); with a pool,
  also no farther than that quantile of real validation images' distances to the nearest
  training or pool image (the pool is denser than the shots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from eibacl.evaluate.ood_metrics import auroc
from eibacl.evaluate.plots import new_figure
from eibacl.evaluate.scorers import (
    DEFAULT_COVARIANCE,
    MahalanobisModel,
    fit_mahalanobis,
    knn_score,
    mahalanobis_score,
)
from eibacl.generate.dafusion.grids import rows_grid_figure
from eibacl.generate.judge.quality import (
    ReferenceClassifier,
    recipe_key,
    train_reference_classifier,
)

JUDGE_FILE = "judge.npz"
JUDGE_SCORERS = ("knn", "mahalanobis")
PRIMARY_SCORER = "mahalanobis"  # the one the filter uses; see `verdicts`
ID_TPR = 0.95
KNN_K = 1
MEMORISED_QUANTILE = 0.05


def embed_images(
    classifier: ReferenceClassifier, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """The judge's features (the reference CNN's penultimate layer) of uint8 or [-1, 1]
    images."""
    classifier.eval()
    device = next(classifier.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(device)
            x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x
            out.append(classifier.features(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def nearest(
    queries: torch.Tensor, references: torch.Tensor, k: int = 1, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each N x k: the k nearest rows of `references` to each row of
    `queries` (Euclidean, ascending); `exclude_self` skips row i of a set queried on itself."""
    dists, idx = [], []
    for start in range(0, queries.shape[0], 1024):
        d = torch.cdist(queries[start : start + 1024].double(), references.double())
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        top = torch.topk(d, k, dim=1, largest=False)
        dists.append(top.values.float())
        idx.append(top.indices)
    if not dists:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(dists), torch.cat(idx)


def memorisation_threshold(feats: torch.Tensor, quantile: float = MEMORISED_QUANTILE) -> float:
    """The `quantile` of real-to-real nearest-neighbour distances among `feats` (normalised):
    how close real near-duplicate pairs come."""
    if feats.shape[0] < 2:
        raise ValueError("the memorisation threshold needs at least two real training images")
    dists, _ = nearest(feats, feats, exclude_self=True)
    return float(np.quantile(dists[:, 0].numpy(), quantile))


@dataclass
class Judge:
    classifier: ReferenceClassifier
    train_feats: torch.Tensor
    maha: MahalanobisModel
    val_scores: dict[str, np.ndarray]
    far_scores: dict[str, np.ndarray]
    near_scores: dict[str, np.ndarray] | None = None
    # Real images a synthetic one may duplicate (training, then pool), their normalised
    # features, and the distance at or under which it counts as memorised.
    references: torch.Tensor | None = None
    reference_feats: torch.Tensor | None = None
    memorised_threshold: float = 0.0

    def embed(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        feats = embed_images(self.classifier, images, batch_size)
        return feats if len(feats) else torch.zeros(0, self.train_feats.shape[1])

    def closest_real(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Each image's distance to its nearest real reference image, and that image's row."""
        assert self.reference_feats is not None, "fit_judge sets the references"
        feats = torch.nn.functional.normalize(self.embed(images), dim=1)
        dists, idx = nearest(feats, self.reference_feats)
        return dists[:, 0].numpy(), idx[:, 0].numpy()

    def scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return self._scores(self.embed(images))

    def _scores(self, feats: torch.Tensor) -> dict[str, np.ndarray]:
        if feats.shape[0] == 0:
            return {s: np.zeros(0) for s in JUDGE_SCORERS}
        return {
            "knn": knn_score(self.train_feats, feats, KNN_K),
            "mahalanobis": mahalanobis_score(self.maha, feats),
        }

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long)
        return self.classifier.predict_proba(images).argmax(dim=1)

    def id_threshold(self, scorer: str) -> float:
        """Score that keeps `ID_TPR` of the real ID validation images."""
        return float(np.quantile(self.val_scores[scorer], 1.0 - ID_TPR))

    def band_edge(self, scorer: str) -> float:
        """The band's lower edge: the score 95% of the real validation near-OOD images reach,
        else the median score of pixel-shuffled training images."""
        if self.near_scores is not None and len(self.near_scores[scorer]):
            return float(np.quantile(self.near_scores[scorer], 1.0 - ID_TPR))
        return float(np.median(self.far_scores[scorer]))


def shuffled_pixels(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each image's pixels permuted (channels together): its intensities, no structure."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    order = torch.stack([torch.randperm(h * w, generator=gen) for _ in range(n)])
    return torch.gather(flat, 2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def fit_judge(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    classifier: ReferenceClassifier | None = None,
    near_val_x: torch.Tensor | None = None,
    covariance: str = DEFAULT_COVARIANCE,
) -> Judge:
    """Fit the judge on real ID training images; calibrate on real ID validation images;
    `near_val_x` (real validation near-OOD images) sets the band's lower edge. The
    Mahalanobis covariance is shrunk like the evaluation's (`covariance`): the reference
    CNN's features outnumber the few-shot training images too."""
    if len(val_x) == 0:
        raise ValueError("the judge needs real validation images to calibrate its threshold")
    classifier = classifier or train_reference_classifier(
        train_x, train_y, num_classes, device=device, seed=seed
    )
    judge = Judge(classifier, torch.zeros(0), None, {}, {})  # type: ignore[arg-type]
    train_feats = judge.embed(train_x)
    judge.train_feats = train_feats
    judge.references = train_x
    judge.reference_feats = torch.nn.functional.normalize(train_feats, dim=1)
    judge.memorised_threshold = memorisation_threshold(judge.reference_feats)
    judge.maha = fit_mahalanobis(train_feats, train_y, covariance=covariance)
    judge.val_scores = judge.scores(val_x)
    judge.far_scores = judge.scores(shuffled_pixels(train_x, seed))
    if near_val_x is not None and len(near_val_x):
        judge.near_scores = judge.scores(near_val_x)
    return judge


def add_pool(
    judge: Judge, pool_images: torch.Tensor, calibration: torch.Tensor | None = None
) -> None:
    """Count near-duplicates of the unlabelled pool's images as memorised too.

    A pool of thousands of images lies far denser than the few shots, so the training set's
    threshold would call many *distinct* real images copies of some pool image. With
    `calibration` (real images that are no copies, e.g. the ID validation images) the
    threshold becomes the `MEMORISED_QUANTILE` of their distances to the nearest training or
    pool image, if that is tighter: at the pool's density, as close as distinct real images
    come."""
    feats = torch.nn.functional.normalize(judge.embed(pool_images), dim=1)
    assert judge.references is not None and judge.reference_feats is not None
    judge.references = torch.cat([judge.references, pool_images.to(judge.references.dtype)])
    judge.reference_feats = torch.cat([judge.reference_feats, feats])
    if calibration is not None and len(calibration):
        dists, _ = judge.closest_real(calibration)
        dense = float(np.quantile(dists, MEMORISED_QUANTILE))
        judge.memorised_threshold = min(judge.memorised_threshold, dense)


def memorised(judge: Judge, images: torch.Tensor) -> np.ndarray:
    """Per image: whether it is a near-duplicate of a real training (or pool) image."""
    return judge.closest_real(images)[0] <= judge.memorised_threshold


def closest_pairs_figure(judge: Judge, images: torch.Tensor, count: int = 8) -> Figure:
    """The `count` images closest to a real one, each beside that real image, with the
    distance and the memorisation threshold in the labels."""
    assert judge.references is not None
    dists, idx = judge.closest_real(images)
    order = np.argsort(dists, kind="stable")[:count]
    rows = [[images[i], judge.references[idx[i]]] for i in order]
    labels = [
        f"d={dists[i]:.3f}" + (" mem" if dists[i] <= judge.memorised_threshold else "")
        for i in order
    ]
    title = f"Closest to a real image (memorised: d <= {judge.memorised_threshold:.3f})"
    return rows_grid_figure(rows, labels, ["synthetic", "nearest real"], title=title)


@dataclass
class Verdicts:
    """Per synthetic image: its scores, whether it stays ID, keeps its class, and whether it
    lies in the near-OOD band (past the ID threshold, not past the band's lower edge)."""

    scores: dict[str, np.ndarray]
    stays_id: np.ndarray
    keeps_class: np.ndarray
    in_band: np.ndarray


def save_verdicts(path: Path, v: Verdicts) -> None:
    """Per-image verdicts as plain arrays (npz, no pickle), in the set's manifest order."""
    arrays = {f"score_{k}": a for k, a in v.scores.items()}
    np.savez(path, stays_id=v.stays_id, keeps_class=v.keeps_class, in_band=v.in_band, **arrays)


def load_verdicts(path: Path) -> Verdicts:
    with np.load(path, allow_pickle=False) as data:
        scores = {k[len("score_") :]: data[k] for k in data.files if k.startswith("score_")}
        return Verdicts(scores, data["stays_id"], data["keeps_class"], data["in_band"])


def verdicts(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> Verdicts:
    """The judge's per-image verdicts with the primary scorer (`PRIMARY_SCORER`)."""
    scores = judge.scores(images)
    s = scores[PRIMARY_SCORER]
    stays = s >= judge.id_threshold(PRIMARY_SCORER)
    band = (~stays) & (s > judge.band_edge(PRIMARY_SCORER))
    keeps = (judge.predict(images) == torch.as_tensor(labels)).numpy()
    return Verdicts(scores, stays, keeps, band)


def _group_metrics(
    judge: Judge, prefix: str, scores: Mapping[str, np.ndarray], out: dict[str, float]
) -> None:
    n = len(next(iter(scores.values())))
    out[f"{prefix}/count"] = float(n)
    if n == 0:
        return
    for scorer in JUDGE_SCORERS:
        s = scores[scorer]
        out[f"{prefix}/{scorer}/auroc"] = auroc(judge.val_scores[scorer], s, name=prefix)
        out[f"{prefix}/{scorer}/ood_rate"] = float(np.mean(s < judge.id_threshold(scorer)))
        band = (s < judge.id_threshold(scorer)) & (s > judge.band_edge(scorer))
        out[f"{prefix}/{scorer}/band_rate"] = float(np.mean(band))


def judge_report(
    judge: Judge,
    groups: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """`judge/<group>/...` metrics for named groups of images (labels where the group has a
    class to keep, e.g. ID variants): AUROC of real ID validation vs the group, the share
    past the 95%-TPR threshold (`ood_rate`), the share in the near-OOD band (`band_rate`),
    the share of near-duplicates of a real training or pool image (`memorised_rate`),
    and for labelled groups the share that stays ID and keeps its class (`kept_rate`).
    Also returns the scores per group, for the figure."""
    out: dict[str, float] = {}
    all_scores: dict[str, dict[str, np.ndarray]] = {}
    for name, (images, labels) in groups.items():
        scores = judge.scores(images)
        all_scores[name] = scores
        prefix = f"judge/{name}"
        _group_metrics(judge, prefix, scores, out)
        if len(images) and judge.reference_feats is not None:
            out[f"{prefix}/memorised_rate"] = float(np.mean(memorised(judge, images)))
        if labels is not None and len(images):
            keeps = (judge.predict(images) == torch.as_tensor(labels)).numpy()
            stays = scores[PRIMARY_SCORER] >= judge.id_threshold(PRIMARY_SCORER)
            out[f"{prefix}/keeps_class_rate"] = float(np.mean(keeps))
            out[f"{prefix}/kept_rate"] = float(np.mean(keeps & stays))
    return out, all_scores


def judge_figure(
    judge: Judge, scores: Mapping[str, Mapping[str, np.ndarray]], scorer: str = PRIMARY_SCORER
) -> Figure:
    """Histograms of one score on one axis: real ID validation, then every group."""
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    everything = [judge.val_scores[scorer]] + [g[scorer] for g in scores.values() if len(g[scorer])]
    values = np.concatenate(everything)
    lo, hi = np.quantile(values, [0.005, 1.0])
    bins = np.linspace(lo, hi, 50)
    ax.hist(
        judge.val_scores[scorer],
        bins=bins,
        density=True,
        histtype="stepfilled",
        alpha=0.35,
        label=f"real ID validation (n={len(judge.val_scores[scorer])})",
        color="0.5",
    )
    for name, group in scores.items():
        s = group[scorer]
        if len(s):
            ax.hist(
                np.clip(s, lo, hi),
                bins=bins,
                density=True,
                histtype="step",
                linewidth=1.4,
                label=f"{name} (n={len(s)})",
            )
    ax.axvline(
        judge.id_threshold(scorer),
        color="k",
        linestyle="--",
        linewidth=1,
        label=f"ID threshold ({ID_TPR:.0%} TPR)",
    )
    ax.axvline(
        judge.band_edge(scorer),
        color="k",
        linestyle=":",
        linewidth=1,
        label="band edge: "
        + ("95% of real validation near-OOD" if judge.near_scores is not None else "shuffled"),
    )
    ax.set(
        xlabel=f"{scorer} score (higher = more in-distribution)",
        ylabel="density",
        title="The judge: where synthetic images fall between real ID and far-away",
    )
    ax.legend(fontsize=7, loc="upper left")
    return fig


def synthetic_groups(
    images: torch.Tensor,
    labels: torch.Tensor,
    kinds: Sequence[str],
    recipes: Sequence[str],
    strengths: torch.Tensor,
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Named groups of a synthetic set: `id`, `id/s0.50` per strength, `near_ood` and
    `near_ood/<recipe>` per recipe (keys are valid MLflow key parts)."""
    kinds_t = np.array(kinds)
    groups: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    is_id = torch.from_numpy(kinds_t == "id")
    if is_id.any():
        groups["id"] = (images[is_id], labels[is_id])
        for s in sorted(set(strengths[is_id].tolist())):
            sel = is_id & torch.isclose(strengths, torch.tensor(s, dtype=strengths.dtype))
            groups[f"id/s{s:.2f}"] = (images[sel], labels[sel])
    ood = ~is_id
    if ood.any():
        groups["near_ood"] = (images[ood], None)
        for recipe in sorted({r for r, k in zip(recipes, kinds) if k != "id"}):
            sel = ood & torch.from_numpy(np.array([r == recipe for r in recipes]))
            groups[f"near_ood/{recipe_key(recipe)}"] = (images[sel], None)
    return groups
