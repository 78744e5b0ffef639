"""Frozen features of a whole split: one jitted forward over a device mesh, and a content-addressed on-disk cache.

The batch is sharded along the mesh's data axis and the parameters are replicated. Each device runs the model over
fixed-size micro-batches of its rows (`micro_batch`), so every example goes through the very same compiled computation
whatever the global batch size or the number of devices: features are bit-identical across both, and so are the
accuracies computed from them. The last batch is padded and the padding dropped.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, PartitionSpec as P
from tqdm import tqdm

from evalkit import distributed, fileio
from evalkit.errors import EvalkitError

DEFAULT_REPRESENTATION = "pre_logits"
log = logging.getLogger(__name__)
DEFAULT_MICRO_BATCH = 16


@dataclasses.dataclass
class Features:
  x: np.ndarray  # (n, d) float32, in dataset order
  labels: np.ndarray  # (n,) int
  ids: np.ndarray  # (n,) absolute example index in the base split
  from_cache: bool = False
  seconds: float = 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Featurizers: what turns a batch of preprocessed images into feature vectors.


@dataclasses.dataclass
class Featurizer:
  """A named batch → features function plus everything that identifies its output (for the cache key)."""
  identity: dict  # JSON-able; equal identities must mean equal features
  fn: Callable[[Any, jax.Array], jax.Array]  # (params, images) -> (batch, d)
  params: Any = None


class RepresentationError(EvalkitError):
  """A representation the model does not produce."""


def _check_representation(representation: str, outputs: dict) -> None:
  if representation not in outputs:
    raise RepresentationError(f"--representation={representation} is not an output of the model; use one of "
                              f"{', '.join(sorted(outputs))}")


def model_featurizer(model, params, *, weights_hash: str, representation: str = DEFAULT_REPRESENTATION,
                     dtype: str = "float32", image_size: tuple[int, int] | None = None) -> Featurizer:
  """Features = `out[representation]` of a ViT; token tensors (n, tokens, d) are averaged over tokens. With
  `image_size`, the representation is checked at once (shapes only), before any image is read."""
  from evalkit.models import vit  # local import: keeps `evalkit.features` light for pixel-only use
  compute_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  if image_size is not None:
    image = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
    _, out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, image)
    _check_representation(representation, out)

  def fn(p, images):
    if compute_dtype != jnp.float32:
      p = jax.tree.map(lambda a: a.astype(compute_dtype), p)
      images = images.astype(compute_dtype)
    _, out = model.apply({"params": p}, images, train=False)
    _check_representation(representation, out)
    rep = out[representation]
    if rep.ndim == 3:  # tokens -> global average pool
      rep = rep.mean(axis=1)
    return rep.astype(jnp.float32)

  identity = {"kind": "model", "weights_hash": weights_hash, "model": vit.model_config(model),
              "representation": representation, "dtype": dtype}
  return Featurizer(identity=identity, fn=fn, params=params)


def pixel_featurizer() -> Featurizer:
  """Raw preprocessed pixels, flattened: the reference row every table should show."""
  return Featurizer(identity={"kind": "pixels"}, fn=lambda p, images: images.reshape(images.shape[0], -1))


# ----------------------------------------------------------------------------------------------------------------------
# Extraction.


@functools.lru_cache(maxsize=32)
def sharded_forward(fn: Callable, mesh: Mesh, micro_batch: int) -> Callable:
  """jit(shard_map(...)) of `fn` over the mesh's data axis, in fixed-size micro-batches on every device.

  Memoised, so the train and test splits of a task (same featurizer) share one compiled forward.
  """
  def per_device(params, images):
    micro = images.reshape(-1, micro_batch, *images.shape[1:])
    out = jax.lax.map(lambda chunk: fn(params, chunk), micro)
    return out.reshape(images.shape[0], *out.shape[2:])
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(distributed.DATA_AXIS)),
                               out_specs=P(distributed.DATA_AXIS)))


def extract(featurizer: Featurizer, reader, preprocess, *, mesh: Mesh, batch_size: int = 256,
            micro_batch: int = DEFAULT_MICRO_BATCH, progress: bool = True, workers: int | None = None) -> Features:
  """Features of `reader`'s whole split (every process gets all rows, in dataset order). `workers`: processes that
  decode and preprocess (None: as many as pay for this split, `source.default_workers`); features do not depend on
  it."""
  start = time.perf_counter()
  n_dev = mesh.devices.size
  n_proc = jax.process_count()
  unit = n_dev * micro_batch  # the global batch must split into whole micro-batches on every device
  global_batch = max(unit, math.ceil(batch_size / unit) * unit)
  local_batch = global_batch // n_proc
  shard_sizes = list(reader.shard_sizes)
  steps = math.ceil(max(shard_sizes) / local_batch) if max(shard_sizes) else 0

  forward = sharded_forward(featurizer.fn, mesh, micro_batch)
  params = multihost_utils.host_local_array_to_global_array(featurizer.params, mesh, P()) \
      if featurizer.params is not None else None
  feats, labels, ids = [], [], []
  pending = None  # one step of lag so the host prepares batch t+1 while the devices compute batch t
  batches = reader.iter_batches(local_batch, preprocess, workers=workers)
  image_shape = None
  bar = tqdm(total=len(reader), unit="img", desc="features", disable=not progress or jax.process_index() != 0)
  for _ in range(steps):
    batch = next(batches, None)
    if batch is not None:
      image_shape = batch["image"].shape[1:]
      n_valid = len(batch["image"])
      labels.append(batch["label"])
      ids.append(batch["id"])
      images = distributed.pad_rows(np.asarray(batch["image"], np.float32), local_batch)
    else:  # this process's shard is exhausted; keep step count equal across processes
      n_valid, images = 0, np.zeros((local_batch, *image_shape), np.float32)
    global_images = multihost_utils.host_local_array_to_global_array(images, mesh, P(distributed.DATA_AXIS))
    out = forward(params, global_images)
    if pending is not None:
      feats.append(_to_host(*pending, mesh))
    pending = (out, n_valid)
    bar.update(n_valid)
  if pending is not None:
    feats.append(_to_host(*pending, mesh))
  bar.close()

  local = lambda parts, dtype, tail=(): np.concatenate(parts) if parts else np.zeros((0, *tail), dtype)
  dim = feats[0].shape[1] if feats else 0
  width = max(shard_sizes)
  x = distributed.allgather_rows(distributed.pad_rows(local(feats, np.float32, (dim,)), width), shard_sizes)
  y = distributed.allgather_rows(distributed.pad_rows(local(labels, np.int64), width), shard_sizes)
  i = distributed.allgather_rows(distributed.pad_rows(local(ids, np.int64), width), shard_sizes)
  seconds = time.perf_counter() - start
  log.info("features: %d images in %.1f s (%.1f img/s, %d device(s), %d process(es))",
               len(x), seconds, len(x) / max(seconds, 1e-9), n_dev, n_proc)
  return Features(x=x, labels=y, ids=i, seconds=seconds)


def _to_host(out: jax.Array, n_valid: int, mesh: Mesh) -> np.ndarray:
  local = multihost_utils.global_array_to_host_local_array(out, mesh, P(distributed.DATA_AXIS))
  return np.asarray(local)[:n_valid]


# ----------------------------------------------------------------------------------------------------------------------
# Cache: key = everything that determines the features; a hit never touches the model.


def cache_key(featurizer: Featurizer, dataset: dict, pp_spec: str) -> str:
  return fileio.json_sha256({"featurizer": featurizer.identity, "dataset": dataset, "pp": pp_spec, "format": 1})[:32]


class FeatureCache:
  """`<dir>/<key>.npz` plus `<key>.json` holding the npz's sha256; a mismatch means corrupt → recompute.

  Keys include a digest of the dataset's bytes (`content_digest`), so a re-prepared dataset, or another data_dir's
  dataset of the same name and version, never hits an entry computed on other data. File hashes are remembered in
  `<dir>/file_hashes.json` by (path, size, mtime, ctime, inode): a large dataset is hashed once, not per run.
  """

  def __init__(self, directory: str | os.PathLike):
    self.dir = Path(directory)
    self._memo_path = self.dir / "file_hashes.json"
    self._memo: dict[str, str] | None = None

  def file_hash(self, path: Path) -> str:
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    if self._memo is None:
      try:
        memo = json.loads(self._memo_path.read_text())
      except FileNotFoundError:  # the cache's first use
        memo = {}
      except (OSError, ValueError):
        memo = None
      # A memo that is not {stamp: sha256} (damaged, edited) is only a lost shortcut: say so and start afresh.
      valid = isinstance(memo, dict) and all(isinstance(v, str) for v in memo.values())
      if not valid:
        log.warning("%s is damaged; rebuilding it (dataset files are hashed again)", self._memo_path)
      self._memo = memo if valid else {}
    if stamp not in self._memo:
      self._memo[stamp] = fileio.file_sha256(path)
      if jax.process_index() == 0:  # a lost update among concurrent writers only costs a re-hash later
        fileio.atomic_write_json(self._memo_path, self._memo)
    return self._memo[stamp]

  def content_digest(self, reader) -> str:
    return reader.content_digest(self.file_hash)

  def load(self, key: str) -> Features | None:
    data, meta = self.dir / f"{key}.npz", self.dir / f"{key}.json"
    if not (data.exists() and meta.exists()):
      return None
    try:
      expected = json.loads(meta.read_text())["sha256"]
      if fileio.file_sha256(data) != expected:
        raise ValueError("checksum mismatch")
      with np.load(data, allow_pickle=False) as z:
        return Features(x=z["x"], labels=z["labels"], ids=z["ids"], from_cache=True)
    except Exception as e:  # corrupt entry: say so and recompute
      log.warning("feature cache entry %s is corrupt (%s); recomputing", data, e)
      return None

  def store(self, key: str, feats: Features, info: dict) -> None:
    if jax.process_index() != 0:
      return
    self.dir.mkdir(parents=True, exist_ok=True)
    data = self.dir / f"{key}.npz"
    fileio.atomic_write(data, lambda f: np.savez(f, x=feats.x, labels=feats.labels, ids=feats.ids))
    meta = {"sha256": fileio.file_sha256(data), "n": int(len(feats.x)), "dim": int(feats.x.shape[1]), **info}
    fileio.atomic_write_json(self.dir / f"{key}.json", meta)


def cached_extract(featurizer: Featurizer, reader, preprocess, *, dataset: dict, mesh: Mesh,
                   cache: FeatureCache | None, batch_size: int = 256, progress: bool = True,
                   workers: int | None = None) -> Features:
  """`extract` behind the cache: a hit returns stored features without touching the model or the images."""
  if cache is not None:
    dataset = {**dataset, "content": cache.content_digest(reader)}
  key = cache_key(featurizer, dataset, preprocess.spec)
  if cache is not None:
    hit = cache.load(key)
    if hit is not None:
      return hit
  feats = extract(featurizer, reader, preprocess, mesh=mesh, batch_size=batch_size, progress=progress,
                  workers=workers)
  if cache is not None:
    cache.store(key, feats, {"featurizer": featurizer.identity, "dataset": dataset, "pp": preprocess.spec})
  return feats
