"""The pp op registry and the pp-string parser: `parse("decode|resize(224)")` -> a callable `Preprocess`.

An op is a factory registered under its big_vision name: it takes the op's arguments (Python literals from the pp
string) and returns a function (data, rng) -> data. `register_keyed` registers an op on one value of the example
(the image, by default) and supplies big_vision's `key` / `inkey` / `outkey` arguments.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError

Example = dict[str, Any]
# An op takes the example dict and an optional RNG, and returns the new dict.
OpFn = Callable[[Example, "np.random.Generator | None"], Example]


@dataclasses.dataclass(frozen=True)
class Op:
  """One parsed pp op: its source text, whether it is random, and its function."""
  text: str
  random: bool
  fn: OpFn

  def __call__(self, data: Example, rng: np.random.Generator | None) -> Example:
    if self.random and rng is None:
      raise ValueError(
          f"pp op {self.text!r} is random and needs an rng: call the "
          "preprocess function with rng=np.random.default_rng(...)")
    return self.fn(data, rng)


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """A parsed pp string; call it on one example dict.

  Attributes:
    spec: the original pp string (part of feature-cache keys, so kept verbatim).
    ops: the parsed ops, applied in order.
  """
  spec: str
  ops: tuple[Op, ...]

  @property
  def is_random(self) -> bool:
    return any(op.random for op in self.ops)

  def __call__(self, example: Example,
               rng: np.random.Generator | None = None) -> Example:
    # Shallow copy: ops replace values and never mutate arrays in place, so
    # the caller's example is left untouched.
    data = dict(example)
    for op in self.ops:
      try:
        data = op(data, rng)
      except (ValueError, KeyError, TypeError, IndexError) as e:  # e.g. a crop larger than the image
        raise PPError(f"pp op {op.text!r} of {self.spec!r} failed on an example: {_one_line(e)}") from None
      if not isinstance(data, dict):
        raise PPError(f"pp op {op.text!r} did not return a dict")
    return data


# name -> (factory, random). A factory takes the op's arguments and returns a
# function (data, rng) -> data.
_REGISTRY: dict[str, tuple[Callable[..., OpFn], bool]] = {}


def register(name: str, *, random: bool = False):
  """Decorator adding an op factory to the registry under `name`."""
  def deco(factory):
    if name in _REGISTRY:
      raise KeyError(f"pp op {name!r} is already registered")
    _REGISTRY[name] = (factory, random)
    return factory
  return deco


def known_ops() -> list[str]:
  return sorted(_REGISTRY)


def _one_line(e: BaseException) -> str:
  return " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())


def _split_pipeline(spec: str) -> list[str]:
  """Splits on top-level "|" only.

  big_vision splits on every "|"; splitting outside quotes and brackets accepts
  the same strings and also string arguments that contain "|".
  """
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      if ch == quote and spec[i - 1] != "\\":
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "|" and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  parts.append(spec[start:])
  return [p.strip() for p in parts if p.strip()]  # Empty pieces are skipped.


def _parse_call(text: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
  """Parses "name" or "name(literal, ..., kw=literal)" without evaluating code."""
  try:
    expr = ast.parse(text, mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"Syntax error in pp op {text!r}: {e.msg}") from None
  if isinstance(expr, ast.Name):
    return expr.id, (), {}
  if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)):
    raise ValueError(f"pp op {text!r} must be a name or a call like name(...)")
  try:
    args = []
    for arg in expr.args:
      if isinstance(arg, ast.Starred):
        raise ValueError("*args are not allowed")
      args.append(ast.literal_eval(arg))
    kwargs = {}
    for kw in expr.keywords:
      if kw.arg is None:
        raise ValueError("**kwargs are not allowed")
      kwargs[kw.arg] = ast.literal_eval(kw.value)
  except ValueError as e:
    raise ValueError(
        f"pp op {text!r}: arguments must be Python literals ({e})") from None
  return expr.func.id, tuple(args), kwargs


class PPError(EvalkitError, ValueError):
  """A pp string that does not parse, or an op that fails on the data (one line naming the op)."""


def parse(pp_string: str) -> Preprocess:
  """Parses a big_vision pp string into a callable `Preprocess`; PPError names the bad op."""
  if not isinstance(pp_string, str):
    raise PPError(f"a pp string must be a string like 'decode|resize(224)', got {pp_string!r}")
  ops = []
  try:
    for text in _split_pipeline(pp_string):
      name, args, kwargs = _parse_call(text)
      if name not in _REGISTRY:
        raise ValueError(f"Unknown pp op {name!r} in {pp_string!r}; known ops: {', '.join(known_ops())}")
      factory, random = _REGISTRY[name]
      try:
        fn = factory(*args, **kwargs)
      except (TypeError, ValueError) as e:  # wrong arity, unknown keyword, or an argument of the wrong kind
        raise ValueError(f"Bad arguments for pp op {text!r}: {e}") from None
      ops.append(Op(text=text, random=random, fn=fn))
  except ValueError as e:
    raise PPError(str(e)) from None
  return Preprocess(spec=pp_string, ops=tuple(ops))


def register_keyed(name: str, *, random: bool = False):
  """Decorator for an op on one value of the example (big_vision's `InKeyOutKey`): the factory takes the op's own
  arguments and returns `fn(value)` (`fn(value, rng)` for a random op); the registered op also takes `key` (both in
  and out), `inkey` and `outkey` (default "image") and replaces data[outkey] by fn(data[inkey])."""
  def deco(factory):
    @functools.wraps(factory)
    def keyed(*args, key: str | None = None, inkey: str = "image", outkey: str = "image", **kwargs) -> OpFn:
      fn = factory(*args, **kwargs)
      src, dst = key or inkey, key or outkey

      def op(data: Example, rng):
        if src not in data:
          raise KeyError(f"pp: key {src!r} not in example (keys: {sorted(data)})")
        data[dst] = fn(data[src], rng) if random else fn(data[src])
        return data
      return op
    register(name, random=random)(keyed)
    return factory
  return deco
