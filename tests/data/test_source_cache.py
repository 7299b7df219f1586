"""The data cache is read without unpickling code: a crafted file is rebuilt, never run."""

from __future__ import annotations

import torch

from eibacl.data import sources
from eibacl.data.imageset import ImageSet

RAN = []


class Payload:
    """What an attacker would put in a shared cache folder: code that runs on unpickling."""

    def __reduce__(self):
        return (RAN.append, ("ran",))


def _imageset() -> ImageSet:
    return ImageSet(
        images=torch.arange(2 * 4, dtype=torch.uint8).reshape(2, 1, 2, 2),
        labels=torch.tensor([0, 1]),
        ids=["a", "b"],
        class_names=["x", "y"],
        source="test",
    )


def test_a_cache_written_as_before_reads_back(tmp_path):
    path = tmp_path / "c.pt"
    sources._write_cache(path, _imageset())
    back = sources._read_cache(path)
    assert back is not None
    assert torch.equal(back.images, _imageset().images)
    assert back.ids == ["a", "b"] and back.class_names == ["x", "y"]


def test_a_cache_holding_code_is_ignored_not_run(tmp_path, caplog):
    path = tmp_path / "c.pt"
    torch.save(dict(_imageset().__dict__) | {"source": Payload()}, path)
    assert sources._read_cache(path) is None
    assert RAN == []
    assert "unsafe data cache" in caplog.text
