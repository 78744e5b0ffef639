"""The adapter registry: how a task protocol plugs into the evaluation pipeline.

An adapter is one module that owns
  * a frozen config dataclass: the protocol's fields of a task spec, validated in `__post_init__` (ValueError);
  * `headline(config)`: its default headline metric, and `metric_names(config)`: every metric it reports;
  * `run(subject, task, settings, mesh) -> Outcome`: features or training, then metrics in evalkit's one shape.
It registers itself with `register_adapter` and is imported once in `adapters/__init__.py`. `tasks.py` parses the
spec's common fields and hands the rest to `config_from_spec`; `evaluate.py` calls `run` and writes the record.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

from evalkit import features
from evalkit.errors import EvalkitError


@dataclasses.dataclass
class EvalSettings:
  """How to run an evaluation (never what it computes: none of these enter a spec hash)."""
  data_dir: str | None = None
  results_dir: str = "results"
  cache_dir: str | None = None
  batch_size: int = 256
  representation: str = features.DEFAULT_REPRESENTATION
  dtype: str = "float32"
  loo: bool = True
  overwrite: bool = False
  progress: bool = True
  workers: int | None = None  # decoding + pp processes (None: as many as pay, `source.default_workers`)


@dataclasses.dataclass
class Outcome:
  """What an adapter's run returns; `results.build_record` makes the result record of it.

  metrics: name -> Metric ({value, se, ci95, n, ...}); checkpoint: the subject's provenance; dataset: the test
  split's fingerprint; data: sizes and ranges; details: protocol-specific record fields (episodes, lr curve, ...);
  manifest: which training examples were used; items: per-test-item predictions (`results.make_items`).
  """
  metrics: dict
  checkpoint: dict
  dataset: dict
  data: dict
  details: dict = dataclasses.field(default_factory=dict)
  extra_tests: dict = dataclasses.field(default_factory=dict)
  manifest: dict | None = None
  items: dict | None = None
  timings: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Adapter:
  name: str
  config_cls: type
  run: Callable[..., Outcome]
  headline: Callable[[Any], str]
  metric_names: Callable[[Any], list[str]]
  unhashed: tuple[str, ...] = ()  # config fields that say how to run or only derive others: outside the spec hash
  prepare: Callable[[dict], None] | None = None  # derives fields of a raw spec before it is parsed

  def hashed_fields(self) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(self.config_cls) if f.name not in self.unhashed)


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str, config_cls: type, *, headline: Callable, metric_names: Callable,
                     unhashed: tuple[str, ...] = (), prepare: Callable | None = None):
  """Decorator for an adapter's run function: `@register_adapter("knn", KnnConfig, headline=..., ...)`."""
  def register(run):
    if name in ADAPTERS:
      raise ValueError(f"adapter {name!r} registered twice")
    ADAPTERS[name] = Adapter(name, config_cls, run, headline, metric_names, tuple(unhashed), prepare)
    return run
  return register


def get(name: str) -> Adapter:
  if name not in ADAPTERS:
    raise KeyError(f"unknown protocol {name!r}; known: {sorted(ADAPTERS)}")
  return ADAPTERS[name]


class SplitTooSmall(EvalkitError, ValueError):
  """A task spec asks for more training examples than its train split has (shots × classes, k nearest)."""


def check_distinct_positive(field: str, values) -> None:
  """ValueError unless `values` is a non-empty list of distinct positive numbers (shots, ks, grids)."""
  if not values or any(not v > 0 for v in values) or len(set(values)) != len(values):
    raise ValueError(f"{field} must be distinct positive numbers, got {list(values)}")


# ----------------------------------------------------------------------------------------------------------------------
# Spec values -> typed config fields.


def _convert(value, hint, field: str):
  """`value` from TOML as the field's annotated type; a ValueError names the field and what was expected."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    return _convert(value, next(a for a in args if a is not type(None)), field)
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ValueError(f"{field} must be a list, got {value!r}")
    return tuple(_convert(v, args[0], field) for v in value)
  if hint is bool:
    if not isinstance(value, bool):
      raise ValueError(f"{field} must be true or false, got {value!r}")
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ValueError(f"{field} must be an integer, got {value!r}")
    return value
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"{field} must be a number, got {value!r}")
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise ValueError(f"{field} must be a string, got {value!r}")
    return value
  raise TypeError(f"config field {field}: unsupported annotation {hint!r} (use int, float, str, bool, tuple or None)")


def config_from_spec(adapter: Adapter, raw: dict):
  """The adapter's config from the spec's protocol fields (defaults for the missing ones); ValueError if invalid."""
  hints = typing.get_type_hints(adapter.config_cls)
  names = {f.name for f in dataclasses.fields(adapter.config_cls)}
  unknown = sorted(set(raw) - names)
  if unknown:
    raise ValueError(f"unknown field(s) {unknown} for protocol {adapter.name!r}; its fields: {sorted(names)}")
  return adapter.config_cls(**{k: _convert(v, hints[k], k) for k, v in raw.items()})
