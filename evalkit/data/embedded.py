"""Two small datasets evalkit can prepare offline, in TFDS array_record form.

* ``digits``: scikit-learn's ``load_digits()`` (1797 8x8 images, 10 classes).
  Pixel values 0..16 are stored as uint8 ``(v * 255 + 8) // 16``, i.e.
  v * 255 / 16 rounded half up (0 -> 0, 8 -> 128, 16 -> 255). Splits, both in
  scikit-learn order: ``train`` = the first 1297 examples, ``test`` = the last
  500.
* ``fashion_mnist``: the gzipped IDX files of the Debian/Ubuntu package
  ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist, or the
  directory in $EVALKIT_FASHION_MNIST_DIR). Splits ``train`` (60000) and
  ``test`` (10000) in file order. Features are those of tfds's own
  ``fashion_mnist`` (image (28, 28, 1) uint8, label with the 10 class names),
  so data prepared by tfds' own ``fashion_mnist`` builder reads the same way.

Both builders keep example order (``disable_shuffling``) and carry version
1.0.0, not a version of tfds's registered ``fashion_mnist`` (3.0.1, whose
order is shuffled), so the two never share a directory nor a cache key; read
a tfds-built copy as "fashion_mnist:3.0.1".

Preparing is offline, needs no TensorFlow (images are handed to tfds as PIL
images, which tfds encodes to PNG itself), runs under an exclusive file lock so
concurrent processes prepare once, and is atomic: tfds writes into an
``incomplete.*`` directory and renames it when done, so an interrupted prepare
never looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import glob
import os
import shutil
import struct

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from evalkit.data.errors import DatasetNotPrepared

FASHION_MNIST_ENV = "EVALKIT_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot")
DIGITS_TRAIN_SIZE = 1297  # The remaining 500 examples form `test`.

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
  """Maps scikit-learn digits' 0..16 values to 0..255 (rounding half up)."""
  values = np.asarray(values).astype(np.int64)
  return ((values * 255 + 8) // 16).astype(np.uint8)


def _pil_gray(image_hw: np.ndarray):
  """A (H, W) uint8 array as a PIL "L" image.

  tfds's Image feature encodes numpy arrays through TensorFlow but PIL images
  through PIL, so handing it PIL images keeps preparing TF-free.
  """
  return Image.fromarray(np.ascontiguousarray(image_hw), mode="L")


def _gray_image_info(builder, shape, label, description, homepage):
  """DatasetInfo of an (image, label) dataset in source order."""
  return tfds.core.DatasetInfo(
      builder=builder, description=description,
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=shape), "label": label}),
      supervised_keys=("image", "label"), homepage=homepage,
      disable_shuffling=True)  # Keep the source order: it is the example id.


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """scikit-learn's 8x8 handwritten digits."""
  name = "digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "evalkit: sklearn order, train 1297 / test 500."}

  def _info(self):
    return _gray_image_info(
        self, (8, 8, 1), tfds.features.ClassLabel(num_classes=10),
        "scikit-learn load_digits(): 1797 8x8 grey digits, values 0..16 "
        "scaled to 0..255 ((v*255+8)//16).",
        "https://archive.ics.uci.edu/dataset/80")

  def _split_generators(self, dl_manager):
    del dl_manager  # Offline: the data ships with scikit-learn.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    data = load_digits()
    images, labels = digits_to_uint8(data.images), data.target
    cut = DIGITS_TRAIN_SIZE
    return {
        "train": self._generate_examples(images[:cut], labels[:cut]),
        "test": self._generate_examples(images[cut:], labels[cut:]),
    }

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": _pil_gray(image), "label": int(label)}


class FashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Fashion-MNIST from the Debian package's IDX files."""
  name = "fashion_mnist"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "evalkit: from local IDX files, file order."}

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self):
    return _gray_image_info(
        self, (28, 28, 1), tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
        "Fashion-MNIST (Zalando): 28x28 grey article images, 10 classes, "
        "train 60000 / test 10000 in file order.",
        "https://github.com/zalandoresearch/fashion-mnist")

  def _split_generators(self, dl_manager):
    del dl_manager  # Offline: files come from the Debian package.
    source = fashion_mnist_source_dir(self._source_dir)
    return {
        split: self._generate_examples(os.path.join(source, images),
                                       os.path.join(source, labels), count)
        for split, (images, labels, count) in _FASHION_FILES.items()
    }

  def _generate_examples(self, images_path, labels_path, count):
    images = read_idx(images_path, count)
    labels = read_idx(labels_path, count)
    for i in range(count):
      yield i, {"image": _pil_gray(images[i]), "label": int(labels[i])}


