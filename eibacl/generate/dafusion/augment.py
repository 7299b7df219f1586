"""DA-Fusion augmentation: turn every real training image into synthetic variants.

For each real image: ``num_synthetic`` in-distribution variants (own class, strength drawn
per variant from ``strengths``) and ``num_near_ood`` near-OOD variants (recipes of
`eibacl.generate.dafusion.recipes`, spread evenly over the set). Every variant has its own seed,
derived from ``(seed, source_id, kind, index)``, and so does its recipe draw: an
interrupted run that is started again makes exactly the images it would have made.

Under torchrun (``across_ranks=True``) every rank makes a share of the batches one process
would make, in a shard folder of its own, and rank 0 merges the shards into the one set, in
the order one process writes it: the set is the same whether one process made it or many.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eibacl.data.resize import resize_uint8
from eibacl.generate.backends.protocol import GeneratorBackend, validate_strength
from eibacl.generate.dafusion.recipes import (
    ID,
    NEAR_OOD_RECIPES,
    RecipeParams,
    parse_recipes,
    resolve_recipe,
)
from eibacl.generate.dafusion.synthetic_set import (
    IMAGES_DIR,
    ManifestRow,
    SyntheticSetKey,
    SyntheticSetWriter,
    safe_name,
)

SETTINGS_VERSION = 1
SHARDS_SUFFIX = ".shards"  # <set folder>.shards/rank-<k>-of-<n>/: one writer per rank


def derive_seed(seed: int, source_id: str, kind: str, index: int) -> int:
    """A 31-bit seed that depends only on its arguments (not on order or batch)."""
    digest = hashlib.sha256(f"{seed}|{source_id}|{kind}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def generation_settings(
    *,
    num_synthetic: int,
    strengths: Sequence[float],
    num_near_ood: int,
    near_ood_recipes: Sequence[str],
    guidance_scale: float,
    seed: int,
    use_masks: bool = False,
    recipe_params: RecipeParams | None = None,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings dict that, with data, split and backend fingerprints, keys a set.

    A recipe setting enters only when a recipe that reads it is used, so the sets made
    before it existed keep their keys."""
    params = recipe_params or RecipeParams()
    extra = {}
    if any(resolve_recipe(spec)[0].name == "extrapolate" for spec in near_ood_recipes):
        extra["extrapolate_factor"] = float(params.extrapolate_factor)
    if sources is not None:  # how the generator's inputs were made (SD: its own size)
        extra["sources"] = dict(sources)
    return extra | {
        "version": SETTINGS_VERSION,
        "num_synthetic": int(num_synthetic),
        "strengths": [float(s) for s in strengths],
        "num_near_ood": int(num_near_ood),
        "near_ood_recipes": list(near_ood_recipes),
        "guidance_scale": float(guidance_scale),
        "seed": int(seed),
        "use_masks": bool(use_masks),
    }


def conditioning_weights(
    rows: Sequence[ManifestRow], num_classes: int, recipe_params: RecipeParams | None = None
) -> torch.Tensor:
    """The class-weights rows (N×K) that made ``rows``, recomputed from recipe and seed.

    The manifest stores no weights; each recipe's random choice (e.g. the other class) is
    drawn from the variant's own seed, so it can be replayed exactly. The null column of a
    row (``away``'s target) is left out: such a row is all zeros, conditioned on no class.
    """
    out = torch.zeros(len(rows), num_classes)
    for i, row in enumerate(rows):
        if row.kind == "id":
            out[i, row.label] = 1.0
            continue
        recipe, _ = resolve_recipe(row.recipe)
        rng = np.random.default_rng(row.seed)
        weights, _ = recipe.build(
            row.label, num_classes, rng, strength=row.strength, params=recipe_params
        )
        out[i] = weights[:num_classes]
    return out


def recipe_params_of(settings: dict[str, Any]) -> RecipeParams:
    """The recipe settings a set was made with (its ``generation`` settings)."""
    generation = settings.get("generation", settings)
    default = RecipeParams()
    return RecipeParams(
        extrapolate_factor=float(generation.get("extrapolate_factor", default.extrapolate_factor))
    )


@dataclass
class _Task:
    source_index: int
    row: ManifestRow
    weights: torch.Tensor
    negative: torch.Tensor | None = None  # K+1 row; None = the null


