"""How much in-domain fine-tuning fits the demo's budget and still answers its question? A scripted sweep, one table.

Each row fine-tunes the demo's two checkpoints — pre-trained and its random init, from a finished `evalkit demo`
(`<results_dir>/demo/pretrain/checkpoints`) — on `fashion_mnist_heldout_finetune` with some fields changed (steps,
batch, lr, augmentation), and reports both top-1s on Fashion-MNIST test, the paired Δ with its 95% CI
(`analysis.compare`), and the seconds each fine-tune took on this machine.

  python3 bench/sweep_demo_finetune.py --checkpoints=results/demo/pretrain/checkpoints [--data_dir=DIR] [--only=a,b]

Rows run one after another (≈ 10–30 s per fine-tune on 2 cores); finished ones are read back from --out.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax

from evalkit import distributed, evaluate, results, subjects, tasks
from evalkit.analysis import compare

CROP = "decode|resize(32)|random_crop(28)|flip_lr|value_range(-1, 1)"

VARIANTS = {  # overrides of tasks/fashion_mnist_heldout_finetune.toml (100 steps of 64, lr 0.03, no augmentation)
    "100x64_lr0.03": {},
    "100x64_lr0.01": {"lr_grid": (0.01,)},
    "100x64_lr0.1": {"lr_grid": (0.1,)},
    "100x64_lr0.03_crop_flip": {"pp_train": CROP},
    "200x64_lr0.03": {"total_steps": 200, "warmup_steps": 20},
    "100x128_lr0.03": {"batch_size": 128},
}


def run_variant(name: str, overrides: dict, checkpoints: Path, out: Path, data_dir: str | None) -> dict:
  task = tasks.load_task("fashion_mnist_heldout_finetune").replace(name=f"ft_{name}", **overrides)
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out), cache_dir=None, progress=False)
  seconds = {}
  for ckpt in ("pretrained", "random_init"):
    card = checkpoints / ("random_init.toml" if ckpt == "random_init" else "step_1000.toml")
    path = results.result_path(out, ckpt, task.name)
    start = time.perf_counter()
    evaluate.run(subjects.resolve_subject(str(card), name=ckpt), [task], settings, distributed.data_mesh())
    seconds[ckpt] = results.load(path)["timings"]["total_s"] if path.exists() else time.perf_counter() - start
  row = compare.compare_task(results.result_path(out, "pretrained", task.name),
                             results.result_path(out, "random_init", task.name))
  return {"row": row, "seconds": seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoints", required=True, help="the demo's pretrain/checkpoints directory")
  parser.add_argument("--out", default="/tmp/evalkit_finetune_sweep")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
  args = parser.parse_args()
  names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
  print(f"jax {jax.__version__}, {jax.device_count()} devices, {os.cpu_count()} CPUs")
  print("| variant | pre-trained top-1 % | random init top-1 % | Δ points (95% CI) | seconds (pre-trained, random) |\n"
        "|---|---|---|---|---|", flush=True)
  for name in names:
    got = run_variant(name, VARIANTS[name], Path(args.checkpoints), Path(args.out), args.data_dir)
    r, s = got["row"], got["seconds"]
    print(f"| {name} | {100 * r.acc_a:.1f} | {100 * r.acc_b:.1f} | {100 * r.delta:+.1f} ({100 * r.ci95[0]:+.1f}…"
          f"{100 * r.ci95[1]:+.1f}) | {s['pretrained']:.0f}, {s['random_init']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
