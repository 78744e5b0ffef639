"""Scaling sweeps: a grid of pre-training runs, every checkpoint evaluated — the data behind `evalkit scaling fit`.

A sweep is model sizes × upstream data sizes (the *cells*); each cell is one `evalkit pretrain` run that yields
checkpoints of several training lengths through cooldown branches (docs/protocols.md "Pre-training recipe": branch
off the main run at step s and cool the lr down linearly), so a cell costs about one run of its longest length.
Every checkpoint is evaluated on the sweep's few-shot suite (and optionally fine-tune tasks); its card's training
compute (FLOPs, evalkit/flops.py), examples seen, upstream data size and parameter count travel into each result
record (`checkpoint.training`).

Workdir layout:
  sweep.toml                        the resolved sweep config (a rerun with a different config is refused)
  runs/<model>_n<size>/             the cell's `evalkit pretrain` workdir (state, checkpoints with cards)
  results/<model>_n<size>_s<steps>/ result JSON files, one per task (evalkit.result/1)
Resuming: a cell whose checkpoints all have all their results is skipped without loading anything; an interrupted
cell resumes its pre-training from the last saved state and its evaluation from the last finished result.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from pathlib import Path

import tomli_w

from evalkit import distributed, evaluate, fileio, results, subjects, tasks
from evalkit.train import pretrain
from evalkit.train import pretrain_configs
from evalkit.data import source
from evalkit.errors import EvalkitError

log = logging.getLogger(__name__)


class SweepError(EvalkitError):
  """A sweep config that cannot run, or a workdir holding another sweep (one line)."""


# Model sizes of the default sweep: patch 7 on 28×28 images (16 tokens), MAP head; M is the demo's model. Parameter
# counts (10 classes): XS 44k, S 0.21M, M 0.58M.
def _toy_vit(width: int, depth: int, heads: int) -> dict:
  return {"patch_size": [7, 7], "width": width, "depth": depth, "mlp_dim": 4 * width, "num_heads": heads,
          "pool_type": "map"}


@dataclasses.dataclass
class SweepConfig(pretrain.ConfigFields):
  """A grid of pre-training runs. Cell (model, n) pre-trains `models[model]` on `{data_split}[:n]` of the base
  config's dataset for `total_steps`, branching a cooldown of `cooldown_steps` at each `cooldown_at` step."""
  name: str = "sweep"
  base: str = "demo"  # the pretrain config every cell starts from (a name in evalkit/pretrain_configs.py or a .toml)
  models: dict = dataclasses.field(default_factory=dict)  # model name -> ViT arguments
  data_split: str = "train"
  data_sizes: list = dataclasses.field(default_factory=list)
  total_steps: int = 1000
  cooldown_at: list = dataclasses.field(default_factory=list)
  cooldown_steps: int = 100
  tasks: list = dataclasses.field(default_factory=list)  # evaluated for every checkpoint (few-shot or fine-tune)
  loo: bool = False  # leave-one-out λ beside λ = 1024 (slower; not used by the fit)
  pretrain: dict = dataclasses.field(default_factory=dict)  # other PretrainConfig fields, e.g. batch_size, lr
  kind = "sweep config"

  def __post_init__(self):
    pretrain.check_field_types(self)

  def lengths(self) -> list[int]:
    """Training lengths (steps) of a cell's checkpoints: each branch step plus its cooldown, and the full run."""
    branches = sorted({int(s) for s in self.cooldown_at})
    return [s + self.cooldown_steps for s in branches] + [self.total_steps]

  def cells(self) -> list[tuple[str, int]]:
    return [(model, int(n)) for model in self.models for n in self.data_sizes]


