"""Vision Transformer with big_vision's parameter tree (flax linen).

The module and parameter names mirror big_vision's `models/vit.py` on purpose:
a big_vision (or, after the renames in `evalkit.checkpoints`, an original
google-research/vision_transformer) `.npz` checkpoint loads into this model by
name, with no per-checkpoint conversion table. Everything that changes the
parameter tree (names, shapes, which params exist) is therefore part of the
contract and covered by tests/models/test_vit.py.

Options beyond big_vision (docs/checkpoint_families.md) let the same module run the timm / Hugging Face families
(DINOv2, SigLIP, CLIP, DeiT): a class token and register tokens independent of the pooling, layer scale, a norm
before the encoder, pooling without the final token norm plus `fc_norm`, the GELU variants, LayerNorm eps and the
patch-embedding bias. At their defaults the model, its parameter tree and its numbers are big_vision's, bit for bit,
and `model_config` leaves them out (so cache keys and result records of big_vision models do not change).

Public API (docs/protocols.md, "ViT and its parameter tree"):
  ViT(num_classes=None, *, variant=None, **kw) -> VisionTransformer
  decode_variant("S/16") -> dict of field values
  model_config(model) / from_config(cfg): JSON round trip of the fields
  posemb_grid(image_size, patch_size) -> (gh, gw)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Size name -> (width, depth, mlp_dim, num_heads). Table 2 of "Scaling Vision
# Transformers" plus big_vision's extras (mu for tests, So400m, e).
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}

POOL_TYPES = ("gap", "map", "tok", "0", "none")
POSEMB_TYPES = ("learn", "sincos2d")
# "gelu_tanh" is flax's nn.gelu default and big_vision's; "gelu" the exact erf form (timm, HF ViT, DINOv2);
# "quick_gelu" OpenAI CLIP's x * sigmoid(1.702 x); "swiglu" DINOv2-g's gated MLP, silu(x W1) * (x W2).
MLP_ACTS = ("gelu_tanh", "gelu", "quick_gelu", "swiglu")

# Dataclass fields that define the computation (and the parameter tree). This
# is what `model_config` serialises; flax's own `parent`/`name` are excluded.
CONFIG_FIELDS = ("num_classes", "patch_size", "width", "depth", "mlp_dim",
                 "num_heads", "posemb", "rep_size", "dropout", "pool_type",
                 "head_zeroinit")
# Options for the timm / Hugging Face families, with the defaults that keep big_vision's model. `model_config` lists
# one only when it differs from its default.
EXTENSION_DEFAULTS: dict[str, Any] = {
    "class_token": None,    # None: big_vision's rule, a class token exactly when pool_type == "tok"
    "num_registers": 0,     # register tokens after the class token (DINOv2 with registers)
    "layer_scale": None,    # initial value of a per-channel scale on each residual branch (DINOv2, DeiT-III)
    "pre_norm": False,      # LayerNorm over the tokens before the encoder (CLIP)
    "final_norm": True,     # the encoder's final token norm; False: tokens leave the encoder unnormalised
    "fc_norm": False,       # LayerNorm after pooling (DeiT-style avg pooling, the CLIP pooled token)
    "mlp_act": "gelu_tanh",
    "ln_eps": 1e-6,         # flax's default; torch's LayerNorm default is 1e-5, HF ViT's config 1e-12
    "patch_bias": True,
}

_XAVIER = nn.initializers.xavier_uniform()


def _pair(x) -> tuple[int, int]:
  """Normalises an int or a 2-sequence to a tuple of two ints."""
  if isinstance(x, (int, np.integer)):
    return (int(x), int(x))
  a, b = x
  return (int(a), int(b))


def decode_variant(variant: str | None) -> dict[str, Any]:
  """Decodes "S/16" (size/patch) or "S" (size only) into model fields.

  Args:
    variant: size name from `VARIANTS`, optionally followed by "/<patch>".

  Returns:
    dict with width, depth, mlp_dim, num_heads and, when the patch is given,
    patch_size=(p, p). An empty dict for None, so callers can always merge it.

  Raises:
    ValueError: unknown size or malformed patch.
  """
  if variant is None:
    return {}
  size, _, patch = variant.partition("/")
  if size not in VARIANTS:
    raise ValueError(f"unknown ViT size {size!r} in variant {variant!r}; "
                     f"known sizes: {', '.join(VARIANTS)}")
  width, depth, mlp_dim, num_heads = VARIANTS[size]
  cfg = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
  if patch:
    if not patch.isdigit() or int(patch) <= 0:
      raise ValueError(f"bad patch size {patch!r} in variant {variant!r}; "
                       "expected e.g. 'B/16'")
    cfg["patch_size"] = (int(patch), int(patch))
  return cfg


def posemb_grid(image_size, patch_size) -> tuple[int, int]:
  """Token grid (gh, gw) that a VALID stride-p patch conv makes of an image.

  Args:
    image_size: int (square) or (height, width).
    patch_size: int or (ph, pw).
  """
  h, w = _pair(image_size)
  ph, pw = _pair(patch_size)
  return h // ph, w // pw


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.,
                     dtype=jnp.float32) -> jnp.ndarray:
  """Fixed 2-D sin/cos position embedding, shape (1, h*w, width).

  The layout (frequencies omega_k = 1/temperature**(k/(width/4 - 1)), features
  [sin x, cos x, sin y, cos y], tokens in row-major order) matches big_vision
  so that checkpoints trained with "sincos2d" see identical embeddings.
  """
  if width % 4:
    raise ValueError(f"sincos2d posemb needs width divisible by 4, got {width}")
  quarter = width // 4
  ys, xs = np.mgrid[:h, :w]
  # max(.., 1) only guards the degenerate width=4 case against 0/0.
  omega = np.arange(quarter) / max(quarter - 1, 1)
  omega = 1.0 / temperature**omega
  ax = np.outer(xs.reshape(-1), omega)
  ay = np.outer(ys.reshape(-1), omega)
  pe = np.concatenate([np.sin(ax), np.cos(ax), np.sin(ay), np.cos(ay)], axis=1)
  return jnp.asarray(pe, dtype)[None]


def _activation(x, mlp_act: str):
  if mlp_act == "gelu_tanh":
    return nn.gelu(x)  # approximate=True, flax's default
  if mlp_act == "gelu":
    return nn.gelu(x, approximate=False)
  if mlp_act == "quick_gelu":
    return x * jax.nn.sigmoid(1.702 * x)
  if mlp_act == "swiglu":  # Dense_0 made both halves: the gate first (timm's SwiGLUPacked, HF's Dinov2SwiGLUFFN)
    gate, value = jnp.split(x, 2, axis=-1)
    return nn.silu(gate) * value
  raise ValueError(f"unknown mlp_act {mlp_act!r}; expected one of {MLP_ACTS}")


class MlpBlock(nn.Module):
  """Transformer feed-forward block: Dense -> activation -> dropout -> Dense."""
  mlp_dim: int | None = None  # None -> 4 * input width.
  dropout: float = 0.0
  mlp_act: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    width = x.shape[-1]
    # Tiny (non-zero) bias init as in big_vision; only matters for training.
    inits = dict(kernel_init=_XAVIER,
                 bias_init=nn.initializers.normal(stddev=1e-6))
    hidden = self.mlp_dim or 4 * width
    x = nn.Dense(2 * hidden if self.mlp_act == "swiglu" else hidden, name="Dense_0", **inits)(x)
    x = _activation(x, self.mlp_act)
    x = nn.Dropout(rate=self.dropout)(x, deterministic)
    return nn.Dense(width, name="Dense_1", **inits)(x)


class LayerScale(nn.Module):
  """Per-channel scale of a residual branch (Touvron et al., CaiT; used by DINOv2 and DeiT-III)."""
  init_value: float = 1e-5

  @nn.compact
  def __call__(self, x):
    return x * self.param("scale", nn.initializers.constant(self.init_value), (x.shape[-1],), x.dtype)


def _attention(num_heads: int, deterministic: bool, name: str):
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, kernel_init=_XAVIER, deterministic=deterministic,
      name=name)


class Encoder1DBlock(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then x + Mlp(LN(x)) (each branch scaled by a LayerScale when enabled)."""
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0
  mlp_act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  layer_scale: float | None = None

  def _scaled(self, y, index: int):
    return y if self.layer_scale is None else LayerScale(self.layer_scale, name=f"LayerScale_{index}")(y)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_0")(x)
    y = _attention(self.num_heads, deterministic,
                   "MultiHeadDotProductAttention_0")(y, y)
    x = x + nn.Dropout(rate=self.dropout)(self._scaled(y, 0), deterministic)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_1")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout, mlp_act=self.mlp_act,
                 name="MlpBlock_0")(y, deterministic)
    return x + nn.Dropout(rate=self.dropout)(self._scaled(y, 1), deterministic)


