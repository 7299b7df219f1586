import itertools
import json
from collections import Counter

import pytest
import torch

from eibacl.config import ConfigError, DataConfig
from eibacl.data.imageset import ImageSet
from eibacl.data.splits import SIDES, Split, make_split, resolve_classes

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def synthetic_set(
    per_class=(20, 20, 20, 20, 20),
    views=1,
    subsets=False,
    test_share=4,
    class_names=None,
    source="synthetic",
):
    """`per_class[c]` objects of class c, each with `views` images. With `subsets`, every
    `test_share`-th object of a class is in the source's own 'test' subset."""
    class_names = class_names or CLASSES[: len(per_class)]
    labels, ids, groups, subset = [], [], [], []
    for c, n_objects in enumerate(per_class):
        for o in range(n_objects):
            for v in range(views):
                labels.append(c)
                ids.append(f"{class_names[c]}/obj{o:03d}/view{v}")
                groups.append(f"{class_names[c]}/obj{o:03d}")
                subset.append("test" if o % test_share == 0 else "train")
    n = len(ids)
    images = (torch.arange(n, dtype=torch.int64) % 256).to(torch.uint8).view(n, 1, 1, 1)
    return ImageSet(
        images=images.expand(n, 1, 4, 4).contiguous(),
        labels=torch.tensor(labels),
        ids=ids,
        class_names=list(class_names),
        source=source,
        groups=groups,
        subsets=subset if subsets else [],
    )


def config(**changes):
    base = dict(
        ood_classes="dog,eel", ood_val_classes="", shots=5, val_per_class=3, test_fraction=0.25
    )
    return DataConfig(**(base | changes))


def class_of(image_id):
    return image_id.split("/")[0]


def group_of(image_id):
    return "/".join(image_id.split("/")[:2])


def test_held_out_classes_never_reach_id_sides():
    split = make_split(synthetic_set(), config(ood_classes="eel", ood_val_classes="dog"))
    assert split.id_classes == ["ant", "bee", "cat"]
    assert split.ood_classes == ["eel"] and split.ood_val_classes == ["dog"]
    for side in ("train", "val", "test"):
        assert split.side(side)
        assert {class_of(i) for i in split.side(side)} == {"ant", "bee", "cat"}
    assert {class_of(i) for i in split.ood_val} == {"dog"}
    assert {class_of(i) for i in split.ood_test} == {"eel"}


def test_held_out_classes_without_test_subset_use_every_image():
    # 20 objects x 3 views per class; test_fraction=0.25 would have given the held-out
    # classes 5 objects = 15 images each. Every image is used instead: 60 each.
    imageset = synthetic_set(views=3)
    split = make_split(imageset, config(ood_classes="eel", ood_val_classes="dog"))
    assert Counter(class_of(i) for i in split.ood_test) == {"eel": 60}
    assert Counter(class_of(i) for i in split.ood_val) == {"dog": 60}
    # The in-distribution classes still split 5 test objects (15 images) off each.
    assert Counter(class_of(i) for i in split.test) == {"ant": 15, "bee": 15, "cat": 15}
    assert split.counts() == {
        "train": 15,
        "val": 9,
        "test": 45,
        "ood_val": 60,
        "ood_test": 60,
    }
    assert json.loads(split.to_json())["counts"] == split.counts()


def test_a_single_object_held_out_class_is_all_ood():
    # No train/test split of its own is needed: its one object's 4 views are all near-OOD.
    imageset = synthetic_set(per_class=(20, 20, 20, 20, 1), views=4)
    split = make_split(imageset, config(ood_classes="eel"))
    assert Counter(class_of(i) for i in split.ood_test) == {"eel": 4}


@pytest.mark.parametrize("views", [1, 3])
def test_sides_are_disjoint_and_ids_unique(views):
    split = make_split(synthetic_set(views=views), config())
    for a, b in itertools.combinations(SIDES, 2):
        assert not set(split.side(a)) & set(split.side(b)), (a, b)
    for side in SIDES:
        assert len(split.side(side)) == len(set(split.side(side)))


@pytest.mark.parametrize("views,shots", [(1, 5), (3, 4), (3, 6), (2, 7)])
def test_shots_per_class_are_exact(views, shots):
    split = make_split(synthetic_set(views=views), config(shots=shots))
    assert Counter(class_of(i) for i in split.train) == {c: shots for c in ("ant", "bee", "cat")}


def test_val_per_class_with_single_views_is_exact():
    split = make_split(
        synthetic_set(), config(val_per_class=4, ood_classes="eel", ood_val_classes="dog")
    )
    assert Counter(class_of(i) for i in split.val) == {"ant": 4, "bee": 4, "cat": 4}
    # A held-out class never trains: all 20 dog images are validation-OOD, not val_per_class.
    assert Counter(class_of(i) for i in split.ood_val) == {"dog": 20}


