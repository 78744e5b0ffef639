"""Small file helpers: safe names, atomic writes (nothing half-written is ever visible) and content hashes.

Names are data, never paths: every name that becomes a file or directory name (checkpoint, card, task, sweep model,
run name) goes through `safe_name`, and every such path is built by `child`, which refuses to leave its root.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable, IO

from evalkit import faults
from evalkit.errors import EvalkitError

# Letters, digits and `_ . + = @ -`, starting with a letter or digit (so never `.`, `..`, a hidden file or an option),
# at most 128 characters: portable on every file system evalkit's users write results to.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=@-]{0,127}")


class UnsafeName(EvalkitError):
  """A name that cannot be a file name (separators, `..`, odd characters)."""


class WriteFailed(EvalkitError):
  """A file could not be written (disk full, permissions); nothing partial was left behind."""


NAME_RULE = "use 1-128 letters, digits and _ . + = @ - , starting with a letter or digit, without '..' or '/'"


def is_safe_name(name) -> bool:
  return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def safe_name(name, what: str = "name") -> str:
  """`name` itself if it is a safe single path component, else UnsafeName saying what is allowed."""
  if not is_safe_name(name):
    raise UnsafeName(f"{what} {name!r} cannot be a file name: {NAME_RULE}")
  return name


def to_safe_name(text: str) -> str:
  """A safe name made from free text (e.g. a checkpoint's file stem): odd characters and dot runs become `_`."""
  mapped = re.sub(r"[^A-Za-z0-9_.+=@-]+|\.{2,}", "_", text).strip("_.-+=@")[:128]
  return mapped or "unnamed"


def child(root: str | os.PathLike, *names: str, what: str = "name") -> Path:
  """`root/<name>/...` for safe names; the result is guaranteed to lie inside `root` (symlinks resolved)."""
  path = Path(root).joinpath(*(safe_name(n, what) for n in names))
  base = Path(root).resolve()
  if not path.resolve().is_relative_to(base):  # e.g. a symlink planted inside root
    raise UnsafeName(f"{what} {'/'.join(names)!r} resolves outside {root}")
  return path


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


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _remove_orphaned_temporaries(path: Path) -> None:
  """Temporary files of `path` left by a writer on this host that was killed (its pid is gone); other writers'
  temporaries, in progress here or on other hosts, are left alone."""
  for tmp in path.parent.glob(f".{glob.escape(path.name)}.{_HOST}-*.tmp"):
    pid = tmp.name[len(path.name) + len(_HOST) + 3:].split(".", 1)[0]
    if pid.isdigit() and not _alive(int(pid)):
      tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
  """Calls `write(f)` on a temporary file in the same directory, then renames it onto `path`.

  The file gets the mode a plain `open(path, "w")` would give (0666 less the umask), not mkstemp's private 0600, so
  results and reports can be shared and served like any other file the user writes.
  A failed write (disk full, file-size limit, permissions) raises WriteFailed naming the file, and leaves neither
  the temporary file nor a partial `path`: a file that was there before stays as it was.
  """
  path = Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
  except OSError as e:
    raise WriteFailed(f"cannot write {path}: {e.strerror or e}") from None
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fchmod(f.fileno(), 0o666 & ~current_umask())
      os.fsync(f.fileno())
    faults.point("before_rename")
    os.replace(tmp, path)
  except BaseException as e:
    Path(tmp).unlink(missing_ok=True)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS):
      raise WriteFailed(f"cannot write {path}: {e.strerror} (nothing was written; free space or fix permissions, "
                        "then rerun: finished parts are kept)") from None
    raise
  faults.point("after_rename")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike):
  """Holds an exclusive lock on the file `path` for the `with` block, waiting for other holders; removes the file
  when done, so no lock files pile up.

  flock locks belong to the open file, so a process killed while holding one releases it: a crash never leaves a
  stale lock. Removing the file on release is safe because a waiter that wakes up on a removed file (its inode no
  longer at `path`) drops it and locks the new one."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    f = open(path, "a")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
        break
    except FileNotFoundError:
      pass
    f.close()  # the holder before us removed this file: lock the one now at `path`
  try:
    yield
  finally:
    path.unlink(missing_ok=True)
    f.close()  # releases the lock


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
