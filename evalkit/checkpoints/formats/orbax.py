"""evalkit's orbax checkpoints: a directory written by `orbax.checkpoint`, with `evalkit_meta.json` beside the arrays.

Restored as numpy arrays with no target tree, device or sharding, so checkpoints saved from sharded jax arrays load
on one CPU. The metadata (model config, step, training provenance) lets `evalkit eval` build the model by itself.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Any, Mapping

import jax
import numpy as np

from evalkit import fileio
from evalkit.checkpoints.formats.registry import Format, register_format
from evalkit.checkpoints.tree import (CheckpointError, capped, fix_dtype, flatten, numeric_arrays, one_line,
                                      select_prefix, split_spec, unflatten)

META_FILENAME = "evalkit_meta.json"
_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "checkpoint")  # top of a finished checkpoint


def is_orbax_dir(directory: str) -> bool:
  return any(os.path.exists(os.path.join(directory, m)) for m in _MARKERS)


def _check_dir(directory: str, spec: str) -> None:
  if is_orbax_dir(directory):
    return
  steps = sorted((d for d in os.listdir(directory) if d.isdigit()), key=int)
  hint = (f"; it looks like a checkpoint-manager root, pass one step's directory (steps {capped(steps)})"
          if steps else "")
  raise CheckpointError(f"checkpoint {spec}: directory is not an orbax checkpoint (no _METADATA){hint}")


def read_orbax(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The arrays of an orbax checkpoint directory as stored (non-array leaves skipped), `:prefix` applied."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  spec = os.fspath(path)
  directory, prefix = split_spec(spec)
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint {spec}: no such directory")
  directory = os.path.abspath(directory)
  _check_dir(directory, spec)
  try:
    ckptr = ocp.PyTreeCheckpointer()
    meta = ckptr.metadata(directory)
    tree_meta = getattr(getattr(meta, "item_metadata", meta), "tree", None)
    if tree_meta is None:
      tree_meta = getattr(meta, "item_metadata", meta)
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree_meta)
    tree = ckptr.restore(directory, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  except Exception as e:  # orbax raises many types; report them all alike
    raise CheckpointError(f"checkpoint {spec}: cannot restore orbax checkpoint: {one_line(e)}") from None
  flat = {k: fix_dtype(k, v, spec) for k, v in flatten(tree).items() if isinstance(v, np.ndarray)}
  if not flat:
    raise CheckpointError(f"checkpoint {spec}: orbax checkpoint holds no arrays")
  return select_prefix(flat, prefix, spec)


def save_orbax(path: str | os.PathLike, params: Mapping[str, Any], metadata: dict | None = None, *,
               overwrite: bool = False) -> None:
  """Saves params as an orbax checkpoint directory plus `evalkit_meta.json` (JSON-serialisable `metadata`).

  Arrays go to numpy first so that restoring needs no device or sharding information; the metadata is written
  atomically after orbax has committed the arrays.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(os.fspath(path))  # orbax requires absolute paths
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f"checkpoint {path}: already exists (pass overwrite=True to replace it)")
  tree = unflatten(numeric_arrays(params))
  # orbax writes `<path>.orbax-checkpoint-tmp-<time>` and renames it when complete; one left by a killed save is
  # never read, and would stay forever: remove it (one writer per path: pre-training exports from process 0 only).
  for stale in glob.glob(glob.escape(path) + ".orbax-checkpoint-tmp*"):
    shutil.rmtree(stale, ignore_errors=True)
  ocp.PyTreeCheckpointer().save(path, tree, force=overwrite)
  if metadata is not None:
    text = json.dumps(metadata, indent=2, sort_keys=True)
    fileio.atomic_write(os.path.join(path, META_FILENAME), lambda f: f.write(text.encode()))


def read_checkpoint_meta(path: str | os.PathLike) -> dict | None:
  """The `evalkit_meta.json` of an orbax checkpoint, or None if it has none."""
  directory, _ = split_spec(os.fspath(path))
  meta_file = os.path.join(directory, META_FILENAME)
  if not os.path.isdir(directory) or not os.path.exists(meta_file):
    return None
  try:
    with open(meta_file, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"checkpoint {path}: unreadable {META_FILENAME}: {one_line(e)}") from None


register_format(Format("orbax", read=read_orbax, claims_dir=is_orbax_dir, write=save_orbax,
                       read_meta=read_checkpoint_meta, fallback_for="dir"))
