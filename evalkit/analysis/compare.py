"""Paired comparison of two checkpoints on identical episodes and test items.

Per task (same spec hash, same test items; few-shot also the same k-shot sets), on the headline metric:
  * Δ = accuracy(A) − accuracy(B), averaged over episodes;
  * a paired bootstrap over test items (both checkpoints resampled with the same items) for a 95% CI of Δ and a
    two-sided p-value (2 · the smaller tail of the bootstrap distribution of Δ around 0);
  * McNemar's test on the discordant items (A right / B wrong vs. the reverse), counted over all episodes, with the
    continuity-corrected χ² statistic. Episodes share test items, so this count is not independent across episodes:
    the bootstrap, which resamples items, is the primary test and McNemar a familiar cross-check.
Overall: the mean Δ over the common tasks, with the per-task bootstrap variances combined.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from evalkit import metrics, results, stats
from evalkit.errors import EvalkitError


class CompareError(EvalkitError):
  """Results that cannot be compared (missing, other spec, other items); one line."""


@dataclasses.dataclass
class TaskComparison:
  task: str
  metric: str
  acc_a: float
  acc_b: float
  delta: float
  ci95: tuple[float, float]
  p_bootstrap: float
  p_mcnemar: float
  a_only: int  # items (summed over episodes) A gets right and B wrong
  b_only: int
  se: float


def _correct(result_file: Path, record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
  """(episodes × items) correctness on the headline metric, per-item weights (all 1, or the mean-per-class weights),
  the test ids, and the episode keys."""
  items = results.load_items(result_file)
  base, statistic = metrics.metric_parts(record["headline"]["metric"])
  keep = results.episodes_of(items, base)
  if not keep or (statistic == "top5" and "top_classes" not in items):
    raise CompareError(f"{result_file}: no per-item predictions for {record['headline']['metric']}")
  keys = [str(items["episodes"][i]) for i in keep]
  labels = items["test_labels"]
  if statistic == "top5":
    correct = metrics.in_top_k(items["top_classes"][keep][..., :metrics.TOP_K], labels[None])
  else:
    correct = items["predictions"][keep] == labels[None]
  weights = metrics.class_weights(labels) if statistic == "mean_per_class" else np.ones(len(labels))
  return correct, weights, items["test_ids"], keys


def mcnemar_p(a_only: int, b_only: int) -> float:
  """Two-sided p of McNemar's χ² test with continuity correction (1 degree of freedom)."""
  n = a_only + b_only
  if n == 0:
    return 1.0
  chi2 = (abs(a_only - b_only) - 1) ** 2 / n
  return math.erfc(math.sqrt(chi2 / 2))  # survival function of χ²(1)


def paired_bootstrap(ca: np.ndarray, cb: np.ndarray, weights: np.ndarray | None = None, *, resamples: int = 2000,
                     seed: int = 0):
  """Δ's bootstrap distribution, resampling test items jointly for both checkpoints and all episodes; `weights`
  per item make the item mean a mean-per-class accuracy (`metrics.class_weights`)."""
  diff = (ca.astype(np.float64) - cb).mean(axis=0)
  return stats.item_bootstrap_means(diff if weights is None else diff * weights, resamples=resamples, seed=seed)


def compare_task(file_a: Path, file_b: Path) -> TaskComparison:
  ra, rb = results.load(file_a), results.load(file_b)
  if ra["task"]["spec_hash"] != rb["task"]["spec_hash"]:
    raise CompareError(f"{file_a} and {file_b}: different task specs ({ra['task']['spec_hash']} vs "
                       f"{rb['task']['spec_hash']})")
  if ra["headline"]["metric"] != rb["headline"]["metric"]:
    raise CompareError(f"{file_a} and {file_b}: different headline metrics")
  ca, weights, ids_a, keys_a = _correct(file_a, ra)
  cb, _, ids_b, keys_b = _correct(file_b, rb)
  if not np.array_equal(ids_a, ids_b) or keys_a != keys_b:
    raise CompareError(f"{file_a} and {file_b}: not the same test items / episodes")
  ma, mb = (json.loads(results.manifest_path(f).read_text()) if results.manifest_path(f).exists() else None
            for f in (file_a, file_b))
  if ma != mb:  # e.g. other k-shot sets, another minival cut
    raise CompareError(f"{file_a} and {file_b}: the training examples differ (episode manifests)")
  boot = paired_bootstrap(ca, cb, weights)
  acc_a, acc_b = float((ca * weights).mean()), float((cb * weights).mean())
  delta = acc_a - acc_b
  lo, hi = np.quantile(boot, [0.025, 0.975])
  p_boot = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
  a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
  return TaskComparison(ra["task"]["name"], ra["headline"]["metric"], acc_a, acc_b, delta,
                        (float(lo), float(hi)), float(p_boot), mcnemar_p(a_only, b_only), a_only, b_only,
                        float(boot.std(ddof=1)))


def compare(results_dir, name_a: str, name_b: str) -> tuple[list[TaskComparison], dict]:
  files_a = {p.name: p for p in results.result_files(results_dir, name_a)}
  files_b = {p.name: p for p in results.result_files(results_dir, name_b)}
  common = sorted(files_a.keys() & files_b.keys())
  if not common:
    raise CompareError(f"no common results for {name_a!r} and {name_b!r} in {results_dir}")
  rows = [compare_task(files_a[f], files_b[f]) for f in common]
  delta = float(np.mean([r.delta for r in rows]))
  se = math.sqrt(sum(r.se**2 for r in rows)) / len(rows)
  overall = {"tasks": len(rows), "delta": delta, "ci95": (delta - 1.96 * se, delta + 1.96 * se),
             "p": math.erfc(abs(delta) / se / math.sqrt(2)) if se > 0 else float(delta == 0)}
  return rows, overall


def table(rows: list[TaskComparison], overall: dict, name_a: str, name_b: str) -> str:
  lines = [f"| task | metric | {name_a} % | {name_b} % | Δ (points) | 95% CI | p (paired bootstrap) | "
           f"p (McNemar) | A only / B only |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.task} | {r.metric} | {100 * r.acc_a:.2f} | {100 * r.acc_b:.2f} | {100 * r.delta:+.2f} | "
                 f"{100 * r.ci95[0]:+.2f} … {100 * r.ci95[1]:+.2f} | {r.p_bootstrap:.4f} | {r.p_mcnemar:.2e} | "
                 f"{r.a_only} / {r.b_only} |")
  lo, hi = overall["ci95"]
  lines.append(f"| **overall ({overall['tasks']} tasks)** | mean Δ | | | {100 * overall['delta']:+.2f} | "
               f"{100 * lo:+.2f} … {100 * hi:+.2f} | {overall['p']:.4f} | | |")
  return "\n".join(lines) + "\n"
