"""Leaderboards from a results directory: Markdown, CSV and one self-contained HTML page (inline CSS, JS and plots).

Rows are checkpoints, columns the headline metric of each task (ImageNet 10-shot and ImageNet fine-tune first), each
cell the measured value with its 95% CI and, where the checkpoint's card has one, the published number beside it.
Within a column, cells are ranked only against cells with the column's reference task-spec hash (the most common
one); a cell computed under another spec is flagged and left unranked.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import html
import io
import json
from pathlib import Path

from evalkit import fileio, metrics, results
from evalkit.report import plotting, scaling_view, tables

HEADLINE_FIRST = ("imagenet2012", "imagenet2012_finetune")


@dataclasses.dataclass
class Cell:
  value: float
  ci95: tuple[float, float] | None
  spec_hash: str
  se: float | None = None
  published: float | None = None  # percent, from the checkpoint card
  rank: int | None = None
  mismatch: bool = False


@dataclasses.dataclass
class Board:
  rows: list[str]  # checkpoint names
  columns: list[tuple[str, str]]  # (task, metric)
  cells: dict[tuple[str, tuple[str, str]], Cell]
  records: list[dict]
  suite_mean: dict[str, Cell] = dataclasses.field(default_factory=dict)  # rows with every column, comparably

  def all_columns(self) -> list[tuple[str, str]]:
    return self.columns + ([("suite", "mean")] if self.suite_mean else [])

  def cell(self, row: str, column: tuple[str, str]) -> Cell | None:
    return self.suite_mean.get(row) if column == ("suite", "mean") else self.cells.get((row, column))


def _headline_cell(record: dict) -> tuple[str, Cell] | None:
  metric, value = record["headline"]["metric"], record["headline"]["value"]
  m = record["metrics"].get(metric)
  if not m or value is None:
    return None
  ci = tuple(m["ci95"]) if "ci95" in m else None
  return metric, Cell(value, ci, record["task"]["spec_hash"], se=results.metric_se(m) if ci else None)


def _published(record: dict, metric: str) -> float | None:
  """The checkpoint card's published number (percent) for this metric, as the record carries it: written at eval
  time only for the very task spec the card's number was measured with (evaluate.published_numbers)."""
  value = record.get("published", {}).get(metric)
  return None if value is None else round(100 * value, 10)


def build(records: list[dict]) -> Board:
  cells, columns = {}, []
  for r in records:
    got = _headline_cell(r)
    if got is None:
      continue
    metric, cell = got
    column = (r["task"]["name"], metric)
    cell.published = _published(r, metric)
    cells[(r["checkpoint"]["name"], column)] = cell
    if column not in columns:
      columns.append(column)
  columns.sort(key=lambda c: (HEADLINE_FIRST.index(c[0]) if c[0] in HEADLINE_FIRST else len(HEADLINE_FIRST), c))
  rows = list(dict.fromkeys(r["checkpoint"]["name"] for r in records))
  for column in columns:
    in_column = [(row, cells[(row, column)]) for row in rows if (row, column) in cells]
    reference = collections.Counter(c.spec_hash for _, c in in_column).most_common(1)[0][0]
    ranked = sorted((c for _, c in in_column if c.spec_hash == reference), key=lambda c: -c.value)
    _rank(ranked)
    for _, c in in_column:
      c.mismatch = c.spec_hash != reference
  return Board(rows, columns, cells, records, _suite_means(rows, columns, cells))


def _rank(cells: list[Cell]) -> None:
  """Ranks cells by value, best first; ties share a rank."""
  ranked = sorted(cells, key=lambda c: -c.value)
  for i, c in enumerate(ranked):
    c.rank = 1 + sum(1 for other in ranked[:i] if other.value > c.value)


def _suite_means(rows, columns, cells) -> dict[str, Cell]:
  """Mean over all columns for rows that have every column under its reference spec; the CI propagates the cells'
  standard errors as independent: se = sqrt(Σ se²) / T."""
  if len(columns) < 2:
    return {}
  means = {}
  for row in rows:
    got = [cells.get((row, c)) for c in columns]
    if any(c is None or c.mismatch or c.se is None for c in got):
      continue
    value = sum(c.value for c in got) / len(got)
    se = sum(c.se**2 for c in got) ** 0.5 / len(got)
    means[row] = Cell(value, (value - 1.96 * se, value + 1.96 * se), spec_hash="suite", se=se)
  _rank(list(means.values()))
  return means


def _fmt(cell: Cell | None, *, with_ci: bool = True) -> str:
  if cell is None:
    return "–"
  text = f"{100 * cell.value:.2f}"
  if with_ci and cell.ci95:
    text += f" [{100 * cell.ci95[0]:.1f}, {100 * cell.ci95[1]:.1f}]"
  if cell.published is not None:
    text += f" (published {cell.published:g})"
  if cell.mismatch:
    text += " ≠spec"
  return text


def markdown(board: Board) -> str:
  columns = board.all_columns()
  table = tables.markdown_table(["checkpoint"] + [f"{t} {m}" for t, m in columns],
                                [[row] + [_fmt(board.cell(row, c)) for c in columns] for row in board.rows])
  return table + "\nAccuracy % with 95% CI; `≠spec`: computed under another task spec than the column's, not ranked.\n"


