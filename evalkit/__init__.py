"""evalkit: transfer evaluation of frozen Vision Transformer checkpoints.

Pipeline (one package per stage, data flows one way; docs/architecture.md):
  checkpoints -> data (TFDS + pp) -> features -> adapters (fewshot_ridge, finetune, ...) -> results
  -> analysis (compare, gate, scaling) -> report (leaderboard)
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("adapters", "analysis", "checkpoints", "data", "distributed", "evaluate", "features", "models",
               "probes", "report", "results", "subjects", "tasks", "train")


def __getattr__(name):
  # Lazy submodules: `import evalkit; evalkit.probes.ridge_fewshot(...)` works without importing jax/tfds up front.
  if name in _SUBMODULES:
    return importlib.import_module(f"evalkit.{name}")
  raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
