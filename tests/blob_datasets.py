"""Small TFDS datasets that tests build themselves: a user's own single-label dataset and a multi-label relabelling.

`evalkit_test_blobs`: 3 classes of noisy 8×8 blobs, train 300 / test 150, whose content depends on `CONTENT["seed"]`
(a test changes it to make another dataset of the same name and version). `evalkit_test_blobs_real`: the very same
test images with a *set* of labels each (like ImageNet-ReaL): the original label, plus the next class for every
third image, and no label at all for every fifth.
"""
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CONTENT = {"seed": 0}
NUM_CLASSES = 3


def blob_images(n, offset):
  rng = np.random.default_rng([CONTENT["seed"], offset])
  centres = np.random.default_rng(CONTENT["seed"]).integers(1, 7, size=(NUM_CLASSES, 2))
  for i in range(n):
    label = i % NUM_CLASSES
    image = rng.normal(90, 70, size=(8, 8))
    y, x = centres[label]
    image[y - 1:y + 2, x - 1:x + 2] += 50
    yield i, Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L"), label


def real_label_set(i, label):
  if i % 5 == 0:
    return []
  return sorted({label, (label + 1) % NUM_CLASSES}) if i % 3 == 0 else [label]


class EvalkitTestBlobs(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                             "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(300, 1), "test": self._generate_examples(150, 2)}

  def _generate_examples(self, n, offset):
    for i, image, label in blob_images(n, offset):
      yield i, {"image": image, "label": label}


class EvalkitTestBlobsReal(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "real_label": tfds.features.Sequence(tfds.features.ClassLabel(num_classes=NUM_CLASSES))}))

  def _split_generators(self, dl_manager):
    return {"validation": self._generate_examples()}

  def _generate_examples(self):
    for i, image, label in blob_images(150, 2):
      yield i, {"image": image, "real_label": real_label_set(i, label)}


def prepare(builder_cls, data_dir, seed=0):
  CONTENT["seed"] = seed
  builder_cls(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
