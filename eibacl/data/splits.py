"""Seeded, reproducible splits: classes in and out of distribution, few-shot train,
validation, test, and the near-OOD sets. Views of one object never straddle a split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from eibacl.config import ConfigError, DataConfig
from eibacl.data.imageset import ImageSet

log = logging.getLogger(__name__)
SIDES = ("train", "val", "test", "ood_val", "ood_test")
AUTO = "auto"
# Fashion-MNIST's validation-time OOD classes: one garment and one shoe, as the reported
# near-OOD group (Pullover, Shirt: garments; Ankle boot: a shoe) has, so selection is tuned
# for the same kind of novelty without seeing those classes.
FASHION_MNIST_OOD_VAL = "Coat,Sandal"


@dataclass
class Split:
    """Image ids on each side, and the class groups they come from.

    Four groups of classes: `id_classes` (train/val/test), `ood_val_classes` (held out; their
    images form `ood_val`, for model selection only), `ood_classes` (held out; their images
    form `ood_test`, for reporting only), and the far-OOD set outside the
    source. A held-out class never trains, so every one of its images is used; only a source
    with its own test subset (Fashion-MNIST) keeps it: its test images for `ood_test`,
    `val_per_class` of its training images for `ood_val`. The two held-out groups are
    disjoint, so nothing that selects (knn_k, the registry's tie-break, tune's near-OOD
    objective) ever sees a class the reported near-OOD numbers are measured on."""

    id_classes: list[str]
    ood_classes: list[str]
    train: list[str]
    val: list[str]
    test: list[str]
    ood_val: list[str]
    ood_test: list[str]
    source_fingerprint: str = ""
    params: dict = field(default_factory=dict)
    ood_val_classes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        payload = {k: v for k, v in asdict(self).items() if k != "params"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def counts(self) -> dict[str, int]:
        """Images on each side."""
        return {side: len(self.side(side)) for side in SIDES}

    def to_json(self) -> str:
        extra = {"fingerprint": self.fingerprint(), "counts": self.counts()}
        return json.dumps(asdict(self) | extra, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Split:
        data = json.loads(text)
        data.pop("fingerprint", None)
        data.pop("counts", None)
        return cls(**data)

    def save(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> Split:
        return cls.from_json(Path(path).read_text())

    def side(self, name: str) -> list[str]:
        if name not in SIDES:
            raise KeyError(f"unknown split side {name!r}; sides are {SIDES}")
        return getattr(self, name)

    def indices(self, imageset: ImageSet, name: str) -> torch.Tensor:
        """Positions of a side's ids in `imageset` (which must be the source it was made from)."""
        where = imageset.index_of()
        missing = [i for i in self.side(name) if i not in where]
        if missing:
            raise ValueError(
                f"{len(missing)} images of the split's {name} side (e.g. {missing[0]!r}) are not "
                f"in {imageset.source}: the split was made from other data"
            )
        return torch.tensor([where[i] for i in self.side(name)], dtype=torch.long)

    def id_labels(self, imageset: ImageSet, indices: torch.Tensor) -> torch.Tensor:
        """Labels re-numbered 0..len(id_classes)-1 in the order of `id_classes`."""
        remap = {imageset.class_names.index(name): i for i, name in enumerate(self.id_classes)}
        return torch.tensor([remap[int(y)] for y in imageset.labels[indices]], dtype=torch.long)


def resolve_classes(
    class_names: list[str], id_spec: str, ood_spec: str, seed: int
) -> tuple[list[str], list[str]]:
    """Parse `id_classes` / `ood_classes`: names, a count drawn with `seed`, or '' (the rest)."""
    id_, ood, _ = resolve_groups(class_names, id_spec, ood_spec, "", seed)
    return id_, ood


