"""What pre-training and fine-tuning share: the deterministic input stream, losses, the data-parallel train step,
and the checkpointed loop with NaN detection and progress.

Determinism: the input stream is a function of (seed, step) alone — epoch e is `default_rng([seed, e]).permutation`
of the ids, and example i of step t is augmented with `default_rng([seed, t, i])` — and the train state (params,
optimizer state, optional Polyak average, step) is checkpointed with orbax, so a run killed at any point and resumed
from its last checkpoint ends with bit-identical parameters on CPU.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from evalkit import distributed, faults
from evalkit.errors import EvalkitError

log = logging.getLogger(__name__)


class TrainingDiverged(EvalkitError):
  """The loss became NaN/inf; the message (one line) names the step and the last good checkpoint."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class TrainStream:
  """Shuffled, repeated ids of a split; `global_ids(step)` is the step's whole batch, in order."""

  def __init__(self, ids: np.ndarray, batch_size: int, seed: int):
    self.ids, self.batch_size, self.seed = np.asarray(ids), batch_size, seed
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}  # keep memory flat
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))
    return self._perms[epoch]

  def global_ids(self, step: int) -> np.ndarray:
    positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
    epochs, offsets = np.divmod(positions, len(self.ids))
    return np.array([self.ids[self._perm(int(e))[o]] for e, o in zip(epochs, offsets)])

  def local_batches(self, first_step: int, last_step: int) -> Iterable[tuple[np.ndarray, tuple[int, int]]]:
    """(ids, seed) of this process's part of every step's batch in [first_step, last_step)."""
    p, n = jax.process_index(), jax.process_count()
    local = self.batch_size // n
    for step in range(first_step, last_step):
      yield self.global_ids(step)[p * local:(p + 1) * local], (self.seed, step)


def sigmoid_xent(logits, labels):
  """Mean over the batch of the per-example sum over classes of the sigmoid cross-entropy (big_vision's)."""
  nll = -jnp.sum(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits), axis=-1)
  return jnp.mean(nll)


def softmax_xent(logits, labels):
  """Mean over the batch of the softmax cross-entropy (big_vision's fine-tuning loss)."""
  return jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))


def init_state(params, tx: optax.GradientTransformation, ema: bool = False) -> dict:
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  if ema:
    state["ema"] = jax.tree.map(jnp.array, params)
  return state


def make_train_step(model, tx: optax.GradientTransformation, mesh, *, loss: Callable, num_classes: int,
                    ema_decay: float | None = None) -> Callable:
  """jit step over the mesh: batch sharded along `data`, state replicated; XLA inserts the gradient all-reduce.

  Single-label batches become one-hot targets. With `ema_decay`, the state also carries a Polyak (exponential moving)
  average of the parameters, updated after every step.
  """

  def loss_fn(params, images, labels, step):
    rngs = {"dropout": jax.random.fold_in(jax.random.key(0), step)}
    logits, _ = model.apply({"params": params}, images, train=True, rngs=rngs)
    return loss(logits, labels)

  def train_step(state, images, labels):
    labels = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    value, grads = jax.value_and_grad(loss_fn)(state["params"], images, labels, state["step"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}
    if ema_decay is not None:
      new["ema"] = optax.incremental_update(new["params"], state["ema"], 1.0 - ema_decay)
    return new, {"loss": value, "grad_norm": optax.tree.norm(grads)}

  replicated = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P(distributed.DATA_AXIS))
  return jax.jit(train_step, in_shardings=(replicated, batch, batch), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))


def state_manager(directory: Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """Train states under `directory`; a save killed half-way leaves only an orbax temporary directory, which is
  never restored and is removed when the manager next opens."""
  return ocp.CheckpointManager(Path(directory).resolve(), options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True))


def restore_latest(manager: ocp.CheckpointManager, state: dict, mesh) -> dict:
  """The latest saved state if there is one (same structure as `state`), else `state`; replicated over the mesh."""
  if manager.latest_step() is not None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    log.info("resumed %s at step %d", manager.directory, int(state["step"]))
  return multihost_utils.host_local_array_to_global_array(state, mesh, P())


def run_loop(state, step_fn, reader, preprocess, stream: TrainStream, end: int, *, mesh, schedule: Callable,
             manager: ocp.CheckpointManager | None = None, save_steps: Iterable[int] = (),
             on_save: Callable[[Any, int], None] | None = None, log_every: int = 10, label: str = "train",
             progress: bool = True, workers: int | None = None):
  """Steps from the state's step to `end`. The loss is checked every `log_every` steps and before every save: a
  NaN/inf raises TrainingDiverged without saving anything after it. At `save_steps`, `on_save(state, step)` runs
  (e.g. exporting a checkpoint with its card) and then the state is saved: the resume point comes last, so a run
  killed between the two redoes the steps and the export, and a saved state always has its export. `workers`:
  processes that decode and augment the batches (None: as many as pay, `source.default_workers`)."""
  first = int(state["step"])
  if first >= end:
    return state
  save_steps = set(save_steps)
  batches = reader.iter_id_batches(stream.local_batches(first, end), preprocess, workers=workers)
  bar = tqdm(total=end - first, desc=label, unit="step", disable=not progress or jax.process_index() != 0)
  t0, last_good = time.perf_counter(), (manager.latest_step() if manager else None)
  for step in range(first, end):
    batch = next(batches)
    images = multihost_utils.host_local_array_to_global_array(
        np.asarray(batch["image"], np.float32), mesh, P(distributed.DATA_AXIS))
    labels = multihost_utils.host_local_array_to_global_array(
        np.asarray(batch.get("labels", batch["label"])), mesh, P(distributed.DATA_AXIS))
    state, metrics = step_fn(state, images, labels)
    done = step + 1
    if done % log_every == 0 or done in save_steps or done == end:
      loss = float(metrics["loss"])
      if not math.isfinite(loss):
        bar.close()
        where = f"step {last_good} in {manager.directory}" if last_good is not None else "none"
        raise TrainingDiverged(f"{label}: loss became {loss} at step {done}; last good checkpoint: {where}", done)
      examples = (done - first) * stream.batch_size
      bar.set_postfix(loss=f"{loss:.4f}", grad_norm=f"{float(metrics['grad_norm']):.3g}",
                      lr=f"{float(schedule(done - 1)):.2e}",
                      ex_s=f"{examples / (time.perf_counter() - t0):.0f}")
    bar.update(1)
    faults.point("train_step")
    if done in save_steps:
      if on_save is not None:
        on_save(state, done)
      if manager is not None:
        manager.save(done, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
        last_good = done
        faults.point("state_saved")
  bar.close()
  seconds = time.perf_counter() - t0
  log.info("%s: %d steps in %.1f s (%.0f examples/s)", label, end - first, seconds,
           (end - first) * stream.batch_size / seconds)
  return state