def _sources_digest(source_ids: Sequence[str], labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    for sid, label in zip(source_ids, labels.tolist()):
        h.update(f"{sid}\t{label}\n".encode())
    return h.hexdigest()


def _validate(
    images: torch.Tensor,
    labels: torch.Tensor,
    source_ids: Sequence[str],
    class_names: Sequence[str],
    num_synthetic: int,
    strengths: Sequence[float],
    num_near_ood: int,
    near_ood_recipes: Sequence[str],
    batch_size: int,
    masks: torch.Tensor | None,
) -> list[str]:
    if num_synthetic < 0:
        raise ValueError(
            f"num_synthetic must be >= 0 (in-distribution variants per image), got {num_synthetic}"
        )
    if num_near_ood < 0:
        raise ValueError(
            f"num_near_ood must be >= 0 (near-OOD variants per image), got {num_near_ood}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_synthetic > 0:
        if not strengths:
            raise ValueError("strengths is empty: give at least one strength in (0, 1]")
        for s in strengths:
            validate_strength(s)
    specs = parse_recipes(list(near_ood_recipes))
    if num_near_ood > 0 and not specs:
        raise ValueError(
            "num_near_ood > 0 but no near-OOD recipe given: name at least one "
            "(" + ", ".join(sorted(NEAR_OOD_RECIPES)) + ") or set num_near_ood=0"
        )
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if len(source_ids) != n:
        raise ValueError(f"need one source id per image: {len(source_ids)} ids for {n} images")
    if len(set(source_ids)) != n:
        raise ValueError("source ids must be unique (they name the synthetic images)")
    if masks is not None and masks.shape[0] != n:
        raise ValueError(f"need one mask per image: {masks.shape[0]} masks for {n} images")
    k = len(class_names)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k}) for {k} class names")
    counts = torch.bincount(labels, minlength=k) if n else torch.zeros(k, dtype=torch.int64)
    empty = [class_names[i] for i in range(k) if counts[i] == 0]
    if empty:
        raise ValueError(
            f"class(es) {', '.join(repr(c) for c in empty)} have no training images: the "
            "generator cannot learn their conditioning; add images of them or remove them "
            "from the in-distribution classes"
        )
    return specs


def _plan(
    labels: torch.Tensor,
    source_ids: Sequence[str],
    class_names: Sequence[str],
    num_synthetic: int,
    strengths: Sequence[float],
    num_near_ood: int,
    specs: Sequence[str],
    seed: int,
    backend_name: str,
    fingerprint: str,
    recipe_params: RecipeParams | None = None,
) -> list[_Task]:
    k = len(class_names)
    tasks: list[_Task] = []
    for i, (sid, label) in enumerate(zip(source_ids, labels.tolist())):
        base = safe_name(str(sid))
        variants: list[tuple[str, int, str]] = [("id", j, ID.name) for j in range(num_synthetic)]
        variants += [
            ("near_ood", j, specs[(i * num_near_ood + j) % len(specs)]) for j in range(num_near_ood)
        ]
        for kind, j, spec in variants:
            variant_seed = derive_seed(seed, str(sid), kind, j)
            rng = np.random.default_rng(variant_seed)
            negative = None
            if kind == "id":
                weights, strength = ID.build(label, k, rng, strengths=strengths)
            else:
                recipe, override = resolve_recipe(spec)
                weights, strength = recipe.build(
                    label, k, rng, strength=override, params=recipe_params
                )
                negative = recipe.negative_weights(label, k)
            synthetic_id = f"{base}__{'id' if kind == 'id' else 'ood'}{j:03d}"
            row = ManifestRow(
                synthetic_id=synthetic_id,
                source_id=str(sid),
                label=int(label),
                class_name=class_names[label],
                kind=kind,
                recipe=spec,
                strength=float(strength),
                seed=variant_seed,
                backend=backend_name,
                model_fingerprint=fingerprint,
                file=f"{IMAGES_DIR}/{synthetic_id}.png",
            )
            tasks.append(_Task(i, row, weights, negative))
    return tasks


