"""Checkpoint load time and peak memory: a timm `.safetensors` file vs the same weights as big_vision `.npz`.

  python bench/bench_checkpoint_load.py [--repeats 3] [--workdir /tmp/evalkit_bench_load]

Makes a ViT-B/16 (timm's vit_base_patch16_224, ~350 MB in float32) with random weights once: saved as timm saves it
(`safetensors.numpy.save_file` of the timm state dict) and, converted by evalkit, as `.npz`. Each load runs in a
fresh process (`load_timm` vs `load_checkpoint` of the npz, both ending in params fitted to the model) and reports
wall time, the process's peak RSS and how much the load raised that peak (after imports and backend start); medians
over repeats, then the ratios safetensors / npz.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
import jax.numpy as jnp
from evalkit import checkpoints
from evalkit.checkpoints.layouts import timm
jnp.zeros(1).block_until_ready()  # the backend is up before the measurement starts
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if kind == "safetensors":
  model, params = checkpoints.load_timm(path, "vit_base_patch16_224", num_classes=0)
else:
  model = timm.architecture("vit_base_patch16_224", num_classes=0).model()
  params = checkpoints.load_checkpoint(path, model=model, image_size=(224, 224)).params
seconds = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": rss1, "load_peak_mb": rss1 - rss0}))
"""


def _make(workdir: str) -> tuple[str, str]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  from evalkit import checkpoints  # pylint: disable=import-outside-toplevel
  from evalkit.checkpoints.layouts import timm  # pylint: disable=import-outside-toplevel
  st, npz = os.path.join(workdir, "vit_b16.safetensors"), os.path.join(workdir, "vit_b16.npz")
  if os.path.exists(st) and os.path.exists(npz):
    return st, npz
  os.makedirs(workdir, exist_ok=True)
  rng = np.random.default_rng(0)
  d, mlp = 768, 3072
  state = {"patch_embed.proj.weight": (d, 3, 16, 16), "patch_embed.proj.bias": (d,), "cls_token": (1, 1, d),
           "pos_embed": (1, 197, d), "norm.weight": (d,), "norm.bias": (d,)}
  for i in range(12):
    b = f"blocks.{i}"
    state.update({f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,), f"{b}.attn.qkv.weight": (3 * d, d),
                  f"{b}.attn.qkv.bias": (3 * d,), f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
                  f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,), f"{b}.mlp.fc1.weight": (mlp, d),
                  f"{b}.mlp.fc1.bias": (mlp,), f"{b}.mlp.fc2.weight": (d, mlp), f"{b}.mlp.fc2.bias": (d,)})
  state = {k: (0.02 * rng.standard_normal(shape)).astype(np.float32) for k, shape in state.items()}
  save_file(state, st)
  model = timm.architecture("vit_base_patch16_224", num_classes=0).model()
  checkpoints.save_npz(npz, timm.convert(state, model, st))
  return st, npz


def _child(kind: str, path: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _CHILD, kind, path], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workdir", default="/tmp/evalkit_bench_load")
  args = parser.parse_args()
  st, npz = _make(args.workdir)
  sizes = {k: os.path.getsize(p) / 2**20 for k, p in (("safetensors", st), ("npz", npz))}
  runs = {k: [] for k in ("safetensors", "npz")}
  for _ in range(args.repeats):  # interleaved, so drift hits both alike
    for kind, path in (("safetensors", st), ("npz", npz)):
      runs[kind].append(_child(kind, path))
  metrics = ("seconds", "peak_rss_mb", "load_peak_mb")
  med = {k: {m: statistics.median(r[m] for r in v) for m in metrics} for k, v in runs.items()}
  for kind in ("safetensors", "npz"):
    print(f"{kind:12s} file {sizes[kind]:6.0f} MB  load {med[kind]['seconds']:6.2f} s  peak RSS "
          f"{med[kind]['peak_rss_mb']:6.0f} MB (the load raised it by {med[kind]['load_peak_mb']:.0f} MB)")
  print(f"ratio safetensors / npz: time {med['safetensors']['seconds'] / med['npz']['seconds']:.2f}x, peak memory "
        f"the load adds {med['safetensors']['load_peak_mb'] / med['npz']['load_peak_mb']:.2f}x")


if __name__ == "__main__":
  main()
