"""One file per loss."""

from eibacl.models.losses.supcon import supcon_loss

__all__ = ["supcon_loss"]
