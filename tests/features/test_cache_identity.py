"""The feature cache keys on the data's bytes: two datasets with one name and version never share features."""
import blob_datasets
from evalkit import distributed, evaluate, subjects, tasks


def prepare(data_dir, seed):
  blob_datasets.prepare(blob_datasets.EvalkitTestBlobs, data_dir, seed)


def test_same_name_and_version_never_share_cached_features(tmp_path):
  task = tasks.make_task(name="blobs", dataset="evalkit_test_blobs", protocol="fewshot_ridge", train_split="train",
                    test_split="test", pp="decode|value_range(-1, 1)", shots=(1, 5), seeds=(0, 1, 2), headline_shots=5)
  subject = subjects.resolve_subject(subjects.PIXELS)
  mesh = distributed.data_mesh()

  def score(data_dir, cache_dir):
    settings = evaluate.EvalSettings(data_dir=str(data_dir), results_dir=str(tmp_path / "r"), cache_dir=cache_dir,
                                     progress=False, loo=False)
    record, _, _ = evaluate.evaluate_task(subject, task, settings, mesh)
    return record["metrics"]["1shot"]["per_seed"], record["timings"]["features_train_cached"]

  cache = str(tmp_path / "cache")
  prepare(tmp_path / "a", seed=0)
  prepare(tmp_path / "b", seed=1)  # another data_dir, same name and version, other images
  truth_a, truth_b = score(tmp_path / "a", None), score(tmp_path / "b", None)
  assert truth_a[0] != truth_b[0]  # the two datasets really give different numbers

  assert score(tmp_path / "a", cache) == (truth_a[0], False)
  assert score(tmp_path / "a", cache) == (truth_a[0], True)  # the same data does hit
  assert score(tmp_path / "b", cache) == (truth_b[0], False)  # same name/version/split, other bytes: no hit

  # Re-prepared in place with other content: the old entry is not trusted either.
  for path in sorted((tmp_path / "a").rglob("*"), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  prepare(tmp_path / "a", seed=1)
  assert score(tmp_path / "a", cache) == (truth_b[0], True)  # now byte-identical to b's data, whose entry exists
