"""Host preprocessing cost: evalkit's TF-exact pp ops against decoding alone and PIL's own resize, per image, on
generated ImageNet-like JPEGs; then evalkit's loader itself (a TFDS dataset of those JPEGs read with `iter_batches`)
with 1-2 threads and 1-2 worker processes.

  python bench/bench_pipeline.py [--images 64 --repeats 3 --loader_images 512]

The pp string is the few-shot one, `decode|resize(256)|central_crop(224)|value_range(-1, 1)`. Per op: ms per image
for evalkit's op (the TF-exact float32 kernel for resize), the PIL path doing the same job (PIL's bilinear resize,
which is not TF's arithmetic) and the ratio to decoding alone. Loader: seconds to the first batch (starting threads
or spawning workers) and images/s after it, and the host cores one GPU needs at 3,000 images/s (ViT-B/16 bf16
extraction on an H100) at the best rate per thread or worker.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from evalkit.data import pp, source

PP = "decode|resize(256)|central_crop(224)|value_range(-1, 1)"
GPU_IMAGES_PER_S = 3000


def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
  """500×375 JPEGs at quality 90 with photo-like content (smooth gradients plus noise), as ImageNet's median."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
  out = []
  for _ in range(n):
    a, b, c = rng.uniform(0.005, 0.03, 3)
    base = 127 + 100 * np.sin(a * xx + b * yy + c * xx * yy / 500)[..., None] * rng.uniform(0.3, 1, 3)
    img = np.clip(base + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=90)
    out.append(buffer.getvalue())
  return out


class BenchJpegs(tfds.core.GeneratorBasedBuilder):
  """`make_jpegs(n)` as a TFDS dataset, the JPEG bytes stored as they are."""
  VERSION = tfds.core.Version("1.0.0")
  SIZE = {"n": 0}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, data in enumerate(make_jpegs(self.SIZE["n"])):
      yield i, {"image": data, "label": i % 10}


def jpeg_split(n: int, data_dir: str) -> source.SplitReader:
  """`make_jpegs(n)` prepared as the TFDS dataset `bench_jpegs` in data_dir, opened for reading."""
  BenchJpegs.SIZE["n"] = n
  BenchJpegs(data_dir=data_dir).download_and_prepare(file_format="array_record")
  return source.open_split("bench_jpegs", "train", data_dir)


def loader_rate(reader, batch_size: int = 32, **kw) -> tuple[float, float]:
  """(seconds to the first batch, img/s after it) of the loader reading the few-shot pp string."""
  t0 = time.perf_counter()
  batches = reader.iter_batches(batch_size, PP, **kw)
  next(batches)  # the threads or processes are started and warm from here
  t1 = time.perf_counter()
  rest = sum(len(b["id"]) for b in batches)
  return t1 - t0, rest / (time.perf_counter() - t1)


def loader_rates(n: int) -> list[tuple[str, float, float]]:
  """(setting, seconds to the first batch, img/s after it) with 1-2 threads and 1-2 worker processes."""
  with tempfile.TemporaryDirectory() as data_dir:
    reader = jpeg_split(n, data_dir)
    return [(label, *loader_rate(reader, **kw))
            for label, kw in (("1 thread", {"num_threads": 1}), ("2 threads", {"num_threads": 2}),
                              ("1 worker process", {"workers": 1}), ("2 worker processes", {"workers": 2}))]


def ms_per_image(fn, items, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    for item in items:
      fn(item)
    best = min(best, time.perf_counter() - t)
  return 1000 * best / len(items)


def _pil_pipeline(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as img:
    img = img.convert("RGB").resize((256, 256), Image.BILINEAR)
  x = np.asarray(img)[16:240, 16:240]
  return x.astype(np.float32) / np.float32(127.5) - np.float32(1)


def _evalkit_pipeline(data: bytes, _preprocess=pp.parse(PP)) -> np.ndarray:
  return _preprocess({"image": data})["image"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--loader_images", type=int, default=512)
  args = parser.parse_args()
  jpegs = make_jpegs(args.images)
  decoded = [pp.decode_image(j) for j in jpegs]
  resized = [pp.resize_image(x, 256) for x in decoded]
  cropped = [x[16:240, 16:240] for x in resized]
  ops = {"decode": pp.parse("decode"), "resize(256)": pp.parse("resize(256)"),
         "central_crop(224)": pp.parse("central_crop(224)"), "value_range(-1, 1)": pp.parse("value_range(-1, 1)")}
  inputs = {"decode": jpegs, "resize(256)": decoded, "central_crop(224)": resized, "value_range(-1, 1)": cropped}
  pil = {"decode": lambda j: np.asarray(Image.open(io.BytesIO(j)).convert("RGB")),
         "resize(256)": lambda x: np.asarray(Image.fromarray(x).resize((256, 256), Image.BILINEAR)),
         "central_crop(224)": lambda x: x[16:240, 16:240],
         "value_range(-1, 1)": lambda x: x.astype(np.float32) / np.float32(127.5) - np.float32(1)}
  decode_ms = ms_per_image(pil["decode"], jpegs, args.repeats)
  print(f"{args.images} JPEGs 500×375 q90; decode alone (PIL): {decode_ms:.2f} ms/img")
  print(f"{'op':20s} {'evalkit ms':>10s} {'PIL ms':>8s} {'evalkit/decode':>15s}")
  for name, op in ops.items():
    ours = ms_per_image(lambda v: op({"image": v}), inputs[name], args.repeats)
    theirs = ms_per_image(pil[name], inputs[name], args.repeats)
    print(f"{name:20s} {ours:10.2f} {theirs:8.2f} {ours / decode_ms:14.2f}×")
  area = pp.parse("resize(256, method='area')")  # not in the few-shot string; PIL's nearest job is its BOX filter
  ours = ms_per_image(lambda v: area({"image": v}), decoded, args.repeats)
  theirs = ms_per_image(lambda x: np.asarray(Image.fromarray(x).resize((256, 256), Image.BOX)), decoded, args.repeats)
  print(f"{'resize(256) area':20s} {ours:10.2f} {theirs:8.2f} {ours / decode_ms:14.2f}×  (PIL: BOX filter)")
  whole = ms_per_image(_evalkit_pipeline, jpegs, args.repeats)
  pil_whole = ms_per_image(_pil_pipeline, jpegs, args.repeats)
  print(f"{'whole pp string':20s} {whole:10.2f} {pil_whole:8.2f} {whole / decode_ms:14.2f}×  (target ≤ 1.5×)")
  print(f"loader (source.iter_batches, batches of 32, {args.loader_images} JPEGs in array_record):")
  best = 0.0
  for label, start, rate in loader_rates(args.loader_images):
    print(f"  {label:20s} first batch after {start:5.2f} s, then {rate:7.1f} img/s")
    best = max(best, rate / int(label.split()[0]))
  print(f"cores to feed one GPU at {GPU_IMAGES_PER_S} img/s: {GPU_IMAGES_PER_S / best:.0f} "
        f"(at the best {best:.0f} img/s per thread or worker)")


if __name__ == "__main__":
  main()
