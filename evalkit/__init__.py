"""evalkit: transfer evaluation of frozen Vision Transformer checkpoints.

Pipeline (one module per stage, data flows one way):
  checkpoints -> data (TFDS + pp) -> features -> adapters (fewshot, ...) -> results -> report / gate
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("checkpoints", "cards", "data", "features", "fewshot", "models", "tasks", "results", "distributed")


def __getattr__(name):
  # Lazy submodules: `import evalkit; evalkit.fewshot.ridge_fewshot(...)` works without importing jax/tfds up front.
  if name in _SUBMODULES:
    return importlib.import_module(f"evalkit.{name}")
  raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
