"""Fitting canonical checkpoint arrays to a model: dont_load, position-embedding resampling, one validation pass.

`fit_to_model` drops the `dont_load` matches, ignores a stored head when the model has none (feature extraction),
folds an old class-token posemb row into `cls`, resamples the posemb grid to the target resolution, validates names
and shapes in one go (one CheckpointError listing every problem), fills re-initialised params from a real
`model.init`, and casts to the model's dtypes.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from evalkit.checkpoints.tree import CheckpointError, capped, flatten, one_line, unflatten
from evalkit.models import vit


def _square_side(n: int) -> int | None:
  side = math.isqrt(n)
  return side if side * side == n else None


# How each ecosystem resamples a position-embedding grid when the resolution changes (docs/checkpoint_families.md):
#   linear            big_vision: scipy.ndimage.zoom(order=1), corners map to corners
#   bicubic           Hugging Face ViT / DINOv2 / SigLIP / CLIP: torch bicubic (a = -0.75), align_corners=False
#   bicubic_antialias timm (resample_abs_pos_embed): torch bicubic with antialias=True, PIL's filter (a = -0.5)
POSEMB_RESIZE = ("linear", "bicubic", "bicubic_antialias")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with coefficient `a`."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = (((x - 5) * x + 8) * x - 4) * a
  return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of torch's bicubic upsample/downsample (align_corners=False, border taps clamped)."""
  scale = n_in / n_out
  src = scale * (np.arange(n_out) + 0.5) - 0.5
  base = np.floor(src)
  t = src - base
  m = np.zeros((n_out, n_in))
  for tap in range(-1, 3):
    idx = np.clip(base + tap, 0, n_in - 1).astype(int)
    np.add.at(m, (np.arange(n_out), idx), _cubic(t - tap, -0.75))
  return m


def _antialias_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of torch's antialiased bicubic (PIL's resampling: the kernel widens by the downscale
  factor, taps outside the image are dropped and the rest renormalised)."""
  scale = n_in / n_out
  support = 2.0 * max(scale, 1.0)
  inv = 1.0 / max(scale, 1.0)
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), n_in)
    taps = np.arange(lo, hi)
    w = _cubic((taps - center + 0.5) * inv, -0.5)
    m[i, taps] = w / w.sum() if w.sum() else w
  return m


def _resample_grid(grid: np.ndarray, gh: int, gw: int, method: str) -> np.ndarray:
  """(h, w, d) float32 grid -> (gh, gw, d)."""
  h, w, _ = grid.shape
  if method == "linear":
    import scipy.ndimage  # pylint: disable=g-import-not-at-top  (only here: 0.3 s off every start)
    return scipy.ndimage.zoom(grid, (gh / h, gw / w, 1), order=1)
  matrix = _bicubic_matrix if method == "bicubic" else _antialias_matrix
  out = np.einsum("yh,hwd->ywd", matrix(h, gh), grid.astype(np.float64))
  return np.einsum("xw,ywd->yxd", matrix(w, gw), out).astype(np.float32)


def resample_posemb(posemb: np.ndarray, new_grid, method: str = "linear") -> np.ndarray:
  """Resamples a square (1, N, D) posemb grid to `new_grid` = (gh, gw) the way `method` (POSEMB_RESIZE) says.

  "linear" is big_vision's (e.g. 16x16 -> 37x37 for G/14 at 518 px): corner embeddings map to corner embeddings, so
  a linear ramp stays exactly linear. A leading class-token row (N = 1 + side**2, N itself not square) is kept
  unchanged in front.
  """
  if method not in POSEMB_RESIZE:
    raise ValueError(f"unknown posemb resize {method!r}; expected one of {POSEMB_RESIZE}")
  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"posemb must have shape (1, N, D), got {posemb.shape}")
  gh, gw = vit.posemb_grid(new_grid, 1)
  n, d = posemb.shape[1:]
  head, grid = posemb[:, :0], posemb
  if _square_side(n) is None and _square_side(n - 1) is not None:
    head, grid = posemb[:, :1], posemb[:, 1:]
  side = _square_side(grid.shape[1])
  if side is None:
    raise ValueError(f"posemb with {n} tokens is not a square grid (optionally plus one class-token row)")
  if (side, side) == (gh, gw):
    return posemb
  dtype = posemb.dtype
  grid = _resample_grid(grid.reshape(side, side, d).astype(np.float32), gh, gw, method)
  return np.concatenate([head, grid.reshape(1, gh * gw, d).astype(dtype)], axis=1)


def _fit_posemb(flat: dict, expected: Mapping[str, Any], grid, method: str) -> dict:
  """Folds an old class-token posemb row into `cls` and resamples to the model's grid."""
  if "pos_embedding" not in flat or "pos_embedding" not in expected:
    return flat
  pe, want = flat["pos_embedding"], expected["pos_embedding"].shape
  if pe.ndim != 3 or pe.shape == tuple(want):
    return flat
  flat = dict(flat)
  if _square_side(pe.shape[1]) is None and _square_side(pe.shape[1] - 1) is not None:
    # Old ViTs concatenated [cls] first and then added a (1+h*w)-row posemb; adding that row to `cls` instead is
    # exactly equivalent (big_vision does the same). Without a class token in the model the row is unused.
    row, pe = pe[:, :1], pe[:, 1:]
    if "cls" in flat:
      flat["cls"] = np.asarray(flat["cls"], np.float32) + np.asarray(row, np.float32)
  if _square_side(pe.shape[1]) is not None and pe.shape[2] == want[2]:
    pe = resample_posemb(pe, grid, method)
  flat["pos_embedding"] = pe
  return flat


