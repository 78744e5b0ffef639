"""Reports from result records: Markdown tables of few-shot accuracies (mean ± std over seeds) and fine-tunes, and
the small summary table (rows, columns, one conclusion) that opens a report."""
from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence

from evalkit import metrics
from evalkit.analysis import pretraining_gain


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub Markdown table, one line per row, ending in a newline."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


@dataclasses.dataclass
class SummaryTable:
  """A table a reader sees first, then one line saying what to conclude from it."""
  title: str
  header: list[str]
  rows: list[list[str]]
  conclusion: str

  def markdown(self) -> str:
    return f"## {self.title}\n\n{markdown_table(self.header, self.rows)}\n{self.conclusion}\n"

  def html(self) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in self.rows)
    return (f"<h2>{esc(self.title)}</h2><table class=\"summary\"><thead><tr>{head}</tr></thead><tbody>{body}"
            f"</tbody></table><p class=\"conclusion\"><b>{esc(self.conclusion)}</b></p>")


def _cell(metric: dict | None) -> str:
  if not metric:
    return "–"
  return f"{100 * metric['value']:.1f} ± {100 * metric['std']:.1f}"


def fewshot_markdown(records: list[dict]) -> str:
  """Rows: checkpoints (in first-seen order); columns: task × shots. Accuracies in %, mean ± std over seeds."""
  task_shots: dict[str, dict[str, int]] = {}  # task -> {metric: shots}
  for r in records:
    cols = task_shots.setdefault(r["task"]["name"], {})
    cols.update((name, m["shots"]) for name, m in r["metrics"].items()
                if "shots" in m and metrics.metric_parts(name)[1] == "top1")  # k-shot top-1, not `10shot.top5`
  task_shots = {t: sorted(cols, key=cols.get) for t, cols in task_shots.items()}
  names = list(dict.fromkeys(r["checkpoint"]["name"] for r in records))
  by_key = {(r["checkpoint"]["name"], r["task"]["name"]): r for r in records}
  header = ["checkpoint"] + [f"{t} {m}" for t, cols in task_shots.items() for m in cols]
  rows = []
  for name in names:
    cells = [name]
    for t, cols in task_shots.items():
      r = by_key.get((name, t))
      cells += [_cell(r["metrics"].get(m) if r else None) for m in cols]
    rows.append(cells)
  return markdown_table(header, rows)


def finetune_markdown(records: list[dict]) -> str:
  """Rows: (checkpoint, task); top-1 with its bootstrap 95% CI, the chosen lr and the minival lr curve."""
  rows = []
  for r in records:
    top1, details = r["metrics"].get("top1"), r["details"]
    curve = ", ".join(f"{c['lr']:g}: " + ("diverged" if c["diverged"] else f"{100 * c['minival_top1']:.1f}")
                      for c in details["lr_curve"])
    value = f"{100 * top1['value']:.1f}" if top1 else "–"
    ci = f"{100 * top1['ci95'][0]:.1f}–{100 * top1['ci95'][1]:.1f}" if top1 else "–"
    rows.append([r["checkpoint"]["name"], r["task"]["name"], value, ci, str(details["chosen_lr"]), curve])
  return markdown_table(["checkpoint", "task", "top-1", "95% CI", "chosen lr", "minival top-1 by lr"], rows)


def percent_with_ci(metric: dict | None) -> str:
  """A metric `{value, ci95}` as "84.2 (83.2–85.2)" (percent); "–" for none."""
  if metric is None:
    return "–"
  ci = metric.get("ci95")
  return f"{100 * metric['value']:.1f}" + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if ci else "")


def pretraining_summary(records: list[dict], checkpoints: Sequence[str], columns: Sequence[pretraining_gain.Column],
                        found: list[pretraining_gain.Gain], *, upstream: dict[str, dict],
                        far_dataset: str | None = None) -> SummaryTable:
  """Does pre-training help? One row per checkpoint: its upstream top-1 (`upstream`: name -> metric; "–" where
  none), then each column's headline with its 95% CI; under it, `pretraining_gain.conclusion` of the comparisons."""
  headline = {(r["checkpoint"]["name"], r["task"]["name"]): r["metrics"][r["headline"]["metric"]] for r in records}
  header = ["checkpoint", "upstream top-1 (own head)"] + [f"{c.label} ({c.task})" for c in columns]
  rows = [[name, percent_with_ci(upstream.get(name))] + [percent_with_ci(headline.get((name, c.task)))
                                                        for c in columns] for name in checkpoints]
  return SummaryTable("Does pre-training help? Top-1 % (95% CI)", header, rows,
                      pretraining_gain.conclusion(found, far_dataset))
