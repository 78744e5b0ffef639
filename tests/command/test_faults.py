"""Crash safety: SIGKILL at every write (and at training steps and state saves) of real runs, then a rerun.

Each run is an `evalkit` subprocess with `EVALKIT_KILL_AT=<point>:<n>` (evalkit.faults). After the kill nothing
half-written may be trusted: every result file present is complete (its sidecars exist and match its hashes), and
the rerun ends with results (or weights) bit-identical to an uninterrupted run's. docs/robustness.md has the table.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evalkit import faults, fileio, results

from conftest import ONE_DEVICE, subprocess_timeout

KILLED = -signal.SIGKILL


def cli(*args, env_extra=None) -> subprocess.Popen:
  """`evalkit <args>` on one device: every run of a test here is compared only with runs of the same test."""
  env = {**os.environ, **ONE_DEVICE, **(env_extra or {})}
  return subprocess.Popen([sys.executable, "-m", "evalkit.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)


def run_all(jobs: list[tuple[list[str], dict | None]], parallel: int = 2) -> list[tuple[int, str]]:
  """(returncode, stderr) of each `evalkit` command, `parallel` at a time (the suite runs on 2 cores)."""
  out, pending = [None] * len(jobs), list(enumerate(jobs))
  running = []
  while pending or running:
    while pending and len(running) < parallel:
      i, (args, env) = pending.pop(0)
      running.append((i, cli(*args, env_extra=env)))
    i, proc = running.pop(0)
    _, err = proc.communicate(timeout=subprocess_timeout())
    out[i] = (proc.returncode, err)
  return out


def traced_points(args, tmp_path) -> list[str]:
  """The fault points an uninterrupted run of `args` passes, in order (its trace)."""
  trace = tmp_path / "trace.txt"
  [(rc, err)] = run_all([(args, {faults.TRACE: str(trace)})])
  assert rc == 0, err[-2000:]
  return trace.read_text().split()


def kill_points(points: list[str], names: tuple[str, ...]) -> list[str]:
  """`<point>:<n>` for every occurrence of the named points in a trace."""
  seen, out = {}, []
  for p in points:
    seen[p] = seen.get(p, 0) + 1
    if p in names:
      out.append(f"{p}:{seen[p]}")
  return out


def assert_nothing_half_written(results_dir: Path):
  """Every result present is complete. (A kill before a rename leaves a hidden `.<name>.<host>-<pid>.*.tmp` file:
  never read, and removed by the next write of that file.)"""
  for path in results.result_files(results_dir):
    results.check_complete(path)  # raises if a sidecar is missing or does not match


def assert_no_temporaries(root: Path):
  assert not list(root.rglob("*.tmp")), "temporary files left behind after the rerun"


def comparable(record: dict) -> dict:
  """A result record less what legitimately differs between runs (times, dates, paths)."""
  return {k: v for k, v in record.items() if k not in ("provenance", "timings", "checkpoint")}


def assert_same_result(path_a: Path, path_b: Path):
  a, b = results.check_complete(path_a), results.check_complete(path_b)
  assert comparable(a) == comparable(b)
  items_a, items_b = results.load_items(path_a), results.load_items(path_b)
  assert items_a.keys() == items_b.keys()
  for key in items_a:
    np.testing.assert_array_equal(items_a[key], items_b[key])


FEWSHOT_SPEC = """
dataset = "digits"
protocol = "fewshot_ridge"
train_split = "train"
test_split = "test"
pp = "decode|resize(28)|value_range(-1, 1)"
shots = [2, 5]
seeds = [0, 1]
headline_shots = 5
"""


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_fewshot_eval_killed_at_every_write_resumes_identical(tmp_path, data_dir):
  """Feature-cache writes (file-hash memo, features, their checksums), manifest, items, result: a kill before each
  file's rename (fully written, not in place) and after the last, then a rerun, ends with the uninterrupted run's
  result and items, bit for bit."""
  spec = tmp_path / "tiny_fewshot.toml"
  spec.write_text(FEWSHOT_SPEC)

  def args(root):
    return ["eval", "--checkpoint=pixels", f"--tasks={spec}", f"--data_dir={data_dir}", "--noprogress", "--noloo",
            f"--results_dir={root / 'results'}", f"--cache_dir={root / 'cache'}"]

  points = traced_points(args(tmp_path / "reference"), tmp_path)
  kills = [*kill_points(points, ("before_rename",)), kill_points(points, ("after_rename",))[-1]]
  assert len(kills) >= 9  # the file-hash memo, 2 × 2 cache files, manifest, items, result; and after the last
  killed = run_all([(args(tmp_path / f"k{i}"), {faults.KILL_AT: k}) for i, k in enumerate(kills)])
  assert all(rc == KILLED for rc, _ in killed), [(k, rc) for k, (rc, _) in zip(kills, killed)]
  for i in range(len(kills)):
    assert_nothing_half_written(tmp_path / f"k{i}" / "results")
  reruns = run_all([(args(tmp_path / f"k{i}"), None) for i in range(len(kills))])
  assert all(rc == 0 for rc, _ in reruns), [(k, err[-500:]) for k, (rc, err) in zip(kills, reruns) if rc]
  reference = tmp_path / "reference" / "results" / "pixels" / "tiny_fewshot.json"
  for i in range(len(kills)):
    assert_no_temporaries(tmp_path / f"k{i}")
    assert_same_result(reference, tmp_path / f"k{i}" / "results" / "pixels" / "tiny_fewshot.json")


def test_corrupt_cache_entry_and_result_sidecar_are_detected_and_recomputed(tmp_path, data_dir):
  spec = tmp_path / "tiny_fewshot.toml"
  spec.write_text(FEWSHOT_SPEC)
  args = ["eval", "--checkpoint=pixels", f"--tasks={spec}", f"--data_dir={data_dir}", "--noprogress", "--noloo",
          f"--results_dir={tmp_path / 'results'}", f"--cache_dir={tmp_path / 'cache'}"]
  [(rc, err)] = run_all([(args, None)])
  assert rc == 0, err
  result = tmp_path / "results" / "pixels" / "tiny_fewshot.json"
  reference = results.load_items(result)
  entry = sorted((tmp_path / "cache").glob("*.npz"))[0]
  entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a truncated cache file
  items = results.items_path(result)
  items.write_bytes(items.read_bytes()[:100])  # a truncated items file: the result is no longer complete
  with pytest.raises(results.IncompleteResult, match="does not match"):
    results.load_items(result)
  [(rc, err)] = run_all([(args, None)])
  assert rc == 0, err
  assert "is corrupt" in err and "recomputing" in err  # the cache entry, reported in one line
  assert "does not match the result" in err  # the result, reported and recomputed
  again = results.load_items(result)
  for key in reference:
    np.testing.assert_array_equal(reference[key], again[key])


FINETUNE_SPEC = """
dataset = "digits"
protocol = "finetune"
train_split = "train"
test_split = "test"
pp = "decode|resize(28)|value_range(-1, 1)"
pp_train = "decode|resize(32)|random_crop(28)|value_range(-1, 1)"
batch_size = 32
total_steps = 24
warmup_steps = 4
lr_grid = [0.03, 0.01]
"""


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_finetune_killed_mid_run_resumes_identical(tmp_path, data_dir, random_vit):
  """Kills after the first lr's first state save, during the second lr, and before the result's rename; every
  rerun writes the uninterrupted run's result and items."""
  init = random_vit(0, "map", num_classes=10)
  spec = tmp_path / "tiny_finetune.toml"
  spec.write_text(FINETUNE_SPEC)

  def args(root):
    return ["eval", f"--checkpoint={init}", "--variant=mu/7", "--pool_type=map", "--name=tiny", f"--tasks={spec}",
            f"--data_dir={data_dir}", "--noprogress", f"--results_dir={root}"]

  points = traced_points(args(tmp_path / "reference"), tmp_path)
  kills = ["state_saved:1", "train_step:30", f"before_rename:{points.count('before_rename')}"]
  killed = run_all([(args(tmp_path / f"k{i}"), {faults.KILL_AT: k}) for i, k in enumerate(kills)])
  assert all(rc == KILLED for rc, _ in killed), [(k, rc, e[-300:]) for k, (rc, e) in zip(kills, killed)]
  for i in range(len(kills)):
    assert_nothing_half_written(tmp_path / f"k{i}")
  reruns = run_all([(args(tmp_path / f"k{i}"), None) for i in range(len(kills))])
  assert all(rc == 0 for rc, _ in reruns), [(k, err[-500:]) for k, (rc, err) in zip(kills, reruns) if rc]
  for i in range(len(kills)):
    assert_no_temporaries(tmp_path / f"k{i}")
    assert_same_result(tmp_path / "reference" / "tiny" / "tiny_finetune.json",
                       tmp_path / f"k{i}" / "tiny" / "tiny_finetune.json")


