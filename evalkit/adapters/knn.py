"""kNN probe on frozen features: DINOv2's protocol (docs/protocols.md, "kNN"), every k from one neighbour search.

Features of the task's train and test splits come through the shared cache (extracted once, whichever adapter
asks); `probes.knn` finds the max(ks) nearest train rows of every test row in device chunks, and each k is scored
with the exp(sim / T)-weighted vote (`<k>nn`) and the plain majority vote (`<k>nn_majority`).
"""
from __future__ import annotations

import dataclasses
import functools

from evalkit import metrics as metrics_lib
from evalkit.adapters import frozen
from evalkit.adapters.registry import (EvalSettings, Outcome, SplitTooSmall, check_distinct_positive,
                                       register_adapter)
from evalkit.probes import knn


@dataclasses.dataclass(frozen=True)
class KnnConfig:
  ks: tuple[int, ...] = knn.DEFAULT_KS
  temperature: float = knn.DEFAULT_TEMPERATURE
  headline_k: int = 20

  def __post_init__(self):
    check_distinct_positive("ks", self.ks)
    if not self.temperature > 0:
      raise ValueError(f"temperature must be positive, got {self.temperature}")
    if self.headline_k not in self.ks:
      raise ValueError(f"headline_k {self.headline_k} is not one of ks {list(self.ks)}")


def _base_names(cfg: KnnConfig) -> list[str]:
  return [name for k in sorted(cfg.ks) for name in (f"{k}nn", f"{k}nn_majority")]


def _check_train(ks, size: int, num_classes: int | None) -> None:
  del num_classes
  if max(ks) > size:
    raise SplitTooSmall(f"ks {list(ks)}: {max(ks)} nearest neighbours need at least {max(ks)} training examples, "
                        f"but the train split has {size}: use ks ≤ {size} or a larger train_split")


def fit(cfg: KnnConfig, train: frozen.TrainSet) -> frozen.Fitted:
  """Nothing to fit: each image's neighbours are searched among the train rows when it is ranked."""
  def rank(x):
    ranked = knn.knn_suite(train.x, train.labels, x, train.num_classes, cfg.ks, cfg.temperature, mesh=train.mesh)
    return frozen.Ranked({name: ranked[name] for name in _base_names(cfg)})
  return frozen.Fitted(rank, details={"n_neighbours_searched": min(max(cfg.ks), len(train.x))})


@register_adapter("knn", KnnConfig, headline=lambda c: f"{c.headline_k}nn",
                  metric_names=lambda c: [m for b in _base_names(c) for m in (b, *metrics_lib.derived_names(b))])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  return frozen.run_probe(subject, task, settings, mesh, fit,
                          check_train=functools.partial(_check_train, task.config.ks))
