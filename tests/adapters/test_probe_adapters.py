"""The linear_probe, knn and ridge_full adapters on real data (sklearn digits, raw pixels): one extraction serves
every adapter, each record has the one metric shape with CIs, items for compare/gate, and numbers that equal the
probes run directly on the cached features (and independent references)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from evalkit import distributed, evaluate, results, subjects, tasks
from evalkit.analysis import compare
from evalkit.probes import knn, ridge

from conftest import FIXTURES, run_cli

PP = "decode|resize(28)|value_range(-1, 1)"


@pytest.fixture(scope="module")
def probe_run(data_dir, tmp_path_factory):
  """`evalkit eval` of raw pixels on four digits tasks of four protocols, one cache (≈ 25 s on 2 cores, so the tests
  that read it are `slow`; the adapters' fast tests are in test_extra_tests.py)."""
  out = tmp_path_factory.mktemp("probes")
  proc = run_cli("eval", "--checkpoint=pixels", "--tasks=digits,digits_knn,digits_linear_probe,digits_ridge_full",
                 f"--data_dir={data_dir}", f"--results_dir={out / 'r'}", f"--cache_dir={out / 'c'}", "--noprogress")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = {r["task"]["name"]: r for r in results.load_all(out / "r")}
  cached = {}
  for f in (out / "c").glob("*.npz"):
    with np.load(f) as z:
      cached[len(z["x"])] = {k: z[k] for k in z.files}
  return out, records, cached


@pytest.mark.slow
def test_one_extraction_serves_every_adapter(probe_run):
  out, records, cached = probe_run
  assert len(list((out / "c").glob("*.npz"))) == 2  # digits train and test, once
  assert records["digits"]["timings"]["features_train_cached"] is False
  for name in ("digits_knn", "digits_linear_probe", "digits_ridge_full"):
    assert records[name]["timings"]["features_train_cached"] and records[name]["timings"]["features_test_cached"]


@pytest.mark.slow
def test_records_have_the_one_metric_shape_and_items(probe_run):
  out, records, _ = probe_run
  for name, r in records.items():
    for metric in tasks.load_task(name).adapter.metric_names(tasks.load_task(name).config):
      m = r["metrics"][metric]
      assert m["ci95"][0] <= m["value"] <= m["ci95"][1] and m["se"] > 0 and m["n"] == 500, (name, metric)
    items = results.load_items(results.result_path(out / "r", "pixels", name))
    assert items["top_classes"].shape[:2] == items["predictions"].shape and items["top_classes"].shape[2] == 5
  assert len(records["digits"]["metrics"]["10shot"]["per_class"]) == 10
  assert 0 < records["digits_linear_probe"]["metrics"]["top1"]["ece"] < 0.5


@pytest.mark.slow
def test_knn_adapter_equals_the_probe_on_cached_features(probe_run):
  _, records, cached = probe_run
  train, test = cached[1297], cached[500]
  for k in (10, 20, 100, 200):
    pred = knn.knn_predict(train["x"], train["labels"], test["x"], 10, k=k)
    assert records["digits_knn"]["metrics"][f"{k}nn"]["value"] == pytest.approx(np.mean(pred == test["labels"]))
  assert records["digits_knn"]["headline"]["metric"] == "20nn"
  assert records["digits_knn"]["headline"]["value"] > 0.9


@pytest.mark.slow
def test_linear_probe_chooses_C_on_validation_and_matches_sklearn(probe_run):
  _, records, cached = probe_run
  r = records["digits_linear_probe"]
  details = r["details"]
  curve = details["val_curve"]
  assert len(curve) == 45 and details["chosen_C"] == curve[int(np.argmax([c["val_top1"] for c in curve]))]["C"]
  assert (details["n_fit"], details["n_val"]) == (1167, 130)
  train, test = cached[1297], cached[500]
  sk = LogisticRegression(C=details["chosen_C"], tol=1e-8, max_iter=20000).fit(train["x"], train["labels"])
  assert r["metrics"]["top1"]["value"] == pytest.approx(sk.score(test["x"], test["labels"]), abs=0.01)


@pytest.mark.slow
def test_ridge_full_adapter_equals_an_in_memory_whitened_solve(probe_run):
  _, records, cached = probe_run
  r = records["digits_ridge_full"]
  details = r["details"]
  train, test = cached[1297], cached[500]
  x, y = train["x"].astype(np.float64), train["labels"]
  mean, std = x.mean(0), x.std(0) + ridge.STD_EPS
  z = np.c_[(x - mean) / std, np.full(len(x), ridge.BIAS_FEATURE)]
  w = np.linalg.solve(z.T @ z + details["chosen_l2_reg"] * np.eye(z.shape[1]), z.T @ (2.0 * np.eye(10)[y] - 1))
  zt = np.c_[(test["x"] - mean) / std, np.full(len(test["x"]), ridge.BIAS_FEATURE)]
  want = np.mean((zt @ w).argmax(1) == test["labels"])
  assert r["metrics"]["top1"]["value"] == pytest.approx(want, abs=0.004)  # at most 2 of 500 items
  gcv = [row["gcv"] for row in details["gcv_curve"]]
  assert details["chosen_l2_reg"] == details["gcv_curve"][int(np.argmin(gcv))]["l2_reg"]



@pytest.mark.slow
def test_frozen_probes_predict_what_they_predicted_before_the_template(probe_run):
  """The four frozen-feature adapters, rebuilt on one template (`adapters/frozen.py`), give the same records: every
  test item's prediction per episode, the headline and the spec hash equal those the adapters wrote before it (raw
  pixels on digits, this session's 8 CPU devices: tests/fixtures/frozen_probes_digits_pixels*). The top-5 rankings
  agree too; ranks 2–5 of near-ties may swap with float rounding (1 vs 8 devices: 2 of 500 rows), so up to 1% of
  rows may differ there."""
  out, records, _ = probe_run
  data = Path(FIXTURES)
  before = json.loads((data / "frozen_probes_digits_pixels.json").read_text())
  with np.load(data / "frozen_probes_digits_pixels_top5.npz") as z:
    top5 = {k: z[k] for k in z.files}
  for task, expected in before.items():
    items = results.load_items(out / "r" / "pixels" / f"{task}.json")
    assert [str(e) for e in items["episodes"]] == expected["episodes"], task
    digest = hashlib.sha256(np.ascontiguousarray(items["predictions"], np.int32).tobytes()).hexdigest()
    assert digest == expected["predictions_sha256"], task
    assert records[task]["headline"] == expected["headline"], task
    assert records[task]["task"]["spec_hash"] == expected["spec_hash"], task
    assert items["top_classes"].shape == top5[task].shape, task
    rows_differing = (items["top_classes"] != top5[task]).any(axis=-1).mean()
    assert rows_differing <= 0.01, (task, rows_differing)

def test_mean_per_class_headline_and_paired_compare(data_dir, tmp_path):
  """A spec's headline may be a derived metric; compare then pairs on it (class-weighted items)."""
  task = tasks.make_task(name="digits_knn_mpc", dataset="digits", protocol="knn", train_split="train",
                         test_split="test", pp=PP, ks=(1, 20), headline_k=20, headline="20nn.mean_per_class")
  mesh = distributed.data_mesh()
  for name in ("pixels", "pixels_again"):
    subject = subjects.resolve_subject(subjects.PIXELS, name=name) if name != "pixels" else \
        subjects.resolve_subject(subjects.PIXELS)
    settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(tmp_path), progress=False)
    evaluate.run(subject, [task], settings, mesh)
  rec = results.load(results.result_path(tmp_path, "pixels", "digits_knn_mpc"))
  assert rec["headline"] == {"metric": "20nn.mean_per_class", "value": rec["metrics"]["20nn.mean_per_class"]["value"]}
  rows, _ = compare.compare(tmp_path, "pixels", "pixels_again")
  assert rows[0].metric == "20nn.mean_per_class" and rows[0].acc_a == pytest.approx(rec["headline"]["value"])
  assert rows[0].delta == 0.0


def test_bad_probe_specs_fail_in_one_line():
  for fields, message in (({"ks": [0, 5]}, "ks must be distinct positive"), ({"headline_k": 7}, "headline_k 7"),
                          ({"C_grid": [-1.0]}, "C_grid must be"), ({"val_fraction": 1.5}, "val_fraction"),
                          ({"l2_grid": []}, "l2_grid must be")):
    protocol = "knn" if "k" in next(iter(fields)) else ("ridge_full" if "l2" in next(iter(fields)) else "linear_probe")
    with pytest.raises(tasks.TaskError, match=message):
      tasks.make_task(name="t", dataset="digits", protocol=protocol, train_split="train", test_split="test", pp=PP,
                      **fields)


@pytest.mark.slow
def test_report_draws_reliability_diagrams(probe_run, tmp_path):
  from evalkit.report import leaderboard
  out, _, _ = probe_run
  page = leaderboard.write(out / "r", tmp_path)["html"].read_text()
  assert "Calibration: reliability diagrams" in page and "digits_linear_probe" in page
