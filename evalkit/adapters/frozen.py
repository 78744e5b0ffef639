"""What every adapter on frozen features shares: the task's train/test features, extracted once and cached."""
from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from evalkit import distributed, features
from evalkit.adapters import extra_tests
from evalkit.adapters.registry import EvalSettings, Outcome
from evalkit.data import pp as pp_lib
from evalkit.data import source


def open_features(subject, task, settings: EvalSettings, mesh,
                  check_train: Callable[[int, int | None], None] | None = None):
  """Features of the task's train and test splits through the shared cache, extracted once per (checkpoint,
  dataset, split, pp) whichever adapter asks. `check_train(size, num_classes)` of the whole train split runs before
  any image is read: a spec the split cannot serve (raising `SplitTooSmall`) fails before the work, not after.

  Returns (features by split, featurizer, cache or None, readers by split, image size, timings)."""
  t0 = time.perf_counter()
  preprocess = pp_lib.parse(task.pp)
  pid, pcount = jax.process_index(), jax.process_count()
  readers = {which: source.open_split(task.dataset, split, settings.data_dir, process_index=pid, process_count=pcount)
             for which, split in (("train", task.train_split), ("test", task.test_split))}
  if check_train is not None:
    train = readers["train"]
    check_train(train.global_stop - train.global_start, train.num_classes)
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
  return feats, featurizer, cache, readers, image_size, timings


def held_out(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """(fit positions, validation positions) of n train rows in dataset order: the last `fraction` (by example id,
  rounded as tfds rounds `train[90%:]`) is held out for choosing a probe's regularisation."""
  cut = source.percent_cut(0, n, fraction)
  return np.arange(cut), np.arange(cut, n)


def score_extra_tests(task, settings: EvalSettings, featurizer, cache, mesh, num_classes: int,
                      predict: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict:
  """The task's extra test sets through the feature cache, scored by `predict(features) -> {metric: labels}`."""
  out = {}
  for opened in extra_tests.open_all(task, settings.data_dir, num_classes):
    feats = features.cached_extract(featurizer, opened.reader, pp_lib.parse(opened.pp),
                                    dataset=source.dataset_fingerprint(opened.reader), mesh=mesh, cache=cache,
                                    batch_size=settings.batch_size, progress=settings.progress)
    metrics = {name: extra_tests.top1_metric(pred, feats.labels) for name, pred in predict(feats.x).items()}
    out[opened.spec.name] = {**extra_tests.describe(opened, feats.labels), "metrics": metrics}
  return out


def outcome(subject, featurizer, readers, image_size, feats, timings, **fields) -> Outcome:
  """The Outcome of a probe on the frozen train/test features: provenance and sizes filled in, `fields` as given."""
  train, test = feats["train"], feats["test"]
  return Outcome(
      checkpoint={**subject.describe(image_size), "featurizer": featurizer.identity},
      dataset=source.dataset_fingerprint(readers["test"]),
      data={"image_size": list(image_size), "num_classes": readers["train"].num_classes, "n_train": len(train.x),
            "n_test": len(test.x), "feature_dim": int(train.x.shape[1])},
      timings=timings, **fields)


def local_mesh():
  """Every process holds all features after extraction; probes solve on this process's devices, identically."""
  return distributed.data_mesh(jax.local_devices())
