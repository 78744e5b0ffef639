"""Checkpoint ingestion: big_vision/vision_transformer `.npz`, evalkit orbax.

The first stage of the pipeline. Everything a user can point evalkit at goes
through `load_checkpoint`, which
  1. reads the stored arrays (`read_npz` / `read_orbax`), honouring big_vision's
     `file.npz:prefix` sub-tree syntax and its bfloat16-as-void quirk;
  2. fingerprints them (`weights_hash`), before anything is changed;
  3. renames historical layouts to big_vision's (`canonicalize`);
  4. fits them to the model: drops `dont_load` params, folds an old class-token
     posemb row into `cls`, resamples the posemb grid to the target resolution,
     fills re-initialised params from a real `model.init`;
  5. validates the whole tree at once and casts to the model's dtype.

Every problem raises `CheckpointError` with a single readable line that names
the path and what is wrong, because these messages end up in CI logs and
leaderboard tables where a traceback is not helpful.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import zipfile
from typing import Any, Iterable, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import scipy.ndimage

from evalkit import fileio
from evalkit.models import vit

META_FILENAME = "evalkit_meta.json"
# How many names an error line lists per category before "(+N more)".
_MAX_LISTED = 5
# Files orbax writes at the top of a finished checkpoint directory.
_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt",
                  "checkpoint")


class CheckpointError(Exception):
  """A checkpoint could not be read or does not fit the model (one line)."""

  def __init__(self, message: str):
    # Collapse any embedded newlines (e.g. from numpy/orbax exceptions) so the
    # message always stays a single line.
    super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A checkpoint fitted to a model.

  Attributes:
    params: nested dict of numpy arrays, same tree/shapes/dtypes as
      `model.init(...)["params"]` at the requested image size.
    weights_hash: `weights_hash` of the arrays as stored (see there).
    path: the path (spec) the checkpoint was loaded from, `:prefix` included.
    format: "npz" or "orbax".
    meta: evalkit metadata saved with an orbax checkpoint, else None.
  """
  params: dict
  weights_hash: str
  path: str
  format: str
  meta: dict | None = None


# ----------------------------------------------------------------------------
# Small tree helpers.


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> flat dict with "/"-joined keys (already-flat dicts pass)."""
  return flax.traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Flat "/"-joined dict -> nested dict."""
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


def _one_line(err: BaseException, limit: int = 240) -> str:
  """`Type: message` on one line, cut to `limit` characters (orbax and
  tensorstore errors embed whole JSON specs)."""
  text = f"{type(err).__name__}: {' '.join(str(err).split())}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _capped(names: Iterable[str]) -> str:
  names = list(names)
  shown = ", ".join(names[:_MAX_LISTED])
  if len(names) > _MAX_LISTED:
    shown += f", ... (+{len(names) - _MAX_LISTED} more)"
  return f"[{shown}]"


def split_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
  """Splits big_vision's "path:prefix" into (path, prefix or None).

  A path that exists as written is never split, so file names containing a
  colon keep working; the prefix must look like a tree path (`[\\w/]+`).
  """
  spec = os.fspath(spec)
  if os.path.exists(spec):
    return spec, None
  head, sep, tail = spec.rpartition(":")
  if sep and head and re.fullmatch(r"[\w/]+", tail) and tail.strip("/"):
    return head, tail.strip("/")
  return spec, None


def _select_prefix(flat: dict, prefix: str | None, spec: str) -> dict:
  """Keeps the keys under `prefix/`, with the prefix stripped."""
  if not prefix:
    return flat
  start = prefix + "/"
  sub = {k[len(start):]: v for k, v in flat.items() if k.startswith(start)}
  if not sub:
    tops = sorted({k.split("/", 1)[0] for k in flat})
    raise CheckpointError(f"checkpoint {spec}: no arrays under prefix "
                          f"{prefix!r}; top-level names: {_capped(tops)}")
  return sub


def _fix_dtype(name: str, a: np.ndarray, spec: str) -> np.ndarray:
  """Reinterprets numpy's 2-byte void (how bfloat16 is stored) as bfloat16."""
  if a.dtype.kind == "V":
    if a.dtype.itemsize != 2:
      raise CheckpointError(f"checkpoint {spec}: array {name} has an unknown "
                            f"{a.dtype.itemsize}-byte raw dtype {a.dtype.str}")
    return a.view(ml_dtypes.bfloat16)
  return a


