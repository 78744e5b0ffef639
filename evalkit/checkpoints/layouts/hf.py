"""Hugging Face transformers vision models: config.json -> evalkit ViT options, state dicts -> evalkit's tree.

Supported `model_type`s (docs/checkpoint_families.md): `vit` (ViTModel, its tanh pooler as `pre_logits`;
ViTForImageClassification, its classifier as `head`), `dinov2` (layer scale, optional SwiGLU), `siglip_vision_model`
and the vision tower of a full `siglip` checkpoint (MAP head), `clip_vision_model` and the vision tower of a full
`clip` checkpoint (pre-norm; the pooled class token gets `post_layernorm`, the tokens do not). The representations
match the library's outputs: `pre_logits` = `pooler_output`, `encoded` = `last_hidden_state`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

from evalkit.checkpoints.layouts import pytorch
from evalkit.checkpoints.layouts.pytorch import StateDict
from evalkit.checkpoints.tree import CheckpointError, one_line
from evalkit.models import vit

MODEL_TYPES = ("vit", "dinov2", "siglip_vision_model", "siglip", "clip_vision_model", "clip")
# transformers' activation names -> evalkit's (gelu_new / gelu_pytorch_tanh are the tanh approximation).
_ACTS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
         "gelu_fast": "gelu_tanh", "quick_gelu": "quick_gelu"}


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
  """config.json of a `save_pretrained` directory."""
  path = os.path.join(os.fspath(directory), "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"checkpoint {directory}: no config.json (a Hugging Face save_pretrained directory "
                          "holds config.json and model.safetensors)") from None
  except (OSError, ValueError) as e:
    raise CheckpointError(f"checkpoint {path}: unreadable config.json: {one_line(e)}") from None
  if not isinstance(config, dict) or config.get("model_type") not in MODEL_TYPES:
    found = config.get("model_type") if isinstance(config, dict) else None
    raise CheckpointError(f"checkpoint {directory}: config.json model_type {found!r} is not one evalkit reads "
                          f"({', '.join(MODEL_TYPES)})")
  return config


def vision_config(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """(family, settings of the vision tower): a full siglip / clip checkpoint nests them under vision_config."""
  kind = config["model_type"]
  if kind in ("siglip", "clip"):
    return kind, dict(config.get("vision_config") or {})
  return {"siglip_vision_model": "siglip", "clip_vision_model": "clip"}.get(kind, kind), dict(config)


def _act(name: str, directory) -> str:
  if name not in _ACTS:
    raise CheckpointError(f"checkpoint {directory}: hidden_act {name!r} is not supported ({', '.join(_ACTS)})")
  return _ACTS[name]


def _num_labels(cfg: Mapping[str, Any]) -> int:
  return len(cfg["id2label"]) if cfg.get("id2label") else int(cfg.get("num_labels", 0))


def vit_kwargs(config: Mapping[str, Any], *, directory="<config>", has_pooler: bool | None = None,
               has_classifier: bool = False) -> dict[str, Any]:
  """The evalkit `vit.ViT` arguments of a transformers vision config (the library's defaults where a key is
  absent, as in its configuration classes)."""
  family, c = vision_config(config)
  patch = c.get("patch_size", 16 if family != "dinov2" else 14)
  width = c.get("hidden_size", 768)
  kw: dict[str, Any] = dict(width=width, depth=c.get("num_hidden_layers", 12),
                            num_heads=c.get("num_attention_heads", 12),
                            patch_size=(patch, patch) if isinstance(patch, int) else tuple(patch))
  if family == "vit":
    kw.update(mlp_dim=c.get("intermediate_size", 3072), pool_type="tok", class_token=True,
              mlp_act=_act(c.get("hidden_act", "gelu"), directory), ln_eps=c.get("layer_norm_eps", 1e-12),
              rep_size=width if has_pooler else False,
              num_classes=_num_labels(c) if has_classifier else None)
    if not c.get("qkv_bias", True):
      raise CheckpointError(f"checkpoint {directory}: qkv_bias=false is not supported")
  elif family == "dinov2":
    hidden = int(width * c.get("mlp_ratio", 4))
    swiglu = bool(c.get("use_swiglu_ffn", False))
    kw.update(mlp_dim=(int(hidden * 2 / 3) + 7) // 8 * 8 if swiglu else hidden,  # Dinov2SwiGLUFFN's rounding
              pool_type="tok", class_token=True, layer_scale=float(c.get("layerscale_value", 1.0)),
              mlp_act="swiglu" if swiglu else _act(c.get("hidden_act", "gelu"), directory),
              ln_eps=c.get("layer_norm_eps", 1e-6))
  elif family == "siglip":
    kw.update(mlp_dim=c.get("intermediate_size", 3072),
              pool_type="map" if c.get("vision_use_head", True) else "none",
              mlp_act=_act(c.get("hidden_act", "gelu_pytorch_tanh"), directory), ln_eps=c.get("layer_norm_eps", 1e-6))
  else:  # clip
    kw.update(mlp_dim=c.get("intermediate_size", 3072), pool_type="tok", class_token=True, pre_norm=True,
              final_norm=False, fc_norm=True, patch_bias=False,
              mlp_act=_act(c.get("hidden_act", "quick_gelu"), directory), ln_eps=c.get("layer_norm_eps", 1e-5))
  return kw


def image_size(config: Mapping[str, Any]) -> tuple[int, int]:
  _, c = vision_config(config)
  size = c.get("image_size", 224)
  return (size, size) if isinstance(size, int) else tuple(size)


def _prefix(flat: Mapping[str, np.ndarray], family: str) -> str:
  """The name prefix of the vision tower in a saved state dict."""
  probe, prefixes = (("embeddings.patch_embedding.weight", ("vision_model.", ""))
                     if family in ("siglip", "clip") else
                     ("embeddings.patch_embeddings.projection.weight", ("vit.", "dinov2.", "")))
  for p in prefixes:
    if p + probe in flat:
      return p
  return prefixes[0]


def _vit_block(sd, src, dst, model, out, family):
  """One encoder layer of HF ViT / DINOv2."""
  att = f"{src}.attention"
  pytorch.layer_norm(sd, f"{src}.{'layernorm_before' if family == 'vit' else 'norm1'}", f"{dst}/LayerNorm_0", out)
  qkv = {k: (sd.take(f"{att}.attention.{k}.weight"), sd.take(f"{att}.attention.{k}.bias"))
         for k in ("query", "key", "value")}
  pytorch.attention(out, f"{dst}/MultiHeadDotProductAttention_0", model.num_heads, q=qkv["query"],
                    k=qkv["key"], v=qkv["value"],
                    o=(sd.take(f"{att}.output.dense.weight"), sd.take(f"{att}.output.dense.bias")))
  pytorch.layer_norm(sd, f"{src}.{'layernorm_after' if family == 'vit' else 'norm2'}", f"{dst}/LayerNorm_1", out)
  if family == "vit":
    fc1, fc2 = f"{src}.intermediate.dense", f"{src}.output.dense"
  elif model.mlp_act == "swiglu":
    fc1, fc2 = f"{src}.mlp.weights_in", f"{src}.mlp.weights_out"
  else:
    fc1, fc2 = f"{src}.mlp.fc1", f"{src}.mlp.fc2"
  pytorch.linear(sd, fc1, f"{dst}/MlpBlock_0/Dense_0", out)
  pytorch.linear(sd, fc2, f"{dst}/MlpBlock_0/Dense_1", out)
  if model.layer_scale is not None:
    for branch in (0, 1):
      gamma = sd.take(f"{src}.layer_scale{branch + 1}.lambda1")
      if gamma is not None:
        out[f"{dst}/LayerScale_{branch}/scale"] = gamma


def _clip_block(sd, src, dst, model, out):
  """One encoder layer of HF SigLIP / CLIP (q_proj, k_proj, v_proj, out_proj)."""
  pytorch.layer_norm(sd, f"{src}.layer_norm1", f"{dst}/LayerNorm_0", out)
  proj = {k: (sd.take(f"{src}.self_attn.{k}_proj.weight"), sd.take(f"{src}.self_attn.{k}_proj.bias"))
          for k in ("q", "k", "v", "out")}
  pytorch.attention(out, f"{dst}/MultiHeadDotProductAttention_0", model.num_heads, q=proj["q"], k=proj["k"],
                    v=proj["v"], o=proj["out"])
  pytorch.layer_norm(sd, f"{src}.layer_norm2", f"{dst}/LayerNorm_1", out)
  pytorch.linear(sd, f"{src}.mlp.fc1", f"{dst}/MlpBlock_0/Dense_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc2", f"{dst}/MlpBlock_0/Dense_1", out)


def _siglip_head(sd, src, model, out):
  """SiglipMultiheadAttentionPoolingHead (torch.nn.MultiheadAttention: in_proj = [q; k; v]) -> MAPHead_0."""
  dst = "MAPHead_0"
  probe = sd.take(f"{src}.probe")
  if probe is not None:
    out[f"{dst}/probe"] = probe
  q, k, v = pytorch.split_rows(sd.take(f"{src}.attention.in_proj_weight"), 3)
  bq, bk, bv = pytorch.split_rows(sd.take(f"{src}.attention.in_proj_bias"), 3)
  pytorch.attention(out, f"{dst}/MultiHeadDotProductAttention_0", model.num_heads, q=(q, bq), k=(k, bk),
                    v=(v, bv), o=(sd.take(f"{src}.attention.out_proj.weight"),
                                  sd.take(f"{src}.attention.out_proj.bias")))
  pytorch.layer_norm(sd, f"{src}.layernorm", f"{dst}/LayerNorm_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc1", f"{dst}/MlpBlock_0/Dense_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc2", f"{dst}/MlpBlock_0/Dense_1", out)


def convert(flat: Mapping[str, np.ndarray], model, config: Mapping[str, Any], spec: str) -> dict[str, np.ndarray]:
  """A transformers state dict -> evalkit's tree for `model` (one CheckpointError lists every missing and
  unexpected name)."""
  family, _ = vision_config(config)
  p = _prefix(flat, family)
  sd, out = StateDict(flat), {}
  if family in ("siglip", "clip"):
    # A full two-tower checkpoint: only the vision tower is evaluated.
    for other in ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias"):
      sd.discard_prefix(other)
    emb = f"{p}embeddings"
    pytorch.patch_conv(sd, f"{emb}.patch_embedding", out, bias=model.patch_bias)
    pos = sd.take(f"{emb}.position_embedding.weight")
    pos = None if pos is None else pos[None]
    if family == "clip":
      cls = sd.take(f"{emb}.class_embedding")
      if cls is not None:
        out["cls"] = cls.reshape(1, 1, -1)
      pytorch.fold_prefix_posemb(out, pos, class_token=True, num_registers=0)
      pytorch.layer_norm(sd, f"{p}pre_layrnorm", "pre_norm", out)  # sic: transformers' name
    elif pos is not None:
      out["pos_embedding"] = pos
    sd.discard(f"{emb}.position_ids")
    for i in range(model.depth):
      _clip_block(sd, f"{p}encoder.layers.{i}", f"Transformer/encoderblock_{i}", model, out)
    pytorch.layer_norm(sd, f"{p}post_layernorm", "fc_norm" if family == "clip" else "Transformer/encoder_norm",
                       out)
    if model.pool_type == "map":
      _siglip_head(sd, f"{p}head", model, out)
  else:
    emb = f"{p}embeddings"
    pytorch.patch_conv(sd, f"{emb}.patch_embeddings.projection", out, bias=True)
    cls = sd.take(f"{emb}.cls_token")
    if cls is not None:
      out["cls"] = cls
    pytorch.fold_prefix_posemb(out, sd.take(f"{emb}.position_embeddings"), class_token=True, num_registers=0)
    sd.discard(f"{emb}.mask_token")  # masked-image-modelling input only
    for i in range(model.depth):
      _vit_block(sd, f"{p}encoder.layer.{i}", f"Transformer/encoderblock_{i}", model, out, family)
    pytorch.layer_norm(sd, f"{p}layernorm", "Transformer/encoder_norm", out)
    if model.rep_size:
      pytorch.linear(sd, f"{p}pooler.dense", "pre_logits", out)
    if model.num_classes and "classifier.weight" in sd:  # without one, fitting reports the head
      pytorch.linear(sd, "classifier", "head", out)
    else:
      sd.discard("classifier.weight", "classifier.bias")
  sd.check(spec, f"Hugging Face {config['model_type']} ({vit.describe(model)})")
  return out


def model_from_directory(directory: str | os.PathLike, names: Iterable[str]) -> vit.VisionTransformer:
  """The ViT of a save_pretrained directory whose checkpoint holds tensors `names`. Whether a ViTModel has its
  pooler (add_pooling_layer) or a classifier is not in config.json: the tensor names say."""
  config = read_config(directory)
  names = set(names)
  has_pooler = any(k.endswith("pooler.dense.weight") for k in names)
  has_classifier = "classifier.weight" in names
  return vit.ViT(**vit_kwargs(config, directory=directory, has_pooler=has_pooler, has_classifier=has_classifier))
