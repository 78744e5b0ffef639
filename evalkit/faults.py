"""Fault injection for the crash-safety tests (tests/command/test_faults.py, docs/robustness.md).

`EVALKIT_KILL_AT=<point>:<n>` SIGKILLs the process the n-th time it passes `point` (counted from 1 in this
process); `EVALKIT_FAULT_TRACE=<file>` appends the name of every point passed to `file`, so a test can list a run's
points and then kill it at each. With neither set, as always outside tests, `point` only reads two environment
variables.

Points: `before_rename` (a file fully written under its temporary name, not yet renamed into place),
`after_rename` (just renamed), `train_step` (after a training step), `state_saved` (after a train-state save).
"""
from __future__ import annotations

import os
import signal

KILL_AT = "EVALKIT_KILL_AT"
TRACE = "EVALKIT_FAULT_TRACE"
_counts: dict[str, int] = {}


def point(name: str) -> None:
  trace, spec = os.environ.get(TRACE), os.environ.get(KILL_AT)
  if trace:
    with open(trace, "a") as f:
      f.write(name + "\n")
  if not spec:
    return
  target, _, n = spec.rpartition(":")
  if target == name:
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(n):
      os.kill(os.getpid(), signal.SIGKILL)
