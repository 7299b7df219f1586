"""Every parameter of every entry point, with its one default.

The dataclasses below are the single source of truth: the Python API takes them,
`entrypoints/` parses command lines into them, and `MLproject` is generated from
them (`python -m eibacl.mlproject`; a test fails when the file is stale).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class ConfigError(ValueError):
    """A parameter value a user gave is invalid; the message names it and the fix."""


def param(default: Any, help: str, volatile: bool = False) -> Any:  # noqa: A002 - argparse's
    """A parameter with its default and help. `volatile`: it changes where or how visibly a
    run computes (device, progress bars, resume, registration), never what it computes:
    such parameters are left out of the digest that finds a finished run to reuse, may
    differ when a run is resumed, and do not tie a tune study's trials together."""
    metadata = {"help": help} | ({"volatile": True} if volatile else {})
    return field(default=default, metadata=metadata)


def volatile_fields(config_cls: type) -> tuple[str, ...]:
    """The parameters of `config_cls` marked `volatile` (see `param`)."""
    return tuple(f.name for f in dataclasses.fields(config_cls) if f.metadata.get("volatile"))


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false")


def parse_int(text: str) -> int:
    """Accept '100' and '100.0' (MLflow passes numbers as typed by the user)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def field_type(field: dataclasses.Field) -> Callable[[str], Any]:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    return {"int": parse_int, "float": float, "bool": parse_bool}.get(kind, str)


def config_from_params(config_cls: type[T], params: Mapping[str, str]) -> T:
    """The `config_cls` a run was made with, from its logged (text) parameters; fields the
    run did not log keep their defaults."""
    values = {
        f.name: field_type(f)(params[f.name])
        for f in dataclasses.fields(config_cls)
        if f.name in params
    }
    return config_cls(**values)


@dataclass
class DataConfig:
    data: str = param(
        "fashion-mnist",
        "Image source: 'fashion-mnist' or 'folder:<path>' (one sub-folder per class).",
    )
    id_classes: str = param(
        "",
        "In-distribution classes: comma-separated names, a count drawn at random, "
        "or empty for every class not held out.",
    )
    ood_classes: str = param(
        "Pullover,Shirt,Ankle boot",
        "Held-out near-OOD classes: comma-separated names, or a count drawn at random.",
    )
    ood_val_classes: str = param(
        "auto",
        "Held-out classes for validation-time OOD only (selection: knn_k, registry tie-break, "
        "tune), disjoint from ood_classes: names, a count, '' for none, or 'auto' "
        "(Coat,Sandal where the data has them, as Fashion-MNIST does; else one class drawn at "
        "random when at least two in-distribution classes remain; else none).",
    )
    shots: int = param(50, "Training images per in-distribution class (few-shot).")
    val_per_class: int = param(100, "Validation images per in-distribution class.")
    test_per_class: int = param(0, "Test images per class (0 = all available).")
    test_fraction: float = param(
        0.2, "Share of objects per class used for test when the source has no test split."
    )
    image_size: int = param(32, "Side length in pixels images are resized to.")
    split_seed: int = param(0, "Seed of the class and image split (same split across seeds).")
    skip_corrupt: bool = param(False, "Skip unreadable images (counted) instead of failing.")
    masks: str = param(
        "auto",
        "Object masks of folder data (masks/<class>/...): auto (use where present; images "
        "without one are used whole and counted), required (a missing mask is an error), off.",
    )

    def validate(self) -> None:
        _require(self.shots >= 1, "shots", self.shots, "use shots >= 1")
        _require(self.val_per_class >= 1, "val_per_class", self.val_per_class, "use >= 1")
        _require(self.test_per_class >= 0, "test_per_class", self.test_per_class, "use >= 0")
        _require(0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "use 0..1")
        _require(8 <= self.image_size <= 1024, "image_size", self.image_size, "use 8..1024 pixels")
        _require(
            self.masks in ("auto", "required", "off"),
            "masks",
            self.masks,
            "use auto, required or off",
        )


@dataclass
class ModelConfig:
    encoder: str = param(
        "resnet-small",
        "Encoder: 'resnet-small' (small-image ResNet, 28-64 px) or any torchvision "
        "classification model by name ('resnet50', 'convnext_tiny', 'vit_b_16', ...), "
        "its classifier removed.",
    )
    width: int = param(32, "Base width of resnet-small (channels of its first stage).")
    projection_dim: int = param(128, "Output dimension of the projection head.")
    pretrained: str = param(
        "none",
        "Backbone weights: none (random) or imagenet (a torchvision encoder's default "
        "ImageNet weights, from its cache TORCH_HOME/hub/checkpoints; ImageNet normalisation).",
    )

    def validate(self) -> None:
        _require(
            self.pretrained in ("none", "imagenet"),
            "pretrained",
            self.pretrained,
            "use none or imagenet",
        )
        _require(
            self.pretrained == "none" or self.encoder != "resnet-small",
            "pretrained",
            self.pretrained,
            f"encoder={self.encoder!r} has no pretrained weights: use a torchvision encoder "
            "(e.g. resnet18) or pretrained=none",
        )
        if self.encoder != "resnet-small":  # torchvision's names (imported only then)
            from eibacl.models.encoders import check_encoder

            try:
                check_encoder(self.encoder)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        _require(self.width >= 4, "width", self.width, "use width >= 4")
        _require(self.projection_dim >= 2, "projection_dim", self.projection_dim, "use >= 2")


DEFAULT_CROP_SCALE = 0.4  # also AugmentSettings' default, for callers without a config


@dataclass
class OptimConfig:
    epochs: int = param(100, "Training epochs.")
    batch_size: int = param(128, "Real images per batch (each gives two views in SupCon).")
    lr: float = param(2e-3, "Peak learning rate (AdamW, warm-up then cosine decay).")
    weight_decay: float = param(1e-4, "AdamW weight decay.")
    warmup_epochs: int = param(3, "Linear learning-rate warm-up epochs.")
    crop_scale: float = param(
        DEFAULT_CROP_SCALE,
        "Augmentation strength: smallest area (share of the image) of the random-resized crop "
        "of every training view; 1 = no cropping, only flips and colour jitter.",
    )
    seed: int = param(0, "Seed of initialisation, batches and augmentations.")
    device: str = param(
        "auto", "'auto' (CUDA with bf16 autocast when present), 'cpu' or 'cuda'.", volatile=True
    )
    system_metrics: str = param(
        "auto",
        "MLflow system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) every 10 s "
        "during training: auto (on for CUDA runs), true or false. Needs psutil.",
        volatile=True,
    )
    eval_every: int = param(10, "Epochs between validation kNN accuracies (0 = only at the end).")
    checkpoint_every: int = param(
        10,
        "Epochs between checkpoints (with optimiser state; also after the last epoch and on "
        "SIGTERM); resume continues from the newest.",
        volatile=True,
    )
    resume: str = param(
        "", "Run id of an interrupted run to continue from its last checkpoint.", volatile=True
    )
    progress: bool = param(True, "Show progress bars.", volatile=True)

    def validate(self) -> None:
        _require(self.epochs >= 1, "epochs", self.epochs, "use epochs >= 1")
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "use batch_size >= 2")
        _require(self.lr > 0, "lr", self.lr, "use a positive learning rate")
        _require(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "use >= 0")
        _require(
            self.system_metrics in ("auto", "true", "false"),
            "system_metrics",
            self.system_metrics,
            "use auto, true or false",
        )
        _require(
            self.checkpoint_every >= 1,
            "checkpoint_every",
            self.checkpoint_every,
            "use checkpoint_every >= 1 (epochs between checkpoints)",
        )
        _require(0 < self.crop_scale <= 1, "crop_scale", self.crop_scale, "use a share in (0, 1]")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            self.device,
            "use 'auto', 'cpu' or 'cuda'",
        )


@dataclass
class PoolConfig:
    prior_pool: str = param(
        "auto",
        "Unlabelled real images for a prior and the retrieval control: auto (Fashion-MNIST: "
        "its training-subset images of the ID classes on no side of the split; none for other "
        "sources), none, or folder:<path> (images at any depth; none of a held-out class).",
    )

    def validate(self) -> None:
        check_prior_pool(self.prior_pool)


@dataclass
class GenerateConfig(PoolConfig):
    generator: str = param("ddpm", "Generator backend: 'ddpm' (embedded) or 'stable-diffusion'.")
    strength: str = param(
        "0.25,0.5,0.75",
        "img2img strength t0 in (0, 1]: one value or a comma-separated list sampled per variant.",
    )
    num_synthetic: int = param(4, "In-distribution variants per real training image (M).")
    num_near_ood: int = param(2, "Near-OOD variants per real training image.")
    near_ood_recipes: str = param(
        "away,other-class",
        "Near-OOD recipes, comma-separated: high-strength, class-mix, other-class, away, "
        "extrapolate; 'name@strength' sets a recipe's strength.",
    )
    guidance_scale: float = param(
        3.0, "Classifier-free guidance scale (for the away recipe > 1: the push from the source)."
    )
    extrapolate_factor: float = param(
        1.0,
        "How far past the source class the extrapolate recipe conditions: "
        "e_source + f * (e_source - e_other), rescaled to the class embeddings' mean norm.",
    )
    generator_steps: int = param(300, "Training steps of the embedded ddpm generator.")
    inference_steps: int = param(
        25, "Denoising steps of the full schedule (strength runs a share)."
    )
    sd_model: str = param(
        "",
        "Stable Diffusion 1.x for generator=stable-diffusion: a local diffusers folder "
        "(or a hub id in the local cache).",
    )
    ti_steps: int = param(
        1000,
        "Textual-inversion steps, every class token in one loop, each step seeing every class "
        "(stable-diffusion; DA-Fusion's value).",
    )
    ti_vectors: int = param(1, "Embedding vectors per class token (textual inversion).")
    ti_embeddings: str = param(
        "",
        "Reuse the class tokens an earlier generate run learned: runs:/<run id> (its "
        "generator/ artifact) or that folder; empty = learn them (stable-diffusion).",
    )
    generator_seed: int = param(
        0, "Seed of generator training and of every variant (independent of the training seed)."
    )
    use_masks: bool = param(
        True,
        "Inpaint the object region when the data has masks (SD; needs an inpainting "
        "checkpoint, a 9-channel UNet).",
    )
    mask_dilation: int = param(
        8,
        "Pixels (at the generator's size) the object mask grows by on each side before "
        "inpainting (DA-Fusion: a 16 px maximum filter at 512 px).",
    )
    generator_size: int = param(
        32,
        "Side in pixels the embedded ddpm works at: images are resized down to it, variants "
        "back up to image_size with the source's fine detail (0 = image_size; the cost grows "
        "with its square).",
    )
    generator_prior: str = param(
        "default",
        "Diffusion prior of generator=ddpm: default (the one shipped in priors/ for the data, "
        "if any; none for stable-diffusion), none (learn everything from the shots), or a "
        "prior folder; with a prior only new class rows are learned on the shots, the UNet "
        "frozen.",
    )
    inversion_steps: int = param(
        300, "Steps that learn the class rows on the shots with the prior frozen (generator_prior)."
    )

    def validate(self) -> None:
        _require(
            self.generator in ("ddpm", "stable-diffusion"),
            "generator",
            self.generator,
            "use 'ddpm' or 'stable-diffusion'",
        )
        _require(self.num_synthetic >= 0, "num_synthetic", self.num_synthetic, "use >= 0")
        _require(self.num_near_ood >= 0, "num_near_ood", self.num_near_ood, "use >= 0")
        _require(self.guidance_scale >= 0, "guidance_scale", self.guidance_scale, "use >= 0")
        _require(self.generator_steps >= 1, "generator_steps", self.generator_steps, "use >= 1")
        _require(self.inference_steps >= 1, "inference_steps", self.inference_steps, "use >= 1")
        _require(self.ti_steps >= 0, "ti_steps", self.ti_steps, "use >= 0")
        _require(
            self.ti_vectors >= 1,
            "ti_vectors",
            self.ti_vectors,
            "a class token needs at least 1 vector: use -P ti_vectors=1 (DA-Fusion's) or more",
        )
        _require(self.mask_dilation >= 0, "mask_dilation", self.mask_dilation, "use >= 0 pixels")
        _require(
            self.generator_size == 0 or (self.generator_size >= 8 and self.generator_size % 4 == 0),
            "generator_size",
            self.generator_size,
            "use 0 (= image_size) or a multiple of 4 from 8, e.g. 32",
        )
        for value in strength_list(self.strength):
            _require(0 < value <= 1, "strength", self.strength, "each value must be in (0, 1]")
        _require(
            math.isfinite(self.extrapolate_factor) and 0 < self.extrapolate_factor <= 5,
            "extrapolate_factor",
            self.extrapolate_factor,
            "use a factor in (0, 5] (1 = as far past the source as the other class is before it)",
        )
        _require(
            self.generator == "ddpm" or self.generator_prior.strip() in ("none", "default"),
            "generator_prior",
            self.generator_prior,
            "a prior is for the embedded ddpm (Stable Diffusion brings its own): use -P "
            "generator_prior=none (or default, which is none for stable-diffusion)",
        )
        _require(
            self.generator_prior.strip() != "",
            "generator_prior",
            "",
            "use default, none or a folder",
        )
        _require(self.inversion_steps >= 1, "inversion_steps", self.inversion_steps, "use >= 1")
        names = recipe_names(self.near_ood_recipes)
        _require(
            "away" not in names or self.guidance_scale > 1,
            "guidance_scale",
            self.guidance_scale,
            "the away recipe needs guidance_scale > 1 to push away from the source class (e.g. 3)",
        )


def check_prior_pool(value: str) -> None:
    text = value.strip()
    ok = text in ("auto", "none") or (text.startswith("folder:") and bool(text[7:].strip()))
    fix = "use auto, none or folder:<path> (unlabelled images of your domain, none held out)"
    _require(ok, "prior_pool", value, fix)


SYNTHETIC_COMPONENTS = ("positives", "retrieval", "negatives", "features")
# Components that fill each training image's variants (used alike: alpha, positive_mode).
VARIANT_COMPONENTS = ("positives", "retrieval")
# The study's grid: real only, DA-Fusion positives, plus near-OOD images as negatives, and the
# control that makes no images (feature-space outliers as negatives).
SYNTHETIC_MODES = ("none", "positives", "positives+negatives", "features")
SYNTHETIC_FILTERS = ("none", "judge")
POSITIVE_MODES = ("replace", "extra-view")


def synthetic_components(text: str, name: str = "synthetic") -> tuple[str, ...]:
    """'positives+features' -> ('positives', 'features'); 'none' -> ().

    The one parser of a synthetic mode: a '+'-joined set of positives (DA-Fusion variants)
    or retrieval (the pool's real images nearest each training image, in their place),
    negatives (near-OOD images, contrast-only) and features (outlier embeddings synthesised
    every step, no images), written in that canonical order. `name` is the parameter that
    is named in the error (`synthetic`, or `modes` of compare).
    """
    value = str(text).strip()
    if value == "none":
        return ()
    parts = [part.strip() for part in value.split("+")]
    valid = "none or a '+'-joined set of " + ", ".join(SYNTHETIC_COMPONENTS)
    unknown = [part for part in parts if part not in SYNTHETIC_COMPONENTS]
    if unknown or not value:
        raise ConfigError(
            f"{name}={text!r} is invalid: unknown component(s) "
            f"{', '.join(map(repr, unknown or ['']))}; use {valid} (e.g. positives+negatives)."
        )
    canonical = tuple(c for c in SYNTHETIC_COMPONENTS if c in parts)
    if len(parts) != len(set(parts)) or tuple(parts) != canonical:
        raise ConfigError(
            f"{name}={text!r} is invalid: write each component once in the order "
            f"{' + '.join(SYNTHETIC_COMPONENTS)}, i.e. {'+'.join(canonical)}."
        )
    if set(VARIANT_COMPONENTS) <= set(canonical):
        raise ConfigError(
            f"{name}={text!r} is invalid: retrieval is the control of positives (pool images "
            "in the variants' place); use one of them, e.g. positives or retrieval."
        )
    return canonical


def needs_synthetic_set(mode: str) -> bool:
    """Whether a synthetic mode uses generated images (features alone makes none)."""
    return any(c in ("positives", "negatives") for c in synthetic_components(mode))


def unused_settings(params: Mapping[str, Any]) -> set[str]:
    """Settings of a run's parameters that its `synthetic` mode never reads, e.g. `alpha`
    and the generator's settings of a `none` run. They are left out of the reuse key, so a
    `compare` that changes only how synthetic data is made or used reuses its `none` (and
    `features`) cells instead of training them again."""
    if "synthetic" not in params:
        return set()
    used = set(synthetic_components(str(params["synthetic"])))
    unused: set[str] = set()
    if not used & {"positives", "negatives"}:
        unused |= {f.name for f in dataclasses.fields(GenerateConfig)}
        unused |= {"synthetic_set", "synthetic_filter", "oversample"}
    if "retrieval" in used:
        unused -= {"num_synthetic", "prior_pool"}
    else:  # of training runs only retrieval reads the pool (a prior reads it in generate)
        unused.add("prior_pool")
    if not used & set(VARIANT_COMPONENTS):
        unused |= {"alpha", "positive_mode"}
    if "negatives" not in used:
        unused.add("near_ood_per_batch")
    if "features" not in used:
        unused |= {"feature_negatives_per_batch", "feature_noise", "feature_boundary_quantile"}
    if not used & {"negatives", "features"}:
        unused.add("oe_weight")
    return unused & set(params)


@dataclass
class SyntheticConfig:
    synthetic: str = param(
        "positives+negatives",
        "Synthetic data in training: none, or a '+'-joined set of positives (DA-Fusion "
        "variants) or retrieval (their control: the prior_pool images nearest each training "
        "image, num_synthetic each, used like variants), negatives (near-OOD images, "
        "contrast-only) and features (outlier embeddings synthesised each step, no images), "
        "e.g. positives+negatives+features.",
    )
    synthetic_set: str = param(
        "", "A generate run id or set folder; empty = make or reuse one from the settings."
    )
    alpha: float = param(0.5, "Probability that a drawn real image is replaced by a variant.")
    positive_mode: str = param(
        "replace",
        "How DA-Fusion variants enter training: replace (DA-Fusion's rule: each drawn real image "
        "is replaced by one of its variants with probability alpha) or extra-view (a variant is "
        "added as one more view of its image; costs a third forward pass).",
    )
    near_ood_per_batch: int = param(
        64, "Near-OOD hard negatives per batch (synthetic with negatives)."
    )
    oe_weight: float = param(
        0.5, "Outlier-exposure weight in the CE baseline (near-OOD images, feature outliers)."
    )
    feature_negatives_per_batch: int = param(
        64, "Outlier embeddings synthesised per batch (synthetic with features)."
    )
    feature_noise: float = param(
        0.1, "Std of the Gaussian noise added per coordinate to boundary embeddings (features)."
    )
    feature_boundary_quantile: float = param(
        0.8,
        "Embeddings of a class at or past this quantile of distance to the class mean are its "
        "boundary, where feature negatives are seeded (0 = every embedding).",
    )

    synthetic_filter: str = param(
        "none",
        "Filter of the synthetic set before training: none | judge (keep ID variants that stay "
        "in-distribution and keep their class, and near-OOD images in the judge's band between "
        "real ID and far-away; counts logged as synthetic/filter/...).",
    )
    oversample: int = param(
        1,
        "Make this many times num_synthetic and num_near_ood per real image, so the filter can "
        "keep up to num_synthetic variants per image (1 = no oversampling).",
    )

    def validate(self) -> None:
        _require(
            self.synthetic_filter in SYNTHETIC_FILTERS,
            "synthetic_filter",
            self.synthetic_filter,
            "use " + " or ".join(SYNTHETIC_FILTERS),
        )
        _require(self.oversample >= 1, "oversample", self.oversample, "use oversample >= 1")
        synthetic_components(self.synthetic)
        _require(
            self.positive_mode in POSITIVE_MODES,
            "positive_mode",
            self.positive_mode,
            "use " + " or ".join(POSITIVE_MODES),
        )
        _require(0 <= self.alpha <= 1, "alpha", self.alpha, "use a probability in [0, 1]")
        _require(
            self.near_ood_per_batch >= 0, "near_ood_per_batch", self.near_ood_per_batch, "use >= 0"
        )
        _require(self.oe_weight >= 0, "oe_weight", self.oe_weight, "use >= 0")
        _require(
            self.feature_negatives_per_batch >= 0,
            "feature_negatives_per_batch",
            self.feature_negatives_per_batch,
            "use >= 0",
        )
        _require(
            math.isfinite(self.feature_noise) and self.feature_noise >= 0,
            "feature_noise",
            self.feature_noise,
            "use a standard deviation >= 0 (e.g. 0.1)",
        )
        _require(
            0 <= self.feature_boundary_quantile < 1,
            "feature_boundary_quantile",
            self.feature_boundary_quantile,
            "use a quantile in [0, 1) (e.g. 0.8)",
        )


@dataclass
class LossConfig:
    temperature: float = param(0.1, "SupCon temperature T.")

    def validate(self) -> None:
        _require(self.temperature > 0, "temperature", self.temperature, "use a temperature > 0")


COVARIANCES = ("ledoit-wolf", "oas", "ridge")


@dataclass
class EvalConfig:
    knn_k: int = param(
        1,
        "Neighbour of the KNN OOD score (distance to the k-th nearest training feature). "
        "Few-shot training sets want a small k: chosen on validation near-OOD AUROC.",
    )
    register: bool = param(
        True, "Register the probed encoder and move 'champion' when it wins.", volatile=True
    )
    far_ood: str = param(
        "auto",
        "Far-OOD test set: auto (mnist for fashion-mnist, none for folder data), mnist, "
        "folder:<path> (any tree of images that are none of the classes) or none "
        "(no ood/far/* metrics).",
    )
    covariance: str = param(
        "ledoit-wolf",
        "Shared covariance of the Mahalanobis score: ledoit-wolf or oas (scikit-learn's "
        "shrinkage toward a scaled identity; stable with more feature dimensions than images) "
        "or ridge (the sample covariance plus a 1e-6 relative ridge). The judge uses the default.",
    )

    def validate(self) -> None:
        _require(self.knn_k >= 1, "knn_k", self.knn_k, "use knn_k >= 1")
        _require(
            self.covariance in COVARIANCES,
            "covariance",
            self.covariance,
            f"use one of {', '.join(COVARIANCES)}",
        )
        _require(
            self.far_ood in ("auto", "mnist", "none")
            or (self.far_ood.startswith("folder:") and len(self.far_ood) > len("folder:")),
            "far_ood",
            self.far_ood,
            "use auto, mnist, none or folder:<path to images>",
        )


def recipe_names(text: str) -> list[str]:
    """The near-OOD recipe names in `near_ood_recipes` (validated; ConfigError naming it)."""
    # torch: only when a config is checked
    from eibacl.generate.dafusion.recipes import parse_recipes

    try:
        specs = parse_recipes(text)
    except ValueError as exc:
        message = str(exc).removeprefix("near_ood_recipes: ")
        raise ConfigError(f"near_ood_recipes={text!r} is invalid: {message}.") from exc
    return [spec.partition("@")[0] for spec in specs]


def strength_list(text: str) -> list[float]:
    """Parse '0.5' or '0.25,0.5' into floats, naming `strength` on a bad value."""
    try:
        values = [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"strength={text!r} is not a number or comma-separated list of numbers in (0, 1]"
        ) from exc
    if not values:
        raise ConfigError("strength is empty: give one value or a list such as 0.25,0.5,0.75")
    return values


def _require(ok: bool, name: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {fix}.")


def validate(config: Any) -> None:
    """Run the `validate` of every parameter group the config is made of."""
    for cls in type(config).__mro__:
        check = cls.__dict__.get("validate")
        if check is not None:
            check(config)


class _Checked:
    """Validates a composed config as soon as it is built (also by `replace`)."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PretrainConfig(
    _Checked, SyntheticConfig, GenerateConfig, LossConfig, OptimConfig, ModelConfig, DataConfig
):
    """`pretrain`: SupCon on the encoder, optionally with synthetic data."""


