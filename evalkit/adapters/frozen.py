"""What every adapter on frozen features shares: the task's train/test features, extracted once and cached, and
the template of a probe that fits one model per name (kNN, linear probe, full-data ridge): `run_probe`.

Such an adapter supplies only its config and `fit(config, train) -> Fitted`; the template extracts the features,
scores the fitted probe on the test split and on every extra test set, computes the metrics, the per-item
predictions and the Outcome.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import numpy as np

from evalkit import distributed, features, results
from evalkit import metrics as metrics_lib
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
                      predict: Callable[[np.ndarray], dict[str, np.ndarray]],
                      metric: Callable[[np.ndarray, np.ndarray], dict] = extra_tests.top1_metric) -> dict:
  """The task's extra test sets through the feature cache, scored by `predict(features) -> {metric: predictions}`
  (predicted labels, or one row of them per episode) and `metric(predictions, labels)`."""
  out = {}
  for opened in extra_tests.open_all(task, settings.data_dir, num_classes):
    feats = features.cached_extract(featurizer, opened.reader, pp_lib.parse(opened.pp),
                                    dataset=source.dataset_fingerprint(opened.reader), mesh=mesh, cache=cache,
                                    batch_size=settings.batch_size, progress=settings.progress)
    metrics = {name: metric(pred, feats.labels) for name, pred in predict(feats.x).items()}
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


@dataclasses.dataclass(frozen=True)
class TrainSet:
  """What a probe is fitted on: the train split's features, labels and example ids, and the devices to solve on."""
  x: np.ndarray
  labels: np.ndarray
  ids: np.ndarray
  num_classes: int
  mesh: object


@dataclasses.dataclass(frozen=True)
class Ranked:
  """A fitted probe's output on n images: per model name, (n, k) classes best first (column 0 is the prediction)
  and, where the probe has them, class probabilities (for calibration metrics)."""
  top: dict[str, np.ndarray]
  probabilities: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Fitted:
  """What an adapter's `fit` returns: how the probe ranks classes for any features, and what the record says about
  the fit (`details`: chosen hyper-parameters, curves; `manifest`: which training examples chose them)."""
  rank: Callable[[np.ndarray], Ranked]
  details: dict
  manifest: dict | None = None


def run_probe(subject, task, settings: EvalSettings, mesh, fit: Callable[[object, TrainSet], Fitted], *,
              check_train: Callable[[int, int | None], None] | None = None) -> Outcome:
  """The frozen-feature protocol around `fit`: features, the fit (timed as `<protocol>_s`, with the test split's
  ranking), classification metrics per model name, the extra test sets' top-1, per-item predictions."""
  feats, featurizer, cache, readers, image_size, timings = open_features(subject, task, settings, mesh,
                                                                         check_train=check_train)
  t1 = time.perf_counter()
  train, test = feats["train"], feats["test"]
  num_classes = readers["train"].num_classes
  fitted = fit(task.config, TrainSet(train.x, train.labels, train.ids, num_classes, local_mesh()))
  ranked = fitted.rank(test.x)
  timings[f"{task.protocol}_s"] = time.perf_counter() - t1
  metrics = {}
  for name, top in ranked.top.items():
    metrics.update(metrics_lib.classification_metrics(name, top[:, 0], test.labels, num_classes, top_indices=top,
                                                      probabilities=ranked.probabilities.get(name)))
  extras = score_extra_tests(task, settings, featurizer, cache, mesh, num_classes,
                             lambda x: {name: top[:, 0] for name, top in fitted.rank(x).top.items()})
  names = list(ranked.top)
  return outcome(subject, featurizer, readers, image_size, feats, timings, metrics=metrics, details=fitted.details,
                 extra_tests=extras, manifest=fitted.manifest and {"task": task.name, **fitted.manifest},
                 items=results.make_items(test.ids, test.labels, names, [ranked.top[n][:, 0] for n in names],
                                          top_classes=[ranked.top[n] for n in names]))
