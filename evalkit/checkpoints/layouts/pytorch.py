"""PyTorch parameter layouts -> evalkit's (big_vision's) tree: the pieces the timm and Hugging Face converters share.

torch stores a Linear as weight (out, in) and bias (out,); flax's Dense holds kernel (in, out). A Conv2d weight is
OIHW; flax's Conv kernel is HWIO. Attention projections are (H*hd, D) matrices whose rows are head-major (row
h*hd + d is head h, channel d: every library here reshapes the projection's output to (..., H, hd)); flax's
MultiHeadDotProductAttention keeps query/key/value kernels as (D, H, hd) and the output kernel as (H, hd, D).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from evalkit.checkpoints.tree import CheckpointError, capped


class StateDict:
  """A torch state dict consumed by name: `take` pops a tensor and remembers names that were absent, so one report
  can list every missing and every left-over (unexpected) name in the checkpoint's own naming."""

  def __init__(self, flat: Mapping[str, np.ndarray]):
    self.left = dict(flat)
    self.missing: list[str] = []

  def __contains__(self, name: str) -> bool:
    return name in self.left

  def take(self, name: str) -> np.ndarray | None:
    if name in self.left:
      return np.asarray(self.left.pop(name))
    self.missing.append(name)
    return None

  def discard(self, *names: str) -> None:
    """Drops tensors inference never uses (e.g. a masked-modelling mask token), if present."""
    for name in names:
      self.left.pop(name, None)

  def discard_prefix(self, prefix: str) -> None:
    for name in [k for k in self.left if k.startswith(prefix)]:
      del self.left[name]

  def check(self, spec: str, what: str) -> None:
    """Raises the ingestion report when a name the architecture needs is absent or the file has names it does not
    use."""
    parts = []
    if self.missing:
      parts.append(f"missing {capped(self.missing)}")
    if self.left:
      parts.append(f"unexpected {capped(sorted(self.left))}")
    if parts:
      raise CheckpointError(f"checkpoint {spec} does not fit {what}: " + "; ".join(parts))


def _put(out: dict, name: str, value: np.ndarray | None) -> None:
  if value is not None:
    out[name] = value


def linear(sd: StateDict, src: str, dst: str, out: dict, *, bias: bool = True) -> None:
  """torch Linear `src` -> flax Dense `dst`."""
  w = sd.take(f"{src}.weight")
  _put(out, f"{dst}/kernel", None if w is None else w.T)
  if bias:
    _put(out, f"{dst}/bias", sd.take(f"{src}.bias"))


def layer_norm(sd: StateDict, src: str, dst: str, out: dict) -> None:
  _put(out, f"{dst}/scale", sd.take(f"{src}.weight"))
  _put(out, f"{dst}/bias", sd.take(f"{src}.bias"))


def patch_conv(sd: StateDict, src: str, out: dict, *, bias: bool) -> None:
  """torch Conv2d (OIHW) `src` -> evalkit's `embedding` (HWIO)."""
  w = sd.take(f"{src}.weight")
  _put(out, "embedding/kernel", None if w is None else np.transpose(w, (2, 3, 1, 0)))
  if bias:
    _put(out, "embedding/bias", sd.take(f"{src}.bias"))


def attention(out: dict, dst: str, num_heads: int, *, q, k, v, o) -> None:
  """(weight, bias) pairs of the query, key, value and output projections -> flax MultiHeadDotProductAttention."""
  for name, (w, b) in (("query", q), ("key", k), ("value", v)):
    if w is not None:
      d_in = w.shape[1]
      out[f"{dst}/{name}/kernel"] = w.T.reshape(d_in, num_heads, -1)
    if b is not None:
      out[f"{dst}/{name}/bias"] = b.reshape(num_heads, -1)
  w, b = o
  if w is not None:
    out[f"{dst}/out/kernel"] = w.T.reshape(num_heads, -1, w.shape[0])
  _put(out, f"{dst}/out/bias", b)


def split_rows(w: np.ndarray | None, parts: int) -> list:
  """A fused projection (parts*D, ...) -> its `parts` row blocks (timm's qkv is [q; k; v], its kv is [k; v])."""
  if w is None:
    return [None] * parts
  if w.shape[0] % parts:
    return [w] + [None] * (parts - 1)  # left mis-shaped: the shape check after conversion names it
  return list(np.split(w, parts, axis=0))


def fold_prefix_posemb(out: dict, pos: np.ndarray | None, *, class_token: bool, num_registers: int) -> None:
  """Writes a posemb whose first rows belong to the class token and registers (they concatenate the tokens, then
  add the posemb): each prefix row is added to its token's parameter, the patch rows stay the posemb. Exactly
  equivalent, since evalkit adds the posemb to the patches before it concatenates the tokens."""
  if pos is None:
    return
  rows = int(class_token) + num_registers
  if class_token and "cls" in out:
    out["cls"] = np.asarray(out["cls"], np.float32) + np.asarray(pos[:, :1], np.float32)
  if num_registers and "registers" in out:
    out["registers"] = (np.asarray(out["registers"], np.float32)
                        + np.asarray(pos[:, int(class_token):rows], np.float32))
  out["pos_embedding"] = pos[:, rows:]
