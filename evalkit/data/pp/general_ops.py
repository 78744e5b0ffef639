"""General ops of big_vision's pp language: dict plumbing (keep, drop, copy) and labels (onehot)."""
from __future__ import annotations

import numpy as np

from evalkit.data.pp.registry import register


@register("keep")
def _keep(*keys):
  """Keeps only the given keys."""
  return lambda data, rng: {k: v for k, v in data.items() if k in keys}


@register("drop")
def _drop(*keys):
  """Drops the given keys."""
  return lambda data, rng: {k: v for k, v in data.items() if k not in keys}


@register("copy")
def _copy(inkey, outkey):
  """Copies data[inkey] to data[outkey] (arrays are shared, never mutated)."""
  def op(data, rng):
    data[outkey] = data[inkey]
    return data
  return op


@register("onehot")
def _onehot(depth, key="label", key_result=None, multi=True, on=1.0, off=0.0):
  """One-hot (or multi-hot for a label list) float32 vector of length `depth`.

  Note: big_vision's default `key` is "labels"; tfds examples call it "label"
  and big_vision configs always pass key="label" explicitly, so that is our
  default.
  """
  def op(data, rng):
    labels = np.asarray(data[key], np.int64)
    if labels.ndim > 0 and multi:
      hot = np.zeros((depth,), bool)
      hot[labels] = True
    else:
      hot = np.arange(depth) == labels[..., None]
    data[key_result or key] = np.where(hot, on, off).astype(np.float32)
    return data
  return op
