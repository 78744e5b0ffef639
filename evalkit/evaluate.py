"""The orchestrator: for one subject and a list of tasks, adapter = adapters.get(task.protocol); outcome =
adapter.run(...); record = results.build_record(...); write — one result file per (subject, task), atomically,
finished ones skipped. It knows no protocol: everything protocol-specific lives in the adapter modules.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time

import jax

from evalkit import fileio, results, tasks
from evalkit.adapters import EvalSettings
from evalkit.checkpoints import cards
from evalkit.data.errors import DatasetNotPrepared, DatasetUnreadable
from evalkit.subjects import Subject

log = logging.getLogger(__name__)


def evaluate_task(subject: Subject, task: tasks.Task, settings: EvalSettings, mesh,
                  **adapter_kw) -> tuple[results.Record, dict | None, dict | None]:
  """One task through its adapter; returns (record, manifest, items), nothing written."""
  t0 = time.perf_counter()
  outcome = task.adapter.run(subject, task, settings, mesh, **adapter_kw)
  record = results.build_record(task, outcome, {"total_s": time.perf_counter() - t0},
                                published=published_numbers(subject.card, task.name, task.spec_hash))
  return record, outcome.manifest, outcome.items


@functools.lru_cache(maxsize=None)
def _registry_spec_hash(task_name: str) -> str | None:
  try:
    return tasks.load_task(task_name).spec_hash
  except tasks.TaskError:
    return None


def published_numbers(card: cards.Card | None, task_name: str, spec_hash: str) -> dict[str, float]:
  """The card's published accuracies (fractions) for the metrics of `task_name`, only when the evaluated spec is the
  registry's task of that name: a card's "<task>/<metric>" names the spec the number was measured with (resolution,
  shots, averaging), so a differently configured task of the same name (an edited spec, an out-of-tree copy) gets
  none."""
  if card is None or spec_hash != _registry_spec_hash(task_name):
    return {}
  return {metric: value / 100 for key, value in card.published.items()
          for task, _, metric in [key.partition("/")] if task == task_name}


def with_published(records: list[dict], cards_dirs=None) -> list[dict]:
  """Records written before results carried their card's published numbers (`evalkit.result/1`, `/2`), with them
  looked up in the cards now; /3 records as they are."""
  @functools.cache
  def card(name: str) -> cards.Card | None:
    try:
      return cards.load_card(name, cards_dirs)
    except cards.CardError:
      return None

  return [r if "published" in r or not r["checkpoint"].get("card") else
          {**r, "published": published_numbers(card(r["checkpoint"]["card"]), r["task"]["name"],
                                               r["task"]["spec_hash"])}
          for r in records]


def _finished(path, overwrite: bool) -> bool:
  """Whether a complete result is already at `path` (and wanted); an incomplete one is reported and redone."""
  if overwrite or not path.exists():
    return False
  try:
    results.check_complete(path)
    return True
  except ValueError as e:
    log.warning("%s; recomputing it", e)
    return False


def _task_lock(path):
  """One evaluation of a (checkpoint, task) at a time per results directory: concurrent `evalkit eval` processes
  queue, and the later one finds the result done. Multi-process runs compute every task on every process in
  lockstep (collectives), so they do not lock."""
  if jax.process_count() > 1:
    return contextlib.nullcontext()
  checkpoint_dir = path.parent
  return fileio.exclusive_lock(checkpoint_dir.parent / f".{checkpoint_dir.name}.{path.stem}.lock")


def run(subject: Subject, task_list: list[tasks.Task], settings: EvalSettings, mesh) -> list[tuple[str, str, str]]:
  """Evaluates every task; returns (task, status, detail) rows. A dataset error of one task does not stop the
  others; a bad checkpoint stops all."""
  rows = []
  for task in task_list:
    path = results.result_path(settings.results_dir, subject.name, task.name)
    with _task_lock(path):
      if _finished(path, settings.overwrite):
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
    shown = "no value" if value is None else f"{100 * value:.2f}%"
    rows.append((task.name, "done", f"{record['headline']['metric']} {shown} -> {path}"))
    log.info("%s / %s: %s", subject.name, task.name, rows[-1][2])
  return rows


__all__ = ["EvalSettings", "evaluate_task", "published_numbers", "run", "with_published"]
