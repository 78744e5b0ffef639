"""The CI gate: identical results pass, an injected 3-point drop fails, a drop inside the noise passes."""
import json
import shutil

import pytest

from evalkit import results
from evalkit.data import embedded
from test_cli import run_cli


@pytest.fixture(scope="module")
def pixel_results(data_dir, tmp_path_factory):
  """Real results (raw pixels, few-shot on Fashion-MNIST's 10,000 test images) and their baseline."""
  if not embedded.fashion_mnist_available():
    pytest.skip("needs Fashion-MNIST (apt-get install dataset-fashion-mnist): 500 digits test images are too few "
                "for a 3-point drop to stand out of the noise")
  out = tmp_path_factory.mktemp("gate")
  proc = run_cli("eval", "--checkpoint=pixels", "--tasks=fashion_mnist_heldout", f"--data_dir={data_dir}",
                 f"--results_dir={out / 'results'}", "--cache_dir=", "--noprogress")
  assert proc.returncode == 0, proc.stderr[-2000:]
  proc = run_cli("baseline", f"--results_dir={out / 'results'}", f"--out={out / 'baseline.json'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return out


def shifted_copy(src, dst, metric, delta):
  """A copy of the results with one metric's mean (and every per-seed accuracy) moved by `delta`."""
  shutil.copytree(src / "results", dst)
  path = dst / "pixels" / "fashion_mnist_heldout.json"
  record = results.load(path)
  m = record["metrics"][metric]
  m["mean"] += delta
  m["per_seed"] = {k: v + delta for k, v in m["per_seed"].items()}
  path.write_text(json.dumps(record))
  return dst


def gate(out, results_dir, *extra):
  return run_cli("gate", f"--baseline={out / 'baseline.json'}", f"--results_dir={results_dir}", *extra)


def test_identical_results_pass(pixel_results, tmp_path):
  proc = gate(pixel_results, pixel_results / "results", f"--summary={tmp_path / 'summary.md'}")
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  summary = (tmp_path / "summary.md").read_text()
  assert "evalkit gate: passed" in summary and "| pixels | fashion_mnist_heldout | 10shot |" in summary


def test_three_point_drop_fails(pixel_results, tmp_path):
  worse = shifted_copy(pixel_results, tmp_path / "r", "10shot", -0.03)
  proc = gate(pixel_results, worse)
  assert proc.returncode == 1, proc.stdout
  assert "regression" in proc.stdout


def test_drop_inside_the_noise_passes(pixel_results, tmp_path):
  baseline = json.loads((pixel_results / "baseline.json").read_text())
  se = next(e["se"] for e in baseline["entries"] if e["metric"] == "10shot")
  assert 0.002 < se < 0.01  # seeds + 10,000 test items: under a point
  slightly = shifted_copy(pixel_results, tmp_path / "r", "10shot", -0.5 * se)
  assert gate(pixel_results, slightly).returncode == 0
  # ... while an absolute tolerance can admit the 3-point drop explicitly.
  worse = shifted_copy(pixel_results, tmp_path / "w", "10shot", -0.03)
  assert gate(pixel_results, worse, "--tolerance=0.03").returncode == 0


def test_missing_results_and_bad_baseline_exit_2(pixel_results, tmp_path):
  assert gate(pixel_results, tmp_path / "empty").returncode == 2
  (tmp_path / "b.json").write_text("{}")
  assert run_cli("gate", f"--baseline={tmp_path / 'b.json'}", f"--results_dir={pixel_results / 'results'}"
                 ).returncode == 2
