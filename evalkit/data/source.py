"""Reading TFDS splits in dataset order, sharded contiguously over processes.

Dataset order is the order of examples in the prepared files (the index
`tfds.data_source` uses). A split spec with one slice, e.g. "train[1000:]",
resolves to an absolute range [start, stop) of its base split; process p of P
reads the contiguous piece [start + p*n//P, start + (p+1)*n//P), n = stop -
start, so concatenating the processes' pieces in process order gives dataset
order whatever the number of hosts or the batch size.

Storage formats:
* array_record (what evalkit's embedded datasets use, and
  `builder.download_and_prepare(file_format="array_record")`): random access,
  no TensorFlow needed.
* tfrecord (the tfds default, e.g. most users' imagenet2012): read through
  `tf.data` with one file at a time in file order; needs TensorFlow.

Images are decoded with PIL in both cases (tfds itself would use OpenCV when
installed, or TF for tfrecord), so pixels never depend on which of those is
installed. See data/pp/__init__.py for how PIL's JPEG decoding relates to big_vision's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
import threading
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import tensorflow_datasets as tfds

from evalkit.data import embedded
from evalkit.data import pp as pp_lib
from evalkit.data.errors import BadSplit, DatasetNotPrepared, DatasetUnreadable, prepare_command

Example = dict[str, Any]
log = logging.getLogger(__name__)


def default_data_dir() -> str:
  """tfds' convention: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def split_name_version(name: str) -> tuple[str, str | None]:
  """"fashion_mnist:3.0.1" -> ("fashion_mnist", "3.0.1")."""
  base, _, version = name.partition(":")
  return base, (version or None)


def resolve_split(split: str, split_infos) -> tuple[str, int, int]:
  """Resolves a one-piece split spec to (base_split, start, stop), absolute.

  Uses tfds' own ReadInstruction, so percent slices round like tfds ("closest").
  """
  if not isinstance(split, str) or not split.strip():
    raise BadSplit(f"empty split spec {split!r}; available splits: {sorted(split_infos)} (e.g. 'train[:90%]')")
  try:
    pieces = tfds.core.ReadInstruction.from_spec(split).to_absolute(split_infos)
  except (ValueError, KeyError, AssertionError) as e:
    raise BadSplit(f"Bad split {split!r} (available: "
                   f"{sorted(split_infos)}): {e}") from None
  if len(pieces) != 1:
    raise BadSplit(f"Split {split!r} combines {len(pieces)} pieces; evalkit "
                   "reads one base split with at most one slice")
  piece = pieces[0]
  n = split_infos[piece.splitname].num_examples
  start, stop, _ = slice(piece.from_, piece.to).indices(n)
  if stop <= start:
    raise BadSplit(f"split {split!r} selects no examples ({piece.splitname} has {n})")
  return piece.splitname, start, stop


def percent_cut(start: int, stop: int, fraction: float) -> int:
  """Where the held-out last `fraction` of [start, stop) begins, rounded as tfds rounds `train[99%:]`.

  tfds puts a percent boundary at round(pct · n / 100) ("closest" rounding), so with fraction 0.01 the parts are
  exactly big_vision's `train[:99%]` / `train[99%:]`. At least one example is held out.
  """
  n = stop - start
  keep_pct = 100.0 - round(100.0 * fraction, 9)
  return min(start + int(round(keep_pct * n / 100.0)), stop - 1)


