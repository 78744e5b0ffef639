"""The `evalkit` command (absl flags): `evalkit <command> [--flags]`; `evalkit <command> --help` lists its flags.

Every command is one `Command` row of the `COMMANDS` table at the end: its summary (what `evalkit --help` prints),
the flags it reads (what `evalkit <command> --help` lists), its positional arguments and the function that runs it.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from evalkit.cli import evaluation, reports, training
from evalkit.cli.common import FLAGS, MULTI_HOST, UsageError
from evalkit.errors import EvalkitError

HELP_ARGS = ("-h", "-help", "--help", "--helpshort")


def help_text(command: str | None) -> str:
  """The command's usage and flags (or, without a command, the command list)."""
  lines = []
  if command:
    cmd = COMMANDS[command]
    positional = f" {cmd.positional}" if cmd.positional else ""
    lines += [f"usage: evalkit {command}{positional} [--flags]", f"  {cmd.summary}", "", "flags:"]
    for name in cmd.flags:
      flag = FLAGS[name]
      lines.append(f"  --{name}: {' '.join(flag.help.split())} (default: {flag.default_as_str or 'none'})")
    lines.append("")
  else:
    lines += ["usage: evalkit <command> [--flags]", ""]
  lines.append("commands:")
  lines += [f"  {name:12s} {cmd.summary}" for name, cmd in COMMANDS.items()]
  lines.append("`evalkit <command> --help` lists a command's flags; `evalkit --helpfull` every flag.")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Command:
  """One `evalkit` command: the line `evalkit --help` prints for it, the flags it reads (its own `--help`), its
  positional arguments as usage shows them (one word each; `a|b` is one argument), and the function that runs it
  (positional arguments in, exit status out)."""
  name: str
  summary: str
  flags: tuple[str, ...]
  run: Callable[..., int]
  positional: str = ""

  @property
  def arity(self) -> int:
    return len(self.positional.split())


COMMANDS = {c.name: c for c in (
    Command("eval", "evaluate one checkpoint (card name, path, or `pixels`) on tasks; one result JSON per task",
            ("checkpoint", "name", "tasks", "tasks_dir", "cards_dir", "variant", "pool_type", "posemb", "rep_size",
             "timm_model", "timm_kwargs", "posemb_resize", "data_dir", "results_dir", "cache_dir", "batch_size",
             "representation", "dtype", "loo", "overwrite", "progress", "workers", *MULTI_HOST), evaluation.run_eval),
    Command("tasks", "list task specs and whether their data is available", ("tasks_dir", "data_dir"),
            evaluation.list_tasks),
    Command("checkpoints", "list checkpoint cards and whether their files exist", ("cards_dir",),
            evaluation.list_checkpoints),
    Command("pretrain", "pre-train a ViT with the paper's recipe; writes checkpoints with cards (rerun to resume)",
            ("config", "workdir", "cooldown_at", "total_steps", "data_dir", "progress", "workers", *MULTI_HOST),
            training.run_pretrain),
    Command("report", "leaderboard of a results directory: Markdown, CSV and a self-contained HTML page (--out)",
            ("results_dir", "out", "bootstrap_samples"), reports.write_report),
    Command("compare", "`compare A B`: paired comparison of checkpoints A and B (paired bootstrap, McNemar)",
            ("results_dir",), reports.compare_checkpoints, positional="A B"),
    Command("baseline", "write a gate baseline (values and their noise) from a results directory",
            ("results_dir", "out"), reports.write_baseline),
    Command("gate", "non-inferiority check of results against a baseline (exit 0 pass, 1 regression, 2 usage/missing)",
            ("baseline", "results_dir", "z", "tolerance", "summary"), reports.run_gate),
    Command("scaling", "`scaling sweep`: pre-train and evaluate a grid of models × data sizes × lengths; "
            "`scaling fit`: the law E = a·(C + d)^(−b) + c on the compute frontier, the paper's claims, plots",
            ("config", "quick", "workdir", "data_dir", "results_dir", "out", "bootstrap_samples", "progress",
             *MULTI_HOST), training.scaling_study, positional="sweep|fit"),
    Command("demo", "end to end on the embedded data: pre-train, few-shot and fine-tune tables, HTML report",
            ("results_dir", "data_dir", "progress"), training.run_demo),
)}


def main(argv: list[str]) -> int:
  absl_logging.set_verbosity(absl_logging.WARNING)  # quiet tfds/jax chatter
  logging.getLogger("evalkit").setLevel(logging.INFO)  # our progress and throughput lines
  command = argv[1] if len(argv) > 1 else None
  if command not in COMMANDS or len(argv) - 2 != COMMANDS[command].arity:
    print(help_text(command if command in COMMANDS else None), file=sys.stderr)
    return 2
  try:
    return COMMANDS[command].run(*argv[2:])
  except UsageError as e:
    print(f"evalkit: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except EvalkitError as e:  # every expected failure: one line, no traceback
    print(f"evalkit: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  except OSError as e:  # the environment, not evalkit: a path that does not exist, a permission, a full disk
    print(f"evalkit: error: {e.filename or ''}: {e.strerror or e}".replace(": :", ":"), file=sys.stderr)
    return 1


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag reported like every other error: one line, exit status 2 (absl prints two
  lines and exits 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    command = argv[1] if len(argv) > 1 and argv[1] in COMMANDS else None
    hint = f"evalkit {command} --help" if command else "evalkit --help"
    print(f"evalkit: error: {' '.join(str(e).split())} (see `{hint}`)", file=sys.stderr)
    sys.exit(2)


def run():
  # absl's own --help prints the launcher's empty docstring and exits 1; a user asking for help gets it, with exit 0.
  if any(arg in HELP_ARGS for arg in sys.argv[1:]):
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    print(help_text(command))
    sys.exit(0)
  app.run(main, flags_parser=parse_flags)