def test_concurrent_evals_leave_complete_results_and_a_consistent_cache(tmp_path, data_dir):
  """4 `evalkit eval` processes at once on one results dir and one cache dir, two per task: every result is complete
  and equals a lone run's, and every cache entry matches its checksum."""
  specs = []
  for name, shots in (("tiny_a", "[2, 5]"), ("tiny_b", "[3]")):
    specs.append(tmp_path / f"{name}.toml")
    specs[-1].write_text(FEWSHOT_SPEC.replace("shots = [2, 5]", f"shots = {shots}")
                         .replace("headline_shots = 5", f"headline_shots = {shots[1]}"))

  def args(spec, root):
    return ["eval", "--checkpoint=pixels", f"--tasks={spec}", f"--data_dir={data_dir}", "--noprogress", "--noloo",
            f"--results_dir={root / 'results'}", f"--cache_dir={root / 'cache'}"]

  lone = run_all([(args(s, tmp_path / f"lone_{s.stem}"), None) for s in specs])
  assert all(rc == 0 for rc, _ in lone)
  shared = tmp_path / "shared"
  together = run_all([(args(s, shared), None) for s in (*specs, *specs)], parallel=4)
  assert all(rc == 0 for rc, _ in together), [e[-500:] for _, e in together]
  assert_nothing_half_written(shared / "results")
  for s in specs:
    assert_same_result(tmp_path / f"lone_{s.stem}" / "results" / "pixels" / f"{s.stem}.json",
                       shared / "results" / "pixels" / f"{s.stem}.json")
  for meta in (shared / "cache").glob("*.json"):
    if meta.name != "file_hashes.json":
      assert fileio.file_sha256(meta.with_suffix(".npz")) == json.loads(meta.read_text())["sha256"]


