"""In-memory splits with the reading interface of `source.SplitReader` (benchmarks, tests, small upstream sets)."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

import numpy as np

from evalkit.data import pp as pp_lib
from evalkit.data.source import SplitReader, example_rng, ordered_batches, shard_bounds, stack_examples


class ArrayReader:
  """An in-memory split with SplitReader's reading interface (benchmarks, tests, arrays from elsewhere).

  Rows are sharded over processes exactly like SplitReader; ids are row indices.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, *, example_ids: np.ndarray | None = None,
               num_classes: int | None = None, process_index: int = 0, process_count: int = 1):
    self.images, self.labels = images, np.asarray(labels)
    # Absolute ids of the rows (ascending), e.g. those of the split the arrays were read from.
    self.example_ids = np.arange(len(images), dtype=np.int64) if example_ids is None else np.asarray(example_ids)
    self.num_classes = num_classes if num_classes is not None else int(self.labels.max()) + 1
    self.process_index, self.process_count = process_index, process_count
    self.global_start, self.global_stop = int(self.example_ids[0]), int(self.example_ids[-1]) + 1

  @property
  def shard_sizes(self) -> list[int]:
    return [b - a for a, b in (shard_bounds(0, len(self.images), p, self.process_count)
                               for p in range(self.process_count))]

  @property
  def ids(self) -> np.ndarray:
    return self.example_ids[slice(*shard_bounds(0, len(self.images), self.process_index, self.process_count))]

  def __len__(self) -> int:
    return len(self.ids)

  def read_labels(self) -> np.ndarray:
    return self.labels[self._rows(self.ids)]

  def content_digest(self, file_hash=None) -> str:
    """sha256 of the arrays themselves (SplitReader.content_digest's counterpart; no files involved)."""
    h = hashlib.sha256()
    for a in (self.images, self.labels, self.example_ids):
      h.update(f"{a.dtype}{a.shape}".encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

  def _rows(self, ids: np.ndarray) -> np.ndarray:
    rows = np.minimum(np.searchsorted(self.example_ids, ids), len(self.example_ids) - 1)
    if not np.array_equal(self.example_ids[rows], ids):  # searchsorted alone would map them to a neighbour
      missing = np.setdiff1d(ids, self.example_ids)
      raise ValueError(f"example ids not in this in-memory split, e.g. {missing[:5].tolist()}")
    return rows

  def _batch(self, ids: np.ndarray, preprocess, seed) -> dict[str, np.ndarray]:
    examples = [{"image": self.images[r], "label": self.labels[r]} for r in self._rows(ids)]
    if preprocess is not None:
      examples = [preprocess(e, example_rng(seed, i)) for e, i in zip(examples, ids)]
    return {**stack_examples(examples), "id": np.asarray(ids, np.int64)}

  def iter_batches(self, batch_size: int, preprocess: pp_lib.Preprocess | str | None = None,
                   **unused_kw) -> Iterator[dict[str, np.ndarray]]:
    preprocess = pp_lib.parse(preprocess) if isinstance(preprocess, str) else preprocess
    ids = self.ids
    for i in range(0, len(ids), batch_size):
      yield self._batch(ids[i:i + batch_size], preprocess, None)

  def iter_id_batches(self, id_batches, preprocess: pp_lib.Preprocess | str | None = None, *,
                      prefetch: int = 2, **unused_kw) -> Iterator[dict[str, np.ndarray]]:
    """Like SplitReader.iter_id_batches; batches are prepared ahead in a background thread."""
    preprocess = pp_lib.parse(preprocess) if isinstance(preprocess, str) else preprocess
    jobs = ([functools.partial(self._batch, np.asarray(ids), preprocess, seed)] for ids, seed in id_batches)
    yield from ordered_batches(jobs, 1, prefetch)


def load_into_memory(reader: SplitReader, pp_spec: str = "decode", batch_size: int = 1024) -> ArrayReader:
  """The whole split, decoded once into host memory (small upstream sets: no per-epoch PNG/JPEG decoding)."""
  parts = list(reader.iter_batches(batch_size, pp_spec))
  return ArrayReader(np.concatenate([p["image"] for p in parts]), np.concatenate([p["label"] for p in parts]),
                     example_ids=np.concatenate([p["id"] for p in parts]), num_classes=reader.num_classes)
