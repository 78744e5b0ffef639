"""Fine-tuning adapter: the paper's full fine-tuning protocol (docs/protocols.md, "Fine-tuning") as a task adapter.

For each learning rate of the task's grid: start from the checkpoint (resampling the position embeddings to the
task's resolution, a new zero-initialised head for the task's classes), train the whole network with SGD momentum 0.9
(bfloat16 buffer option), global-norm clipping 1.0, no weight decay, linear warmup then cosine (or constant) decay,
on the train split minus a held-out *minival* (its last `minival_fraction`, by example id — big_vision's
`train[:98%]` / `train[98%:]`), and score on minival. The lr with the best minival top-1 is chosen (runs whose loss
became NaN are reported as diverged and never chosen) and its model is scored on the test split: top-1 with a
bootstrap 95% CI over test items, beside the Polyak-averaged weights when the task asks for them.

Each lr run checkpoints its train state (orbax) under `<results_dir>/<checkpoint>/<task>.work/<spec+weights>/lr_<lr>/`;
an interrupted evaluation resumes there and ends identical.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import numpy as np

from evalkit import checkpoints, extra_tests, features, optim, results, stats, training
from evalkit.data import pp as pp_lib
from evalkit.data import source
from evalkit.models import vit

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Splits:
  """Readers of the three disjoint parts: train (minus minival), minival, test."""
  train: object
  minival: object
  test: object
  train_range: tuple[int, int]
  minival_range: tuple[int, int]
  num_classes: int


def minival_cut(start: int, stop: int, fraction: float) -> int:
  """Where minival begins: the last `fraction` of [start, stop), rounded as tfds rounds `train[99%:]`.

  tfds puts a percent boundary at round(pct · n / 100) ("closest" rounding), so with fraction 0.01 the parts are
  exactly big_vision's `train[:99%]` / `train[99%:]`. At least one example is held out.
  """
  n = stop - start
  keep_pct = 100.0 - round(100.0 * fraction, 9)
  return min(start + int(round(keep_pct * n / 100.0)), stop - 1)


def split_minival(task, data_dir) -> Splits:
  """The last `minival_fraction` of the train split (by example id) is held out for choosing the lr."""
  pid, pcount = jax.process_index(), jax.process_count()
  whole = source.open_split(task.dataset, task.train_split, data_dir)
  start, stop = whole.global_start, whole.global_stop
  cut = minival_cut(start, stop, task.minival_fraction)
  base = whole.base_split
  # Training reads any example of a step's global batch, so every process opens the whole train part.
  train = source.open_split(task.dataset, f"{base}[{start}:{cut}]", data_dir)
  if task.cache_images:
    train = source.load_into_memory(train)
  minival = source.open_split(task.dataset, f"{base}[{cut}:{stop}]", data_dir, process_index=pid,
                              process_count=pcount)
  test = source.open_split(task.dataset, task.test_split, data_dir, process_index=pid, process_count=pcount)
  return Splits(train, minival, test, (start, cut), (cut, stop), whole.num_classes)


def optimizer_config(task, lr: float) -> dict:
  """The paper's fine-tuning optimizer as an `evalkit.optim` config."""
  return {"optimizer": "momentum_hp", "optax": {"momentum": 0.9, "momentum_dtype": task.momentum_dtype}, "lr": lr,
          "wd": 0.0, "grad_clip_norm": task.grad_clip_norm,
          "schedule": {"decay_type": task.decay_type, "warmup_steps": task.warmup_steps}}


