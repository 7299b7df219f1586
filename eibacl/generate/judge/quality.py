"""Is the synthetic set what it claims to be? A check with a classifier trained on real data.

A small CNN is trained on the real training split only. It then labels the synthetic
images: in-distribution variants should mostly keep their own class (faithful), near-OOD
variants should *not* look like their source class and should get less confident,
higher-entropy predictions than real validation images. The prototype's weak near-OOD
recipe (50/50 mix at 0.75) was classified as the source class 84% of the time, i.e. it
was not near-OOD at all; this module makes that visible for every recipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eibacl.keys import key_part


class ReferenceClassifier(nn.Module):
    """A small CNN for uint8 images (any size, any channel count)."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(channels, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1.0
        return self.head(self.features(x))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Softmax probabilities (N×K, on CPU) for uint8 images."""
        self.eval()
        device = next(self.parameters()).device
        out = [
            F.softmax(self(images[i : i + batch_size].to(device)).float(), dim=1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
        if not out:
            return torch.zeros(0, self.head.out_features)
        return torch.cat(out)


def train_reference_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 15,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    lr: float = 3e-3,
    progress: bool = False,
) -> ReferenceClassifier:
    """Train `ReferenceClassifier` on real uint8 images (flip + 2-px shift augmentation)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.shape != (images.shape[0],) or images.shape[0] == 0:
        raise ValueError("need one label per image and at least one image")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReferenceClassifier(images.shape[1], num_classes).to(device)
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(epochs * steps_per_epoch, 1)
    )
    data = images.float() / 127.5 - 1.0
    model.train()
    for _ in tqdm(range(epochs), desc="reference classifier", disable=not progress, leave=False):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            x = data[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def _stats(prefix: str, probs: torch.Tensor, out: dict[str, float]) -> None:
    out[f"{prefix}/count"] = float(probs.shape[0])
    if probs.shape[0]:
        out[f"{prefix}/max_softmax_mean"] = float(probs.max(dim=1).values.mean())
        out[f"{prefix}/entropy_mean"] = float(_entropy(probs).mean())


def recipe_key(recipe: str) -> str:
    # "class-mix@0.8" -> "class-mix/s0.80" ('@' is not allowed in MLflow metric names)
    name, sep, value = recipe.partition("@")
    return f"{key_part(name)}/s{float(value):.2f}" if sep else key_part(name)


def synthetic_quality(
    classifier: nn.Module,
    syn_images: torch.Tensor,
    syn_labels: torch.Tensor,
    kinds: Sequence[str],
    recipes: Sequence[str],
    *,
    strengths: Sequence[float] | torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    real_val_images: torch.Tensor | None = None,
    real_val_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics (``quality/...``) of a synthetic set under a classifier trained on real data.

    ``syn_labels`` are the source classes (also for near-OOD rows). Keys:
    ``quality/id/own_class_rate`` (+ ``/s0.50`` per strength when ``strengths`` given),
    ``quality/{id,near_ood,real_val}/{max_softmax_mean,entropy_mean,count}``,
    ``quality/near_ood/source_class_rate`` and ``quality/near_ood/<recipe>/...``,
    ``quality/real_val/accuracy`` when ``real_val_labels`` given. With ``class_weights``
    (the N×K conditioning, see `eibacl.generate.dafusion.augment.conditioning_weights`) also
    ``quality/near_ood[/<recipe>]/other_class_rate``: the share classified as a class it was
    conditioned on other than the source's, i.e. that simply became an image of another
    known class. A faithful set has a high ID own-class rate; a useful near-OOD set has low
    source- and other-class rates and a max-softmax below the real validation images'.
    """
    n = syn_images.shape[0]
    labels, strength_t, weights = _checked(n, syn_labels, kinds, recipes, strengths, class_weights)
    predict = getattr(classifier, "predict_proba", None)
    if predict is None:
        raise TypeError("classifier needs a predict_proba(images) method")
    probs = predict(syn_images) if n else torch.zeros(0, 1)
    pred = probs.argmax(dim=1)
    own = pred == labels
    other = None
    if weights is not None and n:
        other = (weights.gather(1, pred[:, None])[:, 0] > 0) & ~own
    is_id = torch.tensor([k == "id" for k in kinds], dtype=torch.bool)
    out: dict[str, float] = {}
    _id_rates(out, probs, own, is_id, strength_t)
    _near_ood_rates(out, probs, own, other, ~is_id, kinds, recipes)
    if real_val_images is not None:
        _real_val(out, predict(real_val_images), real_val_labels)
    return out


def _checked(
    n: int,
    syn_labels: torch.Tensor,
    kinds: Sequence[str],
    recipes: Sequence[str],
    strengths: Sequence[float] | torch.Tensor | None,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Labels, strengths and conditioning weights as tensors, each checked against ``n``."""
    labels = torch.as_tensor(syn_labels, dtype=torch.int64).cpu()
    if labels.shape != (n,) or len(kinds) != n or len(recipes) != n:
        raise ValueError("syn_images, syn_labels, kinds and recipes must have the same length")
    unknown = set(kinds) - {"id", "near_ood"}
    if unknown:
        raise ValueError(f"kinds must be 'id' or 'near_ood', got {sorted(unknown)}")
    strength_t = None
    if strengths is not None:
        strength_t = torch.as_tensor(strengths, dtype=torch.float32)
        if strength_t.shape != (n,):
            raise ValueError("need one strength per synthetic image")
    weights = None
    if class_weights is not None:
        if class_weights.shape[0] != n:
            raise ValueError("need one class_weights row per synthetic image")
        weights = class_weights.detach().float().cpu()
    return labels, strength_t, weights


def _id_rates(
    out: dict[str, float],
    probs: torch.Tensor,
    own: torch.Tensor,
    is_id: torch.Tensor,
    strength_t: torch.Tensor | None,
) -> None:
    _stats("quality/id", probs[is_id], out)
    if is_id.any():
        out["quality/id/own_class_rate"] = float(own[is_id].float().mean())
        if strength_t is not None:
            for s in sorted(set(strength_t[is_id].tolist())):
                sel = is_id & torch.isclose(strength_t, torch.tensor(s))
                out[f"quality/id/own_class_rate/s{s:.2f}"] = float(own[sel].float().mean())


def _near_ood_rates(
    out: dict[str, float],
    probs: torch.Tensor,
    own: torch.Tensor,
    other: torch.Tensor | None,
    ood: torch.Tensor,
    kinds: Sequence[str],
    recipes: Sequence[str],
) -> None:
    _stats("quality/near_ood", probs[ood], out)
    if not ood.any():
        return
    out["quality/near_ood/source_class_rate"] = float(own[ood].float().mean())
    if other is not None:
        out["quality/near_ood/other_class_rate"] = float(other[ood].float().mean())
    for recipe in sorted({r for r, k in zip(recipes, kinds) if k == "near_ood"}):
        sel = ood & torch.tensor([r == recipe for r in recipes], dtype=torch.bool)
        prefix = f"quality/near_ood/{recipe_key(recipe)}"
        _stats(prefix, probs[sel], out)
        out[f"{prefix}/source_class_rate"] = float(own[sel].float().mean())
        if other is not None:
            out[f"{prefix}/other_class_rate"] = float(other[sel].float().mean())


def _real_val(out: dict[str, float], real: torch.Tensor, labels: torch.Tensor | None) -> None:
    _stats("quality/real_val", real, out)
    if labels is not None and real.shape[0]:
        truth = torch.as_tensor(labels, dtype=torch.int64).cpu()
        out["quality/real_val/accuracy"] = float((real.argmax(dim=1) == truth).float().mean())