@dataclass
class BaselineConfig(
    _Checked, EvalConfig, SyntheticConfig, GenerateConfig, OptimConfig, ModelConfig, DataConfig
):
    """`baseline`: the same network trained with cross-entropy, then evaluated like a probe."""


@dataclass
class ProbeConfig(_Checked, EvalConfig):
    encoder_uri: str = param(
        "", "runs:/<id>/encoder or models:/...; empty = the newest finished pretrain run."
    )
    device: str = param("auto", "'auto', 'cpu' or 'cuda'.", volatile=True)
    probe_seed: int = param(
        0,
        "Seed of the linear probe (scikit-learn's random_state; its lbfgs solver is "
        "deterministic, so the probe does not depend on it).",
    )


@dataclass
class GenerateRunConfig(_Checked, GenerateConfig, DataConfig):
    """`generate`: make (or find) the synthetic set of a data split."""

    device: str = param("auto", "'auto', 'cpu' or 'cuda'.", volatile=True)
    progress: bool = param(True, "Show progress bars.", volatile=True)


@dataclass
class PriorParams:
    prior_classes: int = param(
        32, "Pseudo-classes (k-means clusters of the pool's pixels) the prior is conditioned on."
    )
    prior_steps: int = param(4000, "Training steps of the prior (batches of 64 pool images).")
    max_minutes: float = param(
        0.0, "Stop the prior's training after this many minutes (0 = no limit).", volatile=True
    )
    prior_samples: int = param(
        256, "Prior samples the judge looks at (how in-distribution they look, memorisation)."
    )
    prior_out: str = param(
        "",
        "Folder the finished prior is written to (empty = the cache; give priors/<name> to "
        "ship one); generator_prior=<that folder> uses it.",
    )

    def validate(self) -> None:
        _require(self.prior_classes >= 2, "prior_classes", self.prior_classes, "use >= 2")
        _require(self.prior_steps >= 1, "prior_steps", self.prior_steps, "use >= 1")
        _require(self.prior_samples >= 1, "prior_samples", self.prior_samples, "use >= 1")
        _require(self.max_minutes >= 0, "max_minutes", self.max_minutes, "use >= 0 (0 = no limit)")


