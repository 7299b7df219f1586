"""`generate`: train (or reuse) the generator on the training split, make (or reuse) the
content-addressed synthetic set, check its quality, and show it in MLflow.

Two caches make a repeated run cheap: the trained generator is keyed by the data, the
training images and its settings; the synthetic set by the data, the split, the
generation settings and the generator's fingerprint. Both live under the cache folder
(`EIBACL_CACHE`, default `.eibacl-cache/`), and the generator is also logged to the
run that trained it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eibacl import distributed, names, tracking
from eibacl.config import GenerateConfig, GenerateRunConfig, strength_list
from eibacl.data.far_ood import load_far_ood_set, resolve_far_ood
from eibacl.data.logged import log_data
from eibacl.data.pool import load_unlabelled_pool
from eibacl.data.resize import resize_uint8
from eibacl.data.training_data import TrainingData, prepare_data
from eibacl.device import resolve_device
from eibacl.generate.backends import load_backend, train_backend, work_size
from eibacl.generate.backends.ddpm_inversion import prior_identity, say_prior
from eibacl.generate.backends.protocol import GeneratorBackend
from eibacl.generate.dafusion.augment import (
    conditioning_weights,
    generate_synthetic_set,
    generation_settings,
    recipe_params_of,
)
from eibacl.generate.dafusion.generator_inputs import GeneratorInputs, load_generator_inputs
from eibacl.generate.dafusion.grids import near_ood_grid_figure, variants_grid_figure
from eibacl.generate.dafusion.recipes import RecipeParams, parse_recipes, resolve_recipe
from eibacl.generate.dafusion.synthetic_set import SyntheticSet, SyntheticSetKey, is_complete
from eibacl.generate.judge.judge import (
    JUDGE_FILE,
    Judge,
    add_pool,
    closest_pairs_figure,
    fit_judge,
    judge_figure,
    judge_report,
    save_verdicts,
    synthetic_groups,
    verdicts,
)
from eibacl.generate.judge.quality import synthetic_quality, train_reference_classifier
from eibacl.paths import cache_dir

log = logging.getLogger(__name__)
QUALITY_FILE = "quality.json"
SAMPLES_DIR = "samples"
# Generator settings that change the trained model (the rest only change sampling).
GENERATOR_FIELDS = ("generator", "generator_steps", "sd_model", "ti_steps", "generator_seed")
SD_FIELDS = ("ti_vectors", "ti_embeddings", "use_masks", "mask_dilation")


@dataclass
class GenerateResult:
    set_dir: Path
    key: str
    reused: bool
    counts: dict[str, int]
    quality: dict[str, float]
    backend: GeneratorBackend
    generator_dir: Path
    generator_reused: bool
    run_id: str | None = None
    inputs: GeneratorInputs | None = None

    def generator_metrics(self) -> dict[str, float]:
        """What the generator was given, and (when trained now) how its training went."""
        metrics: dict[str, float] = {}
        if self.inputs is not None:
            metrics["generator/source_px"] = float(self.inputs.source_px)
            metrics["generator/source_native_px"] = float(self.inputs.native_px)
            metrics["generator/unmasked"] = float(self.inputs.unmasked)
        if not self.generator_reused:
            metrics |= dict(getattr(self.backend, "ti_stats", {}) or {})
        return metrics


def generator_key(config: GenerateConfig, data: TrainingData) -> str:
    parts = {f: getattr(config, f) for f in GENERATOR_FIELDS}
    parts |= {
        "data": data.split.source_fingerprint,
        "train": hashlib.sha256("\n".join(data.split.train).encode()).hexdigest(),
        "classes": data.split.id_classes,
        "image_size": data.imageset.image_size,
        "version": 2,  # v2: the DDPM's lr follows eibacl.lr_schedule (warm-up, then cosine)
    }
    size = work_size(config, data)
    if size != data.imageset.image_size:  # keys of generators at the image size unchanged
        parts["generator_size"] = size
    prior = prior_identity(config, data)
    if prior is not None:  # keys of generators without a prior unchanged
        parts |= prior
    if config.generator == "stable-diffusion":  # v2: sources at its size, one TI loop
        parts |= {f: getattr(config, f) for f in SD_FIELDS} | {"inputs": 2}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def generator_dir(config: GenerateConfig, data: TrainingData) -> Path:
    """The cache folder of the generator these settings train on this training split."""
    return cache_dir() / "generators" / generator_key(config, data)


def generator_inputs(config: GenerateConfig, data: TrainingData) -> GeneratorInputs:
    """What the generator reads. SD: the source crops at its resolution with their masks
    (`generator_inputs`); the embedded ddpm: the training images, resized down to
    `generator_size` by its wrapper (it never works above image_size, so never upsamples)."""
    if config.generator == "ddpm":
        size = work_size(config, data)
        return GeneratorInputs(data.train_x, None, "none", size, data.imageset.image_size)
    from eibacl.generate.backends.stable_diffusion import sd_geometry

    return load_generator_inputs(
        data,
        sd_geometry(config.sd_model)[0],
        use_masks=config.use_masks,
        mask_dilation=config.mask_dilation,
    )


def load_or_train_generator(
    config: GenerateConfig,
    data: TrainingData,
    device: torch.device,
    progress: bool,
    inputs: GeneratorInputs | None = None,
) -> tuple[GeneratorBackend, Path, bool]:
    """The trained generator from the cache, or trained now (only on the training split);
    with `ti_embeddings` the class tokens of an earlier run instead of training them."""
    folder = generator_dir(config, data)
    if (folder / "COMPLETE").is_file():
        return load_backend(folder, config, data, device), folder, True
    inputs = inputs or generator_inputs(config, data)
    backend = train_backend(config, data, device, inputs.images, inputs.masks, progress)
    _save_generator(backend, folder, config)
    return backend, folder, False


def _save_generator(backend: Any, folder: Path, config: GenerateConfig) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        backend.save(tmp)
        marker = {f: getattr(config, f) for f in GENERATOR_FIELDS}
        (tmp / "COMPLETE").write_text(json.dumps(marker | {"fingerprint": backend.fingerprint()}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except OSError as exc:
        raise RuntimeError(
            f"could not save the trained generator to {folder} ({exc}): free space or set "
            "EIBACL_CACHE to a writable folder"
        ) from exc


def recipe_params(config: GenerateConfig) -> RecipeParams:
    """The recipes' settings from the generate parameters."""
    return RecipeParams(extrapolate_factor=config.extrapolate_factor)


