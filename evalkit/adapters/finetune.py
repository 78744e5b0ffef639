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
import shutil
from pathlib import Path

import jax
import numpy as np

from evalkit import checkpoints, features, results, stats
from evalkit import metrics as metrics_lib
from evalkit.adapters import extra_tests
from evalkit.adapters.registry import EvalSettings, Outcome, register_adapter
from evalkit.train import optim
from evalkit.data import memory
from evalkit.data import pp as pp_lib
from evalkit.data import source
from evalkit.models import vit
from evalkit.probes import logistic

log = logging.getLogger(__name__)

CROPS = ("inception_crop", "resmall_crop", "resize_crop")
DECAY_TYPES = ("cosine", "linear", "constant", "rsqrt")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """The protocol's fields of a fine-tune task spec (docs/protocols.md, "Fine-tuning"): SGD momentum 0.9, global-norm
  clipping, no weight decay, warmup then cosine (or constant) decay, the lr chosen on a held-out minival (the last
  `minival_fraction` of the train split), scored on the test split."""
  pp_train: str = ""
  batch_size: int = 512
  total_steps: int = 2500
  warmup_steps: int = 200
  decay_type: str = "cosine"
  lr_grid: tuple[float, ...] = (0.01,)
  minival_fraction: float = 0.02
  grad_clip_norm: float = 1.0
  momentum_dtype: str = "bfloat16"
  polyak_decay: float | None = None  # EMA of the weights, scored beside the raw weights when set
  seed: int = 0
  crop: str = ""  # big_vision transfer-config crop that wrote pp_train / pp ("" when they were given directly)
  resolution: int | None = None
  h_res: int | None = None
  cache_images: bool = False  # decode the train split into memory once (small datasets)

  def __post_init__(self):
    problems = [
        (not self.pp_train, "a finetune task needs pp_train (train-time augmentation)"),
        (self.batch_size < 1 or self.total_steps < 1, "batch_size and total_steps must be positive"),
        (not 0 <= self.warmup_steps <= self.total_steps, "warmup_steps must be in [0, total_steps]"),
        (self.decay_type not in DECAY_TYPES, f"decay_type must be one of {list(DECAY_TYPES)}"),
        (not self.lr_grid or any(lr <= 0 for lr in self.lr_grid), "lr_grid must be a non-empty list of positive lrs"),
        (not 0 < self.minival_fraction < 1, "minival_fraction must be in (0, 1)"),
        (self.momentum_dtype not in ("bfloat16", "float32"), "momentum_dtype must be bfloat16 or float32"),
        (self.polyak_decay is not None and not 0 < self.polyak_decay < 1, "polyak_decay must be in (0, 1)"),
    ]
    for bad, message in problems:
      if bad:
        raise ValueError(message)


def transfer_pp(crop: str, resolution: int = 384, h_res: int = 448, flip: bool = True) -> tuple[str, str]:
  """(pp_train, pp) of big_vision's transfer config (`configs/transfer.py`) for one `crop` and resolution.

  Test: resize the smaller side to h_res, central crop `resolution`. Train by `crop`: `inception_crop` (TF's
  distorted-bounding-box sampler, then resize), `resmall_crop` (resize_small(h_res) + random crop) or `resize_crop`
  (square resize to h_res + random crop); then a random left-right flip. Values to [-1, 1] on both.
  """
  train = {"inception_crop": f"decode|inception_crop({resolution})",
           "resmall_crop": f"decode|resize_small({h_res})|random_crop({resolution})",
           "resize_crop": f"decode|resize({h_res})|random_crop({resolution})"}
  if crop not in train:
    raise ValueError(f"unknown crop {crop!r}; big_vision's transfer config knows {', '.join(CROPS)}")
  flip_op = "|flip_lr" if flip else ""
  return (f"{train[crop]}{flip_op}|value_range(-1, 1)",
          f"decode|resize_small({h_res})|central_crop({resolution})|value_range(-1, 1)")


def derive_transfer_pp(raw: dict) -> None:
  """A spec that names a `crop` gets big_vision's pp for it (h_res 448/384 of the resolution unless given); giving
  pp strings as well is ambiguous."""
  if "crop" not in raw:
    return
  given = [k for k in ("pp", "pp_train") if k in raw]
  if given:
    raise ValueError(f"`crop` writes pp and pp_train; drop {given} or drop `crop`")
  raw.setdefault("resolution", 384)
  raw.setdefault("h_res", round(raw["resolution"] * 448 / 384))
  raw["pp_train"], raw["pp"] = transfer_pp(raw["crop"], int(raw["resolution"]), int(raw["h_res"]))


@dataclasses.dataclass
class Splits:
  """Readers of the three disjoint parts: train (minus minival), minival, test."""
  train: object
  minival: object
  test: object
  train_range: tuple[int, int]
  minival_range: tuple[int, int]
  num_classes: int


minival_cut = source.percent_cut  # where minival begins (tests and docs name it so)


