"""The checkpoint-format registry: what a path is decides which reader reads it.

A format registers a reader (path spec -> flat arrays exactly as stored), optionally a writer and a metadata reader,
and says which paths are its own: file suffixes, or a test on a directory. `detect` picks the format of a path; a
card's `format` field names one directly (`get`). Adding a format is one module in this folder that calls
`register_format`, imported in `formats/__init__.py` (docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from evalkit.checkpoints.tree import CheckpointError, split_spec


@dataclasses.dataclass(frozen=True)
class Format:
  """One way checkpoints are stored.

  read(spec) -> flat dict of numpy arrays as stored (after `:prefix` selection, before any renames);
  convert(flat, model, spec) -> the same arrays under evalkit's (big_vision's) names for `model` (None: the
  format's names already are big_vision's, `big_vision.canonicalize` handles historical layouts);
  write(path, params, **kw) saves a params tree; read_meta(spec) -> evalkit metadata saved beside it, or None
  ({"model": ViT kwargs} lets a path be evaluated without model flags);
  posemb_resize: how the ecosystem the format comes from resamples position embeddings (fit.POSEMB_RESIZE).
  `suffixes` claim files by name; `claims_dir(directory)` claims directories; `fallback_for` ("file" / "dir") makes
  the format the reader of last resort for unclaimed paths of that kind, so its reader explains what is wrong.
  """
  name: str
  read: Callable[[str], dict[str, np.ndarray]]
  suffixes: tuple[str, ...] = ()
  claims_dir: Callable[[str], bool] | None = None
  write: Callable | None = None
  read_meta: Callable[[str], dict | None] = lambda spec: None
  fallback_for: str | None = None
  convert: Callable | None = None
  posemb_resize: str = "linear"


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
  if fmt.name in FORMATS:
    raise ValueError(f"checkpoint format {fmt.name!r} registered twice")
  FORMATS[fmt.name] = fmt
  return fmt


def get(name: str) -> Format:
  if name not in FORMATS:
    raise CheckpointError(f"unknown checkpoint format {name!r}; known: {', '.join(FORMATS)}")
  return FORMATS[name]


def claims_suffix(path: str | os.PathLike) -> bool:
  """Whether a name ends like a checkpoint file of some format (so it is a path, not a card name)."""
  file, _ = split_spec(os.fspath(path))
  return any(file.endswith(s) for fmt in FORMATS.values() for s in fmt.suffixes)


def detect(path: str | os.PathLike) -> Format:
  """The format of a checkpoint path (which may carry big_vision's `:prefix`)."""
  file, _ = split_spec(os.fspath(path))
  kind = "dir" if os.path.isdir(file) else "file"
  for fmt in FORMATS.values():
    if kind == "file" and any(file.endswith(s) for s in fmt.suffixes):
      return fmt
    if kind == "dir" and fmt.claims_dir is not None and fmt.claims_dir(file):
      return fmt
  for fmt in FORMATS.values():
    if fmt.fallback_for == kind:
      return fmt
  raise CheckpointError(f"checkpoint {path}: no registered format reads it (known: {', '.join(FORMATS)})")