# ----------------------------------------------------------------------------
# Reading and writing.


def _check_npz_magic(file: str, spec: str) -> None:
  """Tells apart "not an npz at all" from "a damaged npz" for the message."""
  with open(file, "rb") as f:
    magic = f.read(6)
  if not magic:
    raise CheckpointError(f"checkpoint {spec}: file is empty")
  if magic == b"\x93NUMPY":
    raise CheckpointError(f"checkpoint {spec}: holds a single array (.npy), "
                          "not a checkpoint of named arrays")
  if not magic.startswith(b"PK"):
    raise CheckpointError(f"checkpoint {spec}: not an .npz checkpoint (not a "
                          f"zip archive; file starts with {magic!r})")


def read_npz(path: str | os.PathLike, *,
             canonical: bool = True) -> dict[str, np.ndarray]:
  """Reads a flat `.npz` checkpoint ("/"-joined keys), e.g. from big_vision.

  Args:
    path: file path, optionally with big_vision's ":prefix" sub-tree selector
      (e.g. "siglip.npz:params/img"): only keys under the prefix are kept,
      with the prefix stripped.
    canonical: also apply `canonicalize` (old vision_transformer names,
      "params/" wrapper, ...). `load_checkpoint` reads with False so that the
      hash covers the arrays exactly as stored.

  Returns:
    dict name -> numpy array; bfloat16 arrays come back as ml_dtypes.bfloat16.

  Raises:
    CheckpointError: missing, truncated or corrupt file, not a checkpoint.
  """
  spec = os.fspath(path)
  file, prefix = split_spec(spec)
  if not os.path.exists(file):
    raise CheckpointError(f"checkpoint {spec}: no such file")
  if os.path.isdir(file):
    raise CheckpointError(f"checkpoint {spec}: is a directory, not an .npz "
                          "file (orbax checkpoints are read with read_orbax)")
  _check_npz_magic(file, spec)
  flat = {}
  try:
    with np.load(file, allow_pickle=False) as loaded:
      for name in loaded.files:
        flat[name] = _fix_dtype(name, loaded[name], spec)
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
    raise CheckpointError(f"checkpoint {spec}: not a readable .npz archive "
                          f"(truncated or corrupt?): {_one_line(e)}") from None
  except Exception as e:  # zlib.error, pickle errors, ...: still one line.
    raise CheckpointError(f"checkpoint {spec}: cannot read: "
                          f"{_one_line(e)}") from None
  if not flat:
    raise CheckpointError(f"checkpoint {spec}: the .npz holds no arrays")
  flat = _select_prefix(flat, prefix, spec)
  return canonicalize(flat, spec) if canonical else flat


def _numeric_arrays(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flat numpy copy of params; refuses what could not be read back safely."""
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  for key, a in flat.items():
    if a.dtype.kind not in "biufcV":  # V: bfloat16 and friends.
      raise ValueError(f"cannot save {key}: dtype {a.dtype} is not numeric "
                       "(it would need pickling)")
  return flat


def save_npz(path: str | os.PathLike, params: Mapping[str, Any]) -> None:
  """Saves params (nested or flat dict) as a flat big_vision-style `.npz`.

  Written to a temp file in the same directory and renamed into place, so a
  reader never sees a half-written checkpoint. bfloat16 arrays are stored the
  way numpy stores them (2-byte void), as big_vision does; `read_npz` undoes it.
  """
  flat = _numeric_arrays(params)
  fileio.atomic_write(os.fspath(path), lambda f: np.savez(f, **flat))


def save_orbax(path: str | os.PathLike, params: Mapping[str, Any],
               metadata: dict | None = None, *,
               overwrite: bool = False) -> None:
  """Saves params as an orbax checkpoint directory (+ `evalkit_meta.json`).

  Arrays are converted to numpy first so that restoring needs no device or
  sharding information. `metadata` (model config, step, ...) must be
  JSON-serialisable; it is written atomically after orbax has committed.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(os.fspath(path))  # orbax requires absolute paths.
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f"checkpoint {path}: already exists "
                          "(pass overwrite=True to replace it)")
  tree = unflatten(_numeric_arrays(params))
  ocp.PyTreeCheckpointer().save(path, tree, force=overwrite)
  if metadata is not None:
    text = json.dumps(metadata, indent=2, sort_keys=True)
    fileio.atomic_write(os.path.join(path, META_FILENAME),
                  lambda f: f.write(text.encode()))


