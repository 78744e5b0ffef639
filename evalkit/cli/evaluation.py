"""`evalkit eval`, `evalkit tasks`, `evalkit checkpoints`: what is evaluated, on what."""
from __future__ import annotations

import os
import sys

from evalkit.cli.common import FLAGS, UsageError


def _model_options() -> dict:
  """The model flags as one options dict for the checkpoint's format: big_vision's fields (--variant, ...) or a timm
  architecture name (--timm_model) with its overrides (--timm_kwargs key=value, values TOML literals or bare words)."""
  import tomllib
  options = {"variant": FLAGS.variant, "pool_type": FLAGS.pool_type, "posemb": FLAGS.posemb,
             "rep_size": None if FLAGS.rep_size is None else FLAGS.rep_size or False, "timm_model": FLAGS.timm_model}
  options = {k: v for k, v in options.items() if v is not None}
  big_vision_flags = [k for k in options if k != "timm_model"]
  for item in FLAGS.timm_kwargs:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise UsageError(f"--timm_kwargs: {item!r} is not key=value")
    try:
      options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
      options[key.strip()] = value
  if FLAGS.timm_kwargs and not FLAGS.timm_model:
    raise UsageError("--timm_kwargs needs --timm_model")
  if FLAGS.timm_model and big_vision_flags:
    raise UsageError(f"give --timm_model or big_vision model flags ({', '.join(big_vision_flags)}), not both")
  return options


def run_eval() -> int:
  from evalkit import distributed, evaluate, subjects, tasks
  if not FLAGS.checkpoint:
    raise UsageError("--checkpoint is required (a card name, a path, or `pixels`)")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  task_list = [tasks.load_task(t, FLAGS.tasks_dir) for t in FLAGS.tasks]  # unknown tasks fail before any work
  subject = subjects.resolve_subject(FLAGS.checkpoint, name=FLAGS.name, model_options=_model_options(),
                                     cards_dirs=FLAGS.cards_dir, posemb_resize=FLAGS.posemb_resize)
  settings = evaluate.EvalSettings(
      data_dir=FLAGS.data_dir, results_dir=FLAGS.results_dir,
      cache_dir=os.path.expanduser(FLAGS.cache_dir) if FLAGS.cache_dir else None, batch_size=FLAGS.batch_size,
      representation=FLAGS.representation, dtype=FLAGS.dtype, loo=FLAGS.loo, overwrite=FLAGS.overwrite,
      progress=FLAGS.progress, workers=FLAGS.workers)
  rows = evaluate.run(subject, task_list, settings, distributed.data_mesh())
  failed = 0
  for task, status, detail in rows:
    if status == "error":
      failed += 1
      print(f"evalkit: error: {task}: {detail}", file=sys.stderr)
    else:
      print(f"{subject.name} / {task}: {status}: {detail}")
  return 1 if failed else 0


def list_tasks() -> int:
  from evalkit import tasks
  from evalkit.data import source
  for name, task in sorted(tasks.registry(FLAGS.tasks_dir).items()):
    print(f"{name:24s} {task.protocol:14s} {source.availability(task.dataset, FLAGS.data_dir):28s} {task.description}")
  return 0


def list_checkpoints() -> int:
  from evalkit.checkpoints import cards
  for card in cards.list_cards(FLAGS.cards_dir):
    state = "available" if card.available() else "missing file"
    print(f"{card.name:24s} {state:13s} {card.resolved_path()}  {card.description}")
  return 0
