"""Scaling laws of transfer quality: the compute Pareto frontier, the double-saturating power law, the paper's claims.

Inputs are ordinary result records (evalkit.result/1) of checkpoints whose card has a `training` table, as
`evalkit pretrain` writes it (train_flops, examples_seen, upstream_examples, params, model_name): a sweep's results
(`evalkit scaling sweep`) or any set of evaluated evalkit-trained checkpoints. Per task (headline metric, e.g. 10-shot):

- error E = 1 − accuracy against training compute C (FLOPs) for every checkpoint, and the Pareto frontier: the
  checkpoints no other checkpoint beats with less or equal compute;
- E = a·(C + d)^(−b) + c fitted to the frontier (docs/protocols.md "Scaling law"; "Scaling Vision Transformers",
  Zhai et al. 2021, Fig. 2 and eq. 1): c is the irreducible error, d shifts the small-compute end. Least squares on
  E (scipy), from several starting points; 95% CIs on a, b, c, d by a residual bootstrap; R² on E;
- error vs upstream data size per model (at each cell's longest training), fitted the same way where a model has
  enough data sizes;
- the paper's qualitative claims, checked against the numbers with each point's standard error: larger models are
  more sample-efficient; small models saturate while larger ones keep gaining from more data and longer training.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np
from scipy import optimize

from evalkit import results
from evalkit.errors import EvalkitError

MIN_FIT_POINTS = 5  # four parameters: at least one residual degree of freedom


class FitError(EvalkitError):
  """The law cannot be fitted (too few points, or every start failed)."""


@dataclasses.dataclass(frozen=True)
class Point:
  """One evaluated checkpoint of a scaling study, on one task."""
  checkpoint: str
  model: str
  params: int
  data_size: int
  examples_seen: int
  compute: float  # training FLOPs
  error: float  # 1 − headline accuracy
  se: float  # standard error of the accuracy


def points(records: Iterable[dict], task: str) -> list[Point]:
  """The task's scaling points: records of checkpoints with training compute in their card."""
  out = []
  for r in records:
    training = r["checkpoint"].get("training") or {}
    value = r["headline"]["value"]
    if r["task"]["name"] != task or not training.get("train_flops") or value is None:
      continue  # not from a training run, or untrained (step 0: no compute to put on a log axis)
    out.append(Point(
        checkpoint=r["checkpoint"]["name"], model=str(training.get("model_name") or r["checkpoint"]["name"]),
        params=int(training.get("params", 0)), data_size=int(training.get("upstream_examples", 0)),
        examples_seen=int(training.get("examples_seen", 0)), compute=float(training["train_flops"]),
        error=1.0 - float(value), se=results.metric_se(r["metrics"][r["headline"]["metric"]])))
  return out


def scaling_tasks(records: Iterable[dict], min_points: int = 3) -> list[str]:
  """Tasks with at least `min_points` scaling points at distinct compute."""
  records = list(records)
  names = sorted({r["task"]["name"] for r in records})
  return [t for t in names if len({p.compute for p in points(records, t)}) >= min_points]


# ----------------------------------------------------------------------------------------------------------------------
# Frontier and law.


def pareto_frontier(compute, error) -> np.ndarray:
  """Indices of the Pareto-optimal points in increasing compute: each has lower error than every point of less or
  equal compute (of equal-compute points only the best can qualify)."""
  compute, error = np.asarray(compute, float), np.asarray(error, float)
  order = np.lexsort((error, compute))  # by compute, then error
  keep, best = [], math.inf
  for i in order:
    if error[i] < best:
      keep.append(int(i))
      best = error[i]
  return np.array(keep, dtype=int)


def law(compute, a: float, b: float, c: float, d: float):
  """E = a·(C + d)^(−b) + c."""
  return a * (np.asarray(compute, float) + d) ** (-b) + c


@dataclasses.dataclass
class LawFit:
  a: float
  b: float
  c: float
  d: float
  r2: float
  rmse: float
  n: int
  ci95: dict[str, tuple[float, float]]  # residual-bootstrap percentile intervals
  bootstrap_samples: int
  # Per parameter, the fraction of bootstrap refits that ended on a bound of the search box: a parameter the data
  # do not pin down (e.g. the floor c when no point is near saturation) shows it here, and its interval is open.
  at_bound: dict[str, float] = dataclasses.field(default_factory=dict)

  def identified(self, name: str, tolerance: float = 0.05) -> bool:
    return self.at_bound.get(name, 0.0) <= tolerance

  def predict(self, x):
    return law(x, self.a, self.b, self.c, self.d)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