def _file_size_limited(limit_bytes: int):
  """preexec_fn: a process that may write no file larger than `limit_bytes` (EFBIG, as a full disk gives ENOSPC)."""
  def limit():
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
  return limit


@pytest.mark.parametrize("where,limit", [("cache", 200_000), ("result", 1_000)])
def test_a_full_disk_leaves_no_partial_file_and_one_error_line(where, limit, tmp_path, data_dir):
  """The feature cache (12 MB of pixels) or, without a cache, the result's sidecars cannot be written: one line,
  nothing partial; the rerun with space freed ends identical to an undisturbed run."""
  spec = tmp_path / "tiny_fewshot.toml"
  spec.write_text(FEWSHOT_SPEC)
  cache = f"--cache_dir={tmp_path / 'cache'}" if where == "cache" else "--cache_dir="
  args = [sys.executable, "-m", "evalkit.cli", "eval", "--checkpoint=pixels", f"--tasks={spec}",
          f"--data_dir={data_dir}", "--noprogress", "--noloo", f"--results_dir={tmp_path / 'results'}", cache]
  # An undisturbed run first (it also prepares the embedded dataset, which the limited run must not have to do).
  undisturbed = [*args[:-2], f"--results_dir={tmp_path / 'undisturbed'}", "--cache_dir="]
  assert subprocess.run(undisturbed, capture_output=True, text=True, timeout=subprocess_timeout()).returncode == 0
  proc = subprocess.run(args, capture_output=True, text=True, timeout=subprocess_timeout(),
                        preexec_fn=_file_size_limited(limit))
  errors = [line for line in proc.stderr.splitlines() if line.startswith("evalkit: error: ")]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
  assert "cannot write" in errors[0] and "File too large" in errors[0] and "Traceback" not in proc.stderr
  written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".toml" and "undisturbed" not in p.parts]
  assert not [p for p in written if p.name.endswith(".tmp")], written  # no temporary left behind
  assert not results.result_files(tmp_path / "results"), written  # and no result without its sidecars
  # Space freed (no limit): the rerun completes, with the result an undisturbed run writes.
  rerun = subprocess.run(args, capture_output=True, text=True, timeout=subprocess_timeout())
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert_same_result(tmp_path / "undisturbed" / "pixels" / "tiny_fewshot.json",
                     tmp_path / "results" / "pixels" / "tiny_fewshot.json")


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_scaling_sweep_killed_mid_cell_resumes_identical(tmp_path, data_dir):
  """A one-cell sweep (the quick sweep's XXS model on 200 digits, two lengths) killed right after the cell's first
  train-state save (its branch point: mid-cell) and before its last result rename: each rerun finishes with the
  uninterrupted run's results and items for both lengths. (A kill after a run's last state save is
  test_pretrain's.)"""
  import tomli_w
  from evalkit.studies import sweep
  quick = sweep.quick()
  one_cell = dataclasses.replace(quick, name="one_cell", models={"XXS": quick.models["XXS"]}, data_sizes=[200])
  config = tmp_path / "one_cell.toml"
  config.write_text(tomli_w.dumps(one_cell.to_dict()))

  def args(root):
    return ["scaling", "sweep", f"--config={config}", f"--workdir={root}", f"--data_dir={data_dir}", "--noprogress",
            "--bootstrap_samples=50"]

  points = traced_points(args(tmp_path / "reference"), tmp_path)
  assert points.count("state_saved") == 2  # the branch point and the end of the main run
  kills = ["state_saved:1", f"before_rename:{points.count('before_rename')}"]
  killed = run_all([(args(tmp_path / f"k{i}"), {faults.KILL_AT: k}) for i, k in enumerate(kills)])
  assert all(rc == KILLED for rc, _ in killed), [(k, rc, e[-300:]) for k, (rc, e) in zip(kills, killed)]
  for i in range(len(kills)):
    assert_nothing_half_written(tmp_path / f"k{i}" / "results")
  reruns = run_all([(args(tmp_path / f"k{i}"), None) for i in range(len(kills))])
  assert all(rc == 0 for rc, _ in reruns), [(k, err[-500:]) for k, (rc, err) in zip(kills, reruns) if rc]
  reference = results.result_files(tmp_path / "reference" / "results")
  assert len(reference) == len(one_cell.lengths()) == 2
  for i in range(len(kills)):
    assert_no_temporaries(tmp_path / f"k{i}")
    for path in reference:
      assert_same_result(path, tmp_path / f"k{i}" / path.relative_to(tmp_path / "reference"))


