"""Declarative task specs (TOML files in `tasks/`, or any `--tasks_dir`) and their registry.

A task names a TFDS dataset, its train/test splits, a big_vision preprocessing string, a protocol with its settings,
and published anchor numbers. Its spec hash (over the parsed spec) goes into every result, so that only results of
identical protocols are ranked against each other.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from evalkit import fileio

PROTOCOLS = ("fewshot_ridge", "finetune")
# The fields that define each protocol (what a result's spec hash covers besides dataset, splits and pp).
PROTOCOL_FIELDS = {
    "fewshot_ridge": ("shots", "seeds", "l2_reg", "headline_shots"),
    "finetune": ("pp_train", "batch_size", "total_steps", "warmup_steps", "decay_type", "lr_grid", "minival_fraction",
                 "grad_clip_norm", "momentum_dtype", "polyak_decay", "seed"),
}
RUN_FIELDS = {"finetune": ("cache_images",)}  # how a protocol runs, not what it computes: outside the spec hash
COMMON_FIELDS = ("name", "dataset", "protocol", "train_split", "test_split", "pp")
REPO_TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


class TaskError(Exception):
  """An unknown task or an invalid spec; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  dataset: str  # TFDS name, optionally with ":version"
  protocol: str
  train_split: str
  test_split: str
  pp: str  # big_vision preprocessing string for evaluation
  description: str = ""
  shots: tuple[int, ...] = (1, 5, 10, 25)
  seeds: tuple[int, ...] = (0, 1, 2)
  l2_reg: float = 1024.0
  headline_shots: int = 10
  # Fine-tuning (DESIGN.md §6): SGD momentum 0.9, clip 1.0, no weight decay, warmup then cosine (or constant) decay,
  # lr chosen on a held-out minival (the last `minival_fraction` of the train split), reported on the test split.
  pp_train: str = ""
  batch_size: int = 512
  total_steps: int = 2500
  warmup_steps: int = 200
  decay_type: str = "cosine"
  lr_grid: tuple[float, ...] = (0.01,)
  minival_fraction: float = 0.02
  grad_clip_norm: float = 1.0
  momentum_dtype: str = "bfloat16"
  polyak_decay: float | None = None  # EMA of the weights, scored beside the raw weights when set
  seed: int = 0
  cache_images: bool = False  # decode the train split into memory once (small datasets)
  anchors: dict = dataclasses.field(default_factory=dict)  # {checkpoint card: {metric: published %}}
  source_file: str = ""

  def spec(self) -> dict:
    """The protocol-defining part of the task (what the spec hash covers): no description, anchors or file."""
    d = dataclasses.asdict(self)
    return {k: d[k] for k in COMMON_FIELDS + PROTOCOL_FIELDS[self.protocol]}

  @property
  def spec_hash(self) -> str:
    return fileio.json_sha256(self.spec())[:16]

  @property
  def headline_metric(self) -> str:
    return f"{self.headline_shots}shot" if self.protocol == "fewshot_ridge" else "top1"


def _parse(path: Path) -> Task:
  try:
    raw = tomllib.loads(path.read_text())
  except (OSError, tomllib.TOMLDecodeError) as e:
    raise TaskError(f"task spec {path}: {e}") from None
  raw.setdefault("name", path.stem)
  missing = [f for f in ("dataset", "protocol", "train_split", "test_split", "pp") if f not in raw]
  if missing:
    raise TaskError(f"task spec {path}: missing field(s) {missing}")
  if raw["protocol"] not in PROTOCOLS:
    raise TaskError(f"task spec {path}: unknown protocol {raw['protocol']!r}; known: {list(PROTOCOLS)}")
  # Only the protocol's own fields: a fine-tune setting in a few-shot spec would be silently ignored otherwise.
  fields = {*COMMON_FIELDS, *PROTOCOL_FIELDS[raw["protocol"]], *RUN_FIELDS.get(raw["protocol"], ()), "description",
            "anchors"}
  unknown = sorted(set(raw) - fields)
  if unknown:
    raise TaskError(f"task spec {path}: unknown field(s) {unknown} for protocol {raw['protocol']!r}; "
                    f"allowed: {sorted(fields)}")
  for key in ("shots", "seeds"):
    if key in raw:
      raw[key] = tuple(int(v) for v in raw[key])
  if "lr_grid" in raw:
    raw["lr_grid"] = tuple(float(v) for v in raw["lr_grid"])
  for key in ("l2_reg", "minival_fraction", "grad_clip_norm"):
    if key in raw:
      raw[key] = float(raw[key])
  if raw["protocol"] == "finetune" and not raw.get("pp_train"):
    raise TaskError(f"task spec {path}: a finetune task needs pp_train (train-time augmentation)")
  return Task(**raw, source_file=str(path))


def tasks_dirs(extra: list[str] | None = None) -> list[Path]:
  """The repo's `tasks/` then every extra directory (later directories override earlier ones by name)."""
  dirs = [REPO_TASKS_DIR] + [Path(d) for d in (extra or [])]
  env = os.environ.get("EVALKIT_TASKS_DIR")
  if env:
    dirs.append(Path(env))
  return dirs


def registry(extra_dirs: list[str] | None = None) -> dict[str, Task]:
  found = {}
  for d in tasks_dirs(extra_dirs):
    if d.is_dir():
      for path in sorted(d.glob("*.toml")):
        task = _parse(path)
        found[task.name] = task
  return found


def load_task(name: str, extra_dirs: list[str] | None = None) -> Task:
  """A task by registry name, or by path to a `.toml` spec."""
  if name.endswith(".toml"):
    return _parse(Path(name))
  known = registry(extra_dirs)
  if name not in known:
    raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(known))} (add specs with --tasks_dir)")
  return known[name]