def _check_orbax_dir(directory: str, spec: str) -> None:
  if any(os.path.exists(os.path.join(directory, m)) for m in _ORBAX_MARKERS):
    return
  steps = sorted((d for d in os.listdir(directory) if d.isdigit()), key=int)
  hint = (f"; it looks like a checkpoint-manager root, pass one step's "
          f"directory (steps {_capped(steps)})" if steps else "")
  raise CheckpointError(f"checkpoint {spec}: directory is not an orbax "
                        f"checkpoint (no _METADATA){hint}")


def read_orbax(path: str | os.PathLike, *,
               canonical: bool = True) -> dict[str, np.ndarray]:
  """Reads an orbax checkpoint directory into a flat dict of numpy arrays.

  Restores with `restore_type=np.ndarray` for every array so that no target
  tree, device or sharding is needed (checkpoints saved from sharded jax
  arrays load on a single CPU). Non-array leaves (e.g. a step counter) are
  skipped. Supports the ":prefix" selector like `read_npz`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  spec = os.fspath(path)
  directory, prefix = split_spec(spec)
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint {spec}: no such directory")
  directory = os.path.abspath(directory)
  _check_orbax_dir(directory, spec)
  try:
    ckptr = ocp.PyTreeCheckpointer()
    meta = ckptr.metadata(directory)
    tree_meta = getattr(getattr(meta, "item_metadata", meta), "tree", None)
    if tree_meta is None:
      tree_meta = getattr(meta, "item_metadata", meta)
    restore_args = jax.tree.map(
        lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree_meta)
    tree = ckptr.restore(
        directory, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  except Exception as e:  # orbax raises many types; report them all alike.
    raise CheckpointError(f"checkpoint {spec}: cannot restore orbax "
                          f"checkpoint: {_one_line(e)}") from None
  flat = {k: _fix_dtype(k, v, spec) for k, v in flatten(tree).items()
          if isinstance(v, np.ndarray)}
  if not flat:
    raise CheckpointError(f"checkpoint {spec}: orbax checkpoint holds no "
                          "arrays")
  flat = _select_prefix(flat, prefix, spec)
  return canonicalize(flat, spec) if canonical else flat


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
    raise CheckpointError(f"checkpoint {path}: unreadable {META_FILENAME}: "
                          f"{_one_line(e)}") from None


def checkpoint_format(path: str | os.PathLike) -> str:
  """ "orbax" for a directory, "npz" otherwise (path spec may carry :prefix)."""
  file, _ = split_spec(os.fspath(path))
  return "orbax" if os.path.isdir(file) else "npz"


def read_flat(path: str | os.PathLike, *, canonical: bool = True):
  """Reads either format; returns (flat arrays, format)."""
  fmt = checkpoint_format(path)
  reader = read_orbax if fmt == "orbax" else read_npz
  return reader(path, canonical=canonical), fmt


# ----------------------------------------------------------------------------
# Fingerprint.


def weights_hash(flat: Mapping[str, np.ndarray]) -> str:
  """SHA-256 fingerprint of a flat checkpoint, as hex.

  For each key in sorted order, hashes the header "key\\0dtype\\0shape\\0"
  (dtype by name, e.g. "bfloat16"; shape as comma-separated ints) followed by
  the array's raw little-endian C-order bytes. Callers pass the arrays as
  stored (after `:prefix` selection and the bfloat16 reinterpretation, before
  renames, resampling, `dont_load` or casting), so the hash identifies the
  file's weights: it is the same for any image size or model head and survives
  a save/load round trip, and it changes when any value, dtype or name changes.
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


# ----------------------------------------------------------------------------
# Historical layouts -> big_vision's names.