def resolve_groups(
    class_names: list[str], id_spec: str, ood_spec: str, ood_val_spec: str, seed: int
) -> tuple[list[str], list[str], list[str]]:
    """(id, ood, ood_val) classes. `ood_val_spec` is resolved like `ood_classes` and must be
    disjoint from both other groups; '' means no validation-time OOD classes."""
    rng = random.Random(seed)
    explicit_id = _names(id_spec)
    ood = _parse_spec(ood_spec, class_names, "ood_classes", rng, exclude=explicit_id)
    ood_val = _parse_spec(
        ood_val_spec, class_names, "ood_val_classes", rng, exclude=explicit_id + ood
    )
    clash = sorted(set(ood_val) & set(ood), key=class_names.index)
    if clash:
        raise ConfigError(
            f"ood_val_classes and ood_classes share {clash}: the validation-time OOD classes "
            "(for selection) must differ from the reported near-OOD classes; pick other classes "
            "with -P ood_val_classes=<names>"
        )
    held_out = ood + ood_val
    if id_spec.strip():
        id_ = _parse_spec(id_spec, class_names, "id_classes", rng, exclude=held_out)
    else:
        id_ = [c for c in class_names if c not in held_out]
    for group, name in ((ood, "ood_classes"), (ood_val, "ood_val_classes")):
        overlap = sorted(set(id_) & set(group))
        if overlap:
            raise ConfigError(
                f"classes {overlap} are both in id_classes and {name}; a class is one or the "
                f"other: drop them from -P {name} or from -P id_classes"
            )
    if len(id_) < 2:
        raise ConfigError(
            f"id_classes resolves to {id_}: at least two in-distribution classes are needed "
            f"(available: {class_names}; held out: ood_classes={ood}, "
            f"ood_val_classes={ood_val})"
        )
    return id_, ood, ood_val


def ood_val_spec(config: DataConfig, class_names: list[str]) -> str:
    """The `ood_val_classes` spec with 'auto' resolved (see the parameter's help)."""
    spec = config.ood_val_classes.strip()
    if spec != AUTO:
        return spec
    taken = set(_names(config.ood_classes)) | set(_names(config.id_classes))
    default = _names(FASHION_MNIST_OOD_VAL)
    if all(c in class_names and c not in taken for c in default):
        return FASHION_MNIST_OOD_VAL
    spare = [c for c in class_names if c not in taken]
    ood_count = int(config.ood_classes) if config.ood_classes.strip().isdigit() else 0
    needed_id = 0 if _names(config.id_classes) else 2
    return "1" if len(spare) - ood_count - needed_id >= 1 else ""


def _names(spec: str) -> list[str]:
    spec = spec.strip()
    if not spec or spec.isdigit():
        return []
    return list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))  # no repeats


def _parse_spec(
    spec: str, class_names: list[str], param: str, rng: random.Random, exclude: list[str]
) -> list[str]:
    spec = spec.strip()
    if not spec:
        return []
    if spec.isdigit():
        count = int(spec)
        choices = [c for c in class_names if c not in exclude]
        if count > len(choices):
            raise ConfigError(
                f"{param}={count} asks for more classes than the {len(choices)} available"
            )
        return sorted(rng.sample(choices, count), key=class_names.index)
    names = _names(spec)
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ConfigError(
            f"{param}: unknown class name(s) {unknown}; the data has {class_names} "
            f"(or give a number to draw that many at random)"
        )
    return names


def make_split(imageset: ImageSet, config: DataConfig) -> Split:
    id_classes, ood_classes, ood_val_classes = resolve_groups(
        imageset.class_names,
        config.id_classes,
        config.ood_classes,
        ood_val_spec(config, imageset.class_names),
        config.split_seed,
    )
    if (
        config.ood_val_classes.strip() == AUTO
        and ood_val_classes
        and (",".join(ood_val_classes) != FASHION_MNIST_OOD_VAL)
    ):
        log.warning(
            "ood_val_classes=auto held out %s for validation-time OOD (selection only); name "
            "the class(es) with -P ood_val_classes=<names>, or '' to keep them in distribution",
            ood_val_classes,
        )
    if not ood_val_classes:
        log.warning(
            "no ood_val_classes: validation-time near-OOD metrics (val/ood/near/...) are off, so "
            "the registry tie-break and tune's near-OOD objective have nothing to read; hold out "
            "a class with -P ood_val_classes=<name>"
        )
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(imageset.labels.tolist()):
        by_class[imageset.class_names[y]].append(i)
    sides: dict[str, list[str]] = {side: [] for side in SIDES}
    for name in id_classes + ood_classes + ood_val_classes:
        members = by_class.get(name, [])
        if not members:
            raise ConfigError(f"class {name!r} has no images in {imageset.source}")
        role = "id" if name in id_classes else "ood_val" if name in ood_val_classes else "ood"
        for side, indices in _class_sides(imageset, members, name, role, config).items():
            sides[side] += [imageset.ids[i] for i in indices]
    split = Split(
        id_classes=id_classes,
        ood_classes=ood_classes,
        ood_val_classes=ood_val_classes,
        source_fingerprint=imageset.fingerprint(),
        params={k: getattr(config, k) for k in DataConfig.__dataclass_fields__},
        **sides,
    )
    warn_short_validation(split, imageset, config.val_per_class)
    return split


