"""Data stage: TFDS splits in dataset order (sharded over hosts) + big_vision pp.

  reader = data.open_split("fashion_mnist", "test", data_dir)
  for batch in reader.iter_batches(256, "decode|resize(224)|value_range(-1, 1)"):
    batch["image"], batch["label"], batch["id"]
"""
from evalkit.data import pp
from evalkit.data.errors import DatasetNotPrepared, DatasetUnreadable
from evalkit.data.pp import Preprocess, parse
from evalkit.data.source import Reader, SplitReader, dataset_fingerprint, default_data_dir, open_split

__all__ = ["pp", "Preprocess", "parse", "DatasetNotPrepared", "DatasetUnreadable", "Reader", "SplitReader",
           "dataset_fingerprint", "default_data_dir", "open_split"]
