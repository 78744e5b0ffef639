"""Which upstream recipe makes the demo's toy ViT good? A scripted sweep, one table out.

Each row pre-trains the demo model (`pretrain_configs.demo()`, width 96, depth 4, patch 7, MAP head) on Fashion-MNIST
train[:50000] with some fields changed, then scores the model's own head on Fashion-MNIST test (top-1 of the 10
logits, with its bootstrap 95% interval) and reports the seconds the run took. Everything else is the
paper's recipe (sigmoid loss, MAP head, big_vision's Adafactor, rsqrt schedule with cooldown).

  python3 bench/sweep_demo_recipe.py [--out=DIR] [--only=name,name] [--data_dir=DIR]

Runs one after another (≈ 2 minutes each on 2 cores; a finished row is read back from its workdir, an unfinished
run resumes) and prints a Markdown table; needs Fashion-MNIST (`apt-get install dataset-fashion-mnist`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax

from evalkit import demo
from evalkit.report import tables
from evalkit.train import pretrain, pretrain_configs

K = 10  # Fashion-MNIST classes
NO_AUG = "decode|resize(28)|value_range(-1, 1)"

# The demo's recipe before this sweep; every row changes some of its fields. `noaug_lr4e-3` is today's demo.
BEFORE = {"head_bias_init": -10.0, "lr": 2e-3,
          "pp_train": "decode|resize(32)|random_crop(28)|flip_lr|value_range(-1, 1)"}

# name -> PretrainConfig field overrides (on top of BEFORE).
RECIPES: dict[str, dict] = {
    "demo": {},  # head bias -10: -log(K) for JFT's ~30k classes
    "bias_logK": {"head_bias_init": -math.log(K)},
    "bias_logK_lr1e-3": {"head_bias_init": -math.log(K), "lr": 1e-3},
    "bias_logK_lr4e-3": {"head_bias_init": -math.log(K), "lr": 4e-3},
    "bias_logK_noflip": {"head_bias_init": -math.log(K),
                         "pp_train": "decode|resize(32)|random_crop(28)|value_range(-1, 1)"},
    "bias_logK_wd0": {"head_bias_init": -math.log(K), "wd": 0.0},
    "bias_logK_lr1e-2": {"head_bias_init": -math.log(K), "lr": 1e-2},
    "bias_logK_lr4e-3_warmup20": {"head_bias_init": -math.log(K), "lr": 4e-3,
                                  "schedule": {"decay_type": "rsqrt", "warmup_steps": 20, "timescale": 300,
                                               "cooldown_steps": 200}},
    "bias_logK_lr4e-3_gap": {"head_bias_init": -math.log(K), "lr": 4e-3,
                             "model": {**pretrain_configs.DEMO_MODEL, "pool_type": "gap"}},
    # resize(32)|random_crop(28) trains on objects 32/28 = 1.14× larger than the 28-pixel test images show them:
    # without that scale change (no augmentation: 2.5 epochs are too few to overfit).
    "noaug_lr4e-3": {"head_bias_init": -math.log(K), "lr": 4e-3, "pp_train": NO_AUG},
    "noaug_lr4e-3_wd0": {"head_bias_init": -math.log(K), "lr": 4e-3, "pp_train": NO_AUG, "wd": 0.0},
    "noaug_lr4e-3_timescale1000": {"head_bias_init": -math.log(K), "lr": 4e-3, "pp_train": NO_AUG,
                                   "schedule": {"decay_type": "rsqrt", "warmup_steps": 100, "timescale": 1000,
                                                "cooldown_steps": 200}},
    "noaug_lr1e-2": {"head_bias_init": -math.log(K), "lr": 1e-2, "pp_train": NO_AUG},
    "noaug_lr6e-3": {"head_bias_init": -math.log(K), "lr": 6e-3, "pp_train": NO_AUG},
    "noaug_lr4e-3_warmup50": {"head_bias_init": -math.log(K), "lr": 4e-3, "pp_train": NO_AUG,
                              "schedule": {"decay_type": "rsqrt", "warmup_steps": 50, "timescale": 300,
                                           "cooldown_steps": 200}},
}


def run_recipe(name: str, overrides: dict, out: Path, data_dir: str | None) -> dict:
  workdir = out / name
  done = workdir / "row.json"
  if done.exists():
    return json.loads(done.read_text())
  config = dataclasses.replace(pretrain_configs.demo(), **{**BEFORE, **overrides})
  start = time.perf_counter()
  run = pretrain.build_run(config, str(workdir), data_dir=data_dir, progress=False)
  final = pretrain.train(run)["final"]
  seconds = time.perf_counter() - start
  row = {"recipe": name, "overrides": overrides, "top1": demo.upstream_top1(run, final, data_dir), "seconds": seconds}
  done.write_text(json.dumps(row))
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="/tmp/evalkit_recipe_sweep")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--only", default="", help="comma-separated recipe names (default: all)")
  args = parser.parse_args()
  names = [n for n in RECIPES if not args.only or n in args.only.split(",")]
  print(f"jax {jax.__version__}, {jax.device_count()} devices, {os.cpu_count()} CPUs")
  print("| recipe | upstream top-1 % (95% CI) | seconds |\n|---|---|---|", flush=True)
  for name in names:
    row = run_recipe(name, RECIPES[name], Path(args.out), args.data_dir)
    print(f"| {name} | {tables.percent_with_ci(row['top1'])} | {row['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
