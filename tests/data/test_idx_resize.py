"""IDX reading, Fashion-MNIST location (without the real files) and uint8 resizing."""

import gzip
import struct

import numpy as np
import pytest
import torch

from eibacl.data import fashion_mnist
from eibacl.data.fashion_mnist import FILES, load_fashion_mnist, locate
from eibacl.data.idx import read_idx
from eibacl.data.resize import match_channels, resize_uint8


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_fake_fashion(directory, n_train=6, n_test=4):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (image_file, label_file), n in zip(FILES.values(), (n_train, n_test)):
        (directory / image_file).write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        )
        (directory / label_file).write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    return directory


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_round_trip(tmp_path, compressed):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gzip.compress(data) if compressed else data)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(idx_bytes(np.zeros((4, 4)))[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 4))))[:-10])
    with pytest.raises(ValueError, match="reinstall"):
        read_idx(broken_gz)


def test_env_folder_is_used_before_the_package(tmp_path, monkeypatch):
    fake = write_fake_fashion(tmp_path / "fake")
    monkeypatch.setenv("EIBACL_FASHION_MNIST_DIR", str(fake))
    directory, how = locate(tmp_path / "cache", allow_download=False)
    assert directory == fake and "files in" in how
    imageset, _ = load_fashion_mnist(tmp_path / "cache")
    assert imageset.images.shape == (10, 1, 28, 28)
    assert imageset.subsets == ["train"] * 6 + ["test"] * 4
    assert imageset.ids[6] == "test/00000"
    assert imageset.labels.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]


def test_torchvision_download_is_the_fallback(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeDownload:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_fake_fashion(tmp_path / "cache" / "torchvision" / "FashionMNIST" / "raw")

    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.delenv("EIBACL_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeDownload)
    directory, how = locate(tmp_path / "cache")
    assert how == "torchvision download"
    assert [c[1:] for c in calls] == [(True, True), (False, True)]
    # Once downloaded, the files are found without downloading again.
    calls.clear()
    assert locate(tmp_path / "cache") == (directory, f"files in {directory}")
    assert calls == []


def test_no_download_allowed_raises_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.delenv("EIBACL_FASHION_MNIST_DIR", raising=False)
    with pytest.raises(fashion_mnist.DatasetNotFoundError, match="dataset-fashion-mnist"):
        locate(tmp_path / "cache", allow_download=False)


def test_resize_uint8():
    images = torch.full((2, 1, 28, 28), 77, dtype=torch.uint8)
    assert resize_uint8(images, 28) is images
    out = resize_uint8(images, 32)
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.uint8
    assert (out == 77).all()
    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).expand(1, 1, 8, 8) * 4
    small = resize_uint8(ramp.contiguous(), 4)
    assert small.shape == (1, 1, 4, 4)
    assert small.float().mean().item() == pytest.approx(ramp.float().mean().item(), abs=1)


def test_match_channels():
    grey = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 1], grey[:, 0])
    assert torch.equal(match_channels(rgb, 1), grey)
    assert match_channels(grey, 1) is grey
    with pytest.raises(ValueError, match="cannot convert"):
        match_channels(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), 4)
