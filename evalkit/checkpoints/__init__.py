"""Checkpoint ingestion, the first stage of the pipeline (docs/architecture.md).

  formats/     one module per storage format behind a registry (npz, orbax, timm, hf): how it is read, which
               model it holds
  layouts/     parameter names: historical big_vision layouts, timm / Hugging Face architectures and state dicts
               -> evalkit's ViT and tree
  fit          dont_load, position-embedding resampling, validation against the model
  cards        TOML cards: what a checkpoint is, where its file lives, its published numbers
  load         the entry points: `load_checkpoint`, `load_params`, `read_flat`
"""
from evalkit.checkpoints.fit import fit_to_model, resample_posemb
from evalkit.checkpoints.formats.npz import read_npz, save_npz
from evalkit.checkpoints.formats.orbax import read_orbax, save_orbax
from evalkit.checkpoints.layouts.big_vision import canonicalize
from evalkit.checkpoints.load import (Checkpoint, load_checkpoint, load_hf, load_params, load_timm,
                                      model_for, read_checkpoint_meta, read_flat, weights_hash)
from evalkit.checkpoints.tree import CheckpointError, flatten, split_spec, unflatten

__all__ = ["CheckpointError", "Checkpoint", "read_npz", "read_orbax", "read_flat", "save_npz", "save_orbax",
           "read_checkpoint_meta", "weights_hash", "canonicalize", "resample_posemb", "fit_to_model",
           "load_checkpoint", "model_for", "load_params", "load_timm", "load_hf", "split_spec", "flatten", "unflatten"]
