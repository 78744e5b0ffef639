"""Errors of the data stage: a dataset that is not prepared (and how to prepare it), or that cannot be read here.

Its own module so that the TFDS reader (source.py) and the embedded builders (embedded.py) both use them without
importing each other.
"""
from __future__ import annotations

import os

from evalkit.errors import EvalkitError


class DatasetNotPrepared(EvalkitError):
  """A dataset is not in the data_dir (or cannot be prepared); one-line message."""

  def __init__(self, name: str, data_dir: str | None, how: str | None = None,
               *, manual: bool = False):
    self.name, self.data_dir = name, data_dir
    if how is None:
      how = f"prepare it with {prepare_command(name, data_dir)}"
      manual_dir = os.path.join(str(data_dir), "downloads", "manual")
      if name.split("/")[0].split(":")[0].startswith("imagenet2012"):
        how += (" after placing the manual download (ILSVRC2012_img_train.tar, "
                f"ILSVRC2012_img_val.tar) in {manual_dir}")
      elif manual:
        how += f" after placing its manual download in {manual_dir}"
    where = f" in data_dir {data_dir}" if data_dir else ""
    super().__init__(f"Dataset {name!r} is not prepared{where}: {how}")


def prepare_command(name: str, data_dir: str | None) -> str:
  """A command that prepares `name` as array_record with what evalkit installs (`tfds build` needs TensorFlow)."""
  return (f"`python3 -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
          f".download_and_prepare(file_format='array_record')\"`")


class DatasetUnreadable(EvalkitError):
  """A prepared dataset that cannot be read in this installation; one-line message."""


class BadSplit(EvalkitError, ValueError):
  """A split spec that tfds cannot parse, names no split of the dataset, or selects no examples."""
