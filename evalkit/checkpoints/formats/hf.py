"""Hugging Face transformers checkpoints: a `save_pretrained` directory (config.json + model.safetensors, or
shards with their index).

config.json names the architecture, so such a directory needs no model settings (a card may still state them in
big_vision's terms; the converter checks the file against them). Position embeddings resample as transformers'
`interpolate_pos_encoding` does (torch bicubic).
"""
import os

from evalkit.checkpoints.formats.registry import BuiltModel, Format, register_format
from evalkit.checkpoints.formats.safetensors import directory_tensor_names, read_directory
from evalkit.checkpoints.layouts import hf
from evalkit.checkpoints.tree import CheckpointError
from evalkit.models import vit


def is_hf_dir(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "config.json"))


def _check_dir(spec: str) -> dict:
  if not os.path.isdir(spec):
    raise CheckpointError(f"checkpoint {spec}: a Hugging Face checkpoint is a save_pretrained directory")
  return hf.read_config(spec)  # a clear error for a foreign config.json before any tensor is read


def _read(spec: str):
  _check_dir(spec)
  return read_directory(spec)


def _model_from(spec: str, options: dict) -> BuiltModel:
  num_classes = options.pop("num_classes", None)
  if options:  # stated in big_vision's terms (a card's [model] table)
    return BuiltModel(vit.from_config({**options, "num_classes": num_classes}))
  config = _check_dir(spec)
  model = hf.model_from_directory(spec, directory_tensor_names(spec))
  return BuiltModel(vit.from_config({**vit.model_config(model), "num_classes": num_classes}),
                    f"Hugging Face {config['model_type']}")


def _convert(flat, model, spec):
  return hf.convert(flat, model, hf.read_config(spec), spec)


register_format(Format("hf", read=_read, claims_dir=is_hf_dir, model_from=_model_from, convert=_convert,
                       posemb_resize="bicubic"))
