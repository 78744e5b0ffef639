"""Does pre-training help? The paper's question for one checkpoint, answered from a results directory.

The pre-trained checkpoint is compared with baselines (the same architecture at its random initialisation, raw
pixels) task by task on the same test items and episodes (`compare.compare_task`: a paired bootstrap over test
items). A comparison is "better" when the 95% CI of Δ = pre-trained − baseline lies above 0, "worse" when it lies
below, else "no clear difference"; `conclusion` says in one line what to conclude (`report.tables.pretraining_summary`
puts it under the numbers).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from evalkit import results
from evalkit.analysis import compare


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of the summary: a task's headline metric, `label` saying what it measures, and the baselines the
  pre-trained checkpoint is compared with on it (raw pixels have no fine-tune)."""
  label: str
  task: str
  in_domain: bool  # data the upstream model's classes come from (else: far transfer)
  baselines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Gain:
  """Δ of the pre-trained checkpoint over one baseline on one column."""
  column: Column
  baseline: str
  comparison: compare.TaskComparison

  @property
  def verdict(self) -> str:
    lo, hi = self.comparison.ci95
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"

  def text(self) -> str:
    lo, hi = self.comparison.ci95
    return (f"{self.column.label} {100 * self.comparison.delta:+.1f} points vs {self.baseline} "
            f"(95% CI {100 * lo:+.1f}…{100 * hi:+.1f})")


def gains(results_dir, pretrained: str, columns: Sequence[Column]) -> list[Gain]:
  """Every (column, baseline) comparison; a missing result file is an error, never a comparison left out."""
  return [Gain(column, baseline, compare.compare_task(results.result_path(results_dir, pretrained, column.task),
                                                      results.result_path(results_dir, baseline, column.task)))
          for column in columns for baseline in column.baselines]


def in_domain_shortfalls(found: list[Gain]) -> list[Gain]:
  """The in-domain comparisons pre-training did not clearly win (the demo fails on any)."""
  return [g for g in found if g.column.in_domain and g.verdict != "better"]


def conclusion(found: list[Gain], far_dataset: str | None) -> str:
  """One line: whether pre-training helped in-domain (every in-domain gain "better"), and what happened far away."""
  in_domain = [g for g in found if g.column.in_domain]
  far = [g for g in found if not g.column.in_domain]
  helped = bool(in_domain) and not in_domain_shortfalls(found)
  line = ("Pre-training helps in-domain: " if helped else "Pre-training did NOT clearly help in-domain: ")
  line += "; ".join(g.text() for g in in_domain) + "."
  if far:
    verdicts = {g.verdict for g in far}
    if verdicts == {"better"}:
      how = "it transfers there too"
    elif "worse" in verdicts and "better" not in verdicts:
      how = "it does not transfer there: the baselines do " + (
          "better" if verdicts == {"worse"} else "as well or better")
    elif verdicts == {"no clear difference"}:
      how = "no clear difference there"
    else:
      how = "the gain carries over only in part"
    line += f" Far ({far_dataset}): {how} — " + "; ".join(g.text() for g in far) + "."
  return line
