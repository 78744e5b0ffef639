"""What every adapter on frozen features shares: the task's train/test features, extracted once and cached."""
from __future__ import annotations

import time

import jax

from evalkit import features
from evalkit.adapters.registry import EvalSettings
from evalkit.data import pp as pp_lib
from evalkit.data import source


def open_features(subject, task, settings: EvalSettings, mesh):
  """Features of the task's train and test splits through the shared cache, extracted once per (checkpoint,
  dataset, split, pp) whichever adapter asks.

  Returns (features by split, featurizer, cache or None, readers by split, image size, timings)."""
  t0 = time.perf_counter()
  preprocess = pp_lib.parse(task.pp)
  pid, pcount = jax.process_index(), jax.process_count()
  readers = {which: source.open_split(task.dataset, split, settings.data_dir, process_index=pid, process_count=pcount)
             for which, split in (("train", task.train_split), ("test", task.test_split))}
  image_size = source.output_image_size(readers["train"], preprocess)
  featurizer = subject.featurizer(image_size, representation=settings.representation, dtype=settings.dtype)
  cache = features.FeatureCache(settings.cache_dir) if settings.cache_dir else None
  feats, timings = {}, {"setup_s": time.perf_counter() - t0}
  for which, reader in readers.items():
    feats[which] = features.cached_extract(
        featurizer, reader, preprocess, dataset=source.dataset_fingerprint(reader), mesh=mesh, cache=cache,
        batch_size=settings.batch_size, progress=settings.progress)
    timings[f"features_{which}_s"] = feats[which].seconds
    timings[f"features_{which}_cached"] = feats[which].from_cache
  return feats, featurizer, cache, readers, image_size, timings
