"""big_vision preprocessing strings, evaluated with numpy (no TensorFlow).

A pp string is a "|"-separated list of ops, each written like a Python call,
e.g. ``decode|resize(256)|central_crop(224)|value_range(-1, 1)``. Arguments are
Python literals, parsed with ``ast.literal_eval`` (never ``eval``).

Numerical contract (checked against big_vision's pp/ops_image.py and
pp/ops_general.py, and TensorFlow's resize kernels):

* ``resize`` is TF2 ``tf.image.resize(..., antialias=False)``: "bilinear" is the
  ResizeBilinear kernel with half-pixel centers and edge clamping, "nearest" is
  ResizeNearestNeighbor with half-pixel centers, "area" is ResizeArea. All
  arithmetic is float32 and follows the kernels' operation order, so results
  match TF to the last bit barring compiler FMA contraction.
* After resizing, big_vision clips to the input dtype's range and casts back
  (``tf.cast(tf.clip_by_value(x, dtype.min, dtype.max), dtype)``); a float to
  integer cast truncates toward zero, so uint8 images are truncated, not
  rounded. We do the same.
* ``resize_small``/``resize_long`` default to method "area" without antialias
  and compute the other side as ``round(side * factor)`` in float32 with
  round-half-to-even (``tf.round``), factor = ``size / min(h, w)`` in float32.
* ``central_crop`` offsets are ``(h - crop_h) // 2`` and ``(w - crop_w) // 2``.
* ``value_range`` maps [in_min, in_max] linearly to [vmin, vmax] in float32.

Known differences from big_vision, all documented at the op:
* JPEG decoding uses PIL (libjpeg, accurate integer DCT). That equals
  big_vision's ``decode(precise=True)``; its default ``decode`` uses TF's
  INTEGER_FAST DCT and can differ by a few grey levels. PNG is exact.
* ``antialias=True`` (TF's scale_and_translate kernels) is not implemented.
* Random ops draw from a ``numpy.random.Generator``, so augmentations are
  distributed like big_vision's but not the same samples as TF's RNG.
"""

from __future__ import annotations

import ast
import dataclasses
import io
from collections.abc import Callable, Sequence
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


# ---------------------------------------------------------------------------
# Registry and parsing.

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


def _in_key_out_key(fn: Callable[..., Any], key: str | None, inkey: str,
                    outkey: str, *, with_rng: bool = False) -> OpFn:
  """big_vision's InKeyOutKey convention: `key` overrides both in and out key."""
  src, dst = key or inkey, key or outkey

  def op(data: Example, rng):
    if src not in data:
      raise KeyError(f"pp: key {src!r} not in example (keys: {sorted(data)})")
    data[dst] = fn(data[src], rng) if with_rng else fn(data[src])
    return data
  return op


def _pair(size) -> tuple[int, int]:
  """big_vision's maybe_repeat: an int means a square size."""
  if isinstance(size, Sequence) and not isinstance(size, str):
    if len(size) != 2:
      raise ValueError(f"size must be an int or (height, width), got {size!r}")
    h, w = int(size[0]), int(size[1])
  else:
    h = w = int(size)
  if h <= 0 or w <= 0:
    raise ValueError(f"size must be positive, got {size!r}")
  return h, w


# ---------------------------------------------------------------------------
# Decoding.


def _pil_convert(img, channels: int):
  """Converts a PIL image to `channels` channels (0 keeps what is stored)."""
  if channels == 3:
    return img if img.mode == "RGB" else img.convert("RGB")
  if channels == 1:
    return img if img.mode == "L" else img.convert("L")
  if channels == 4:
    return img if img.mode == "RGBA" else img.convert("RGBA")
  if channels == 0:
    # Palette images decode to their colours, as TF does; other modes keep
    # their stored channels.
    if img.mode == "P":
      return img.convert("RGBA" if "transparency" in img.info else "RGB")
    return img
  raise ValueError(f"channels must be 0, 1, 3 or 4, got {channels}")


def _as_hwc(array: np.ndarray) -> np.ndarray:
  return array[..., None] if array.ndim == 2 else array


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
  """Decodes PNG/JPEG/... bytes to an HWC uint8 array with PIL.

  TF drops an alpha channel when asked for 3 channels and expands palettes;
  PIL's convert("RGB") does the same. Grey to RGB repeats the channel.
  """
  from PIL import Image  # Local: PIL is only needed when bytes are decoded.
  with Image.open(io.BytesIO(data)) as img:
    img = _pil_convert(img, channels)
    return _as_hwc(np.asarray(img))


