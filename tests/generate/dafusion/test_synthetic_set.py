"""The content-addressed, resumable on-disk synthetic set."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest
import torch

from eibacl.generate.dafusion import synthetic_set as ss
from eibacl.generate.dafusion.augment import generate_synthetic_set
from eibacl.generate.dafusion.synthetic_set import (
    MANIFEST_COLUMNS,
    ManifestRow,
    SyntheticSet,
    SyntheticSetKey,
    SyntheticSetWriter,
    find,
    is_complete,
)


class FakeBackend:
    """Deterministic per (image, weights, strength, seed); can fail after some batches."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def fingerprint(self) -> str:
        return "f" * 64

    def img2img(self, images, class_weights, strength, *, guidance_scale, seeds, masks=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill mid-run looks like
        self.calls += 1
        shift = torch.tensor([s % 97 for s in seeds]).view(-1, 1, 1, 1)
        cls = class_weights.argmax(dim=1).view(-1, 1, 1, 1) * 7
        return ((images.int() + shift + cls + int(strength * 10)) % 256).to(torch.uint8)


def _data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return images, labels, [f"src{i}" for i in range(n)], ["a", "b", "c"]


def _generate(backend, out_dir: Path, **over):
    images, labels, ids, names = _data()
    kwargs = dict(
        num_synthetic=2,
        strengths=[0.25, 0.75],
        num_near_ood=1,
        near_ood_recipes=["class-mix", "other-class"],
        guidance_scale=2.0,
        seed=0,
        out_dir=out_dir,
        batch_size=4,
        progress=False,
    )
    kwargs.update(over)
    return generate_synthetic_set(backend, images, labels, ids, names, **kwargs)


def _manifest(directory: Path) -> list[dict[str, str]]:
    with open(directory / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _row(i: int) -> ManifestRow:
    return ManifestRow(
        f"s{i}", f"src{i}", 0, "a", "id", "id", 0.5, i, "fake", "fp", f"images/s{i}.png"
    )


def test_key_is_stable_and_content_addressed(tmp_path):
    settings = {"num_synthetic": 4, "strengths": [0.25, 0.5], "seed": 0}
    a = SyntheticSetKey("data1", "split1", settings, "model1")
    b = SyntheticSetKey("data1", "split1", dict(reversed(settings.items())), "model1")
    assert a.digest == b.digest and len(a.digest) == 64
    assert a.directory(tmp_path) == tmp_path / a.digest[:16]
    changed = [
        SyntheticSetKey("data2", "split1", settings, "model1"),
        SyntheticSetKey("data1", "split2", settings, "model1"),
        SyntheticSetKey("data1", "split1", {**settings, "seed": 1}, "model1"),
        SyntheticSetKey("data1", "split1", {**settings, "strengths": [0.5, 0.25]}, "model1"),
        SyntheticSetKey("data1", "split1", settings, "model2"),
    ]
    assert len({k.digest for k in changed} | {a.digest}) == len(changed) + 1
    # A fixed value: a key must not drift between runs, machines or Python versions, or
    # every cached set would silently be made again.
    fixed = SyntheticSetKey("d", "s", {"x": 1}, "m")
    assert fixed.digest == "eb50686352735f54c1e9e8d321fd968fce3e5bd52ee6b2d508ea5aa55c3ec89e"


def test_writer_round_trip_and_cache(tmp_path, monkeypatch):
    writer = SyntheticSetWriter(tmp_path / "set", {"a": 1})
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    for i in range(3):
        writer.write(_row(i), images[i])
    assert not is_complete(tmp_path / "set")
    with pytest.raises(ValueError, match="incomplete"):
        SyntheticSet.open(tmp_path / "set")
    writer.finish()
    assert is_complete(tmp_path / "set")
    assert (tmp_path / "set" / "images.pt").is_file()
    header = (tmp_path / "set" / "manifest.csv").read_text().splitlines()[0]
    assert header.split(",") == list(MANIFEST_COLUMNS)
    # A complete set reloads from the tensor cache without decoding any PNG.
    monkeypatch.setattr(ss, "_decode_png", lambda path: (_ for _ in ()).throw(AssertionError))
    loaded = SyntheticSet.open(tmp_path / "set")
    assert torch.equal(loaded.images, images)
    assert loaded.synthetic_ids == ["s0", "s1", "s2"] and loaded.kinds == ["id"] * 3
    assert loaded.settings == {"a": 1}


def test_rgb_images_round_trip(tmp_path):
    writer = SyntheticSetWriter(tmp_path / "rgb", {})
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    writer.write(_row(0), image)
    writer.finish()
    assert torch.equal(SyntheticSet.open(tmp_path / "rgb").images[0], image)


def test_reopen_repairs_an_interrupted_folder(tmp_path):
    directory = tmp_path / "set"
    writer = SyntheticSetWriter(directory, {})
    for i in range(4):
        writer.write(_row(i), torch.full((1, 4, 4), i, dtype=torch.uint8))
    writer.close()
    (directory / "images" / "s1.png").unlink()  # a row whose image is gone
    (directory / "images" / "orphan.png").write_bytes(b"x")  # an image with no row
    (directory / "images" / "s9.png.tmp").write_bytes(b"half")  # a half-written image
    with open(directory / "manifest.csv", "a") as f:
        f.write("s5,src5,0,a,id")  # a row cut off mid-write
    writer = SyntheticSetWriter(directory, {})
    assert writer.done_ids == {"s0", "s2", "s3"}
    assert sorted(p.name for p in (directory / "images").iterdir()) == [
        "s0.png",
        "s2.png",
        "s3.png",
    ]
    assert [r["synthetic_id"] for r in _manifest(directory)] == ["s0", "s2", "s3"]
    writer.write(_row(1), torch.full((1, 4, 4), 1, dtype=torch.uint8))
    writer.finish()
    loaded = SyntheticSet.open(directory)
    assert sorted(loaded.synthetic_ids) == ["s0", "s1", "s2", "s3"]


def test_interrupted_generation_resumes_to_the_same_set(tmp_path):
    reference = _generate(FakeBackend(), tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _generate(FakeBackend(fail_after=2), tmp_path / "run")
    partial = _manifest(tmp_path / "run")
    assert 0 < len(partial) < len(_manifest(reference)) and not is_complete(tmp_path / "run")
    # Also lose one image and leave an orphan, as a hard kill between writes could.
    (tmp_path / "run" / partial[0]["file"]).unlink()
    (tmp_path / "run" / "images" / "stray.png").write_bytes(b"")
    resumed_backend = FakeBackend()
    _generate(resumed_backend, tmp_path / "run")
    assert is_complete(tmp_path / "run")
    expected_calls = FakeBackend()
    _generate(expected_calls, tmp_path / "fresh")
    assert 0 < resumed_backend.calls < expected_calls.calls  # only the missing ones were made
    a, b = SyntheticSet.open(reference), SyntheticSet.open(tmp_path / "run")
    order_a = {sid: i for i, sid in enumerate(a.synthetic_ids)}
    perm = [order_a[sid] for sid in b.synthetic_ids]
    assert sorted(a.synthetic_ids) == sorted(b.synthetic_ids)
    assert torch.equal(a.images[perm], b.images)
    rows_a = {r["synthetic_id"]: r for r in _manifest(reference)}
    assert all(rows_a[r["synthetic_id"]] == r for r in _manifest(tmp_path / "run"))


def test_a_complete_set_is_reused(tmp_path):
    out = _generate(FakeBackend(), tmp_path / "set")
    key = SyntheticSetKey("d", "s", {}, "m")
    assert find(tmp_path, key) is None
    again = FakeBackend()
    assert _generate(again, out) == out
    assert again.calls == 0
    with pytest.raises(ValueError, match="other settings"):
        _generate(FakeBackend(), out, seed=1)


def test_find_returns_only_complete_sets(tmp_path):
    key = SyntheticSetKey("d", "s", {"x": 1}, "m")
    assert find(tmp_path, key) is None
    _generate(FakeBackend(), key.directory(tmp_path), key=key)
    assert find(tmp_path, key) == key.directory(tmp_path)
    assert SyntheticSet.open(find(tmp_path, key)).settings["key_digest"] == key.digest


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="resume") as info:
        _generate(FakeBackend(), blocker / "set")
    assert str(blocker / "set") in str(info.value)


def test_full_disk_keeps_what_was_made(tmp_path, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        if str(dst).endswith(".png"):
            calls["n"] += 1
            if calls["n"] > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(ss.os, "replace", flaky_replace)
    with pytest.raises(RuntimeError) as info:
        _generate(FakeBackend(), tmp_path / "set")
    message = str(info.value)
    assert "No space left on device" in message and str(tmp_path / "set") in message
    assert "5 image(s) generated so far are kept" in message
    monkeypatch.setattr(ss.os, "replace", real_replace)
    assert len(_manifest(tmp_path / "set")) == 5
    _generate(FakeBackend(), tmp_path / "set")
    assert is_complete(tmp_path / "set") and len(_manifest(tmp_path / "set")) == 18
