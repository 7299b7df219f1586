"""DA-Fusion augmentation into a synthetic set, and the sample-grid figures."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch

from eibacl.generate.backends.ddpm import DDPMBackend
from eibacl.generate.dafusion.augment import (
    conditioning_weights,
    derive_seed,
    generate_synthetic_set,
    generation_settings,
)
from eibacl.generate.dafusion.grids import near_ood_grid_figure, variants_grid_figure
from eibacl.generate.dafusion.synthetic_set import SyntheticSet


class RecordingBackend:
    """Deterministic per (image, weights, strength, seed); records every call."""

    name = "recording"

    def __init__(self):
        self.calls: list[dict] = []

    def fingerprint(self) -> str:
        return "r" * 64

    def img2img(self, images, class_weights, strength, *, guidance_scale, seeds, masks=None):
        self.calls.append(
            dict(weights=class_weights.clone(), strength=strength, seeds=list(seeds), masks=masks)
        )
        shift = torch.tensor([s % 97 for s in seeds]).view(-1, 1, 1, 1)
        return ((images.int() + shift + int(strength * 10)) % 256).to(torch.uint8)


def _data(n: int = 9):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return images, labels, [f"img/{i}" for i in range(n)], ["cat", "dog", "fox"]


def _run(backend, out_dir, data=None, **over):
    images, labels, ids, names = data or _data()
    kwargs = dict(
        num_synthetic=3,
        strengths=[0.25, 0.5, 0.75],
        num_near_ood=2,
        near_ood_recipes=["class-mix", "other-class", "high-strength"],
        guidance_scale=3.0,
        seed=7,
        out_dir=out_dir,
        batch_size=5,
        progress=False,
    )
    kwargs.update(over)
    return generate_synthetic_set(backend, images, labels, ids, names, **kwargs)


def test_counts_kinds_and_recipes(tmp_path):
    backend = RecordingBackend()
    syn = SyntheticSet.open(_run(backend, tmp_path / "a"))
    assert len(syn) == 9 * 3 + 9 * 2
    kinds = Counter(syn.kinds)
    assert kinds == {"id": 27, "near_ood": 18}
    per_source = Counter(zip(syn.source_ids, syn.kinds))
    assert all(per_source[(f"img/{i}", "id")] == 3 for i in range(9))
    assert all(per_source[(f"img/{i}", "near_ood")] == 2 for i in range(9))
    recipes = Counter(r for r, k in zip(syn.recipes, syn.kinds) if k == "near_ood")
    assert recipes == {"class-mix": 6, "other-class": 6, "high-strength": 6}  # spread evenly
    assert set(syn.strengths[~syn.is_near_ood].tolist()) <= {0.25, 0.5, 0.75}
    assert syn.images.shape == (45, 1, 8, 8) and syn.images.dtype == torch.uint8
    # labels are the sources' labels (near-OOD rows too; `kinds` says what they are)
    images, labels, ids, _ = _data()
    assert syn.labels.tolist() == [labels[ids.index(s)].item() for s in syn.source_ids]
    # every backend call got one strength and at most batch_size images
    assert all(len(c["seeds"]) <= 5 for c in backend.calls)


def test_seeds_are_derived_and_results_deterministic(tmp_path):
    a = SyntheticSet.open(_run(RecordingBackend(), tmp_path / "a"))
    b = SyntheticSet.open(_run(RecordingBackend(), tmp_path / "b", batch_size=2))
    assert a.synthetic_ids == b.synthetic_ids
    assert torch.equal(a.images, b.images)
    for row in a.rows:
        index = int(row.synthetic_id[-3:])
        assert row.seed == derive_seed(7, row.source_id, row.kind, index)
    assert len(set(a.seeds)) == len(a)
    c = SyntheticSet.open(_run(RecordingBackend(), tmp_path / "c", seed=8))
    assert a.seeds != c.seeds


def test_conditioning_matches_what_the_backend_got(tmp_path):
    backend = RecordingBackend()
    syn = SyntheticSet.open(_run(backend, tmp_path / "a"))
    given = {}
    for call in backend.calls:
        for seed, weights in zip(call["seeds"], call["weights"]):
            given[seed] = weights
    replayed = conditioning_weights(syn.rows, 3)
    for row, weights in zip(syn.rows, replayed):
        assert torch.equal(given[row.seed], weights)
        if row.recipe == "class-mix":
            assert weights[row.label] == 0.5 and (weights == 0.5).sum() == 2
        elif row.recipe == "other-class":
            assert weights[row.label] == 0 and weights.sum() == 1
        else:
            assert weights[row.label] == 1
    strengths = {r.recipe: r.strength for r in syn.rows if r.kind == "near_ood"}
    assert strengths["high-strength"] == 1.0


def test_recipe_strength_override_and_masks(tmp_path):
    backend = RecordingBackend()
    images, labels, ids, names = _data()
    masks = torch.ones(9, 1, 8, 8)
    syn = SyntheticSet.open(
        _run(
            backend,
            tmp_path / "a",
            num_synthetic=0,
            num_near_ood=1,
            near_ood_recipes=["class-mix@0.6"],
            masks=masks,
        )
    )
    assert set(syn.recipes) == {"class-mix@0.6"} and set(syn.strengths.tolist()) == {0.6}
    assert all(
        c["masks"] is not None and c["masks"].shape[0] == len(c["seeds"]) for c in backend.calls
    )
    assert syn.settings["generation"]["use_masks"] is True


@pytest.mark.parametrize(
    ("over", "match"),
    [
        (dict(num_synthetic=-1), "num_synthetic must be >= 0"),
        (dict(num_near_ood=-2), "num_near_ood must be >= 0"),
        (dict(strengths=[0.5, 1.5]), r"strength must be in \(0, 1\], got 1.5"),
        (dict(strengths=[]), "at least one strength"),
        (dict(near_ood_recipes=["blend"]), "near_ood_recipes: .*valid names: away, class-mix"),
        (dict(near_ood_recipes=[]), "no near-OOD recipe"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_invalid_settings(tmp_path, over, match):
    with pytest.raises(ValueError, match=match):
        _run(RecordingBackend(), tmp_path / "x", **over)
    assert not (tmp_path / "x").exists()


def test_a_class_without_images_is_named(tmp_path):
    images, labels, ids, _ = _data()
    labels = torch.zeros_like(labels)  # only "cat" has images
    with pytest.raises(ValueError, match="'dog', 'fox' have no training images"):
        _run(RecordingBackend(), tmp_path / "x", data=(images, labels, ids, ["cat", "dog", "fox"]))


def test_duplicate_source_ids_are_refused(tmp_path):
    images, labels, ids, names = _data()
    ids[1] = ids[0]
    with pytest.raises(ValueError, match="unique"):
        _run(RecordingBackend(), tmp_path / "x", data=(images, labels, ids, names))


def test_generation_settings_are_plain_json():
    settings = generation_settings(
        num_synthetic=2,
        strengths=(0.5,),
        num_near_ood=1,
        near_ood_recipes=("class-mix",),
        guidance_scale=3,
        seed=0,
    )
    assert settings["strengths"] == [0.5] and settings["guidance_scale"] == 3.0
    assert settings["near_ood_recipes"] == ["class-mix"] and settings["use_masks"] is False


def test_with_the_ddpm_backend(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images, labels, ids, names = _data(6)
        images = torch.nn.functional.interpolate(images.float(), size=16).to(torch.uint8)
        backend = DDPMBackend(
            16,
            1,
            3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            attention=False,
            inference_steps=4,
        )
        syn = SyntheticSet.open(
            _run(backend, tmp_path / "d", data=(images, labels, ids, names), num_synthetic=1)
        )
    finally:
        torch.set_num_threads(before)
    assert syn.images.shape == (18, 1, 16, 16)
    assert {r.backend for r in syn.rows} == {"ddpm"}
    assert {r.model_fingerprint for r in syn.rows} == {backend.fingerprint()}


def test_grid_figures():
    sources = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    variants = {s: torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8) for s in (0.25, 0.75)}
    fig = variants_grid_figure(sources, variants, ["a", "b", "c"])
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["source", "t0=0.25", "t0=0.75"]
    assert fig.axes[3].get_ylabel() == "b"
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    fig2 = near_ood_grid_figure(
        rgb, {"class-mix": rgb, "other-class": rgb}, source_names=["x", "y"]
    )
    assert len(fig2.axes) == 3 * 2
    assert [fig2.axes[i * 2].get_ylabel() for i in range(3)] == [
        "source",
        "class-mix",
        "other-class",
    ]
    buffer = io.BytesIO()
    fig2.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="one variant per source"):
        variants_grid_figure(sources, {0.5: sources[:2]}, ["a", "b", "c"])


class GuidingBackend(RecordingBackend):
    """A RecordingBackend that also takes (and records) source-aware guidance."""

    def img2img(
        self,
        images,
        class_weights,
        strength,
        *,
        guidance_scale,
        seeds,
        masks=None,
        negative_weights=None,
    ):
        out = super().img2img(
            images, class_weights, strength, guidance_scale=guidance_scale, seeds=seeds
        )
        self.calls[-1]["negative"] = None if negative_weights is None else negative_weights.clone()
        return out


def test_away_and_extrapolate_reach_the_backend_and_replay(tmp_path):
    from eibacl.generate.dafusion.augment import recipe_params_of
    from eibacl.generate.dafusion.recipes import RecipeParams

    backend = GuidingBackend()
    params = RecipeParams(extrapolate_factor=2.0)
    syn = SyntheticSet.open(
        _run(
            backend,
            tmp_path / "a",
            num_synthetic=1,
            near_ood_recipes=["away", "extrapolate", "class-mix@0.75"],
            recipe_params=params,
            batch_size=64,
        )
    )
    assert syn.settings["generation"]["extrapolate_factor"] == 2.0
    assert recipe_params_of(syn.settings) == params
    by_seed = {}
    for call in backend.calls:
        for i, seed in enumerate(call["seeds"]):
            negative = None if call["negative"] is None else call["negative"][i]
            by_seed[seed] = (call["weights"][i], negative)
    replayed = conditioning_weights(syn.rows, 3, recipe_params_of(syn.settings))
    null = torch.tensor([0.0, 0.0, 0.0, 1.0])
    for row, weights in zip(syn.rows, replayed):
        given, negative = by_seed[row.seed]
        assert torch.equal(given[:3], weights)
        if row.recipe == "away":  # target the null, guide away from the source's class
            assert torch.equal(given, null) and negative[row.label] == 1 and negative.sum() == 1
        elif row.recipe == "extrapolate":
            assert weights[row.label] == 3.0 and weights.min() == -2.0
            assert negative is None or torch.equal(negative, null)
        elif negative is not None:  # batched with an away row: the usual null negative
            assert torch.equal(negative, null) and given[3] == 0
    assert any(c["negative"] is not None for c in backend.calls)


def test_recipe_settings_key_a_set_only_when_used():
    common = dict(num_synthetic=1, strengths=[0.5], num_near_ood=1, guidance_scale=3.0, seed=0)
    from eibacl.generate.dafusion.recipes import RecipeParams

    plain = generation_settings(near_ood_recipes=["class-mix"], **common)
    assert "extrapolate_factor" not in plain  # sets made before the recipe keep their key
    assert plain == generation_settings(
        near_ood_recipes=["class-mix"], recipe_params=RecipeParams(3.0), **common
    )
    one = generation_settings(near_ood_recipes=["extrapolate"], **common)
    two = generation_settings(
        near_ood_recipes=["extrapolate"], recipe_params=RecipeParams(2.0), **common
    )
    assert one["extrapolate_factor"] == 1.0 and two["extrapolate_factor"] == 2.0
