"""The `evalkit` command (absl flags): `evalkit <command> [--flags]`; `evalkit <command> --help` lists its flags.

Every command is one `Command` row of the `COMMANDS` table at the end: its summary (what `evalkit --help` prints),
the flags it reads (what `evalkit <command> --help` lists), its positional arguments and the function that runs it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from evalkit.errors import EvalkitError

FLAGS = flags.FLAGS

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


_MULTI_HOST = ("coordinator_address", "num_processes", "process_id", "distributed_auto")
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


class UsageError(Exception):
  """Bad command-line usage: one line, exit status 2."""


def _model_options() -> dict:
  """The model flags as one options dict for the checkpoint's format: big_vision's fields (--variant, ...) or a timm
  architecture name (--timm_model) with its overrides (--timm_kwargs key=value, values TOML literals or bare words)."""
  import tomllib
  options = {"variant": FLAGS.variant, "pool_type": FLAGS.pool_type, "posemb": FLAGS.posemb,
             "rep_size": None if FLAGS.rep_size is None else FLAGS.rep_size or False, "timm_model": FLAGS.timm_model}
  options = {k: v for k, v in options.items() if v is not None}
  big_vision_flags = [k for k in options if k != "timm_model"]
  for item in FLAGS.timm_kwargs:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise UsageError(f"--timm_kwargs: {item!r} is not key=value")
    try:
      options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
      options[key.strip()] = value
  if FLAGS.timm_kwargs and not FLAGS.timm_model:
    raise UsageError("--timm_kwargs needs --timm_model")
  if FLAGS.timm_model and big_vision_flags:
    raise UsageError(f"give --timm_model or big_vision model flags ({', '.join(big_vision_flags)}), not both")
  return options


def cmd_eval() -> int:
  from evalkit import distributed, evaluate, subjects, tasks
  if not FLAGS.checkpoint:
    raise UsageError("--checkpoint is required (a card name, a path, or `pixels`)")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  task_list = [tasks.load_task(t, FLAGS.tasks_dir) for t in FLAGS.tasks]  # unknown tasks fail before any work
  subject = subjects.resolve_subject(FLAGS.checkpoint, name=FLAGS.name, model_options=_model_options(),
                                     cards_dirs=FLAGS.cards_dir, posemb_resize=FLAGS.posemb_resize)
  settings = evaluate.EvalSettings(
      data_dir=FLAGS.data_dir, results_dir=FLAGS.results_dir,
      cache_dir=os.path.expanduser(FLAGS.cache_dir) if FLAGS.cache_dir else None, batch_size=FLAGS.batch_size,
      representation=FLAGS.representation, dtype=FLAGS.dtype, loo=FLAGS.loo, overwrite=FLAGS.overwrite,
      progress=FLAGS.progress)
  rows = evaluate.run(subject, task_list, settings, distributed.data_mesh())
  failed = 0
  for task, status, detail in rows:
    if status == "error":
      failed += 1
      print(f"evalkit: error: {task}: {detail}", file=sys.stderr)
    else:
      print(f"{subject.name} / {task}: {status}: {detail}")
  return 1 if failed else 0


def cmd_tasks() -> int:
  from evalkit import tasks
  from evalkit.data import source
  for name, task in sorted(tasks.registry(FLAGS.tasks_dir).items()):
    print(f"{name:24s} {task.protocol:14s} {source.availability(task.dataset, FLAGS.data_dir):28s} {task.description}")
  return 0


def cmd_checkpoints() -> int:
  from evalkit.checkpoints import cards
  for card in cards.list_cards(FLAGS.cards_dir):
    state = "available" if card.available() else "missing file"
    print(f"{card.name:24s} {state:13s} {card.resolved_path()}  {card.description}")
  return 0


def cmd_pretrain() -> int:
  from evalkit import distributed
  from evalkit.train import pretrain
  from evalkit.train import pretrain_configs
  if not FLAGS.config or not FLAGS.workdir:
    raise UsageError("--config and --workdir are required")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  overrides = {}
  if FLAGS.cooldown_at is not None:
    overrides["cooldown_at"] = [int(s) for s in FLAGS.cooldown_at]
  if FLAGS.total_steps is not None:
    overrides["total_steps"] = FLAGS.total_steps
  try:
    config = pretrain_configs.load(FLAGS.config, overrides)
  except ValueError as e:
    raise UsageError(str(e)) from None
  run = pretrain.build_run(config, FLAGS.workdir, data_dir=FLAGS.data_dir, progress=FLAGS.progress)
  for name, path in pretrain.train(run).items():
    print(f"{name}: {path}  (card: {path}.toml)")
  return 0


def _check_out_dir(out) -> None:
  if os.path.isfile(out):
    raise UsageError(f"--out={out} is a file; give a directory (it is created when missing)")


def _check_out_file(flag: str, path: str) -> None:
  if os.path.isdir(path):
    raise UsageError(f"{flag}={path} is a directory; give a file name")


def cmd_report() -> int:
  from evalkit import evaluate, results
  from evalkit.analysis import scaling
  from evalkit.report import leaderboard
  if not FLAGS.out:
    raise UsageError("--out (a directory) is required")
  _check_out_dir(FLAGS.out)
  try:
    records = evaluate.with_published(results.load_all(FLAGS.results_dir))
  except ValueError as e:
    raise UsageError(str(e)) from None
  studies = scaling.analyze_all(records, bootstrap=FLAGS.bootstrap_samples)
  for kind, path in leaderboard.write(FLAGS.results_dir, FLAGS.out, studies=studies, records=records).items():
    print(f"{kind}: {path}")
  return 0


def cmd_compare(a: str, b: str) -> int:
  from evalkit.analysis import compare
  try:
    rows, overall = compare.compare(FLAGS.results_dir, a, b)
  except compare.CompareError as e:
    raise UsageError(str(e)) from None
  print(compare.table(rows, overall, a, b))
  return 0


def cmd_baseline() -> int:
  from evalkit import fileio
  from evalkit.analysis import gate
  if not FLAGS.out:
    raise UsageError("--out is required")
  _check_out_file("--out", FLAGS.out)
  baseline = gate.make_baseline(FLAGS.results_dir)
  if not baseline["entries"]:
    raise UsageError(f"no results in {FLAGS.results_dir}")
  fileio.atomic_write_json(FLAGS.out, baseline)
  print(f"baseline: {len(baseline['entries'])} metrics -> {FLAGS.out}")
  return 0


def cmd_gate() -> int:
  from evalkit.analysis import gate
  if not FLAGS.baseline:
    raise UsageError("--baseline is required")
  if FLAGS.summary:
    _check_out_file("--summary", FLAGS.summary)
  try:  # exit 2, never 1: a gate that cannot read its inputs has not found a regression
    checks = gate.run_gate(gate.load_baseline(FLAGS.baseline), FLAGS.results_dir, z=FLAGS.z,
                           tolerance=FLAGS.tolerance)
  except EvalkitError as e:  # a bad baseline, a result file that is not an evalkit result or has no standard error
    raise UsageError(str(e)) from None
  summary = gate.markdown(checks)
  print(summary)
  if FLAGS.summary:
    with open(FLAGS.summary, "a") as f:
      f.write(summary)
  code = gate.exit_code(checks)
  if code == 2:
    counts = {s: sum(c.status == s for c in checks) for s in ("missing", "incomparable")}
    print(f"evalkit: error: gate cannot decide: {counts['missing']} baseline metric(s) missing and "
          f"{counts['incomparable']} computed under another task spec in {FLAGS.results_dir} (table above); rerun "
          "the evaluations, or write a new baseline for a changed spec", file=sys.stderr)
  return code


def cmd_scaling(action: str) -> int:
  if action not in ("sweep", "fit"):
    raise UsageError(f"unknown scaling action {action!r}: use `evalkit scaling sweep` or `evalkit scaling fit`")
  if action == "sweep":
    _scaling_sweep()
  return _scaling_fit(after_sweep=action == "sweep")


def _scaling_sweep() -> None:
  from evalkit import distributed
  from evalkit.studies import sweep
  if not FLAGS.workdir or not (FLAGS.config or FLAGS.quick):
    raise UsageError("--workdir and --config (default, quick or a .toml file) or --quick are required")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_auto)
  config = sweep.load("quick" if FLAGS.quick else FLAGS.config)
  rows = sweep.run_sweep(config, FLAGS.workdir, data_dir=FLAGS.data_dir, progress=FLAGS.progress)
  for row in rows:
    print(f"{row['cell']:16s} {row['status']:16s} {row['seconds']:7.0f} s")
  print(f"sweep {config.name!r}: {len(rows)} cells × {len(config.lengths())} lengths, "
        f"{sum(r['seconds'] for r in rows):.0f} s this run")


def _scaling_fit(after_sweep: bool) -> int:
  """Analyses the sweep's (--workdir) or any (--results_dir) results; writes to --out (default <workdir>/scaling)."""
  from pathlib import Path
  import jax
  from evalkit import evaluate, results
  from evalkit.analysis import scaling
  from evalkit.report import leaderboard, scaling_view
  results_dir = Path(FLAGS.workdir) / "results" if FLAGS.workdir else Path(FLAGS.results_dir)
  out = FLAGS.out or (Path(FLAGS.workdir) / "scaling" if FLAGS.workdir else None)
  if out is None:
    raise UsageError("--out is required with --results_dir (or pass the sweep's --workdir)")
  _check_out_dir(out)
  records = evaluate.with_published(results.load_all(results_dir))
  studies = scaling.analyze_all(records, bootstrap=FLAGS.bootstrap_samples)
  if not studies:
    why = (f"no scaling results in {results_dir}: every task needs checkpoints with training compute in their "
           "cards (from `evalkit pretrain` / `evalkit scaling sweep`) at ≥ 3 compute values")
    if after_sweep:
      print(why)
      return 0
    raise UsageError(why)
  if jax.process_index() == 0:  # one writer in multi-process runs
    paths = scaling_view.write(studies, out)
    paths["html"] = leaderboard.write(results_dir, out, studies=studies, records=records)["html"]
    print("\n".join(scaling_view.markdown(s) for s in studies))
    for kind, path in paths.items():
      print(f"{kind}: {path}")
  return 0


