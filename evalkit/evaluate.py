"""The evaluation pipeline for one subject over tasks: checkpoint → data → features → adapter → result record.

A *subject* is what gets evaluated: a ViT checkpoint (by card, or by path plus model settings) or raw pixels (the
reference row). Results are written one file per (subject, task), atomically; finished ones are skipped.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import numpy as np

from evalkit import cards, checkpoints, distributed, extra_tests, features, fewshot, finetune, results, tasks
from evalkit.data import pp as pp_lib
from evalkit.data import source
from evalkit.models import vit

PIXELS = "pixels"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class Subject:
  """A featurizer source: a checkpoint with its model, or raw pixels."""
  name: str
  path: str | None = None  # None for pixels
  model: vit.VisionTransformer | None = None
  dont_load: tuple[str, ...] = ("head/.*",)  # few-shot uses pre_logits; a checkpoint's head is not needed
  card: cards.Card | None = None
  _loaded: dict = dataclasses.field(default_factory=dict, repr=False)  # image size -> Checkpoint

  @property
  def is_pixels(self) -> bool:
    return self.path is None

  def checkpoint(self, image_size: tuple[int, int]) -> checkpoints.Checkpoint:
    """Loads (once per resolution) the checkpoint for this image size, resampling the posemb if needed."""
    if image_size not in self._loaded:
      self._loaded[image_size] = checkpoints.load_checkpoint(
          self.path, model=self.model, image_size=image_size, dont_load=self.dont_load)
    return self._loaded[image_size]

  def featurizer(self, image_size, *, representation: str, dtype: str) -> features.Featurizer:
    if self.is_pixels:
      return features.pixel_featurizer()
    ckpt = self.checkpoint(image_size)
    return features.model_featurizer(self.model, ckpt.params, weights_hash=ckpt.weights_hash,
                                     representation=representation, dtype=dtype)

  def describe(self, image_size, ckpt: checkpoints.Checkpoint | None = None) -> dict:
    """Provenance of the subject; pass `ckpt` when it is already loaded (e.g. with another head) to skip a re-read."""
    if self.is_pixels:
      return {"name": self.name, "kind": PIXELS}
    ckpt = ckpt or self.checkpoint(image_size)
    described = {"name": self.name, "kind": "checkpoint", "path": str(self.path), "format": ckpt.format,
                 "weights_hash": ckpt.weights_hash, "model": vit.model_config(self.model),
                 "card": self.card.name if self.card else None}
    if self.card and self.card.training:
      described["training"] = dict(self.card.training)  # compute, data size, ...: what scaling studies need
    return described


def resolve_subject(checkpoint: str, *, name: str | None = None, model_kwargs: dict | None = None,
                    cards_dirs: list[str] | None = None) -> Subject:
  """`pixels`, a card (name or .toml path), or a checkpoint path (.npz / orbax dir) with model settings from flags
  or from its own metadata."""
  if checkpoint == PIXELS:
    return Subject(name=name or PIXELS)
  is_card_name = not Path(checkpoint).exists() and "/" not in checkpoint and not checkpoint.endswith(".npz")
  if is_card_name or checkpoint.endswith(".toml"):
    card = cards.load_card(checkpoint, cards_dirs)
    dont_load = tuple(card.dont_load) if card.dont_load else ("head/.*",)
    return Subject(name=name or card.name, path=str(card.resolved_path()), model=card.model(), dont_load=dont_load,
                   card=card)
  model_kwargs = dict(model_kwargs or {})
  if not model_kwargs:
    meta = checkpoints.read_checkpoint_meta(checkpoint) if Path(checkpoint).is_dir() else None
    if not meta or "model" not in meta:
      raise checkpoints.CheckpointError(
          f"checkpoint {checkpoint}: no model settings; pass --variant (and --pool_type, ...) or use a card")
    model_kwargs = dict(meta["model"])
  model_kwargs["num_classes"] = None  # features only
  return Subject(name=name or Path(checkpoint).name.removesuffix(".npz"), path=checkpoint,
                 model=vit.from_config(model_kwargs))


@dataclasses.dataclass
class EvalSettings:
  data_dir: str | None = None
  results_dir: str = "results"
  cache_dir: str | None = None
  batch_size: int = 256
  representation: str = features.DEFAULT_REPRESENTATION
  dtype: str = "float32"
  loo: bool = True
  overwrite: bool = False
  progress: bool = True


def evaluate_fewshot(subject: Subject, task: tasks.Task, settings: EvalSettings, mesh) -> tuple[dict, dict, dict]:
  """Features of the task's train and test splits, then every (shots, seed) episode.

  Returns (record, manifest, items): the result, the example ids of every k-shot set, and per-test-item predictions.
  """
  t0 = time.perf_counter()
  preprocess = pp_lib.parse(task.pp)
  pid, pcount = jax.process_index(), jax.process_count()
  readers = {which: source.open_split(task.dataset, split, settings.data_dir, process_index=pid, process_count=pcount)
             for which, split in (("train", task.train_split), ("test", task.test_split))}
  image_size = source.output_image_size(readers["train"], preprocess)
  featurizer = subject.featurizer(image_size, representation=settings.representation, dtype=settings.dtype)
  cache = features.FeatureCache(settings.cache_dir) if settings.cache_dir else None
  feats, timings = {}, {"setup_s": time.perf_counter() - t0}
  for which, reader in readers.items():
    feats[which] = features.cached_extract(
        featurizer, reader, preprocess, dataset=source.dataset_fingerprint(reader), mesh=mesh, cache=cache,
        batch_size=settings.batch_size, progress=settings.progress)
    timings[f"features_{which}_s"] = feats[which].seconds
    timings[f"features_{which}_cached"] = feats[which].from_cache

  t1 = time.perf_counter()
  train, test = feats["train"], feats["test"]
  num_classes = readers["train"].num_classes
  # Every process holds all features now; each solves the (cheap) ridge on its own devices, identically.
  local_mesh = distributed.data_mesh(jax.local_devices())
  probe = fewshot.RidgeProbe(train.x, train.labels, test.x, test.labels, num_classes=num_classes, mesh=local_mesh)
  grid = fewshot.LOO_L2_GRID if settings.loo else None
  episodes = probe.run(task.shots, task.seeds, l2_reg=task.l2_reg, l2_grid=grid)
  timings["fewshot_s"] = time.perf_counter() - t1
  extras = _fewshot_extra_tests(task, settings, train, num_classes, featurizer, cache, mesh, local_mesh)
  timings["total_s"] = time.perf_counter() - t0

  metrics = fewshot.summarize(episodes, test.labels)
  headline = metrics.get(task.headline_metric, {}).get("mean")
  record = {
      "schema": results.SCHEMA,
      "checkpoint": {**subject.describe(image_size), "featurizer": featurizer.identity},
      "task": {"name": task.name, "spec_hash": task.spec_hash, "spec": task.spec(),
               "dataset": source.dataset_fingerprint(readers["test"])},
      "protocol": task.protocol,
      "headline": {"metric": task.headline_metric, "value": headline},
      "metrics": metrics,
      "episodes": [{"shots": ep.shots, "seed": ep.seed, "l2_reg": ep.l2_reg, "accuracy": ep.accuracy,
                    "loo_l2_reg": ep.loo_l2_reg, "loo_accuracy": ep.loo_accuracy, "loo_errors": ep.loo_errors}
                   for ep in episodes],
      "loo_l2_grid": list(grid) if grid else None,
      **({"extra_tests": extras} if extras else {}),
      "data": {"image_size": list(image_size), "num_classes": num_classes, "n_train": len(train.x),
               "n_test": len(test.x), "feature_dim": int(train.x.shape[1])},
      "provenance": results.provenance(),
      "timings": timings,
  }
  manifest = {
      "task": task.name, "train_split": task.train_split,
      "note": "absolute example indices (in the base split) of each k-shot set, in class-then-draw order",
      "episodes": {f"{ep.shots}shot/seed{ep.seed}": train.ids[ep.train_positions].tolist() for ep in episodes},
  }
  items = {"test_ids": test.ids, "test_labels": test.labels.astype(np.int32),
           "episodes": np.array([f"{ep.shots}shot/seed{ep.seed}" for ep in episodes]),
           "predictions": np.stack([ep.predictions for ep in episodes]).astype(np.int32)}
  return record, manifest, items


def _fewshot_extra_tests(task, settings, train, num_classes, featurizer, cache, mesh, local_mesh) -> dict:
  """Every episode's probe (same k-shot sets, same λ) scored on each extra test set of the task."""
  out = {}
  for opened in extra_tests.open_all(task, settings.data_dir, num_classes):
    preprocess = pp_lib.parse(opened.pp)
    feats = features.cached_extract(featurizer, opened.reader, preprocess,
                                    dataset=source.dataset_fingerprint(opened.reader), mesh=mesh, cache=cache,
                                    batch_size=settings.batch_size, progress=settings.progress)
    probe = fewshot.RidgeProbe(train.x, train.labels, feats.x, np.zeros(len(feats.x), np.int32),
                               num_classes=num_classes, mesh=local_mesh)
    episodes = probe.run(task.shots, task.seeds, l2_reg=task.l2_reg, l2_grid=None)
    metrics = {}
    for k in sorted(task.shots):
      per_seed = np.stack([ep.predictions for ep in sorted(episodes, key=lambda e: e.seed) if ep.shots == k])
      metrics[f"{k}shot"] = extra_tests.fewshot_metric(per_seed, feats.labels)
    out[opened.spec.name] = {**extra_tests.describe(opened, feats.labels), "metrics": metrics}
  return out


ADAPTERS = {"fewshot_ridge": evaluate_fewshot, "finetune": finetune.evaluate_finetune}


def run(subject: Subject, task_list: list[tasks.Task], settings: EvalSettings, mesh) -> list[tuple[str, str, str]]:
  """Evaluates every task; returns (task, status, detail) rows. Errors of one task do not stop the others."""
  rows = []
  for task in task_list:
    path = results.result_path(settings.results_dir, subject.name, task.name)
    if path.exists() and not settings.overwrite:
      rows.append((task.name, "skipped", f"{path} exists (use --overwrite)"))
      continue
    try:
      record, manifest, items = ADAPTERS[task.protocol](subject, task, settings, mesh)
    except (source.DatasetNotPrepared, source.DatasetUnreadable) as e:  # other tasks still run; a bad checkpoint stops all
      rows.append((task.name, "error", str(e)))
      continue
    if jax.process_index() == 0:
      results.write(path, record, manifest, items)
    value = record["headline"]["value"]
    shown = "no result (every lr diverged)" if value is None else f"{100 * value:.2f}%"
    rows.append((task.name, "done", f"{record['headline']['metric']} {shown} -> {path}"))
    log.info("%s / %s: %s", subject.name, task.name, rows[-1][2])
  return rows
