"""Full-data linear probe: multinomial logistic regression on frozen features (docs/protocols.md, "Linear probe").

The train split minus its last `val_fraction` (by example id) fits one model per C of the grid, warm-started along
the path (`probes.logistic`, sklearn's objective and C convention); the C with the best validation top-1 (ties: the
smaller C, more regularised) is refit on the whole train split and scored on test: top-1, top-5, mean-per-class,
per-class and expected calibration error of the softmax probabilities.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from evalkit import metrics as metrics_lib
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


def fit(cfg: LinearProbeConfig, train: frozen.TrainSet) -> frozen.Fitted:
  """One model per C on the train split minus its held-out tail, warm-started along the path; the C with the best
  held-out top-1 (first maximum: the smallest such C) refit on the whole train split."""
  fit_pos, val_pos = frozen.held_out(len(train.x), cfg.val_fraction)
  solve = dict(max_iter=cfg.max_iter, tol=cfg.tol)
  grid = sorted(cfg.C_grid)
  problem = logistic.LogisticProblem(train.x[fit_pos], train.labels[fit_pos], train.num_classes, mesh=train.mesh)
  path = logistic.logistic_path(problem, grid, **solve)
  val_y = train.labels[val_pos]
  curve = []
  for C, params, iters in zip(grid, path, problem.iterations):
    val_logits = logistic.scores(params, train.x[val_pos])
    curve.append({"C": C, "val_top1": float(np.mean(val_logits.argmax(axis=1) == val_y)), "iterations": iters})
  best = int(np.argmax([row["val_top1"] for row in curve]))
  del problem  # its rows leave the devices before the whole train split goes on
  full = logistic.LogisticProblem(train.x, train.labels, train.num_classes, mesh=train.mesh)
  params = full.fit(grid[best], path[best], **solve)

  def rank(x):
    logits = logistic.scores(params, x)
    return frozen.Ranked({"top1": metrics_lib.top_classes(logits)}, {"top1": logistic.softmax(logits)})
  return frozen.Fitted(
      rank, details={"chosen_C": grid[best], "val_curve": curve, "final_iterations": full.iterations[-1],
                     "n_fit": len(fit_pos), "n_val": len(val_pos)},
      manifest={"note": "absolute example ids of the C-selection split; the chosen C is refit on every train example",
                "val_ids": [int(train.ids[val_pos[0]]), int(train.ids[val_pos[-1]]) + 1]})


@register_adapter("linear_probe", LinearProbeConfig, headline=lambda c: "top1",
                  metric_names=lambda c: ["top1", *metrics_lib.derived_names("top1")])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  return frozen.run_probe(subject, task, settings, mesh, fit)
