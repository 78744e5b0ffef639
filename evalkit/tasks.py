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
# Fields that only derive hashed ones: `crop` with `resolution` / `h_res` writes pp_train and pp (see `transfer_pp`).
DERIVING_FIELDS = {"finetune": ("crop", "resolution", "h_res")}
CROPS = ("inception_crop", "resmall_crop", "resize_crop")


def transfer_pp(crop: str, resolution: int = 384, h_res: int = 448, flip: bool = True) -> tuple[str, str]:
  """(pp_train, pp) of big_vision's transfer config (`configs/transfer.py`) for one `crop` and resolution.

  Test: resize the smaller side to h_res, central crop `resolution`. Train by `crop`: `inception_crop` (TF's
  distorted-bounding-box sampler, then resize), `resmall_crop` (resize_small(h_res) + random crop) or `resize_crop`
  (square resize to h_res + random crop); then a random left-right flip. Values to [-1, 1] on both.
  """
  train = {"inception_crop": f"decode|inception_crop({resolution})",
           "resmall_crop": f"decode|resize_small({h_res})|random_crop({resolution})",
           "resize_crop": f"decode|resize({h_res})|random_crop({resolution})"}
  if crop not in train:
    raise TaskError(f"unknown crop {crop!r}; big_vision's transfer config knows {', '.join(CROPS)}")
  flip_op = "|flip_lr" if flip else ""
  return (f"{train[crop]}{flip_op}|value_range(-1, 1)",
          f"decode|resize_small({h_res})|central_crop({resolution})|value_range(-1, 1)")
COMMON_FIELDS = ("name", "dataset", "protocol", "train_split", "test_split", "pp")
OPTIONAL_HASHED = ("headline", "extra_tests")  # hashed only when set
REPO_TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


class TaskError(Exception):
  """An unknown task or an invalid spec; the message is one line."""


@dataclasses.dataclass(frozen=True)
class ExtraTest:
  """Another test set in the task's label space, scored with the same fitted model beside `test_split`.

  `label_key` names the label feature; a sequence of labels per image (e.g. ImageNet-ReaL's `real_label`) counts a
  prediction correct when it is in the set, and images with an empty set are skipped (big_vision's evaluators).
  """
  name: str
  dataset: str
  split: str
  label_key: str = "label"


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
  # Fine-tuning (docs/protocols.md, "Fine-tuning"): SGD momentum 0.9, clip 1.0, no weight decay, warmup then cosine (or constant) decay,
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
  crop: str = ""  # big_vision transfer-config crop that wrote pp_train / pp ("" when they were given directly)
  resolution: int | None = None
  h_res: int | None = None
  cache_images: bool = False  # decode the train split into memory once (small datasets)
  headline: str = ""  # the headline metric when not the protocol's default (e.g. "top1_polyak")
  extra_tests: tuple[ExtraTest, ...] = ()
  anchors: dict = dataclasses.field(default_factory=dict)  # informational; published numbers live in cards
  source_file: str = ""

  def spec(self) -> dict:
    """The protocol-defining part of the task (what the spec hash covers): no description, anchors or file.

    Fields added after results were first written (`headline`, `extra_tests`) enter only when set, so the hashes of
    specs that do not use them, and the comparability of their results, stay as they were."""
    d = dataclasses.asdict(self)
    spec = {k: d[k] for k in COMMON_FIELDS + PROTOCOL_FIELDS[self.protocol]}
    spec.update({k: d[k] for k in OPTIONAL_HASHED if d[k]})
    return spec

  @property
  def spec_hash(self) -> str:
    return fileio.json_sha256(self.spec())[:16]

  @property
  def headline_metric(self) -> str:
    if self.headline:
      return self.headline
    return f"{self.headline_shots}shot" if self.protocol == "fewshot_ridge" else "top1"


def _parse(path: Path) -> Task:
  try:
    raw = tomllib.loads(path.read_text())
  except (OSError, tomllib.TOMLDecodeError) as e:
    raise TaskError(f"task spec {path}: {e}") from None
  raw.setdefault("name", path.stem)
  if raw.get("protocol") == "finetune" and "crop" in raw:
    _derive_transfer_pp(raw, path)
  missing = [f for f in ("dataset", "protocol", "train_split", "test_split", "pp") if f not in raw]
  if missing:
    raise TaskError(f"task spec {path}: missing field(s) {missing}")
  if raw["protocol"] not in PROTOCOLS:
    raise TaskError(f"task spec {path}: unknown protocol {raw['protocol']!r}; known: {list(PROTOCOLS)}")
  # Only the protocol's own fields: a fine-tune setting in a few-shot spec would be silently ignored otherwise.
  fields = {*COMMON_FIELDS, *PROTOCOL_FIELDS[raw["protocol"]], *RUN_FIELDS.get(raw["protocol"], ()),
            *DERIVING_FIELDS.get(raw["protocol"], ()), *OPTIONAL_HASHED, "description", "anchors"}
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
  if "extra_tests" in raw:
    raw["extra_tests"] = _parse_extra_tests(raw["extra_tests"], path)
  if raw.get("headline") and raw["protocol"] == "finetune":
    allowed = ("top1", "top1_polyak") if raw.get("polyak_decay") else ("top1",)
    if raw["headline"] not in allowed:
      raise TaskError(f"task spec {path}: headline {raw['headline']!r} is not a metric this task reports; "
                      f"one of {list(allowed)} (top1_polyak needs polyak_decay)")
  return Task(**raw, source_file=str(path))


def _parse_extra_tests(entries, path: Path) -> tuple[ExtraTest, ...]:
  if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
    raise TaskError(f"task spec {path}: extra_tests must be a list of tables ([[extra_tests]])")
  fields = {f.name for f in dataclasses.fields(ExtraTest)}
  out = []
  for e in entries:
    unknown, missing = sorted(set(e) - fields), sorted({"name", "dataset", "split"} - set(e))
    if unknown or missing:
      raise TaskError(f"task spec {path}: extra_tests entry {e}: unknown {unknown}, missing {missing}")
    out.append(ExtraTest(**{k: str(v) for k, v in e.items()}))
  names = [e.name for e in out]
  if len(set(names)) != len(names):
    raise TaskError(f"task spec {path}: extra_tests names repeat: {names}")
  return tuple(out)


def _derive_transfer_pp(raw: dict, path: Path) -> None:
  """A fine-tune spec that names a `crop` gets big_vision's pp for it; giving pp strings as well is ambiguous."""
  given = [k for k in ("pp", "pp_train") if k in raw]
  if given:
    raise TaskError(f"task spec {path}: `crop` writes pp and pp_train; drop {given} or drop `crop`")
  raw.setdefault("resolution", 384)
  raw.setdefault("h_res", round(raw["resolution"] * 448 / 384))  # big_vision's 448/384 unless given
  raw["pp_train"], raw["pp"] = transfer_pp(raw["crop"], int(raw["resolution"]), int(raw["h_res"]))


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