class Encoder(nn.Module):
  """Stack of encoder blocks followed by the final `encoder_norm` (unless final_norm is False)."""
  depth: int
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0
  mlp_act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  layer_scale: float | None = None
  final_norm: bool = True

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    out = {}
    for i in range(self.depth):
      x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                         dropout=self.dropout, mlp_act=self.mlp_act, ln_eps=self.ln_eps,
                         layer_scale=self.layer_scale,
                         name=f"encoderblock_{i}")(x, deterministic)
      out[f"block{i}"] = x
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.ln_eps, name="encoder_norm")(x)
    return x, out


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over all tokens.

  Deliberately no LayerNorm before the attention (the encoder output is
  already normalised by `encoder_norm`); this matches big_vision's tree,
  timm's `AttentionPoolLatent` and Hugging Face SigLIP's pooling head.
  """
  mlp_dim: int | None = None
  num_heads: int = 12
  mlp_act: str = "gelu_tanh"
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    n, _, width = x.shape
    probe = self.param("probe", _XAVIER, (1, 1, width), x.dtype)
    probe = jnp.tile(probe, [n, 1, 1])
    x = _attention(self.num_heads, True,
                   "MultiHeadDotProductAttention_0")(probe, x)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_0")(x)
    x = x + MlpBlock(mlp_dim=self.mlp_dim, mlp_act=self.mlp_act, name="MlpBlock_0")(y)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """big_vision-compatible ViT. Field names and defaults follow big_vision.

  `__call__(image, *, train=False)` takes NHWC float images and returns
  `(x, out)`: x is the logits when `num_classes` is truthy, else pre_logits;
  `out` holds intermediates ("stem", "block{i}", "encoded", "head_input",
  "pre_logits", "logits"). "encoded" is every token after the final norm, in
  the order class token, registers, patches.
  """
  num_classes: int | None = None
  patch_size: Sequence[int] = (16, 16)
  width: int = 768
  depth: int = 12
  mlp_dim: int | None = None  # None -> 4 * width.
  num_heads: int = 12
  posemb: str = "learn"  # "learn" | "sincos2d"
  rep_size: int | bool = False
  dropout: float = 0.0
  pool_type: str = "gap"  # "gap" | "map" | "tok" | "0" | "none"
  head_zeroinit: bool = True
  # The family options (EXTENSION_DEFAULTS says what each one is).
  class_token: bool | None = None
  num_registers: int = 0
  layer_scale: float | None = None
  pre_norm: bool = False
  final_norm: bool = True
  fc_norm: bool = False
  mlp_act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  patch_bias: bool = True

  @property
  def has_class_token(self) -> bool:
    return self.pool_type == "tok" if self.class_token is None else bool(self.class_token)

  @property
  def num_prefix_tokens(self) -> int:
    """Tokens in front of the patches: the class token and the registers."""
    return int(self.has_class_token) + self.num_registers

  def _posemb(self, h: int, w: int, dtype):
    if self.posemb == "learn":
      init = nn.initializers.normal(stddev=1 / np.sqrt(self.width))
      return self.param("pos_embedding", init, (1, h * w, self.width), dtype)
    if self.posemb == "sincos2d":
      return posemb_sincos_2d(h, w, self.width, dtype=dtype)
    raise ValueError(f"unknown posemb {self.posemb!r}; "
                     f"expected one of {POSEMB_TYPES}")

  def _prefix_tokens(self, n: int, dtype) -> list:
    """The class token and the registers, tiled over the batch. Position embeddings of prefix tokens (timm's and
    HF's layouts) are folded into these parameters when a checkpoint is read, so they carry no posemb here."""
    tokens = []
    if self.has_class_token:
      tokens.append(self.param("cls", nn.initializers.zeros, (1, 1, self.width), dtype))
    if self.num_registers:
      tokens.append(self.param("registers", nn.initializers.normal(1e-6), (1, self.num_registers, self.width),
                               dtype))
    return [jnp.tile(t, [n, 1, 1]) for t in tokens]

  def _pool(self, x):
    """Reduces encoded tokens (n, l, d) to the head input. gap and map see the patch tokens only (timm's default)."""
    patches = x[:, self.num_prefix_tokens:]
    if self.pool_type == "map":
      return MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads, mlp_act=self.mlp_act, ln_eps=self.ln_eps,
                     name="MAPHead_0")(patches)
    if self.pool_type == "gap":
      return jnp.mean(patches, axis=1)
    if self.pool_type in ("0", "tok"):
      return x[:, 0]
    if self.pool_type == "none":
      return x
    raise ValueError(f"unknown pool_type {self.pool_type!r}; "
                     f"expected one of {POOL_TYPES}")

  @nn.compact
  def __call__(self, image, *, train: bool = False):
    out = {}
    patch = _pair(self.patch_size)
    x = nn.Conv(self.width, patch, strides=patch, padding="VALID", use_bias=self.patch_bias,
                name="embedding")(image)
    n, h, w, c = x.shape
    x = out["stem"] = jnp.reshape(x, [n, h * w, c])

    # Posemb is added before the class token exists, so the token carries no
    # position and the posemb stays an exact (h, w) grid (resizable).
    x = x + self._posemb(h, w, x.dtype)
    prefix = self._prefix_tokens(n, x.dtype)
    if prefix:
      x = jnp.concatenate([*prefix, x], axis=1)
    if self.pre_norm:
      x = nn.LayerNorm(epsilon=self.ln_eps, name="pre_norm")(x)
    x = nn.Dropout(rate=self.dropout)(x, not train)

    x, blocks = Encoder(depth=self.depth, mlp_dim=self.mlp_dim,
                        num_heads=self.num_heads, dropout=self.dropout, mlp_act=self.mlp_act,
                        ln_eps=self.ln_eps, layer_scale=self.layer_scale, final_norm=self.final_norm,
                        name="Transformer")(x, deterministic=not train)
    out.update(blocks)
    out["encoded"] = x
    x = self._pool(x)
    if self.fc_norm:
      x = nn.LayerNorm(epsilon=self.ln_eps, name="fc_norm")(x)
    out["head_input"] = x

    if self.rep_size:
      rep = self.width if self.rep_size is True else int(self.rep_size)
      x = nn.tanh(nn.Dense(rep, name="pre_logits")(x))
    out["pre_logits"] = x

    if self.num_classes:
      kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
      x = out["logits"] = nn.Dense(self.num_classes, name="head", **kw)(x)
    return x, out


