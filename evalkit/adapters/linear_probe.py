"""Full-data linear probe: multinomial logistic regression on frozen features (docs/protocols.md, "Linear probe").

The train split minus its last `val_fraction` (by example id) fits one model per C of the grid, warm-started along
the path (`probes.logistic`, sklearn's objective and C convention); the C with the best validation top-1 (ties: the
smaller C, more regularised) is refit on the whole train split and scored on test: top-1, top-5, mean-per-class,
per-class and expected calibration error of the softmax probabilities.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from evalkit import metrics as metrics_lib
from evalkit import results
from evalkit.adapters import frozen
from evalkit.adapters.registry import EvalSettings, Outcome, check_distinct_positive, register_adapter
from evalkit.probes import logistic


@dataclasses.dataclass(frozen=True)
class LinearProbeConfig:
  C_grid: tuple[float, ...] = logistic.DINOV2_C_GRID
  val_fraction: float = 0.1
  max_iter: int = logistic.MAX_ITER
  tol: float = logistic.TOL

  def __post_init__(self):
    check_distinct_positive("C_grid", self.C_grid)
    if not 0 < self.val_fraction < 1:
      raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
    if self.max_iter < 1 or not self.tol > 0:
      raise ValueError("max_iter and tol must be positive")


@register_adapter("linear_probe", LinearProbeConfig, headline=lambda c: "top1",
                  metric_names=lambda c: ["top1", *metrics_lib.derived_names("top1")])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  cfg = task.config
  feats, featurizer, cache, readers, image_size, timings = frozen.open_features(subject, task, settings, mesh)
  t1 = time.perf_counter()
  train, test = feats["train"], feats["test"]
  num_classes = readers["train"].num_classes
  fit_pos, val_pos = frozen.held_out(len(train.x), cfg.val_fraction)
  solve = dict(max_iter=cfg.max_iter, tol=cfg.tol)
  grid = sorted(cfg.C_grid)
  problem = logistic.LogisticProblem(train.x[fit_pos], train.labels[fit_pos], num_classes, mesh=frozen.local_mesh())
  path = logistic.logistic_path(problem, grid, **solve)
  val_y = train.labels[val_pos]
  curve = []
  for C, params, iters in zip(grid, path, problem.iterations):
    val_logits = logistic.scores(params, train.x[val_pos])
    curve.append({"C": C, "val_top1": float(np.mean(val_logits.argmax(axis=1) == val_y)), "iterations": iters})
  best = int(np.argmax([row["val_top1"] for row in curve]))  # first maximum: the smallest such C
  del problem  # its rows leave the devices before the whole train split goes on
  full = logistic.LogisticProblem(train.x, train.labels, num_classes, mesh=frozen.local_mesh())
  params = full.fit(grid[best], path[best], **solve)
  logits = logistic.scores(params, test.x)
  timings["linear_probe_s"] = time.perf_counter() - t1
  top = metrics_lib.top_classes(logits)
  metrics = metrics_lib.classification_metrics("top1", top[:, 0], test.labels, num_classes, top_indices=top,
                                               probabilities=logistic.softmax(logits))
  extras = frozen.score_extra_tests(task, settings, featurizer, cache, mesh, num_classes,
                                    lambda x: {"top1": logistic.scores(params, x).argmax(axis=1)})
  return frozen.outcome(
      subject, featurizer, readers, image_size, feats, timings, metrics=metrics,
      details={"chosen_C": grid[best], "val_curve": curve, "final_iterations": full.iterations[-1],
               "n_fit": len(fit_pos), "n_val": len(val_pos)},
      extra_tests=extras,
      manifest={"task": task.name, "note": "absolute example ids of the C-selection split; the chosen C is refit on "
                "every train example", "val_ids": [int(train.ids[val_pos[0]]), int(train.ids[val_pos[-1]]) + 1]},
      items=results.make_items(test.ids, test.labels, ["top1"], [top[:, 0]], top_classes=[top]))