# Fitting happens in scaled units x = C / s (s = the smallest C) with θ = (log a', b, c, log d'), so all four
# unknowns are O(1); E = a'·(x + d')^(−b) + c gives a = a'·s^b and d = s·d'.
def _curve(theta, x):
  log_a, b, c, log_d = theta
  return np.exp(log_a) * (x + np.exp(log_d)) ** (-b) + c


def _jacobian(theta, x):
  """∂E/∂θ, analytic (least_squares would otherwise spend four extra evaluations per step on differences)."""
  log_a, b, _, log_d = theta
  a, d = np.exp(log_a), np.exp(log_d)
  power = a * (x + d) ** (-b)
  return np.stack([power, -power * np.log(x + d), np.ones_like(x), -b * power * d / (x + d)], axis=1)


def _bounds(x, e):
  """a' free; 0 < b ≤ 5; the floor c between 0 and the lowest measured error; d' from ≈ 0 to 1000× the range."""
  lower = [-50.0, 1e-3, 0.0, math.log(1e-6)]
  upper = [50.0, 5.0, float(e.min()), math.log(1e3 * float(x.max()))]
  return lower, upper


def _least_squares(x, e, theta0):
  lower, upper = _bounds(x, e)
  theta0 = np.clip(theta0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
  return optimize.least_squares(lambda t: _curve(t, x) - e, theta0, jac=lambda t: _jacobian(t, x),
                                bounds=(lower, upper), method="trf", x_scale="jac", max_nfev=2000)


def _starts(x, e):
  """Starting points over plausible shapes; a' puts the curve through the first point."""
  for b in (0.1, 0.3, 1.0):
    for d in (1e-3, 1.0, float(x.max())):
      for c in (0.0, 0.5 * e.min(), 0.9 * e.min()):
        a = max(e[0] - c, 1e-6) * (x[0] + d) ** b
        yield np.array([math.log(a), b, c, math.log(d)])


def _best_fit(x, e, starts):
  best = None
  for theta0 in starts:
    try:
      res = _least_squares(x, e, theta0)
    except (ValueError, FloatingPointError):
      continue
    if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
      best = res
  return best


def fit_law(compute, error, *, bootstrap: int = 1000, seed: int = 0) -> LawFit:
  """Least-squares fit of E = a·(C + d)^(−b) + c, with residual-bootstrap 95% CIs.

  Bootstrap: the fitted values plus residuals resampled with replacement (inflated by sqrt(n / (n − 4)) for the
  four fitted parameters), refitted from the point estimate; CIs are the 2.5/97.5 percentiles of each parameter.
  """
  x_raw, e = np.asarray(compute, float), np.asarray(error, float)
  if len(x_raw) < MIN_FIT_POINTS:
    raise FitError(f"{len(x_raw)} points; the 4-parameter law needs at least {MIN_FIT_POINTS}")
  order = np.argsort(x_raw)
  x_raw, e = x_raw[order], e[order]
  scale = float(x_raw[0])
  x = x_raw / scale
  best = _best_fit(x, e, _starts(x, e))
  if best is None:
    raise FitError("no starting point converged")
  fitted = _curve(best.x, x)
  residuals = e - fitted
  n = len(e)
  params = _unscale(best.x, scale)
  ss_tot = float(((e - e.mean()) ** 2).sum())
  r2 = 1.0 - float((residuals**2).sum()) / ss_tot if ss_tot > 0 else float("nan")

  rng = np.random.default_rng(seed)
  inflated = residuals * math.sqrt(n / (n - 4)) if n > 4 else residuals
  draws, active = [], []
  for _ in range(bootstrap):
    e_star = fitted + rng.choice(inflated, size=n, replace=True)
    res = _best_fit(x, e_star, [best.x])
    if res is not None:
      draws.append(_unscale(res.x, scale))
      active.append(res.active_mask != 0)
  ci, at_bound = {}, {}
  if draws:
    arr = np.array([[p[k] for k in "abcd"] for p in draws])
    for j, k in enumerate("abcd"):
      ci[k] = (float(np.percentile(arr[:, j], 2.5)), float(np.percentile(arr[:, j], 97.5)))
      at_bound[k] = float(np.mean([a[j] for a in active]))
  return LawFit(**params, r2=r2, rmse=float(np.sqrt((residuals**2).mean())), n=n, ci95=ci,
                bootstrap_samples=len(draws), at_bound=at_bound)


def _unscale(theta, scale: float) -> dict[str, float]:
  log_a, b, c, log_d = (float(v) for v in theta)
  return {"a": math.exp(log_a) * scale**b, "b": b, "c": c, "d": math.exp(log_d) * scale}


# ----------------------------------------------------------------------------------------------------------------------
# Per-model views and the paper's claims.


def models_by_size(pts: list[Point]) -> list[str]:
  sizes = {}
  for p in pts:
    sizes[p.model] = p.params
  return sorted(sizes, key=lambda m: (sizes[m], m))


def data_curves(pts: list[Point]) -> dict[str, list[Point]]:
  """{model: points at increasing upstream data size}, each at the longest training of its (model, data size)."""
  longest = {}
  for p in pts:
    key = (p.model, p.data_size)
    if key not in longest or p.examples_seen > longest[key].examples_seen:
      longest[key] = p
  return {m: sorted((p for (mm, _), p in longest.items() if mm == m), key=lambda p: p.data_size)
          for m in models_by_size(pts)}


def _diff_se(p: Point, q: Point) -> float:
  return math.sqrt((p.se or 0.0) ** 2 + (q.se or 0.0) ** 2)


@dataclasses.dataclass
class Claim:
  claim: str
  verdict: str  # holds | does not hold | mixed | inconclusive (within noise) | not testable
  evidence: str


def _sample_efficiency(pts: list[Point], models: list[str]) -> Claim:
  """At equal data size and examples seen, does the next larger model reach lower error?"""
  claim = "larger models are more sample-efficient (lower error at equal examples seen)"
  at = {(p.model, p.data_size, p.examples_seen): p for p in pts}
  tally = {"larger better (significant)": 0, "larger better (within noise)": 0, "smaller better (within noise)": 0,
           "smaller better (significant)": 0}
  reversals = []
  for small, large in zip(models, models[1:]):
    for (m, n, seen), p in at.items():
      q = at.get((large, n, seen))
      if m != small or q is None:
        continue
      delta, z = p.error - q.error, 1.96 * _diff_se(p, q)
      significant = abs(delta) > z > 0
      if delta == 0:
        tally["equal"] = tally.get("equal", 0) + 1
        continue
      side = "larger better" if delta > 0 else "smaller better"
      tally[f"{side} ({'significant' if significant else 'within noise'})"] += 1
      if significant and delta < 0:
        reversals.append(f"{small} over {large} at n={n}, {seen:,} seen ({100 * -delta:.1f} points)")
  total = sum(tally.values())
  if not total:
    return Claim(claim, "not testable", "no two model sizes share a data size and training length")
  share = (tally["larger better (significant)"] + tally["larger better (within noise)"]) / total
  verdict = ("holds" if share >= 0.75 and tally["larger better (significant)"] and len(reversals) <= 0.1 * total
             else "does not hold" if share <= 0.25 and reversals else "mixed")
  evidence = f"{total} comparisons of adjacent sizes: " + ", ".join(f"{k} {v}" for k, v in tally.items())
  if reversals:
    evidence += "; significant reversals: " + "; ".join(reversals)
  return Claim(claim, verdict, evidence)


def _gain_claim(claim: str, gains: dict[str, tuple[float, float]], what: str) -> Claim:
  """Gains (error drop, its se) per model in increasing size: the claim holds if they increase with size and the
  largest model's gain exceeds the smallest's beyond noise (1.96 se); it fails if they decrease likewise."""
  if len(gains) < 2:
    return Claim(claim, "not testable", f"needs two model sizes with {what}")
  values = [g for g, _ in gains.values()]
  text = "; ".join(f"{m} {100 * g:+.1f} ± {100 * s:.1f}" for m, (g, s) in gains.items())
  (g_small, s_small), (g_large, s_large) = gains[next(iter(gains))], gains[list(gains)[-1]]
  span = f"largest − smallest model {100 * (g_large - g_small):+.1f} ± {100 * math.hypot(s_small, s_large):.1f}"
  increasing = all(b > a for a, b in zip(values, values[1:]))
  decreasing = all(b < a for a, b in zip(values, values[1:]))
  significant = abs(g_large - g_small) > 1.96 * math.hypot(s_small, s_large)
  if increasing or decreasing:
    verdict = ("inconclusive (within noise)" if not significant else "holds" if increasing else "does not hold")
  else:
    verdict = "mixed"
  return Claim(claim, verdict, f"error drop (points ± se) from {what}, smallest to largest model: {text}; {span}")


def claims(pts: list[Point]) -> list[Claim]:
  models = models_by_size(pts)
  out = [_sample_efficiency(pts, models)]
  data_gain = {}
  for m, curve in data_curves(pts).items():
    if len(curve) >= 2:
      data_gain[m] = (curve[0].error - curve[-1].error, _diff_se(curve[0], curve[-1]))
  out.append(_gain_claim("small models saturate; larger models gain more from more upstream data", data_gain,
                         "the smallest to the largest upstream data size (longest training)"))
  length_gain = {}
  for m in models:
    biggest = max(p.data_size for p in pts if p.model == m)
    by_len = sorted((p for p in pts if p.model == m and p.data_size == biggest), key=lambda p: p.examples_seen)
    if len(by_len) >= 2:
      length_gain[m] = (by_len[-2].error - by_len[-1].error, _diff_se(by_len[-2], by_len[-1]))
  out.append(_gain_claim("small models saturate; larger models gain more from longer training", length_gain,
                         "the second-longest to the longest training (largest data size)"))
  return out


# ----------------------------------------------------------------------------------------------------------------------
# One task's analysis, as a report sees it.


@dataclasses.dataclass(eq=False)  # identity: a study is one analysis (and a key of the view's figure cache)
class TaskScaling:
  task: str
  metric: str
  points: list[Point]
  frontier: list[Point]
  fit: LawFit | None
  fit_note: str  # why there is no fit, if there is none
  data_fits: dict[str, LawFit]  # model -> fit of error vs data size (models with ≥ MIN_FIT_POINTS sizes)
  claims: list[Claim]

  def to_dict(self) -> dict:
    return {"task": self.task, "metric": self.metric, "points": [dataclasses.asdict(p) for p in self.points],
            "frontier": [p.checkpoint for p in self.frontier], "fit": self.fit.to_dict() if self.fit else None,
            "fit_note": self.fit_note, "data_fits": {m: f.to_dict() for m, f in self.data_fits.items()},
            "claims": [dataclasses.asdict(c) for c in self.claims]}


def analyze(records: list[dict], task: str, *, bootstrap: int = 1000, seed: int = 0) -> TaskScaling:
  pts = points(records, task)
  metric = next(r["headline"]["metric"] for r in records if r["task"]["name"] == task)
  idx = pareto_frontier([p.compute for p in pts], [p.error for p in pts])
  frontier = [pts[i] for i in idx]
  fit, note = None, ""
  try:
    fit = fit_law([p.compute for p in frontier], [p.error for p in frontier], bootstrap=bootstrap, seed=seed)
  except FitError as e:
    note = f"not fitted: the frontier has {e}"
  data_fits = {}
  for m, curve in data_curves(pts).items():
    if len(curve) >= MIN_FIT_POINTS:
      try:
        data_fits[m] = fit_law([p.data_size for p in curve], [p.error for p in curve], bootstrap=bootstrap, seed=seed)
      except FitError as e:
        note += f"{'; ' if note else ''}{m}: error vs data size not fitted ({e})"
  return TaskScaling(task, metric, pts, frontier, fit, note, data_fits, claims(pts))


def analyze_all(records: list[dict], *, bootstrap: int = 1000, seed: int = 0) -> list[TaskScaling]:
  return [analyze(records, t, bootstrap=bootstrap, seed=seed) for t in scaling_tasks(records)]
