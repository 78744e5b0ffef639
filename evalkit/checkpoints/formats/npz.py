"""`.npz` checkpoints: big_vision's and vision_transformer's format (flat "/"-joined names, bfloat16 as 2-byte void).

A file path may carry big_vision's ":prefix" sub-tree selector (e.g. "siglip.npz:params/img"). Files are read with
`allow_pickle=False`: an archive that needs unpickling is refused.
"""
from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping

import numpy as np

from evalkit import fileio
from evalkit.checkpoints.formats.registry import Format, register_format
from evalkit.checkpoints.tree import CheckpointError, fix_dtype, numeric_arrays, one_line, select_prefix, split_spec


def _check_magic(file: str, spec: str) -> None:
  """Tells apart "not an npz at all" from "a damaged npz" for the message."""
  with open(file, "rb") as f:
    magic = f.read(6)
  if not magic:
    raise CheckpointError(f"checkpoint {spec}: file is empty")
  if magic == b"\x93NUMPY":
    raise CheckpointError(f"checkpoint {spec}: holds a single array (.npy), not a checkpoint of named arrays")
  if not magic.startswith(b"PK"):
    raise CheckpointError(f"checkpoint {spec}: not an .npz checkpoint (not a zip archive; file starts with "
                          f"{magic!r})")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The arrays of an `.npz` checkpoint as stored (bfloat16 back as ml_dtypes.bfloat16), `:prefix` applied.

  Raises CheckpointError for a missing, empty, truncated or corrupt file, or one that is not a checkpoint.
  """
  spec = os.fspath(path)
  file, prefix = split_spec(spec)
  if not os.path.exists(file):
    raise CheckpointError(f"checkpoint {spec}: no such file")
  if os.path.isdir(file):
    raise CheckpointError(f"checkpoint {spec}: is a directory, not an .npz file (orbax checkpoints are "
                          "directories: use format \"orbax\")")
  _check_magic(file, spec)
  flat = {}
  try:
    with np.load(file, allow_pickle=False) as loaded:
      for name in loaded.files:
        flat[name] = fix_dtype(name, loaded[name], spec)
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
    raise CheckpointError(f"checkpoint {spec}: not a readable .npz archive (truncated or corrupt?): "
                          f"{one_line(e)}") from None
  except Exception as e:  # zlib.error and the like: still one line
    raise CheckpointError(f"checkpoint {spec}: cannot read: {one_line(e)}") from None
  if not flat:
    raise CheckpointError(f"checkpoint {spec}: the .npz holds no arrays")
  return select_prefix(flat, prefix, spec)


def save_npz(path: str | os.PathLike, params: Mapping[str, Any]) -> None:
  """Saves params (nested or flat) as a flat big_vision-style `.npz`, atomically (temp file, then rename).

  bfloat16 arrays are stored the way numpy stores them (2-byte void), as big_vision does; `read_npz` undoes it.
  """
  flat = numeric_arrays(params)
  fileio.atomic_write(os.fspath(path), lambda f: np.savez(f, **flat))


register_format(Format("npz", read=read_npz, suffixes=(".npz",), write=save_npz, fallback_for="file"))
