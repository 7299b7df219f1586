"""Near-OOD and in-distribution recipes: registry, parsing and what each builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eibacl.generate.dafusion.recipes import (
    ID,
    NEAR_OOD_RECIPES,
    RECIPES,
    RecipeParams,
    get_recipe,
    parse_recipes,
    resolve_recipe,
)


def test_registry_names_and_kinds():
    assert set(NEAR_OOD_RECIPES) == {
        "high-strength",
        "class-mix",
        "other-class",
        "away",
        "extrapolate",
    }
    assert all(r.kind == "near_ood" for r in NEAR_OOD_RECIPES.values())
    assert RECIPES["id"] is ID and ID.kind == "id"
    assert get_recipe("class-mix") is NEAR_OOD_RECIPES["class-mix"]
    with pytest.raises(ValueError, match="valid recipes"):
        get_recipe("nope")


def test_defaults_are_strong_enough_to_leave_the_class():
    # A 50/50 mix at 0.75 stayed the source class 84% of the time in the prototype.
    assert NEAR_OOD_RECIPES["high-strength"].default_strength == 1.0
    assert NEAR_OOD_RECIPES["class-mix"].default_strength > 0.75
    # ...but not so strong that "other-class" just draws an image of the other class.
    assert 0.6 <= NEAR_OOD_RECIPES["other-class"].default_strength < 0.9
    for recipe in NEAR_OOD_RECIPES.values():
        assert len(recipe.description) > 40


def test_id_recipe_draws_strength_from_the_list():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        weights, strength = ID.build(2, 4, rng, strengths=[0.25, 0.5, 0.75])
        assert torch.equal(weights, torch.tensor([0.0, 0.0, 1.0, 0.0]))
        seen.add(strength)
    assert seen == {0.25, 0.5, 0.75}
    with pytest.raises(ValueError, match="strengths"):
        ID.build(0, 4, rng)


def test_high_strength_is_own_class_at_full_strength():
    weights, strength = NEAR_OOD_RECIPES["high-strength"].build(1, 3, np.random.default_rng(0))
    assert torch.equal(weights, torch.tensor([0.0, 1.0, 0.0])) and strength == 1.0


def test_class_mix_is_half_source_half_another_class():
    rng = np.random.default_rng(0)
    partners = set()
    for _ in range(60):
        weights, strength = NEAR_OOD_RECIPES["class-mix"].build(2, 5, rng)
        assert weights[2] == 0.5 and weights.sum() == 1.0 and (weights == 0.5).sum() == 2
        partners.add(int(torch.nonzero((weights == 0.5) & (torch.arange(5) != 2))[0]))
        assert strength == NEAR_OOD_RECIPES["class-mix"].default_strength
    assert partners == {0, 1, 3, 4}


def test_other_class_is_a_one_hot_of_another_class():
    rng = np.random.default_rng(1)
    targets = set()
    for _ in range(60):
        weights, _ = NEAR_OOD_RECIPES["other-class"].build(0, 4, rng)
        assert weights.sum() == 1.0 and weights[0] == 0.0
        targets.add(int(weights.argmax()))
    assert targets == {1, 2, 3}


def test_recipes_are_deterministic_per_rng_seed():
    recipe = NEAR_OOD_RECIPES["other-class"]
    a = [recipe.build(3, 10, np.random.default_rng(s))[0] for s in range(20)]
    b = [recipe.build(3, 10, np.random.default_rng(s))[0] for s in range(20)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({int(x.argmax()) for x in a}) > 1


def test_recipes_needing_another_class_refuse_one_class():
    with pytest.raises(ValueError, match="at least 2"):
        NEAR_OOD_RECIPES["class-mix"].build(0, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside"):
        NEAR_OOD_RECIPES["other-class"].build(5, 3, np.random.default_rng(0))


def test_parse_recipes():
    assert parse_recipes("class-mix,other-class") == ["class-mix", "other-class"]
    assert parse_recipes(" high-strength , class-mix@0.8 ") == ["high-strength", "class-mix@0.8"]
    assert parse_recipes("") == []
    assert parse_recipes(["other-class"]) == ["other-class"]
    with pytest.raises(ValueError) as info:
        parse_recipes("class-mix,blend")
    message = str(info.value)
    assert "'blend'" in message
    assert "near_ood_recipes" in message
    for name in ("class-mix", "high-strength", "other-class", "away", "extrapolate"):
        assert name in message
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        parse_recipes("class-mix@1.5")
    with pytest.raises(ValueError):
        parse_recipes("id")  # in-distribution is not a near-OOD recipe


def test_resolve_recipe_override_strength():
    recipe, strength = resolve_recipe("other-class@0.6")
    assert recipe.name == "other-class" and strength == 0.6
    weights, used = recipe.build(0, 3, np.random.default_rng(0), strength=strength)
    assert used == 0.6 and weights[0] == 0.0


def test_away_targets_the_null_and_guides_away_from_the_source():
    recipe = NEAR_OOD_RECIPES["away"]
    weights, strength = recipe.build(1, 3, np.random.default_rng(0))
    assert torch.equal(weights, torch.tensor([0.0, 0.0, 0.0, 1.0]))  # K + 1: the null last
    assert torch.equal(recipe.negative_weights(1, 3), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert strength == 0.75
    assert NEAR_OOD_RECIPES["class-mix"].negative_weights(1, 3) is None
    assert parse_recipes("away@0.6") == ["away@0.6"]


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_extrapolate_goes_past_the_source_away_from_another_class(factor):
    recipe = NEAR_OOD_RECIPES["extrapolate"]
    rng = np.random.default_rng(0)
    others = set()
    for _ in range(40):
        weights, _ = recipe.build(2, 4, rng, params=RecipeParams(extrapolate_factor=factor))
        assert weights.sum().item() == pytest.approx(1.0)
        assert weights[2].item() == pytest.approx(1.0 + factor)
        (other,) = torch.nonzero(weights < 0).flatten().tolist()
        assert weights[other].item() == pytest.approx(-factor) and other != 2
        others.add(other)
    assert others == {0, 1, 3}
