"""What every adapter on frozen features shares: the task's train/test features, extracted once and cached, and
the template of every probe on them (few-shot ridge, kNN, linear probe, full-data ridge): `run_probe`.

Such an adapter supplies only its config and `fit(config, train) -> Fitted`, a predictor that ranks classes for any
features (one model per metric, or episodes × items for few-shot); the template extracts the features, scores the
fitted probe on the test split and on every extra test set, computes the metrics, the per-item predictions and the
Outcome.
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
        batch_size=settings.batch_size, progress=settings.progress, workers=settings.workers)
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
                                    batch_size=settings.batch_size, progress=settings.progress,
                                    workers=settings.workers)
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
  """What a probe is fitted on: the train split's features, labels and example ids, and the devices to solve on;
  `split` names it as the task does (`train[800:]`), the base split its example ids count in."""
  x: np.ndarray
  labels: np.ndarray
  ids: np.ndarray
  num_classes: int
  mesh: object
  split: str


@dataclasses.dataclass(frozen=True)
class Ranked:
  """A fitted probe's output on n images: per row, (n, k) classes best first (column 0 is the prediction) and, where
  the probe has them, class probabilities (for calibration metrics).

  A row is one fitted model named by its metric (`top1`, `20nn`), or one episode of an episodic probe named
  `<metric>/<episode>` (`10shot/seed0`): the metric averages its episodes, as `results.episodes_of` reads the items.
  `aside`: what the probe's `on_test` reads beside the rankings, never written (few-shot: labels at the LOO λ).
  """
  top: dict[str, np.ndarray]
  probabilities: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  aside: dict = dataclasses.field(default_factory=dict)

  def by_metric(self) -> dict[str, np.ndarray]:
    """Per metric, the (n, k) ranking of its model or the (E, n, k) rankings of its E episodes, in row order."""
    rows = {}
    for row in self.top:
      rows.setdefault(row.split("/")[0], []).append(row)
    return {metric: self.top[names[0]] if names == [metric] else np.stack([self.top[r] for r in names])
            for metric, names in rows.items()}


@dataclasses.dataclass(frozen=True)
class Fitted:
  """What an adapter's `fit` returns: how the probe ranks classes for any features, and what the record says about
  the fit (`details`: chosen hyper-parameters, curves; `manifest`: which training examples chose them).

  An episodic probe also says how an extra test set scores a metric's episodes (`extra_metric`), the fields its
  metrics carry beside the numbers (`tags`, per metric: few-shot's `shots`), and `on_test(ranked, labels)`: what the
  record reports of the test split beyond the shared metrics, as (fields added to named metrics, details added).
  """
  rank: Callable[[np.ndarray], Ranked]
  details: dict
  manifest: dict | None = None
  extra_metric: Callable[[np.ndarray, np.ndarray], dict] = extra_tests.top1_metric
  tags: dict[str, dict] = dataclasses.field(default_factory=dict)
  on_test: Callable[[Ranked, np.ndarray], tuple[dict, dict]] | None = None

  def tagged(self, metrics: dict) -> dict:
    """`metrics` with each metric of a tagged base (`10shot`, `10shot.top5`, ...) carrying its tags."""
    for name, metric in metrics.items():
      metric.update(self.tags.get(metrics_lib.metric_parts(name)[0], {}))
    return metrics


def run_probe(subject, task, settings: EvalSettings, mesh, fit: Callable[[object, TrainSet], Fitted], *,
              check_train: Callable[[int, int | None], None] | None = None) -> Outcome:
  """The frozen-feature protocol around `fit`: features, the fit (timed as `<protocol>_s`, with the test split's
  ranking), classification metrics per metric name, the extra test sets, per-item predictions."""
  feats, featurizer, cache, readers, image_size, timings = open_features(subject, task, settings, mesh,
                                                                         check_train=check_train)
  t1 = time.perf_counter()
  train, test = feats["train"], feats["test"]
  num_classes = readers["train"].num_classes
  fitted = fit(task.config, TrainSet(train.x, train.labels, train.ids, num_classes, local_mesh(), task.train_split))
  ranked = fitted.rank(test.x)
  timings[f"{task.protocol}_s"] = time.perf_counter() - t1
  metrics, details = {}, dict(fitted.details)
  for name, top in ranked.by_metric().items():
    metrics.update(metrics_lib.classification_metrics(name, top[..., 0], test.labels, num_classes, top_indices=top,
                                                      probabilities=ranked.probabilities.get(name)))
  if fitted.on_test is not None:
    fields, more_details = fitted.on_test(ranked, test.labels)
    for name, more in fields.items():
      metrics[name].update(more)
    details.update(more_details)
  extras = score_extra_tests(task, settings, featurizer, cache, mesh, num_classes,
                             lambda x: {name: top[..., 0] for name, top in fitted.rank(x).by_metric().items()},
                             metric=fitted.extra_metric)
  for extra in extras.values():
    fitted.tagged(extra["metrics"])
  rows = list(ranked.top)
  return outcome(subject, featurizer, readers, image_size, feats, timings, metrics=fitted.tagged(metrics),
                 details=details, extra_tests=extras,
                 manifest=fitted.manifest and {"task": task.name, **fitted.manifest},
                 items=results.make_items(test.ids, test.labels, rows, [ranked.top[r][:, 0] for r in rows],
                                          top_classes=[ranked.top[r] for r in rows]))
