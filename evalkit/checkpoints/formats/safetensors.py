"""Reading `.safetensors` files (timm's and Hugging Face's format) without torch.

The `safetensors` library opens the file lazily (memory-mapped; one tensor is read when asked for), so a large
checkpoint costs the arrays evalkit keeps, not a second copy. numpy has no bfloat16, so the library refuses BF16
tensors with framework="numpy"; those are viewed straight from the file through its header's byte offsets as
`ml_dtypes.bfloat16` (the format: an 8-byte little-endian header length, a JSON header of dtype, shape and
data_offsets per tensor, then the raw little-endian bytes; https://github.com/huggingface/safetensors).
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from evalkit.checkpoints.tree import CheckpointError, one_line

_MAX_HEADER = 100 * 2**20  # the library's own limit


def _header(file: str, spec: str) -> tuple[int, dict]:
  """(byte offset of the data, parsed header) of a safetensors file; a clear error for anything else."""
  size = os.path.getsize(file)
  with open(file, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise CheckpointError(f"checkpoint {spec}: not a safetensors file (only {size} bytes)")
    (length,) = struct.unpack("<Q", head)
    if length > min(_MAX_HEADER, size - 8):
      raise CheckpointError(f"checkpoint {spec}: not a safetensors file, or truncated (header of {length} bytes "
                            f"in a file of {size})")
    try:
      header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(f"checkpoint {spec}: corrupt safetensors header: {one_line(e)}") from None
  if not isinstance(header, dict):
    raise CheckpointError(f"checkpoint {spec}: corrupt safetensors header (not a JSON object)")
  end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
  if 8 + length + end > size:
    raise CheckpointError(f"checkpoint {spec}: truncated safetensors file ({size} bytes, the header promises "
                          f"{8 + length + end})")
  return 8 + length, header


def tensor_shapes(file: str | os.PathLike) -> dict[str, tuple[int, ...]]:
  """name -> shape of every tensor in a safetensors file, from its header alone (no tensor is read)."""
  _, header = _header(os.fspath(file), os.fspath(file))
  return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def read_safetensors(file: str | os.PathLike, spec: str | None = None) -> dict[str, np.ndarray]:
  """The tensors of one `.safetensors` file by their stored names (torch's "."-joined ones), as numpy arrays.

  Raises CheckpointError (one line) for a missing, truncated, corrupt or empty file.
  """
  from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel

  file = os.fspath(file)
  spec = spec or file
  if not os.path.isfile(file):
    raise CheckpointError(f"checkpoint {spec}: no such file")
  data_start, header = _header(file, spec)
  names = [k for k in header if k != "__metadata__"]
  if not names:
    raise CheckpointError(f"checkpoint {spec}: the safetensors file holds no tensors")
  flat = {}
  try:
    with safe_open(file, framework="numpy") as f:
      for name in names:
        if header[name]["dtype"] == "BF16":
          begin, end = header[name]["data_offsets"]
          raw = np.memmap(file, dtype=np.uint8, mode="r", offset=data_start + begin, shape=(end - begin,))
          flat[name] = np.array(raw.view(ml_dtypes.bfloat16).reshape(header[name]["shape"]))
        else:
          flat[name] = f.get_tensor(name)
  except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"checkpoint {spec}: cannot read the safetensors file: {one_line(e)}") from None
  return flat


def _shard_files(directory: str, stem: str) -> list[str]:
  """The files of a save_pretrained checkpoint: `<stem>.safetensors`, or the shards `<stem>.safetensors.index.json`
  lists."""
  single = os.path.join(directory, f"{stem}.safetensors")
  index = single + ".index.json"
  if os.path.isfile(single):
    return [single]
  if not os.path.isfile(index):
    found = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    hint = (" (pytorch_model.bin is a pickle, which evalkit never loads: save it as safetensors, e.g. "
            "model.save_pretrained(dir, safe_serialization=True))") if "pytorch_model.bin" in found else ""
    raise CheckpointError(f"checkpoint {directory}: no {stem}.safetensors or {stem}.safetensors.index.json"
                          f"{hint}; found {found[:8]}")
  try:
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise CheckpointError(f"checkpoint {index}: unreadable shard index: {one_line(e)}") from None
  for shard in shards:
    if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
      raise CheckpointError(f"checkpoint {index}: shard name {shard!r} is not a file name in the directory")
  return [os.path.join(directory, shard) for shard in shards]


def directory_tensor_names(directory: str | os.PathLike, stem: str = "model") -> list[str]:
  """The tensor names of a save_pretrained checkpoint, from the headers alone."""
  return [name for file in _shard_files(os.fspath(directory), stem) for name in tensor_shapes(file)]


def read_directory(directory: str | os.PathLike, stem: str = "model") -> dict[str, np.ndarray]:
  """The tensors of a save_pretrained checkpoint, single-file or sharded."""
  flat = {}
  for file in _shard_files(os.fspath(directory), stem):
    flat.update(read_safetensors(file, file))
  return flat
