"""One accelerator benchmark, one table: what evalkit does per second on this machine's devices, and how close to the
hardware's peak (MFU).

  python bench/accelerator.py            # full size: about five minutes on one GPU
  python bench/accelerator.py --smoke    # reduced size (any backend; tests run it on the CPU)

Rows:
  * feature extraction of ViT-B/16 @224 through `features.extract` (sharded, fixed micro-batches) in float32 and
    bfloat16, the micro-batch swept per dtype (the fastest is reported with the others beside it): img/s and MFU;
  * the few-shot ridge suite at ImageNet scale (1000 classes, d = 768, 10k test images, shots 1/5/10/25 × 3 seeds)
    with λ fixed and with the leave-one-out sweep: seconds;
  * a fine-tuning train step of ViT-B/16 @224 (softmax, SGD momentum, the digits_finetune optimizer): examples/s, MFU;
  * the input pipeline (`iter_batches`, the few-shot pp string, generated 500×375 JPEGs) with every available core
    as worker processes: img/s.
MFU = achieved FLOP/s (XLA's cost analysis of the compiled program) / peak: NVIDIA's dense datasheet peak for
H100/H200 (float32 runs at JAX's default matmul precision there, i.e. TF32 tensor cores), else a float32 / bfloat16
matmul measured in this run. Synthetic inputs; nothing is asserted.
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import bench_features
import bench_fewshot
import bench_pipeline
import bench_train
from evalkit import distributed, features
from evalkit.data import memory, pp
from evalkit.models import vit
from evalkit.probes import ridge

# Dense peak TFLOP/s (NVIDIA H100 / H200 datasheets): TF32 and BF16 tensor cores, SXM and PCIe boards.
DATASHEET_TFLOPS = {("H100", "PCIe"): {"float32": 378.0, "bfloat16": 756.0},
                    ("H100", ""): {"float32": 494.7, "bfloat16": 989.4},
                    ("H200", ""): {"float32": 494.7, "bfloat16": 989.4}}

FULL = {"model": {"variant": "B/16"}, "image_size": 224, "images": 2048, "micro_batches": (16, 32, 64, 128, 256),
        "classes": 1000, "dim": 768, "n_test": 10000, "per_class": 30, "train_batch": 256, "train_steps": 20,
        "jpegs": 2048, "jpeg_batch": 64, "shots": ridge.DEFAULT_SHOTS}
SMOKE = {"model": {"patch_size": (7, 7), "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}, "image_size": 28,
         "images": 64, "micro_batches": (8, 16), "classes": 20, "dim": 32, "n_test": 200, "per_class": 30,
         "train_batch": 16, "train_steps": 3, "jpegs": 32, "jpeg_batch": 8, "shots": (2,)}


@functools.cache
def peak_tflops(dtype: str) -> tuple[float, str]:
  """(peak TFLOP/s of one device at `dtype`, where the number comes from); measured once per dtype."""
  kind = jax.devices()[0].device_kind
  for (chip, board), peaks in DATASHEET_TFLOPS.items():
    if chip in kind and board in kind:
      return peaks[dtype], f"{kind} datasheet"
  n = 2048 if jax.default_backend() != "cpu" else 1024
  return bench_features.matmul_gflops(n, repeats=5, dtype=jnp.dtype(dtype)) / 1e3, f"measured {n}² matmul"


def extraction(size: dict, dtype: str) -> tuple[float, float, str]:
  """(best img/s, its MFU, img/s per micro-batch) of feature extraction at `dtype`."""
  model = vit.ViT(num_classes=None, pool_type="map", **size["model"])
  shape = (size["image_size"], size["image_size"], 3)
  params = model.init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]
  featurizer = features.model_featurizer(model, params, weights_hash="bench", dtype=dtype)
  n = size["images"]
  images = np.random.default_rng(0).uniform(-1, 1, (n, *shape)).astype(np.float32)
  reader = memory.ArrayReader(images, np.zeros(n, np.int64))
  identity, mesh = pp.parse("keep('image', 'label')"), distributed.data_mesh()
  flops = bench_features.flops_per_image(featurizer, shape, 16)
  rates = {}
  for micro in size["micro_batches"]:
    batch = micro * jax.device_count() * max(1, 256 // (micro * jax.device_count()))
    run = lambda: features.extract(featurizer, reader, identity, mesh=mesh, batch_size=batch, micro_batch=micro,
                                   progress=False, workers=0)
    run()  # compile
    t = time.perf_counter()
    run()
    rates[micro] = n / (time.perf_counter() - t)
  best = max(rates, key=rates.get)
  peak, _ = peak_tflops(dtype)
  mfu = rates[best] * flops / (peak * 1e12 * jax.device_count())
  return rates[best], mfu, ", ".join(f"{m}: {r:.0f}" for m, r in rates.items())


def fewshot(size: dict) -> tuple[float, float]:
  """Seconds of the shots × 3 seeds suite with λ fixed and with the 21-λ leave-one-out sweep (warm)."""
  k = size["classes"]
  x_train, y_train = bench_fewshot.synthetic_features(size["per_class"], k, size["dim"], seed=1)
  x_test, y_test = bench_fewshot.synthetic_features(max(1, size["n_test"] // k), k, size["dim"], seed=2)
  probe = ridge.RidgeProbe(x_train, y_train, x_test, y_test, num_classes=k)
  out = []
  for grid in (None, ridge.LOO_L2_GRID):
    probe.run(size["shots"], ridge.DEFAULT_SEEDS, l2_grid=grid)  # compile
    t = time.perf_counter()
    probe.run(size["shots"], ridge.DEFAULT_SEEDS, l2_grid=grid)
    out.append(time.perf_counter() - t)
  return tuple(out)


def train_step(size: dict) -> tuple[float, float]:
  """(examples/s, MFU at float32 peak) of the fine-tuning train step (bench_train's measurement); its FLOPs are the
  usual 3 × forward, as MFU is defined in the PaLM paper."""
  shape = (size["image_size"], size["image_size"])
  rate, _, flops = bench_train.step_rate({"pool_type": "map", **size["model"]}, shape, size["train_batch"],
                                         size["train_steps"], num_classes=1000, stage="finetune")
  return rate, rate / size["train_batch"] * flops / (peak_tflops("float32")[0] * 1e12 * jax.device_count())


def pipeline(size: dict) -> tuple[float, int]:
  """(img/s, workers) of the loader with every available core as a worker process."""
  workers = max(1, min(16, len(os.sched_getaffinity(0))))
  with tempfile.TemporaryDirectory() as data_dir:
    reader = bench_pipeline.jpeg_split(size["jpegs"], data_dir)
    _, rate = bench_pipeline.loader_rate(reader, size["jpeg_batch"], workers=workers)
  return rate, workers


def measure(size: dict, model: str) -> list[tuple[str, str, str, str]]:
  """The table's rows: (measurement, rate, MFU, note)."""
  rows = []
  for dtype in ("float32", "bfloat16"):
    rate, mfu, sweep = extraction(size, dtype)
    rows.append((f"features {model} {dtype}", f"{rate:.1f} img/s", f"{mfu:.2%}", f"micro-batch → img/s: {sweep}"))
  fixed, loo = fewshot(size)
  rows.append((f"few-shot suite, {size['classes']} classes, d={size['dim']}, {size['n_test']} test", f"{fixed:.2f} s",
               "", f"with the 21-λ LOO sweep: {loo:.2f} s ({loo / fixed:.1f}×)"))
  rate, mfu = train_step(size)
  rows.append((f"fine-tune step {model}, batch {size['train_batch']}", f"{rate:.1f} ex/s", f"{mfu:.2%}", "float32"))
  rate, workers = pipeline(size)
  rows.append(("input pipeline, few-shot pp on 500×375 JPEGs", f"{rate:.0f} img/s", "", f"{workers} worker processes"))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="reduced size, for a quick check that everything runs")
  args = parser.parse_args()
  size = SMOKE if args.smoke else FULL
  t0 = time.perf_counter()
  print(f"devices: {jax.device_count()} × {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"peaks: " + ", ".join(f"{d} {peak_tflops(d)[0]:.1f} TFLOP/s ({peak_tflops(d)[1]})"
                               for d in ("float32", "bfloat16")))
  rows = measure(size, "ViT-B/16 @224" if not args.smoke else f"smoke ViT @{size['image_size']}")
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  print(f"{'measurement':{widths[0]}s}  {'rate':>{widths[1]}s}  {'MFU':>{max(3, widths[2])}s}  note")
  for name, value, mfu, note in rows:
    print(f"{name:{widths[0]}s}  {value:>{widths[1]}s}  {mfu:>{max(3, widths[2])}s}  {note}")
  print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  main()