EMBEDDED = {"digits": Digits, "fashion_mnist": FashionMnist}


def fashion_mnist_source_dir(source_dir: str | None = None,
                             data_dir: str | None = None) -> str:
  """Where the IDX files are; raises DatasetNotPrepared when they are missing.

  Args:
    source_dir: explicit directory; else $EVALKIT_FASHION_MNIST_DIR, else the
      Debian package's directory.
    data_dir: only named in the error message.
  """
  source = (source_dir or os.environ.get(FASHION_MNIST_ENV)
            or FASHION_MNIST_DEFAULT_DIR)
  needed = [f for files in _FASHION_FILES.values() for f in files[:2]]
  missing = [f for f in needed if not os.path.exists(os.path.join(source, f))]
  if missing:
    raise DatasetNotPrepared(
        "fashion_mnist", data_dir,
        how=(f"its source files are missing in {source} ({missing[0]}...): "
             f"`apt-get install dataset-fashion-mnist` or set "
             f"{FASHION_MNIST_ENV}"))
  return source


def fashion_mnist_available(source_dir: str | None = None,
                            data_dir: str | None = None) -> bool:
  """Whether fashion_mnist can be opened: source files found, or prepared."""
  if data_dir and builder("fashion_mnist", data_dir).is_prepared():
    return True
  try:
    fashion_mnist_source_dir(source_dir)
  except DatasetNotPrepared:
    return False
  return True


def read_idx(path: str, count: int | None = None) -> np.ndarray:
  """Reads a (gzipped) IDX file of unsigned bytes into a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
  if count is not None and shape[0] != count:
    raise ValueError(f"{path}: expected {count} items, found {shape[0]}")
  return array


@contextlib.contextmanager
def _file_lock(path: str):
  """Exclusive advisory lock (flock) held for the duration of the block."""
  with open(path, "a+") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def builder(name: str, data_dir: str, **kwargs):
  """An embedded dataset's builder, writing array_record in `data_dir`."""
  if name not in EMBEDDED:
    raise KeyError(f"{name!r} is not embedded; embedded: {sorted(EMBEDDED)}")
  return EMBEDDED[name](data_dir=data_dir, file_format="array_record", **kwargs)


def ensure_prepared(name: str, data_dir: str, **kwargs) -> None:
  """Prepares embedded dataset `name` in `data_dir` unless already there.

  Args:
    name: "digits" or "fashion_mnist".
    data_dir: the TFDS data directory.
    **kwargs: builder options, e.g. `source_dir=` for fashion_mnist's IDX files.
  """
  os.makedirs(data_dir, exist_ok=True)
  if builder(name, data_dir, **kwargs).is_prepared():
    return  # Fast path without taking the lock.
  with _file_lock(os.path.join(data_dir, f".evalkit-prepare-{name}.lock")):
    # Another process may have finished while we waited for the lock; a fresh
    # builder re-reads the directory.
    b = builder(name, data_dir, **kwargs)
    if b.is_prepared():
      return
    if name == "fashion_mnist":  # Fail before tfds creates any directory.
      fashion_mnist_source_dir(kwargs.get("source_dir"), data_dir)
    _remove_stale_incomplete(data_dir, name, str(b.VERSION))
    b.download_and_prepare()


def _remove_stale_incomplete(data_dir: str, name: str, version: str) -> None:
  """Deletes what interrupted prepares of this version left behind.

  Called under the prepare lock, so no live evalkit prepare owns them; tfds'
  own builders use other versions and their directories are left alone.
  """
  for path in glob.glob(os.path.join(data_dir, name, f"incomplete.*_{version}")):
    shutil.rmtree(path, ignore_errors=True)
