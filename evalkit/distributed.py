"""Devices, meshes and multi-host setup.

Multi-host runs use `jax.distributed` (never a home-made scheduler): every process runs the same command, reads its
contiguous shard of each split, and the jitted computations run over one global mesh of all devices.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Calls `jax.distributed.initialize` when asked to (explicit arguments, or `auto` for JAX's cluster detection)."""
  if coordinator_address or (num_processes and num_processes > 1):
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()  # SLURM, TPU pods, ... detected by JAX itself


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (global) devices; batches are sharded along it and parameters replicated."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.array(devices), (DATA_AXIS,))


def allgather_rows(local_rows: np.ndarray, shard_sizes: list[int]) -> np.ndarray:
  """Concatenates every process's rows in process order (i.e. dataset order for contiguous shards).

  Each process passes its rows padded to max(shard_sizes) (collectives need equal shapes); padding is dropped here.
  """
  if jax.process_count() == 1:
    return local_rows[: shard_sizes[0]]
  gathered = np.asarray(multihost_utils.process_allgather(local_rows, tiled=False))
  return np.concatenate([gathered[p, :n] for p, n in enumerate(shard_sizes)])


def pad_rows(rows: np.ndarray, n: int) -> np.ndarray:
  """Zero-pads `rows` along axis 0 up to length n."""
  if len(rows) == n:
    return rows
  return np.concatenate([rows, np.zeros((n - len(rows), *rows.shape[1:]), rows.dtype)])
