"""TensorFlow's resize kernels in numpy, float32, to the last bit (docs/protocols.md, "Preprocessing").

`resize_image` is TF2 `tf.image.resize(..., antialias=False)` followed by big_vision's cast back to the input dtype.
"bilinear" is ResizeBilinear with half-pixel centers and edge clamping, "nearest" ResizeNearestNeighbor with
half-pixel centers, "area" ResizeArea; every kernel follows TF's operation order in float32.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pair(size) -> tuple[int, int]:
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


def as_hwc(array: np.ndarray) -> np.ndarray:
  return array[..., None] if array.ndim == 2 else array


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


def resize_bilinear(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
  """Separable bilinear resize; float32 result (TF's ResizeBilinear).

  TF's order: interpolate along x within the two source rows, then along y: top + (bottom - top) * y_lerp, every
  operation in float32. Interpolating each source row once and gathering rows afterwards gives the same numbers;
  so do gathering columns before the float32 cast (the cast is exact) and lerping in place (the same operations in
  the same order), which save most of the memory traffic.
  """
  xl, xu, xw = bilinear_taps(image.shape[1], ow)
  yl, yu, yw = bilinear_taps(image.shape[0], oh)
  rows_read, which = np.unique(np.concatenate([yl, yu]), return_inverse=True)
  source = image if len(rows_read) == image.shape[0] else image[rows_read]  # only rows some output reads
  left = np.take(source, xl, axis=1).astype(np.float32)
  rows = np.take(source, xu, axis=1).astype(np.float32)
  np.subtract(rows, left, out=rows)
  np.multiply(rows, xw[None, :, None], out=rows)
  np.add(rows, left, out=rows)  # left + (right - left) * x_lerp
  top, out = rows[which[:oh]], rows[which[oh:]]
  np.subtract(out, top, out=out)
  np.multiply(out, yw[:, None, None], out=out)
  np.add(out, top, out=out)  # top + (bottom - top) * y_lerp
  return out


def nearest_taps(in_size: int, out_size: int) -> np.ndarray:
  """TF2 ResizeNearestNeighbor(half_pixel_centers=True) source indices."""
  scale = _resize_scale(in_size, out_size)
  src = (np.arange(out_size, dtype=np.float32) + _f32(0.5)) * scale
  return np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)


def resize_nearest(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
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


def resize_area(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
  """TF's ResizeArea (antialias=False); float32 result.

  TF sums, per output pixel and per contributing source row, the row's
  x-weighted values (first and last weighted, middle ones added unscaled),
  scales that row sum by the row's weight and accumulates; finally it
  multiplies by 1 / (scale_y * scale_x). Doing the x pass for every source
  row first and accumulating rows in order reproduces that arithmetic; the
  columns are gathered before the (exact) float32 cast and every product and
  sum is made in place, which leaves the numbers as they were.
  """
  h, w = image.shape[:2]
  xi, xw = area_taps(w, ow)
  yi, yw = area_taps(h, oh)

  def weighted(source, index, weight, axis):  # source[index along axis] · weight, float32, in a fresh array
    taken = np.take(source, index, axis=axis).astype(np.float32, copy=False)  # gather first: the cast is exact
    return np.multiply(taken, weight, out=taken)

  rows = weighted(image, xi[:, 0], xw[None, :, 0, None], 1)
  for k in range(1, xi.shape[1]):
    np.add(rows, weighted(image, xi[:, k], xw[None, :, k, None], 1), out=rows)
  out = weighted(rows, yi[:, 0], yw[:, 0, None, None], 0)
  for k in range(1, yi.shape[1]):
    np.add(out, weighted(rows, yi[:, k], yw[:, k, None, None], 0), out=out)
  # `1.0 / (float * float)` in C++: the product is float32, the division is
  # done in double and stored as float32.
  norm = np.float32(1.0 / float(_resize_scale(h, oh) * _resize_scale(w, ow)))
  return np.multiply(out, norm, out=out)


RESIZERS = {
    "bilinear": resize_bilinear,
    "nearest": resize_nearest,
    "area": resize_area,
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
  if method not in RESIZERS:
    raise ValueError(f"resize method {method!r} not supported; "
                     f"use one of {sorted(RESIZERS)}")
  image = as_hwc(np.asarray(image))
  oh, ow = pair(size)
  out = RESIZERS[method](image, oh, ow)
  return cast_like_big_vision(out, image.dtype)
