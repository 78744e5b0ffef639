"""The one error type of evalkit: every expected failure (bad input, missing data, a diverged run) derives from it.

The CLI prints an `EvalkitError` as one line, `evalkit: error: <message>`, and exits 1; anything else is a bug and
keeps its traceback. Messages are collapsed to a single line because they end up in CI logs and leaderboard cells.
"""
from __future__ import annotations


class EvalkitError(Exception):
  """An expected failure, reported in one line that names the bad thing and how to fix it."""

  def __init__(self, message: str = ""):
    super().__init__(" ".join(str(message).split()))