def ViT(num_classes: int | None = None, *, variant: str | None = None,
        **kwargs) -> VisionTransformer:  # pylint: disable=invalid-name
  """Builds a VisionTransformer; explicit kwargs override the variant's values.

  Examples:
    ViT(num_classes=10, variant="B/16", pool_type="map")
    ViT(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=4)
  """
  unknown = set(kwargs) - set(CONFIG_FIELDS) - set(EXTENSION_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown ViT option(s) {sorted(unknown)}; "
                     f"known: {', '.join((*CONFIG_FIELDS, *EXTENSION_DEFAULTS))}")
  cfg = {**decode_variant(variant), **kwargs}
  if "patch_size" in cfg:
    cfg["patch_size"] = _pair(cfg["patch_size"])
  if cfg.get("pool_type", "gap") not in POOL_TYPES:
    raise ValueError(f"unknown pool_type {cfg['pool_type']!r}; "
                     f"expected one of {POOL_TYPES}")
  if cfg.get("posemb", "learn") not in POSEMB_TYPES:
    raise ValueError(f"unknown posemb {cfg['posemb']!r}; "
                     f"expected one of {POSEMB_TYPES}")
  if cfg.get("mlp_act", "gelu_tanh") not in MLP_ACTS:
    raise ValueError(f"unknown mlp_act {cfg['mlp_act']!r}; expected one of {MLP_ACTS}")
  if cfg.get("pool_type") == "tok" and cfg.get("class_token") is False:
    raise ValueError("pool_type 'tok' needs the class token (class_token=False given)")
  if not isinstance(cfg.get("num_registers", 0), int) or cfg.get("num_registers", 0) < 0:
    raise ValueError(f"num_registers must be a non-negative integer, got {cfg['num_registers']!r}")
  for key in ("width", "depth", "num_heads", "mlp_dim"):  # sizes: a string or 0 would fail deep inside flax
    value = cfg.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
      raise ValueError(f"{key} must be a positive integer, got {value!r}")
  return VisionTransformer(num_classes=num_classes, **cfg)