def set_key(
    config: GenerateConfig, data: TrainingData, backend_fingerprint: str
) -> SyntheticSetKey:
    return SyntheticSetKey(
        data_fingerprint=data.split.source_fingerprint,
        split_fingerprint=data.split.fingerprint(),
        settings=generation_settings(
            num_synthetic=config.num_synthetic,
            strengths=strength_list(config.strength),
            num_near_ood=config.num_near_ood,
            near_ood_recipes=parse_recipes(config.near_ood_recipes),
            guidance_scale=config.guidance_scale,
            seed=config.generator_seed,
            use_masks=_use_masks(config),
            recipe_params=recipe_params(config),
            sources=sources_settings(config),
        ),
        backend_fingerprint=backend_fingerprint,
    )


def sources_settings(config: GenerateConfig) -> dict[str, Any] | None:
    """How the generator's inputs are made, in the set's key (SD only: the ddpm's sets keep
    their keys)."""
    if config.generator != "stable-diffusion":
        return None
    return {"version": 2, "mask_dilation": config.mask_dilation}


def lookup_synthetic_set(config: GenerateConfig, data: TrainingData) -> Path | None:
    """The complete set these settings describe, if both it and its generator are cached."""
    folder = generator_dir(config, data)
    if not (folder / "COMPLETE").is_file():
        return None
    fingerprint = json.loads((folder / "COMPLETE").read_text())["fingerprint"]
    found = set_key(config, data, fingerprint).directory(cache_dir() / "synthetic")
    return found if is_complete(found) else None


