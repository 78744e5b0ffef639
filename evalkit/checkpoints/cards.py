"""Checkpoint cards: small TOML files that describe a checkpoint.

A card says what a checkpoint is (model config, native resolution, where the
weights live, where they come from) and which numbers were published for it,
so that `evalkit eval <card>` needs no flags and reports can put our numbers
next to the published ones. Cards never download anything: `path` points at a
file the user provides (absolute, or relative to the card's directory).

Example (checkpoints/vit_g14.toml):

  name = "vit_g14"
  description = "ViT-G/14 pre-trained on JFT-3B"
  format = "npz"                    # a registered format: "npz" | "orbax" | "timm" | "hf"
  path = "vit_g14.npz"              # may carry big_vision's ":prefix"
  source = "Zhai et al., Scaling Vision Transformers, arXiv:2106.04560"
  resolution = 224                  # native image size (pixels, square)
  dont_load = ["head/.*"]           # optional regexes, see checkpoints/fit.py
  [model]                           # ViT() arguments: variant and/or fields
  variant = "G/14"
  pool_type = "map"
  [published]                       # "<task>/<metric>" = number
  "imagenet2012/10shot" = 84.86

A timm checkpoint's [model] table names its timm architecture, plus timm keyword overrides:
  [model]
  timm_model = "vit_small_patch14_dinov2"
and a card may say which preprocessing the checkpoint expects (`pp`, a pp string: a DINOv2 wants ImageNet
mean/std, a SigLIP [-1, 1]) and how its posemb resamples (`posemb_resize`, default: its format's ecosystem's way).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import tomllib
from typing import Any

from evalkit import fileio
from evalkit.checkpoints import fit, formats
from evalkit.data import pp as pp_lib
from evalkit.checkpoints.tree import split_spec
from evalkit.errors import EvalkitError
from evalkit.models import vit

# The repo's own cards: <repo>/checkpoints/*.toml (next to the package).
CARDS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
_REQUIRED = ("name", "format", "path", "model", "resolution")
_OPTIONAL = ("description", "source", "dont_load",
             "published", "notes", "training", "pp", "posemb_resize", "obtain")


class CardError(EvalkitError):
  """A card is missing, malformed or unknown (always one line)."""


@dataclasses.dataclass(frozen=True)
class Card:
  """A parsed checkpoint card.

  Attributes:
    name: short identifier (by convention the file's stem).
    description: one-line human description.
    format: the registered checkpoint format that reads `path` ("npz", "orbax").
    path: checkpoint path as written in the card (see `resolved_path`).
    source: provenance / citation.
    model_config: the card's [model] table, in its format's terms (`vit.ViT`
      arguments, "variant" and/or explicit big_vision fields; a timm
      architecture name and overrides). Named model_config because `model()`
      builds the module.
    resolution: native (pre-training) square image size in pixels.
    dont_load: regexes of params not to read from the checkpoint.
    published: published numbers, "<task>/<metric>" -> value.
    notes: free text (caveats, assumptions).
    training: for checkpoints evalkit trained: step, examples_seen,
      train_flops, upstream dataset/split, config (see evalkit/pretrain.py).
    pp: the preprocessing the checkpoint was trained with (a pp string), for users and reports.
    posemb_resize: how to resample its posemb at other resolutions (fit.POSEMB_RESIZE); "" = the format's way.
    obtain: where a user gets the file (evalkit downloads nothing).
    card_path: the TOML file this card was read from.
  """
  name: str
  format: str
  path: str
  model_config: dict[str, Any]
  resolution: int
  description: str = ""
  source: str = ""
  dont_load: tuple[str, ...] = ()
  published: dict[str, float] = dataclasses.field(default_factory=dict)
  notes: str = ""
  training: dict[str, Any] = dataclasses.field(default_factory=dict)
  pp: str = ""
  posemb_resize: str = ""
  obtain: str = ""
  card_path: Path | None = None

  def build(self, num_classes: int | None = None) -> formats.BuiltModel:
    """The card's ViT, built by its format from the [model] table and traced at the card's resolution; no head by
    default (feature extraction)."""
    cfg = {k: v for k, v in self.model_config.items() if k != "num_classes"}
    return formats.get(self.format).model(self.resolved_path(), {**cfg, "num_classes": num_classes},
                                          (self.resolution, self.resolution))

  def model(self, num_classes: int | None = None) -> vit.VisionTransformer:
    return self.build(num_classes).model

  def resolved_path(self) -> str:
    """Checkpoint path with ~ and $VARS expanded, relative to the card's dir."""
    path = os.path.expandvars(os.path.expanduser(self.path))
    if not os.path.isabs(path) and self.card_path is not None:
      path = os.path.join(os.path.dirname(os.path.abspath(self.card_path)),
                          path)
    return path

  def available(self) -> bool:
    """Whether the checkpoint file/directory exists on this machine."""
    file, _ = split_spec(self.resolved_path())
    return os.path.exists(file)


def _fail(card_path, message: str):
  raise CardError(f"card {card_path}: {message}")


def _check_types(data: dict, card_path) -> None:
  """Validates presence and types of the card's fields (typos included)."""
  missing = [k for k in _REQUIRED if k not in data]
  if missing:
    _fail(card_path, f"missing required field(s) {missing}")
  unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
  if unknown:
    _fail(card_path, f"unknown field(s) {unknown}; allowed: "
          f"{', '.join(_REQUIRED + _OPTIONAL)}")
  if data["format"] not in formats.FORMATS:
    _fail(card_path, f"format must be one of {tuple(formats.FORMATS)}, got {data['format']!r}")
  for key in ("name", "path", "description", "source", "notes", "pp", "posemb_resize", "obtain"):
    if key in data and not isinstance(data[key], str):
      _fail(card_path, f"{key} must be a string")
  for key in ("resolution",):
    value = data.get(key)
    if key in data and (not isinstance(value, int) or isinstance(value, bool)
                        or value <= 0):
      _fail(card_path, f"{key} must be a positive integer, got {value!r}")
  if not fileio.is_safe_name(data["name"]):
    _fail(card_path, f"name {data['name']!r} cannot be a results directory name: {fileio.NAME_RULE}")
  if not isinstance(data["model"], dict):
    _fail(card_path, "[model] must be a table")
  if data.get("posemb_resize") and data["posemb_resize"] not in fit.POSEMB_RESIZE:
    _fail(card_path, f"posemb_resize must be one of {fit.POSEMB_RESIZE}, got {data['posemb_resize']!r}")
  dont_load = data.get("dont_load", [])
  if not (isinstance(dont_load, list)
          and all(isinstance(p, str) for p in dont_load)):
    _fail(card_path, "dont_load must be a list of regex strings")
  published = data.get("published", {})
  if not isinstance(published, dict):
    _fail(card_path, "[published] must be a table")
  for key, value in published.items():
    if "/" not in key:
      _fail(card_path, f"published key {key!r} is not '<task>/<metric>'")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      _fail(card_path, f"published value for {key!r} is not a number")


def parse_card(card_path: str | os.PathLike) -> Card:
  """Reads and validates one card file."""
  card_path = Path(card_path)
  try:
    with open(card_path, "rb") as f:
      data = tomllib.load(f)
  except FileNotFoundError:
    raise CardError(f"card {card_path}: no such file") from None
  except (OSError, tomllib.TOMLDecodeError) as e:
    raise CardError(f"card {card_path}: invalid TOML: "
                    f"{' '.join(str(e).split())}") from None
  _check_types(data, card_path)
  card = Card(
      name=data["name"], format=data["format"], path=data["path"],
      model_config=dict(data["model"]), resolution=data["resolution"],
      description=data.get("description", ""), source=data.get("source", ""),
      dont_load=tuple(data.get("dont_load", ())),
      published={k: float(v) for k, v in data.get("published", {}).items()},
      notes=data.get("notes", ""), training=dict(data.get("training", {})),
      pp=data.get("pp", ""), posemb_resize=data.get("posemb_resize", ""), obtain=data.get("obtain", ""),
      card_path=card_path.resolve())
  try:
    card.build()  # shapes only: a bad [model] table fails here, not later
  except EvalkitError as e:
    raise CardError(f"card {card_path}: bad [model] table: "
                    f"{' '.join(str(e).split())}") from None
  try:
    if card.pp:
      pp_lib.parse(card.pp)
  except (ValueError, TypeError, KeyError) as e:
    raise CardError(f"card {card_path}: bad pp: {' '.join(str(e).split())}") from None
  return card


def _search_dirs(cards_dirs) -> list[Path]:
  """Extra dirs first (a user's card can shadow a built-in one), then ours."""
  if cards_dirs is None:
    extra = []
  elif isinstance(cards_dirs, (str, os.PathLike)):
    extra = [Path(cards_dirs)]
  else:
    extra = [Path(d) for d in cards_dirs]
  return [*extra, CARDS_DIR]


def list_cards(cards_dirs=None) -> list[Card]:
  """All cards in the search dirs, sorted by name (first of a name wins)."""
  found: dict[str, Card] = {}
  for directory in _search_dirs(cards_dirs):
    if not directory.is_dir():
      continue
    for card_file in sorted(directory.glob("*.toml")):
      card = parse_card(card_file)
      found.setdefault(card.name, card)
  return [found[name] for name in sorted(found)]


def _name_field(card_file: Path) -> str | None:
  """The card's `name`, or None when the file is unreadable (`parse_card` says why when it is the one asked for)."""
  try:
    with open(card_file, "rb") as f:
      name = tomllib.load(f).get("name")
  except (OSError, tomllib.TOMLDecodeError):
    return None
  return name if isinstance(name, str) else None


def load_card(name_or_path: str | os.PathLike, cards_dirs=None) -> Card:
  """Loads a card by name (`<name>.toml` in the search dirs) or by file path.

  Raises:
    CardError: unknown name (the message lists the known ones) or bad card.
  """
  text = os.fspath(name_or_path)
  if text.endswith(".toml") or os.sep in text or (
      os.altsep and os.altsep in text):
    return parse_card(text)
  dirs = _search_dirs(cards_dirs)
  for directory in dirs:
    candidate = directory / f"{text}.toml"
    if candidate.is_file():
      return parse_card(candidate)
  # Fall back to the `name` field, for cards whose file stem differs. Only the match is validated: checking every
  # card's model would cost seconds per unknown name (a leaderboard asks for each checkpoint it shows).
  names = []
  for directory in dirs:
    for card_file in sorted(directory.glob("*.toml")) if directory.is_dir() else ():
      name = _name_field(card_file)
      if name == text:
        return parse_card(card_file)
      if name is not None and name not in names:
        names.append(name)
  names = ", ".join(sorted(names)) or "(none)"
  searched = ", ".join(str(d) for d in dirs)
  raise CardError(f"unknown checkpoint card {text!r}; known cards: {names} "
                  f"(searched {searched})")


__all__ = ["Card", "CardError", "CARDS_DIR", "list_cards", "load_card",
           "parse_card"]