def _class_sides(
    imageset: ImageSet, members: list[int], name: str, role: str, config: DataConfig
) -> dict[str, list[int]]:
    """The images of class `name` on each split side; `role` is id, ood_val or ood.

    One generator per class and purpose: a class's test set never depends on shots,
    val_per_class or the other classes, so runs that vary them share one test set."""
    test_rng = _class_rng(config.split_seed, name, "test")
    if role != "id" and not _has_own_test(imageset, members):
        # A held-out class never trains: every one of its images is an OOD image.
        if role == "ood_val":
            return {"ood_val": members}
        return {"ood_test": _cap(members, config.test_per_class, test_rng)}
    pool, test = _test_split(imageset, members, config.test_fraction, test_rng, name)
    test = _cap(test, config.test_per_class, test_rng)
    rng = _class_rng(config.split_seed, name, "train")
    if role == "ood":
        return {"ood_test": test}
    if role == "ood_val":  # the source's own training subset: val_per_class of it
        return {"ood_val": _take_groups(imageset, pool, config.val_per_class, rng, exact=False)[0]}
    train, rest = _take_groups(imageset, pool, config.shots, rng)
    val, _ = _take_groups(imageset, rest, config.val_per_class, rng, exact=False)
    if len(train) < config.shots or not val:
        message = _shots_message(imageset, pool, config, name)
        raise ConfigError(f"{message}. {_objects_hint(imageset, members, test, config, name)}")
    return {"train": train, "val": val, "test": test}


def _fits(imageset: ImageSet, members: list[int], name: str, config: DataConfig) -> bool:
    """Whether in-distribution class `name` gets its shots and some validation."""
    test_rng = _class_rng(config.split_seed, name, "test")
    pool, _ = _test_split(imageset, members, config.test_fraction, test_rng, name)
    rng = _class_rng(config.split_seed, name, "train")
    train, rest = _take_groups(imageset, pool, config.shots, rng)
    return len(train) == config.shots and bool(_take_groups(imageset, rest, 1, rng)[0])


def _objects_hint(
    imageset: ImageSet, members: list[int], test: list[int], config: DataConfig, name: str
) -> str:
    """The class's objects (views, and which went to test with this split_seed), and a
    split_seed that fits the class where one of the next 100 does."""
    views: dict[str, int] = defaultdict(int)
    for i in members:
        views[imageset.groups[i]] += 1
    in_test = {imageset.groups[i] for i in test}
    listed = ", ".join(
        f"{g!r} ({n} view{'s' * (n != 1)}{', test' if g in in_test else ''})"
        for g, n in sorted(views.items())
    )
    text = f"Class {name!r} has {len(views)} objects with split_seed={config.split_seed}: {listed}"
    for seed in range(config.split_seed + 1, config.split_seed + 101):
        if _fits(imageset, members, name, replace(config, split_seed=seed)):
            return f"{text}; -P split_seed={seed} places enough of them (or add objects)"
    return f"{text}; no split_seed up to {config.split_seed + 100} fits: add objects"


def short_validation(split: Split, imageset: ImageSet, asked: int) -> dict[str, int]:
    """In-distribution classes whose validation side holds fewer than `asked` images."""
    label_of = dict(zip(imageset.ids, imageset.labels.tolist(), strict=True))
    counts = {name: 0 for name in split.id_classes}
    for image_id in split.val:
        counts[imageset.class_names[label_of[image_id]]] += 1
    return {name: n for name, n in counts.items() if n < asked}


def warn_short_validation(split: Split, imageset: ImageSet, asked: int) -> None:
    """Never silently below val_per_class: model selection reads this side."""
    short = short_validation(split, imageset, asked)
    if not short:
        return
    low, high = min(short.values()), max(short.values())
    log.warning(
        "validation holds fewer images than val_per_class=%d for %d of %d classes (%s each, "
        "e.g. %r: %d): there are not enough objects left after shots and test. Validation "
        "metrics (val/accuracy, val/knn_accuracy) that choose the champion rest on these few "
        "images; lower shots or test_fraction, add objects, or set val_per_class=%d to say "
        "this is intended",
        asked,
        len(short),
        len(split.id_classes),
        f"{low}" if low == high else f"{low}-{high}",
        min(short, key=short.get),
        low,
        low,
    )


