"""Tests for evalkit.data.{embedded,source}: real data in temporary data_dirs."""

import multiprocessing
import os
import pathlib
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from evalkit import data
from evalkit.data import embedded
from evalkit.data import source

FASHION_DIR = embedded.FASHION_MNIST_DEFAULT_DIR


def _files_with_mtimes(root):
  return {str(p): p.stat().st_mtime_ns for p in pathlib.Path(root).rglob("*")
          if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds_digits"))
  embedded.ensure_prepared("digits", d)
  return d


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
  if not os.path.isdir(FASHION_DIR):
    pytest.skip(f"{FASHION_DIR} absent: apt-get install dataset-fashion-mnist")
  d = str(tmp_path_factory.mktemp("tfds_fashion"))
  data.open_split("fashion_mnist", "test", d)  # Prepares both splits, once.
  return d


def _all(reader, pp=None, batch_size=512, **kw):
  batches = list(reader.iter_batches(batch_size, pp, **kw))
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# --- digits ------------------------------------------------------------------


def test_digits_match_sklearn(digits_dir):
  sk = load_digits()
  # Independent statement of the documented scaling: v * 255 / 16, rounded
  # half up.
  want_images = np.floor(sk.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
  train = data.open_split("digits", "train", digits_dir)
  test = data.open_split("digits", "test", digits_dir)
  assert (len(train), len(test)) == (1297, 500)
  assert train.num_classes == 10 and train.version == "1.0.0"
  np.testing.assert_array_equal(train.read_labels(), sk.target[:1297])
  np.testing.assert_array_equal(test.read_labels(), sk.target[1297:])
  got = _all(test)
  assert got["image"].dtype == np.uint8 and got["image"].shape == (500, 8, 8, 1)
  np.testing.assert_array_equal(got["image"], want_images[1297:])
  np.testing.assert_array_equal(got["label"], sk.target[1297:])
  np.testing.assert_array_equal(got["id"], np.arange(500))
  got = _all(train)
  np.testing.assert_array_equal(got["image"], want_images[:1297])


def test_second_open_does_not_rebuild(digits_dir):
  before = _files_with_mtimes(digits_dir)
  assert any("array_record" in f for f in before)
  reader = data.open_split("digits", "train", digits_dir)
  assert len(reader) == 1297
  assert _files_with_mtimes(digits_dir) == before


def test_split_slicing(digits_dir):
  r = data.open_split("digits", "train[1000:]", digits_dir)
  assert (r.global_start, r.global_stop, len(r)) == (1000, 1297, 297)
  np.testing.assert_array_equal(r.ids, np.arange(1000, 1297))
  np.testing.assert_array_equal(r.read_labels(), load_digits().target[1000:1297])
  np.testing.assert_array_equal(_all(r, batch_size=100)["id"], r.ids)
  r = data.open_split("digits", "train[:2%]", digits_dir)
  assert len(r) == round(1297 * 0.02) == 26
  assert source.dataset_fingerprint(r) == dict(
      name="digits", version="1.0.0", split="train[:2%]", start=0, stop=26)
  r = data.open_split("digits", "test[-10:]", digits_dir)
  np.testing.assert_array_equal(r.ids, np.arange(490, 500))


@pytest.mark.parametrize("bad", ["train+test", "train[:10]+train[20:]",
                                 "validation", "train[:"])
def test_bad_splits(digits_dir, bad):
  with pytest.raises(ValueError):
    data.open_split("digits", bad, digits_dir)


@pytest.mark.parametrize("split", ["train", "test[7:]"])
def test_multi_host_shards_concatenate_to_dataset_order(digits_dir, split):
  whole = data.open_split("digits", split, digits_dir)
  labels = whole.read_labels()
  readers = [data.open_split("digits", split, digits_dir, process_index=p,
                             process_count=3) for p in range(3)]
  sizes = [len(r) for r in readers]
  assert sum(sizes) == len(whole) and max(sizes) - min(sizes) <= 1
  assert readers[1].shard_sizes == sizes
  assert [readers[0].shard_bounds(p) for p in range(3)] == [
      (r.ids[0], r.ids[-1] + 1) for r in readers]
  np.testing.assert_array_equal(np.concatenate([r.ids for r in readers]),
                                whole.ids)
  np.testing.assert_array_equal(
      np.concatenate([r.read_labels() for r in readers]), labels)
  # Batches too, with a batch size that does not divide the shards.
  got = [_all(r, batch_size=50) for r in readers]
  np.testing.assert_array_equal(np.concatenate([g["label"] for g in got]), labels)
  for r in readers:  # Every host reports the same global range.
    assert source.dataset_fingerprint(r) == source.dataset_fingerprint(whole)


def test_iter_batches_independent_of_threads_and_batch_size(digits_dir):
  r = data.open_split("digits", "test", digits_dir)
  pp = "decode|resize(12)|central_crop(10)|value_range(-1, 1)"
  ref = _all(r, pp, batch_size=64, num_threads=1)
  assert ref["image"].shape == (500, 10, 10, 3)
  assert ref["image"].dtype == np.float32
  sizes = [len(b["id"]) for b in r.iter_batches(64, pp, num_threads=4)]
  assert sizes == [64] * 7 + [52]
  for bs, threads in [(64, 4), (7, 1), (7, 4), (500, 2)]:
    got = _all(r, pp, batch_size=bs, num_threads=threads)
    for k in ("image", "label", "id"):
      np.testing.assert_array_equal(got[k], ref[k])


def test_random_pp_reproducible_per_example(digits_dir):
  r = data.open_split("digits", "test[:40]", digits_dir)
  pp = "decode|resize(12)|random_crop(8)|flip_lr"
  with pytest.raises(ValueError, match="seed"):
    next(r.iter_batches(8, pp))
  a = _all(r, pp, batch_size=8, num_threads=1, seed=3)["image"]
  b = _all(r, pp, batch_size=13, num_threads=4, seed=3)["image"]
  c = _all(r, pp, batch_size=8, num_threads=1, seed=4)["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_early_stop_releases_threads(digits_dir):
  r = data.open_split("digits", "train", digits_dir)
  it = r.iter_batches(10, "decode", num_threads=2)
  assert len(next(it)["id"]) == 10
  it.close()  # Must not hang or leak work.


def test_worker_processes_give_the_same_batches(digits_dir):
  """Decoding and pp in 1 or 2 spawned worker processes give the batches this process's threads give, bit for bit:
  dataset order, random pp (per-example RNG) and shuffled id batches included."""
  r = data.open_split("digits", "train", digits_dir)
  pp = "decode|resize(12)|random_crop(10)|flip_lr|value_range(-1, 1)"
  ref = _all(r, pp, batch_size=100, seed=7)
  order = np.random.default_rng(0).permutation(r.ids)
  id_batches = [(order[i:i + 64], (7, i)) for i in range(0, 192, 64)]
  ref_shuffled = list(r.iter_id_batches(id_batches, pp))
  for workers in (1, 2):
    got = _all(r, pp, batch_size=100, seed=7, workers=workers)
    assert got.keys() == ref.keys()
    for k in ref:
      np.testing.assert_array_equal(got[k], ref[k])
    shuffled = list(r.iter_id_batches(id_batches, pp, workers=workers))
    for a, b in zip(ref_shuffled, shuffled, strict=True):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
  it = r.iter_batches(10, "decode", workers=2)
  assert len(next(it)["id"]) == 10
  it.close()  # Must not hang or leave processes behind.


@pytest.mark.slow  # ≈ 15 s on 2 cores, mostly importing TensorFlow to write and read the tfrecord files
def test_worker_processes_decode_tfrecord_examples(tmp_path):
  """A tfrecord split is read in this process (tf.data, in file order); its examples are decoded and preprocessed in
  the workers, identically."""
  pytest.importorskip("tensorflow")
  import blob_datasets
  blob_datasets.EvalkitTestBlobs(data_dir=str(tmp_path)).download_and_prepare(file_format="tfrecord")
  r = data.open_split("evalkit_test_blobs", "train", str(tmp_path))
  assert not r._backend.random_access  # pylint: disable=protected-access
  pp = "decode|resize(6)|value_range(-1, 1)"
  ref = _all(r, pp, batch_size=50)
  got = _all(r, pp, batch_size=50, workers=2)
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k])


def test_worker_parts_in_shared_memory_are_freed_read_or_not():
  """A worker's part travels in shared memory: read, it equals what was put in (arrays of objects travel pickled);
  read or dropped unread (the consumer stopped early), its segment is unlinked."""
  from multiprocessing import shared_memory
  made = []

  def part(i):
    shared = source.SharedPart.of({"image": np.full((3, 5, 5), i, np.float32), "id": np.arange(3) + 3 * i,
                                   "name": np.array([f"img{i}"] * 3, object)})
    made.append(shared.name)
    return shared

  jobs = ([lambda i=i: part(i)] for i in range(6))
  batches = source.ordered_batches(jobs, 1, prefetch=2)
  first = next(batches)
  np.testing.assert_array_equal(first["image"], np.zeros((3, 5, 5), np.float32))
  assert first["id"].tolist() == [0, 1, 2] and first["name"].tolist() == ["img0"] * 3
  deadline = time.monotonic() + 30
  while len(made) < 3 and time.monotonic() < deadline:  # the thread makes the two parts prefetched ahead
    time.sleep(0.01)
  batches.close()  # those two were never read
  assert len(made) == 3
  for name in made:
    with pytest.raises(FileNotFoundError):
      shared_memory.SharedMemory(name=name)


def test_default_workers_only_where_they_pay(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
  assert source.default_workers(source.WORKERS_FROM_EXAMPLES) == 4
  assert source.default_workers(source.WORKERS_FROM_EXAMPLES - 1) == 0  # threads: spawning would cost more
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
  assert source.default_workers(10**6) == 16
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
  assert source.default_workers(10**6) == 0  # one core: a worker would only add the transfer


# --- errors ------------------------------------------------------------------


def test_missing_dataset_message(tmp_path):
  d = str(tmp_path / "empty")
  with pytest.raises(data.DatasetNotPrepared) as e:
    data.open_split("cifar100", "test", d)
  msg = str(e.value)
  assert "\n" not in msg and "'cifar100'" in msg
  # The builder API works with what evalkit installs (the `tfds build` CLI needs TensorFlow).
  assert f"tfds.builder('cifar100', data_dir='{d}').download_and_prepare(file_format='array_record')" in msg
  with pytest.raises(data.DatasetNotPrepared, match="no_such_dataset_xyz"):
    data.open_split("no_such_dataset_xyz", "train", d)
  with pytest.raises(data.DatasetNotPrepared, match="downloads/manual"):
    data.open_split("imagenet2012", "validation", d)
  with pytest.raises(data.DatasetNotPrepared, match="9.9.9"):
    data.open_split("fashion_mnist:9.9.9", "test", d)


def test_fashion_mnist_missing_files(tmp_path, monkeypatch):
  monkeypatch.setenv(embedded.FASHION_MNIST_ENV, str(tmp_path / "nothing"))
  with pytest.raises(data.DatasetNotPrepared) as e:
    data.open_split("fashion_mnist", "test", str(tmp_path / "tfds"))
  msg = str(e.value)
  assert "\n" not in msg
  assert "apt-get install dataset-fashion-mnist" in msg
  assert embedded.FASHION_MNIST_ENV in msg


def test_tfrecord_without_tensorflow_is_one_clear_line(monkeypatch):
  monkeypatch.setattr(source, "_tensorflow_available", lambda: False)  # as on an install without the `tf` extra

  class FakeInfo:
    full_name = "imagenet2012/5.1.0"
    features = {}

  class FakeBuilder:
    info = FakeInfo()
    data_dir_root = "/data/tfds"

  with pytest.raises(source.DatasetUnreadable) as e:
    source._TfRecordBackend(FakeBuilder(), "validation")
  msg = str(e.value)
  assert "evalkit[tf]" in msg and "\n" not in msg
  assert "tfds.builder('imagenet2012', data_dir='/data/tfds').download_and_prepare(file_format='array_record')" in msg


# --- preparation safety --------------------------------------------------------


def _prepare_and_die_midway(d):
  """Child process: killed hard (no cleanup) while writing the train split."""
  original = embedded.Digits._generate_examples

  def die_midway(self, images, labels):
    for i, example in enumerate(original(self, images, labels)):
      if i == 100:
        os._exit(3)  # Like SIGKILL or a power cut: no except/finally runs.
      yield example

  embedded.Digits._generate_examples = die_midway
  embedded.ensure_prepared("digits", d)


def test_interrupted_prepare_is_not_seen_as_prepared(tmp_path):
  d = str(tmp_path)
  child = multiprocessing.get_context("spawn").Process(
      target=_prepare_and_die_midway, args=(d,))
  child.start()
  child.join(120)
  assert child.exitcode == 3
  assert not embedded.builder("digits", d).is_prepared()
  assert any(n.startswith("incomplete.") for n in os.listdir(f"{d}/digits"))
  reader = data.open_split("digits", "train", d)  # Prepares for real.
  np.testing.assert_array_equal(reader.read_labels(), load_digits().target[:1297])
  assert os.listdir(f"{d}/digits") == ["1.0.0"]  # Leftovers cleaned up.


def _prepare_in_child(d):
  embedded.ensure_prepared("digits", d)
  return len(data.open_split("digits", "test", d))


def test_concurrent_prepare(tmp_path):
  d = str(tmp_path)
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(2) as pool:
    assert pool.map(_prepare_in_child, [d, d]) == [500, 500]
  versions = os.listdir(os.path.join(d, "digits"))
  assert versions == ["1.0.0"]  # No leftover incomplete.* directories.


# --- fashion_mnist ---------------------------------------------------------------


def test_fashion_mnist(fashion_dir):
  train = data.open_split("fashion_mnist", "train", fashion_dir)
  test = data.open_split("fashion_mnist", "test", fashion_dir)
  assert (len(train), len(test)) == (60000, 10000)
  assert train.num_classes == 10
  assert train.features["label"].names[0] == "T-shirt/top"
  assert np.bincount(train.read_labels()).tolist() == [6000] * 10
  assert np.bincount(test.read_labels()).tolist() == [1000] * 10
  # Pixel statistics as published (0.2860 / 0.3530 over all of train); the
  # first 20000 images are within 3e-4 of those and keep the test fast.
  total = total_sq = count = 0
  for batch in data.open_split("fashion_mnist", "train[:20000]",
                               fashion_dir).iter_batches(5000):
    x = batch["image"].astype(np.float64) / 255
    total, total_sq, count = total + x.sum(), total_sq + (x * x).sum(), count + x.size
  mean = total / count
  std = np.sqrt(total_sq / count - mean * mean)
  assert abs(mean - 0.2860) < 1e-3 and abs(std - 0.3530) < 1e-3


@pytest.mark.slow  # ≈ 7 s on 2 cores: 4 passes over 4,000 images, 2 pools of worker processes started
def test_fashion_mnist_pixels_and_fewshot_do_not_depend_on_workers(fashion_dir):
  """Fashion-MNIST through the few-shot pp in threads or in 2 worker processes: the same pixels in the same order,
  and so the same few-shot numbers on them (1 worker: the digits test above)."""
  from evalkit.probes import ridge
  pp = "decode|resize(28)|value_range(-1, 1)"
  splits = {s: data.open_split("fashion_mnist", s, fashion_dir) for s in ("train[:3000]", "test[:1000]")}
  runs = {w: {s: _all(r, pp, batch_size=500, workers=w) for s, r in splits.items()} for w in (0, 2)}
  accs = {}
  for workers, run in runs.items():
    for split, batch in run.items():
      for k in batch:
        np.testing.assert_array_equal(batch[k], runs[0][split][k])
    train, test = run["train[:3000]"], run["test[:1000]"]
    accs[workers] = ridge.ridge_fewshot(train["image"].reshape(3000, -1), train["label"],
                                        test["image"].reshape(1000, -1), test["label"], num_classes=10,
                                        shots=(1, 10), seeds=(0, 1))
  assert accs[0] == accs[2]
  assert 0.4 < accs[0][(10, 0)] < 0.9, accs[0]


def test_fashion_mnist_pixels_equal_idx_files(fashion_dir):
  r = data.open_split("fashion_mnist", "test[-300:]", fashion_dir)
  got = _all(r, batch_size=128)
  want = embedded.read_idx(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"))
  labels = embedded.read_idx(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))
  assert got["image"].shape == (300, 28, 28, 1)
  np.testing.assert_array_equal(got["image"][..., 0], want[-300:])
  np.testing.assert_array_equal(got["label"], labels[-300:])
  r = data.open_split("fashion_mnist", "train[:2%]", fashion_dir,
                      process_index=1, process_count=2)
  assert (r.global_stop, r.start, len(r)) == (1200, 600, 600)
