"""Small file helpers: atomic writes (nothing half-written is ever visible) and content hashes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def current_umask() -> int:
  """The process's umask, read without changing it where Linux exposes it (os.umask alone must set it to read it)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
  """Calls `write(f)` on a temporary file in the same directory, then renames it onto `path`.

  The file gets the mode a plain `open(path, "w")` would give (0666 less the umask), not mkstemp's private 0600, so
  results and reports can be shared and served like any other file the user writes."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fchmod(f.fileno(), 0o666 & ~current_umask())
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
