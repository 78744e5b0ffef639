"""Checkpoint formats, one module each; importing this package registers them (the one place a format is listed)."""
# Registration order is detection order: npz and orbax (evalkit's own) first.
from evalkit.checkpoints.formats import npz, orbax  # noqa: F401,I001  (registration)
from evalkit.checkpoints.formats import timm, hf  # noqa: F401,I001  (registration)
from evalkit.checkpoints.formats.registry import (FORMATS, BuiltModel, Format, big_vision_model, claims_suffix, detect,
                                                get, register_format)

__all__ = ["FORMATS", "BuiltModel", "Format", "big_vision_model", "claims_suffix", "detect", "get", "register_format"]
