"""`evalkit pretrain`, `evalkit scaling sweep|fit`, `evalkit demo`: the stages that train models."""
from __future__ import annotations

from pathlib import Path

from evalkit.cli.common import FLAGS, UsageError, check_out_dir


def run_pretrain() -> int:
  from evalkit import distributed
  from evalkit.train import pretrain
  from evalkit.train import pretrain_configs
  if not FLAGS.config or not FLAGS.workdir:
    raise UsageError("--config and --workdir are required")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  overrides = {}
  if FLAGS.cooldown_at is not None:
    overrides["cooldown_at"] = [int(s) for s in FLAGS.cooldown_at]
  if FLAGS.total_steps is not None:
    overrides["total_steps"] = FLAGS.total_steps
  try:
    config = pretrain_configs.load(FLAGS.config, overrides)
  except ValueError as e:
    raise UsageError(str(e)) from None
  run = pretrain.build_run(config, FLAGS.workdir, data_dir=FLAGS.data_dir, progress=FLAGS.progress,
                           workers=FLAGS.workers)
  for name, path in pretrain.train(run).items():
    print(f"{name}: {path}  (card: {path}.toml)")
  return 0


def scaling_study(action: str) -> int:
  if action not in ("sweep", "fit"):
    raise UsageError(f"unknown scaling action {action!r}: use `evalkit scaling sweep` or `evalkit scaling fit`")
  if action == "sweep":
    _scaling_sweep()
  return _scaling_fit(after_sweep=action == "sweep")


def _scaling_sweep() -> None:
  from evalkit import distributed
  from evalkit.studies import sweep
  if not FLAGS.workdir or not (FLAGS.config or FLAGS.quick):
    raise UsageError("--workdir and --config (default, quick or a .toml file) or --quick are required")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  config = sweep.load("quick" if FLAGS.quick else FLAGS.config)
  rows = sweep.run_sweep(config, FLAGS.workdir, data_dir=FLAGS.data_dir, progress=FLAGS.progress)
  for row in rows:
    print(f"{row['cell']:16s} {row['status']:16s} {row['seconds']:7.0f} s")
  print(f"sweep {config.name!r}: {len(rows)} cells × {len(config.lengths())} lengths, "
        f"{sum(r['seconds'] for r in rows):.0f} s this run")


def _scaling_fit(after_sweep: bool) -> int:
  """Analyses the sweep's (--workdir) or any (--results_dir) results; writes to --out (default <workdir>/scaling)."""
  from evalkit.report import scaling_view
  from evalkit.studies import scaling_report
  results_dir = Path(FLAGS.workdir) / "results" if FLAGS.workdir else Path(FLAGS.results_dir)
  out = FLAGS.out or (Path(FLAGS.workdir) / "scaling" if FLAGS.workdir else None)
  if out is None:
    raise UsageError("--out is required with --results_dir (or pass the sweep's --workdir)")
  check_out_dir(out)
  try:
    studies, paths = scaling_report.write(results_dir, out, bootstrap=FLAGS.bootstrap_samples)
  except scaling_report.NoScalingResults as e:
    if after_sweep:  # a sweep too small for a law has still done its job
      print(e)
      return 0
    raise UsageError(str(e)) from None
  if paths:
    print("\n".join(scaling_view.markdown(s) for s in studies))
    for kind, path in paths.items():
      print(f"{kind}: {path}")
  return 0


def run_demo() -> int:
  from evalkit import demo
  return demo.main(results_dir=FLAGS.results_dir, data_dir=FLAGS.data_dir, progress=FLAGS.progress)
