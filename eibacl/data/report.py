"""What a source left out or used differently from the rest: skipped images and images
without their mask. Counted as metrics, listed in an artifact, said in one line."""

from __future__ import annotations

from typing import Any

from eibacl import names
from eibacl.data.imageset import ImageSet


def has_masks(imageset: ImageSet) -> bool:
    """Only folder sources have a mask mode; Fashion-MNIST has no masks to miss."""
    return bool(imageset.masks)


def report_metrics(imageset: ImageSet) -> dict[str, float]:
    metrics = {"data/skipped": float(len(imageset.skipped))}
    if has_masks(imageset):
        metrics["data/unmasked"] = float(len(imageset.unmasked))
    return metrics


def report(imageset: ImageSet) -> dict[str, Any]:
    """The artifact: every skipped image with its reason, every image used without a mask."""
    reasons = imageset.skip_reasons or [""] * len(imageset.skipped)
    return {
        "source": imageset.source,
        "images_used": len(imageset),
        "masks": imageset.masks or "n/a",
        "skipped": [
            {"path": path, "reason": reason}
            for path, reason in zip(imageset.skipped, reasons, strict=True)
        ],
        "unmasked": list(imageset.unmasked) if has_masks(imageset) else [],
    }


def needs_attention(imageset: ImageSet) -> bool:
    """Skipped images, or masks on some images only (a background cue): a warning; a folder
    without any masks, or masks=off, is said as information."""
    partly = 0 < len(imageset.unmasked) < len(imageset)
    return bool(imageset.skipped) or (imageset.masks == "auto" and partly)


def report_line(imageset: ImageSet) -> str:
    """One line for the start of a run; '' when nothing was skipped or used unmasked."""
    parts = []
    total = len(imageset) + len(imageset.skipped)
    if imageset.skipped:
        parts.append(
            f"{len(imageset.skipped)} of {total} images skipped as unreadable or missing "
            "(skip_corrupt=true)"
        )
    if imageset.masks == "off":
        parts.append("masks=off: every image is used whole")
    elif has_masks(imageset) and imageset.unmasked:
        whole = (
            "no image has a mask, all are used whole"
            if len(imageset.unmasked) == len(imageset)
            else f"{len(imageset.unmasked)} of {len(imageset)} images have no mask and are "
            "used whole (background kept; masks=required makes this an error)"
        )
        parts.append(whole)
    if not parts:
        return ""
    return (
        f"data {imageset.source}: "
        + "; ".join(parts)
        + f"; listed in the run's {names.REPORT_ARTIFACT} (metrics data/skipped, data/unmasked)"
    )