@dataclass
class PriorConfig(_Checked, PriorParams, PoolConfig, DataConfig):
    """`prior`: train the embedded DDPM's diffusion prior on an unlabelled pool."""

    device: str = param("auto", "'auto', 'cpu' or 'cuda'.", volatile=True)
    progress: bool = param(True, "Show progress bars.", volatile=True)


@dataclass
class MainConfig(
    _Checked,
    EvalConfig,
    SyntheticConfig,
    GenerateConfig,
    LossConfig,
    OptimConfig,
    ModelConfig,
    DataConfig,
):
    """`main`: generate -> pretrain -> probe -> baseline, nested under one parent run."""


COMPARE_GENERATORS = ("ddpm", "ddpm-prior", "stable-diffusion")  # compare's `generators`
FOLDER_SPLITS = 5  # README "Repeated splits": t on 4 df where 2 splits give 1 and 3 give 2


@dataclass
class CompareParams:
    seeds: int = param(
        6,
        "Training seeds per cell (same split, same synthetic set); 6 keep the headline near-OOD "
        "AUROC's paired 95% CI half-width under 0.02 (README: the resolution).",
    )
    methods: str = param("supcon,ce", "Methods to compare: supcon, ce.")
    modes: str = param(
        ",".join(SYNTHETIC_MODES),
        "Synthetic modes to compare, comma-separated (each as in `synthetic`).",
    )
    generators: str = param(
        "auto",
        "Generators to compare, comma-separated: ddpm (no prior), ddpm-prior (generator_prior, "
        "or default when it is none), stable-diffusion; modes that read the generator run once "
        "per generator, the others once, shared. auto = the run's own generator settings.",
    )
    splits: str = param(
        "auto",
        "Object-grouped splits every cell runs on (split_seed, split_seed+1, ...; each with its "
        f"own synthetic set), the split a block of the paired tests: a number >= 1, or auto "
        f"(1 for fashion-mnist, whose test set is fixed; {FOLDER_SPLITS} for folder data).",
    )
    workers: str = param(
        "auto",
        "Processes that run cells at once against the one store, one torch thread each: a "
        "number from 1 to the grid's cell count, or auto (the usable CPU cores, at most the "
        "cells; 1 on CUDA).",
        volatile=True,
    )

    def validate(self) -> None:
        _require(self.seeds >= 1, "seeds", self.seeds, "use seeds >= 1 (3 or more for tests)")
        for method in self.methods.split(","):
            _require(method in ("supcon", "ce"), "methods", self.methods, "use supcon and/or ce")
        for mode in self.modes.split(","):
            synthetic_components(mode, name="modes")
        self.generator_names()
        fix = f"use a number >= 1, or auto (1 for fashion-mnist, {FOLDER_SPLITS} for folder data)"
        _require(_count_or_auto(self.splits), "splits", self.splits, fix)
        _require(
            _count_or_auto(self.workers), "workers", self.workers, "use a number >= 1, or auto"
        )
        cells = self.cell_count()
        _require(
            str(self.workers) == "auto" or int(self.workers) <= cells,
            "workers",
            self.workers,
            f"the grid has {cells} cells (methods x modes x seeds x splits); use workers <= "
            f"{cells}, or auto",
        )

    def split_count(self) -> int:
        """`splits` resolved: auto is 1 for Fashion-MNIST, `FOLDER_SPLITS` for folder data."""
        if str(self.splits) != "auto":
            return int(self.splits)
        return FOLDER_SPLITS if str(getattr(self, "data", "")).startswith("folder:") else 1

    def generator_names(self) -> tuple[str, ...]:
        """`generators` parsed: () for auto (the run's own settings), else the names."""
        text = str(self.generators).strip()
        if text == "auto":
            return ()
        names = tuple(part.strip() for part in text.split(","))
        valid = f"auto or a comma list of {', '.join(COMPARE_GENERATORS)}"
        for name in names:
            _require(
                name in COMPARE_GENERATORS, "generators", text, f"{name!r} is not one of {valid}"
            )
        duplicate = next((n for n in names if names.count(n) > 1), "")
        _require(not duplicate, "generators", text, f"{duplicate!r} is named twice; name each once")
        return names

    def cell_count(self) -> int:
        """Cells of the grid: modes that read the generator count once per generator."""
        per_mode = [
            max(1, len(self.generator_names())) if needs_synthetic_set(mode) else 1
            for mode in self.modes.split(",")
        ]
        return len(self.methods.split(",")) * sum(per_mode) * self.seeds * self.split_count()