def generate_synthetic_set(
    backend: GeneratorBackend,
    images: torch.Tensor,
    labels: torch.Tensor,
    source_ids: Sequence[str],
    class_names: Sequence[str],
    *,
    num_synthetic: int,
    strengths: Sequence[float],
    num_near_ood: int,
    near_ood_recipes: Sequence[str],
    guidance_scale: float,
    seed: int,
    out_dir: Path | str,
    batch_size: int = 64,
    progress: bool = True,
    masks: torch.Tensor | None = None,
    key: SyntheticSetKey | None = None,
    across_ranks: bool = False,
    recipe_params: RecipeParams | None = None,
    sources: dict[str, Any] | None = None,
    output_size: int | None = None,
) -> Path:
    """Make (or finish, or reuse) the synthetic set of ``images`` in ``out_dir``.

    ``out_dir`` is the set's folder, normally ``SyntheticSetKey(...).directory(root)``;
    pass ``key`` to record it in ``settings.json``. Images with the same strength are
    batched together; variants already on disk are skipped, and a complete set is returned
    untouched. Returns ``out_dir``. With ``across_ranks`` every rank of a torchrun group
    must call this: the batches are shared out (see `_generate_across_ranks`).
    ``output_size``: the side variants are resized to before they are written (the run's
    image size, when the generator reads larger sources); ``sources`` describes those
    sources in the set's settings.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    source_ids = [str(s) for s in source_ids]
    specs = _validate(
        images, labels, source_ids, class_names, num_synthetic, strengths, num_near_ood,
        near_ood_recipes, batch_size, masks
    )  # fmt: skip
    generation = generation_settings(
        num_synthetic=num_synthetic, strengths=strengths, num_near_ood=num_near_ood,
        near_ood_recipes=specs, guidance_scale=guidance_scale, seed=seed,
        use_masks=masks is not None, recipe_params=recipe_params, sources=sources
    )  # fmt: skip
    settings = _set_settings(backend, generation, class_names, source_ids, labels, key)
    tasks = _plan(
        labels, source_ids, class_names, num_synthetic, strengths, num_near_ood, specs, seed,
        backend.name, settings["model_fingerprint"], recipe_params
    )  # fmt: skip
    job = (backend, images, masks, tasks, settings, Path(out_dir), guidance_scale, batch_size)
    if across_ranks and _world_size() > 1:
        return _generate_across_ranks(*job, progress, output_size)
    return _write_pending(*job, progress, output_size)


def _world_size() -> int:
    from eibacl import distributed

    return distributed.world_size()


def _set_settings(
    backend: GeneratorBackend,
    generation: dict[str, Any],
    class_names: Sequence[str],
    source_ids: list[str],
    labels: torch.Tensor,
    key: SyntheticSetKey | None,
) -> dict[str, Any]:
    """The set's ``settings.json``: its generation settings, generator and sources."""
    settings = {
        "generation": generation,
        "backend": backend.name,
        "model_fingerprint": backend.fingerprint(),
        "class_names": list(class_names),
        "sources_digest": _sources_digest(source_ids, labels),
        "num_sources": len(source_ids),
    }
    if key is not None:
        settings["key"] = key.to_dict()
        settings["key_digest"] = key.digest
    return settings


def _write_pending(
    backend: GeneratorBackend,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    tasks: list[_Task],
    settings: dict[str, Any],
    out_dir: Path,
    guidance_scale: float,
    batch_size: int,
    progress: bool,
    output_size: int | None,
) -> Path:
    """One process: render the variants not yet on disk, batch by batch, then finish."""
    with SyntheticSetWriter(out_dir, settings) as writer:
        done = writer.done_ids
        pending = [t for t in tasks if t.row.synthetic_id not in done]
        if not pending and writer.complete:
            return out_dir
        bar = tqdm(
            total=len(tasks),
            initial=len(tasks) - len(pending),
            desc="synthetic images",
            disable=not progress,
        )
        try:
            for strength, chunk in _batches(pending, batch_size):
                _render(
                    backend, images, masks, chunk, strength, guidance_scale, writer, output_size
                )
                bar.update(len(chunk))
        finally:
            bar.close()
        writer.finish()
    return out_dir


def _render(
    backend: GeneratorBackend,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    chunk: list[_Task],
    strength: float,
    guidance_scale: float,
    writer: SyntheticSetWriter,
    output_size: int | None = None,
) -> None:
    """Make one batch of variants (all at one strength) and write each with its row."""
    index = torch.tensor([t.source_index for t in chunk])
    width = max(len(t.weights) for t in chunk)  # K, or K+1 when a row uses the null
    weights = torch.stack([F.pad(t.weights, (0, width - len(t.weights))) for t in chunk])
    extra: dict[str, Any] = {}
    negatives = [t.negative for t in chunk if t.negative is not None]
    if negatives:  # only then, so a backend without source-aware guidance still works
        null = F.one_hot(torch.tensor(len(negatives[0]) - 1), len(negatives[0])).float()
        extra["negative_weights"] = torch.stack(
            [null if t.negative is None else t.negative for t in chunk]
        )
    out = backend.img2img(
        images[index],
        weights,
        strength,
        guidance_scale=guidance_scale,
        seeds=[t.row.seed for t in chunk],
        masks=None if masks is None else masks[index],
        **extra,
    )
    if output_size is not None:
        out = resize_uint8(out, output_size)  # as real images are brought to image_size
    for task, image in zip(chunk, out):
        writer.write(task.row, image)


