"""The checkpoint-format registry: what a path is decides which reader reads it.

A format registers a reader (path spec -> flat arrays exactly as stored), how to build the model its files hold
(`model_from`), optionally a writer, a metadata reader and a converter of its parameter names, and says which paths
are its own: file suffixes, or a test on a directory. `detect` picks the format of a path; a card's `format` field
names one directly (`get`). Nothing outside this folder asks which format a checkpoint has: adding one is one module
here that calls `register_format`, imported in `formats/__init__.py` (docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from evalkit.checkpoints.tree import CheckpointError, split_spec
from evalkit.models import vit


@dataclasses.dataclass(frozen=True)
class BuiltModel:
  """The ViT a checkpoint holds, and where its architecture comes from when it is not evalkit's own naming
  (e.g. "timm vit_small_patch14_dinov2"; recorded with every result)."""
  model: vit.VisionTransformer
  architecture: str | None = None


def big_vision_model(spec: str, options: dict, read_meta: Callable[[str], dict | None]) -> BuiltModel:
  """A model from big_vision's settings (`variant`, `pool_type`, ... as `vit.ViT` takes them), or, when none are
  given, from the settings saved beside the checkpoint (evalkit's own metadata)."""
  options = dict(options)
  num_classes = options.pop("num_classes", None)
  if not options:
    meta = read_meta(spec)
    if not meta or "model" not in meta:
      raise CheckpointError(f"checkpoint {spec}: no model settings; pass --variant (and --pool_type, ...) or use a "
                            "card")
    options = dict(meta["model"])
  return BuiltModel(vit.from_config({**options, "num_classes": num_classes}))


@dataclasses.dataclass(frozen=True)
class Format:
  """One way checkpoints are stored.

  read(spec) -> flat dict of numpy arrays as stored (after `:prefix` selection, before any renames);
  model_from(spec, options) -> BuiltModel: the model the checkpoint holds, from `options` (a card's [model] table or
  the model flags, in the ecosystem's own terms, plus `num_classes`: None for features only) and whatever the
  checkpoint says about itself (None: big_vision's settings, else the checkpoint's metadata: `big_vision_model`);
  convert(flat, model, spec) -> the same arrays under evalkit's (big_vision's) names for `model` (None: the
  format's names already are big_vision's, `big_vision.canonicalize` handles historical layouts);
  write(path, params, **kw) saves a params tree; read_meta(spec) -> evalkit metadata saved beside it, or None
  ({"model": ViT kwargs} lets a path be evaluated without model flags);
  posemb_resize: how the ecosystem the format comes from resamples position embeddings (fit.POSEMB_RESIZE).
  `suffixes` claim files by name; `claims_dir(directory)` claims directories; `fallback_for` ("file" / "dir") makes
  the format the reader of last resort for unclaimed paths of that kind, so its reader explains what is wrong.
  """
  name: str
  read: Callable[[str], dict[str, np.ndarray]]
  suffixes: tuple[str, ...] = ()
  claims_dir: Callable[[str], bool] | None = None
  write: Callable | None = None
  read_meta: Callable[[str], dict | None] = lambda spec: None
  fallback_for: str | None = None
  convert: Callable | None = None
  posemb_resize: str = "linear"
  model_from: Callable[[str, dict], BuiltModel] | None = None

  def model(self, spec: str, options: dict, image_size=(224, 224)) -> BuiltModel:
    """The model of checkpoint `spec` (see `model_from`), its shapes traced once at `image_size`: a bad setting
    fails here in one line (naming the checkpoint and the settings), before any data is read."""
    make = self.model_from or (lambda s, o: big_vision_model(s, o, self.read_meta))
    try:
      built = make(spec, dict(options))
      vit.build_checked(lambda: built.model, image_size)
    except (TypeError, ValueError) as e:
      shown = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
      raise CheckpointError(f"checkpoint {spec} (format {self.name}): bad model settings ({shown}): "
                            f"{' '.join(str(e).split())}") from None
    return built


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
  if fmt.name in FORMATS:
    raise ValueError(f"checkpoint format {fmt.name!r} registered twice")
  FORMATS[fmt.name] = fmt
  return fmt


def get(name: str) -> Format:
  if name not in FORMATS:
    raise CheckpointError(f"unknown checkpoint format {name!r}; known: {', '.join(FORMATS)}")
  return FORMATS[name]


def claims_suffix(path: str | os.PathLike) -> bool:
  """Whether a name ends like a checkpoint file of some format (so it is a path, not a card name)."""
  file, _ = split_spec(os.fspath(path))
  return any(file.endswith(s) for fmt in FORMATS.values() for s in fmt.suffixes)


def detect(path: str | os.PathLike) -> Format:
  """The format of a checkpoint path (which may carry big_vision's `:prefix`)."""
  file, _ = split_spec(os.fspath(path))
  kind = "dir" if os.path.isdir(file) else "file"
  for fmt in FORMATS.values():
    if kind == "file" and any(file.endswith(s) for s in fmt.suffixes):
      return fmt
    if kind == "dir" and fmt.claims_dir is not None and fmt.claims_dir(file):
      return fmt
  for fmt in FORMATS.values():
    if fmt.fallback_for == kind:
      return fmt
  raise CheckpointError(f"checkpoint {path}: no registered format reads it (known: {', '.join(FORMATS)})")
