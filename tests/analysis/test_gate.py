"""The CI gate on real results (raw pixels, few-shot on the embedded digits): identical results pass, a drop beyond
the noise margin fails, a drop inside it passes, an explicit tolerance admits a known drop, missing results exit 2.

Drops are injected in units of the measured standard error, so the test says the same on any test-set size.
"""
import json
import math
import shutil

import pytest

from conftest import run_cli
from evalkit import results
from evalkit.analysis import gate as gate_lib

TASK = "digits"


@pytest.fixture(scope="module")
def pixel_results(data_dir, tmp_path_factory):
  """Real results and their baseline, written by the CLI."""
  out = tmp_path_factory.mktemp("gate")
  proc = run_cli("eval", "--checkpoint=pixels", f"--tasks={TASK}", f"--data_dir={data_dir}",
                 f"--results_dir={out / 'results'}", "--cache_dir=", "--noprogress")
  assert proc.returncode == 0, proc.stderr[-2000:]
  proc = run_cli("baseline", f"--results_dir={out / 'results'}", f"--out={out / 'baseline.json'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return out


def baseline_se(out, metric="10shot") -> float:
  baseline = json.loads((out / "baseline.json").read_text())
  return next(e["se"] for e in baseline["entries"] if e["metric"] == metric)


def shifted_copy(src, dst, metric, delta):
  """A copy of the results with one metric's value (and every per-seed accuracy) moved by `delta`."""
  shutil.copytree(src / "results", dst)
  path = dst / "pixels" / f"{TASK}.json"
  record = results.load(path)
  m = record["metrics"][metric]
  m["value"] += delta
  m["per_seed"] = {k: v + delta for k, v in m["per_seed"].items()}
  path.write_text(json.dumps(record))
  return dst


def gate(out, results_dir, *extra):
  return run_cli("gate", f"--baseline={out / 'baseline.json'}", f"--results_dir={results_dir}", *extra)


def test_identical_results_pass(pixel_results, tmp_path):
  proc = gate(pixel_results, pixel_results / "results", f"--summary={tmp_path / 'summary.md'}")
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  summary = (tmp_path / "summary.md").read_text()
  assert "evalkit gate: passed" in summary and f"| pixels | {TASK} | 10shot |" in summary


def test_drop_beyond_the_margin_fails(pixel_results, tmp_path):
  se = baseline_se(pixel_results)
  assert 0.005 < se < 0.05  # 3 seeds, 500 test items: a couple of points
  margin = gate_lib.DEFAULT_Z * math.hypot(se, se)
  worse = shifted_copy(pixel_results, tmp_path / "r", "10shot", -1.5 * margin)
  proc = gate(pixel_results, worse)
  assert proc.returncode == 1, proc.stdout
  assert "regression" in proc.stdout and "FAILED" in proc.stdout


def test_drop_inside_the_noise_passes_and_tolerance_admits_a_known_drop(pixel_results, tmp_path):
  se = baseline_se(pixel_results)
  slightly = shifted_copy(pixel_results, tmp_path / "r", "10shot", -0.5 * se)
  assert gate(pixel_results, slightly).returncode == 0
  margin = gate_lib.DEFAULT_Z * math.hypot(se, se)
  worse = shifted_copy(pixel_results, tmp_path / "w", "10shot", -1.5 * margin)
  assert gate(pixel_results, worse, f"--tolerance={margin}").returncode == 0


def test_missing_results_and_bad_baseline_exit_2(pixel_results, tmp_path):
  assert gate(pixel_results, tmp_path / "empty").returncode == 2
  (tmp_path / "b.json").write_text("{}")
  assert run_cli("gate", f"--baseline={tmp_path / 'b.json'}", f"--results_dir={pixel_results / 'results'}"
                 ).returncode == 2
