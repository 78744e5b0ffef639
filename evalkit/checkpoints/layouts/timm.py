"""timm Vision Transformers: architecture names -> evalkit ViT options, and timm state dicts -> evalkit's tree.

evalkit knows the architecture defaults of timm's `VisionTransformer` families by name, without importing timm
(docs/checkpoint_families.md lists them and where each default comes from): the plain / AugReg ViTs and DeiT
(class token pooling), DeiT-III, `_gap` models, DINOv2 (layer scale; registers), SigLIP (MAP or avg pooling, no
class token) and CLIP (a norm before the encoder, no patch bias, LayerNorm eps 1e-5, QuickGELU variants). Keyword
arguments override the defaults under timm's own names, as in `timm.create_model(name, **kwargs)`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from evalkit.checkpoints.layouts import pytorch
from evalkit.checkpoints.layouts.pytorch import StateDict
from evalkit.checkpoints.tree import CheckpointError
from evalkit.models import vit

# timm's size names for evalkit's VARIANTS: the same widths, depths, heads and MLP sizes under other names.
_VARIANT_OF_SIZE = {"tiny": "Ti", "small": "S", "medium": "M", "base": "B", "large": "L", "huge": "H", "giant": "g",
                    "gigantic": "G", "so400m": "So400m"}
# timm states so400m's MLP as mlp_ratio=3.7362, not 4304 / 1152: int(embed_dim * mlp_ratio) decides the hidden size
# when embed_dim is overridden, so timm's own ratio is kept (the others are exact quotients: 4, 48/11, 64/13).
_TIMM_MLP_RATIO = {"so400m": 3.7362}


def _size(name: str) -> tuple[int, int, int, float]:
  width, depth, mlp_dim, num_heads = vit.VARIANTS[_VARIANT_OF_SIZE[name]]
  return width, depth, num_heads, _TIMM_MLP_RATIO.get(name, mlp_dim / width)


# timm size name -> (embed_dim, depth, num_heads, mlp_ratio).
SIZES: dict[str, tuple[int, int, int, float]] = {name: _size(name) for name in _VARIANT_OF_SIZE}
FAMILIES = ("vit (AugReg / original)", "deit", "deit3", "vit_*_gap", "vit_*_dinov2", "vit_*_reg<N>_dinov2",
            "vit_*_siglip", "vit_*_siglip_gap", "vit_*_clip", "vit_*_clip_quickgelu")

_NAME = re.compile(r"^(?P<family>vit|deit3|deit)_(?P<size>[a-z0-9]+)_patch(?P<patch>\d+)(?P<rest>(?:_[a-z0-9]+)*)$")
# Settings of timm's VisionTransformer that evalkit reads; anything else that changes the computation is refused.
_KNOWN_KWARGS = {"img_size", "patch_size", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
                 "mlp_ratio", "qkv_bias", "init_values", "class_token", "no_embed_class", "reg_tokens", "pre_norm",
                 "final_norm", "fc_norm", "act_layer", "norm_eps", "swiglu"}
# Accepted and ignored: they do not change inference (dropout rates, init schemes) or are timm runtime switches.
_IGNORED_KWARGS = {"pretrained", "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate",
                   "drop_path_rate", "weight_init", "fix_init", "dynamic_img_size", "dynamic_img_pad", "in_chans"}
_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}


@dataclasses.dataclass(frozen=True)
class TimmArchitecture:
  """A timm VisionTransformer's settings (timm's names), resolved from a model name and overrides."""
  name: str
  settings: dict[str, Any]

  @property
  def img_size(self) -> tuple[int, int]:
    size = self.settings["img_size"]
    return (size, size) if isinstance(size, int) else tuple(size)

  def vit_kwargs(self) -> dict[str, Any]:
    """The evalkit `vit.ViT` arguments of the same network (timm's VisionTransformer.__init__ semantics)."""
    s = self.settings
    pool = {"token": "tok", "avg": "gap", "map": "map", "": "none"}[s["global_pool"]]
    use_fc_norm = s["global_pool"] == "avg" if s["fc_norm"] is None else bool(s["fc_norm"])
    hidden = int(s["embed_dim"] * s["mlp_ratio"])
    patch = s["patch_size"]
    return dict(
        width=s["embed_dim"], depth=s["depth"], num_heads=s["num_heads"],
        mlp_dim=hidden // 2 if s["swiglu"] else hidden,  # timm's packed SwiGLU splits fc1's output in two
        patch_size=(patch, patch) if isinstance(patch, int) else tuple(patch),
        pool_type=pool, class_token=bool(s["class_token"]), num_registers=int(s["reg_tokens"]),
        layer_scale=s["init_values"], pre_norm=bool(s["pre_norm"]),
        final_norm=bool(s["final_norm"]) and not use_fc_norm, fc_norm=bool(s["final_norm"]) and use_fc_norm,
        mlp_act="swiglu" if s["swiglu"] else _ACTS[s["act_layer"]], ln_eps=s["norm_eps"],
        patch_bias=not s["pre_norm"],  # timm: PatchEmbed(bias=not pre_norm), as in CLIP
        num_classes=s["num_classes"] or None)

  def model(self) -> vit.VisionTransformer:
    return vit.ViT(**self.vit_kwargs())

  def describe(self) -> str:
    return f"timm {self.name}"


def _defaults(model_name: str) -> dict[str, Any]:
  """timm's defaults for a model name (before keyword overrides)."""
  match = _NAME.match(model_name.split(".", 1)[0])  # "vit_small_patch14_dinov2.lvd142m": the tag names weights only
  if not match or match["size"] not in SIZES:
    raise CheckpointError(f"unknown timm architecture {model_name!r}: evalkit knows timm's VisionTransformer "
                          f"families {', '.join(FAMILIES)} in sizes {', '.join(SIZES)} (e.g. vit_base_patch16_224, "
                          "vit_small_patch14_reg4_dinov2, vit_so400m_patch14_siglip_384)")
  family, size, tags = match["family"], match["size"], match["rest"].split("_")[1:]
  res = tags.pop() if tags and tags[-1].isdigit() else None  # the trailing resolution, e.g. _224
  embed_dim, depth, num_heads, mlp_ratio = SIZES[size]
  s: dict[str, Any] = dict(
      img_size=int(res or 224), patch_size=int(match["patch"]), num_classes=1000, global_pool="token",
      embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, init_values=None,
      class_token=True, no_embed_class=False, reg_tokens=0, pre_norm=False, final_norm=True, fc_norm=None,
      act_layer="gelu", norm_eps=1e-6, swiglu=False)
  if family == "deit3":
    s.update(no_embed_class=True, init_values=1e-6)
  known_tags = {"dinov2", "siglip", "gap", "clip", "quickgelu"}
  registers = [t for t in tags if re.fullmatch(r"reg\d+", t)]
  unknown = [t for t in tags if t not in known_tags and t not in registers]
  if unknown or (family != "vit" and tags):
    raise CheckpointError(f"unknown timm architecture {model_name!r}: the tag(s) {unknown or tags} are not ones "
                          f"evalkit knows ({', '.join(sorted(known_tags))}, reg<N>)")
  if "dinov2" in tags:
    s.update(init_values=1e-5, img_size=int(res or 518))
    if size == "giant":  # vit_giant_patch14_dinov2: its own width and a packed SwiGLU MLP
      s.update(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2, swiglu=True)
  if registers:
    s.update(reg_tokens=int(registers[0][3:]), no_embed_class=True)
  if "siglip" in tags:
    s.update(class_token=False, global_pool="avg" if "gap" in tags else "map")
    if "gap" in tags:
      s.update(fc_norm=False)
  elif "gap" in tags:  # vit_base_patch16_gap_224 (timm gives it 16 heads)
    s.update(class_token=False, global_pool="avg", fc_norm=False, num_heads=16 if size == "base" else num_heads)
  if "clip" in tags:
    s.update(pre_norm=True, norm_eps=1e-5)
    if "quickgelu" in tags:
      s.update(act_layer="quick_gelu")
  return s


def architecture(model_name: str, **kwargs) -> TimmArchitecture:
  """The settings of timm's `model_name` with `kwargs` applied as `timm.create_model` would."""
  s = _defaults(model_name)
  unknown = sorted(set(kwargs) - _KNOWN_KWARGS - _IGNORED_KWARGS)
  if unknown:
    raise CheckpointError(f"timm {model_name}: option(s) {unknown} are not supported by evalkit's timm reader "
                          f"(known: {', '.join(sorted(_KNOWN_KWARGS))})")
  s.update({k: v for k, v in kwargs.items() if k in _KNOWN_KWARGS})
  if s["global_pool"] not in ("token", "avg", "map", ""):
    raise CheckpointError(f"timm {model_name}: global_pool={s['global_pool']!r} is not supported "
                          "(token, avg, map or '')")
  if s["act_layer"] not in _ACTS:
    raise CheckpointError(f"timm {model_name}: act_layer={s['act_layer']!r} is not supported ({', '.join(_ACTS)})")
  if not s["qkv_bias"]:
    raise CheckpointError(f"timm {model_name}: qkv_bias=False is not supported")
  if s["global_pool"] == "token" and not s["class_token"]:
    raise CheckpointError(f"timm {model_name}: token pooling needs the class token")
  return TimmArchitecture(model_name, s)


def _block(sd: StateDict, i: int, model, out: dict) -> None:
  src, dst = f"blocks.{i}", f"Transformer/encoderblock_{i}"
  pytorch.layer_norm(sd, f"{src}.norm1", f"{dst}/LayerNorm_0", out)
  q, k, v = pytorch.split_rows(sd.take(f"{src}.attn.qkv.weight"), 3)
  bq, bk, bv = pytorch.split_rows(sd.take(f"{src}.attn.qkv.bias"), 3)
  pytorch.attention(out, f"{dst}/MultiHeadDotProductAttention_0", model.num_heads, q=(q, bq), k=(k, bk),
                    v=(v, bv), o=(sd.take(f"{src}.attn.proj.weight"), sd.take(f"{src}.attn.proj.bias")))
  pytorch.layer_norm(sd, f"{src}.norm2", f"{dst}/LayerNorm_1", out)
  pytorch.linear(sd, f"{src}.mlp.fc1", f"{dst}/MlpBlock_0/Dense_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc2", f"{dst}/MlpBlock_0/Dense_1", out)
  if model.layer_scale is not None:
    for branch in (0, 1):
      gamma = sd.take(f"{src}.ls{branch + 1}.gamma")
      if gamma is not None:
        out[f"{dst}/LayerScale_{branch}/scale"] = gamma


def _attn_pool(sd: StateDict, model, out: dict) -> None:
  """timm's AttentionPoolLatent -> MAPHead_0 (latent = probe, q and the fused kv -> query, key, value)."""
  src, dst = "attn_pool", "MAPHead_0"
  probe = sd.take(f"{src}.latent")
  if probe is not None:
    out[f"{dst}/probe"] = probe
  k, v = pytorch.split_rows(sd.take(f"{src}.kv.weight"), 2)
  bk, bv = pytorch.split_rows(sd.take(f"{src}.kv.bias"), 2)
  pytorch.attention(out, f"{dst}/MultiHeadDotProductAttention_0", model.num_heads,
                    q=(sd.take(f"{src}.q.weight"), sd.take(f"{src}.q.bias")), k=(k, bk), v=(v, bv),
                    o=(sd.take(f"{src}.proj.weight"), sd.take(f"{src}.proj.bias")))
  pytorch.layer_norm(sd, f"{src}.norm", f"{dst}/LayerNorm_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc1", f"{dst}/MlpBlock_0/Dense_0", out)
  pytorch.linear(sd, f"{src}.mlp.fc2", f"{dst}/MlpBlock_0/Dense_1", out)


def _square(n: int) -> bool:
  return int(np.sqrt(n)) ** 2 == n


def _posemb_has_prefix_rows(pos: np.ndarray, model, spec: str) -> bool:
  """Whether timm's pos_embed carries rows for the class/register tokens (no_embed_class=False). A state dict does
  not say; the row count does: patch rows form a square grid (or the model's grid)."""
  prefix = model.num_prefix_tokens
  if not prefix:
    return False
  rows = pos.shape[1]
  with_prefix, without = _square(rows - prefix), _square(rows)
  if with_prefix and without:
    raise CheckpointError(f"checkpoint {spec}: pos_embed with {rows} rows fits both a {int(np.sqrt(rows))}^2 grid "
                          f"and {prefix} prefix rows plus a {int(np.sqrt(rows - prefix))}^2 grid; ambiguous")
  return with_prefix


def convert(flat: Mapping[str, np.ndarray], model, spec: str) -> dict[str, np.ndarray]:
  """A timm VisionTransformer state dict -> evalkit's tree for `model` (one CheckpointError lists every missing
  and unexpected timm name)."""
  if model is None:
    raise CheckpointError(f"checkpoint {spec}: a timm state dict needs its architecture (--timm_model, a card's "
                          "timm_model, or evalkit.checkpoints.load_timm)")
  if any(k.startswith(("vision_model.", "embeddings.", "vit.")) for k in flat):
    raise CheckpointError(f"checkpoint {spec}: has Hugging Face transformers names, not timm's: pass the "
                          "save_pretrained directory (with its config.json), format \"hf\"")
  sd, out = StateDict(flat), {}
  pytorch.patch_conv(sd, "patch_embed.proj", out, bias=model.patch_bias)
  if model.has_class_token:
    cls = sd.take("cls_token")
    if cls is not None:
      out["cls"] = cls
  if model.num_registers:
    reg = sd.take("reg_token")
    if reg is not None:
      out["registers"] = reg
  pos = sd.take("pos_embed")
  if pos is not None and _posemb_has_prefix_rows(pos, model, spec):
    pytorch.fold_prefix_posemb(out, pos, class_token=model.has_class_token, num_registers=model.num_registers)
  elif pos is not None:
    out["pos_embedding"] = pos
  if model.pre_norm:
    pytorch.layer_norm(sd, "norm_pre", "pre_norm", out)
  for i in range(model.depth):
    _block(sd, i, model, out)
  if model.final_norm:
    pytorch.layer_norm(sd, "norm", "Transformer/encoder_norm", out)
  if model.pool_type == "map":
    _attn_pool(sd, model, out)
  if model.fc_norm:
    pytorch.layer_norm(sd, "fc_norm", "fc_norm", out)
  if model.num_classes and "head.weight" in sd:  # without one, fitting reports the head (or re-initialises it)
    pytorch.linear(sd, "head", "head", out)
  else:
    sd.discard("head.weight", "head.bias")  # features only: a stored classifier is not needed
  sd.check(spec, vit.describe(model))
  return out