def _class_rng(seed: int, name: str, purpose: str) -> random.Random:
    return random.Random(f"{seed}/{name}/{purpose}")  # str seeds are hashed stably (sha512)


def _groups_of(imageset: ImageSet, members: list[int], rng: random.Random) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i in members:
        groups[imageset.groups[i]].append(i)
    ordered = [groups[g] for g in sorted(groups)]
    rng.shuffle(ordered)
    return ordered


def _has_own_test(imageset: ImageSet, members: list[int]) -> bool:
    """Whether the source assigns these images to its own train/test subsets."""
    return any(imageset.subsets[i] for i in members)


def _test_split(
    imageset: ImageSet, members: list[int], fraction: float, rng: random.Random, name: str
) -> tuple[list[int], list[int]]:
    """The source's own test subset when it has one, else a share of the objects."""
    if _has_own_test(imageset, members):
        pool = [i for i in members if imageset.subsets[i] != "test"]
        test = [i for i in members if imageset.subsets[i] == "test"]
    else:
        groups = _groups_of(imageset, members, rng)
        if len(groups) < 2:
            raise ConfigError(
                f"class {name!r} has a single object ({imageset.groups[members[0]]!r}, "
                f"{len(members)} images): it cannot be split into train and test. Add images "
                "of a second object, leave the class out (name the others in -P id_classes), or, "
                "if its images are different objects, put each in its own sub-folder "
                "(<class>/<object_id>/<image>) or give each its own object_id in manifest.csv"
            )
        n_test = max(1, round(fraction * len(groups)))
        test = [i for g in groups[:n_test] for i in g]
        pool = [i for g in groups[n_test:] for i in g]
    if not test:
        raise ConfigError(f"class {name!r} has no test image")
    return pool, test


def _take_groups(
    imageset: ImageSet, members: list[int], count: int, rng: random.Random, exact: bool = True
) -> tuple[list[int], list[int]]:
    """Whole objects until `count` images; the last object's extra views are dropped (never
    given to another side) when `exact`."""
    taken: list[int] = []
    groups = _groups_of(imageset, members, rng)
    used = 0
    for group in groups:
        if len(taken) >= count:
            break
        taken += group
        used += 1
    rest = [i for g in groups[used:] for i in g]
    return (taken[:count] if exact else taken), rest


def _shots_message(imageset: ImageSet, pool: list[int], config: DataConfig, name: str) -> str:
    """Say how many shots class `name` allows: the largest value that still leaves
    val_per_class validation images (whole objects, this split_seed), and the largest that
    leaves any validation at all."""
    sizes: dict[str, int] = defaultdict(int)
    for i in pool:
        sizes[imageset.groups[i]] += 1
    if len(sizes) < 2:
        return (
            f"class {name!r} has {len(sizes)} object(s) ({len(pool)} images) left for training "
            "and validation after the test split; it needs at least 2: add images or lower "
            "test_fraction"
        )
    shots, asked = config.shots, config.val_per_class
    head = (
        f"shots={shots} is too many for class {name!r}: it has {len(pool)} images for training "
        f"and validation"
    )
    full = _largest_shots(imageset, pool, config, name, asked)
    if full:
        return f"{head}; lower shots to at most {full} (leaves val_per_class={asked} validation)"
    some = _largest_shots(imageset, pool, config, name, 1)
    half = max(1, some // 2)
    rng = _class_rng(config.split_seed, name, "train")
    _, rest = _take_groups(imageset, pool, half, rng)
    return (
        f"{head}, too few for shots plus val_per_class={asked} (views of one object stay "
        f"together); lower both, e.g. -P shots={half} -P val_per_class={len(rest)} (shots="
        f"{some} at most leaves any validation)"
    )


def _largest_shots(
    imageset: ImageSet, pool: list[int], config: DataConfig, name: str, val_needed: int
) -> int:
    """The largest shots whose split (same seed, same object order) leaves `val_needed`
    validation images of class `name`; 0 when none does."""
    for shots in range(len(pool) - val_needed, 0, -1):
        rng = _class_rng(config.split_seed, name, "train")
        train, rest = _take_groups(imageset, pool, shots, rng)
        val, _ = _take_groups(imageset, rest, val_needed, rng, exact=False)
        if len(train) == shots and len(val) >= val_needed:
            return shots
    return 0


def _cap(indices: list[int], cap: int, rng: random.Random) -> list[int]:
    if cap <= 0 or len(indices) <= cap:
        return indices
    return sorted(rng.sample(indices, cap))