def default() -> SweepConfig:
  """3 model sizes × 3 Fashion-MNIST data sizes × 4 lengths = 36 checkpoints; ≈ 25 minutes on 2 CPU cores.

  Upstream is `train[:n]` (n ≤ 50,000), so `fashion_mnist_heldout` (shots from the unseen `train[50000:]`) is an
  in-domain probe, and digits a far-transfer one. Lengths 180/280/480/800 steps of 128 (23k–102k examples).
  """
  return SweepConfig(
      name="default", base="demo",
      models={"XS": _toy_vit(32, 2, 2), "S": _toy_vit(64, 3, 4), "M": _toy_vit(96, 4, 4)},
      data_split="train", data_sizes=[1000, 7000, 50000], total_steps=800, cooldown_at=[100, 200, 400],
      cooldown_steps=80, tasks=["fashion_mnist_heldout", "digits"],
      # The recipe the README's table was measured with (the demo's before its own sweep): upstream sets of 1,000
      # and 7,000 images are seen up to 100 times, where the crop and flip augmentation earns its keep.
      pretrain={"checkpoint_every": 200, "lr": 2e-3, "head_bias_init": -10.0,
                "pp_train": "decode|resize(32)|random_crop(28)|flip_lr|value_range(-1, 1)"})


def quick() -> SweepConfig:
  """A plumbing check on the embedded digits in about a minute (tests, smoke runs): 2 models × 2 data sizes × 2
  lengths. Its models train for seconds, so its numbers say nothing about scaling."""
  return SweepConfig(
      name="quick", base="digits_tiny",
      models={"XXS": _toy_vit(16, 1, 2), "XS": _toy_vit(32, 2, 2)},
      data_split="train", data_sizes=[200, 800], total_steps=40, cooldown_at=[20], cooldown_steps=5,
      tasks=["digits_heldout"], pretrain={"batch_size": 32, "checkpoint_every": 40, "log_every": 5})


CONFIGS = {"default": default, "quick": quick}