def _dummy_image(image_size):
  h, w = vit.posemb_grid(image_size, 1)
  return jnp.zeros((1, h, w, 3), jnp.float32)


def expected_tree(model, image_size) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat name -> ShapeDtypeStruct of the model's params at `image_size` (nothing allocated)."""
  return flatten(jax.eval_shape(model.init, jax.random.key(0), _dummy_image(image_size))["params"])


def _init_subset(model, image_size, names: list[str]) -> dict[str, np.ndarray]:
  """Real `model.init(key(0))` values for `names` only: under jit XLA drops the initialisers (and the forward pass)
  whose outputs are not returned, so re-initialising the head of a huge model is cheap."""
  def init(rng):
    params = flatten(model.init(rng, _dummy_image(image_size))["params"])
    return {k: params[k] for k in names}
  return jax.device_get(jax.jit(init)(jax.random.key(0)))


def _compile_patterns(dont_load: Iterable[str], spec: str):
  try:
    return [re.compile(p) for p in dont_load]
  except re.error as e:
    raise CheckpointError(f"checkpoint {spec}: bad dont_load pattern: {one_line(e)}") from None


def _group_modules(names: list[str], universe: Iterable[str]) -> list[str]:
  """Shortens names to "Module/* (N)" when a whole top-level module is listed (e.g. a MAP head missing from a "tok"
  checkpoint says more as "MAPHead_0/* (15)" than as 15 names)."""
  listed = set(names)
  by_top: dict[str, list[str]] = {}
  for k in universe:
    by_top.setdefault(k.split("/", 1)[0], []).append(k)
  out, done = [], set()
  for k in names:
    top = k.split("/", 1)[0]
    members = by_top.get(top, [])
    if len(members) > 1 and all(m in listed for m in members):
      if top not in done:
        out.append(f"{top}/* ({len(members)})")
        done.add(top)
    else:
      out.append(k)
  return out


def mismatch_error(spec, model, image_size, missing, unexpected, misshaped, expected_names, found_names):
  """The ingestion report: every missing, unexpected and mis-shaped name, in one line."""
  h, w = vit.posemb_grid(image_size, 1)
  parts = []
  if missing:
    parts.append(f"missing {capped(_group_modules(missing, expected_names))}")
  if unexpected:
    parts.append(f"unexpected {capped(_group_modules(unexpected, found_names))}")
  if misshaped:
    parts.append("mis-shaped (model vs checkpoint) " + capped(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in misshaped))
  msg = f"checkpoint {spec} does not fit {vit.describe(model)} at {h}x{w}: " + "; ".join(parts)
  if any(k.startswith("head/") for k in missing + [m[0] for m in misshaped]):
    msg += " (to train a new head pass dont_load=('head/.*',))"
  return CheckpointError(msg)


def fit_to_model(flat: Mapping[str, np.ndarray], *, model, image_size=(224, 224), dont_load: Iterable[str] = (),
                 spec: str = "<memory>", posemb_resize: str = "linear") -> dict:
  """Fits canonical flat arrays to `model` (module docstring); returns its nested params. `posemb_resize` is the
  resampling of a posemb grid of another resolution (POSEMB_RESIZE)."""
  if posemb_resize not in POSEMB_RESIZE:
    raise CheckpointError(f"checkpoint {spec}: unknown posemb resize {posemb_resize!r}; "
                          f"expected one of {POSEMB_RESIZE}")
  patterns = _compile_patterns(dont_load, spec)
  skip = lambda k: any(p.fullmatch(k) for p in patterns)
  expected = expected_tree(model, image_size)
  has_head = any(k.startswith("head/") for k in expected)
  flat = {k: v for k, v in flat.items() if not skip(k) and (has_head or not k.startswith("head/"))}
  flat = _fit_posemb(flat, expected, vit.posemb_grid(image_size, model.patch_size), posemb_resize)

  reinit = sorted(k for k in expected if skip(k))
  missing = sorted(k for k in expected if k not in flat and not skip(k))
  unexpected = sorted(k for k in flat if k not in expected)
  misshaped = [(k, expected[k].shape, np.shape(flat[k])) for k in sorted(flat)
               if k in expected and tuple(expected[k].shape) != tuple(np.shape(flat[k]))]
  if missing or unexpected or misshaped:
    raise mismatch_error(spec, model, image_size, missing, unexpected, misshaped, list(expected), list(flat))
  params = {k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()}
  if reinit:
    params.update(_init_subset(model, image_size, reinit))
  return unflatten(params)
