"""`evalkit report`, `evalkit compare`, `evalkit baseline`, `evalkit gate`: what is done with results."""
from __future__ import annotations

import sys

from evalkit.cli.common import FLAGS, UsageError, check_out_dir, check_out_file
from evalkit.errors import EvalkitError


def write_report() -> int:
  from evalkit import evaluate, results
  from evalkit.analysis import scaling
  from evalkit.report import leaderboard
  if not FLAGS.out:
    raise UsageError("--out (a directory) is required")
  check_out_dir(FLAGS.out)
  try:
    records = evaluate.with_published(results.load_all(FLAGS.results_dir))
  except ValueError as e:
    raise UsageError(str(e)) from None
  studies = scaling.analyze_all(records, bootstrap=FLAGS.bootstrap_samples)
  for kind, path in leaderboard.write(FLAGS.results_dir, FLAGS.out, studies=studies, records=records).items():
    print(f"{kind}: {path}")
  return 0


def compare_checkpoints(a: str, b: str) -> int:
  from evalkit.analysis import compare
  try:
    rows, overall = compare.compare(FLAGS.results_dir, a, b)
  except compare.CompareError as e:
    raise UsageError(str(e)) from None
  print(compare.table(rows, overall, a, b))
  return 0


def write_baseline() -> int:
  from evalkit import fileio
  from evalkit.analysis import gate
  if not FLAGS.out:
    raise UsageError("--out is required")
  check_out_file("--out", FLAGS.out)
  baseline = gate.make_baseline(FLAGS.results_dir)
  if not baseline["entries"]:
    raise UsageError(f"no results in {FLAGS.results_dir}")
  fileio.atomic_write_json(FLAGS.out, baseline)
  print(f"baseline: {len(baseline['entries'])} metrics -> {FLAGS.out}")
  return 0


def run_gate() -> int:
  from evalkit.analysis import gate
  if not FLAGS.baseline:
    raise UsageError("--baseline is required")
  if FLAGS.summary:
    check_out_file("--summary", FLAGS.summary)
  try:  # exit 2, never 1: a gate that cannot read its inputs has not found a regression
    checks = gate.run_gate(gate.load_baseline(FLAGS.baseline), FLAGS.results_dir, z=FLAGS.z,
                           tolerance=FLAGS.tolerance)
  except EvalkitError as e:  # a bad baseline, a result file that is not an evalkit result or has no standard error
    raise UsageError(str(e)) from None
  summary = gate.markdown(checks)
  print(summary)
  if FLAGS.summary:
    with open(FLAGS.summary, "a") as f:
      f.write(summary)
  code = gate.exit_code(checks)
  if code == 2:
    print(f"evalkit: error: {gate.undecided(checks, FLAGS.results_dir)}", file=sys.stderr)
  return code