def csv_text(board: Board) -> str:
  out = io.StringIO()
  w = csv.writer(out)
  w.writerow(["checkpoint", "task", "metric", "value", "ci95_low", "ci95_high", "spec_hash", "rank", "spec_mismatch",
              "published_percent"])
  for row in board.rows:
    for task, metric in board.all_columns():
      c = board.cell(row, (task, metric))
      if c is not None:
        w.writerow([row, task, metric, c.value, *(c.ci95 or ("", "")), c.spec_hash, c.rank or "", c.mismatch,
                    "" if c.published is None else c.published])
  return out.getvalue()


# ----------------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, embedded as PNG data URIs).


def _shot_curve(record: dict) -> list[tuple[int, float]]:
  """(shots, top-1) of a record whose metrics are k-shot accuracies, else []."""
  return sorted((m["shots"], m["value"]) for name, m in record["metrics"].items()
                if "shots" in m and metrics.metric_parts(name)[1] == "top1")


def checkpoint_colors(names) -> dict[str, str]:
  """One colour per checkpoint, the same in every figure (matplotlib's cycle C0…C9, in the given order; beyond ten
  checkpoints colours repeat)."""
  return {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(names))}


def plots(records: list[dict]) -> list[tuple[str, str]]:
  """(title, PNG data URI): accuracy vs shots for every task with k-shot metrics; the mean headline of one protocol
  against another's per checkpoint (e.g. few-shot vs fine-tune). A checkpoint has one colour in all of them."""
  plt = plotting.pyplot()
  out = []
  colors = checkpoint_colors(r["checkpoint"]["name"] for r in records)
  curves = [(r, _shot_curve(r)) for r in records]
  curves = [(r, c) for r, c in curves if len(c) > 1]
  task_names = sorted({r["task"]["name"] for r, _ in curves})
  if task_names:
    fig, axes = plt.subplots(1, len(task_names), figsize=(4 * len(task_names), 3.2), squeeze=False)
    for ax, task in zip(axes[0], task_names):
      for r, curve in ((r, c) for r, c in curves if r["task"]["name"] == task):
        shots = [k for k, _ in curve]
        ax.plot(shots, [100 * v for _, v in curve], marker="o", label=r["checkpoint"]["name"],
                color=colors[r["checkpoint"]["name"]])
      ax.set(xscale="log", xlabel="shots per class", ylabel="accuracy %", title=task)
      ax.set_xticks(shots, [str(k) for k in shots])
    if len({r["checkpoint"]["name"] for r, _ in curves}) <= 12:  # beyond that a legend hides the plot
      axes[0][0].legend(fontsize=8)
    out.append(("Few-shot accuracy vs shots", plotting.data_uri(plotting.png_bytes(fig))))
    plt.close(fig)
  out.extend(_reliability_plots(records, plt, colors))
  by_checkpoint = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in records:
    if r["headline"]["value"] is not None:
      by_checkpoint[r["checkpoint"]["name"]][r["protocol"]].append(r["headline"]["value"])
  protocols = sorted({p for d in by_checkpoint.values() for p in d})
  if len(protocols) >= 2:
    px, py = protocols[:2]
    pairs = [(n, d) for n, d in by_checkpoint.items() if px in d and py in d]
    if pairs:
      fig, ax = plt.subplots(figsize=(4, 3.2))
      for name, d in pairs:
        x, y = 100 * sum(d[px]) / len(d[px]), 100 * sum(d[py]) / len(d[py])
        ax.scatter([x], [y], color=colors[name])
        ax.annotate(name, (x, y), fontsize=8)
      ax.set(xlabel=f"mean {px} headline %", ylabel=f"mean {py} headline %", title=f"{px} vs {py}")
      out.append((f"{px} vs {py}", plotting.data_uri(plotting.png_bytes(fig))))
      plt.close(fig)
  return out


