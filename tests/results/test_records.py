"""Result records: one metric shape and one items layout for every adapter, results of `evalkit.result/1` still read
by report, compare and gate, and a paired comparison of fine-tune records."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, ONE_DEVICE, run_cli
from evalkit import distributed, evaluate, results, subjects, tasks
from evalkit.analysis import compare
from evalkit.report import leaderboard

V1 = Path(FIXTURES) / "results_v1"  # written by evalkit before the /2 schema (digits, CPU)
V2 = Path(FIXTURES) / "results_v2"  # written by evalkit before the /3 schema (pixels on digits, CPU)


@pytest.fixture()
def v1_results(tmp_path):
  shutil.copytree(V1, tmp_path / "results")
  return tmp_path / "results"


def test_v1_records_load_in_the_current_shape(v1_results):
  fewshot = results.load(v1_results / "pixels" / "digits.json")
  assert fewshot["schema"] == results.SCHEMA and fewshot["upgraded_from"] == "evalkit.result/1"
  ten = fewshot["metrics"]["10shot"]
  assert "mean" not in ten and ten["value"] == fewshot["headline"]["value"] and ten["n"] == 500
  assert ten["loo"]["value"] == pytest.approx(np.mean(list(ten["loo"]["per_seed"].values())))
  items = results.load_items(v1_results / "digits_tiny_step_60" / "digits_finetune.json")
  assert list(items["episodes"]) == ["top1"] and items["predictions"].shape == (1, 500)
  finetune = results.load(v1_results / "digits_tiny_step_60" / "digits_finetune.json")
  assert np.mean(items["predictions"][0] == items["test_labels"]) == finetune["metrics"]["top1"]["value"]


@pytest.mark.slow  # ≈ 25 s on 2 cores
def test_v2_records_load_in_the_current_shape_with_the_numbers_evalkit_computes_today(data_dir, tmp_path):
  """/2 records kept the protocol's details beside the skeleton and said shots only in metric names: loaded, they
  have the /3 shape, and pixels on digits computed now gives the same numbers, details and items."""
  old = {name: results.load(V2 / "pixels" / f"{name}.json") for name in ("digits", "digits_linear_probe")}
  for record in old.values():
    assert record["schema"] == results.SCHEMA and record["upgraded_from"] == "evalkit.result/2"
  assert set(old["digits"]["details"]) == {"episodes", "loo_l2_grid"}
  assert {"chosen_C", "val_curve", "n_fit", "n_val", "final_iterations"} == set(old["digits_linear_probe"]["details"])
  assert [old["digits"]["metrics"][f"{k}shot{s}"]["shots"] for k in (1, 25) for s in ("", ".top5")] == [1, 1, 25, 25]
  assert "shots" not in old["digits_linear_probe"]["metrics"]["top1"]

  # As the files were written: `evalkit eval` on one CPU device. (The few-shot LOO error curve at λ ≤ 1, where
  # pixel features are ill-conditioned, moves with the device count; the chosen λ and every metric do not.)
  proc = run_cli("eval", "--checkpoint=pixels", f"--tasks={','.join(old)}", f"--data_dir={data_dir}",
                 f"--results_dir={tmp_path}", "--cache_dir=", "--noprogress", env_extra=ONE_DEVICE)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name, before in old.items():
    now = results.load(results.result_path(tmp_path, "pixels", name))
    assert now["schema"] == results.SCHEMA and "upgraded_from" not in now and now["published"] == {}
    assert now["task"]["spec_hash"] == before["task"]["spec_hash"]
    assert now["metrics"] == before["metrics"] and now["headline"] == before["headline"], name
    assert now["details"] == before["details"], name
    old_items, new_items = (results.load_items(p) for p in (V2 / "pixels" / f"{name}.json",
                                                            results.result_path(tmp_path, "pixels", name)))
    np.testing.assert_array_equal(old_items["predictions"], new_items["predictions"])
  report = run_cli("report", f"--results_dir={V2}", f"--out={tmp_path / 'report'}")
  assert report.returncode == 0, report.stderr[-1000:]
  assert "| pixels | 83.60 [80.0, 87.2] |" in (tmp_path / "report" / "leaderboard.md").read_text()


def test_v1_results_in_report_compare_and_gate(v1_results, tmp_path):
  board = leaderboard.build(results.load_all(v1_results))
  assert ("digits", "10shot") in board.columns and ("digits_finetune", "top1") in board.columns
  assert board.cell("pixels", ("digits", "10shot")).value == pytest.approx(0.836)
  rows, _ = compare.compare(v1_results, "pixels", "digits_tiny_step_60")
  assert [r.task for r in rows] == ["digits"] and rows[0].delta > 0.5 and rows[0].p_bootstrap < 0.01
  # The baseline written from these files by the evalkit of that time: the same results pass the gate today.
  gate = run_cli("gate", f"--baseline={V1 / 'baseline.json'}", f"--results_dir={v1_results}")
  assert gate.returncode == 0, gate.stdout + gate.stderr[-1000:]
  assert "| digits_tiny_step_60 | digits_finetune | top1 | 28.60 | 28.60 | +0.00 |" in gate.stdout
  report = run_cli("report", f"--results_dir={v1_results}", f"--out={tmp_path / 'report'}")
  assert report.returncode == 0, report.stderr[-1000:]
  assert "| pixels | 83.60 [80.0, 87.2] |" in (tmp_path / "report" / "leaderboard.md").read_text()


@pytest.fixture(scope="module")
def finetune_results(data_dir, random_vit, tmp_path_factory):
  """Two random-init ViTs fine-tuned briefly on digits (real records, the fine-tune adapter end to end)."""
  out = tmp_path_factory.mktemp("ft")
  task = tasks.load_task("digits_finetune").replace(total_steps=30, warmup_steps=5, lr_grid=(0.1,))
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out), progress=False)
  for seed in (0, 1):
    subject = subjects.resolve_subject(str(random_vit(seed, "gap")), name=f"vit{seed}",
                                       model_options={"variant": "mu/7", "pool_type": "gap"})
    assert evaluate.run(subject, [task], settings, distributed.data_mesh())[0][1] == "done"
  return out


def test_every_metric_has_the_one_shape(finetune_results):
  for record in results.load_all(finetune_results):
    for m in record["metrics"].values():
      assert {"value", "se", "ci95", "n"} <= set(m) and m["n"] == 500
    items = results.load_items(results.result_path(finetune_results, record["checkpoint"]["name"], "digits_finetune"))
    assert list(items["episodes"]) == ["top1"]


def test_compare_on_finetune_records_is_paired(finetune_results):
  rows, overall = compare.compare(finetune_results, "vit0", "vit1")
  (row,) = rows
  assert row.metric == "top1" and row.task == "digits_finetune"
  a = results.load(results.result_path(finetune_results, "vit0", "digits_finetune"))["metrics"]["top1"]["value"]
  b = results.load(results.result_path(finetune_results, "vit1", "digits_finetune"))["metrics"]["top1"]["value"]
  assert (row.acc_a, row.acc_b) == (pytest.approx(a), pytest.approx(b))
  assert row.delta == pytest.approx(a - b) and row.ci95[0] <= row.delta <= row.ci95[1]
  back, _ = compare.compare(finetune_results, "vit1", "vit0")
  assert back[0].delta == pytest.approx(-row.delta) and (back[0].a_only, back[0].b_only) == (row.b_only, row.a_only)
  assert overall["tasks"] == 1