@pytest.mark.parametrize("memo", ["[]", "{\"x\": 5}", "{not json", ""])
def test_a_damaged_file_hash_memo_is_rebuilt(memo, tmp_path, caplog):
  """The cache's file-hash memo is a shortcut only: a damaged one is reported and replaced, and hashes stay right."""
  from evalkit import features
  data = tmp_path / "shard.bin"
  data.write_bytes(b"some bytes of a dataset file")
  (tmp_path / "cache").mkdir()
  (tmp_path / "cache" / "file_hashes.json").write_text(memo)
  cache = features.FeatureCache(tmp_path / "cache")
  assert cache.file_hash(data) == fileio.file_sha256(data)
  assert "file_hashes.json is damaged" in caplog.text
  assert list(json.loads((tmp_path / "cache" / "file_hashes.json").read_text()).values()) == [fileio.file_sha256(data)]


def test_an_orbax_temporary_of_a_killed_export_is_removed_by_the_next(tmp_path):
  """orbax writes `<path>.orbax-checkpoint-tmp-<time>` and renames it when done; a killed export leaves that
  directory. The next export of the same path removes it and writes a complete checkpoint."""
  from evalkit import checkpoints
  params = {"head": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
  stale = tmp_path / "step_20.orbax-checkpoint-tmp-1765000000123456"
  (stale / "head.kernel").mkdir(parents=True)
  (stale / "head.kernel" / "partial").write_bytes(b"\0" * 100)
  checkpoints.save_orbax(tmp_path / "step_20", params, {"model": {"variant": "mu/7"}})
  assert sorted(p.name for p in tmp_path.iterdir()) == ["step_20"]
  np.testing.assert_array_equal(checkpoints.read_orbax(tmp_path / "step_20")["head/kernel"], params["head"]["kernel"])
