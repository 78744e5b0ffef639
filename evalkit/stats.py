"""Uncertainty of accuracies: bootstrap over test items."""
from __future__ import annotations

import numpy as np


def bootstrap_ci(correct: np.ndarray, *, level: float = 0.95, resamples: int = 2000, seed: int = 0,
                 chunk: int = 250) -> tuple[float, float]:
  """Percentile bootstrap CI of the mean of per-item outcomes (0/1), resampling test items with replacement.

  Deterministic given `seed`; memory is bounded by drawing `chunk` resamples at a time.
  """
  correct = np.asarray(correct, np.float64)
  n = len(correct)
  if n == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, resamples, chunk):
    idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
    means.append(correct[idx].mean(axis=1))
  means = np.concatenate(means)
  alpha = (1.0 - level) / 2
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return float(lo), float(hi)
