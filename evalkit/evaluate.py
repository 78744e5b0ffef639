"""The orchestrator: for one subject and a list of tasks, adapter = adapters.get(task.protocol); outcome =
adapter.run(...); record = results.build_record(...); write — one result file per (subject, task), atomically,
finished ones skipped. It knows no protocol: everything protocol-specific lives in the adapter modules.
"""
from __future__ import annotations

import logging
import time

import jax

from evalkit import results, tasks
from evalkit.adapters import EvalSettings
from evalkit.data.errors import DatasetNotPrepared, DatasetUnreadable
from evalkit.subjects import Subject

log = logging.getLogger(__name__)


def evaluate_task(subject: Subject, task: tasks.Task, settings: EvalSettings, mesh,
                  **adapter_kw) -> tuple[results.Record, dict | None, dict | None]:
  """One task through its adapter; returns (record, manifest, items), nothing written."""
  t0 = time.perf_counter()
  outcome = task.adapter.run(subject, task, settings, mesh, **adapter_kw)
  record = results.build_record(task, outcome, {"total_s": time.perf_counter() - t0})
  return record, outcome.manifest, outcome.items


def run(subject: Subject, task_list: list[tasks.Task], settings: EvalSettings, mesh) -> list[tuple[str, str, str]]:
  """Evaluates every task; returns (task, status, detail) rows. A dataset error of one task does not stop the
  others; a bad checkpoint stops all."""
  rows = []
  for task in task_list:
    path = results.result_path(settings.results_dir, subject.name, task.name)
    if path.exists() and not settings.overwrite:
      rows.append((task.name, "skipped", f"{path} exists (use --overwrite)"))
      continue
    try:
      record, manifest, items = evaluate_task(subject, task, settings, mesh)
    except (DatasetNotPrepared, DatasetUnreadable) as e:
      rows.append((task.name, "error", str(e)))
      continue
    if jax.process_index() == 0:
      results.write(path, record, manifest, items)
    value = record["headline"]["value"]
    shown = "no result (every lr diverged)" if value is None else f"{100 * value:.2f}%"
    rows.append((task.name, "done", f"{record['headline']['metric']} {shown} -> {path}"))
    log.info("%s / %s: %s", subject.name, task.name, rows[-1][2])
  return rows


__all__ = ["EvalSettings", "evaluate_task", "run"]