def adapt_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """Gives an already-decoded HWC uint8 image the requested channel count."""
  image = _as_hwc(np.asarray(image))
  have = image.shape[-1]
  if channels in (0, have):
    return image
  if channels == 3 and have == 1:
    return np.repeat(image, 3, axis=-1)
  if channels == 3 and have == 4:
    return image[..., :3]  # TF strips alpha when asked for 3 channels.
  # Rarer conversions (RGB -> grey, grey -> RGBA) follow PIL's formulas, which
  # are also what the bytes path uses.
  from PIL import Image
  mode = {1: "L", 3: "RGB", 4: "RGBA"}[have]
  img = Image.fromarray(image[..., 0] if have == 1 else image, mode=mode)
  return _as_hwc(np.asarray(_pil_convert(img, channels)))


@register("decode")
def _decode(channels=3, precise=False, *, key=None, inkey="image",
            outkey="image"):
  """Decodes bytes, or adapts the channels of an already-decoded array.

  tfds data sources return decoded arrays with the stored channel count (e.g.
  (28, 28, 1)); big_vision decodes with channels=3, so grey is repeated to RGB.
  `precise` is accepted for big_vision compatibility: PIL's JPEG decoding is
  always the accurate one.
  """
  del precise

  def fn(value):
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
      return decode_image(bytes(value), channels)
    return adapt_channels(value, channels)
  return _in_key_out_key(fn, key, inkey, outkey)


@register("to_rgb")
def _to_rgb(*, key=None, inkey="image", outkey="image"):
  """Makes an image 3-channel RGB (grey repeated, alpha dropped)."""
  return _in_key_out_key(lambda x: adapt_channels(x, 3), key, inkey, outkey)


# ---------------------------------------------------------------------------
# Resizing, in float32 following TF's kernels.


def _f32(x) -> np.float32:
  return np.float32(x)


def _resize_scale(in_size: int, out_size: int) -> np.float32:
  # TF's CalculateResizeScale without align_corners: in / out in float32.
  return _f32(in_size) / _f32(out_size)


def bilinear_taps(in_size: int, out_size: int):
  """Per output index: lower/upper source index and the lerp weight (TF2).

  Half-pixel centers: src = (dst + 0.5) * scale - 0.5. TF clamps the two
  neighbours into the image but computes the weight from the unclamped floor,
  which amounts to edge replication.
  """
  scale = _resize_scale(in_size, out_size)
  src = (np.arange(out_size, dtype=np.float32) + _f32(0.5)) * scale - _f32(0.5)
  floor = np.floor(src)
  lower = np.maximum(floor, 0).astype(np.int64)
  upper = np.minimum(np.ceil(src), in_size - 1).astype(np.int64)
  lerp = (src - floor).astype(np.float32)
  return lower, upper, lerp


def _resize_bilinear(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
  """Separable bilinear resize; float32 result (TF's ResizeBilinear)."""
  x = image.astype(np.float32, copy=False)
  xl, xu, xw = bilinear_taps(x.shape[1], ow)
  yl, yu, yw = bilinear_taps(x.shape[0], oh)
  # TF's order: interpolate along x within the two source rows, then along y:
  # top + (bottom - top) * y_lerp. Interpolating every source row once and
  # gathering rows afterwards gives the same float32 numbers.
  left, right = x[:, xl], x[:, xu]
  rows = left + (right - left) * xw[None, :, None]
  top, bottom = rows[yl], rows[yu]
  return top + (bottom - top) * yw[:, None, None]


def nearest_taps(in_size: int, out_size: int) -> np.ndarray:
  """TF2 ResizeNearestNeighbor(half_pixel_centers=True) source indices."""
  scale = _resize_scale(in_size, out_size)
  src = (np.arange(out_size, dtype=np.float32) + _f32(0.5)) * scale
  return np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)


