"""The public entry points of checkpoint ingestion: read any registered format, fingerprint, canonicalize, fit.

  1. the format's reader returns the arrays as stored (`formats`: npz, orbax, timm, hf), `path:prefix` applied;
  2. `weights_hash` fingerprints them before anything is changed;
  3. the format's converter maps them onto big_vision's names (timm / Hugging Face layouts), or
     `big_vision.canonicalize` renames historical big_vision layouts;
  4. `fit.fit_to_model` drops `dont_load`, resamples the posemb (the format's ecosystem's way unless told otherwise),
     validates the tree and casts to the model's dtypes.
`model_for` builds the model a checkpoint holds (its format knows how); `load_timm` / `load_hf` build the model from a
timm architecture name / a config.json and load it in one call.
Every problem raises `CheckpointError` with one line that names the path and what is wrong.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterable, Mapping

import numpy as np

from evalkit.checkpoints import fit, formats
from evalkit.checkpoints.formats.safetensors import directory_tensor_names, tensor_shapes
from evalkit.checkpoints.layouts import big_vision, hf, timm
from evalkit.checkpoints.tree import CheckpointError, flatten


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A checkpoint fitted to a model.

  params: nested numpy arrays, the tree/shapes/dtypes of `model.init(...)["params"]` at the requested image size;
  weights_hash: `weights_hash` of the arrays as stored; path: the spec it was loaded from (`:prefix` included);
  format: the registered format's name; meta: evalkit metadata saved with the checkpoint, else None;
  posemb_resize: how a posemb of another resolution was (or would have been) resampled.
  """
  params: dict
  weights_hash: str
  path: str
  format: str
  meta: dict | None = None
  posemb_resize: str = "linear"