# Original google-research/vision_transformer checkpoints come from pre-linen
# flax, which numbered submodules with one counter per parent across all types:
# a block was LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
# MlpBlock_3. Linen (and big_vision) count per type.
_OLD_BLOCK_NAMES = (
    ("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0"),
    ("LayerNorm_2", "LayerNorm_1"),
    ("MlpBlock_3", "MlpBlock_0"),
)
_BLOCK_RE = re.compile(r"^(Transformer/encoderblock_\d+)/([^/]+)(/.*)?$")


def _unwrap_train_state(flat: dict) -> dict:
  """Keeps only the params of a full train state (big_vision's rule)."""
  for wrapper in ("params/", "opt/target/"):
    if any(k.startswith(wrapper) for k in flat):
      return {k[len(wrapper):]: v for k, v in flat.items()
              if k.startswith(wrapper)}
  return flat


def _rename_old_blocks(flat: dict, spec: str) -> dict:
  """Renames pre-linen per-block module names to linen's per-type numbering."""
  old_blocks = {m.group(1) for k in flat if (m := _BLOCK_RE.match(k))
                and m.group(2) == "MultiHeadDotProductAttention_1"}
  if not old_blocks:
    return flat
  renames = dict(_OLD_BLOCK_NAMES)
  out = {}
  for key, value in flat.items():
    m = _BLOCK_RE.match(key)
    if m and m.group(1) in old_blocks and m.group(2) in renames:
      key = f"{m.group(1)}/{renames[m.group(2)]}{m.group(3) or ''}"
    if key in out:
      raise CheckpointError(f"checkpoint {spec}: ambiguous old-style names, "
                            f"{key} appears twice after renaming")
    out[key] = value
  return out


def canonicalize(flat: Mapping[str, np.ndarray],
                 spec: str = "<memory>") -> dict[str, np.ndarray]:
  """Maps known historical layouts onto big_vision's current names.

  - a full train state: keep "params/..." (or old flax "opt/target/...");
  - `Transformer/posembed_input/pos_embedding` (original ViT) and
    `Transformer/pos_embedding` (pre-2022 big_vision) -> `pos_embedding`;
  - pre-linen block names (MultiHeadDotProductAttention_1, LayerNorm_2,
    MlpBlock_3) -> linen's (…_0, LayerNorm_1, MlpBlock_0);
  - a MAP head stored inline at the top level (ViT-G development) ->
    `MAPHead_0/...`.
  A posemb with an extra class-token row is left alone here: folding it into
  `cls` needs the model's grid, see `load_checkpoint`.
  """
  flat = _unwrap_train_state(dict(flat))
  flat = _rename_old_blocks(flat, spec)
  moves = {"Transformer/posembed_input/pos_embedding": "pos_embedding",
           "Transformer/pos_embedding": "pos_embedding"}
  if "probe" in flat:
    map_parts = ("probe", "MultiHeadDotProductAttention_0/", "LayerNorm_0/",
                 "MlpBlock_0/")
    for k in flat:
      if k == "probe" or k.startswith(map_parts[1:]):
        moves[k] = f"MAPHead_0/{k}"
  out = {}
  for key, value in flat.items():
    key = moves.get(key, key)
    if key in out:
      raise CheckpointError(f"checkpoint {spec}: {key} is stored twice "
                            "(old and new layout)")
    out[key] = value
  return out


# ----------------------------------------------------------------------------
# Position embeddings.


def _square_side(n: int) -> int | None:
  side = math.isqrt(n)
  return side if side * side == n else None


def resample_posemb(posemb: np.ndarray, new_grid) -> np.ndarray:
  """Resamples a square (1, N, D) posemb grid to `new_grid` = (gh, gw).

  Linear interpolation with `scipy.ndimage.zoom(order=1)` as in big_vision
  (e.g. 16x16 -> 37x37 for G/14 at 518 px); corner embeddings map to corner
  embeddings, so a linear ramp stays exactly linear. A leading class-token row
  (N = 1 + side**2, N itself not square) is kept unchanged in front.
  """
  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"posemb must have shape (1, N, D), got {posemb.shape}")
  gh, gw = vit.posemb_grid(new_grid, 1)
  n, d = posemb.shape[1:]
  head, grid = posemb[:, :0], posemb
  if _square_side(n) is None and _square_side(n - 1) is not None:
    head, grid = posemb[:, :1], posemb[:, 1:]
  side = _square_side(grid.shape[1])
  if side is None:
    raise ValueError(f"posemb with {n} tokens is not a square grid "
                     "(optionally plus one class-token row)")
  if (side, side) == (gh, gw):
    return posemb
  dtype = posemb.dtype
  grid = grid.reshape(side, side, d).astype(np.float32)
  grid = scipy.ndimage.zoom(grid, (gh / side, gw / side, 1), order=1)
  grid = grid.reshape(1, gh * gw, d).astype(dtype)
  return np.concatenate([head, grid], axis=1)


