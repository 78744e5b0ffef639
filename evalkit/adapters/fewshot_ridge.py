"""The few-shot linear probe by closed-form ridge (big_vision's `fewshot_lsr`; docs/protocols.md, "Few-shot ridge").

Features of the train and test splits come through the shared feature cache; every (shots, seed) episode is solved
by `probes.ridge.RidgeProbe`; the headline is the mean over seeds at `headline_shots` (the paper's ImageNet
10-shot). Each episode is also scored on the task's extra test sets with the same k-shot set and λ.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time

import numpy as np

from evalkit import results
from evalkit import metrics as metrics_lib
from evalkit.adapters import extra_tests, frozen
from evalkit.adapters.registry import (EvalSettings, Outcome, SplitTooSmall, check_distinct_positive,
                                       register_adapter)
from evalkit.probes import ridge


@dataclasses.dataclass(frozen=True)
class FewshotConfig:
  shots: tuple[int, ...] = ridge.DEFAULT_SHOTS
  seeds: tuple[int, ...] = ridge.DEFAULT_SEEDS
  l2_reg: float = ridge.DEFAULT_L2_REG
  headline_shots: int = 10

  def __post_init__(self):
    check_distinct_positive("shots", self.shots)
    if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
      raise ValueError(f"seeds must be a non-empty list of distinct integers ≥ 0, got {list(self.seeds)}")
    if not 0 < self.l2_reg < math.inf:
      raise ValueError(f"l2_reg must be a finite positive number, got {self.l2_reg}")
    if self.headline_shots not in self.shots:
      raise ValueError(f"headline_shots {self.headline_shots} is not one of shots {list(self.shots)}")


def _check_train(shots, size: int, num_classes: int | None) -> None:
  """Before any image is read: k-shot episodes over K classes need k·K training examples (that every class has k
  is checked on the labels, as the episodes are drawn)."""
  if num_classes and max(shots) * num_classes > size:
    raise SplitTooSmall(f"{max(shots)}-shot episodes over {num_classes} classes need {max(shots) * num_classes} "
                        f"training examples, but the train split has {size}: use shots ≤ {size // num_classes} or "
                        "a larger train_split")


@register_adapter("fewshot_ridge", FewshotConfig, headline=lambda c: f"{c.headline_shots}shot",
                  metric_names=lambda c: [m for k in c.shots
                                          for m in (f"{k}shot", *metrics_lib.derived_names(f"{k}shot"))])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  """Every (shots, seed) episode on the task's train/test features; λ fixed, and LOO-chosen beside it."""
  cfg = task.config
  feats, featurizer, cache, readers, image_size, timings = frozen.open_features(
      subject, task, settings, mesh, check_train=functools.partial(_check_train, cfg.shots))
  t1 = time.perf_counter()
  train, test = feats["train"], feats["test"]
  num_classes = readers["train"].num_classes
  probe = ridge.RidgeProbe(train.x, train.labels, test.x, test.labels, num_classes=num_classes,
                           mesh=frozen.local_mesh())
  grid = ridge.LOO_L2_GRID if settings.loo else None
  episodes = probe.run(cfg.shots, cfg.seeds, l2_reg=cfg.l2_reg, l2_grid=grid)
  timings["fewshot_s"] = time.perf_counter() - t1
  extras = frozen.score_extra_tests(task, settings, featurizer, cache, mesh, num_classes,
                                    functools.partial(_predict_per_seed, cfg, train, num_classes),
                                    metric=extra_tests.fewshot_metric)
  for extra in extras.values():
    _with_shots(extra["metrics"], cfg.shots)
  keys = [f"{ep.shots}shot/seed{ep.seed}" for ep in episodes]
  return frozen.outcome(
      subject, featurizer, readers, image_size, feats, timings,
      metrics=_with_shots(_metrics(episodes, test.labels, num_classes), cfg.shots),
      details={"episodes": [{"shots": ep.shots, "seed": ep.seed, "l2_reg": ep.l2_reg, "accuracy": ep.accuracy,
                             "loo_l2_reg": ep.loo_l2_reg, "loo_accuracy": ep.loo_accuracy,
                             "loo_errors": ep.loo_errors} for ep in episodes],
               "loo_l2_grid": list(grid) if grid else None},
      extra_tests=extras,
      manifest={"task": task.name, "train_split": task.train_split,
                "note": "absolute example indices (in the base split) of each k-shot set, in class-then-draw order",
                "episodes": {key: train.ids[ep.train_positions].tolist() for key, ep in zip(keys, episodes)}},
      items=results.make_items(test.ids, test.labels, keys, [ep.predictions for ep in episodes],
                               top_classes=[ep.top_classes for ep in episodes]))


def _with_shots(metrics: dict, shots) -> dict:
  """Each k-shot metric (top-1 and its derived statistics) says its k: reports read the number, not the name."""
  for k in shots:
    for name in (f"{k}shot", *metrics_lib.derived_names(f"{k}shot")):
      if name in metrics:
        metrics[name]["shots"] = k
  return metrics


def _metrics(episodes, labels, num_classes) -> dict:
  """big_vision's per-shot accuracy summary, plus per-class, mean-per-class and top-5 over the same episodes."""
  out = ridge.summarize(episodes, labels)
  for k in sorted({ep.shots for ep in episodes}):
    eps = sorted((ep for ep in episodes if ep.shots == k), key=lambda ep: ep.seed)
    more = metrics_lib.classification_metrics(f"{k}shot", np.stack([ep.predictions for ep in eps]), labels,
                                              num_classes, top_indices=np.stack([ep.top_classes for ep in eps]))
    out[f"{k}shot"]["per_class"] = more.pop(f"{k}shot")["per_class"]
    out.update(more)
  return out


def _predict_per_seed(cfg, train, num_classes, x) -> dict[str, np.ndarray]:
  """Every episode's probe (same k-shot sets, same λ) on other features: per shot count, seeds × items labels."""
  probe = ridge.RidgeProbe(train.x, train.labels, x, np.zeros(len(x), np.int32), num_classes=num_classes,
                           mesh=frozen.local_mesh())
  episodes = sorted(probe.run(cfg.shots, cfg.seeds, l2_reg=cfg.l2_reg, l2_grid=None), key=lambda e: e.seed)
  return {f"{k}shot": np.stack([ep.predictions for ep in episodes if ep.shots == k]) for k in sorted(cfg.shots)}
