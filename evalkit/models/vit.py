"""Vision Transformer with big_vision's parameter tree (flax linen).

The module and parameter names mirror big_vision's `models/vit.py` on purpose:
a big_vision (or, after the renames in `evalkit.checkpoints`, an original
google-research/vision_transformer) `.npz` checkpoint loads into this model by
name, with no per-checkpoint conversion table. Everything that changes the
parameter tree (names, shapes, which params exist) is therefore part of the
contract and covered by tests/test_vit.py.

Public API (docs/protocols.md, "ViT and its parameter tree"):
  ViT(num_classes=None, *, variant=None, **kw) -> VisionTransformer
  decode_variant("S/16") -> dict of field values
  model_config(model) / from_config(cfg): JSON round trip of the fields
  posemb_grid(image_size, patch_size) -> (gh, gw)
"""
from __future__ import annotations

from typing import Any, Sequence

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

# Dataclass fields that define the computation (and the parameter tree). This
# is what `model_config` serialises; flax's own `parent`/`name` are excluded.
CONFIG_FIELDS = ("num_classes", "patch_size", "width", "depth", "mlp_dim",
                 "num_heads", "posemb", "rep_size", "dropout", "pool_type",
                 "head_zeroinit")

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


class MlpBlock(nn.Module):
  """Transformer feed-forward block: Dense -> gelu -> dropout -> Dense."""
  mlp_dim: int | None = None  # None -> 4 * input width.
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    width = x.shape[-1]
    # Tiny (non-zero) bias init as in big_vision; only matters for training.
    inits = dict(kernel_init=_XAVIER,
                 bias_init=nn.initializers.normal(stddev=1e-6))
    x = nn.Dense(self.mlp_dim or 4 * width, name="Dense_0", **inits)(x)
    x = nn.gelu(x)
    x = nn.Dropout(rate=self.dropout)(x, deterministic)
    return nn.Dense(width, name="Dense_1", **inits)(x)


def _attention(num_heads: int, deterministic: bool, name: str):
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, kernel_init=_XAVIER, deterministic=deterministic,
      name=name)


class Encoder1DBlock(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then x + Mlp(LN(x))."""
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    y = nn.LayerNorm(name="LayerNorm_0")(x)
    y = _attention(self.num_heads, deterministic,
                   "MultiHeadDotProductAttention_0")(y, y)
    x = x + nn.Dropout(rate=self.dropout)(y, deterministic)
    y = nn.LayerNorm(name="LayerNorm_1")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout,
                 name="MlpBlock_0")(y, deterministic)
    return x + nn.Dropout(rate=self.dropout)(y, deterministic)


class Encoder(nn.Module):
  """Stack of encoder blocks followed by the final `encoder_norm`."""
  depth: int
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    out = {}
    for i in range(self.depth):
      x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                         dropout=self.dropout,
                         name=f"encoderblock_{i}")(x, deterministic)
      out[f"block{i}"] = x
    return nn.LayerNorm(name="encoder_norm")(x), out


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over all tokens.

  Deliberately no LayerNorm before the attention (the encoder output is
  already normalised by `encoder_norm`); this matches big_vision's tree.
  """
  mlp_dim: int | None = None
  num_heads: int = 12

  @nn.compact
  def __call__(self, x):
    n, _, width = x.shape
    probe = self.param("probe", _XAVIER, (1, 1, width), x.dtype)
    probe = jnp.tile(probe, [n, 1, 1])
    x = _attention(self.num_heads, True,
                   "MultiHeadDotProductAttention_0")(probe, x)
    y = nn.LayerNorm(name="LayerNorm_0")(x)
    x = x + MlpBlock(mlp_dim=self.mlp_dim, name="MlpBlock_0")(y)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """big_vision-compatible ViT. Field names and defaults follow big_vision.

  `__call__(image, *, train=False)` takes NHWC float images and returns
  `(x, out)`: x is the logits when `num_classes` is truthy, else pre_logits;
  `out` holds intermediates ("stem", "block{i}", "encoded", "head_input",
  "pre_logits", "logits").
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

  def _posemb(self, h: int, w: int, dtype):
    if self.posemb == "learn":
      init = nn.initializers.normal(stddev=1 / np.sqrt(self.width))
      return self.param("pos_embedding", init, (1, h * w, self.width), dtype)
    if self.posemb == "sincos2d":
      return posemb_sincos_2d(h, w, self.width, dtype=dtype)
    raise ValueError(f"unknown posemb {self.posemb!r}; "
                     f"expected one of {POSEMB_TYPES}")

  def _pool(self, x):
    """Reduces encoded tokens (n, l, d) to the head input."""
    if self.pool_type == "map":
      return MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                     name="MAPHead_0")(x)
    if self.pool_type == "gap":
      return jnp.mean(x, axis=1)
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
    x = nn.Conv(self.width, patch, strides=patch, padding="VALID",
                name="embedding")(image)
    n, h, w, c = x.shape
    x = out["stem"] = jnp.reshape(x, [n, h * w, c])

    # Posemb is added before the class token exists, so the token carries no
    # position and the posemb stays an exact (h, w) grid (resizable).
    x = x + self._posemb(h, w, x.dtype)
    if self.pool_type == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
      x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
    x = nn.Dropout(rate=self.dropout)(x, not train)

    x, blocks = Encoder(depth=self.depth, mlp_dim=self.mlp_dim,
                        num_heads=self.num_heads, dropout=self.dropout,
                        name="Transformer")(x, deterministic=not train)
    out.update(blocks)
    out["encoded"] = x
    x = out["head_input"] = self._pool(x)

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
  unknown = set(kwargs) - set(CONFIG_FIELDS)
  if unknown:
    raise ValueError(f"unknown ViT option(s) {sorted(unknown)}; "
                     f"known: {', '.join(CONFIG_FIELDS)}")
  cfg = {**decode_variant(variant), **kwargs}
  if "patch_size" in cfg:
    cfg["patch_size"] = _pair(cfg["patch_size"])
  if cfg.get("pool_type", "gap") not in POOL_TYPES:
    raise ValueError(f"unknown pool_type {cfg['pool_type']!r}; "
                     f"expected one of {POOL_TYPES}")
  if cfg.get("posemb", "learn") not in POSEMB_TYPES:
    raise ValueError(f"unknown posemb {cfg['posemb']!r}; "
                     f"expected one of {POSEMB_TYPES}")
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
  if model.posemb != "learn":
    extras.append(f"posemb={model.posemb}")
  if model.rep_size:
    extras.append(f"rep_size={model.rep_size}")
  if model.num_classes:
    extras.append(f"num_classes={model.num_classes}")
  return f"ViT({arch}, {', '.join(extras)})"


def param_count(model: VisionTransformer, image_size=(224, 224)) -> int:
  """Number of parameters, computed from shapes only (no allocation)."""
  h, w = _pair(image_size)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, h, w, 3), jnp.float32))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))


__all__ = [
    "VARIANTS", "VisionTransformer", "ViT", "decode_variant", "model_config",
    "from_config", "posemb_grid", "posemb_sincos_2d", "describe", "size_name",
    "param_count",
]
