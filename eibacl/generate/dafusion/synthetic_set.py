"""A content-addressed, resumable on-disk set of synthetic images.

Layout of ``<root>/<key[:16]>/``::

    settings.json   what made the set (generation settings, backend, fingerprints)
    manifest.csv    one row per image, columns MANIFEST_COLUMNS
    images/         <synthetic_id>.png
    images.pt       uint8 tensor cache, written once the set is complete
    COMPLETE        marker, written last

Writing is append-only and crash-safe: each PNG is written under a temporary name and
renamed into place, and only then is its manifest row appended and fsync'ed. Opening a
folder again repairs it (rows without an image are dropped, images without a row deleted),
so an interrupted generation resumes exactly where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

MANIFEST_COLUMNS = (
    "synthetic_id",
    "source_id",
    "label",
    "class_name",
    "kind",
    "recipe",
    "strength",
    "seed",
    "backend",
    "model_fingerprint",
    "file",
)
KINDS = ("id", "near_ood")
MANIFEST_FILE = "manifest.csv"
SETTINGS_FILE = "settings.json"
COMPLETE_FILE = "COMPLETE"
CACHE_FILE = "images.pt"
IMAGES_DIR = "images"
_TMP_SUFFIX = ".tmp"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class SyntheticSetKey:
    """What a synthetic set is a function of; its sha256 names the set's folder.

    ``settings`` is the generation settings dict (see `eibacl.generate.dafusion.augment`);
    list order matters (strengths are drawn by index), dict key order does not.
    """

    data_fingerprint: str
    split_fingerprint: str
    settings: dict[str, Any] = field(hash=False)
    backend_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_fingerprint": self.data_fingerprint,
            "split_fingerprint": self.split_fingerprint,
            "settings": self.settings,
            "backend_fingerprint": self.backend_fingerprint,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical_json(self.to_dict()).encode()).hexdigest()

    def directory(self, root: Path | str) -> Path:
        return Path(root) / self.digest[:16]


@dataclass
class ManifestRow:
    """One synthetic image. For near-OOD rows ``label``/``class_name`` are the *source's*:
    the image belongs to no known class and must only be used as a negative (see ``kind``)."""

    synthetic_id: str
    source_id: str
    label: int
    class_name: str
    kind: str
    recipe: str
    strength: float
    seed: int
    backend: str
    model_fingerprint: str
    file: str

    @classmethod
    def from_strings(cls, values: Sequence[str]) -> ManifestRow:
        if len(values) != len(MANIFEST_COLUMNS):
            raise ValueError(f"expected {len(MANIFEST_COLUMNS)} fields, got {len(values)}")
        row = dict(zip(MANIFEST_COLUMNS, values))
        kind = row["kind"]
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return cls(
            synthetic_id=row["synthetic_id"],
            source_id=row["source_id"],
            label=int(row["label"]),
            class_name=row["class_name"],
            kind=kind,
            recipe=row["recipe"],
            strength=float(row["strength"]),
            seed=int(row["seed"]),
            backend=row["backend"],
            model_fingerprint=row["model_fingerprint"],
            file=row["file"],
        )

    def to_strings(self) -> list[str]:
        return [repr(v) if isinstance(v, float) else str(v) for v in astuple(self)]


assert tuple(f.name for f in fields(ManifestRow)) == MANIFEST_COLUMNS

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id; a short hash is added when characters were replaced."""
    cleaned = _SAFE.sub("_", str(text))
    if cleaned != str(text) or not cleaned or cleaned.startswith("."):
        cleaned = f"{cleaned.lstrip('.')}_{hashlib.sha256(str(text).encode()).hexdigest()[:8]}"
    return cleaned


def is_complete(directory: Path | str) -> bool:
    """True when the set in ``directory`` finished (its ``COMPLETE`` marker exists)."""
    return (Path(directory) / COMPLETE_FILE).is_file()


def find(root: Path | str, key: SyntheticSetKey) -> Path | None:
    """The folder of the complete set for ``key`` under ``root``, or None."""
    directory = key.directory(root)
    return directory if is_complete(directory) else None