def _count_or_auto(value: Any) -> bool:
    """'auto' or a whole number >= 1 (as text from the command line, or an int)."""
    text = str(value).strip()
    return text == "auto" or (text.isdigit() and int(text) >= 1)


@dataclass
class CompareConfig(MainConfig, CompareParams):
    """`compare`: the grid {SupCon, CE} x {synthetic modes} x seeds, with paired tests."""


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def replace(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)


SEARCHABLE = ("temperature", "strength", "alpha", "near_ood_per_batch")
TUNE_OBJECTIVES = ("val_accuracy", "val_accuracy+near_ood_auroc")
TUNE_PRUNERS = ("median", "none")


@dataclass
class TuneParams:
    search: str = param(
        "temperature,strength",
        "Parameters to search, comma-separated: " + ", ".join(SEARCHABLE) + ".",
    )
    objective: str = param(
        "val_accuracy",
        "What trials are selected on (validation only, never the test split): val_accuracy, "
        "or val_accuracy+near_ood_auroc (two objectives, both maximised; a Pareto front).",
    )
    n_trials: int = param(6, "Trials this process runs (every worker adds its own).")
    timeout_minutes: float = param(
        0.0, "Stop starting new trials after this many minutes (0 = no limit)."
    )
    study_name: str = param("eibacl", "Optuna study name; the same name continues the study.")
    storage: str = param(
        "sqlite:///optuna.db",
        "Optuna storage, an SQLAlchemy URL: sqlite:///optuna.db (one machine) or "
        "postgresql://user:pass@host/db (several workers).",
    )
    pruner: str = param(
        "median", "Stop weak trials early on the validation kNN accuracy: median | none."
    )
    seed: int = param(
        0, "Seed of the sampler (per trial) and of every trial's initialisation and batches."
    )
    temperature_min: float = param(0.03, "Lower end of the temperature range (log scale).")
    temperature_max: float = param(0.5, "Upper end of the temperature range (log scale).")
    strength_min: float = param(0.1, "Lower end of the strength range (when strength_grid='').")
    strength_max: float = param(1.0, "Upper end of the strength range (when strength_grid='').")
    strength_grid: str = param(
        "0.25,0.5,0.75",
        "Strength values to choose from (trials with one value share one synthetic set); "
        "empty = the continuous range strength_min..strength_max.",
    )
    alpha_min: float = param(0.0, "Lower end of the alpha range.")
    alpha_max: float = param(1.0, "Upper end of the alpha range.")
    near_ood_min: int = param(0, "Lower end of the near_ood_per_batch range.")
    near_ood_max: int = param(128, "Upper end of the near_ood_per_batch range.")

    def validate(self) -> None:
        names = search_list(self.search)
        _require(
            self.objective in TUNE_OBJECTIVES,
            "objective",
            self.objective,
            "use " + " or ".join(TUNE_OBJECTIVES),
        )
        _require(self.pruner in TUNE_PRUNERS, "pruner", self.pruner, "use median or none")
        _require(self.n_trials >= 1, "n_trials", self.n_trials, "use n_trials >= 1")
        _require(
            self.timeout_minutes >= 0,
            "timeout_minutes",
            self.timeout_minutes,
            "use minutes >= 0 (0 = no limit)",
        )
        _require(bool(self.study_name.strip()), "study_name", self.study_name, "give a name")
        _require(
            bool(self.storage.strip()),
            "storage",
            self.storage,
            "give an SQLAlchemy URL such as sqlite:///optuna.db",
        )
        _require(
            0 < self.temperature_min < self.temperature_max,
            "temperature_min",
            (self.temperature_min, self.temperature_max),
            "use 0 < temperature_min < temperature_max (e.g. 0.03 and 0.5)",
        )
        _require(
            0 < self.strength_min < self.strength_max <= 1,
            "strength_min",
            (self.strength_min, self.strength_max),
            "use 0 < strength_min < strength_max <= 1",
        )
        for value in strength_grid_list(self.strength_grid):
            _require(
                0 < value <= 1, "strength_grid", self.strength_grid, "each value must be in (0, 1]"
            )
        _require(
            0 <= self.alpha_min < self.alpha_max <= 1,
            "alpha_min",
            (self.alpha_min, self.alpha_max),
            "use 0 <= alpha_min < alpha_max <= 1",
        )
        _require(
            0 <= self.near_ood_min < self.near_ood_max,
            "near_ood_min",
            (self.near_ood_min, self.near_ood_max),
            "use 0 <= near_ood_min < near_ood_max",
        )
        components = synthetic_components(getattr(self, "synthetic", "none"))
        _require(
            "strength" not in names or needs_synthetic_set(getattr(self, "synthetic", "none")),
            "search",
            self.search,
            "strength only matters with synthetic images: drop it from search or use "
            "synthetic=positives or positives+negatives",
        )
        _require(
            "alpha" not in names or bool(set(components) & set(VARIANT_COMPONENTS)),
            "search",
            self.search,
            "alpha only matters with synthetic positives: drop it from search or use "
            "synthetic=positives or positives+negatives",
        )
        _require(
            "near_ood_per_batch" not in names or "negatives" in components,
            "search",
            self.search,
            "near_ood_per_batch only matters with synthetic negatives (e.g. positives+negatives)",
        )
        _require(
            "strength" not in names or not getattr(self, "synthetic_set", ""),
            "search",
            self.search,
            "strength cannot be searched with a fixed synthetic_set: leave it empty",
        )
        _require(
            not getattr(self, "resume", ""),
            "resume",
            getattr(self, "resume", ""),
            "a study continues when tune runs again with the same study_name and storage",
        )
        _require(
            self.objective == "val_accuracy" or bool(getattr(self, "ood_val_classes", "").strip()),
            "objective",
            self.objective,
            "near_ood_auroc is measured on validation-time held-out classes: give "
            "-P ood_val_classes=<names or count> (or 'auto')",
        )


