import csv
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from eibacl.config import DataConfig
from eibacl.data import sources
from eibacl.data.folder import CorruptImageError, apply_mask, list_entries, load_folder
from eibacl.data.splits import SIDES, make_split


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def colour_image(h, w, value, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), value, dtype=np.uint8)
    image[..., 1] = rng.integers(0, 256, (h, w))
    return image


def object_tree(root, classes=("bolt", "gear", "hose"), objects=6, views=3, size=12):
    """root/<class>/<object>/<view>.png: `objects` physical objects per class."""
    for c, name in enumerate(classes):
        for o in range(objects):
            for v in range(views):
                value = 40 * c + 5 * o + v + 1
                write_png(root / name / f"obj{o}" / f"v{v}.png", colour_image(size, size, value))
    return root


def test_object_folders_group_views(tmp_path):
    root = object_tree(tmp_path / "data")
    imageset = load_folder(root, 8)
    assert imageset.class_names == ["bolt", "gear", "hose"]
    assert imageset.images.shape == (3 * 6 * 3, 3, 8, 8)
    assert imageset.images.dtype == torch.uint8
    assert imageset.ids[0] == "bolt/obj0/v0.png"
    assert len(set(imageset.groups)) == 18
    by_group = {}
    for image_id, group in zip(imageset.ids, imageset.groups):
        by_group.setdefault(group, set()).add(image_id.rsplit("/", 1)[0])
    assert all(len(folders) == 1 for folders in by_group.values())
    assert imageset.labels.tolist() == [c for c in range(3) for _ in range(18)]
    assert imageset.skipped == []


def test_split_of_folder_never_separates_views(tmp_path):
    root = object_tree(tmp_path / "data", objects=8, views=3)
    imageset = load_folder(root, 8)
    group_of = dict(zip(imageset.ids, imageset.groups))
    for seed in range(3):
        split = make_split(
            imageset,
            DataConfig(ood_classes="hose", shots=4, val_per_class=3, split_seed=seed),
        )
        side_of = {}
        for side in SIDES:
            for image_id in split.side(side):
                assert side_of.setdefault(group_of[image_id], side) == side
        assert len(split.train) == 8 and split.test and split.ood_test


def test_loose_images_are_their_own_objects(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(3):
            write_png(root / c / f"img{i}.png", colour_image(10, 6, 50 * i))
    imageset = load_folder(root, 16)
    assert imageset.images.shape == (6, 3, 16, 16)
    assert len(set(imageset.groups)) == 6


def test_grey_images_become_rgb_and_are_padded_to_square(tmp_path):
    root = tmp_path / "data"
    write_png(root / "a" / "x.png", np.full((4, 8), 200))  # L mode, wide
    write_png(root / "b" / "y.png", np.full((8, 8), 100))
    imageset = load_folder(root, 8)
    wide = imageset.images[0]
    assert wide.shape == (3, 8, 8)
    # Rows 0-1 and 6-7 are padding (black); the middle rows hold the image.
    assert (wide[:, :2] == 0).all() and (wide[:, 6:] == 0).all()
    assert (wide[:, 2:6] == 200).all()


def test_masks_black_out_background_and_crop_to_the_box(tmp_path):
    root = tmp_path / "data"
    image = colour_image(40, 40, 90, seed=1)
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:30, 5:15] = 255  # 20 rows x 10 columns
    mask[12, 7] = 0  # a hole inside the object is background too
    write_png(root / "part" / "p.png", image)
    write_png(root / "masks" / "part" / "p.png", mask)
    write_png(root / "other" / "q.png", colour_image(40, 40, 30))

    assert list_entries(root)[1]["mask"] == "masks/part/p.png"
    # Box grown by 10% of its size: 2 rows and 1 column on each side -> 24 x 12 crop,
    # padded to 24 x 24 with 6 black columns left and right; resizing to 24 is exact.
    imageset = load_folder(root, 24)
    assert imageset.class_names == ["other", "part"]
    got = imageset.images[imageset.ids.index("part/p.png")].permute(1, 2, 0).numpy()
    expected = np.zeros((24, 24, 3), dtype=np.uint8)
    crop = (image * (mask > 0)[..., None])[8:32, 4:16]
    expected[:, 6:18] = crop
    np.testing.assert_array_equal(got, expected)
    # Spot checks: original (10, 5) is object -> (2, 7); the hole (12, 7) -> (4, 9); the
    # margin column 4 -> column 6; rows 8-9 are margin -> rows 0-1.
    assert got[2, 7, 0] == 90
    assert not got[4, 9].any()
    assert not got[:, 6].any() and not got[:2].any() and not got[:, :6].any()
    # The unmasked image is untouched (resized only).
    other = imageset.images[imageset.ids.index("other/q.png")]
    assert (other[0] == 30).all()


