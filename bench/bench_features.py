"""Feature-extraction throughput vs this machine's float32 matmul throughput, measured in the same run.

  python bench/bench_features.py [--ti_images 192 --tiny_images 8192]

For each model: images/s through `evalkit.features.extract` (sharded jitted forward, padded batches, host transfer),
FLOPs per image from XLA's cost analysis of the compiled forward, achieved GFLOP/s, and that as a fraction of a
2048×2048 float32 matmul's GFLOP/s (target ≥ 50%). Input images are synthetic and preprocessed already, so the
numbers measure the model path, not JPEG decoding.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from evalkit import distributed, features
from evalkit.data import memory, pp
from evalkit.models import vit


def matmul_gflops(n=2048, repeats=10, dtype=jnp.float32) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  mm = jax.jit(lambda x, y: x @ y)
  mm(a, a).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    mm(a, a).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def flops_per_image(featurizer, image_shape, batch) -> float:
  x = jnp.zeros((batch, *image_shape), jnp.float32)
  cost = jax.jit(featurizer.fn).lower(featurizer.params, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / batch


def bench_model(name, model, image_size, n_images, batch_size, peak):
  params = model.init(jax.random.key(0), jnp.zeros((1, *image_size, 3)))["params"]
  featurizer = features.model_featurizer(model, params, weights_hash=name)
  images = np.random.default_rng(0).uniform(-1, 1, (n_images, *image_size, 3)).astype(np.float32)
  reader = memory.ArrayReader(images, np.zeros(n_images, np.int64))
  mesh = distributed.data_mesh()
  identity = pp.parse("keep('image', 'label')")
  features.extract(featurizer, memory.ArrayReader(images[:batch_size], np.zeros(batch_size, np.int64)), identity,
                   mesh=mesh, batch_size=batch_size, progress=False)  # compile
  t = time.perf_counter()
  features.extract(featurizer, reader, identity, mesh=mesh, batch_size=batch_size, progress=False)
  seconds = time.perf_counter() - t
  ips = n_images / seconds
  gflop = flops_per_image(featurizer, images.shape[1:], batch_size) / 1e9
  achieved = ips * gflop
  print(f"{name:22s} {ips:9.1f} img/s  {gflop:7.3f} GFLOP/img  {achieved:6.1f} GFLOP/s  "
        f"= {achieved / peak:5.1%} of matmul peak (target ≥ 50%)")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ti_images", type=int, default=192)
  ap.add_argument("--tiny_images", type=int, default=8192)
  args = ap.parse_args()
  peak = matmul_gflops()
  print(f"devices: {jax.device_count()} × {jax.devices()[0].device_kind}; float32 matmul 2048²: {peak:.1f} GFLOP/s")
  bench_model("ViT-Ti/16 @224", vit.ViT(variant="Ti/16", pool_type="map"), (224, 224), args.ti_images, 32, peak)
  tiny = vit.ViT(patch_size=(7, 7), width=96, depth=4, mlp_dim=384, num_heads=4, pool_type="map")
  bench_model("tiny ViT (96/4/p7) @28", tiny, (28, 28), args.tiny_images, 512, peak)
  print(f"matmul after: {matmul_gflops():.1f} GFLOP/s (drift shows machine noise)")


if __name__ == "__main__":
  main()