def search_list(text: str) -> list[str]:
    """Parse 'temperature,strength' into names, naming `search` and the valid names on error."""
    names = list(dict.fromkeys(part.strip() for part in str(text).split(",") if part.strip()))
    unknown = [name for name in names if name not in SEARCHABLE]
    if unknown or not names:
        raise ConfigError(
            f"search={text!r} is invalid: "
            + (f"unknown {', '.join(map(repr, unknown))}; " if unknown else "it is empty; ")
            + "use a comma-separated list of "
            + ", ".join(SEARCHABLE)
            + "."
        )
    return names


def strength_grid_list(text: str) -> list[float]:
    """'0.25,0.5' -> [0.25, 0.5] (sorted, unique); '' -> [] (continuous strength range)."""
    if not str(text).strip():
        return []
    try:
        return sorted({float(part) for part in str(text).split(",") if part.strip()})
    except ValueError as exc:
        raise ConfigError(
            f"strength_grid={text!r} is not a comma-separated list of numbers in (0, 1]"
        ) from exc


@dataclass
class TuneConfig(
    _Checked,
    TuneParams,
    EvalConfig,
    SyntheticConfig,
    GenerateConfig,
    LossConfig,
    OptimConfig,
    ModelConfig,
    DataConfig,
):
    """`tune`: an Optuna study of pretrain + probe trials, selected on validation metrics."""


ENTRY_POINT_CONFIGS = (
    MainConfig,
    GenerateRunConfig,
    PriorConfig,
    PretrainConfig,
    ProbeConfig,
    BaselineConfig,
    TuneConfig,
    CompareConfig,
)
# Every entry point's volatile parameters (see `param`).
VOLATILE_PARAMS = tuple(sorted({name for c in ENTRY_POINT_CONFIGS for name in volatile_fields(c)}))
