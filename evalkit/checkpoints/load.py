"""The public entry points of checkpoint ingestion: read any registered format, fingerprint, canonicalize, fit.

  1. the format's reader returns the arrays as stored (`formats`: npz, orbax, ...), `path:prefix` applied;
  2. `weights_hash` fingerprints them before anything is changed;
  3. `big_vision.canonicalize` renames historical layouts to big_vision's names;
  4. `fit.fit_to_model` drops `dont_load`, resamples the posemb, validates the tree and casts to the model's dtypes.
Every problem raises `CheckpointError` with one line that names the path and what is wrong.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterable, Mapping

import numpy as np

from evalkit.checkpoints import big_vision, fit, formats


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A checkpoint fitted to a model.

  params: nested numpy arrays, the tree/shapes/dtypes of `model.init(...)["params"]` at the requested image size;
  weights_hash: `weights_hash` of the arrays as stored; path: the spec it was loaded from (`:prefix` included);
  format: the registered format's name; meta: evalkit metadata saved with the checkpoint, else None.
  """
  params: dict
  weights_hash: str
  path: str
  format: str
  meta: dict | None = None


def weights_hash(flat: Mapping[str, np.ndarray]) -> str:
  """SHA-256 fingerprint of a flat checkpoint, as hex.

  For each key in sorted order, hashes the header "key\\0dtype\\0shape\\0" (dtype by name, e.g. "bfloat16"; shape as
  comma-separated ints), then the array's raw little-endian C-order bytes. Callers pass the arrays as stored (after
  `:prefix` selection and the bfloat16 reinterpretation, before renames, resampling, `dont_load` or casting), so the
  hash identifies the file's weights: the same for any image size or head, stable over a save/load round trip, and
  different when any value, dtype or name changes.
  """
  h = hashlib.sha256()
  for key in sorted(flat):
    a = np.asarray(flat[key])
    if a.dtype.byteorder == ">":
      a = a.astype(a.dtype.newbyteorder("<"))
    shape = ",".join(str(d) for d in a.shape)
    h.update(f"{key}\0{a.dtype.name}\0{shape}\0".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def read_flat(path: str | os.PathLike, *, format: str | None = None,  # pylint: disable=redefined-builtin
              canonical: bool = True) -> dict[str, np.ndarray]:
  """The flat arrays of a checkpoint in any registered format (`format` given, or detected from the path);
  `canonical` also maps historical layouts onto big_vision's names."""
  fmt = formats.get(format) if format else formats.detect(path)
  flat = fmt.read(os.fspath(path))
  return big_vision.canonicalize(flat, os.fspath(path)) if canonical else flat


def read_checkpoint_meta(path: str | os.PathLike, *,
                         format: str | None = None) -> dict | None:  # pylint: disable=redefined-builtin
  """evalkit's metadata stored with a checkpoint (model config, training), or None."""
  fmt = formats.get(format) if format else formats.detect(path)
  return fmt.read_meta(os.fspath(path))


def load_checkpoint(path: str | os.PathLike, *, model, image_size=(224, 224), dont_load: Iterable[str] = (),
                    format: str | None = None) -> Checkpoint:  # pylint: disable=redefined-builtin
  """Reads a checkpoint and fits it to `model` (a `vit.VisionTransformer`) at `image_size`.

  `path` may carry big_vision's ":prefix" selector; `dont_load` are regexes (full match) of parameter names taken
  from `model.init(key(0))` instead of the file; `format` names the reader (a card's `format`), else the path decides.
  """
  spec = os.fspath(path)
  fmt = formats.get(format) if format else formats.detect(spec)
  raw = fmt.read(spec)
  fingerprint = weights_hash(raw)
  flat = big_vision.canonicalize(raw, spec)
  del raw
  params = fit.fit_to_model(flat, model=model, image_size=image_size, dont_load=dont_load, spec=spec)
  return Checkpoint(params=params, weights_hash=fingerprint, path=spec, format=fmt.name, meta=fmt.read_meta(spec))


def load_params(path: str | os.PathLike, *, model, image_size=(224, 224), dont_load: Iterable[str] = ()) -> dict:
  """The params of `load_checkpoint(...)`: part of evalkit's stable public API."""
  return load_checkpoint(path, model=model, image_size=image_size, dont_load=dont_load).params