@pytest.mark.parametrize("views", [2, 3])
def test_views_of_one_object_never_on_two_sides(views):
    imageset = synthetic_set(views=views)
    for seed in range(4):
        split = make_split(imageset, config(shots=5, split_seed=seed))
        side_of = {}
        for side in SIDES:
            for image_id in split.side(side):
                assert side_of.setdefault(group_of(image_id), side) == side, image_id
        # A train object may lose views (dropped, never given away); other sides get whole
        # objects.
        per_group = Counter(
            group_of(i) for side in SIDES if side != "train" for i in split.side(side)
        )
        assert set(per_group.values()) == {views}


def test_same_seed_same_split_other_seed_other_split():
    imageset = synthetic_set(views=2)
    a = make_split(imageset, config(split_seed=3))
    b = make_split(imageset, config(split_seed=3))
    c = make_split(imageset, config(split_seed=4))
    assert a == b and a.to_json() == b.to_json()
    assert a.fingerprint() != c.fingerprint()
    assert a.train != c.train and set(a.test) != set(c.test)


def test_source_test_subset_is_the_only_test_source():
    imageset = synthetic_set(subsets=True)
    split = make_split(imageset, config(test_fraction=0.5))
    subset_of = dict(zip(imageset.ids, imageset.subsets))
    for side in ("test", "ood_test"):
        assert {subset_of[i] for i in split.side(side)} == {"test"}
    for side in ("train", "val"):
        assert {subset_of[i] for i in split.side(side)} == {"train"}
    # test_per_class=0 keeps every test image of the classes: 5 of 20 objects (o % 4 == 0).
    assert Counter(class_of(i) for i in split.test) == {"ant": 5, "bee": 5, "cat": 5}
    assert Counter(class_of(i) for i in split.ood_test) == {"dog": 5, "eel": 5}


def test_source_without_test_images_for_a_class_raises():
    imageset = synthetic_set(subsets=True)
    imageset.subsets = [
        "train" if class_of(i) == "bee" else s for i, s in zip(imageset.ids, imageset.subsets)
    ]
    with pytest.raises(ConfigError, match="'bee' has no test image"):
        make_split(imageset, config())


def test_test_fraction_applies_to_objects_without_test_subset():
    split = make_split(synthetic_set(views=2), config(test_fraction=0.25))
    # 20 objects, 25% -> 5 objects -> 10 images per class.
    assert Counter(class_of(i) for i in split.test) == {"ant": 10, "bee": 10, "cat": 10}


@pytest.mark.parametrize("subsets", [False, True])
def test_test_per_class_caps_every_class(subsets):
    imageset = synthetic_set(per_class=(40,) * 5, subsets=subsets)
    split = make_split(imageset, config(test_per_class=3))
    assert Counter(class_of(i) for i in split.test) == {"ant": 3, "bee": 3, "cat": 3}
    assert Counter(class_of(i) for i in split.ood_test) == {"dog": 3, "eel": 3}
    assert split == make_split(imageset, config(test_per_class=3))


def test_test_set_does_not_depend_on_shots_or_val_size():
    # Runs that compare shot counts must be evaluated on one test set.
    imageset = synthetic_set(per_class=(30,) * 5, views=2)
    few = make_split(imageset, config(shots=4, val_per_class=2))
    many = make_split(imageset, config(shots=12, val_per_class=6))
    assert few.test == many.test
    assert few.ood_test == many.ood_test
    assert set(few.train) < set(many.train)  # more shots extend the same draw


def test_test_of_a_class_does_not_depend_on_other_classes():
    imageset = synthetic_set(per_class=(20,) * 5)
    a = make_split(imageset, config(id_classes="ant,bee,cat", ood_classes="dog,eel"))
    b = make_split(imageset, config(id_classes="cat,ant", ood_classes="eel"))
    assert [i for i in a.test if class_of(i) == "cat"] == [
        i for i in b.test if class_of(i) == "cat"
    ]


def test_count_specs_draw_reproducibly():
    names = [f"c{i}" for i in range(10)]
    first = resolve_classes(names, "3", "2", seed=5)
    assert first == resolve_classes(names, "3", "2", seed=5)
    id_, ood = first
    assert len(id_) == 3 and len(ood) == 2 and not set(id_) & set(ood)
    assert id_ == sorted(id_, key=names.index)
    draws = {tuple(resolve_classes(names, "3", "2", seed=s)[1]) for s in range(10)}
    assert len(draws) > 1  # the seed matters


def test_count_ood_with_named_id_avoids_the_named_classes():
    for seed in range(10):
        id_, ood = resolve_classes(CLASSES, "ant,bee", "2", seed)
        assert id_ == ["ant", "bee"]
        assert len(ood) == 2 and not {"ant", "bee"} & set(ood)