def cmd_demo() -> int:
  from evalkit import demo
  return demo.main(results_dir=FLAGS.results_dir, data_dir=FLAGS.data_dir, progress=FLAGS.progress)


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
             "representation", "dtype", "loo", "overwrite", "progress", *_MULTI_HOST), cmd_eval),
    Command("tasks", "list task specs and whether their data is available", ("tasks_dir", "data_dir"), cmd_tasks),
    Command("checkpoints", "list checkpoint cards and whether their files exist", ("cards_dir",), cmd_checkpoints),
    Command("pretrain", "pre-train a ViT with the paper's recipe; writes checkpoints with cards (rerun to resume)",
            ("config", "workdir", "cooldown_at", "total_steps", "data_dir", "progress", *_MULTI_HOST), cmd_pretrain),
    Command("report", "leaderboard of a results directory: Markdown, CSV and a self-contained HTML page (--out)",
            ("results_dir", "out", "bootstrap_samples"), cmd_report),
    Command("compare", "`compare A B`: paired comparison of checkpoints A and B (paired bootstrap, McNemar)",
            ("results_dir",), cmd_compare, positional="A B"),
    Command("baseline", "write a gate baseline (values and their noise) from a results directory",
            ("results_dir", "out"), cmd_baseline),
    Command("gate", "non-inferiority check of results against a baseline (exit 0 pass, 1 regression, 2 usage/missing)",
            ("baseline", "results_dir", "z", "tolerance", "summary"), cmd_gate),
    Command("scaling", "`scaling sweep`: pre-train and evaluate a grid of models × data sizes × lengths; "
            "`scaling fit`: the law E = a·(C + d)^(−b) + c on the compute frontier, the paper's claims, plots",
            ("config", "quick", "workdir", "data_dir", "results_dir", "out", "bootstrap_samples", "progress",
             *_MULTI_HOST), cmd_scaling, positional="sweep|fit"),
    Command("demo", "end to end on the embedded data: pre-train, few-shot and fine-tune tables, HTML report",
            ("results_dir", "data_dir", "progress"), cmd_demo),
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


if __name__ == "__main__":
  run()