def shard_bounds(start: int, stop: int, process_index: int,
                 process_count: int) -> tuple[int, int]:
  """Contiguous piece of [start, stop) for one process (sizes differ by <= 1)."""
  n = stop - start
  return (start + process_index * n // process_count,
          start + (process_index + 1) * n // process_count)


def _load_builder(name: str, data_dir: str):
  """A prepared builder for `name`, preparing embedded datasets on first use."""
  base, version = split_name_version(name)
  if base in embedded.EMBEDDED and version in (
      None, str(embedded.EMBEDDED[base].VERSION)):
    embedded.ensure_prepared(base, data_dir)
    return embedded.builder(base, data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetNotPrepared(name, data_dir) from None
  except AssertionError as e:  # tfds' way of saying "no such version".
    if "version" not in str(e):
      raise
    raise DatasetNotPrepared(name, data_dir) from None
  if not builder.is_prepared():
    manual = bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
    raise DatasetNotPrepared(name, data_dir, manual=manual)
  return builder


def _tensorflow_available() -> bool:
  try:
    import tensorflow  # noqa: F401  (imported only to learn whether it can be)
  except ImportError:
    return False
  return True


class _Decoder:
  """Turns stored examples into numpy dicts; images are decoded with PIL."""

  def __init__(self, features):
    self._features = features
    self._images = {k: f for k, f in features.items()
                    if isinstance(f, tfds.features.Image)}
    # tfds leaves skipped features as their stored bytes.
    self.skip_images = {k: tfds.decode.SkipDecoding() for k in self._images}

  def decode_images(self, example: Example) -> Example:
    for key, feature in self._images.items():
      data = example[key]
      if not isinstance(data, (bytes, np.bytes_)):
        continue
      if np.dtype(feature.np_dtype) == np.uint8:
        channels = feature.shape[-1] or 0
        example[key] = pp_lib.decode_image(bytes(data), channels)
      else:  # uint16 / float images: leave those to tfds.
        example[key] = feature.decode_example_np(bytes(data))
    return example

  def deserialize(self, record: bytes, images: bool = True) -> Example:
    example = self._features.deserialize_example_np(
        record, decoders=self.skip_images)
    return self.decode_images(example) if images else example


class _ArrayRecordBackend:
  """Random access through tfds' array_record data source (no TensorFlow)."""

  random_access = True

  def __init__(self, builder, base_split: str):
    self._source = builder.as_data_source(
        split=base_split,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    self.decoder = _Decoder(builder.info.features)
    # Reads of raw bytes are serialised (cheap, and the reader's thread safety
    # is not documented); decoding, the expensive part, runs in parallel.
    self._lock = threading.Lock()

  def read(self, ids: np.ndarray, images: bool = True) -> list[Example]:
    with self._lock:
      records = self._source.__getitems__([int(i) for i in ids])
    return [self.decoder.deserialize(r, images) for r in records]


class _TfRecordBackend:
  """Sequential reading through tf.data, examples in file order."""

  random_access = False

  def __init__(self, builder, base_split: str):
    if not _tensorflow_available():
      raise DatasetUnreadable(
          f"Dataset {builder.info.full_name} is stored as tfrecord, which needs "
          "TensorFlow: `pip install 'evalkit[tf]'` (or re-prepare it as array_record: "
          f"{prepare_command(builder.info.full_name.rsplit('/', 1)[0], builder.data_dir_root)})")
    self._builder, self._base_split = builder, base_split
    self.decoder = _Decoder(builder.info.features)

  def iterate(self, start: int, stop: int, images: bool = True,
              keys: Iterable[str] | None = None) -> Iterator[Example]:
    if stop <= start:
      return
    decoders = dict(self.decoder.skip_images)
    # interleave_cycle_length=1 reads one file after the other, i.e. the same
    # order as array_record's global index.
    ds = self._builder.as_dataset(
        split=f"{self._base_split}[{start}:{stop}]", shuffle_files=False,
        decoders=decoders,
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
    for example in tfds.as_numpy(ds):
      if keys is not None:
        example = {k: example[k] for k in keys}
      yield self.decoder.decode_images(example) if images else example


def stack_examples(examples: list[Example]) -> dict[str, np.ndarray]:
  out = {}
  for key in examples[0]:
    values = [e[key] for e in examples]
    try:
      out[key] = np.stack([np.asarray(v) for v in values])
    except ValueError:
      shapes = sorted({np.shape(v) for v in values})
      raise ValueError(
          f"Cannot batch {key!r}: shapes differ within a batch {shapes[:4]}; "
          "add a resize/crop to the pp string") from None
  return out


def ordered_batches(batches: Iterator[list[Callable[[], dict]]],
                     num_threads: int, prefetch: int,
                     executor: concurrent.futures.Executor | None = None
                     ) -> Iterator[dict[str, np.ndarray]]:
  """Runs each batch's part-jobs in a thread pool (or in `executor`, which
  this call then owns and shuts down); yields batches in order.

  A batch is split into parts so all threads work on the same batch (rather
  than one batch per thread), and at most `prefetch` batches beyond the one
  being consumed are in flight: memory stays at a few batches even for large
  images and many threads.
  """
  pool = executor or concurrent.futures.ThreadPoolExecutor(
      num_threads, thread_name_prefix="evalkit-data")
  pending = collections.deque()

  def collect(futures):
    parts = [_received(f.result()) for f in futures]
    if len(parts) == 1:
      return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  try:
    for parts in batches:
      pending.append([pool.submit(part) for part in parts])
      if len(pending) > prefetch:
        yield collect(pending.popleft())
    while pending:
      yield collect(pending.popleft())
  finally:
    # Also runs when the consumer stops early: drop work nobody will read,
    # and free the shared memory of parts that were made but not read.
    pool.shutdown(wait=True, cancel_futures=True)
    for futures in pending:
      for f in futures:
        if not f.cancelled() and f.exception() is None:
          _received(f.result())


def prepare_examples(backend, ids: np.ndarray, raw: list[Example] | None,
                     preprocess: pp_lib.Preprocess | None,
                     seed) -> dict[str, np.ndarray]:
  """Reads (unless `raw` holds them), decodes and preprocesses the examples
  `ids`, stacked: one part of a batch, in a thread or in a worker process."""
  examples = raw if raw is not None else backend.read(ids)
  outs = []
  for example_id, example in zip(ids, examples):
    if raw is not None:
      example = backend.decoder.decode_images(example)
    if preprocess is not None:
      # Per-example RNG from (seed, id): random pp is reproducible and
      # independent of threads, processes, batch size and host count.
      example = preprocess(example, example_rng(seed, example_id))
    example["id"] = np.int64(example_id)
    outs.append(example)
  return stack_examples(outs)


# Worker processes: each opens the parent's split and parses its pp string
# once, then runs `prepare_examples` on the ids it is sent, so what comes back
# is exactly what a thread of the parent would have made.
_WORKER: dict[str, Any] = {}


def _worker_open(name: str, split: str, data_dir: str, pp_spec: str | None):
  _WORKER["backend"] = open_split(name, split, data_dir)._backend  # pylint: disable=protected-access
  _WORKER["preprocess"] = pp_lib.parse(pp_spec) if pp_spec else None


def _worker_part(ids: np.ndarray, raw: list[Example] | None, seed) -> SharedPart:
  return SharedPart.of(prepare_examples(_WORKER["backend"], ids, raw, _WORKER["preprocess"], seed))


@dataclasses.dataclass(frozen=True)
class SharedPart:
  """A batch part a worker process left in shared memory for the parent.

  Sending the arrays through the pool's pipe costs four copies (pickle, pipe
  in, pipe out, unpickle): for float32 224×224 images that made 2 worker
  processes 1.5× slower than 2 threads. Through shared memory it is one copy
  on each side. The parent unlinks the segment as it reads it (`_received`).
  """
  name: str
  layout: tuple  # (key, dtype, shape, offset) per array
  inline: dict  # arrays of Python objects, which stay pickled

  @classmethod
  def of(cls, part: dict[str, np.ndarray]) -> SharedPart:
    arrays = {k: np.ascontiguousarray(v) for k, v in part.items() if not np.asarray(v).dtype.hasobject}
    layout, offset = [], 0
    for key, array in arrays.items():
      layout.append((key, array.dtype.str, array.shape, offset))
      offset += -(-array.nbytes // 64) * 64  # 64-byte aligned views
    memory = shared_memory.SharedMemory(create=True, size=max(offset, 1))
    # The parent unlinks it; the tracker would otherwise unlink it again (3.11).
    resource_tracker.unregister(memory._name, "shared_memory")  # pylint: disable=protected-access
    for (key, dtype, shape, start), array in zip(layout, arrays.values()):
      np.ndarray(shape, dtype, buffer=memory.buf, offset=start)[...] = array
    memory.close()
    return cls(memory.name, tuple(layout), {k: v for k, v in part.items() if k not in arrays})


def _received(part: dict | SharedPart) -> dict[str, np.ndarray]:
  """A part as arrays of this process (a shared one copied out and unlinked)."""
  if not isinstance(part, SharedPart):
    return part
  memory = shared_memory.SharedMemory(name=part.name)
  try:
    arrays = {key: np.ndarray(shape, dtype, buffer=memory.buf, offset=start).copy()
              for key, dtype, shape, start in part.layout}
  finally:
    memory.close()
    memory.unlink()
  return {**arrays, **part.inline}


def example_rng(seed: int | tuple[int, ...] | None, example_id) -> np.random.Generator | None:
  """The random stream of one example: from (seed..., id); `seed` may be a tuple, e.g. (seed, step) in training."""
  if seed is None:
    return None
  return np.random.default_rng([*np.atleast_1d(seed).tolist(), int(example_id)])


def default_num_threads() -> int:
  return min(16, os.cpu_count() or 1)


# Examples from which worker processes repay their start (≈1 s each, to spawn
# and import): measured on 2 cores, Fashion-MNIST's 20,000 28×28 PNGs take
# 6.3 s in threads (the GIL binds them) and 3.4 s in 2 workers; 2,000 are
# faster in threads.
WORKERS_FROM_EXAMPLES = 10_000


def default_workers(num_examples: int) -> int:
  """Worker processes when the caller has not said: every available core (at
  most 16) for a split large enough to repay their start, else 0 (threads)."""
  cores = min(16, len(os.sched_getaffinity(0)))
  return cores if cores > 1 and num_examples >= WORKERS_FROM_EXAMPLES else 0


class Reader(Protocol):
  """What every stage after the data reads from a split: `SplitReader` (TFDS files) and `memory.ArrayReader`.

  `ids` are this process's absolute example ids in dataset order; `shard_sizes` every process's share of them;
  batches are dicts of stacked arrays with "image", "label" and "id" after the pp, in `ids` order.
  """
  global_start: int
  global_stop: int

  @property
  def ids(self) -> np.ndarray: ...

  @property
  def shard_sizes(self) -> list[int]: ...

  @property
  def num_classes(self) -> int | None: ...

  def __len__(self) -> int: ...

  def read_labels(self) -> np.ndarray: ...

  def content_digest(self, file_hash: Callable[[Path], str]) -> str: ...

  def iter_batches(self, batch_size: int, preprocess=None, **kw) -> Iterator[dict[str, np.ndarray]]: ...

  def iter_id_batches(self, id_batches, preprocess=None, **kw) -> Iterator[dict[str, np.ndarray]]: ...


@dataclasses.dataclass
class SplitReader:
  """One process's contiguous shard of a dataset split, in dataset order.

  Attributes:
    name: dataset name as given, without version (e.g. "fashion_mnist").
    version: dataset version string (e.g. "1.0.0").
    split: the split spec as given (e.g. "train[:2%]").
    base_split: the split it slices (e.g. "train").
    global_start, global_stop: the whole split's absolute range in base_split.
    process_index, process_count: this process's place in the sharding.
  """
  name: str
  version: str
  split: str
  base_split: str
  global_start: int
  global_stop: int
  process_index: int
  process_count: int
  builder: Any = dataclasses.field(repr=False)
  _backend: Any = dataclasses.field(repr=False, default=None)

  def __post_init__(self):
    fmt = self.builder.info.file_format
    if fmt == tfds.core.FileFormat.ARRAY_RECORD or (
        tfds.core.FileFormat.ARRAY_RECORD
        in self.builder.info.available_file_formats()):
      self._backend = _ArrayRecordBackend(self.builder, self.base_split)
    else:
      self._backend = _TfRecordBackend(self.builder, self.base_split)

  # --- Sharding -------------------------------------------------------------

  def shard_bounds(self, process_index: int) -> tuple[int, int]:
    """Absolute [start, stop) of process `process_index`'s shard."""
    if not 0 <= process_index < self.process_count:
      raise ValueError(f"process_index {process_index} not in "
                       f"[0, {self.process_count})")
    return shard_bounds(self.global_start, self.global_stop, process_index,
                        self.process_count)

  @property
  def shard_sizes(self) -> list[int]:
    """Shard size of every process, in process order."""
    return [b - a for a, b in map(self.shard_bounds,
                                  range(self.process_count))]

  @property
  def start(self) -> int:
    return self.shard_bounds(self.process_index)[0]

  @property
  def stop(self) -> int:
    return self.shard_bounds(self.process_index)[1]

  @property
  def ids(self) -> np.ndarray:
    """Absolute example indices (in base_split) of this process's shard."""
    return np.arange(self.start, self.stop, dtype=np.int64)

  def __len__(self) -> int:
    return self.stop - self.start

  # --- Metadata -------------------------------------------------------------

  @property
  def features(self):
    return self.builder.info.features

  @property
  def num_classes(self) -> int | None:
    """Number of classes of the `label` ClassLabel feature (None if absent)."""
    if "label" not in self.features.keys():
      return None
    return getattr(self.features["label"], "num_classes", None)

  # --- Reading --------------------------------------------------------------

  def _batch_jobs(self, ids: np.ndarray, raw: list[Example] | None,
                  preprocess, seed, parts: int, in_workers: bool):
    """One batch as up to `parts` jobs over contiguous pieces, for this
    process's threads or (`in_workers`) for the worker processes."""
    step = -(-len(ids) // parts)  # ceil
    pieces = [(ids[i:i + step], raw[i:i + step] if raw is not None else None)
              for i in range(0, len(ids), step)]
    if in_workers:
      return [functools.partial(_worker_part, i, r, seed) for i, r in pieces]
    return [functools.partial(prepare_examples, self._backend, i, r,
                              preprocess, seed) for i, r in pieces]

  def _workers(self, preprocess, workers: int
               ) -> concurrent.futures.Executor | None:
    """`workers` processes that each open this split and pp (0: None, the
    work stays in this process's threads). Spawned, not forked: the parent
    runs JAX's threads, which a fork would copy in whatever state they are."""
    if not workers:
      return None
    log.info("%s %s: decoding and pp in %d worker processes", self.name, self.split, workers)
    # A pool per call: it lives as long as one pass over the split.
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_open,
        initargs=(f"{self.name}:{self.version}", self.split,
                  self.builder.data_dir_root,
                  None if preprocess is None else preprocess.spec))

  def iter_batches(self, batch_size: int,
                   preprocess: pp_lib.Preprocess | str | None = None, *,
                   num_threads: int | None = None, seed: int | None = None,
                   prefetch: int | None = None, workers: int | None = 0
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Yields this shard's examples as stacked batches, in dataset order.

    Args:
      batch_size: examples per batch; the last batch may be smaller.
      preprocess: a pp string or parsed `Preprocess` applied to every example
        (after images are decoded to uint8 HWC arrays); None keeps them raw.
      num_threads: decoding + pp threads (default: CPU count, at most 16).
      seed: needed by random pp ops; example i uses
        np.random.default_rng([seed, i]).
      prefetch: batches prepared ahead of the one being consumed (default 2);
        memory is about (prefetch + 1) batches.
      workers: decode and pp in this many worker processes instead of this
        process's threads (0); None: `default_workers` for this shard. The
        batches are the same, bit for bit.

    Yields:
      dicts of arrays with a leading batch axis: the pp output ("image",
      "label", ...) plus "id", the absolute example index.
    """
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    if isinstance(preprocess, str):
      preprocess = pp_lib.parse(preprocess)
    if preprocess is not None and preprocess.is_random and seed is None:
      raise ValueError(f"pp {preprocess.spec!r} is random: pass seed=")
    num_threads = max(1, num_threads or default_num_threads())
    workers = default_workers(len(self)) if workers is None else workers
    parts = workers or num_threads
    ids = self.ids
    chunks = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    if self._backend.random_access:
      jobs = (self._batch_jobs(c, None, preprocess, seed, parts, bool(workers))
              for c in chunks)
    else:
      # tf.data reads sequentially in this (the consumer's) thread; decoding
      # and pp still run in the pool.
      stream = self._backend.iterate(self.start, self.stop, images=False)
      jobs = (self._batch_jobs(c, [next(stream) for _ in c], preprocess, seed,
                               parts, bool(workers))
              for c in chunks)
    yield from ordered_batches(jobs, num_threads,
                                2 if prefetch is None else prefetch,
                                self._workers(preprocess, workers))

  def iter_id_batches(self, id_batches: Iterable[tuple[np.ndarray, Any]],
                      preprocess: pp_lib.Preprocess | str | None = None, *,
                      num_threads: int | None = None, prefetch: int | None = None,
                      workers: int | None = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches of given absolute ids, e.g. shuffled training batches.

    `id_batches` yields (ids, seed) pairs; example i of a batch uses
    `example_rng(seed, i)`. Needs random access (array_record). `workers`: as
    for `iter_batches`.
    """
    if not self._backend.random_access:
      raise DatasetUnreadable(
          f"Dataset {self.name!r} is stored as tfrecord; reading shuffled "
          "batches needs random access: re-prepare it as array_record: "
          f"{prepare_command(self.name, self.builder.data_dir_root)}")
    if isinstance(preprocess, str):
      preprocess = pp_lib.parse(preprocess)
    num_threads = max(1, num_threads or default_num_threads())
    workers = default_workers(len(self)) if workers is None else workers
    jobs = (self._batch_jobs(np.asarray(ids), None, preprocess, seed,
                             workers or num_threads, bool(workers))
            for ids, seed in id_batches)
    yield from ordered_batches(jobs, num_threads,
                                2 if prefetch is None else prefetch,
                                self._workers(preprocess, workers))

  def content_digest(self, file_hash: Callable[[Path], str]) -> str:
    """sha256 over the prepared files that hold the base split, and the dataset's `dataset_info.json`.

    Name, version and range cannot tell a re-prepared dataset (or another data_dir's dataset of the same name) from
    the one a feature-cache entry was computed on; the bytes can. `file_hash` hashes one file (callers memoise it).
    """
    paths = [Path(p) for p in self.builder.info.splits[self.base_split].filepaths]
    paths.append(Path(os.fspath(self.builder.data_dir)) / "dataset_info.json")
    entries = sorted((p.name, file_hash(p)) for p in paths)
    return hashlib.sha256(repr(entries).encode()).hexdigest()

  def read_labels(self, key: str = "label", chunk: int = 4096) -> np.ndarray:
    """This shard's labels, in order, without decoding images."""
    if self._backend.random_access:
      labels = []
      ids = self.ids
      for i in range(0, len(ids), chunk):
        for example in self._backend.read(ids[i:i + chunk], images=False):
          labels.append(example[key])
    else:
      labels = [e[key] for e in self._backend.iterate(
          self.start, self.stop, images=False, keys=[key])]
    return np.asarray(labels, dtype=np.int64)


def open_split(name: str, split: str, data_dir: str | None = None, *,
               process_index: int = 0, process_count: int = 1) -> SplitReader:
  """Opens a split of a prepared TFDS dataset for this process.

  Args:
    name: tfds name, optionally with config and version
      ("fashion_mnist", "fashion_mnist:3.0.1"). "digits" and "fashion_mnist"
      (without version, or with evalkit's) are evalkit's embedded datasets and
      are prepared in data_dir on first use.
    split: tfds split spec with at most one slice: "train", "train[:1000]",
      "train[1000:]", "train[:2%]".
    data_dir: TFDS data dir; None means `default_data_dir()`.
    process_index, process_count: this host's index and the number of hosts.

  Raises:
    DatasetNotPrepared: the dataset is not prepared in data_dir.
    ValueError: bad split spec.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in "
                     f"[0, {process_count})")
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  builder = _load_builder(name, data_dir)
  base_split, start, stop = resolve_split(split, builder.info.splits)
  return SplitReader(
      name=split_name_version(name)[0], version=str(builder.info.version),
      split=split, base_split=base_split, global_start=start,
      global_stop=stop, process_index=process_index,
      process_count=process_count, builder=builder)


def output_image_size(reader, preprocess) -> tuple[int, int]:
  """The (height, width) that `preprocess` makes of the split's images (a model is evaluated at it)."""
  first = next(reader.iter_batches(1, preprocess, num_threads=1))
  return tuple(int(s) for s in first["image"].shape[1:3])


def dataset_fingerprint(reader: SplitReader) -> dict[str, Any]:
  """Identifies the examples a split spec denotes, for cache keys.

  start/stop are the whole split's absolute range (not this process's shard),
  so a cache is shared by any number of hosts.
  """
  return dict(name=reader.name, version=reader.version, split=reader.split,
              start=reader.global_start, stop=reader.global_stop)


def availability(name: str, data_dir: str | None = None) -> str:
  """A short word on whether `name` can be read from data_dir, without preparing or reading anything."""
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  base, version = split_name_version(name)
  if base in embedded.EMBEDDED and version in (None, str(embedded.EMBEDDED[base].VERSION)):
    if base == "fashion_mnist" and not embedded.fashion_mnist_available(data_dir=data_dir):
      return "missing (apt-get install dataset-fashion-mnist)"
    return "embedded"
  # Look for prepared files only: tfds.builder() on a missing dataset would create folders in data_dir.
  pattern = f"{base}/**/{version}/dataset_info.json" if version else f"{base}/**/dataset_info.json"
  prepared = any(Path(data_dir).glob(pattern))
  return "prepared" if prepared else "not prepared"