def weights_hash(flat: Mapping[str, np.ndarray]) -> str:
  """SHA-256 fingerprint of a flat checkpoint, as hex.

  For each key in sorted order, hashes the header "key\\0dtype\\0shape\\0" (dtype by name, e.g. "bfloat16"; shape as
  comma-separated ints), then the array's raw little-endian C-order bytes. Callers pass the arrays as stored (after
  `:prefix` selection and the bfloat16 reinterpretation, before renames, resampling, `dont_load` or casting), so the
  hash identifies the file's weights: the same for any image size or head, stable over a save/load round trip, and
  different when any value, dtype or name changes.
  """
  h = hashlib.sha256()
  for key in sorted(flat):
    a = np.asarray(flat[key])
    if a.dtype.byteorder == ">":
      a = a.astype(a.dtype.newbyteorder("<"))
    shape = ",".join(str(d) for d in a.shape)
    h.update(f"{key}\0{a.dtype.name}\0{shape}\0".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def read_flat(path: str | os.PathLike, *, format: str | None = None,  # pylint: disable=redefined-builtin
              canonical: bool = True) -> dict[str, np.ndarray]:
  """The flat arrays of a checkpoint in any registered format (`format` given, or detected from the path);
  `canonical` also maps historical layouts onto big_vision's names."""
  fmt = formats.get(format) if format else formats.detect(path)
  flat = fmt.read(os.fspath(path))
  if not canonical:
    return flat
  if fmt.convert is not None:
    raise CheckpointError(f"checkpoint {path}: {fmt.name} names become big_vision's only for a model; use "
                          "load_checkpoint (or canonical=False for the names as stored)")
  return big_vision.canonicalize(flat, os.fspath(path))


def read_checkpoint_meta(path: str | os.PathLike, *,
                         format: str | None = None) -> dict | None:  # pylint: disable=redefined-builtin
  """evalkit's metadata stored with a checkpoint (model config, training), or None."""
  fmt = formats.get(format) if format else formats.detect(path)
  return fmt.read_meta(os.fspath(path))


def model_for(path: str | os.PathLike, options: dict, *,
              format: str | None = None) -> formats.BuiltModel:  # pylint: disable=redefined-builtin
  """The model a checkpoint holds, built by its format from `options` (a card's [model] table or the model flags,
  plus `num_classes`: None for features only) and what the checkpoint says about itself; `format` as in
  `load_checkpoint`."""
  fmt = formats.get(format) if format else formats.detect(path)
  return fmt.model(os.fspath(path), options)


def load_checkpoint(path: str | os.PathLike, *, model, image_size=(224, 224), dont_load: Iterable[str] = (),
                    format: str | None = None,  # pylint: disable=redefined-builtin
                    posemb_resize: str | None = None) -> Checkpoint:
  """Reads a checkpoint and fits it to `model` (a `vit.VisionTransformer`) at `image_size`.

  `path` may carry big_vision's ":prefix" selector; `dont_load` are regexes (full match) of parameter names taken
  from `model.init(key(0))` instead of the file; `format` names the reader (a card's `format`), else the path decides;
  `posemb_resize` (fit.POSEMB_RESIZE) overrides the format's own way of resampling position embeddings.
  """
  spec = os.fspath(path)
  fmt = formats.get(format) if format else formats.detect(spec)
  raw = fmt.read(spec)
  fingerprint = weights_hash(raw)
  flat = fmt.convert(raw, model, spec) if fmt.convert is not None else big_vision.canonicalize(raw, spec)
  del raw
  method = posemb_resize or fmt.posemb_resize
  params = fit.fit_to_model(flat, model=model, image_size=image_size, dont_load=dont_load, spec=spec,
                            posemb_resize=method)
  _check_finite(params, spec)
  return Checkpoint(params=params, weights_hash=fingerprint, path=spec, format=fmt.name, meta=fmt.read_meta(spec),
                    posemb_resize=method)


def _check_finite(params, spec: str) -> None:
  """NaN or inf weights (a diverged run's export, a corrupted file) would score as chance: refuse them."""
  arrays = {name: np.asarray(a) for name, a in flatten(params).items()}
  bad = [name for name, a in arrays.items()
         if a.dtype.kind not in "biu" and not np.isfinite(a.astype(np.float32)).all()]
  if bad:
    raise CheckpointError(f"checkpoint {spec}: non-finite (NaN/inf) values in {len(bad)} parameter(s), e.g. "
                          f"{', '.join(bad[:3])}; it is not a usable model (a diverged run?)")


def load_params(path: str | os.PathLike, *, model, image_size=(224, 224), dont_load: Iterable[str] = ()) -> dict:
  """The params of `load_checkpoint(...)`: part of evalkit's stable public API."""
  return load_checkpoint(path, model=model, image_size=image_size, dont_load=dont_load).params


def _image_size(image_size, default) -> tuple[int, int]:
  if image_size is None:
    return tuple(default)
  return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def load_timm(path: str | os.PathLike, model_name: str, *, image_size=None, posemb_resize: str | None = None,
              **create_model_kwargs):
  """A timm VisionTransformer `.safetensors` state dict -> (evalkit ViT, params), as
  `timm.create_model(model_name, **create_model_kwargs)` would build and load it.

  `image_size` (int or (H, W); default: the architecture's `img_size`) is the resolution to run at; a posemb of
  another grid is resampled timm's way (bicubic, antialiased) unless `posemb_resize` says otherwise. A classifier
  is built when the file holds one (`head.weight`) or `num_classes` is given.
  """
  if "img_size" in create_model_kwargs and image_size is not None and (
      _image_size(create_model_kwargs["img_size"], (0, 0)) != _image_size(image_size, (0, 0))):
    raise CheckpointError(f"timm {model_name}: img_size={create_model_kwargs['img_size']} and "
                          f"image_size={image_size} disagree (give one)")
  kwargs = dict(create_model_kwargs)
  if "num_classes" not in kwargs:
    file = os.fspath(path)
    head = tensor_shapes(file).get("head.weight") if os.path.isfile(file) else None
    kwargs["num_classes"] = int(head[0]) if head else 0
  arch = timm.architecture(model_name, **kwargs)
  model = arch.model()
  size = _image_size(image_size, arch.img_size)
  ckpt = load_checkpoint(path, model=model, image_size=size, format="timm", posemb_resize=posemb_resize)
  return model, ckpt.params


def load_hf(directory: str | os.PathLike, *, image_size=None, posemb_resize: str | None = None):
  """A Hugging Face `save_pretrained` directory (config.json + model.safetensors) -> (evalkit ViT, params).

  `image_size` (int or (H, W); default: config.json's `image_size`): a posemb of another grid is resampled as
  transformers' `interpolate_pos_encoding` does (torch bicubic) unless `posemb_resize` says otherwise.
  """
  directory = os.fspath(directory)
  config = hf.read_config(directory)  # a foreign config.json fails before any tensor file is looked at
  model = hf.model_from_directory(directory, directory_tensor_names(directory))
  size = _image_size(image_size, hf.image_size(config))
  ckpt = load_checkpoint(directory, model=model, image_size=size, format="hf", posemb_resize=posemb_resize)
  return model, ckpt.params