def _fit_posemb(flat: dict, expected: Mapping[str, Any], grid) -> dict:
  """Folds an old class-token posemb row and resamples to the model's grid."""
  if "pos_embedding" not in flat or "pos_embedding" not in expected:
    return flat
  pe, want = flat["pos_embedding"], expected["pos_embedding"].shape
  if pe.ndim != 3 or pe.shape == tuple(want):
    return flat
  n = pe.shape[1]
  flat = dict(flat)
  if _square_side(n) is None and _square_side(n - 1) is not None:
    # Old ViTs concatenated [cls] first and then added a (1+h*w)-row posemb;
    # adding that row to `cls` instead is exactly equivalent (big_vision does
    # the same). Without a class token in the model the row is unused.
    row, pe = pe[:, :1], pe[:, 1:]
    if "cls" in flat:
      flat["cls"] = (np.asarray(flat["cls"], np.float32)
                     + np.asarray(row, np.float32))
  if _square_side(pe.shape[1]) is not None and pe.shape[2] == want[2]:
    pe = resample_posemb(pe, grid)
  flat["pos_embedding"] = pe
  return flat


# ----------------------------------------------------------------------------
# Fitting a checkpoint to a model.


def _image_hw(image_size) -> tuple[int, int]:
  return vit.posemb_grid(image_size, 1)


def _expected_tree(model, image_size) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat name -> ShapeDtypeStruct of the model's params (no allocation)."""
  h, w = _image_hw(image_size)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, h, w, 3), jnp.float32))
  return flatten(shapes["params"])


def _init_subset(model, image_size, names: list[str]) -> dict[str, np.ndarray]:
  """Real `model.init(key(0))` values for `names` only.

  Under jit, XLA drops the initialisers (and the forward pass) whose outputs
  are not returned, so re-initialising a head of a huge model is cheap.
  """
  h, w = _image_hw(image_size)
  image = jnp.zeros((1, h, w, 3), jnp.float32)

  def init(rng):
    params = flatten(model.init(rng, image)["params"])
    return {k: params[k] for k in names}

  return jax.device_get(jax.jit(init)(jax.random.key(0)))


def _compile_patterns(dont_load: Iterable[str], spec: str):
  try:
    return [re.compile(p) for p in dont_load]
  except re.error as e:
    raise CheckpointError(f"checkpoint {spec}: bad dont_load pattern: "
                          f"{_one_line(e)}") from None


def _group_modules(names: list[str], universe: Iterable[str]) -> list[str]:
  """Shortens names to "Module/*" when a whole top-level module is listed.

  E.g. a model with a MAP head loaded from a "tok" checkpoint is missing all
  15 MAPHead_0 params; "MAPHead_0/* (15)" says that better than 15 names.
  """
  listed = set(names)
  by_top: dict[str, list[str]] = {}
  for k in universe:
    by_top.setdefault(k.split("/", 1)[0], []).append(k)
  out, done = [], set()
  for k in names:
    top = k.split("/", 1)[0]
    members = by_top.get(top, [])
    if len(members) > 1 and all(m in listed for m in members):
      if top not in done:
        out.append(f"{top}/* ({len(members)})")
        done.add(top)
    else:
      out.append(k)
  return out