def _reliability_plots(records: list[dict], plt, colors: dict[str, str]) -> list[tuple[str, str]]:
  """Reliability diagrams (accuracy vs confidence per bin, ECE in the legend) of every probabilistic headline."""
  found = []
  for r in records:
    base, _ = metrics.metric_parts(r["headline"]["metric"])
    m = r["metrics"].get(base, {})
    if "reliability" in m:
      found.append((r, m))
  tasks_seen = sorted({r["task"]["name"] for r, _ in found})
  if not tasks_seen:
    return []
  fig, axes = plt.subplots(1, len(tasks_seen), figsize=(3.6 * len(tasks_seen), 3.4), squeeze=False)
  for ax, task in zip(axes[0], tasks_seen):
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
    for r, m in ((r, m) for r, m in found if r["task"]["name"] == task):
      bins = m["reliability"]
      pts = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
      ax.plot([c for c, _ in pts], [a for _, a in pts], marker="o", markersize=3, color=colors[r["checkpoint"]["name"]],
              label=f"{r['checkpoint']['name']} (ECE {100 * m['ece']:.1f}%)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=task)
    ax.legend(fontsize=7)
  uri = plotting.data_uri(plotting.png_bytes(fig))
  plt.close(fig)
  return [("Calibration: reliability diagrams", uri)]


# ----------------------------------------------------------------------------------------------------------------------
# HTML: one file, no network.

_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{cursor:pointer;background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.ci{color:#777;font-size:85%}.pub{color:#36c;font-size:85%}
.mismatch{background:#fde2e2}.rank1{font-weight:bold}img{max-width:100%;margin:1em 0}.conclusion{max-width:60em}"""

# Sorting by clicking a header (again: reverse); `#sort=<column>:<asc|desc>` in the URL sorts on load.
_JS = """function sortTable(col, desc){const tb=document.querySelector('#board tbody');
const rows=[...tb.rows];const key=r=>{const v=r.cells[col].dataset.v;return v===undefined?r.cells[col].textContent:
(v===''?-Infinity:parseFloat(v));};rows.sort((a,b)=>{const x=key(a),y=key(b);const c=x<y?-1:x>y?1:0;
return desc?-c:c;});rows.forEach(r=>tb.appendChild(r));document.body.dataset.sorted=col+':'+(desc?'desc':'asc');}
document.querySelectorAll('#board th').forEach((th,i)=>th.addEventListener('click',()=>{
const d=document.body.dataset.sorted===i+':desc'?false:true;sortTable(i,d);}));
const m=location.hash.match(/sort=(\\d+):(asc|desc)/);if(m){sortTable(parseInt(m[1]),m[2]==='desc');}"""


def _script_json(text: str) -> str:
  """JSON safe inside <script>: entities are not decoded there, so instead of HTML escapes `<`, `>` and `&` get
  JSON's own \\u escapes; the block stays valid JSON and no name can close the script element."""
  return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_page(board: Board, title: str = "evalkit leaderboard", studies=(),
              lead: tables.SummaryTable | None = None) -> str:
  """The page; `studies` (analysis.scaling results, fitted by the caller) add a scaling section; `lead`, a summary
  table with its conclusion, opens the page."""
  esc = html.escape
  columns = board.all_columns()
  head = "".join(f"<th>{esc(t)}<br><small>{esc(m)}</small></th>" for t, m in columns)
  body = []
  for row in board.rows:
    tds = [f"<td>{esc(row)}</td>"]
    for column in columns:
      c = board.cell(row, column)
      if c is None:
        tds.append('<td data-v="">–</td>')
        continue
      cls = " ".join(k for k, on in (("mismatch", c.mismatch), ("rank1", c.rank == 1)) if on)
      ci = f' <span class="ci">[{100 * c.ci95[0]:.1f}, {100 * c.ci95[1]:.1f}]</span>' if c.ci95 else ""
      pub = f' <span class="pub">published {c.published:g}</span>' if c.published is not None else ""
      tip = "computed under another task spec: not ranked" if c.mismatch else f"rank {c.rank}"
      tds.append(f'<td class="{cls}" data-v="{c.value:.6f}" title="{tip}">{100 * c.value:.2f}{ci}{pub}</td>')
    body.append(f"<tr>{''.join(tds)}</tr>")
  figures = "".join(f"<h2>{esc(t)}</h2><img alt=\"{esc(t)}\" src=\"{uri}\">" for t, uri in plots(board.records))
  figures += scaling_view.html_section(list(studies))
  data = json.dumps([{"checkpoint": r, "task": t, "metric": m, "value": c.value, "rank": c.rank}
                     for (r, (t, m)), c in board.cells.items()])
  return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title><style>{_CSS}</style>"
          f"</head><body><h1>{esc(title)}</h1>{lead.html() if lead else ''}"
          f"<p>Accuracy % with 95% CI; click a column to sort. Red cells were "
          f"computed under another task spec than their column's and are not ranked.</p>"
          f"<table id=\"board\"><thead><tr><th>checkpoint</th>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
          f"</table>{figures}<script type=\"application/json\" id=\"data\">{_script_json(data)}</script>"
          f"<script>{_JS}</script></body></html>")


def write(results_dir, out_dir, studies=(), records=None, lead: tables.SummaryTable | None = None) -> dict[str, Path]:
  """leaderboard.md, leaderboard.csv and leaderboard.html in `out_dir`; returns their paths. The page includes a
  scaling section (plots, fitted law, claims) for the given `studies` (analysis.scaling, fitted by the caller).
  `records`: the directory's results when the caller has loaded them already. `lead`: a summary table that opens
  the page and the Markdown file."""
  board = build(records if records is not None else results.load_all(results_dir))
  out_dir = Path(out_dir)
  paths = {"markdown": out_dir / "leaderboard.md", "csv": out_dir / "leaderboard.csv",
           "html": out_dir / "leaderboard.html"}
  pages = (("markdown", (lead.markdown() + "\n" if lead else "") + markdown(board)), ("csv", csv_text(board)),
           ("html", html_page(board, studies=studies, lead=lead)))
  for kind, text in pages:
    data = text.encode()
    fileio.atomic_write(paths[kind], lambda f, d=data: f.write(d))
  return paths
