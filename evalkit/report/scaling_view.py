"""Rendering of scaling studies (`analysis.scaling`): Markdown, the figure, the HTML section and the files.

The analysis fits; this module only draws what it was given, so the leaderboard page and `evalkit scaling fit`
show the same fits (same bootstrap) of the same study objects.
"""
from __future__ import annotations

import html
import weakref
from pathlib import Path

import numpy as np

from evalkit import fileio
from evalkit.analysis.scaling import TaskScaling, data_curves, models_by_size
from evalkit.report import plotting

_PNGS: "weakref.WeakKeyDictionary[TaskScaling, bytes]" = weakref.WeakKeyDictionary()


def png(study: TaskScaling) -> bytes:
  """The study's figure (see `plot`), rendered once for both the PNG file and the HTML page."""
  if study not in _PNGS:
    fig = plot(study)
    _PNGS[study] = plotting.png_bytes(fig, dpi=100)
    plotting.pyplot().close(fig)
  return _PNGS[study]


def _num(v: float) -> str:
  return f"{v:.3g}"


def markdown(study: TaskScaling) -> str:
  lines = [f"## {study.task} ({study.metric} error)", "",
           f"{len(study.points)} checkpoints, {len(study.frontier)} on the compute Pareto frontier."]
  if study.fit:
    f = study.fit
    lines += ["", f"E = a·(C + d)^(−b) + c on the frontier (C in training FLOPs): R² = {f.r2:.3f}, "
              f"RMSE {100 * f.rmse:.2f} points, {f.bootstrap_samples} bootstrap refits.", "",
              "| parameter | value | 95% CI | bootstrap refits at a search bound |", "|---|---|---|---|"]
    for k in "abcd":
      lo, hi = f.ci95.get(k, (float("nan"), float("nan")))
      flag = "" if f.identified(k) else " (not identified)"
      lines.append(f"| {k} | {_num(getattr(f, k))} | [{_num(lo)}, {_num(hi)}] | "
                   f"{100 * f.at_bound.get(k, 0.0):.0f}%{flag} |")
  else:
    lines += ["", f"Law {study.fit_note}."]
  curves = data_curves(study.points)
  sizes = sorted({p.data_size for p in study.points})
  lines += ["", "Error % vs upstream data size (each at its longest training):", "",
            "| model | params | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
  for m, curve in curves.items():
    by_n = {p.data_size: p for p in curve}
    cells = [f"{100 * by_n[n].error:.1f}" if n in by_n else "–" for n in sizes]
    lines.append(f"| {m} | {curve[0].params:,} | " + " | ".join(cells) + " |")
  for m, f in study.data_fits.items():
    lines.append(f"\n{m}: E(n) = {_num(f.a)}·(n + {_num(f.d)})^(−{f.b:.3f}) + {_num(f.c)}, R² {f.r2:.3f}")
  lines += ["", "The paper's claims at this scale:", ""]
  lines += [f"- {c.claim}: **{c.verdict}** — {c.evidence}" for c in study.claims]
  return "\n".join(lines) + "\n"


def plot(study: TaskScaling):
  """One figure: error vs compute (log-log; all points, the frontier, the fit) and error vs data size per model."""
  plt = plotting.pyplot()
  fig, (ax_c, ax_n) = plt.subplots(1, 2, figsize=(10, 3.8))
  models = models_by_size(study.points)
  colors = {m: plt.cm.viridis(i / max(1, len(models) - 1)) for i, m in enumerate(models)}
  sizes = sorted({p.data_size for p in study.points})
  markers = dict(zip(sizes, "os^Dvp*hX"))
  for p in study.points:
    ax_c.scatter(p.compute, p.error, color=colors[p.model], marker=markers.get(p.data_size, "o"), s=28, alpha=0.8)
  frontier = sorted(study.frontier, key=lambda p: p.compute)
  ax_c.plot([p.compute for p in frontier], [p.error for p in frontier], color="k", lw=1, ls=":", label="frontier")
  if study.fit:
    c_grid = np.geomspace(min(p.compute for p in study.points) / 2, max(p.compute for p in study.points) * 2, 200)
    ax_c.plot(c_grid, study.fit.predict(c_grid), color="crimson", lw=1.5,
              label=f"fit: b={study.fit.b:.2f}, c={study.fit.c:.3f}, R²={study.fit.r2:.2f}")
    errors = [p.error for p in study.points]
    if study.fit.c > 0.5 * min(errors):  # the floor, where it is near the data (a floor ≈ 0 would stretch the axis)
      ax_c.axhline(study.fit.c, color="crimson", lw=0.8, ls="--")
    ax_c.set_ylim(0.9 * min(errors + [study.fit.c] if study.fit.c > 0.5 * min(errors) else errors),
                  1.1 * max(errors))
  for m in models:
    ax_c.scatter([], [], color=colors[m], label=m)
  for n in sizes:
    ax_c.scatter([], [], color="grey", marker=markers.get(n, "o"), label=f"n={n:,}")
  ax_c.set(xscale="log", yscale="log", xlabel="training compute (FLOPs)", ylabel=f"{study.metric} error",
           title=f"{study.task}: error vs compute")
  ax_c.legend(fontsize=7)
  for m, curve in data_curves(study.points).items():
    ax_n.plot([p.data_size for p in curve], [p.error for p in curve], marker="o", color=colors[m], label=m)
  ax_n.set(xscale="log", yscale="log", xlabel="upstream examples (data size)", ylabel=f"{study.metric} error",
           title="error vs data size (longest training)")
  ax_n.legend(fontsize=7)
  _label_axes(ax_c, ax_n, sizes)
  fig.tight_layout()
  return fig


def _label_axes(ax_c, ax_n, sizes):
  """Errors in percent on log axes; compute labelled at 1, 2 and 5 × 10^k; data sizes at the sweep's sizes."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  percent = ticker.FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
  for ax in (ax_c, ax_n):
    ax.yaxis.set_major_formatter(percent)
    ax.yaxis.set_minor_formatter(percent)
  flops = ticker.FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+", "e"))
  ax_c.xaxis.set_major_formatter(flops)
  ax_c.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
  ax_c.xaxis.set_minor_formatter(flops)
  ax_n.set_xticks(sizes, [f"{n:,}" for n in sizes])
  ax_n.xaxis.set_minor_formatter(ticker.NullFormatter())


def html_section(studies: list[TaskScaling]) -> str:
  """The report's scaling section: per task the plot, the fitted law with CIs, and the claims."""
  if not studies:
    return ""
  esc = html.escape
  parts = ["<h2>Scaling</h2><p>Error = 1 − headline accuracy against training compute; the law "
           "E = a·(C + d)<sup>−b</sup> + c is fitted to the compute Pareto frontier (95% CIs by residual bootstrap)."
           "</p>"]
  for s in studies:
    parts.append(f"<h3>{esc(s.task)}</h3><img alt=\"scaling {esc(s.task)}\" src=\"{plotting.data_uri(png(s))}\">")
    if s.fit:
      rows = "".join(f"<tr><td>{k}</td><td>{_num(getattr(s.fit, k))}</td><td>[{_num(s.fit.ci95[k][0])}, "
                     f"{_num(s.fit.ci95[k][1])}]</td><td>{100 * s.fit.at_bound[k]:.0f}%"
                     f"{'' if s.fit.identified(k) else ' (not identified)'}</td></tr>"
                     for k in "abcd" if k in s.fit.ci95)
      parts.append(f"<p>R² = {s.fit.r2:.3f} on {s.fit.n} frontier points; {s.fit.bootstrap_samples} bootstrap "
                   f"refits.</p><table class=\"law\"><thead><tr>"
                   f"<th>parameter</th><th>value</th><th>95% CI</th><th>refits at a search bound</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table>")
    else:
      parts.append(f"<p>Law {esc(s.fit_note)}.</p>")
    items = "".join(f"<li>{esc(c.claim)}: <b>{esc(c.verdict)}</b> — {esc(c.evidence)}</li>" for c in s.claims)
    parts.append(f"<ul>{items}</ul>")
  return "".join(parts)


def write(studies: list[TaskScaling], out_dir) -> dict[str, Path]:
  """scaling.md, scaling.json and one PNG per task in `out_dir` (atomically); returns their paths."""
  out_dir = Path(out_dir)
  paths = {"markdown": out_dir / "scaling.md", "json": out_dir / "scaling.json"}
  text = "# Scaling\n\n" + "\n".join(markdown(s) for s in studies)
  fileio.atomic_write(paths["markdown"], lambda f: f.write(text.encode()))
  fileio.atomic_write_json(paths["json"], {"studies": [s.to_dict() for s in studies]})
  for s in studies:
    paths[f"plot:{s.task}"] = fileio.child(out_dir, f"scaling_{s.task}.png", what="task name")
    fileio.atomic_write(paths[f"plot:{s.task}"], lambda f, png=png(s): f.write(png))
  return paths
