"""Reports from result records: Markdown tables of few-shot accuracies (mean ± std over seeds) and fine-tunes."""
from __future__ import annotations


def _cell(metric: dict | None) -> str:
  if not metric:
    return "–"
  return f"{100 * metric['value']:.1f} ± {100 * metric['std']:.1f}"


def fewshot_markdown(records: list[dict]) -> str:
  """Rows: checkpoints (in first-seen order); columns: task × shots. Accuracies in %, mean ± std over seeds."""
  task_shots: dict[str, list[str]] = {}
  for r in records:
    cols = task_shots.setdefault(r["task"]["name"], [])
    cols.extend(m for m in r["metrics"] if m not in cols and "." not in m)  # k-shot top-1, not `10shot.top5`
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


def finetune_markdown(records: list[dict]) -> str:
  """Rows: (checkpoint, task); top-1 with its bootstrap 95% CI, the chosen lr and the minival lr curve."""
  lines = ["| checkpoint | task | top-1 | 95% CI | chosen lr | minival top-1 by lr |", "|---|---|---|---|---|---|"]
  for r in records:
    top1 = r["metrics"].get("top1")
    curve = ", ".join(f"{c['lr']:g}: " + ("diverged" if c["diverged"] else f"{100 * c['minival_top1']:.1f}")
                      for c in r["lr_curve"])
    value = f"{100 * top1['value']:.1f}" if top1 else "–"
    ci = f"{100 * top1['ci95'][0]:.1f}–{100 * top1['ci95'][1]:.1f}" if top1 else "–"
    lines.append(f"| {r['checkpoint']['name']} | {r['task']['name']} | {value} | {ci} | {r['chosen_lr']} | {curve} |")
  return "\n".join(lines) + "\n"
