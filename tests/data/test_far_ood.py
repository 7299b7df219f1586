import numpy as np
import pytest
import torch
from PIL import Image

from eibacl.config import ConfigError, EvalConfig
from eibacl.data.far_ood import far_ood_name, load_far_ood_set, resolve_far_ood


def write(path, value, size=(10, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


@pytest.mark.parametrize(
    "far_ood,data,expected",
    [
        ("auto", "fashion-mnist", "mnist"),
        ("auto", "folder:/x", "none"),
        ("mnist", "folder:/x", "mnist"),
        ("none", "fashion-mnist", "none"),
        ("folder:/far", "fashion-mnist", "folder:/far"),
    ],
)
def test_auto_means_mnist_only_for_fashion_mnist(far_ood, data, expected):
    assert resolve_far_ood(far_ood, data) == expected


def test_none_gives_no_set():
    assert load_far_ood_set("none", 8, 3) is None


def test_folder_of_loose_and_nested_images(tmp_path):
    root = tmp_path / "far"
    write(root / "a.png", 50)
    write(root / "sub" / "deeper" / "b.jpg", 200, mode="L")
    (root / "notes.txt").write_text("not an image")
    far = load_far_ood_set(f"folder:{root}", 8, 3)
    assert far.ids == ["a.png", "sub/deeper/b.jpg"]
    assert far.images.shape == (2, 3, 8, 8) and far.images.dtype == torch.uint8
    # 10 x 6 is padded to 10 x 10 (rows 0-1 and 8-9 black), then resized to 8.
    assert far.images[0, :, 4, 4].tolist() == [50, 50, 50]
    assert far.images[1, :, 4, 4].float().tolist() == pytest.approx([200] * 3, abs=3)  # jpeg
    grey = load_far_ood_set(f"folder:{root}", 8, 1)
    assert grey.images.shape == (2, 1, 8, 8)
    assert far_ood_name(f"folder:{root}") == "far" and far_ood_name("mnist") == "MNIST"


def test_missing_or_empty_folder_names_the_parameter_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="far_ood=folder:.*does not exist.*far_ood=none"):
        load_far_ood_set(f"folder:{tmp_path / 'nowhere'}", 8, 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="far_ood=folder:.*holds no images.*far_ood=none"):
        load_far_ood_set(f"folder:{tmp_path / 'empty'}", 8, 3)


@pytest.mark.parametrize("bad", ["cifar10", "folder:", "MNIST"])
def test_bad_far_ood_value_is_one_clear_line(bad):
    with pytest.raises(ConfigError, match="far_ood=.*use auto, mnist, none or folder:<path"):
        EvalConfig(far_ood=bad).validate()
