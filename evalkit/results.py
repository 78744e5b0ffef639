"""Result records: one JSON file per (checkpoint, task), written atomically, with full provenance.

Schema `evalkit.result/1` (documented in README.md, "Result files"):
  schema, checkpoint{name, path, format, weights_hash, model, featurizer, training (from its card, if any)},
  task{name, spec_hash, spec, dataset}, protocol, headline{metric, value},
  metrics{<k>shot: {per_seed, mean, std, loo{per_seed, mean, std, l2_reg}}},
  episodes[{shots, seed, l2_reg, accuracy, loo_l2_reg, loo_accuracy, loo_errors}], loo_l2_grid, data{...},
  manifest (file name of the episode manifest), items (file name of the per-test-item outcomes, .npz),
  provenance{evalkit, git_sha, jax, flax, devices, ...}, timings{...}.
Accuracies are fractions in [0, 1]; published anchors (percent) are converted when compared.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import evalkit
import numpy as np

from evalkit import fileio

SCHEMA = "evalkit.result/1"


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def result_path(results_dir: str | os.PathLike, checkpoint_name: str, task_name: str) -> Path:
  return Path(results_dir) / _safe(checkpoint_name) / f"{_safe(task_name)}.json"


def manifest_path(result_file: Path) -> Path:
  return result_file.with_name(result_file.stem + ".episodes.json")


def items_path(result_file: Path) -> Path:
  return result_file.with_name(result_file.stem + ".items.npz")


def write(path: Path, record: dict, manifest: dict | None = None, items: dict | None = None) -> None:
  """Sidecars first, then the result: a result file on disk always comes with its complete sidecars.

  `items` holds per-test-item outcomes (arrays: test ids, labels, predictions per episode / model), so that two
  checkpoints can later be compared item by item on identical episodes.
  """
  if manifest is not None:
    fileio.atomic_write_json(manifest_path(path), manifest)
    record = {**record, "manifest": manifest_path(path).name}
  if items is not None:
    fileio.atomic_write(items_path(path), lambda f: np.savez_compressed(f, **items))
    record = {**record, "items": items_path(path).name}
  fileio.atomic_write_json(path, record)


def load_items(result_file: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(items_path(Path(result_file))) as z:
    return {k: z[k] for k in z.files}


def load(path: str | os.PathLike) -> dict:
  with open(path) as f:
    record = json.load(f)
  if record.get("schema") != SCHEMA:
    raise ValueError(f"{path}: not an evalkit result (schema {record.get('schema')!r}, expected {SCHEMA!r})")
  return record


def result_files(results_dir: str | os.PathLike, checkpoint_name: str = "*") -> list[Path]:
  """Result JSON files of one checkpoint (by its name as given to `result_path`), or of all with "*"."""
  folder = "*" if checkpoint_name == "*" else _safe(checkpoint_name)
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
  raise ValueError(f"metric {sorted(metric)} has no standard error: re-run `evalkit eval --overwrite`")


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
