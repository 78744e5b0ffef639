"""Train-step throughput — pre-training (sigmoid loss, bv_adafactor chain) and fine-tuning (softmax loss, SGD momentum
with a bfloat16 buffer) for the same models — vs float32 matmul throughput.

  python bench/bench_train.py [--steps 30]

For the demo model (28×28, batch 128) and ViT-Ti/16 at 224 (batch 32): examples/s of the jitted data-parallel train
step on device-resident synthetic batches, FLOPs per step from XLA's cost analysis of the compiled step (forward,
backward and optimizer) and from evalkit.train.flops (3 × forward), achieved GFLOP/s, and that as a fraction of a 2048²
float32 matmul measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bench_features import matmul_gflops
from evalkit import distributed, tasks
from evalkit.adapters import finetune
from evalkit.train import flops
from evalkit.train import optim
from evalkit.train import pretrain
from evalkit.train import pretrain_configs
from evalkit.train import loop
from evalkit.models import vit


def step_rate(model_kw, image_size, batch, steps, num_classes=10, stage="pretrain") -> tuple[float, float, float]:
  """(examples/s, FLOPs per step by XLA's count, FLOPs per step by 3 × forward) of the jitted data-parallel train
  step on device-resident synthetic batches."""
  model = vit.ViT(num_classes=num_classes, **model_kw)
  mesh = distributed.data_mesh()
  params = pretrain.init_params(model, image_size, 0, -10.0)
  if stage == "pretrain":
    tx, _ = optim.make(pretrain_configs.demo().to_dict(), params, 10_000)
    loss = loop.sigmoid_xent
  else:
    task = tasks.load_task("digits_finetune")
    tx, _ = optim.make(finetune.optimizer_config(task, 0.03), params, 10_000)
    loss = loop.softmax_xent
  state = jax.device_put(loop.init_state(params, tx), NamedSharding(mesh, P()))
  rng = np.random.default_rng(0)
  put = lambda a: jax.device_put(a, NamedSharding(mesh, P(distributed.DATA_AXIS)))
  images = put(rng.uniform(-1, 1, (batch, *image_size, 3)).astype(np.float32))
  labels = put(rng.integers(0, num_classes, batch))
  step_fn = loop.make_train_step(model, tx, mesh, loss=loss, num_classes=num_classes)
  cost = step_fn.lower(state, images, labels).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state, m = step_fn(state, images, labels)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step_fn(state, images, labels)
  jax.block_until_ready(m)
  seconds = (time.perf_counter() - t) / steps
  return batch / seconds, float(cost["flops"]), flops.train_flops(model, image_size, batch)


def bench(name, model_kw, image_size, batch, steps, peak, num_classes=10, stage="pretrain"):
  rate, xla_flops, formula_flops = step_rate(model_kw, image_size, batch, steps, num_classes, stage)
  seconds = batch / rate
  xla_gflop, formula_gflop = xla_flops / 1e9, formula_flops / 1e9
  print(f"{stage:9s} {name:26s} {batch / seconds:8.1f} ex/s  {xla_gflop / seconds:6.1f} GFLOP/s (XLA count; "
        f"{formula_gflop / seconds:6.1f} by 3×forward) = {xla_gflop / seconds / peak:5.1%} of matmul peak")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=30)
  args = ap.parse_args()
  peak = matmul_gflops()
  print(f"devices: {jax.device_count()} × {jax.devices()[0].device_kind}; float32 matmul 2048²: {peak:.1f} GFLOP/s")
  demo_kw = dict(pretrain_configs.DEMO_MODEL)
  for stage in ("pretrain", "finetune"):
    bench("demo model @28, batch 128", demo_kw, (28, 28), 128, args.steps, peak, stage=stage)
    bench("ViT-Ti/16 @224, batch 32", {"variant": "Ti/16", "pool_type": "map"}, (224, 224), 32,
          max(3, args.steps // 10), peak, num_classes=1000, stage=stage)
  print(f"matmul after: {matmul_gflops():.1f} GFLOP/s (drift shows machine noise)")


if __name__ == "__main__":
  main()
