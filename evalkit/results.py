"""Result records: one JSON file per (checkpoint, task), written atomically, with full provenance.

Schema `evalkit.result/3` (README.md, "Result files"; `Record` below):
  schema, checkpoint{name, kind, path, format, weights_hash, model, featurizer, card, training},
  task{name, spec_hash, spec, dataset}, protocol, headline{metric, value}, metrics{<name>: Metric},
  details (the protocol's own: few-shot episodes and loo_l2_grid; fine-tune chosen_lr and lr_curve; ...),
  published{<metric>: accuracy} (the checkpoint card's published numbers for this very task spec), extra_tests,
  data, manifest (file name of the training-set manifest), items (file name of the per-test-item predictions, .npz),
  provenance{evalkit, git_sha, jax, flax, devices, ...}, timings{...}.
Records are the contract between evaluation and everything after it: reports and analyses read what a record says
and nothing else (no task spec, no card). Every metric has one shape, whatever the protocol: {value, se, ci95, n}
plus the protocol's extras (per_seed, std, loo; `shots` on a k-shot metric). Items are one layout: `episodes` (E
names: "10shot/seed0", ..., or "top1", "top1_polyak") × test items (`predictions` E × n, `test_ids`,
`test_labels`); the episodes of a metric are those named `<metric>` or `<metric>/...`. Files of `evalkit.result/1`
and `/2` are read and upgraded on load. Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import os
import platform
import re
import subprocess
from pathlib import Path

from typing import TypedDict

import evalkit
import numpy as np

from evalkit import fileio
from evalkit.errors import EvalkitError

SCHEMA = "evalkit.result/3"
OLDER_SCHEMAS = ("evalkit.result/1", "evalkit.result/2")
# The keys every record has, whatever its protocol; /1 and /2 records put the protocol's details beside them.
_SKELETON = ("schema", "checkpoint", "task", "protocol", "headline", "metrics", "details", "published",
             "extra_tests", "data", "manifest", "items", "provenance", "timings", "sidecar_sha256", "upgraded_from")
_K_SHOT = re.compile(r"(\d+)shot")


class Metric(TypedDict, total=False):
  value: float  # the estimate (few-shot: mean over seeds)
  se: float  # its standard error
  ci95: list[float]  # 95% interval
  n: int  # test items scored


class Record(TypedDict, total=False):
  schema: str
  checkpoint: dict
  task: dict
  protocol: str
  headline: dict  # {metric, value}
  metrics: dict[str, Metric]
  details: dict
  published: dict[str, float]
  extra_tests: dict
  data: dict
  manifest: str
  items: str
  provenance: dict
  timings: dict


def result_path(results_dir: str | os.PathLike, checkpoint_name: str, task_name: str) -> Path:
  """`<results_dir>/<checkpoint>/<task>.json`; names that are not safe file names are refused (fileio.safe_name)."""
  folder = fileio.child(results_dir, checkpoint_name, what="checkpoint name")
  return fileio.child(folder, fileio.safe_name(task_name, "task name") + ".json", what="task name")


def manifest_path(result_file: Path) -> Path:
  return result_file.with_name(result_file.stem + ".episodes.json")


def items_path(result_file: Path) -> Path:
  return result_file.with_name(result_file.stem + ".items.npz")


def write(path: Path, record: dict, manifest: dict | None = None, items: dict | None = None) -> None:
  """Sidecars first, then the result, which records their sha256: the result file is the completeness marker.

  A result on disk always comes with complete sidecars, and a sidecar that does not match its result's hash (a kill
  between an `--overwrite` run's sidecar and result writes, a hand edit) is detected by `check_complete`.
  `items` holds per-test-item outcomes (arrays: test ids, labels, predictions per episode / model), so that two
  checkpoints can later be compared item by item on identical episodes.
  """
  hashes = {}
  if manifest is not None:
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    fileio.atomic_write(manifest_path(path), lambda f: f.write(data))
    record, hashes["manifest"] = {**record, "manifest": manifest_path(path).name}, hashlib.sha256(data).hexdigest()
  if items is not None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **items)
    data = buffer.getvalue()
    fileio.atomic_write(items_path(path), lambda f: f.write(data))
    record, hashes["items"] = {**record, "items": items_path(path).name}, hashlib.sha256(data).hexdigest()
  fileio.atomic_write_json(path, {**record, "sidecar_sha256": hashes} if hashes else record)


class BadResult(EvalkitError, ValueError):
  """A file in a results directory that is not a readable, well-formed evalkit result."""


class IncompleteResult(BadResult):
  """A result file whose sidecars are missing or do not match it."""


def check_complete(path: str | os.PathLike) -> Record:
  """The record at `path` if it and its sidecars are whole and consistent; IncompleteResult (or ValueError for an
  unreadable file) otherwise. Files written before hashes were recorded are checked for presence only."""
  record = load(path)
  for kind, sidecar in (("manifest", manifest_path), ("items", items_path)):
    if kind not in record:
      continue
    file = sidecar(Path(path))
    if not file.exists():
      raise IncompleteResult(f"{path}: its {kind} file {file.name} is missing (rerun `evalkit eval --overwrite`)")
    expected = record.get("sidecar_sha256", {}).get(kind)
    if expected is not None and fileio.file_sha256(file) != expected:
      raise IncompleteResult(f"{path}: its {kind} file {file.name} does not match the result (an interrupted or "
                             "edited write); rerun `evalkit eval --overwrite`")
  return record


def is_complete(path: str | os.PathLike) -> bool:
  try:
    check_complete(path)
    return True
  except (OSError, ValueError):
    return False


def make_items(test_ids, test_labels, episodes: list[str], predictions,
               top_classes=None) -> dict[str, np.ndarray]:
  """The per-test-item layout of every adapter: E episodes × n test items of predicted labels, and where scores
  exist `top_classes` (E × n × k: the k highest-scoring classes, best first, for top-k metrics)."""
  items = {"test_ids": np.asarray(test_ids), "test_labels": np.asarray(test_labels).astype(np.int32),
           "episodes": np.array(episodes), "predictions": np.stack(predictions).astype(np.int32)}
  if top_classes is not None:
    items["top_classes"] = np.stack(top_classes).astype(np.int32)
  return items


def episodes_of(items: dict, metric: str) -> list[int]:
  """Rows of `items["predictions"]` that a metric averages: episodes named `metric` or `metric/...`."""
  return [i for i, key in enumerate(items["episodes"]) if str(key) == metric or str(key).startswith(metric + "/")]


def build_record(task, outcome, timings: dict | None = None, published: dict | None = None) -> Record:
  """The result record of one adapter run (`adapters.Outcome`) on `task`: the same skeleton for every protocol.
  `published`: the card's published accuracies for this task's metrics (fractions), shown beside ours in reports."""
  metrics = outcome.metrics
  return {
      "schema": SCHEMA,
      "checkpoint": outcome.checkpoint,
      "task": {"name": task.name, "spec_hash": task.spec_hash, "spec": task.spec(), "dataset": outcome.dataset},
      "protocol": task.protocol,
      "headline": {"metric": task.headline_metric, "value": metrics.get(task.headline_metric, {}).get("value")},
      "metrics": metrics,
      "details": outcome.details,
      "published": published or {},
      **({"extra_tests": outcome.extra_tests} if outcome.extra_tests else {}),
      "data": outcome.data,
      "provenance": provenance(),
      "timings": {**outcome.timings, **(timings or {})},
  }


def load_items(result_file: str | os.PathLike) -> dict[str, np.ndarray]:
  """The per-item predictions of a result, checked against the hash its result file recorded."""
  check_complete(result_file)
  with np.load(items_path(Path(result_file)), allow_pickle=False) as z:
    items = {k: z[k] for k in z.files}
  if "episodes" not in items:  # evalkit.result/1 fine-tune items: predictions_<metric> per model
    keys = [k.removeprefix("predictions_") for k in sorted(items) if k.startswith("predictions_")]
    items = make_items(items["test_ids"], items["test_labels"], keys, [items[f"predictions_{k}"] for k in keys])
  return items


def _upgrade(record: dict) -> Record:
  """An `evalkit.result/1` or `/2` record in the /3 shape: /1 few-shot metrics had `mean` where every metric now has
  `value`; the protocol's details stood beside the skeleton, not under `details`; k-shot metrics did not say their
  shots (their names did); published numbers were not recorded (`evalkit report` looks them up in the cards)."""
  # Malformed files are left for `_shape_problem` to name: only well-formed parts are upgraded here.
  extras = record.get("extra_tests")
  tables = [record.get("metrics")] + [e.get("metrics") for e in (extras.values() if isinstance(extras, dict) else ())
                                      if isinstance(e, dict)]
  for table in (t for t in tables if isinstance(t, dict)):
    for name, m in ((k, m) for k, m in table.items() if isinstance(m, dict)):
      for entry in (m, m.get("loo")):
        if isinstance(entry, dict) and "mean" in entry:
          entry["value"] = entry.pop("mean")
      k_shot = _K_SHOT.fullmatch(name.partition(".")[0])
      if k_shot:
        m["shots"] = int(k_shot.group(1))
  n = record["data"].get("n_test") if isinstance(record.get("data"), dict) else None
  if n is not None and isinstance(record.get("metrics"), dict):
    for m in record["metrics"].values():
      if isinstance(m, dict):
        m.setdefault("n", n)
  details = {key: record.pop(key) for key in list(record) if key not in _SKELETON}
  return {**record, "details": details, "schema": SCHEMA, "upgraded_from": record["schema"]}


def load(path: str | os.PathLike) -> Record:
  """A result record (any schema), as `evalkit.result/3`; ValueError for anything else."""
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
    raise BadResult(f"{path}: not a readable result file ({' '.join(str(e).split())})") from None
  schema = record.get("schema") if isinstance(record, dict) else None
  if schema in OLDER_SCHEMAS:
    record = _upgrade(record)
  elif schema != SCHEMA:
    raise BadResult(f"{path}: not an evalkit result (schema {schema!r}, expected {SCHEMA!r})")
  problem = _shape_problem(record)
  if problem:
    raise BadResult(f"{path}: malformed evalkit result ({problem}); rerun `evalkit eval --overwrite` for it")
  return record


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _shape_problem(record: dict) -> str | None:
  """What readers (report, gate, compare) rely on: names, a task spec hash, and metrics with numeric values in
  range; None when the record has it."""
  for section in ("checkpoint", "task"):
    if not isinstance(record.get(section), dict) or not isinstance(record[section].get("name"), str):
      return f"no {section}.name"
    if not fileio.is_safe_name(record[section]["name"]):  # names become file names in reports
      return f"{section}.name {record[section]['name']!r} is not a safe name"
  if not isinstance(record["task"].get("spec_hash"), str):
    return "no task.spec_hash"
  metrics = record.get("metrics")
  if not isinstance(metrics, dict):
    return "no metrics table"
  published = record.get("published", {})
  if not isinstance(published, dict) or not all(_is_number(v) and 0.0 <= v <= 1.0 for v in published.values()):
    return "published numbers are not accuracies in [0, 1]"
  for name, m in metrics.items():
    if not isinstance(m, dict) or not _is_number(m.get("value")) or not math.isfinite(m["value"]):
      return f"metric {name!r} has no finite value"
    if not 0.0 <= m["value"] <= 1.0:  # every metric is an accuracy (a fraction)
      return f"metric {name!r} = {m['value']} is not an accuracy in [0, 1]"
    se = m.get("se")
    if se is not None and not (_is_number(se) and 0.0 <= se <= 1.0):
      return f"metric {name!r} has standard error {se!r}, not in [0, 1]"
  return None


def result_files(results_dir: str | os.PathLike, checkpoint_name: str = "*") -> list[Path]:
  """Result JSON files of one checkpoint (by its name as given to `result_path`), or of all with "*"."""
  folder = "*" if checkpoint_name == "*" else fileio.safe_name(checkpoint_name, "checkpoint name")
  return [p for p in sorted(Path(results_dir).glob(f"{folder}/*.json")) if not p.name.endswith(".episodes.json")]


def load_all(results_dir: str | os.PathLike) -> list[dict]:
  return [load(p) for p in result_files(results_dir)]


def metric_se(metric: dict) -> float:
  """Standard error of a metric entry: its `se`; for fine-tune results written before `se` was recorded, from the
  width of their percentile-bootstrap 95% CI (≈ normal). Few-shot `ci95` are Student t intervals, so they always
  carry `se` and are never converted."""
  if "se" in metric:
    return float(metric["se"])
  if "ci95" in metric and "value" in metric:
    return (metric["ci95"][1] - metric["ci95"][0]) / (2 * 1.96)
  raise BadResult(f"metric {sorted(metric)} has no standard error: re-run `evalkit eval --overwrite`")


def _git_sha() -> str | None:
  repo = Path(evalkit.__file__).resolve().parents[1]
  try:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def provenance() -> dict:
  import flax
  import jax
  devices = jax.devices()
  return {
      "evalkit": evalkit.__version__,
      "git_sha": _git_sha(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "python": platform.python_version(),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
