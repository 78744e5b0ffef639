"""Named pre-training configs (configs as code); `evalkit pretrain --config=NAME` or a path to a TOML file."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from evalkit.train.pretrain import ConfigError, PretrainConfig

# The toy ViT of docs/protocols.md, "Toy scale" (width 96, depth 4, patch 7 → 16 tokens at 28×28, MAP head), on
# Fashion-MNIST train[:50000] — the other 10,000 training images stay unseen, for the in-domain probes and fine-tune.
DEMO_MODEL = {"patch_size": [7, 7], "width": 96, "depth": 4, "mlp_dim": 384, "num_heads": 4, "pool_type": "map"}


def demo() -> PretrainConfig:
  """≈ 2 minutes on 2 CPU cores (1,000 steps of 128 at ≈ 1,100 examples/s including the input pipeline).

  The paper's recipe with three values chosen by `bench/sweep_demo_recipe.py` (table in BUILD.md; the model's own
  head on Fashion-MNIST test: 70.6% with the earlier values, 85.4% with these): the head bias starts at −log(K) for
  K = 10 classes (the config default; the paper's −10 is −log(K) for JFT's ~30k), lr 4e-3, and no augmentation —
  2.5 epochs are too few to overfit, and resize(32)|random_crop(28) trained on objects 1.14× larger than the test
  images show them.
  """
  return PretrainConfig(
      name="demo", model=dict(DEMO_MODEL), dataset="fashion_mnist", train_split="train[:50000]",
      pp_train="decode|resize(28)|value_range(-1, 1)",
      batch_size=128, total_steps=1000, seed=0, optimizer="bv_adafactor", lr=4e-3, wd=1e-4,
      schedule={"decay_type": "rsqrt", "warmup_steps": 100, "timescale": 300, "cooldown_steps": 200},
      checkpoint_every=400, log_every=20)


def digits_tiny() -> PretrainConfig:
  """Seconds-long run on the embedded digits (tests, a smoke run without Fashion-MNIST)."""
  return PretrainConfig(
      name="digits_tiny", model={"variant": "mu/7", "pool_type": "map"}, dataset="digits", train_split="train",
      pp_train="decode|resize(32)|random_crop(28)|value_range(-1, 1)", batch_size=64, total_steps=60, seed=0,
      lr=3e-3, wd=1e-4, schedule={"decay_type": "rsqrt", "warmup_steps": 10, "timescale": 20, "cooldown_steps": 10},
      checkpoint_every=20, log_every=5)


def digits_demo() -> PretrainConfig:
  """The demo's fallback without Fashion-MNIST: the demo model on digits train[:800] (probe on train[800:]); 800
  images for 600 steps do overfit, so it keeps the crop augmentation, at the lr it was tuned with."""
  return dataclasses.replace(
      demo(), name="digits_demo", dataset="digits", train_split="train[:800]",
      pp_train="decode|resize(32)|random_crop(28)|value_range(-1, 1)", lr=2e-3, total_steps=600,
      checkpoint_every=200)


CONFIGS = {"demo": demo, "digits_demo": digits_demo, "digits_tiny": digits_tiny}


def load(name_or_path: str, overrides: dict | None = None) -> PretrainConfig:
  """A named config or a TOML file (its keys are PretrainConfig fields), with optional field overrides."""
  if name_or_path in CONFIGS:
    base = CONFIGS[name_or_path]().to_dict()
  elif Path(name_or_path).suffix == ".toml":
    try:
      base = {"name": Path(name_or_path).stem, **tomllib.loads(Path(name_or_path).read_text())}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
      raise ConfigError(f"pretrain config {name_or_path}: {e}") from None
  else:
    raise ConfigError(f"unknown pretrain config {name_or_path!r}; named configs: {', '.join(CONFIGS)} "
                      "(or a path to a .toml file)")
  try:
    return PretrainConfig.from_dict({**base, **(overrides or {})})
  except (TypeError, ValueError) as e:
    raise ConfigError(f"pretrain config {name_or_path}: {' '.join(str(e).split())}") from None
