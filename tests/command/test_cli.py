"""`evalkit eval` end to end on the embedded digits, as a user runs it (subprocesses, exit codes, files)."""
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from evalkit import checkpoints, distributed, features, results
from evalkit.probes import ridge
from evalkit.data import pp, source
from evalkit.models import vit

from conftest import ONE_DEVICE, SUBPROCESS_MARGIN_S, error_lines, run_cli, subprocess_timeout

MODEL_FLAGS = ["--variant=mu/7", "--pool_type=map"]


@pytest.fixture(scope="module")
def ckpt(random_vit):
  """A mu/7 ViT with a 10-class MAP head, saved as a big_vision-style npz (the head is ignored for features)."""
  return random_vit(1, "map", num_classes=10)


@pytest.fixture(scope="module")
def digits_run(ckpt, data_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("run")
  common = [f"--checkpoint={ckpt}", *MODEL_FLAGS, "--tasks=digits", f"--data_dir={data_dir}",
            f"--results_dir={out / 'results'}", f"--cache_dir={out / 'cache'}", "--noprogress"]
  # Decoded in 2 worker processes: the record must still equal the in-process computation below, number for number.
  first = run_cli("eval", *common, "--workers=2")
  return {"out": out, "common": common, "first": first, "name": ckpt.stem}  # the name is the file's stem


def test_eval_writes_result_matching_direct_computation(digits_run, ckpt, data_dir):
  proc = digits_run["first"]
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "digits train: decoding and pp in 2 worker processes" in proc.stderr  # --workers reached the loader
  path = digits_run["out"] / "results" / digits_run["name"] / "digits.json"
  rec = results.load(path)
  model = vit.ViT(num_classes=None, variant="mu/7", pool_type="map")
  loaded = checkpoints.load_checkpoint(ckpt, model=model, image_size=(28, 28), dont_load=("head/.*",))
  assert rec["checkpoint"]["weights_hash"] == loaded.weights_hash
  assert rec["task"]["name"] == "digits" and len(rec["task"]["spec_hash"]) == 16
  assert rec["data"] == {"image_size": [28, 28], "num_classes": 10, "n_train": 1297, "n_test": 500,
                         "feature_dim": 32}
  assert rec["provenance"]["jax"] == jax.__version__ and rec["provenance"]["device_count"] == 8

  # The same numbers straight from the Python API (images decoded in this process's threads).
  preprocess = pp.parse("decode|resize(28)|value_range(-1, 1)")
  featurizer = features.model_featurizer(model, loaded.params, weights_hash=loaded.weights_hash)
  f = {s: features.extract(featurizer, source.open_split("digits", s, data_dir), preprocess,
                           mesh=distributed.data_mesh(), progress=False, workers=0) for s in ("train", "test")}
  direct = ridge.ridge_fewshot(f["train"].x, f["train"].labels, f["test"].x, f["test"].labels, num_classes=10)
  for k in (1, 5, 10, 25):
    for seed in (0, 1, 2):
      assert rec["metrics"][f"{k}shot"]["per_seed"][str(seed)] == direct[(k, seed)]
  assert rec["headline"] == {"metric": "10shot", "value": rec["metrics"]["10shot"]["value"]}
  details = rec["details"]
  for ep in details["episodes"]:
    assert ep["loo_l2_reg"] in details["loo_l2_grid"] and len(ep["loo_errors"]) == len(details["loo_l2_grid"])

  items = results.load_items(path)  # per-test-item outcomes, for paired comparisons
  assert items["predictions"].shape == (12, 500) and list(items["test_ids"]) == list(range(500))
  for key, pred in zip(items["episodes"], items["predictions"]):
    k, seed = key.split("shot/seed")
    assert np.mean(pred == items["test_labels"]) == rec["metrics"][f"{k}shot"]["per_seed"][seed]
  ten = rec["metrics"]["10shot"]
  assert ten["ci95"][0] < ten["value"] < ten["ci95"][1] and ten["se"] > 0

  manifest = json.loads(results.manifest_path(path).read_text())
  ten = manifest["episodes"]["10shot/seed0"]
  assert len(ten) == 100 and len(set(ten)) == 100 and all(0 <= i < 1297 for i in ten)
  assert manifest["episodes"]["5shot/seed0"] == [i for c in range(10) for i in ten[10 * c: 10 * c + 5]]  # nested


def test_finished_results_are_skipped_and_cache_is_used(digits_run):
  assert digits_run["first"].returncode == 0
  again = run_cli("eval", *digits_run["common"])
  assert again.returncode == 0 and "skipped" in again.stdout
  path = digits_run["out"] / "results" / digits_run["name"] / "digits.json"
  before = results.load(path)
  redo = run_cli("eval", *digits_run["common"], "--overwrite")
  assert redo.returncode == 0, redo.stderr[-2000:]
  after = results.load(path)
  assert after["timings"]["features_train_cached"] and after["timings"]["features_test_cached"]
  assert not before["timings"]["features_train_cached"]
  assert after["metrics"] == before["metrics"]


@pytest.mark.parametrize("case", ["unknown_task", "missing_dataset", "truncated_checkpoint", "wrong_pool_type"])
def test_bad_input_gives_one_line_error_and_no_result(case, ckpt, data_dir, tmp_path):
  flags = {"checkpoint": str(ckpt), "variant": "mu/7", "pool_type": "map", "tasks": "digits", "data_dir": data_dir,
           "results_dir": str(tmp_path / "results"), "cache_dir": ""}
  if case == "unknown_task":
    flags["tasks"], expect = "no_such_task", "unknown task 'no_such_task'"
  elif case == "missing_dataset":
    flags.update(tasks="cifar100", data_dir=str(tmp_path / "empty_tfds"))
    expect = "'cifar100' is not prepared"
  elif case == "truncated_checkpoint":
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(Path(ckpt).read_bytes()[:2000])
    flags["checkpoint"], expect = str(bad), "truncated.npz"
  else:  # the checkpoint has a MAP head; a gap model has no place for it
    flags["pool_type"], expect = "gap", "unexpected [MAPHead_0"
  proc = run_cli("eval", *(f"--{k}={v}" for k, v in flags.items()), "--noprogress")
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  lines = error_lines(proc)
  assert len(lines) == 1 and expect in lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not list(tmp_path.glob("results/**/*.json"))


def test_usage_error_exit_code():
  assert run_cli("frobnicate").returncode == 2
  assert run_cli("eval").returncode == 2  # --checkpoint missing


@pytest.mark.parametrize("command", [None, "eval", "gate", "scaling"])
def test_help_lists_the_commands_flags_and_exits_0(command):
  proc = run_cli(*([command] if command else []), "--help")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "commands:" in proc.stdout and "  demo " in proc.stdout
  if command == "eval":
    assert proc.stdout.startswith("usage: evalkit eval")
    assert "--checkpoint:" in proc.stdout and "--cache_dir:" in proc.stdout
    assert "--baseline:" not in proc.stdout  # only the command's own flags
  if command == "gate":
    assert "--baseline:" in proc.stdout and "--tolerance:" in proc.stdout
  assert run_cli("eval", "-h").stdout == run_cli("eval", "--help").stdout



def test_every_flag_is_read_by_a_command_and_every_command_names_real_flags():
  """The command table (`cli.COMMANDS`) is the one place a flag is attached to a command: each flag evalkit defines
  shows in some command's --help, each flag a command lists exists, and the positional usage matches the arity."""
  from evalkit import cli
  defined = {flag.name for flag in cli.FLAGS.get_flags_for_module(cli.flag_definitions)}
  named = {name for command in cli.COMMANDS.values() for name in command.flags}
  assert defined == named, (sorted(defined - named), sorted(named - defined))
  assert {name: c.arity for name, c in cli.COMMANDS.items() if c.arity} == {"compare": 2, "scaling": 1}
  assert run_cli("compare", "only_one").returncode == 2 and run_cli("scaling").returncode == 2

def test_written_files_follow_the_umask(digits_run):
  """Results, items and manifests are shareable (0666 less the umask, as open() gives), not mkstemp's 0600."""
  assert digits_run["first"].returncode == 0
  written = [p for p in (digits_run["out"] / "results").rglob("*") if p.is_file()]
  assert len(written) >= 3
  mask = os.umask(0o022)
  os.umask(mask)
  assert {p.stat().st_mode & 0o777 for p in written} == {0o666 & ~mask}


@pytest.mark.timeout(16)
def test_a_hung_subprocess_stops_before_its_tests_timeout():
  """The test-timeout budget reaches subprocesses: one that hangs is stopped (naming its command) before pytest-timeout
  would have to kill the whole test."""
  start = time.monotonic()
  budget = subprocess_timeout()
  assert budget <= 16 - SUBPROCESS_MARGIN_S, "pytest-timeout's timer did not reach conftest"
  with pytest.raises(subprocess.TimeoutExpired, match="time.sleep"):
    subprocess.run([sys.executable, "-c", "import time; time.sleep(120)"], timeout=subprocess_timeout())
  assert time.monotonic() - start < 16 - SUBPROCESS_MARGIN_S / 2


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_same_accuracies_as_one(digits_run, ckpt, data_dir, tmp_path):
  assert digits_run["first"].returncode == 0
  single = results.load(digits_run["out"] / "results" / digits_run["name"] / "digits.json")
  port = _free_port()
  args = [f"--checkpoint={ckpt}", *MODEL_FLAGS, "--tasks=digits", f"--data_dir={data_dir}",
          f"--results_dir={tmp_path / 'results'}", "--cache_dir=", "--noprogress",
          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = [subprocess.Popen([sys.executable, "-m", "evalkit.cli", "eval", *args, f"--process_id={i}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
           for i in range(2)]
  outs = [p.communicate(timeout=subprocess_timeout()) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  multi = results.load(tmp_path / "results" / digits_run["name"] / "digits.json")
  assert multi["provenance"]["process_count"] == 2 and multi["provenance"]["device_count"] == 4
  assert multi["metrics"] == single["metrics"]
  assert multi["checkpoint"]["weights_hash"] == single["checkpoint"]["weights_hash"]


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_demo_digits_only_variant(data_dir, tmp_path):
  """Without Fashion-MNIST the demo says how to get it, pre-trains on digits, and its summary table and conclusion
  say what the paired comparisons (`evalkit compare`, run apart) find: pre-training helps in-domain."""
  proc = run_cli("demo", f"--results_dir={tmp_path}", f"--data_dir={data_dir}", "--noprogress",
                 env_extra={"EVALKIT_FASHION_MNIST_DIR": str(tmp_path / "no_fashion_here"), **ONE_DEVICE})
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "apt-get install dataset-fashion-mnist" in proc.stdout
  # The upstream model's own head on digits test (10 classes, chance 10%): far above chance after 600 steps, and
  # near chance at its random init.
  upstream = re.search(r"its own head scores ([0-9.]+)% \(95% CI ([0-9.]+)–([0-9.]+)\) on digits test.*; "
                       r"([0-9.]+)% at random init", proc.stdout)
  assert upstream and float(upstream[2]) > 50.0 and float(upstream[4]) < 30.0, proc.stdout[-3000:]
  summary = (tmp_path / "demo" / "summary.md").read_text()
  assert upstream[0] in summary
  results_dir = tmp_path / "demo" / "results"
  recs = {(r["checkpoint"]["name"], r["task"]["name"]): r for r in results.load_all(results_dir)}
  assert set(recs) == {(name, "digits_heldout") for name in ("pretrained", "random_init", "pixels")} | {
      (name, "digits_heldout_finetune") for name in ("pretrained", "random_init")}
  pre, rand = recs["pretrained", "digits_heldout"], recs["random_init", "digits_heldout"]
  assert pre["checkpoint"]["model"] == rand["checkpoint"]["model"]

  # The summary table: one row per checkpoint, the numbers of the result files with their CIs.
  table = summary.split("## Does pre-training help?")[1].split("\n\n")[1].splitlines()
  assert table[0] == ("| checkpoint | upstream top-1 (own head) | 10-shot in-domain (digits_heldout) | "
                      "fine-tune in-domain (digits_heldout_finetune) |")
  rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in table[2:]}
  assert list(rows) == ["pretrained", "random_init", "pixels"] and rows["pixels"][3].strip() == "–"
  for name in ("pretrained", "random_init"):
    for col, task in ((2, "digits_heldout"), (3, "digits_heldout_finetune")):
      metric = recs[name, task]["metrics"][recs[name, task]["headline"]["metric"]]
      assert rows[name][col].strip() == (f"{100 * metric['value']:.1f} ({100 * metric['ci95'][0]:.1f}–"
                                         f"{100 * metric['ci95'][1]:.1f})")

  # Its conclusion: every in-domain claim holds, with the Δ and CI that `evalkit compare` finds on its own.
  conclusion = next(line for line in proc.stdout.splitlines() if line.startswith("Pre-training "))
  assert conclusion.startswith("Pre-training helps in-domain: ") and conclusion in summary
  for baseline, tasks_compared in (("random_init", ("digits_heldout", "digits_heldout_finetune")),
                                   ("pixels", ("digits_heldout",))):
    cmp = run_cli("compare", "pretrained", baseline, f"--results_dir={results_dir}")
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    for task in tasks_compared:
      row = next(line for line in cmp.stdout.splitlines() if line.startswith(f"| {task} |")).split("|")
      delta, (lo, hi) = float(row[5]), (float(v) for v in row[6].split("…"))
      assert lo > 0, cmp.stdout  # the claim: the paired 95% CI lies above 0
      label = "10-shot in-domain" if task == "digits_heldout" else "fine-tune in-domain"
      said = re.search(rf"{label} ([-+][0-9.]+) points vs {baseline} \(95% CI ([-+][0-9.]+)…([-+][0-9.]+)\)",
                       conclusion)
      assert said, conclusion
      np.testing.assert_allclose([float(v) for v in said.groups()], [delta, lo, hi], atol=0.051)  # 0.1 vs 0.01 digits
  assert pre["headline"]["value"] > rand["headline"]["value"] + 0.05

  # The report opens with the same table and line.
  page = (tmp_path / "demo" / "report" / "leaderboard.html").read_text()
  assert "report: " in proc.stdout and page.index('class="summary"') < page.index('id="board"')
  assert html.escape(conclusion) in page
  assert (tmp_path / "demo" / "report" / "leaderboard.md").read_text().startswith("## Does pre-training help?")
