"""k-nearest-neighbour classification on frozen features — DINOv2's kNN protocol (docs/protocols.md, "kNN").

Rows are L2-normalised, similarity is the cosine (a dot product of unit rows), the k most similar train examples
vote for their class with weight exp(sim / T), T = 0.07 (DINOv2 `eval/knn.py`; softmax-normalising the weights, as
DINOv2 does, changes no argmax), or with weight 1 (plain majority). Ties are defined: equal similarities rank the
lower train index first (a stable top-k over train rows in order), equal votes go to the lower class id.

Memory is bounded whatever the sizes: test rows are processed in blocks sharded over the mesh, train rows stream
through in chunks, and each step merges the chunk's similarities into a running top-k (values and train indices).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from evalkit import distributed, metrics
from evalkit.probes.ridge import exact_float32

DEFAULT_KS = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07
TRAIN_CHUNK = 8192
TEST_BLOCK = 4096  # test rows per device per block


def l2_normalize(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit norm in float32 (zero rows stay zero)."""
  x = np.asarray(x, np.float32)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norm, np.float32(1e-12))


@functools.partial(jax.jit, static_argnames=("k",))
@exact_float32
def _merge_chunk(top_sim, top_idx, test, chunk, chunk_start, chunk_valid, *, k):
  """Running top-k after one train chunk. The running entries (lower train indices) come first, so the stable
  top-k keeps the lower index among equal similarities."""
  sim = test @ chunk.T
  col = jnp.arange(chunk.shape[0])
  sim = jnp.where(col[None, :] < chunk_valid, sim, -jnp.inf)  # padding rows of the last chunk never win
  sims = jnp.concatenate([top_sim, sim], axis=1)
  idx = jnp.concatenate([top_idx, jnp.broadcast_to(chunk_start + col, sim.shape).astype(jnp.int32)], axis=1)
  top_sim, pos = jax.lax.top_k(sims, k)
  return top_sim, jnp.take_along_axis(idx, pos, axis=1)


def nearest(x_train, x_test, k: int, *, mesh: Mesh | None = None, train_chunk: int = TRAIN_CHUNK,
            test_block: int = TEST_BLOCK) -> tuple[np.ndarray, np.ndarray]:
  """(similarities, train indices), each (n_test, k), best first, of the k most cosine-similar train rows."""
  mesh = mesh if mesh is not None else distributed.data_mesh(jax.local_devices())
  train, test = l2_normalize(x_train), l2_normalize(x_test)
  n_train, n_test = len(train), len(test)
  k = min(k, n_train)
  rows = NamedSharding(mesh, P(distributed.DATA_AXIS))
  replicated = NamedSharding(mesh, P())
  block = test_block * mesh.devices.size
  chunk = min(train_chunk, n_train)
  chunks = [jax.device_put(distributed.pad_rows(train[s:s + chunk], chunk), replicated)
            for s in range(0, n_train, chunk)]
  sims, idxs = [], []
  for start in range(0, n_test, block):
    part = test[start:start + block]
    rows_here = math.ceil(len(part) / mesh.devices.size) * mesh.devices.size
    t = jax.device_put(distributed.pad_rows(part, rows_here), rows)
    top_sim = jax.device_put(np.full((rows_here, 0), -np.inf, np.float32), rows)
    top_idx = jax.device_put(np.zeros((rows_here, 0), np.int32), rows)
    for j, c in enumerate(chunks):
      c_start = j * chunk
      top_sim, top_idx = _merge_chunk(top_sim, top_idx, t, c, np.int32(c_start),
                                      np.int32(min(chunk, n_train - c_start)), k=min(k, top_sim.shape[1] + chunk))
    sims.append(np.asarray(top_sim)[: len(part)])
    idxs.append(np.asarray(top_idx)[: len(part)])
  return np.concatenate(sims), np.concatenate(idxs)


def vote(neighbour_sims: np.ndarray, neighbour_labels: np.ndarray, num_classes: int, k: int,
         temperature: float | None = DEFAULT_TEMPERATURE) -> np.ndarray:
  """(n, K) class votes of the first k neighbours: Σ exp(sim / T), or counts when `temperature` is None."""
  sims, labels = neighbour_sims[:, :k].astype(np.float64), neighbour_labels[:, :k]
  weights = np.ones_like(sims) if temperature is None else np.exp(sims / temperature)
  flat = (np.arange(len(sims))[:, None] * num_classes + labels).ravel()
  return np.bincount(flat, weights.ravel(), minlength=len(sims) * num_classes).reshape(len(sims), num_classes)


def knn_predict(x_train, y_train, x_test, num_classes: int, k: int = 20,
                temperature: float | None = DEFAULT_TEMPERATURE, *, mesh: Mesh | None = None) -> np.ndarray:
  """(n_test,) predicted labels: the class with the largest Σ exp(sim / T) over the k nearest train rows (cosine
  similarity); `temperature=None` for a plain majority vote. Ties: lower train index, then lower class id."""
  sims, idx = nearest(x_train, x_test, k, mesh=mesh)
  return np.argmax(vote(sims, np.asarray(y_train)[idx], num_classes, k, temperature), axis=1).astype(np.int32)


def knn_suite(x_train, y_train, x_test, num_classes: int, ks: Sequence[int] = DEFAULT_KS,
              temperature: float = DEFAULT_TEMPERATURE, *, top: int = 5, mesh: Mesh | None = None,
              vote_block: int = 8192) -> dict[str, np.ndarray]:
  """Every k from one neighbour search: {"<k>nn": (n, top) classes by weighted vote, "<k>nn_majority": by count},
  best first (column 0 is the prediction). Votes are formed `vote_block` test rows at a time (bounded memory)."""
  sims, idx = nearest(x_train, x_test, max(ks), mesh=mesh)
  labels = np.asarray(y_train)[idx]
  out = {}
  for k in ks:
    for name, t in ((f"{k}nn", temperature), (f"{k}nn_majority", None)):
      out[name] = np.concatenate([
          metrics.top_classes(vote(sims[s:s + vote_block], labels[s:s + vote_block], num_classes, k, t), top)
          for s in range(0, len(sims), vote_block)]) if len(sims) else np.zeros((0, top), np.int32)
  return out
