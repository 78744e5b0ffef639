"""What gets evaluated: a ViT checkpoint (by card, or by path plus model settings) or raw pixels (the reference row).

A `Subject` loads its checkpoint once per resolution, builds the featurizer adapters extract with, and describes
itself for the result record (provenance: path, format, weights hash, model config, card, training compute).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

from evalkit import checkpoints, features, fileio
from evalkit.checkpoints import cards, formats
from evalkit.models import vit

PIXELS = "pixels"
DEFAULT_DONT_LOAD = ("head/.*",)  # probes read pre_logits: a checkpoint's head is not needed


@dataclasses.dataclass
class Subject:
  """A featurizer source: a checkpoint with its model, or raw pixels (`path` None)."""
  name: str
  path: str | None = None
  model: vit.VisionTransformer | None = None
  dont_load: tuple[str, ...] = DEFAULT_DONT_LOAD
  card: cards.Card | None = None
  format: str | None = None  # the format that reads `path`: the card's, or the path's (checkpoints.formats.detect)
  posemb_resize: str | None = None  # None: the format's own way (checkpoints.fit.POSEMB_RESIZE)
  architecture: str | None = None  # where the model comes from when not evalkit's own, e.g. "timm vit_small_..."
  _loaded: dict = dataclasses.field(default_factory=dict, repr=False)  # image size -> Checkpoint

  @property
  def is_pixels(self) -> bool:
    return self.path is None

  def checkpoint(self, image_size: tuple[int, int], *, model=None,
                 dont_load: Iterable[str] = ()) -> checkpoints.Checkpoint:
    """The checkpoint fitted to `model` (default: the subject's, loaded once per resolution) at `image_size`, with
    the subject's `dont_load` plus `dont_load` (e.g. a fine-tune's new head)."""
    if self.card is not None and not self.card.available():
      where = f"; the card says where to get it: {self.card.obtain}" if self.card.obtain else ""
      raise checkpoints.CheckpointError(
          f"checkpoint {self.path} of card {self.card.name} is not on this machine (evalkit downloads nothing; put "
          f"the file there or edit the card's path){where}")
    load = lambda m, skip: checkpoints.load_checkpoint(self.path, model=m, image_size=image_size, dont_load=skip,
                                                       format=self.format, posemb_resize=self.posemb_resize)
    if model is not None or dont_load:
      return load(model or self.model, tuple(dict.fromkeys((*self.dont_load, *dont_load))))
    if image_size not in self._loaded:
      self._loaded[image_size] = load(self.model, self.dont_load)
    return self._loaded[image_size]

  def featurizer(self, image_size, *, representation: str, dtype: str) -> features.Featurizer:
    if self.is_pixels:
      return features.pixel_featurizer()
    ckpt = self.checkpoint(image_size)
    return features.model_featurizer(self.model, ckpt.params, weights_hash=ckpt.weights_hash,
                                     representation=representation, dtype=dtype, image_size=tuple(image_size))

  def describe(self, image_size, ckpt: checkpoints.Checkpoint | None = None) -> dict:
    """Provenance of the subject; pass `ckpt` when it is already loaded (e.g. with another head) to skip a re-read."""
    if self.is_pixels:
      return {"name": self.name, "kind": PIXELS}
    ckpt = ckpt or self.checkpoint(image_size)
    described = {"name": self.name, "kind": "checkpoint", "path": str(self.path), "format": ckpt.format,
                 "weights_hash": ckpt.weights_hash, "model": vit.model_config(self.model),
                 "card": self.card.name if self.card else None, "posemb_resize": ckpt.posemb_resize}
    if self.architecture:
      described["architecture"] = self.architecture
    if self.card and self.card.training:
      described["training"] = dict(self.card.training)  # compute, data size, ...: what scaling studies need
    return described


def _is_card(checkpoint: str) -> bool:
  """A card file, or a bare name that is not a path and does not end like a checkpoint file of any format."""
  if checkpoint.endswith(".toml"):
    return True
  return not Path(checkpoint).exists() and os.sep not in checkpoint and not formats.claims_suffix(checkpoint)


def _stem(checkpoint: str) -> str:
  """The default name of a checkpoint path: its file name less the format's suffix, made a safe file name."""
  stem = Path(checkpoint.rstrip("/")).name
  for fmt in formats.FORMATS.values():
    for suffix in fmt.suffixes:
      stem = stem.removesuffix(suffix)
  return fileio.to_safe_name(stem)


def resolve_subject(checkpoint: str, *, name: str | None = None, model_options: dict | None = None,
                    cards_dirs: list[str] | None = None, posemb_resize: str | None = None) -> Subject:
  """`pixels`, a card (name or .toml path), or a checkpoint path of any registered format with model settings in
  the format's terms (`model_options`: big_vision fields, or a timm architecture name plus timm overrides) or from the
  checkpoint itself (evalkit's orbax metadata, Hugging Face config.json). The name becomes a results directory: it
  must be a safe file name."""
  if name is not None:
    fileio.safe_name(name, "--name")
  if checkpoint == PIXELS:
    return Subject(name=name or PIXELS)
  if _is_card(checkpoint):
    card = cards.load_card(checkpoint, cards_dirs)
    built = card.build()
    return Subject(name=name or card.name, path=str(card.resolved_path()), model=built.model,
                   dont_load=tuple(card.dont_load) or DEFAULT_DONT_LOAD, card=card, format=card.format,
                   posemb_resize=posemb_resize or card.posemb_resize or None, architecture=built.architecture)
  fmt = formats.detect(checkpoint)
  built = fmt.model(checkpoint, {**(model_options or {}), "num_classes": None})  # features only
  return Subject(name=name or _stem(checkpoint), path=checkpoint, model=built.model, format=fmt.name,
                 posemb_resize=posemb_resize, architecture=built.architecture)
