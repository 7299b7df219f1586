"""`ood_val_classes`: validation-time OOD classes, disjoint from the reported near-OOD ones."""

from __future__ import annotations

import json

import pytest

from eibacl.config import ConfigError, DataConfig
from eibacl.data.splits import FASHION_MNIST_OOD_VAL, make_split, ood_val_spec, resolve_groups
from tests.data.test_splits import CLASSES, class_of, synthetic_set


def _config(**changes):
    base = dict(ood_classes="eel", ood_val_classes="dog", shots=5, val_per_class=3)
    return DataConfig(**(base | {"test_fraction": 0.25} | changes))


def test_four_groups_are_disjoint_and_sides_come_from_the_right_classes():
    split = make_split(synthetic_set(), _config())
    assert split.id_classes == ["ant", "bee", "cat"]
    assert split.ood_classes == ["eel"] and split.ood_val_classes == ["dog"]
    assert {class_of(i) for i in split.ood_val} == {"dog"}  # selection sees only dog
    assert {class_of(i) for i in split.ood_test} == {"eel"}  # reporting only eel
    for side in ("train", "val", "test"):
        assert {class_of(i) for i in split.side(side)} == {"ant", "bee", "cat"}
    shown = json.loads(split.to_json())
    assert shown["ood_val_classes"] == ["dog"] and shown["ood_classes"] == ["eel"]


def test_a_count_draws_from_classes_not_held_out_otherwise():
    for seed in range(5):
        id_, ood, val = resolve_groups(CLASSES, "", "eel", "1", seed)
        assert len(val) == 1 and val[0] not in ood and val[0] not in id_
        assert len(id_) == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(ood_val_classes="eel"), "ood_val_classes and ood_classes share \\['eel'\\]"),
        (dict(ood_val_classes="dog", id_classes="ant,dog"), "id_classes and ood_val_classes"),
        (dict(ood_val_classes="wolf"), "ood_val_classes: unknown class name"),
        (dict(ood_val_classes="5"), "ood_val_classes=5 asks for more classes"),
        (dict(ood_val_classes="ant,bee,cat"), "at least two in-distribution classes"),
    ],
)
def test_bad_ood_val_classes_name_the_parameter(changes, message):
    with pytest.raises(ConfigError, match=message):
        make_split(synthetic_set(), _config(**changes))


def test_auto_resolves_per_source(caplog):
    fashion = ["T-shirt/top", "Coat", "Sandal", "Shirt", "Pullover", "Ankle boot", "Bag"]
    assert ood_val_spec(DataConfig(ood_val_classes="auto"), fashion) == FASHION_MNIST_OOD_VAL
    taken = DataConfig(ood_val_classes="auto", ood_classes="Coat")
    assert ood_val_spec(taken, fashion) == "1"
    folder = DataConfig(data="folder:/x", ood_classes="eel", ood_val_classes="auto")
    assert ood_val_spec(folder, CLASSES) == "1"  # 4 left: one held out, 3 stay ID
    small = DataConfig(data="folder:/x", ood_classes="eel", ood_val_classes="auto")
    assert ood_val_spec(small, ["ant", "bee", "eel"]) == ""  # would leave 1 ID class
    split = make_split(synthetic_set(), _config(ood_val_classes=""))
    assert split.ood_val == [] and split.ood_val_classes == []
    assert "no ood_val_classes" in caplog.text and "-P ood_val_classes" in caplog.text


def test_fashion_mnist_defaults_are_disjoint():
    defaults = DataConfig()
    assert defaults.ood_val_classes == "auto"
    assert not set(FASHION_MNIST_OOD_VAL.split(",")) & set(defaults.ood_classes.split(","))