def _batches(tasks: Sequence[_Task], batch_size: int) -> list[tuple[float, list[_Task]]]:
    """The batches one process makes from ``tasks``, in its order (by strength, then plan)."""
    groups: dict[float, list[_Task]] = defaultdict(list)
    for task in tasks:
        groups[task.row.strength].append(task)
    return [
        (strength, groups[strength][lo : lo + batch_size])
        for strength in sorted(groups)
        for lo in range(0, len(groups[strength]), batch_size)
    ]


def _generate_across_ranks(
    backend: GeneratorBackend,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    tasks: list[_Task],
    settings: dict[str, Any],
    out_dir: Path,
    guidance_scale: float,
    batch_size: int,
    progress: bool,
    output_size: int | None = None,
) -> Path:
    """Rank k makes batches k, k+n, k+2n, ... of the single-process batches (the same
    images in the same batches, so the same pixels) into ``<out_dir>.shards/rank-k-of-n``;
    after a barrier rank 0 merges every shard into ``out_dir`` in single-process order and
    marks it complete; a second barrier releases the others. An interrupted run resumes
    from its shards (of any process count)."""
    from eibacl import distributed
    from eibacl.generate.dafusion.synthetic_set import is_complete

    if is_complete(out_dir):
        return out_dir
    rank, world = distributed.rank(), distributed.world_size()
    shards = out_dir.with_name(out_dir.name + SHARDS_SUFFIX)
    batches = _batches(tasks, batch_size)
    mine = [batch for i, batch in enumerate(batches) if i % world == rank]
    with SyntheticSetWriter(shards / f"rank-{rank}-of-{world}", settings) as writer:
        done = writer.done_ids
        todo = [(s, [t for t in chunk if t.row.synthetic_id not in done]) for s, chunk in mine]
        total = sum(len(chunk) for _, chunk in mine)
        bar = tqdm(
            total=total,
            initial=total - sum(len(chunk) for _, chunk in todo),
            desc=f"synthetic images (rank 0 of {world})",
            disable=not progress or rank != 0,
        )
        try:
            for strength, chunk in todo:
                if not chunk:
                    continue
                _render(
                    backend, images, masks, chunk, strength, guidance_scale, writer, output_size
                )
                bar.update(len(chunk))
        finally:
            bar.close()
    distributed.barrier()
    if distributed.is_primary():
        order = [task.row.synthetic_id for _, chunk in batches for task in chunk]
        merge_shards(out_dir, settings, sorted(shards.glob("rank-*")), order)
        shutil.rmtree(shards, ignore_errors=True)
    distributed.barrier()
    return out_dir


def merge_shards(
    out_dir: Path, settings: dict[str, Any], shard_dirs: Sequence[Path], order: Sequence[str]
) -> Path:
    """Copy the images of ``shard_dirs`` (sets made with ``settings``) into ``out_dir`` in
    ``order`` (synthetic ids), then write its cache and ``COMPLETE``; refuses to finish a
    set with an image missing from every shard."""
    from eibacl.generate.dafusion.synthetic_set import _decode_png

    found: dict[str, tuple[Path, ManifestRow]] = {}
    for folder in shard_dirs:
        with SyntheticSetWriter(folder, settings) as shard:  # repairs a half-written shard
            for row in shard.rows.values():
                found.setdefault(row.synthetic_id, (folder, row))
    with SyntheticSetWriter(out_dir, settings) as writer:
        done = writer.done_ids
        missing = [sid for sid in order if sid not in done and sid not in found]
        if missing:
            raise RuntimeError(
                f"{len(missing)} synthetic image(s) (e.g. {missing[0]}) are in no shard of "
                f"{out_dir}: run the same generation again to make them"
            )
        for sid in order:
            if sid not in done:
                folder, row = found[sid]
                writer.write(row, torch.from_numpy(_decode_png(folder / row.file)))
        writer.finish()
    return out_dir
