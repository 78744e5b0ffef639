"""Reports from result records: a Markdown table of few-shot accuracies (mean ± std over seeds)."""
from __future__ import annotations


def _cell(metric: dict | None) -> str:
  if not metric:
    return "–"
  return f"{100 * metric['mean']:.1f} ± {100 * metric['std']:.1f}"


def fewshot_markdown(records: list[dict]) -> str:
  """Rows: checkpoints (in first-seen order); columns: task × shots. Accuracies in %, mean ± std over seeds."""
  task_shots: dict[str, list[str]] = {}
  for r in records:
    cols = task_shots.setdefault(r["task"]["name"], [])
    cols.extend(m for m in r["metrics"] if m not in cols)
  for cols in task_shots.values():
    cols.sort(key=lambda m: int(m.removesuffix("shot")))
  names = list(dict.fromkeys(r["checkpoint"]["name"] for r in records))
  by_key = {(r["checkpoint"]["name"], r["task"]["name"]): r for r in records}
  header = ["checkpoint"] + [f"{t} {m}" for t, cols in task_shots.items() for m in cols]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name in names:
    cells = [name]
    for t, cols in task_shots.items():
      r = by_key.get((name, t))
      cells += [_cell(r["metrics"].get(m) if r else None) for m in cols]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
