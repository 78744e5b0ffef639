"""Image ops of big_vision's pp language: decoding, resizing, crops and flips, value ranges.

Each is registered under its big_vision name with `register_keyed` (it reads and writes one key of the example,
"image" by default). Random ops draw from the `numpy.random.Generator` the pipeline passes.
"""
from __future__ import annotations

import io

import numpy as np

from evalkit.data.pp.registry import register_keyed
from evalkit.data.pp.resize import as_hwc, pair, resize_image


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


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
  """Decodes PNG/JPEG/... bytes to an HWC uint8 array with PIL.

  TF drops an alpha channel when asked for 3 channels and expands palettes;
  PIL's convert("RGB") does the same. Grey to RGB repeats the channel.
  """
  from PIL import Image  # Local: PIL is only needed when bytes are decoded.
  with Image.open(io.BytesIO(data)) as img:
    img = _pil_convert(img, channels)
    return as_hwc(np.asarray(img))


def adapt_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """Gives an already-decoded HWC uint8 image the requested channel count."""
  image = as_hwc(np.asarray(image))
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
  return as_hwc(np.asarray(_pil_convert(img, channels)))


@register_keyed("decode")
def _decode(channels=3, precise=False):
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
  return fn


@register_keyed("to_rgb")
def _to_rgb():
  """Makes an image 3-channel RGB (grey repeated, alpha dropped)."""
  return lambda x: adapt_channels(x, 3)


# ---------------------------------------------------------------------------
# Resizing (the kernels: resize.py).


@register_keyed("resize")
def _resize(size, method="bilinear", antialias=False):
  """Resizes to `size` (int = square, aspect ratio not kept)."""
  size = pair(size)
  return lambda x: resize_image(x, size, method, antialias)


def _factor_size(h: int, w: int, factor: np.float32) -> tuple[int, int]:
  # tf.round is round-half-to-even, like np.round; all float32.
  return (int(np.round(np.float32(h) * factor)), int(np.round(np.float32(w) * factor)))


@register_keyed("resize_small")
def _resize_small(smaller_size, method="area", antialias=False):
  """Resizes so that the smaller side is `smaller_size`, keeping aspect."""
  def fn(x):
    h, w = x.shape[:2]
    factor = np.float32(smaller_size) / np.float32(min(h, w))
    return resize_image(x, _factor_size(h, w, factor), method, antialias)
  return fn


@register_keyed("resize_long")
def _resize_long(longer_size, method="area", antialias=True):
  """Resizes so that the longer side is `longer_size`, keeping aspect.

  big_vision's default here is antialias=True, which we do not implement: pass
  antialias=False explicitly.
  """
  def fn(x):
    h, w = x.shape[:2]
    factor = np.float32(longer_size) / np.float32(max(h, w))
    return resize_image(x, _factor_size(h, w, factor), method, antialias)
  return fn


# ---------------------------------------------------------------------------
# Crops and flips.


def _crop(image: np.ndarray, top: int, left: int, h: int, w: int):
  if top < 0 or left < 0 or top + h > image.shape[0] or left + w > image.shape[1]:
    raise ValueError(f"crop ({h}, {w}) at ({top}, {left}) does not fit in an "
                     f"image of shape {image.shape}")
  return image[top:top + h, left:left + w]


@register_keyed("central_crop")
def _central_crop(crop_size=None):
  """Central crop; None crops the largest centred square (as big_vision)."""
  size = pair(crop_size) if crop_size else None

  def fn(x):
    h, w = size if size else (min(x.shape[:2]),) * 2
    return _crop(x, (x.shape[0] - h) // 2, (x.shape[1] - w) // 2, h, w)
  return fn


@register_keyed("random_crop", random=True)
def _random_crop(crop_size):
  """Uniformly placed crop of `crop_size` (tf.image.random_crop)."""
  ch, cw = pair(crop_size)

  def fn(x, rng):
    top = int(rng.integers(0, x.shape[0] - ch + 1)) if x.shape[0] >= ch else -1
    left = int(rng.integers(0, x.shape[1] - cw + 1)) if x.shape[1] >= cw else -1
    return _crop(x, top, left, ch, cw)
  return fn


@register_keyed("flip_lr", random=True)
def _flip_lr():
  """Horizontal flip with probability 1/2."""
  def fn(x, rng):
    return x[:, ::-1] if rng.random() < 0.5 else x
  return fn


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


@register_keyed("inception_crop", random=True)
def _inception_crop(size=None, area_min=5, area_max=100, method="bilinear",
                    antialias=False):
  """Inception crop (areas in percent, as big_vision), then optional resize."""
  def fn(x, rng):
    top, left, ch, cw = sample_inception_box(
        x.shape[0], x.shape[1], rng, (area_min / 100, area_max / 100))
    crop = _crop(x, top, left, ch, cw)
    return resize_image(crop, size, method, antialias) if size else crop
  return fn


# ---------------------------------------------------------------------------
# Values.


@register_keyed("value_range")
def _value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False):
  """Maps [in_min, in_max] (scalars or per channel) to [vmin, vmax], float32."""
  lo = np.asarray(in_min, np.float32)
  hi = np.asarray(in_max, np.float32)
  # big_vision computes `vmax - vmin` in Python, then TF makes it float32.
  span, base = np.float32(vmax - vmin), np.float32(vmin)

  def fn(x):
    x = (np.asarray(x, np.float32) - lo) / (hi - lo)
    x = base + x * span
    return np.clip(x, np.float32(vmin), np.float32(vmax)) if clip_values else x
  return fn


@register_keyed("vgg_value_range")
def _vgg_value_range(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
                     std=(0.229 * 255, 0.224 * 255, 0.225 * 255)):
  """(x - mean) / std per channel, float32."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return lambda x: (np.asarray(x, np.float32) - mean) / std
