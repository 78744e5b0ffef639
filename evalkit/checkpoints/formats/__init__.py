"""Checkpoint formats, one module each; importing this package registers them (the one place a format is listed)."""
from evalkit.checkpoints.formats import npz, orbax  # noqa: F401  (registration)
from evalkit.checkpoints.formats.registry import FORMATS, Format, claims_suffix, detect, get, register_format

__all__ = ["FORMATS", "Format", "claims_suffix", "detect", "get", "register_format"]