def _mismatch_error(spec, model, image_size, missing, unexpected, misshaped,
                    expected_names, found_names):
  h, w = _image_hw(image_size)
  parts = []
  if missing:
    parts.append(f"missing {_capped(_group_modules(missing, expected_names))}")
  if unexpected:
    grouped = _group_modules(unexpected, found_names)
    parts.append(f"unexpected {_capped(grouped)}")
  if misshaped:
    items = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in misshaped]
    parts.append(f"mis-shaped (model vs checkpoint) {_capped(items)}")
  msg = (f"checkpoint {spec} does not fit {vit.describe(model)} at {h}x{w}: "
         + "; ".join(parts))
  if any(k.startswith("head/") for k in missing + [m[0] for m in misshaped]):
    msg += " (to train a new head pass dont_load=('head/.*',))"
  return CheckpointError(msg)


def fit_to_model(flat: Mapping[str, np.ndarray], *, model,
                 image_size=(224, 224), dont_load: Iterable[str] = (),
                 spec: str = "<memory>") -> dict:
  """Fits canonical flat arrays to `model`; returns its nested params.

  Steps: drop `dont_load` matches; ignore a stored `head/*` when the model has
  no head (feature extraction); fold/resample the posemb; validate names and
  shapes (one CheckpointError listing every problem); take `dont_load` params
  the model expects from a real init; cast to the model's dtypes.
  """
  patterns = _compile_patterns(dont_load, spec)
  skip = lambda k: any(p.fullmatch(k) for p in patterns)
  expected = _expected_tree(model, image_size)
  has_head = any(k.startswith("head/") for k in expected)
  flat = {k: v for k, v in flat.items()
          if not skip(k) and (has_head or not k.startswith("head/"))}
  flat = _fit_posemb(flat, expected,
                     vit.posemb_grid(image_size, model.patch_size))

  reinit = sorted(k for k in expected if skip(k))
  missing = sorted(k for k in expected if k not in flat and not skip(k))
  unexpected = sorted(k for k in flat if k not in expected)
  misshaped = [(k, expected[k].shape, np.shape(flat[k]))
               for k in sorted(flat) if k in expected
               and tuple(expected[k].shape) != tuple(np.shape(flat[k]))]
  if missing or unexpected or misshaped:
    raise _mismatch_error(spec, model, image_size, missing, unexpected,
                          misshaped, list(expected), list(flat))

  params = {k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()}
  if reinit:
    params.update(_init_subset(model, image_size, reinit))
  return unflatten(params)


def load_checkpoint(path: str | os.PathLike, *, model, image_size=(224, 224),
                    dont_load: Iterable[str] = ()) -> Checkpoint:
  """Loads an npz file or orbax directory and fits it to `model`.

  Args:
    path: `.npz` file or orbax checkpoint directory, optionally with a
      ":prefix" sub-tree selector (big_vision syntax).
    model: a `vit.VisionTransformer`; its `init` tree is the target.
    image_size: int or (h, w) the model will be applied at; the posemb grid is
      resampled when the checkpoint's grid differs.
    dont_load: regexes (full match) of parameter names not to read from the
      checkpoint; those the model has come from `model.init(key(0))`.

  Returns:
    A `Checkpoint` with float32 (model dtype) numpy params.

  Raises:
    CheckpointError: unreadable checkpoint or tree mismatch (one line).
  """
  spec = os.fspath(path)
  raw, fmt = read_flat(spec, canonical=False)
  fingerprint = weights_hash(raw)
  flat = canonicalize(raw, spec)
  del raw
  params = fit_to_model(flat, model=model, image_size=image_size,
                        dont_load=dont_load, spec=spec)
  meta = read_checkpoint_meta(spec) if fmt == "orbax" else None
  return Checkpoint(params=params, weights_hash=fingerprint, path=spec,
                    format=fmt, meta=meta)


def load_params(path: str | os.PathLike, *, model, image_size=(224, 224),
                dont_load: Iterable[str] = ()) -> dict:
  """Params of `load_checkpoint(...)`: part of evalkit's stable public API."""
  return load_checkpoint(path, model=model, image_size=image_size,
                         dont_load=dont_load).params


__all__ = [
    "CheckpointError", "Checkpoint", "read_npz", "read_orbax", "read_flat",
    "save_npz", "save_orbax", "read_checkpoint_meta", "weights_hash",
    "canonicalize", "resample_posemb", "fit_to_model", "load_checkpoint",
    "load_params", "split_spec", "checkpoint_format", "flatten", "unflatten",
]