def _use_masks(config: GenerateConfig) -> bool:
    return config.use_masks and config.generator == "stable-diffusion"


def ensure_synthetic_set(
    config: GenerateConfig,
    data: TrainingData,
    device: torch.device,
    progress: bool = True,
) -> GenerateResult:
    """Find the set these settings describe, or make (or finish) it. No MLflow here."""
    recipes = parse_recipes(config.near_ood_recipes)
    for recipe in recipes:
        resolve_recipe(recipe)
    with distributed.primary_first():  # rank 0 writes the crops' cache, the others read it
        inputs = generator_inputs(config, data)
    log.info("generate: %s", inputs.describe(data.imageset.image_size))
    if config.generator == "stable-diffusion":
        from eibacl.generate.backends.stable_diffusion import check_inpainting

        check_inpainting(config.sd_model, inputs.mask_kind)  # before any training
    with distributed.primary_first():  # torchrun: rank 0 trains it, the others load it
        backend, generator_dir, generator_reused = load_or_train_generator(
            config, data, device, progress, inputs
        )
    key = set_key(config, data, backend.fingerprint())
    folder = key.directory(cache_dir() / "synthetic")
    reused = is_complete(folder)
    if not reused:
        _make_set(config, data, backend, inputs, key, folder, progress)
    synthetic = SyntheticSet.open(folder)
    kinds = synthetic.kinds
    counts = {
        "id": sum(k == "id" for k in kinds),
        "near_ood": sum(k == "near_ood" for k in kinds),
    }
    with distributed.primary_first():  # rank 0 computes it, the others read it
        quality = _quality(folder, synthetic, data, device, memorisation_pool(config, data))
    return GenerateResult(
        folder,
        key.digest,
        reused,
        counts,
        quality,
        backend,
        generator_dir,
        generator_reused,
        inputs=inputs,
    )


def _make_set(
    config: GenerateConfig,
    data: TrainingData,
    backend: GeneratorBackend,
    inputs: GeneratorInputs,
    key: SyntheticSetKey,
    folder: Path,
    progress: bool,
) -> None:
    """Make (or finish) the set from the generator's inputs; variants at image_size."""
    generate_synthetic_set(
        backend,
        inputs.images,
        data.train_y,
        data.split.train,
        list(data.split.id_classes),
        num_synthetic=config.num_synthetic,
        strengths=strength_list(config.strength),
        num_near_ood=config.num_near_ood,
        near_ood_recipes=parse_recipes(config.near_ood_recipes),
        guidance_scale=config.guidance_scale,
        seed=config.generator_seed,
        out_dir=folder,
        progress=progress,
        masks=inputs.masks if _use_masks(config) else None,
        key=key,
        across_ranks=distributed.world_size() > 1,  # torchrun: each rank a share
        recipe_params=recipe_params(config),
        sources=sources_settings(config),
        output_size=data.imageset.image_size,
    )


