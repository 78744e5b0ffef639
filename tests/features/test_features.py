"""Feature extraction: device-count and batch-size independence, the cache, dtypes and representations."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalkit import distributed, features
from evalkit.probes import ridge
from evalkit.data import pp, source
from evalkit.models import vit

PP = "decode|resize(28)|value_range(-1, 1)"


@pytest.fixture(scope="module")
def tiny():
  model = vit.ViT(num_classes=None, patch_size=(7, 7), width=32, depth=2, mlp_dim=64, num_heads=2, pool_type="map")
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))["params"]
  return model, params


@pytest.fixture(scope="module")
def digits(data_dir):
  return {s: source.open_split("digits", s, data_dir) for s in ("train", "test")}


def featurize(tiny, reader, *, devices, batch_size, workers=0, **kw):
  model, params = tiny
  f = features.model_featurizer(model, params, weights_hash="test", **kw)
  return features.extract(f, reader, pp.parse(PP), mesh=distributed.data_mesh(devices), batch_size=batch_size,
                          progress=False, workers=workers)


def test_features_do_not_depend_on_devices_batch_size_or_workers(tiny, digits):
  """1 or 8 devices, batches of 64 or 200, images decoded and preprocessed in this process's threads or in 2 worker
  processes: the same features, bit for bit, and so the same few-shot numbers."""
  assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
  runs = {
      "1dev_b64": {s: featurize(tiny, r, devices=jax.devices()[:1], batch_size=64) for s, r in digits.items()},
      "8dev_b64": {s: featurize(tiny, r, devices=jax.devices(), batch_size=64) for s, r in digits.items()},
      "8dev_b200": {s: featurize(tiny, r, devices=jax.devices(), batch_size=200) for s, r in digits.items()},
      "8dev_b64_2workers": {s: featurize(tiny, r, devices=jax.devices(), batch_size=64, workers=2)
                            for s, r in digits.items()},
  }
  ref = runs["1dev_b64"]
  assert ref["train"].x.shape == (1297, 32) and ref["test"].x.shape == (500, 32)
  np.testing.assert_array_equal(ref["train"].ids, np.arange(1297))
  accs = {}
  for name, run in runs.items():
    for split in ("train", "test"):
      np.testing.assert_array_equal(run[split].x, ref[split].x)  # fixed micro-batches: bit-identical
      np.testing.assert_array_equal(run[split].labels, ref[split].labels)
      np.testing.assert_array_equal(run[split].ids, ref[split].ids)
    accs[name] = ridge.ridge_fewshot(run["train"].x, run["train"].labels, run["test"].x, run["test"].labels,
                                     num_classes=10, shots=(1, 10), seeds=(0, 1))
  assert accs["1dev_b64"] == accs["8dev_b64"] == accs["8dev_b200"] == accs["8dev_b64_2workers"]


def test_bfloat16_features_close_to_float32(tiny, digits):
  f32 = featurize(tiny, digits["test"], devices=jax.devices(), batch_size=128)
  bf16 = featurize(tiny, digits["test"], devices=jax.devices(), batch_size=128, dtype="bfloat16")
  assert bf16.x.dtype == np.float32
  rel = np.linalg.norm(bf16.x - f32.x) / np.linalg.norm(f32.x)
  assert 0 < rel < 0.05


def test_token_representations_are_averaged(tiny, digits):
  block = featurize(tiny, digits["test"], devices=jax.devices(), batch_size=128, representation="block0")
  assert block.x.shape == (500, 32)
  with pytest.raises(features.RepresentationError, match="representation=nope .* block0, block1, encoded"):
    featurize(tiny, digits["test"], devices=jax.devices(), batch_size=128, representation="nope")


def test_cache_hit_skips_model_and_corrupt_entry_is_recomputed(tiny, digits, tmp_path):
  model, params = tiny
  reader, preprocess = digits["test"], pp.parse(PP)
  mesh = distributed.data_mesh()
  cache = features.FeatureCache(tmp_path)
  dataset = source.dataset_fingerprint(reader)
  featurizer = features.model_featurizer(model, params, weights_hash="w1")
  first = features.cached_extract(featurizer, reader, preprocess, dataset=dataset, mesh=mesh, cache=cache,
                                  progress=False)
  assert not first.from_cache

  def no_model(p, images):
    raise AssertionError("the model must not run on a cache hit")

  blind = dataclasses.replace(featurizer, fn=no_model, params=None)
  hit = features.cached_extract(blind, reader, preprocess, dataset=dataset, mesh=mesh, cache=cache, progress=False)
  assert hit.from_cache
  np.testing.assert_array_equal(hit.x, first.x)
  np.testing.assert_array_equal(hit.ids, first.ids)

  other = dataclasses.replace(featurizer, identity={**featurizer.identity, "weights_hash": "w2"})
  assert features.cache_key(other, dataset, PP) != features.cache_key(featurizer, dataset, PP)

  (entry,) = tmp_path.glob("*.npz")
  entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a truncated write / bit rot
  again = features.cached_extract(featurizer, reader, preprocess, dataset=dataset, mesh=mesh, cache=cache,
                                  progress=False)
  assert not again.from_cache
  np.testing.assert_allclose(again.x, first.x, atol=1e-6)
  assert features.cached_extract(blind, reader, preprocess, dataset=dataset, mesh=mesh, cache=cache,
                                 progress=False).from_cache


def test_pixel_featurizer_is_flattened_pp_output(digits):
  feats = features.extract(features.pixel_featurizer(), digits["test"], pp.parse(PP), mesh=distributed.data_mesh(),
                           batch_size=64, progress=False)
  first = next(digits["test"].iter_batches(1, pp.parse(PP)))
  assert feats.x.shape == (500, 28 * 28 * 3)
  np.testing.assert_allclose(feats.x[0], first["image"][0].reshape(-1), atol=1e-6)
