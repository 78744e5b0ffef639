"""Hugging Face transformers checkpoints: a `save_pretrained` directory (config.json + model.safetensors, or
shards with their index).

config.json names the architecture, so such a directory needs no model flags (`read_meta` returns its ViT
settings). Position embeddings resample as transformers' `interpolate_pos_encoding` does (torch bicubic).
"""
import os

from evalkit.checkpoints import hf
from evalkit.checkpoints.formats.registry import Format, register_format
from evalkit.checkpoints.formats.safetensors import directory_tensor_names, read_directory
from evalkit.checkpoints.tree import CheckpointError
from evalkit.models import vit


def is_hf_dir(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "config.json"))


def _read(spec: str):
  if not os.path.isdir(spec):
    raise CheckpointError(f"checkpoint {spec}: a Hugging Face checkpoint is a save_pretrained directory")
  hf.read_config(spec)  # a clear error for a foreign config.json before any tensor is read
  return read_directory(spec)


def _meta(spec: str) -> dict:
  return {"model": vit.model_config(hf.model_from_directory(spec, directory_tensor_names(spec)))}


def _convert(flat, model, spec):
  return hf.convert(flat, model, hf.read_config(spec), spec)


register_format(Format("hf", read=_read, claims_dir=is_hf_dir, read_meta=_meta, convert=_convert,
                       posemb_resize="bicubic"))
