"""Historical layouts of ViT checkpoints -> big_vision's current parameter names (what `models.vit` uses).

- a full train state: keep "params/..." (or old flax "opt/target/...");
- `Transformer/posembed_input/pos_embedding` (original ViT) and `Transformer/pos_embedding` (pre-2022 big_vision)
  -> `pos_embedding`;
- pre-linen block names -> linen's: pre-linen flax numbered submodules with one counter per parent across all types
  (a block was LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3); linen and big_vision count
  per type (…_0, LayerNorm_1, MlpBlock_0);
- a MAP head stored inline at the top level (ViT-G development) -> `MAPHead_0/...`.
A posemb with an extra class-token row is left alone here: folding it into `cls` needs the model's grid (fit.py).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from evalkit.checkpoints.tree import CheckpointError

_OLD_BLOCK_NAMES = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
                    "MlpBlock_3": "MlpBlock_0"}
_BLOCK_RE = re.compile(r"^(Transformer/encoderblock_\d+)/([^/]+)(/.*)?$")
_POSEMB_MOVES = {"Transformer/posembed_input/pos_embedding": "pos_embedding",
                 "Transformer/pos_embedding": "pos_embedding"}
_INLINE_MAP_PARTS = ("MultiHeadDotProductAttention_0/", "LayerNorm_0/", "MlpBlock_0/")


def _unwrap_train_state(flat: dict) -> dict:
  """Keeps only the params of a full train state (big_vision's rule)."""
  for wrapper in ("params/", "opt/target/"):
    if any(k.startswith(wrapper) for k in flat):
      return {k[len(wrapper):]: v for k, v in flat.items() if k.startswith(wrapper)}
  return flat


def _rename_old_blocks(flat: dict, spec: str) -> dict:
  """Renames pre-linen per-block module names to linen's per-type numbering."""
  matches = (_BLOCK_RE.match(k) for k in flat)
  old_blocks = {m.group(1) for m in matches if m and m.group(2) == "MultiHeadDotProductAttention_1"}
  if not old_blocks:
    return flat
  out = {}
  for key, value in flat.items():
    m = _BLOCK_RE.match(key)
    if m and m.group(1) in old_blocks and m.group(2) in _OLD_BLOCK_NAMES:
      key = f"{m.group(1)}/{_OLD_BLOCK_NAMES[m.group(2)]}{m.group(3) or ''}"
    if key in out:
      raise CheckpointError(f"checkpoint {spec}: ambiguous old-style names, {key} appears twice after renaming")
    out[key] = value
  return out


def canonicalize(flat: Mapping[str, np.ndarray], spec: str = "<memory>") -> dict[str, np.ndarray]:
  """Maps the known historical layouts (module docstring) onto big_vision's current names."""
  flat = _rename_old_blocks(_unwrap_train_state(dict(flat)), spec)
  moves = dict(_POSEMB_MOVES)
  if "probe" in flat:
    moves.update({k: f"MAPHead_0/{k}" for k in flat if k == "probe" or k.startswith(_INLINE_MAP_PARTS)})
  out = {}
  for key, value in flat.items():
    key = moves.get(key, key)
    if key in out:
      raise CheckpointError(f"checkpoint {spec}: {key} is stored twice (old and new layout)")
    out[key] = value
  return out