def split_minival(task, data_dir) -> Splits:
  """The last `minival_fraction` of the train split (by example id) is held out for choosing the lr."""
  pid, pcount = jax.process_index(), jax.process_count()
  whole = source.open_split(task.dataset, task.train_split, data_dir)
  start, stop = whole.global_start, whole.global_stop
  cut = minival_cut(start, stop, task.config.minival_fraction)
  base = whole.base_split
  # Training reads any example of a step's global batch, so every process opens the whole train part.
  train = source.open_split(task.dataset, f"{base}[{start}:{cut}]", data_dir)
  if task.config.cache_images:
    train = memory.load_into_memory(train)
  minival = source.open_split(task.dataset, f"{base}[{cut}:{stop}]", data_dir, process_index=pid,
                              process_count=pcount)
  test = source.open_split(task.dataset, task.test_split, data_dir, process_index=pid, process_count=pcount)
  return Splits(train, minival, test, (start, cut), (cut, stop), whole.num_classes)


def optimizer_config(task, lr: float) -> dict:
  """The paper's fine-tuning optimizer as an `evalkit.train.optim` config."""
  cfg = task.config
  return {"optimizer": "momentum_hp", "optax": {"momentum": 0.9, "momentum_dtype": cfg.momentum_dtype}, "lr": lr,
          "wd": 0.0, "grad_clip_norm": cfg.grad_clip_norm,
          "schedule": {"decay_type": cfg.decay_type, "warmup_steps": cfg.warmup_steps}}


def _logits(scorer: features.Featurizer, params, reader, preprocess, mesh, batch_size,
            workers: int | None) -> features.Features:
  """The model's logits over a split (`x`), with labels and ids, through the sharded, batch-invariant feature path.

  `scorer` is the model's logits featurizer, built once per evaluation: the params change, its compiled forward
  (memoised on its function) is reused for every lr, the Polyak weights and the test split."""
  return features.extract(dataclasses.replace(scorer, params=params), reader, preprocess, mesh=mesh,
                          batch_size=batch_size, progress=False, workers=workers)


