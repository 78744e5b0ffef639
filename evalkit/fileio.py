"""Small file helpers: atomic writes (nothing half-written is ever visible) and content hashes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
  """Calls `write(f)` on a temporary file in the same directory, then renames it onto `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
  data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
  atomic_write(path, lambda f: f.write(data))


def file_sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def json_sha256(obj) -> str:
  """Hash of a JSON-able object in canonical form (sorted keys), e.g. a task spec."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