def model_config(model: VisionTransformer) -> dict[str, Any]:
  """JSON-serialisable dict of the model's fields (for cache keys/provenance).

  mlp_dim=None is resolved to 4*width so that two configs describing the same
  network compare (and hash) equal.
  """
  cfg = {f: getattr(model, f) for f in CONFIG_FIELDS}
  cfg["patch_size"] = list(_pair(cfg["patch_size"]))
  cfg["mlp_dim"] = int(cfg["mlp_dim"] or 4 * model.width)
  # rep_size True/False stay booleans: True means "width", not 1.
  if not isinstance(cfg["rep_size"], bool):
    cfg["rep_size"] = int(cfg["rep_size"])
  if cfg["num_classes"] is not None:
    cfg["num_classes"] = int(cfg["num_classes"])
  for field, default in EXTENSION_DEFAULTS.items():
    value = getattr(model, field)
    if value != default or type(value) is not type(default):
      cfg[field] = value
  return cfg


def from_config(cfg: dict[str, Any]) -> VisionTransformer:
  """Inverse of `model_config`; also accepts a "variant" key like ViT()."""
  cfg = dict(cfg)
  num_classes = cfg.pop("num_classes", None)
  variant = cfg.pop("variant", None)
  return ViT(num_classes, variant=variant, **cfg)