def _quality(
    folder: Path,
    synthetic: SyntheticSet,
    data: TrainingData,
    device: torch.device,
    pool: torch.Tensor | None = None,
) -> dict[str, float]:
    """Quality and judge metrics, computed once per set and kept beside it (with the judge's
    per-image verdicts, `judge.npz`, and its histogram, `samples/judge_scores.png`)."""
    path = folder / QUALITY_FILE
    if path.is_file() and (folder / JUDGE_FILE).is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    classifier = train_reference_classifier(
        data.train_x, data.train_y, data.num_classes, device=device
    )
    quality = synthetic_quality(
        classifier,
        synthetic.images,
        synthetic.labels,
        synthetic.kinds,
        synthetic.recipes,
        strengths=synthetic.strengths,
        class_weights=conditioning_weights(
            synthetic.rows, data.num_classes, recipe_params_of(synthetic.settings)
        ),
        real_val_images=data.val_x,
        real_val_labels=data.val_y,
    )
    near_val_x = data.side("ood_val")[0]
    judge = _fitted_judge(data, classifier, near_val_x, pool)
    groups = synthetic_groups(
        synthetic.images, synthetic.labels, synthetic.kinds, synthetic.recipes, synthetic.strengths
    )
    diagnostics = {"real_ood_val": (near_val_x, None)}
    far = far_ood_images(data)
    if far is not None:
        diagnostics["real_far"] = (far, None)
    metrics, scores = judge_report(judge, groups | diagnostics)
    shown = {k: v for k, v in scores.items() if k.count("/") == 0 or k.startswith("near_ood/")}
    verdict = verdicts(judge, synthetic.images, synthetic.labels)
    quality |= metrics | {"judge/seconds": time.perf_counter() - start}
    try:
        (folder / SAMPLES_DIR).mkdir(exist_ok=True)
        judge_figure(judge, shown).savefig(
            folder / SAMPLES_DIR / "judge_scores.png", dpi=100, bbox_inches="tight"
        )
        closest_pairs_figure(judge, synthetic.images).savefig(
            folder / SAMPLES_DIR / "closest_pairs.png", dpi=100, bbox_inches="tight"
        )
        save_verdicts(folder / JUDGE_FILE, verdict)
        path.write_text(json.dumps(quality, indent=1))
    except OSError:
        log.warning("could not write %s; quality will be recomputed next time", path)
    return quality


def _fitted_judge(
    data: TrainingData, classifier: Any, near_val_x: torch.Tensor, pool: torch.Tensor | None
) -> Judge:
    judge = fit_judge(
        data.train_x,
        data.train_y,
        data.val_x,
        data.num_classes,
        classifier=classifier,
        near_val_x=near_val_x,
    )
    if pool is not None:  # a prior's generator may reproduce the pool it learned from
        add_pool(judge, pool, calibration=data.val_x)
    return judge


def memorisation_pool(config: GenerateConfig, data: TrainingData) -> torch.Tensor | None:
    """The pool images a prior's synthetic images are checked against for near-duplicates
    (`prior_pool`, the pool the shipped prior learned from at the defaults); None without
    a prior or a pool."""
    if prior_identity(config, data) is None:
        return None
    pool = load_unlabelled_pool(config.prior_pool, data.imageset, data.split)
    return None if pool is None else pool.images


def far_ood_images(data: TrainingData, limit: int = 1000) -> torch.Tensor | None:
    """Up to `limit` real far-OOD images (`far_ood=auto`: MNIST for Fashion-MNIST, none for
    folder data), for the judge's diagnostics only: never a filter."""
    spec = resolve_far_ood("auto", str(data.split.params.get("data", "")))
    try:
        far = load_far_ood_set(spec, data.imageset.image_size, data.imageset.channels)
    except (OSError, ImportError, RuntimeError, ValueError) as exc:
        log.warning("judge: no far-OOD diagnostic (%s)", exc)
        return None
    return None if far is None else far.images[:limit]


def sample_figures(
    config: GenerateConfig,
    data: TrainingData,
    backend: GeneratorBackend,
    inputs: GeneratorInputs | None = None,
) -> dict[str, Any]:
    """Fresh samples for the eye: one source per class at every strength and recipe (made
    from the generator's inputs, shown at image_size like the set)."""
    names = list(data.split.id_classes)
    first = [int((data.train_y == c).nonzero()[0]) for c in range(len(names))]
    sources = data.train_x[first]
    given = sources if inputs is None else inputs.images[first]
    size = data.imageset.image_size

    def vary(rows: slice, weights: torch.Tensor, strength: float, **kw: Any) -> torch.Tensor:
        out = backend.img2img(
            given[rows], weights, strength, guidance_scale=config.guidance_scale, **kw
        )
        return resize_uint8(out, size)

    k = len(names)
    onehot = torch.eye(k)
    seeds = list(range(len(first)))
    by_strength = {
        s: vary(slice(None), onehot, s, seeds=seeds)
        for s in sorted(set(strength_list(config.strength)) | {1.0})
    }
    figures = {
        "samples/variants_by_strength.png": variants_grid_figure(sources, by_strength, names)
    }
    by_recipe = {}
    rng = np.random.default_rng(config.generator_seed)
    params = recipe_params(config)
    for spec in parse_recipes(config.near_ood_recipes):
        recipe, strength = resolve_recipe(spec)
        variants = []
        for c in range(k):
            weights, value = recipe.build(c, k, rng, strength=strength, params=params)
            negative = recipe.negative_weights(c, k)
            extra = {} if negative is None else {"negative_weights": negative[None]}
            variants.append(vary(slice(c, c + 1), weights[None], value, seeds=[c], **extra))
        by_recipe[spec] = torch.cat(variants)
    if by_recipe:
        figures["samples/near_ood_by_recipe.png"] = near_ood_grid_figure(
            sources, by_recipe, source_names=names
        )
    return figures


