"""The few-shot linear probe by closed-form ridge (big_vision's `fewshot_lsr`; docs/protocols.md, "Few-shot ridge").

`fit` solves every (shots, seed) episode on its k-shot set with `probes.ridge.RidgeProbe`; the frozen-probe template
(`frozen.run_probe`) does features, metrics, extra test sets (each episode's W, same k-shot set and λ) and items.
The headline is the mean over seeds at `headline_shots` (the paper's ImageNet 10-shot).
"""
from __future__ import annotations

import dataclasses
import functools
import math

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


def fit(cfg: FewshotConfig, train: frozen.TrainSet, *, loo: bool) -> frozen.Fitted:
  """Every (shots, seed) episode fitted on its k-shot set (seeds in order): W at the fixed λ and, with `loo`, at the
  λ leave-one-out chooses from the k-shot labels alone."""
  probe = ridge.RidgeProbe(train.x, train.labels, num_classes=train.num_classes, mesh=train.mesh)
  grid = ridge.LOO_L2_GRID if loo else None
  episodes = probe.fit(cfg.shots, sorted(cfg.seeds), l2_reg=cfg.l2_reg, l2_grid=grid)
  rows = [f"{ep.shots}shot/seed{ep.seed}" for ep in episodes]

  def rank(x):
    predicted = dict(zip(rows, probe.predict(episodes, x)))  # (labels, top classes, labels at the LOO λ) per row
    return frozen.Ranked({row: top for row, (_, top, _) in predicted.items()}, aside={"predicted": predicted})

  def on_test(ranked, labels):
    """big_vision's per-seed accuracies and their spread, at λ fixed and LOO-chosen, and each episode's."""
    scored = [ep.scored(ranked.aside["predicted"][row], labels) for ep, row in zip(episodes, rows)]
    per_metric = {name: {key: value for key, value in summary.items() if key in ("per_seed", "std", "loo")}
                  for name, summary in ridge.summarize(scored).items()}
    return per_metric, {"episodes": [{"shots": ep.shots, "seed": ep.seed, "l2_reg": ep.l2_reg,
                                      "accuracy": ep.accuracy, "loo_l2_reg": ep.loo_l2_reg,
                                      "loo_accuracy": ep.loo_accuracy, "loo_errors": ep.loo_errors}
                                     for ep in scored]}

  return frozen.Fitted(
      rank, details={"loo_l2_grid": list(grid) if grid else None},
      manifest={"train_split": train.split,
                "note": "absolute example indices (in the base split) of each k-shot set, in class-then-draw order",
                "episodes": {row: train.ids[ep.train_positions].tolist() for row, ep in zip(rows, episodes)}},
      extra_metric=extra_tests.fewshot_metric,
      tags={f"{k}shot": {"shots": k} for k in cfg.shots}, on_test=on_test)


@register_adapter("fewshot_ridge", FewshotConfig, headline=lambda c: f"{c.headline_shots}shot",
                  metric_names=lambda c: [m for k in c.shots
                                          for m in (f"{k}shot", *metrics_lib.derived_names(f"{k}shot"))])
def run(subject, task, settings: EvalSettings, mesh) -> Outcome:
  """Every (shots, seed) episode on the task's train/test features; λ fixed, and LOO-chosen beside it."""
  return frozen.run_probe(subject, task, settings, mesh, functools.partial(fit, loo=settings.loo),
                          check_train=functools.partial(_check_train, task.config.shots))