def test_apply_mask_with_empty_mask_is_black():
    image = colour_image(6, 6, 100)
    out = apply_mask(image, np.zeros((6, 6), dtype=bool))
    assert out.shape == image.shape and not out.any()


def test_mask_of_another_size_names_both_files(tmp_path):
    root = tmp_path / "data"
    write_png(root / "a" / "x.png", colour_image(10, 10, 5))
    write_png(root / "masks" / "a" / "x.png", np.full((8, 10), 255))
    with pytest.raises(ValueError) as info:
        load_folder(root, 8)
    message = str(info.value)
    assert str(root / "masks" / "a" / "x.png") in message and str(root / "a" / "x.png") in message
    assert "10x8" in message and "10x10" in message


def test_manifest_overrides_the_walk(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        write_png(root / "raw" / f"{i}.png", colour_image(10, 10, 20 * i + 10))
    two_tone = colour_image(10, 10, 200)
    two_tone[3:7, 3:7, 0] = 10  # the object (under the mask) is 10, the background 200
    write_png(root / "raw" / "0.png", two_tone)
    write_png(root / "seg" / "0.png", np.pad(np.full((4, 4), 255), 3))
    rows = [
        {"path": "raw/0.png", "label": "cup", "object_id": "cup-1", "mask": "seg/0.png"},
        {"path": "raw/1.png", "label": "cup", "object_id": "cup-1", "mask": ""},
        {"path": "raw/2.png", "label": "pan", "object_id": "", "mask": ""},
        {"path": "raw/3.png", "label": "pan", "object_id": "", "mask": ""},
    ]
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "object_id", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    imageset = load_folder(root, 10)
    assert imageset.class_names == ["cup", "pan"]
    assert imageset.labels.tolist() == [0, 0, 1, 1]
    assert imageset.groups[0] == imageset.groups[1]  # views of one object
    assert imageset.groups[2] != imageset.groups[3]  # no object id: each its own
    # The masked one is cropped to its 4x4 box (margin int(0.4) = 0) and resized: only the
    # object's value is left; the unmasked ones keep their whole image.
    assert imageset.images[0][0].eq(10).all()
    assert imageset.images[1][0].eq(30).all()


def test_manifest_without_required_columns_raises(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "manifest.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(ValueError, match="path,label"):
        load_folder(root, 8)


def test_manifest_with_only_path_and_label(tmp_path):
    root = tmp_path / "data"
    write_png(root / "i" / "a.png", colour_image(6, 6, 1))
    write_png(root / "i" / "b.png", colour_image(6, 6, 2))
    (root / "manifest.csv").write_text("path,label\ni/a.png,x\ni/b.png,y\n")
    imageset = load_folder(root, 6)
    assert imageset.class_names == ["x", "y"] and len(set(imageset.groups)) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-chunk-header"])
def test_corrupt_image_is_named_and_can_be_skipped(tmp_path, damage):
    root = object_tree(tmp_path / "data", objects=2, views=1)
    bad = root / "gear" / "obj1" / "v0.png"
    data = bad.read_bytes()
    if damage == "garbage":
        bad.write_bytes(b"this is not an image")
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:  # a flipped byte in the first chunk header after IHDR: PIL raises SyntaxError
        bad.write_bytes(data[:36] + bytes([data[36] ^ 0xFF]) + data[37:])
    with pytest.raises(CorruptImageError) as info:
        load_folder(root, 8)
    assert str(bad) in str(info.value)
    assert "-P skip_corrupt=true" in str(info.value)

    imageset = load_folder(root, 8, skip_corrupt=True)
    assert imageset.skipped == ["gear/obj1/v0.png"]
    assert len(imageset) == 5 and "gear/obj1/v0.png" not in imageset.ids


def test_corrupt_mask_is_corrupt_too(tmp_path):
    root = object_tree(tmp_path / "data", objects=2, views=1)
    (root / "masks" / "bolt" / "obj0").mkdir(parents=True)
    (root / "masks" / "bolt" / "obj0" / "v0.png").write_bytes(b"nope")
    with pytest.raises(CorruptImageError, match="mask"):
        load_folder(root, 8)
    assert load_folder(root, 8, skip_corrupt=True).skipped == ["bolt/obj0/v0.png"]


def test_every_image_corrupt_raises(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="1 skipped"):
        load_folder(root, 8, skip_corrupt=True)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nowhere", 8)
    empty = tmp_path / "empty"
    (empty / "class_a").mkdir(parents=True)
    (empty / "class_a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="holds no images"):
        load_folder(empty, 8)


def test_load_source_caches_folders_and_sees_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_MEMORY", {})
    root = object_tree(tmp_path / "data", objects=2, views=2)
    cache = tmp_path / "cache"
    spec = f"folder:{root}"
    first = sources.load_source(spec, 8, cache)
    files = list((cache / "sources").glob("*.pt"))
    assert len(files) == 1

    sources._MEMORY.clear()
    monkeypatch.setattr(sources, "load_folder", lambda *a, **k: pytest.fail("decoded again"))
    again = sources.load_source(spec, 8, cache)
    assert torch.equal(again.images, first.images) and again.groups == first.groups

    # A broken cache file is ignored (and rebuilt), never fatal.
    monkeypatch.undo()
    monkeypatch.setattr(sources, "_MEMORY", {})
    files[0].write_bytes(b"garbage")
    rebuilt = sources.load_source(spec, 8, cache)
    assert torch.equal(rebuilt.images, first.images)

    # A changed image gives another cache key, so the source is decoded again.
    write_png(root / "bolt" / "obj0" / "v0.png", colour_image(20, 20, 255))
    changed = sources.load_source(spec, 8, cache)
    assert not torch.equal(changed.images, first.images)
    assert len(list((cache / "sources").glob("*.pt"))) == 2


def test_unknown_source_spec_raises(tmp_path):
    with pytest.raises(ValueError, match="folder:<path>"):
        sources.load_source("cifar10", 32, tmp_path)


def test_views_are_all_distinct_images(tmp_path):
    root = object_tree(tmp_path / "data", objects=2, views=2)
    imageset = load_folder(root, 8)
    for a, b in itertools.combinations(range(len(imageset)), 2):
        assert not torch.equal(imageset.images[a], imageset.images[b])


def test_object_ids_do_not_repeat_the_class(tmp_path):
    root = tmp_path / "data"
    write_png(root / "Dichtungsring grün" / "obj000" / "v0.png", colour_image(6, 6, 1))
    write_png(root / "Dichtungsring grün" / "loose.png", colour_image(6, 6, 2))
    write_png(root / "b" / "x.png", colour_image(6, 6, 3))
    imageset = load_folder(root, 6)
    assert imageset.groups == [
        "Dichtungsring grün/loose.png",
        "Dichtungsring grün/obj000",
        "b/x.png",
    ]


def half_masked_tree(root):
    """Two classes x 2 objects x 2 views; masks for every image but bolt/obj1/*."""
    object_tree(root, classes=("bolt", "gear"), objects=2, views=2, size=10)
    for image in sorted(root.rglob("v*.png")):
        rel = image.relative_to(root)
        if not str(rel).startswith("bolt/obj1"):
            write_png(root / "masks" / rel, np.pad(np.full((6, 6), 255), 2))
    return root


def test_images_without_mask_are_listed_and_counted(tmp_path):
    from eibacl.data.report import needs_attention, report, report_line, report_metrics

    imageset = load_folder(half_masked_tree(tmp_path / "data"), 8)
    assert imageset.unmasked == ["bolt/obj1/v0.png", "bolt/obj1/v1.png"]
    assert report_metrics(imageset) == {"data/skipped": 0.0, "data/unmasked": 2.0}
    assert report(imageset)["unmasked"] == imageset.unmasked
    line = report_line(imageset)
    assert "2 of 8 images have no mask" in line and "data_report.json" in line
    assert "\n" not in line

    assert needs_attention(imageset)

    off = load_folder(tmp_path / "data", 8, masks="off")
    assert len(off.unmasked) == 8 and off.masks == "off"
    assert "masks=off" in report_line(off) and not needs_attention(off)


def test_masks_required_names_the_missing_mask(tmp_path):
    root = half_masked_tree(tmp_path / "data")
    with pytest.raises(ValueError) as info:
        load_folder(root, 8, masks="required")
    message = str(info.value)
    assert "masks=required but 2 of 8 images have no mask" in message
    assert str(root / "masks" / "bolt" / "obj1" / "v0.png") in message
    assert "masks=auto" in message


def test_skipped_images_are_reported_with_their_reason(tmp_path):
    from eibacl.data.report import needs_attention, report, report_line, report_metrics

    root = object_tree(tmp_path / "data", objects=2, views=1)
    (root / "gear" / "obj1" / "v0.png").write_bytes(b"nope")
    imageset = load_folder(root, 8, skip_corrupt=True)
    assert report_metrics(imageset)["data/skipped"] == 1.0
    (entry,) = report(imageset)["skipped"]
    assert entry["path"] == "gear/obj1/v0.png" and entry["reason"].startswith("unreadable image")
    assert "1 of 6 images skipped" in report_line(imageset)
    # No masks anywhere: said once, not image by image.
    assert "no image has a mask" in report_line(imageset)
    assert needs_attention(imageset)  # because of the skipped image
    clean = load_folder(object_tree(tmp_path / "clean", objects=2, views=1), 8)
    assert not needs_attention(clean)  # no masks anywhere is information, not a warning


def test_fashion_mnist_like_sources_report_no_unmasked_metric():
    from eibacl.data.imageset import ImageSet
    from eibacl.data.report import report_line, report_metrics

    imageset = ImageSet(
        images=torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
        labels=torch.tensor([0, 1]),
        ids=["a", "b"],
        class_names=["x", "y"],
        source="fashion-mnist",
    )
    assert report_metrics(imageset) == {"data/skipped": 0.0}
    assert report_line(imageset) == ""


def test_manifest_row_naming_a_missing_file_blames_the_row(tmp_path):
    root = tmp_path / "data"
    write_png(root / "raw" / "0.png", colour_image(6, 6, 1))
    write_png(root / "raw" / "1.png", colour_image(6, 6, 2))
    (root / "manifest.csv").write_text("path,label\nraw/0.png,x\nraw/gone.png,x\nraw/1.png,y\n")
    with pytest.raises(CorruptImageError) as info:
        load_folder(root, 6)
    message = str(info.value)
    assert "manifest.csv line 3" in message and "'raw/gone.png'" in message
    assert "correct or delete that row" in message and "replace" not in message
    imageset = load_folder(root, 6, skip_corrupt=True)
    assert imageset.skipped == ["raw/gone.png"]
    assert imageset.skip_reasons == ["manifest line 3: path file missing"]