def test_empty_id_spec_means_every_class_not_held_out():
    assert resolve_classes(CLASSES, "", "bee, dog", 0) == (["ant", "cat", "eel"], ["bee", "dog"])
    assert resolve_classes(CLASSES, "  ", "", 0) == (CLASSES, [])


def test_repeated_names_count_once():
    split = make_split(synthetic_set(), config(ood_classes="dog,dog"))
    assert split.ood_classes == ["dog"]
    assert len(split.ood_test) == len(set(split.ood_test))


def test_unknown_class_name_lists_available_names():
    with pytest.raises(ConfigError) as info:
        resolve_classes(CLASSES, "", "dog,wolf", 0)
    message = str(info.value)
    assert "wolf" in message and "ood_classes" in message
    for name in CLASSES:
        assert name in message
    with pytest.raises(ConfigError, match="id_classes.*'yak'"):
        resolve_classes(CLASSES, "ant,yak", "", 0)


def test_id_and_ood_overlap_raises():
    with pytest.raises(ConfigError, match=r"\['bee'\].*both"):
        resolve_classes(CLASSES, "ant,bee", "bee", 0)


@pytest.mark.parametrize("id_spec,ood_spec", [("ant", ""), ("", "ant,bee,cat,dog"), ("1", "")])
def test_fewer_than_two_id_classes_raises(id_spec, ood_spec):
    with pytest.raises(ConfigError, match="at least two"):
        resolve_classes(CLASSES, id_spec, ood_spec, 0)


def test_count_larger_than_available_raises():
    with pytest.raises(ConfigError, match="ood_classes=9"):
        resolve_classes(CLASSES, "", "9", 0)


@pytest.mark.parametrize("views,most", [(1, 3), (3, 15)])
def test_too_many_shots_advises_a_max_that_leaves_the_asked_validation(views, most):
    # 'bee' has 8 objects: 2 go to test (25%), 6 objects remain for train and val.
    # val_per_class=3 needs 3 one-view objects (views=1: shots <= 3 images) or one
    # three-view object (views=3: shots <= 5 objects x 3 = 15).
    imageset = synthetic_set(per_class=(20, 8, 20, 20, 20), views=views)
    pool = 6 * views
    with pytest.raises(ConfigError) as info:
        make_split(imageset, config(shots=pool + 1))
    message = str(info.value)
    assert "'bee'" in message and f"at most {most} (leaves val_per_class=3" in message
    split = make_split(imageset, config(shots=most))
    assert Counter(class_of(i) for i in split.train)["bee"] == most
    assert Counter(class_of(i) for i in split.val)["bee"] == 3
    with pytest.raises(ConfigError, match=f"'bee'.*at most {most}"):
        make_split(imageset, config(shots=pool))


def test_shots_error_when_validation_cannot_be_met_advises_both_values():
    # 'bee': 6 objects x 2 views left = 12 images; shots=20 with val_per_class=100 cannot
    # work. The message gives a pair that does: shots=5 takes 3 objects (the 6th view of
    # the third is dropped), the other 3 objects (6 images) are validation.
    imageset = synthetic_set(per_class=(20, 8, 20, 20, 20), views=2)
    with pytest.raises(ConfigError) as info:
        make_split(imageset, config(shots=20, val_per_class=100))
    message = str(info.value)
    assert "-P shots=5 -P val_per_class=6" in message and "shots=10 at most" in message
    split = make_split(imageset, config(shots=5, val_per_class=6, id_classes="bee,cat"))
    assert Counter(class_of(i) for i in split.val)["bee"] == 6


def test_validation_below_val_per_class_is_said_with_the_numbers(caplog):
    # 'bee': 6 objects x 3 views after test; shots=12 takes 4 objects, 2 objects (6 images)
    # are left for validation although 10 were asked.
    imageset = synthetic_set(per_class=(20, 8, 20, 20, 20), views=3)
    with caplog.at_level("WARNING", logger="eibacl.data.splits"):
        make_split(imageset, config(shots=12, val_per_class=10))
    (record,) = [r for r in caplog.records if "val_per_class" in r.getMessage()]
    text = record.getMessage()
    assert "val_per_class=10 for 1 of 3 classes" in text and "'bee': 6" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="eibacl.data.splits"):
        make_split(imageset, config(shots=12, val_per_class=6))
    assert not [r for r in caplog.records if "val_per_class" in r.getMessage()]


def test_class_with_no_images_raises():
    imageset = synthetic_set(per_class=(20, 20, 0, 20, 20))
    with pytest.raises(ConfigError, match="'cat' has no images"):
        make_split(imageset, config())


