"""What every checkpoint module shares: the error type, flat "/"-joined trees, big_vision's `path:prefix` syntax."""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

import flax.traverse_util
import ml_dtypes
import numpy as np

from evalkit.errors import EvalkitError

MAX_LISTED = 5  # how many names an error line lists per category before "(+N more)"


class CheckpointError(EvalkitError):
  """A checkpoint could not be read or does not fit the model (one line that names the path)."""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> flat dict with "/"-joined keys (already-flat dicts pass)."""
  return flax.traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Flat "/"-joined dict -> nested dict."""
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


def one_line(err: BaseException, limit: int = 240) -> str:
  """`Type: message` on one line, cut to `limit` characters (orbax and tensorstore errors embed whole JSON specs)."""
  text = f"{type(err).__name__}: {' '.join(str(err).split())}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def capped(names: Iterable[str]) -> str:
  names = list(names)
  shown = ", ".join(names[:MAX_LISTED])
  if len(names) > MAX_LISTED:
    shown += f", ... (+{len(names) - MAX_LISTED} more)"
  return f"[{shown}]"


def split_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
  """Splits big_vision's "path:prefix" into (path, prefix or None).

  A path that exists as written is never split, so file names containing a colon keep working; the prefix must look
  like a tree path (`[\\w/]+`).
  """
  spec = os.fspath(spec)
  if os.path.exists(spec):
    return spec, None
  head, sep, tail = spec.rpartition(":")
  if sep and head and re.fullmatch(r"[\w/]+", tail) and tail.strip("/"):
    return head, tail.strip("/")
  return spec, None


def select_prefix(flat: dict, prefix: str | None, spec: str) -> dict:
  """Keeps the keys under `prefix/`, with the prefix stripped."""
  if not prefix:
    return flat
  start = prefix + "/"
  sub = {k[len(start):]: v for k, v in flat.items() if k.startswith(start)}
  if not sub:
    tops = sorted({k.split("/", 1)[0] for k in flat})
    raise CheckpointError(f"checkpoint {spec}: no arrays under prefix {prefix!r}; top-level names: {capped(tops)}")
  return sub


def fix_dtype(name: str, a: np.ndarray, spec: str) -> np.ndarray:
  """Reinterprets numpy's 2-byte void (how bfloat16 is stored in .npz) as bfloat16."""
  if a.dtype.kind == "V":
    if a.dtype.itemsize != 2:
      raise CheckpointError(f"checkpoint {spec}: array {name} has an unknown {a.dtype.itemsize}-byte raw dtype "
                            f"{a.dtype.str}")
    return a.view(ml_dtypes.bfloat16)
  return a


def numeric_arrays(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flat numpy copy of params; refuses what could not be read back without unpickling."""
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  for key, a in flat.items():
    if a.dtype.kind not in "biufcV":  # V: bfloat16 and friends
      raise ValueError(f"cannot save {key}: dtype {a.dtype} is not numeric (it would need pickling)")
  return flat
