"""What the command modules share: the flags, the one-line usage error, checks of output paths."""
from __future__ import annotations

import os

from absl import flags

from evalkit.cli import flag_definitions  # noqa: F401  (defines every flag)

FLAGS = flags.FLAGS
MULTI_HOST = ("coordinator_address", "num_processes", "process_id", "distributed_auto")


class UsageError(Exception):
  """Bad command-line usage: one line, exit status 2."""


def check_out_dir(out) -> None:
  if os.path.isfile(out):
    raise UsageError(f"--out={out} is a file; give a directory (it is created when missing)")


def check_out_file(flag: str, path: str) -> None:
  if os.path.isdir(path):
    raise UsageError(f"{flag}={path} is a directory; give a file name")
