"""Diffusion generators (embedded DDPM, Stable Diffusion), DA-Fusion augmentation,
near-OOD recipes, the on-disk synthetic set, and checks of what was generated.

Submodules are imported lazily: ``import eibacl.generate.synthetic_set`` does not pay
for importing diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GeneratorBackend": "backend",
    "parse_strengths": "backend",
    "validate_strength": "backend",
    "DDPMBackend": "ddpm",
    "DDPMConfig": "ddpm",
    "NEAR_OOD_RECIPES": "recipes",
    "RECIPES": "recipes",
    "Recipe": "recipes",
    "get_recipe": "recipes",
    "parse_recipes": "recipes",
    "resolve_recipe": "recipes",
    "ManifestRow": "synthetic_set",
    "MANIFEST_COLUMNS": "synthetic_set",
    "SyntheticSet": "synthetic_set",
    "SyntheticSetKey": "synthetic_set",
    "SyntheticSetWriter": "synthetic_set",
    "find": "synthetic_set",
    "is_complete": "synthetic_set",
    "derive_seed": "augment",
    "generate_synthetic_set": "augment",
    "generation_settings": "augment",
    "ReferenceClassifier": "quality",
    "synthetic_quality": "quality",
    "train_reference_classifier": "quality",
    "near_ood_grid_figure": "grids",
    "variants_grid_figure": "grids",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