def test_single_object_class_without_test_subset_raises():
    imageset = synthetic_set(per_class=(20, 1, 20, 20, 20), views=5)
    with pytest.raises(ConfigError, match="'bee' has a single object") as info:
        make_split(imageset, config(shots=2))
    assert "'bee/obj000', 5 images" in str(info.value)
    assert "id_classes" in str(info.value) and "own sub-folder" in str(info.value)


def test_class_with_too_few_objects_for_train_and_val_says_so():
    imageset = synthetic_set(per_class=(20, 2, 20, 20, 20), views=3)
    with pytest.raises(ConfigError, match="'bee' has 1 object.*test_fraction"):
        make_split(imageset, config(shots=2))


def test_json_round_trip_and_fingerprint(tmp_path):
    split = make_split(synthetic_set(views=2), config())
    again = Split.from_json(split.to_json())
    assert again == split and again.fingerprint() == split.fingerprint()
    assert Split.load(split.save(tmp_path / "split.json")) == split
    assert split.params["shots"] == 5 and split.params["ood_classes"] == "dog,eel"
    assert split.source_fingerprint == synthetic_set(views=2).fingerprint()
    # The fingerprint follows the ids, not the bookkeeping params.
    assert Split(**{**split.__dict__, "params": {}}).fingerprint() == split.fingerprint()
    changed = Split(**{**split.__dict__, "val": split.val[1:]})
    assert changed.fingerprint() != split.fingerprint()


def test_indices_point_at_the_ids_and_refuse_other_data():
    imageset = synthetic_set()
    split = make_split(imageset, config())
    for side in SIDES:
        idx = split.indices(imageset, side)
        assert [imageset.ids[i] for i in idx.tolist()] == split.side(side)
    other = synthetic_set(class_names=["a", "b", "c", "d", "e"], source="other data")
    with pytest.raises(ValueError, match="other data"):
        split.indices(other, "train")
    with pytest.raises(KeyError, match="unknown split side"):
        split.side("training")


def test_id_labels_follow_id_classes_order():
    imageset = synthetic_set()
    split = make_split(imageset, config(id_classes="cat,ant", ood_classes="dog"))
    idx = split.indices(imageset, "train")
    labels = split.id_labels(imageset, idx)
    expected = [{"cat": 0, "ant": 1}[class_of(imageset.ids[i])] for i in idx.tolist()]
    assert labels.tolist() == expected
    assert set(labels.tolist()) == {0, 1}


def test_imageset_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="disagree"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3), ["a", "b"], ["x"], "s")
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a", "b"], ["x"], "s")


def uneven_bee(seed_views=(1, 1, 6)):
    """synthetic_set with class 'bee' replaced by objects of the given view counts."""
    base = synthetic_set(per_class=(20, 0, 20, 20, 20))
    keep = [i for i, y in enumerate(base.labels.tolist()) if y != 1]
    ids = [base.ids[i] for i in keep]
    groups = [base.groups[i] for i in keep]
    labels = [int(base.labels[i]) for i in keep]
    for o, views in enumerate(seed_views):
        for v in range(views):
            ids.append(f"bee/obj{o:03d}/view{v}")
            groups.append(f"bee/obj{o:03d}")
            labels.append(1)
    n = len(ids)
    return ImageSet(
        images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8),
        labels=torch.tensor(labels),
        ids=ids,
        class_names=list(CLASSES),
        source="uneven",
        groups=groups,
    )


def test_a_split_seed_with_too_few_objects_names_them_and_a_seed_that_fits():
    # bee: objects of 1, 1 and 6 views; test takes 1 object (round(0.25 * 3)). shots=6 needs
    # the 6-view object in training and a 1-view object left for validation: a seed-dependent
    # draw. Seeds are tried until one fails; its message names the objects and a seed that fits.
    imageset = uneven_bee()
    failing = None
    for seed in range(50):
        try:
            make_split(imageset, config(shots=6, split_seed=seed))
        except ConfigError as exc:
            failing, message = seed, str(exc)
            break
    assert failing is not None
    assert "'bee'" in message and "3 objects" in message
    for obj, views in (("bee/obj000", "1 view"), ("bee/obj001", "1 view"), ("bee/obj002", "6")):
        assert f"'{obj}' ({views}" in message
    assert message.count(", test)") == 1  # exactly one object went to test
    fix = int(message.split("-P split_seed=")[1].split()[0])
    assert fix > failing
    split = make_split(imageset, config(shots=6, split_seed=fix))
    assert sum(class_of(i) == "bee" for i in split.train) == 6


def test_too_few_objects_for_any_seed_says_add_objects():
    imageset = uneven_bee((1, 1))
    with pytest.raises(ConfigError, match="'bee' has 2 objects.*no split_seed up to 100 fits"):
        make_split(imageset, config(shots=2))
