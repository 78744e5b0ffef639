"""Full-data ridge probe: the closed-form ridge on the whole train split, streamed (docs/protocols.md,
"Full-data ridge").

The train features stream through `probes.ridge_full` in fixed blocks (each process takes a contiguous range of whole
blocks; the exact double-double sums are combined across processes): one pass for the column mean and std, one for
the statistics of the whitened rows with a constant bias feature, as the few-shot protocol whitens; and λ is chosen
by generalised cross-validation from the one eigendecomposition — no test label is looked at.
"""
from __future__ import annotations

import dataclasses
import math

import jax

from evalkit import metrics as metrics_lib
from evalkit.adapters import frozen
from evalkit.adapters.registry import EvalSettings, Outcome, check_distinct_positive, register_adapter
from evalkit.probes import ridge, ridge_full

DEFAULT_L2_GRID = tuple(2.0**p for p in range(-10, 25))  # 2^-10 ... 2^24: the best λ grows with N


@dataclasses.dataclass(frozen=True)
class RidgeFullConfig:
  l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
  block_rows: int = ridge_full.BLOCK_ROWS

  def __post_init__(self):
    check_distinct_positive("l2_grid", self.l2_grid)
    if self.block_rows < 1:
      raise ValueError("block_rows must be positive")


def process_rows(n: int, block_rows: int) -> slice:
  """This process's contiguous range of whole blocks (the last process also takes the partial tail block)."""
  blocks = math.ceil(n / block_rows)
  per = math.ceil(blocks / jax.process_count())
  p = jax.process_index()
  return slice(min(n, p * per * block_rows), min(n, (p + 1) * per * block_rows))


def fit(cfg: RidgeFullConfig, train: frozen.TrainSet) -> frozen.Fitted:
  """This process's blocks of train rows streamed twice (column moments, then the whitened Gram statistics); λ by
  generalised cross-validation over the grid."""
  mine = process_rows(len(train.x), cfg.block_rows)
  step = 16 * cfg.block_rows
  spans = [(s, min(s + step, mine.stop)) for s in range(mine.start, mine.stop, step)]
  mean, std = ridge_full.column_moments(lambda: (train.x[a:b] for a, b in spans), ridge.STD_EPS)
  acc = ridge_full.GramAccumulator(train.x.shape[1], train.num_classes, mesh=train.mesh, block_rows=cfg.block_rows)
  for a, b in spans:
    acc.add(ridge_full.whiten(train.x[a:b], mean, std), train.labels[a:b])
  solved = ridge_full.whitened_fit(acc.finish(), mean, std, sorted(cfg.l2_grid), bias_feature=ridge.BIAS_FEATURE)
  return frozen.Fitted(
      lambda x: frozen.Ranked({"top1": metrics_lib.top_classes(solved.scores(x))}),
      details={"chosen_l2_reg": solved.l2_reg,
               "gcv_curve": [{"l2_reg": lam, "gcv": g} for lam, g in zip(sorted(cfg.l2_grid), solved.gcv)]})


@register_adapter("ridge_full", RidgeFullConfig, headline=lambda c: "top1", unhashed=("block_rows",),
                  metric_names=lambda c: ["top1", *metrics_lib.derived_names("top1")])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  return frozen.run_probe(subject, task, settings, mesh, fit)