def sample_grids(config: GenerateConfig, data: TrainingData, result: GenerateResult) -> Path:
    """The sample grids of a set, drawn once and kept beside it: a reused set shows the
    same pictures without sampling again."""
    folder = result.set_dir / SAMPLES_DIR
    if not (folder / "COMPLETE").is_file():
        folder.mkdir(exist_ok=True)
        for path, figure in sample_figures(config, data, result.backend, result.inputs).items():
            figure.savefig(folder / Path(path).name, dpi=100, bbox_inches="tight")
        (folder / "COMPLETE").write_text("")
    return folder


def generate(config: GenerateRunConfig, nested: bool = False) -> GenerateResult:
    """The `generate` entry point: an MLflow run around `ensure_synthetic_set`."""
    distributed.init_from_env()  # under torchrun: join the group (else a no-op)
    tags = {names.ENTRY_TAG: "generate", names.GENERATOR_TAG: config.generator}
    with tracking.start_run(
        run_name=f"generate-{config.generator}", tags=tags, nested=nested
    ) as run:
        start = time.perf_counter()
        with distributed.primary_first():  # rank 0 fills the data cache
            data = prepare_data(config)
        tracking.log_params(dataclasses.asdict(config))
        digest = tracking.params_digest(dataclasses.asdict(config))
        tracking.set_tags({names.PARAMS_TAG: digest})
        tracking.end_stale_runs("generate", digest)  # an earlier one killed with -9
        log_data(data)
        tracking.set_tags({"eibacl.generator_prior": say_prior(config, data)})
        device = distributed.local_device(resolve_device(config.device))
        result = ensure_synthetic_set(config, data, device, progress=config.progress)
        result.run_id = run.info.run_id
        tracking.set_tags(
            {
                names.SET_DIR_TAG: str(result.set_dir),
                names.SET_KEY_TAG: result.key[:16],
                names.SET_REUSED_TAG: result.reused,
                names.GENERATOR_DIR_TAG: str(result.generator_dir),
            }
        )
        tracking.log_metrics(
            {
                "synthetic/id_count": result.counts["id"],
                "synthetic/near_ood_count": result.counts["near_ood"],
                "synthetic/reused": float(result.reused),
                "generate/seconds": time.perf_counter() - start,
            }
            | result.generator_metrics()
            | result.quality
        )
        if result.inputs is not None:
            tracking.set_tags({"generator/masks": result.inputs.mask_kind})
        tracking.log_artifact(result.set_dir / "manifest.csv", "synthetic_set")
        tracking.log_artifact(result.set_dir / "settings.json", "synthetic_set")
        if not result.generator_reused:
            for path in sorted(result.generator_dir.iterdir()):
                tracking.log_artifact(path, "generator")
        if distributed.is_primary():
            for path in sorted(sample_grids(config, data, result).glob("*.png")):
                tracking.log_artifact(path, SAMPLES_DIR)
        log.info(
            "synthetic set %s (%s): %s, quality %s",
            result.set_dir,
            "reused" if result.reused else "made",
            result.counts,
            {k: round(v, 3) for k, v in result.quality.items() if k.count("/") <= 2},
        )
        return result