def _resize_nearest(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
  return image[nearest_taps(image.shape[0], oh)][:, nearest_taps(
      image.shape[1], ow)]


def area_taps(in_size: int, out_size: int):
  """TF's ResizeArea contributions along one axis.

  Returns (index, weight) arrays of shape (out_size, K): output o covers the
  source interval [o * scale, (o + 1) * scale); source cell i contributes its
  overlap with that interval. Unused slots have weight 0 (and index 0), which
  adds an exact +0.0 and so keeps the kernel's summation order intact.
  """
  scale = _resize_scale(in_size, out_size)
  out = np.arange(out_size)
  lo = out.astype(np.float32) * scale         # in_y  in the TF kernel
  hi = (out + 1).astype(np.float32) * scale   # in_y1 in the TF kernel
  start = np.floor(lo).astype(np.int64)
  end = np.ceil(hi).astype(np.int64)
  k = int((end - start).max())
  idx = start[:, None] + np.arange(k)[None, :]
  used = idx < end[:, None]
  idx_f = idx.astype(np.float32)
  one = idx_f + _f32(1)
  # The kernel's weight formula, term by term in float32.
  inside_lo = np.where(one > hi[:, None], scale, one - lo[:, None])
  inside_hi = np.where(one > hi[:, None], hi[:, None] - idx_f, _f32(1))
  weight = np.where(idx_f < lo[:, None], inside_lo, inside_hi)
  weight = np.where(used, weight, _f32(0)).astype(np.float32)
  # Float rounding can push `end` one past the image; TF clamps the index.
  idx = np.where(used, np.clip(idx, 0, in_size - 1), 0)
  return idx, weight


def _resize_area(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
  """TF's ResizeArea (antialias=False); float32 result.

  TF sums, per output pixel and per contributing source row, the row's
  x-weighted values (first and last weighted, middle ones added unscaled),
  scales that row sum by the row's weight and accumulates; finally it
  multiplies by 1 / (scale_y * scale_x). Doing the x pass for every source
  row first and accumulating rows in order reproduces that arithmetic.
  """
  x = image.astype(np.float32, copy=False)
  h, w = x.shape[:2]
  xi, xw = area_taps(w, ow)
  yi, yw = area_taps(h, oh)
  rows = x[:, xi[:, 0]] * xw[None, :, 0, None]
  for k in range(1, xi.shape[1]):
    rows = rows + x[:, xi[:, k]] * xw[None, :, k, None]
  out = rows[yi[:, 0]] * yw[:, 0, None, None]
  for k in range(1, yi.shape[1]):
    out = out + rows[yi[:, k]] * yw[:, k, None, None]
  # `1.0 / (float * float)` in C++: the product is float32, the division is
  # done in double and stored as float32.
  norm = np.float32(1.0 / float(_resize_scale(h, oh) * _resize_scale(w, ow)))
  return out * norm


_RESIZERS = {
    "bilinear": _resize_bilinear,
    "nearest": _resize_nearest,
    "area": _resize_area,
}


def cast_like_big_vision(image: np.ndarray, dtype) -> np.ndarray:
  """big_vision's cast back after resizing: clip to dtype range, then cast.

  numpy's float -> int astype truncates toward zero like tf.cast.
  """
  dtype = np.dtype(dtype)
  if dtype == image.dtype:
    return image
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    image = np.clip(image, info.min, info.max)
  return image.astype(dtype)


def resize_image(image: np.ndarray, size, method: str = "bilinear",
                 antialias: bool = False) -> np.ndarray:
  """tf.image.resize + big_vision's cast back to the input dtype."""
  if antialias:
    raise NotImplementedError(
        "resize with antialias=True (TF scale_and_translate) is not "
        "implemented; use antialias=False")
  if method not in _RESIZERS:
    raise ValueError(f"resize method {method!r} not supported; "
                     f"use one of {sorted(_RESIZERS)}")
  image = _as_hwc(np.asarray(image))
  oh, ow = _pair(size)
  out = _RESIZERS[method](image, oh, ow)
  return cast_like_big_vision(out, image.dtype)


@register("resize")
def _resize(size, method="bilinear", antialias=False, *, key=None,
            inkey="image", outkey="image"):
  """Resizes to `size` (int = square, aspect ratio not kept)."""
  size = _pair(size)
  return _in_key_out_key(
      lambda x: resize_image(x, size, method, antialias), key, inkey, outkey)


def _factor_size(h: int, w: int, factor: np.float32) -> tuple[int, int]:
  # tf.round is round-half-to-even, like np.round; all float32.
  return (int(np.round(_f32(h) * factor)), int(np.round(_f32(w) * factor)))


@register("resize_small")
def _resize_small(smaller_size, method="area", antialias=False, *, key=None,
                  inkey="image", outkey="image"):
  """Resizes so that the smaller side is `smaller_size`, keeping aspect."""
  def fn(x):
    h, w = x.shape[:2]
    factor = _f32(smaller_size) / _f32(min(h, w))
    return resize_image(x, _factor_size(h, w, factor), method, antialias)
  return _in_key_out_key(fn, key, inkey, outkey)


@register("resize_long")
def _resize_long(longer_size, method="area", antialias=True, *, key=None,
                 inkey="image", outkey="image"):
  """Resizes so that the longer side is `longer_size`, keeping aspect.

  big_vision's default here is antialias=True, which we do not implement: pass
  antialias=False explicitly.
  """
  def fn(x):
    h, w = x.shape[:2]
    factor = _f32(longer_size) / _f32(max(h, w))
    return resize_image(x, _factor_size(h, w, factor), method, antialias)
  return _in_key_out_key(fn, key, inkey, outkey)


# ---------------------------------------------------------------------------
# Crops and flips.


def _crop(image: np.ndarray, top: int, left: int, h: int, w: int):
  if top < 0 or left < 0 or top + h > image.shape[0] or left + w > image.shape[1]:
    raise ValueError(f"crop ({h}, {w}) at ({top}, {left}) does not fit in an "
                     f"image of shape {image.shape}")
  return image[top:top + h, left:left + w]


@register("central_crop")
def _central_crop(crop_size=None, *, key=None, inkey="image", outkey="image"):
  """Central crop; None crops the largest centred square (as big_vision)."""
  size = _pair(crop_size) if crop_size else None

  def fn(x):
    h, w = size if size else (min(x.shape[:2]),) * 2
    return _crop(x, (x.shape[0] - h) // 2, (x.shape[1] - w) // 2, h, w)
  return _in_key_out_key(fn, key, inkey, outkey)


@register("random_crop", random=True)
def _random_crop(crop_size, *, key=None, inkey="image", outkey="image"):
  """Uniformly placed crop of `crop_size` (tf.image.random_crop)."""
  ch, cw = _pair(crop_size)

  def fn(x, rng):
    top = int(rng.integers(0, x.shape[0] - ch + 1)) if x.shape[0] >= ch else -1
    left = int(rng.integers(0, x.shape[1] - cw + 1)) if x.shape[1] >= cw else -1
    return _crop(x, top, left, ch, cw)
  return _in_key_out_key(fn, key, inkey, outkey, with_rng=True)


@register("flip_lr", random=True)
def _flip_lr(*, key=None, inkey="image", outkey="image"):
  """Horizontal flip with probability 1/2."""
  def fn(x, rng):
    return x[:, ::-1] if rng.random() < 0.5 else x
  return _in_key_out_key(fn, key, inkey, outkey, with_rng=True)


def _lrint(x) -> int:
  """C's lrintf under the default rounding mode: to nearest, ties to even."""
  return int(np.rint(np.float32(x)))


def _tf_random_crop(h: int, w: int, area_range, ratio: np.float32,
                    rng: np.random.Generator) -> tuple[int, int, int, int] | None:
  """One try of TF's `GenerateRandomCrop` (sample_distorted_bounding_box_op.cc), or None where it gives up.

  The crop *height* is drawn uniformly between the heights of the smallest and the largest allowed area at this
  aspect ratio (not the area), width = round(height · ratio), then nudged by one pixel where rounding broke the
  area bounds; the offsets are drawn from [0, H − h) and [0, W − w), as TF's Uniform(n) does.
  """
  f32 = np.float32
  min_area = f32(area_range[0]) * f32(w) * f32(h)
  max_area = f32(area_range[1]) * f32(w) * f32(h)
  height = _lrint(np.sqrt(min_area / ratio, dtype=np.float32))
  max_height = _lrint(np.sqrt(max_area / ratio, dtype=np.float32))
  if _lrint(f32(max_height) * ratio) > w:
    max_height = int((f32(w) + f32(0.5) - f32(1e-7)) / ratio)
    if _lrint(f32(max_height) * ratio) > w:
      max_height -= 1
  max_height = min(max_height, h)
  height = min(height, max_height)
  if height < max_height:
    height += int(rng.integers(0, max_height - height + 1))
  width = _lrint(f32(height) * ratio)
  area = f32(width * height)
  if area < min_area:
    height += 1
    width = _lrint(f32(height) * ratio)
    area = f32(width * height)
  if area > max_area:
    height -= 1
    width = _lrint(f32(height) * ratio)
    area = f32(width * height)
  if area < min_area or area > max_area or width > w or height > h or width <= 0 or height <= 0:
    return None
  top = int(rng.integers(0, h - height)) if height < h else 0
  left = int(rng.integers(0, w - width)) if width < w else 0
  return top, left, height, width


def sample_inception_box(h: int, w: int, rng: np.random.Generator,
                         area_range=(0.05, 1.0), ratio_range=(0.75, 1.33),
                         attempts: int = 100) -> tuple[int, int, int, int]:
  """(top, left, height, width) of an Inception crop, sampled as TF's sample_distorted_bounding_box samples it.

  big_vision's `inception_crop` calls that op with `min_object_covered=0`, `use_image_if_no_bounding_boxes=True`,
  TF's default aspect range [0.75, 1.33] and 100 attempts: each attempt draws an aspect ratio uniformly, then a crop
  by `_tf_random_crop`; the first one that fits is taken, and the whole image when none does. Only the random
  stream differs from TF's (Philox there, numpy here): the distribution of boxes is the same (docs/protocols.md).
  """
  lo, hi = np.float32(ratio_range[0]), np.float32(ratio_range[1])
  for _ in range(attempts):
    ratio = np.float32(rng.random(dtype=np.float32)) * (hi - lo) + lo
    box = _tf_random_crop(h, w, area_range, ratio, rng)
    if box is not None:
      return box
  return 0, 0, h, w


@register("inception_crop", random=True)
def _inception_crop(size=None, area_min=5, area_max=100, method="bilinear",
                    antialias=False, *, key=None, inkey="image",
                    outkey="image"):
  """Inception crop (areas in percent, as big_vision), then optional resize."""
  def fn(x, rng):
    top, left, ch, cw = sample_inception_box(
        x.shape[0], x.shape[1], rng, (area_min / 100, area_max / 100))
    crop = _crop(x, top, left, ch, cw)
    return resize_image(crop, size, method, antialias) if size else crop
  return _in_key_out_key(fn, key, inkey, outkey, with_rng=True)


# ---------------------------------------------------------------------------
# Values.


@register("value_range")
def _value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False,
                 *, key=None, inkey="image", outkey="image"):
  """Maps [in_min, in_max] (scalars or per channel) to [vmin, vmax], float32."""
  lo = np.asarray(in_min, np.float32)
  hi = np.asarray(in_max, np.float32)
  # big_vision computes `vmax - vmin` in Python, then TF makes it float32.
  span, base = _f32(vmax - vmin), _f32(vmin)

  def fn(x):
    x = (np.asarray(x, np.float32) - lo) / (hi - lo)
    x = base + x * span
    return np.clip(x, _f32(vmin), _f32(vmax)) if clip_values else x
  return _in_key_out_key(fn, key, inkey, outkey)


@register("vgg_value_range")
def _vgg_value_range(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
                     std=(0.229 * 255, 0.224 * 255, 0.225 * 255), *, key=None,
                     inkey="image", outkey="image"):
  """(x - mean) / std per channel, float32."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return _in_key_out_key(lambda x: (np.asarray(x, np.float32) - mean) / std,
                         key, inkey, outkey)


# ---------------------------------------------------------------------------
# Dict plumbing and labels.


@register("keep")
def _keep(*keys):
  """Keeps only the given keys."""
  return lambda data, rng: {k: v for k, v in data.items() if k in keys}


@register("drop")
def _drop(*keys):
  """Drops the given keys."""
  return lambda data, rng: {k: v for k, v in data.items() if k not in keys}


@register("copy")
def _copy(inkey, outkey):
  """Copies data[inkey] to data[outkey] (arrays are shared, never mutated)."""
  def op(data, rng):
    data[outkey] = data[inkey]
    return data
  return op


@register("onehot")
def _onehot(depth, key="label", key_result=None, multi=True, on=1.0, off=0.0):
  """One-hot (or multi-hot for a label list) float32 vector of length `depth`.

  Note: big_vision's default `key` is "labels"; tfds examples call it "label"
  and big_vision configs always pass key="label" explicitly, so that is our
  default.
  """
  def op(data, rng):
    labels = np.asarray(data[key], np.int64)
    if labels.ndim > 0 and multi:
      hot = np.zeros((depth,), bool)
      hot[labels] = True
    else:
      hot = np.arange(depth) == labels[..., None]
    data[key_result or key] = np.where(hot, on, off).astype(np.float32)
    return data
  return op
