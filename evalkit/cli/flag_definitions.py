"""Every flag of the `evalkit` command, with the absl validators that check it as it is parsed.

Which command reads which flag is the `COMMANDS` table's business (evalkit/cli/__init__.py); a flag defined here and
attached to no command is a test failure.
"""
from __future__ import annotations

import math
import os

from absl import flags

# What to evaluate.
flags.DEFINE_string("checkpoint", None, "Checkpoint card name, path to a .npz / evalkit orbax checkpoint / timm "
                    ".safetensors file / Hugging Face save_pretrained directory, or `pixels`.")
flags.DEFINE_string("name", None, "Name of the checkpoint in results (default: card name or file name).")
flags.DEFINE_list("tasks", ["digits"], "Comma-separated task names (see `evalkit tasks`) or paths to .toml specs.")
flags.DEFINE_multi_string("tasks_dir", [], "Extra directories of task specs (out-of-tree tasks).")
flags.DEFINE_multi_string("cards_dir", [], "Extra directories of checkpoint cards.")
# Model settings when --checkpoint is a path without metadata (big_vision field names).
flags.DEFINE_string("variant", None, "ViT variant, e.g. `B/16`, `mu/7`.")
flags.DEFINE_string("pool_type", None, "gap | map | tok | 0 | none")
flags.DEFINE_string("posemb", None, "learn | sincos2d")
flags.DEFINE_integer("rep_size", None, "Size of the pre_logits layer (0: none).", lower_bound=0)
# ... or, for a timm .safetensors state dict, its timm architecture.
flags.DEFINE_string("timm_model", None, "timm architecture name of a .safetensors checkpoint, e.g. "
                    "`vit_small_patch14_dinov2` (docs/checkpoint_families.md).")
flags.DEFINE_list("timm_kwargs", [], "timm.create_model overrides as key=value (TOML values), e.g. `embed_dim=384`.")
flags.DEFINE_enum("posemb_resize", None, ["linear", "bicubic", "bicubic_antialias"], "Position-embedding resampling "
                  "at other resolutions (default: the checkpoint format's own: linear for big_vision, bicubic for "
                  "Hugging Face, bicubic_antialias for timm).")
# Where things are.
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.DEFINE_string("results_dir", "results", "Where result JSON files go: <results_dir>/<checkpoint>/<task>.json.")
flags.DEFINE_string("cache_dir", "~/.cache/evalkit/features", "Feature cache directory ('' disables the cache).")
# How.
flags.DEFINE_integer("batch_size", 256, "Global batch size for feature extraction (results do not depend on it).",
                     lower_bound=1)
flags.DEFINE_string("representation", "pre_logits", "Model output used as features: pre_logits, head_input, "
                    "encoded, blockN (token outputs are averaged).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of feature extraction.")
flags.DEFINE_bool("loo", True, "Also choose λ by leave-one-out on the k-shot set (reported beside λ=1024).")
flags.DEFINE_bool("overwrite", False, "Recompute results that already exist.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_integer("workers", None, "Processes that decode and preprocess images (0: threads of this process; "
                     "default: every available core, at most 16, for splits of 10,000 examples or more). Results do "
                     "not depend on it.", lower_bound=0)
# Pre-training.
flags.DEFINE_string("config", None, "Pre-training config (demo, digits_tiny, ...) or, for `scaling sweep`, sweep "
                    "config (default, quick); or a path to a .toml file.")
flags.DEFINE_string("workdir", None, "Pre-training or sweep working directory; reruns resume.")
flags.DEFINE_list("cooldown_at", None, "Steps at which to branch off a linear cooldown (overrides the config).")
flags.DEFINE_integer("total_steps", None, "Override the config's total_steps.", lower_bound=1)
# Scaling studies.
flags.DEFINE_bool("quick", False, "`scaling sweep`: the minute-long `quick` sweep on digits (tests, smoke runs).")
flags.DEFINE_integer("bootstrap_samples", 1000, "`scaling fit` / `report`: bootstrap refits for the CIs of a scaling "
                     "law's parameters (0: no CIs).", lower_bound=0)
# Regression gate.
flags.DEFINE_string("baseline", None, "Baseline JSON (written by `evalkit baseline`).")
flags.DEFINE_string("out", None, "Output file (`evalkit baseline`) or directory (`evalkit report`, `scaling fit`).")
flags.DEFINE_float("tolerance", 0.0, "Gate: absolute tolerance added to the noise margin (accuracy fraction).")
flags.DEFINE_float("z", 1.645, "Gate: margin in standard errors of the difference (1.645: one-sided 95%).")
flags.DEFINE_string("summary", None, "Gate: also write the Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")
# Multi-host (jax.distributed).
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_bool("distributed_auto", False, "Call jax.distributed.initialize() with JAX's cluster auto-detection.")

# Flag values are checked as the flags are parsed, before any command reads or writes anything (absl validators; a
# failure is one `evalkit: error:` line naming the flag and its value, see `parse_flags`).
flags.register_validator("tasks", lambda v: bool(v), "name at least one task (see `evalkit tasks`)")
flags.register_validator("z", lambda v: math.isfinite(v) and v >= 0,
                         "must be a finite number ≥ 0 (the margin in standard errors)")
flags.register_validator("tolerance", lambda v: math.isfinite(v) and 0 <= v < 1,
                         "must be in [0, 1) (an accuracy fraction)")
for _name in ("data_dir", "results_dir", "cache_dir", "workdir"):
  flags.register_validator(_name, lambda v: not v or not os.path.isfile(os.path.expanduser(v)),
                           "is a file; give a directory (it is created when missing)")
