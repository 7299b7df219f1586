"""Diffusion generators (embedded DDPM, Stable Diffusion), DA-Fusion augmentation,
near-OOD recipes, the on-disk synthetic set, and checks of what was generated.

Submodules are imported lazily: ``import eibacl.generate.dafusion.synthetic_set`` does not pay
for importing diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GeneratorBackend": "backends.protocol",
    "parse_strengths": "backends.protocol",
    "validate_strength": "backends.protocol",
    "DDPMBackend": "backends.ddpm",
    "DDPMConfig": "backends.ddpm",
    "NEAR_OOD_RECIPES": "dafusion.recipes",
    "RECIPES": "dafusion.recipes",
    "Recipe": "dafusion.recipes",
    "get_recipe": "dafusion.recipes",
    "parse_recipes": "dafusion.recipes",
    "resolve_recipe": "dafusion.recipes",
    "ManifestRow": "dafusion.synthetic_set",
    "MANIFEST_COLUMNS": "dafusion.synthetic_set",
    "SyntheticSet": "dafusion.synthetic_set",
    "SyntheticSetKey": "dafusion.synthetic_set",
    "SyntheticSetWriter": "dafusion.synthetic_set",
    "find": "dafusion.synthetic_set",
    "is_complete": "dafusion.synthetic_set",
    "derive_seed": "dafusion.augment",
    "generate_synthetic_set": "dafusion.augment",
    "generation_settings": "dafusion.augment",
    "ReferenceClassifier": "judge.quality",
    "synthetic_quality": "judge.quality",
    "train_reference_classifier": "judge.quality",
    "near_ood_grid_figure": "dafusion.grids",
    "variants_grid_figure": "dafusion.grids",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