def _write_error(directory: Path, err: OSError, done: int) -> RuntimeError:
    reason = err.strerror or str(err)
    return RuntimeError(
        f"cannot write the synthetic set in {directory}: {reason}. The {done} image(s) "
        "generated so far are kept; free disk space or make the folder writable, then run "
        "the same generation again to resume where it stopped."
    )


def _read_rows(path: Path) -> tuple[list[ManifestRow], bool]:
    """Parse a manifest; return the valid rows and whether anything had to be dropped."""
    if not path.is_file():
        return [], False
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    dirty = bool(lines) and not text.endswith("\n")  # a half-written last row
    if dirty:
        lines = lines[:-1]
    rows: list[ManifestRow] = []
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is not None and tuple(header) != MANIFEST_COLUMNS:
        raise ValueError(f"{path} is not a synthetic-set manifest (columns {header})")
    for values in reader:
        try:
            rows.append(ManifestRow.from_strings(values))
        except ValueError:
            dirty = True
    return rows, dirty


def _encode_png(image: torch.Tensor) -> bytes:
    arr = image.detach().cpu().numpy()
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected a uint8 C×H×W image with 1, 3 or 4 channels, got {arr.shape}")
    pil = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_png(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        arr = np.asarray(pil.convert(pil.mode if pil.mode in ("L", "RGB", "RGBA") else "RGB"))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SyntheticSetWriter:
    """Append-only writer of one set folder; reopening resumes and repairs it.

    ``settings`` is stored in ``settings.json``; reopening a folder made with other
    settings is refused, so two different generations never mix in one folder.
    """

    def __init__(self, directory: Path | str, settings: dict[str, Any]):
        self.directory = Path(directory)
        self.settings = json.loads(_canonical_json(settings))
        self._manifest = None
        try:
            (self.directory / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
            settings_path = self.directory / SETTINGS_FILE
            if settings_path.is_file():
                saved = json.loads(settings_path.read_text())
                if _canonical_json(saved) != _canonical_json(self.settings):
                    raise ValueError(
                        f"{self.directory} holds a synthetic set made with other settings; "
                        "use another folder (the key of the new settings) or delete it"
                    )
            else:
                _atomic_write(settings_path, json.dumps(self.settings, indent=2).encode())
            self.rows: dict[str, ManifestRow] = {}
            self._repair()
        except OSError as err:
            raise _write_error(self.directory, err, 0) from err

    # -------------------------------------------------------------- state
    @property
    def done_ids(self) -> set[str]:
        return set(self.rows)

    @property
    def complete(self) -> bool:
        return is_complete(self.directory)

    def _repair(self) -> None:
        manifest = self.directory / MANIFEST_FILE
        images = self.directory / IMAGES_DIR
        rows, dirty = _read_rows(manifest)
        kept: dict[str, ManifestRow] = {}
        for row in rows:
            path = self.directory / row.file
            if row.synthetic_id in kept or not path.is_file() or path.stat().st_size == 0:
                dirty = True
                continue
            kept[row.synthetic_id] = row
        referenced = {(self.directory / row.file).resolve() for row in kept.values()}
        for path in images.iterdir():
            if path.resolve() not in referenced:
                path.unlink()
                dirty = True
        if dirty or not manifest.is_file():
            self._rewrite_manifest(list(kept.values()))
            # A repaired set is no longer the complete set it claimed to be.
            (self.directory / COMPLETE_FILE).unlink(missing_ok=True)
            (self.directory / CACHE_FILE).unlink(missing_ok=True)
        self.rows = kept

    def _rewrite_manifest(self, rows: list[ManifestRow]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            writer.writerow(row.to_strings())
        _atomic_write(self.directory / MANIFEST_FILE, buffer.getvalue().encode("utf-8"))

    # -------------------------------------------------------------- writing
    def write(self, row: ManifestRow, image: torch.Tensor) -> None:
        """Store ``image`` (uint8 C×H×W) as ``row.file``, then append and fsync its row."""
        if row.synthetic_id in self.rows:
            raise ValueError(f"synthetic id {row.synthetic_id!r} is already in the set")
        if row.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {row.kind!r}")
        data = _encode_png(image)
        try:
            _atomic_write(self.directory / row.file, data)
            if self._manifest is None:
                self._manifest = open(  # noqa: SIM115 - kept open across appends
                    self.directory / MANIFEST_FILE, "a", encoding="utf-8", newline=""
                )
            csv.writer(self._manifest, lineterminator="\n").writerow(row.to_strings())
            self._manifest.flush()
            os.fsync(self._manifest.fileno())
        except OSError as err:
            raise _write_error(self.directory, err, len(self.rows)) from err
        self.rows[row.synthetic_id] = row

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None

    def finish(self) -> None:
        """Write the tensor cache, then the ``COMPLETE`` marker (last)."""
        self.close()
        try:
            rows = list(self.rows.values())
            images = _decode_all(self.directory, rows)
            _save_cache(self.directory, rows, images)
            _atomic_write(self.directory / COMPLETE_FILE, json.dumps({"count": len(rows)}).encode())
        except OSError as err:
            raise _write_error(self.directory, err, len(self.rows)) from err

    def __enter__(self) -> SyntheticSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_all(directory: Path, rows: list[ManifestRow]) -> torch.Tensor:
    if not rows:
        return torch.zeros(0, 1, 1, 1, dtype=torch.uint8)
    arrays = [_decode_png(directory / row.file) for row in rows]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{directory}: images of different shapes {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays))


def _save_cache(directory: Path, rows: list[ManifestRow], images: torch.Tensor) -> None:
    tmp = directory / (CACHE_FILE + _TMP_SUFFIX)
    torch.save({"synthetic_ids": [r.synthetic_id for r in rows], "images": images}, tmp)
    os.replace(tmp, directory / CACHE_FILE)


@dataclass
class SyntheticSet:
    """A loaded synthetic set: images (uint8 N×C×H×W) and their manifest, row-aligned."""

    directory: Path
    images: torch.Tensor
    rows: list[ManifestRow]
    settings: dict[str, Any]

    @classmethod
    def open(cls, directory: Path | str, *, allow_incomplete: bool = False) -> SyntheticSet:
        """Load a set. Complete sets read the ``images.pt`` cache (built on first need)."""
        directory = Path(directory)
        if not (directory / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no synthetic set ({MANIFEST_FILE})")
        complete = is_complete(directory)
        if not complete and not allow_incomplete:
            raise ValueError(
                f"the synthetic set in {directory} is incomplete (no {COMPLETE_FILE} marker): "
                "run the same generation again to finish it"
            )
        rows, _ = _read_rows(directory / MANIFEST_FILE)
        rows = [r for r in rows if (directory / r.file).is_file()] if not complete else rows
        settings_path = directory / SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        ids = [r.synthetic_id for r in rows]
        images = None
        cache = directory / CACHE_FILE
        if complete and cache.is_file():
            data = torch.load(cache, weights_only=True)
            if list(data["synthetic_ids"]) == ids:
                images = data["images"]
        if images is None:
            images = _decode_all(directory, rows)
            if complete:
                try:
                    _save_cache(directory, rows, images)
                except OSError:
                    pass  # a read-only copy of a set still loads, just without the cache
        return cls(directory=directory, images=images, rows=rows, settings=settings)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([r.label for r in self.rows], dtype=torch.int64)

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.rows]

    @property
    def is_near_ood(self) -> torch.Tensor:
        return torch.tensor([r.kind == "near_ood" for r in self.rows], dtype=torch.bool)

    @property
    def source_ids(self) -> list[str]:
        return [r.source_id for r in self.rows]

    @property
    def synthetic_ids(self) -> list[str]:
        return [r.synthetic_id for r in self.rows]

    @property
    def recipes(self) -> list[str]:
        return [r.recipe for r in self.rows]

    @property
    def strengths(self) -> torch.Tensor:
        return torch.tensor([r.strength for r in self.rows], dtype=torch.float64)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.rows]