def size_name(model: VisionTransformer) -> str | None:
  """Size name ("S", "G", ...) whose dimensions the model has, else None."""
  dims = (model.width, model.depth, model.mlp_dim or 4 * model.width,
          model.num_heads)
  for name, sizes in VARIANTS.items():
    if sizes == dims:
      return name
  return None


def describe(model: VisionTransformer) -> str:
  """Short name for messages, e.g. "ViT(S/16, pool_type=map)"."""
  ph, pw = _pair(model.patch_size)
  patch = str(ph) if ph == pw else f"{ph}x{pw}"
  size = size_name(model)
  if size:
    arch = f"{size}/{patch}"
  else:
    arch = (f"width={model.width}, depth={model.depth}, "
            f"mlp_dim={model.mlp_dim or 4 * model.width}, "
            f"num_heads={model.num_heads}, patch={patch}")
  extras = [f"pool_type={model.pool_type}"]
  extras += [f"{k}={getattr(model, k)}" for k, default in EXTENSION_DEFAULTS.items()
             if getattr(model, k) != default]
  if model.posemb != "learn":
    extras.append(f"posemb={model.posemb}")
  if model.rep_size:
    extras.append(f"rep_size={model.rep_size}")
  if model.num_classes:
    extras.append(f"num_classes={model.num_classes}")
  return f"ViT({arch}, {', '.join(extras)})"


def build_checked(make: Callable[[], VisionTransformer], image_size=(224, 224)) -> VisionTransformer:
  """`make()`, then its parameter shapes traced once (nothing allocated): a bad setting — an unknown field, variant or
  pool type, a patch that does not fit the image — raises ValueError here, in one line, before any data is read."""
  try:
    model = make()
    param_count(model, image_size)
  except (TypeError, ValueError) as e:
    raise ValueError(" ".join(str(e).split())) from None
  return model


def param_count(model: VisionTransformer, image_size=(224, 224)) -> int:
  """Number of parameters, computed from shapes only (no allocation)."""
  return _param_count(model, _pair(image_size))


@functools.lru_cache(maxsize=256)
def _param_count(model: VisionTransformer, image_size: tuple[int, int]) -> int:
  # Tracing a big model's init takes ~0.5 s; a leaderboard or card listing asks for the same few models many times.
  # Modules are frozen dataclasses, so equal configs hash equal.
  h, w = image_size
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, h, w, 3), jnp.float32))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))


__all__ = [
    "VARIANTS", "EXTENSION_DEFAULTS", "MLP_ACTS", "VisionTransformer", "ViT", "decode_variant", "model_config",
    "from_config", "posemb_grid", "posemb_sincos_2d", "describe", "size_name",
    "build_checked",
    "param_count",
]