def _top1(scorer: features.Featurizer, params, reader, preprocess, mesh,
          batch_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(predicted labels, true labels, example ids) over a split, through the sharded, batch-invariant feature path.

  `scorer` is the model's logits featurizer, built once per evaluation: the params change, its compiled forward
  (memoised on its function) is reused for every lr, the Polyak weights and the test split."""
  out = features.extract(dataclasses.replace(scorer, params=params), reader, preprocess, mesh=mesh,
                         batch_size=batch_size, progress=False)
  return np.argmax(out.x, axis=1), out.labels, out.ids


@dataclasses.dataclass
class LrRun:
  lr: float
  diverged: bool
  diverged_at: int | None = None
  minival_top1: float | None = None
  minival_top1_polyak: float | None = None
  state: dict | None = dataclasses.field(default=None, repr=False)


def train_one_lr(model, init_params, task, splits: Splits, lr: float, workdir: Path, mesh, *,
                 scorer: features.Featurizer, stop_at: int | None = None, progress: bool = True) -> LrRun:
  """Fine-tunes at one lr (resuming from `workdir`), then scores minival."""
  tx, schedule = optim.make(optimizer_config(task, lr), init_params, task.total_steps)
  ema = task.polyak_decay is not None
  manager = training.state_manager(workdir / "state")
  state = training.restore_latest(manager, training.init_state(init_params, tx, ema=ema), mesh)
  step_fn = training.make_train_step(model, tx, mesh, loss=training.softmax_xent, num_classes=splits.num_classes,
                                     ema_decay=task.polyak_decay)
  stream = training.TrainStream(splits.train.ids, task.batch_size, task.seed)
  every = max(1, task.total_steps // 4)
  end = task.total_steps if stop_at is None else min(stop_at, task.total_steps)
  try:
    state = training.run_loop(
        state, step_fn, splits.train, pp_lib.parse(task.pp_train), stream, end, mesh=mesh, schedule=schedule,
        manager=manager, save_steps={*range(every, task.total_steps + 1, every), end},
        log_every=max(1, min(50, every)), label=f"finetune lr={lr:g}", progress=progress)
  except training.TrainingDiverged as e:
    log.warning("%s", e)
    return LrRun(lr=lr, diverged=True, diverged_at=e.step)
  run = LrRun(lr=lr, diverged=False, state=state)
  if end < task.total_steps:
    return run  # interrupted on purpose (tests); not scored
  preprocess = pp_lib.parse(task.pp)
  pred, true, _ = _top1(scorer, state["params"], splits.minival, preprocess, mesh, task.batch_size)
  run.minival_top1 = float(np.mean(pred == true))
  if ema:
    pred, true, _ = _top1(scorer, state["ema"], splits.minival, preprocess, mesh, task.batch_size)
    run.minival_top1_polyak = float(np.mean(pred == true))
  return run


def choose(runs: list[LrRun]) -> LrRun | None:
  """Best minival top-1 among runs that did not diverge; ties go to the earlier lr of the grid."""
  ok = [r for r in runs if not r.diverged and r.minival_top1 is not None]
  return max(ok, key=lambda r: r.minival_top1) if ok else None


def evaluate_finetune(subject, task, settings, mesh, *, stop_at: int | None = None) -> tuple[dict, dict, dict | None]:
  """The adapter (same signature and record schema as the few-shot one): returns (record, manifest, items)."""
  if subject.is_pixels:
    raise checkpoints.CheckpointError(f"task {task.name}: fine-tuning needs a checkpoint, not raw pixels")
  t0 = time.perf_counter()
  splits = split_minival(task, settings.data_dir)
  preprocess = pp_lib.parse(task.pp)
  image_size = source.output_image_size(splits.test, preprocess)
  model = vit.from_config({**vit.model_config(subject.model), "num_classes": splits.num_classes})
  # A new zero head for the task's classes; everything else from the checkpoint (posemb resampled if needed).
  dont_load = tuple(dict.fromkeys((*subject.dont_load, "head/.*")))  # the card's exclusions, and the old head
  ckpt = checkpoints.load_checkpoint(subject.path, model=model, image_size=image_size, dont_load=dont_load)
  scorer = features.model_featurizer(model, None, weights_hash="", representation="logits")
  # Keyed by what determines the runs, so a resumed run never continues from another checkpoint's or spec's state.
  workdir = (results.result_path(settings.results_dir, subject.name, task.name).with_suffix(".work") /
             f"{task.spec_hash}_{ckpt.weights_hash[:12]}")

  runs = []
  for lr in task.lr_grid:
    runs.append(train_one_lr(model, ckpt.params, task, splits, lr, workdir / f"lr_{lr:g}", mesh, scorer=scorer,
                             stop_at=stop_at, progress=settings.progress))
    for r in runs:  # only the best run so far keeps its train state in memory
      if r is not choose(runs):
        r.state = None
  best = choose(runs)
  metrics, items, extras = {}, {}, {}
  opened_extras = extra_tests.open_all(task, settings.data_dir, splits.num_classes)
  if best is not None:
    for key, params in (("top1", best.state["params"]), ("top1_polyak", best.state.get("ema"))):
      if params is None:
        continue
      pred, true, ids = _top1(scorer, params, splits.test, preprocess, mesh, task.batch_size)
      items.update({"test_ids": ids, "test_labels": true.astype(np.int32), f"predictions_{key}": pred.astype(np.int32)})
      metrics[key] = stats.bootstrap_interval(pred == true)
      for opened in opened_extras:  # the same model on the task's other test sets
        pred, labels, _ = _top1(scorer, params, opened.reader, pp_lib.parse(opened.pp), mesh, task.batch_size)
        entry = extras.setdefault(opened.spec.name, {**extra_tests.describe(opened, labels), "metrics": {}})
        entry["metrics"][key] = extra_tests.top1_metric(pred, labels)
  record = {
      "schema": results.SCHEMA,
      "checkpoint": subject.describe(image_size, ckpt),
      "task": {"name": task.name, "spec_hash": task.spec_hash, "spec": task.spec(),
               "dataset": source.dataset_fingerprint(splits.test)},
      "protocol": task.protocol,
      "headline": {"metric": task.headline_metric, "value": metrics.get(task.headline_metric, {}).get("value")},
      "metrics": metrics,
      **({"extra_tests": extras} if extras else {}),
      "chosen_lr": best.lr if best else None,
      "lr_curve": [{"lr": r.lr, "diverged": r.diverged, "diverged_at_step": r.diverged_at,
                    "minival_top1": r.minival_top1, "minival_top1_polyak": r.minival_top1_polyak} for r in runs],
      "data": {"image_size": list(image_size), "num_classes": splits.num_classes,
               "train_ids": list(splits.train_range), "minival_ids": list(splits.minival_range),
               "n_test": sum(splits.test.shard_sizes)},
      "provenance": results.provenance(),
      "timings": {"total_s": time.perf_counter() - t0},
  }
  manifest = {"task": task.name, "note": "absolute example id ranges [start, stop) in the base train split",
              "train_ids": list(splits.train_range), "minival_ids": list(splits.minival_range)}
  return record, manifest, items or None
