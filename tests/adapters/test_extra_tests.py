"""Extra test sets of a task (same label space, e.g. ImageNet-ReaL / v2): scored with the same model, with CIs."""

import numpy as np
import pytest

import blob_datasets
from evalkit import distributed, evaluate, subjects, tasks
from evalkit.adapters import extra_tests

EXTRAS = (tasks.ExtraTest("same", "evalkit_test_blobs", "test"),
          tasks.ExtraTest("real", "evalkit_test_blobs_real", "validation", label_key="real_label"))


@pytest.fixture(scope="module")
def blobs_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("blobs")
  blob_datasets.prepare(blob_datasets.EvalkitTestBlobs, d)
  blob_datasets.prepare(blob_datasets.EvalkitTestBlobsReal, d)
  return str(d)


def expected_real(predictions):
  """Accuracy over images with a non-empty label set, a prediction counting when it is in the set."""
  hits = [p in blob_datasets.real_label_set(i, i % 3) for i, p in enumerate(predictions)
          if blob_datasets.real_label_set(i, i % 3)]
  return np.mean(hits), len(hits)


def test_label_sets_count_a_prediction_in_the_set_and_skip_empty_sets():
  labels = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
  scored, correct = extra_tests.correct_items(np.array([[0, 2, 2], [1, 1, 1]]), labels)
  assert scored.tolist() == [True, False, True] and correct.tolist() == [[True, True], [False, True]]


def test_fewshot_reports_every_extra_test_set(blobs_dir, tmp_path):
  task = tasks.make_task(name="blobs", dataset="evalkit_test_blobs", protocol="fewshot_ridge", train_split="train",
                    test_split="test", pp="decode|value_range(-1, 1)", shots=(1, 5), seeds=(0, 1, 2),
                    headline_shots=5, extra_tests=EXTRAS)
  settings = evaluate.EvalSettings(data_dir=blobs_dir, results_dir=str(tmp_path), progress=False, loo=False)
  record, _, items = evaluate.evaluate_task(subjects.resolve_subject(subjects.PIXELS), task, settings,
                                               distributed.data_mesh())
  same, real = record["extra_tests"]["same"], record["extra_tests"]["real"]
  for k in ("1shot", "5shot"):  # the main test split again: identical numbers
    assert same["metrics"][k]["value"] == record["metrics"][k]["value"]
    assert same["metrics"][k]["per_seed"] == list(record["metrics"][k]["per_seed"].values())
  assert (real["n_scored"], real["n_skipped"]) == (120, 30)  # every fifth image has an empty label set
  names = list(items["episodes"])
  for k in ("1shot", "5shot"):
    want = [expected_real(items["predictions"][names.index(f"{k}/seed{s}")])[0] for s in (0, 1, 2)]
    m = real["metrics"][k]
    np.testing.assert_allclose(m["per_seed"], want)
    assert m["ci95"][0] < m["value"] < m["ci95"][1] and m["se"] > 0, m
  assert real["metrics"]["5shot"]["value"] > record["metrics"]["5shot"]["value"]  # the sets only add right answers
  assert record["task"]["spec"]["extra_tests"][1]["label_key"] == "real_label"  # part of the spec hash


@pytest.mark.slow  # ≈ 20 s on 2 cores
def test_finetune_reports_every_extra_test_set(blobs_dir, random_vit, tmp_path):
  subject = subjects.resolve_subject(str(random_vit(0, "gap", num_classes=3)), name="mu7",
                                     model_options={"variant": "mu/7", "pool_type": "gap"})
  task = tasks.make_task(name="blobs_ft", dataset="evalkit_test_blobs", protocol="finetune", train_split="train",
                    test_split="test", pp="decode|resize(28)|value_range(-1, 1)",
                    pp_train="decode|resize(28)|flip_lr|value_range(-1, 1)", batch_size=32, total_steps=30,
                    warmup_steps=5, lr_grid=(0.03,), minival_fraction=0.1, polyak_decay=0.9, extra_tests=EXTRAS)
  settings = evaluate.EvalSettings(data_dir=blobs_dir, results_dir=str(tmp_path / "r"), progress=False)
  record, _, items = evaluate.evaluate_task(subject, task, settings, distributed.data_mesh())
  same, real = record["extra_tests"]["same"], record["extra_tests"]["real"]
  for key in ("top1", "top1_polyak"):
    assert same["metrics"][key].items() <= record["metrics"][key].items()  # the main record adds per_class, ece
    acc, n = expected_real(items["predictions"][list(items["episodes"]).index(key)])
    assert real["metrics"][key]["value"] == pytest.approx(acc) and real["metrics"][key]["n"] == n == 120
    lo, hi = real["metrics"][key]["ci95"]
    assert lo <= acc <= hi


@pytest.mark.parametrize("protocol", ["knn", "linear_probe", "ridge_full"])
def test_probes_score_every_extra_test_set(blobs_dir, tmp_path, protocol):
  """The full-data probes score their fitted model on each extra set: the main split again gives the same top-1."""
  fields = {"knn": {"ks": (1, 5), "headline_k": 5}, "linear_probe": {"C_grid": (0.1, 1.0)}, "ridge_full": {}}
  task = tasks.make_task(name="blobs", dataset="evalkit_test_blobs", protocol=protocol, train_split="train",
                         test_split="test", pp="decode|value_range(-1, 1)", extra_tests=EXTRAS, **fields[protocol])
  settings = evaluate.EvalSettings(data_dir=blobs_dir, results_dir=str(tmp_path), progress=False)
  record, _, items = evaluate.evaluate_task(subjects.resolve_subject(subjects.PIXELS), task, settings,
                                            distributed.data_mesh())
  same, real = record["extra_tests"]["same"], record["extra_tests"]["real"]
  base = "5nn" if protocol == "knn" else "top1"
  assert same["metrics"][base]["value"] == record["metrics"][base]["value"]
  pred = items["predictions"][list(items["episodes"]).index(base)]
  assert real["metrics"][base]["value"] == pytest.approx(expected_real(pred)[0])