def _top1(scorer, params, reader, preprocess, mesh, batch_size,
          workers: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(predicted labels, true labels, example ids) over a split."""
  out = _logits(scorer, params, reader, preprocess, mesh, batch_size, workers)
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
                 scorer: features.Featurizer, stop_at: int | None = None, progress: bool = True,
                 workers: int | None = None) -> LrRun:
  """Fine-tunes at one lr (resuming from `workdir`), then scores minival."""
  # The train loop (and orbax with it) is imported only when fine-tuning runs: 0.3 s off every other eval.
  from evalkit.train import loop  # pylint: disable=g-import-not-at-top
  cfg = task.config
  tx, schedule = optim.make(optimizer_config(task, lr), init_params, cfg.total_steps)
  ema = cfg.polyak_decay is not None
  manager = loop.state_manager(workdir / "state")
  state = loop.restore_latest(manager, loop.init_state(init_params, tx, ema=ema), mesh)
  step_fn = loop.make_train_step(model, tx, mesh, loss=loop.softmax_xent, num_classes=splits.num_classes,
                                 ema_decay=cfg.polyak_decay)
  stream = loop.TrainStream(splits.train.ids, cfg.batch_size, cfg.seed)
  every = max(1, cfg.total_steps // 4)
  end = cfg.total_steps if stop_at is None else min(stop_at, cfg.total_steps)
  try:
    state = loop.run_loop(
        state, step_fn, splits.train, pp_lib.parse(cfg.pp_train), stream, end, mesh=mesh, schedule=schedule,
        manager=manager, save_steps={*range(every, cfg.total_steps + 1, every), end},
        log_every=max(1, min(50, every)), label=f"finetune lr={lr:g}", progress=progress, workers=workers)
  except loop.TrainingDiverged as e:
    log.warning("%s", e)
    return LrRun(lr=lr, diverged=True, diverged_at=e.step)
  run = LrRun(lr=lr, diverged=False, state=state)
  if end < cfg.total_steps:
    return run  # interrupted on purpose (tests); not scored
  preprocess = pp_lib.parse(task.pp)
  pred, true, _ = _top1(scorer, state["params"], splits.minival, preprocess, mesh, cfg.batch_size, workers)
  run.minival_top1 = float(np.mean(pred == true))
  if ema:
    pred, true, _ = _top1(scorer, state["ema"], splits.minival, preprocess, mesh, cfg.batch_size, workers)
    run.minival_top1_polyak = float(np.mean(pred == true))
  return run


def choose(runs: list[LrRun]) -> LrRun | None:
  """Best minival top-1 among runs that did not diverge; ties go to the earlier lr of the grid."""
  ok = [r for r in runs if not r.diverged and r.minival_top1 is not None]
  return max(ok, key=lambda r: r.minival_top1) if ok else None


def _metric_names(cfg: FinetuneConfig) -> list[str]:
  bases = ["top1", "top1_polyak"] if cfg.polyak_decay is not None else ["top1"]
  return [m for b in bases for m in (b, *metrics_lib.derived_names(b))]


@register_adapter("finetune", FinetuneConfig, headline=lambda cfg: "top1", metric_names=_metric_names,
                  unhashed=("crop", "resolution", "h_res", "cache_images"), prepare=derive_transfer_pp)
def run(subject, task, settings: EvalSettings, mesh, *, stop_at: int | None = None) -> Outcome:
  """Every lr of the grid from the checkpoint, the best on minival scored on test (and the extra test sets)."""
  from evalkit.train import loop  # pylint: disable=g-import-not-at-top
  if subject.is_pixels:
    raise checkpoints.CheckpointError(f"task {task.name}: fine-tuning needs a checkpoint, not raw pixels")
  cfg = task.config
  splits = split_minival(task, settings.data_dir)
  preprocess = pp_lib.parse(task.pp)
  image_size = source.output_image_size(splits.test, preprocess)
  model = vit.from_config({**vit.model_config(subject.model), "num_classes": splits.num_classes})
  # A new zero head for the task's classes; everything else from the checkpoint (posemb resampled if needed).
  ckpt = subject.checkpoint(image_size, model=model, dont_load=("head/.*",))
  scorer = features.model_featurizer(model, None, weights_hash="", representation="logits")
  # Keyed by what determines the runs, so a resumed run never continues from another checkpoint's or spec's state.
  workdir = (results.result_path(settings.results_dir, subject.name, task.name).with_suffix(".work") /
             f"{task.spec_hash}_{ckpt.weights_hash[:12]}")

  runs = []
  for lr in cfg.lr_grid:
    runs.append(train_one_lr(model, ckpt.params, task, splits, lr, workdir / f"lr_{lr:g}", mesh, scorer=scorer,
                             stop_at=stop_at, progress=settings.progress, workers=settings.workers))
    for r in runs:  # only the best run so far keeps its train state in memory
      if r is not choose(runs):
        r.state = None
  best = choose(runs)
  if best is None and stop_at is None:
    shutil.rmtree(workdir, ignore_errors=True)  # states that only lead to the same divergence: nothing to resume
    steps = ", ".join(f"lr {r.lr:g} at step {r.diverged_at}" for r in runs)
    raise loop.TrainingDiverged(f"task {task.name}: every lr of lr_grid diverged (NaN/inf loss: {steps}); no result "
                                "written: lower lr_grid or check the checkpoint", min(r.diverged_at for r in runs))
  metrics, extras, keys, predictions, tops, test_ids, test_labels = {}, {}, [], [], [], None, None
  opened_extras = extra_tests.open_all(task, settings.data_dir, splits.num_classes)
  if best is not None:
    for key, params in (("top1", best.state["params"]), ("top1_polyak", best.state.get("ema"))):
      if params is None:
        continue
      scored = _logits(scorer, params, splits.test, preprocess, mesh, cfg.batch_size, settings.workers)
      test_labels, test_ids = scored.labels, scored.ids
      top = metrics_lib.top_classes(scored.x)
      pred = top[:, 0]
      keys.append(key)
      predictions.append(pred)
      tops.append(top)
      metrics.update(metrics_lib.classification_metrics(key, pred, test_labels, splits.num_classes, top_indices=top,
                                                        probabilities=logistic.softmax(scored.x)))
      metrics[key].update(stats.bootstrap_interval(pred == test_labels))  # top-1's interval as before
      for opened in opened_extras:  # the same model on the task's other test sets
        pred, labels, _ = _top1(scorer, params, opened.reader, pp_lib.parse(opened.pp), mesh, cfg.batch_size,
                                settings.workers)
        entry = extras.setdefault(opened.spec.name, {**extra_tests.describe(opened, labels), "metrics": {}})
        entry["metrics"][key] = extra_tests.top1_metric(pred, labels)
  return Outcome(
      metrics=metrics,
      checkpoint=subject.describe(image_size, ckpt),
      dataset=source.dataset_fingerprint(splits.test),
      data={"image_size": list(image_size), "num_classes": splits.num_classes,
            "train_ids": list(splits.train_range), "minival_ids": list(splits.minival_range),
            "n_test": sum(splits.test.shard_sizes)},
      details={"chosen_lr": best.lr if best else None,
               "lr_curve": [{"lr": r.lr, "diverged": r.diverged, "diverged_at_step": r.diverged_at,
                             "minival_top1": r.minival_top1, "minival_top1_polyak": r.minival_top1_polyak}
                            for r in runs]},
      extra_tests=extras,
      manifest={"task": task.name, "note": "absolute example id ranges [start, stop) in the base train split",
                "train_ids": list(splits.train_range), "minival_ids": list(splits.minival_range)},
      items=results.make_items(test_ids, test_labels, keys, predictions, top_classes=tops) if keys else None,
  )