def load(name_or_path: str) -> SweepConfig:
  """A named sweep (default, quick) or a TOML file whose keys are SweepConfig fields."""
  if name_or_path in CONFIGS:
    return CONFIGS[name_or_path]()
  if Path(name_or_path).suffix == ".toml":
    try:
      data = tomllib.loads(Path(name_or_path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
      raise SweepError(f"sweep config {name_or_path}: {e}") from None
    try:
      return SweepConfig.from_dict({"name": Path(name_or_path).stem, **data})
    except (TypeError, ValueError) as e:
      raise SweepError(f"sweep config {name_or_path}: {e}") from None
  raise SweepError(f"unknown sweep config {name_or_path!r}; named sweeps: {', '.join(CONFIGS)} (or a .toml file)")


# ----------------------------------------------------------------------------------------------------------------------
# Cells.


def cell_name(model: str, data_size: int) -> str:
  return f"{model}_n{data_size}"


def checkpoint_name(model: str, data_size: int, steps: int) -> str:
  return f"{cell_name(model, data_size)}_s{steps}"


def cell_pretrain_config(config: SweepConfig, model: str, data_size: int) -> pretrain.PretrainConfig:
  base = pretrain_configs.load(config.base).to_dict()
  schedule = {**base["schedule"], "cooldown_steps": config.cooldown_steps}
  overrides = {**config.pretrain, "name": cell_name(model, data_size), "model_name": model,
               "model": dict(config.models[model]), "train_split": f"{config.data_split}[:{data_size}]",
               "total_steps": config.total_steps, "cooldown_at": list(config.cooldown_at), "schedule": schedule}
  try:
    return pretrain.PretrainConfig.from_dict({**base, **overrides})
  except ValueError as e:
    raise SweepError(str(e)) from None


def _cell_checkpoints(exported: dict[str, Path]) -> dict[int, Path]:
  """{training length in steps: checkpoint directory} of the cell's cooled-down checkpoints."""
  by_length = {}
  for name, path in exported.items():
    if name == "final" or name.startswith("cooldown_"):
      card = tomllib.loads(Path(f"{path}.toml").read_text())
      by_length[int(card["training"]["step"])] = path
  return by_length


def _cell_done(config: SweepConfig, results_dir: Path, model: str, data_size: int, task_list) -> bool:
  return all(results.is_complete(results.result_path(results_dir, checkpoint_name(model, data_size, steps), task.name))
             for steps in config.lengths() for task in task_list)


def _check_workdir(config: SweepConfig, workdir: Path) -> None:
  """The first run writes sweep.toml; a rerun must use the same config (its results would otherwise mix)."""
  path = workdir / "sweep.toml"
  wanted = config.to_dict()
  if path.exists():
    held = tomllib.loads(path.read_text())
    if held != tomllib.loads(tomli_w.dumps(wanted)):
      raise SweepError(f"{workdir} holds sweep {held.get('name')!r} with another config; use a new --workdir "
                       "(or the same config to resume)")
    return
  workdir.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write(path, lambda f: f.write(tomli_w.dumps(wanted).encode()))


def _validate(config: SweepConfig) -> None:
  if not config.models or not config.data_sizes or not config.tasks:
    raise SweepError("a sweep needs at least one model, one data size and one task")
  for model in config.models:  # model names become workdir and checkpoint names
    if not fileio.is_safe_name(model):
      raise SweepError(f"model name {model!r} becomes a directory name: {fileio.NAME_RULE}")
  if not all(isinstance(n, int) and not isinstance(n, bool) for n in config.data_sizes):
    raise SweepError(f"data sizes must be integers: {config.data_sizes}")
  if config.cooldown_steps <= 0:
    raise SweepError("cooldown_steps must be > 0: every checkpoint of a sweep is cooled down")
  if len(set(config.lengths())) != len(config.lengths()):
    raise SweepError(f"training lengths {config.lengths()} repeat: a branch plus its cooldown equals total_steps")
  if any(int(n) <= 0 for n in config.data_sizes):
    raise SweepError(f"data sizes must be positive: {config.data_sizes}")


def _check_data_sizes(config: SweepConfig, data_dir: str | None) -> None:
  dataset = pretrain_configs.load(config.base).dataset
  for n in config.data_sizes:
    split = f"{config.data_split}[:{n}]"
    try:
      reader = source.open_split(dataset, split, data_dir)
    except ValueError as e:  # e.g. a slice past the end of the split
      raise SweepError(f"data size {n}: {dataset} {split}: {e}") from None
    if reader.global_stop - reader.global_start != int(n):
      raise SweepError(f"data size {n}: {dataset} {split} has only {reader.global_stop - reader.global_start} "
                       "examples")


def run_sweep(config: SweepConfig, workdir: str, *, data_dir: str | None = None, progress: bool = True,
              mesh=None) -> list[dict]:
  """Runs (or resumes) every cell; returns one row per cell: name, status, seconds, checkpoints."""
  workdir = Path(workdir)
  _validate(config)
  task_list = [tasks.load_task(t) for t in config.tasks]  # unknown tasks fail before any training
  for model, n in config.cells():  # bad fields and data sizes fail before any training too
    cell_pretrain_config(config, model, n)
  _check_data_sizes(config, data_dir)
  _check_workdir(config, workdir)
  mesh = mesh if mesh is not None else distributed.data_mesh()
  results_dir = workdir / "results"
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(results_dir), cache_dir=None, loo=config.loo,
                                   progress=progress)
  rows = []
  for i, (model, n) in enumerate(config.cells()):
    name = cell_name(model, n)
    if _cell_done(config, results_dir, model, n, task_list):
      rows.append({"cell": name, "status": "skipped (done)", "seconds": 0.0})
      continue
    log.info("cell %d/%d: %s", i + 1, len(config.cells()), name)
    rows.append({"cell": name, "status": "done", **_run_cell(config, workdir, model, n, task_list, settings,
                                                             data_dir, progress, mesh)})
  return rows


def _run_cell(config, workdir, model, n, task_list, settings, data_dir, progress, mesh) -> dict:
  t0 = time.perf_counter()
  run_dir = fileio.child(workdir / "runs", cell_name(model, n))
  run = pretrain.build_run(cell_pretrain_config(config, model, n), str(run_dir),
                           data_dir=data_dir, mesh=mesh, progress=progress)
  by_length = _cell_checkpoints(pretrain.train(run))
  t_train = time.perf_counter() - t0
  for steps, path in sorted(by_length.items()):
    subject = subjects.resolve_subject(f"{path}.toml", name=checkpoint_name(model, n, steps))
    for task, status, detail in evaluate.run(subject, task_list, settings, mesh):
      if status == "error":
        raise SweepError(f"{subject.name} / {task}: {detail}")
  seconds = time.perf_counter() - t0
  log.info("cell %s: pre-training %.0f s, evaluation %.0f s", cell_name(model, n), t_train, seconds - t_train)
  return {"seconds": seconds, "train_seconds": t_train, "checkpoints": sorted(by_length)}
