"""Declarative task specs (TOML files in `tasks/`, or any `--tasks_dir`) and their registry.

A task names a TFDS dataset, its train/test splits, a big_vision preprocessing string and a protocol; the protocol's
own fields are parsed by its adapter (evalkit.adapters). Its spec hash (over the parsed spec) goes into every result,
so that only results of identical protocols are ranked against each other. Published numbers live in checkpoint
cards (`[published]`), never in task specs.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from evalkit import adapters, fileio
from evalkit.data import pp as pp_lib
from evalkit.errors import EvalkitError

COMMON_FIELDS = ("name", "dataset", "protocol", "train_split", "test_split", "pp")
OPTIONAL_HASHED = ("headline", "extra_tests")  # hashed only when set
UNHASHED = ("description",)
REPO_TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


class TaskError(EvalkitError):
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
  """A parsed task spec: the common fields, plus `config`, the protocol adapter's own (validated) settings."""
  name: str
  dataset: str  # TFDS name, optionally with ":version"
  protocol: str
  train_split: str
  test_split: str
  pp: str  # big_vision preprocessing string for evaluation
  config: Any  # the adapter's config dataclass
  description: str = ""
  headline: str = ""  # the headline metric when not the protocol's default (e.g. "top1_polyak")
  extra_tests: tuple[ExtraTest, ...] = ()
  source_file: str = ""

  @property
  def adapter(self) -> adapters.Adapter:
    return adapters.get(self.protocol)

  def spec(self) -> dict:
    """The protocol-defining part of the task (what the spec hash covers): no description, run-only fields or file.

    Fields added after results were first written (`headline`, `extra_tests`) enter only when set, so the hashes of
    specs that do not use them, and the comparability of their results, stay as they were."""
    d = dataclasses.asdict(self)
    spec = {k: d[k] for k in COMMON_FIELDS}
    config = dataclasses.asdict(self.config)
    spec.update({k: config[k] for k in self.adapter.hashed_fields()})
    spec.update({k: d[k] for k in OPTIONAL_HASHED if d[k]})
    return spec

  @property
  def spec_hash(self) -> str:
    return fileio.json_sha256(self.spec())[:16]

  @property
  def headline_metric(self) -> str:
    return self.headline or self.adapter.headline(self.config)

  def replace(self, **fields) -> "Task":
    """A copy with common or protocol fields changed; the protocol's config validates its fields again."""
    own = {f.name for f in dataclasses.fields(self)}
    config = {k: v for k, v in fields.items() if k not in own}
    try:
      new_config = dataclasses.replace(self.config, **config)
    except (ValueError, TypeError) as e:
      raise TaskError(f"task {self.name}: {_message(e)}") from None
    return dataclasses.replace(self, **{k: v for k, v in fields.items() if k in own}, config=new_config)


def _message(e: BaseException) -> str:
  return " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())


def make_task(*, source_file: str = "", **raw) -> Task:
  """A task from spec fields (as in a TOML file: common fields plus the protocol's own); TaskError if invalid."""
  where = source_file or raw.get("name", "<spec>")
  try:
    return _build(dict(raw), source_file)
  except (ValueError, TypeError, KeyError) as e:
    raise TaskError(f"task spec {where}: {_message(e)}") from None


def _build(raw: dict, source_file: str) -> Task:
  missing = [f for f in COMMON_FIELDS if f not in raw and f != "pp"]
  if missing:
    raise ValueError(f"missing field(s) {missing}")
  adapter = adapters.get(raw["protocol"])  # KeyError naming the known protocols
  if adapter.prepare:
    adapter.prepare(raw)
  if "pp" not in raw:
    raise ValueError("missing field(s) ['pp']")
  common = {k: raw.pop(k) for k in (*COMMON_FIELDS, *UNHASHED, "headline") if k in raw}
  for key, value in common.items():
    if not isinstance(value, str):
      raise ValueError(f"{key} must be a string, got {value!r}")
  if not fileio.is_safe_name(common["name"]):
    raise ValueError(f"name {common['name']!r} cannot be a result file name: {fileio.NAME_RULE}")
  extras = _parse_extra_tests(raw.pop("extra_tests")) if "extra_tests" in raw else ()
  config = adapters.config_from_spec(adapter, raw)
  _check_pp({"pp": common["pp"], **{k: v for k, v in dataclasses.asdict(config).items() if k.startswith("pp")}})
  task = Task(**common, config=config, extra_tests=extras, source_file=source_file)
  allowed = adapter.metric_names(config)
  if task.headline and task.headline not in allowed:
    raise ValueError(f"headline {task.headline!r} is not a metric this task reports; one of {allowed}")
  return task


def _check_pp(pp_fields: dict) -> None:
  """Every pp string of the spec parses now, not after features were extracted or a model trained."""
  for key, value in pp_fields.items():
    if isinstance(value, str) and not value.strip():
      raise ValueError(f"{key} is empty; give a big_vision pp string like 'decode|resize(224)|value_range(-1, 1)'")
    if value is not None:
      try:
        pp_lib.parse(value)
      except pp_lib.PPError as e:
        raise ValueError(f"{key}: {e}") from None


def _parse(path: Path) -> Task:
  try:
    raw = tomllib.loads(path.read_text())
  except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
    raise TaskError(f"task spec {path}: {e}") from None
  raw.setdefault("name", path.stem)
  return make_task(**raw, source_file=str(path))


def _parse_extra_tests(entries) -> tuple[ExtraTest, ...]:
  if not isinstance(entries, (list, tuple)) or not all(isinstance(e, (dict, ExtraTest)) for e in entries):
    raise ValueError("extra_tests must be a list of tables ([[extra_tests]])")
  fields = {f.name for f in dataclasses.fields(ExtraTest)}
  out = []
  for e in entries:
    if isinstance(e, ExtraTest):
      e = dataclasses.asdict(e)
    unknown, missing = sorted(set(e) - fields), sorted({"name", "dataset", "split"} - set(e))
    if unknown or missing:
      raise ValueError(f"extra_tests entry {e}: unknown {unknown}, missing {missing}")
    out.append(ExtraTest(**{k: str(v) for k, v in e.items()}))
  names = [e.name for e in out]
  if len(set(names)) != len(names):
    raise ValueError(f"extra_tests names repeat: {names}")
  return tuple(out)


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
