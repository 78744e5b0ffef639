"""The scaling study's report on a results directory: the law fitted per task (analysis.scaling), its tables and
figures (report.scaling_view) and the leaderboard beside them — what `evalkit scaling fit` writes, and
`evalkit scaling sweep` after its last cell."""
from __future__ import annotations

import os
from pathlib import Path

import jax

from evalkit import evaluate, results
from evalkit.analysis import scaling
from evalkit.errors import EvalkitError
from evalkit.report import leaderboard, scaling_view


class NoScalingResults(EvalkitError):
  """A results directory without the checkpoints a scaling law needs."""


def write(results_dir: str | os.PathLike, out: str | os.PathLike, *,
          bootstrap: int) -> tuple[list[scaling.TaskScaling], dict[str, Path]]:
  """(the per-task studies, the files written); files are written by process 0 only (none elsewhere)."""
  records = evaluate.with_published(results.load_all(results_dir))
  studies = scaling.analyze_all(records, bootstrap=bootstrap)
  if not studies:
    raise NoScalingResults(f"no scaling results in {results_dir}: every task needs checkpoints with training compute "
                           "in their cards (from `evalkit pretrain` / `evalkit scaling sweep`) at ≥ 3 compute values")
  paths = {}
  if jax.process_index() == 0:  # one writer in multi-process runs
    paths = scaling_view.write(studies, out)
    paths["html"] = leaderboard.write(results_dir, out, studies=studies, records=records)["html"]
  return studies, paths
