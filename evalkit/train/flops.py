"""Compute accounting: FLOPs per example of a ViT, and training compute.

Convention (as in the scaling-law literature, e.g. Kaplan et al. 2020 and "Scaling Vision Transformers"): one
multiply-add = 2 FLOPs; only matrix products are counted (LayerNorm, softmax, GELU and adds are < 2% for real ViTs);
a training step costs 3× the forward pass (backward ≈ 2× forward).

With L tokens, width D, MLP width M, patch p, depth N, K classes:
  patch embedding      2·L·(3p²)·D
  per encoder block    2·L·D·3D (q, k, v) + 2·L²·D (scores) + 2·L²·D (weighted values) + 2·L·D·D (out) + 4·L·D·M (MLP)
  MAP head             2·D·D (probe query) + 4·L·D² (k, v) + 4·L·D (attention) + 2·D·D (out) + 4·D·M (MLP)
  pre_logits, head     2·D·R, 2·R·K   (R = rep_size or D)
tests/training/test_flops.py checks this against XLA's cost analysis of the compiled forward.
"""
from __future__ import annotations

from evalkit.models import vit

TRAIN_FLOPS_PER_FORWARD = 3.0


def forward_flops(model: vit.VisionTransformer, image_size=(224, 224)) -> float:
  """Forward FLOPs for one image (see the module docstring for the formula)."""
  gh, gw = vit.posemb_grid(image_size, model.patch_size)
  ph, pw = vit._pair(model.patch_size)  # pylint: disable=protected-access
  d, m = model.width, model.mlp_dim or 4 * model.width
  tokens = gh * gw + (1 if model.pool_type == "tok" else 0)
  flops = 2.0 * gh * gw * 3 * ph * pw * d
  block = 2.0 * tokens * d * 3 * d + 4.0 * tokens**2 * d + 2.0 * tokens * d * d + 4.0 * tokens * d * m
  flops += model.depth * block
  if model.pool_type == "map":
    flops += 2.0 * d * d + 4.0 * tokens * d * d + 4.0 * tokens * d + 2.0 * d * d + 4.0 * d * m
  rep = d
  if model.rep_size:
    rep = d if model.rep_size is True else int(model.rep_size)
    flops += 2.0 * d * rep
  if model.num_classes:
    flops += 2.0 * rep * model.num_classes
  return flops


def train_flops(model: vit.VisionTransformer, image_size, examples_seen: int) -> float:
  """Training compute in FLOPs after `examples_seen` examples (forward + backward)."""
  return TRAIN_FLOPS_PER_FORWARD * forward_flops(model, image_size) * examples_seen
