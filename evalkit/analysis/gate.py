"""CI regression gate: non-inferiority of new results against a baseline, with margins from the measured noise.

A baseline lists, per (checkpoint, task, metric), the value, its standard error and the task-spec hash. A new result
passes when  new ≥ baseline − (z · sqrt(se_baseline² + se_new²) + tolerance):  the margin is what the two
measurements' own noise (episode draws and test-item sampling for few-shot, test-item bootstrap for fine-tuning)
allows, plus an optional absolute tolerance. z defaults to 1.645 (one-sided 95%).

Exit codes of `evalkit gate`: 0 pass, 1 regression, 2 usage error or missing / incomparable results.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from evalkit import results
from evalkit.errors import EvalkitError

SCHEMA = "evalkit.baseline/1"
DEFAULT_Z = 1.645


def _metric_entries(record: dict) -> list[dict]:
  """(metric, value, se) of every metric of a result record (results.Metric: the same shape for every protocol)."""
  out = []
  for metric, m in record["metrics"].items():
    value = m.get("value")
    if value is not None:
      out.append({"metric": metric, "value": value, "se": results.metric_se(m)})
  return out


def make_baseline(results_dir) -> dict:
  entries = []
  for r in results.load_all(results_dir):
    for e in _metric_entries(r):
      entries.append({"checkpoint": r["checkpoint"]["name"], "task": r["task"]["name"],
                      "spec_hash": r["task"]["spec_hash"], **e})
  return {"schema": SCHEMA, "entries": entries}


@dataclasses.dataclass
class Check:
  checkpoint: str
  task: str
  metric: str
  status: str  # pass | regression | missing | incomparable
  baseline: float | None = None
  new: float | None = None
  margin: float | None = None


class BadBaseline(EvalkitError, ValueError):
  """A baseline file that is not one `evalkit baseline` writes, or holds values no accuracy can have."""


def load_baseline(path) -> dict:
  """A baseline file, validated: every entry names a checkpoint, task and metric, with a value in [0, 1] and a
  standard error in [0, 1] (a gate must never pass on absurd numbers)."""
  try:
    baseline = json.loads(Path(path).read_text())
  except (OSError, ValueError, RecursionError) as e:
    raise BadBaseline(f"baseline {path}: not readable JSON ({' '.join(str(e).split())[:200]})") from None
  check_baseline(baseline, path)
  return baseline


def check_baseline(baseline, where="baseline") -> None:
  if not isinstance(baseline, dict) or baseline.get("schema") != SCHEMA:
    schema = baseline.get("schema") if isinstance(baseline, dict) else None
    raise BadBaseline(f"{where}: not an evalkit baseline (schema {schema!r}, expected {SCHEMA!r}; write one with "
                      "`evalkit baseline`)")
  if not isinstance(baseline.get("entries"), list):
    raise BadBaseline(f"{where}: no `entries` list (write one with `evalkit baseline`)")
  for i, e in enumerate(baseline["entries"]):
    ok = (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("checkpoint", "task", "metric", "spec_hash"))
          and all(isinstance(e.get(k), (int, float)) and not isinstance(e.get(k), bool) for k in ("value", "se")))
    if not ok or not (0.0 <= e["value"] <= 1.0 and 0.0 <= e["se"] <= 1.0):
      raise BadBaseline(f"{where}: entry {i} is not {{checkpoint, task, metric, spec_hash, value in [0, 1], se in "
                        f"[0, 1]}}: {json.dumps(e)[:200]}")


def run_gate(baseline: dict, results_dir, *, z: float = DEFAULT_Z, tolerance: float = 0.0) -> list[Check]:
  check_baseline(baseline)
  if not (math.isfinite(z) and z >= 0 and math.isfinite(tolerance) and 0 <= tolerance < 1):
    raise BadBaseline(f"gate margin: z must be ≥ 0 and tolerance in [0, 1), got z={z}, tolerance={tolerance}")
  found = {(r["checkpoint"]["name"], r["task"]["name"]): r for r in results.load_all(results_dir)}
  checks = []
  for b in baseline["entries"]:
    check = Check(b["checkpoint"], b["task"], b["metric"], "missing", baseline=b["value"])
    record = found.get((b["checkpoint"], b["task"]))
    new = {e["metric"]: e for e in _metric_entries(record)}.get(b["metric"]) if record else None
    if record is not None and record["task"]["spec_hash"] != b["spec_hash"]:
      check.status = "incomparable"
    elif new is not None:
      check.new = new["value"]
      check.margin = z * math.hypot(b["se"], new["se"]) + tolerance
      check.status = "pass" if new["value"] >= b["value"] - check.margin else "regression"
    checks.append(check)
  return checks


def exit_code(checks: list[Check]) -> int:
  statuses = {c.status for c in checks}
  if statuses & {"missing", "incomparable"} or not checks:
    return 2
  return 1 if "regression" in statuses else 0


def undecided(checks: list[Check], results_dir) -> str:
  """Why the gate cannot decide (exit code 2), in one line: what is missing or was computed under another spec."""
  counts = {s: sum(c.status == s for c in checks) for s in ("missing", "incomparable")}
  return (f"gate cannot decide: {counts['missing']} baseline metric(s) missing and {counts['incomparable']} "
          f"computed under another task spec in {results_dir} (table above); rerun the evaluations, or write a new "
          "baseline for a changed spec")


def markdown(checks: list[Check]) -> str:
  """A table fit for a CI step summary (e.g. $GITHUB_STEP_SUMMARY)."""
  verdict = {0: "passed", 1: "FAILED: regression", 2: "FAILED: missing or incomparable results"}[exit_code(checks)]
  pct = lambda v: "–" if v is None else f"{100 * v:.2f}"
  lines = [f"### evalkit gate: {verdict}", "",
           "| checkpoint | task | metric | baseline % | new % | Δ | margin | status |",
           "|---|---|---|---|---|---|---|---|"]
  for c in checks:
    delta = "–" if c.new is None else f"{100 * (c.new - c.baseline):+.2f}"
    lines.append(f"| {c.checkpoint} | {c.task} | {c.metric} | {pct(c.baseline)} | {pct(c.new)} | {delta} | "
                 f"{pct(c.margin)} | {c.status} |")
  return "\n".join(lines) + "\n"
