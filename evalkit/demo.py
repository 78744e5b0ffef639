"""`evalkit demo`: the whole path on embedded data, offline, in a few minutes on 2 CPU cores.

Featurizers side by side on the embedded few-shot tasks: a randomly initialised tiny ViT checkpoint (written as a
big_vision-style .npz, then read back through the same loader users' checkpoints go through) and raw pixels — the
reference row every table should show.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp

from evalkit import checkpoints, distributed, evaluate, report, results, tasks
from evalkit.data import embedded
from evalkit.models import vit

# The toy model of DESIGN.md §10: width 96, depth 4, patch 7 at 28×28 (16 tokens), MAP head.
DEMO_MODEL = dict(patch_size=(7, 7), width=96, depth=4, mlp_dim=384, num_heads=4, pool_type="map")
IMAGE_SIZE = (28, 28)


def write_random_init(path: Path, seed: int = 0) -> Path:
  model = vit.ViT(num_classes=10, **DEMO_MODEL)
  params = model.init(jax.random.key(seed), jnp.zeros((1, *IMAGE_SIZE, 3)))["params"]
  checkpoints.save_npz(path, params)
  return path


def demo_tasks(data_dir) -> list[str]:
  names = ["digits"]
  if embedded.fashion_mnist_available():
    names.append("fashion_mnist_heldout")
  else:
    print("Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` (or set EVALKIT_FASHION_MNIST_DIR); "
          "running the digits-only variant.")
  return names


def main(results_dir: str = "results", data_dir: str | None = None, progress: bool = True) -> int:
  start = time.perf_counter()
  out = Path(results_dir).resolve() / "demo"
  ckpt_path = write_random_init(out / "checkpoints" / "random_init.npz")
  subjects = [
      evaluate.resolve_subject(str(ckpt_path), name="random_init", model_kwargs=DEMO_MODEL),
      evaluate.resolve_subject(evaluate.PIXELS),
  ]
  task_list = [tasks.load_task(t) for t in demo_tasks(data_dir)]
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out / "results"), cache_dir=None,
                                   overwrite=True, progress=progress)
  mesh = distributed.data_mesh()
  for subject in subjects:
    for task, status, detail in evaluate.run(subject, task_list, settings, mesh):
      print(f"{subject.name:12s} {task:22s} {status}: {detail}")
  records = results.load_all(settings.results_dir)
  table = report.fewshot_markdown(records)
  summary = out / "summary.md"
  summary.write_text("# evalkit demo: few-shot ridge (accuracy %, mean ± std over 3 seeds)\n\n" + table)
  print("\n" + table)
  print(f"results: {settings.results_dir}\nsummary: {summary}\nwall time: {time.perf_counter() - start:.0f} s")
  return 0
