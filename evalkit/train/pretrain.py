"""Pre-training stage: the paper's upstream recipe on a TFDS dataset, yielding frozen ViT checkpoints with cards.

Recipe (docs/protocols.md "Pre-training recipe", "Scaling Vision Transformers"): sigmoid cross-entropy over multi-hot
labels (single-label data become one-hot), MAP head with a zero kernel and bias −log(K) (the paper's −10 for JFT's
~30k classes), big_vision's optimizer chain (`evalkit.train.optim`), rsqrt schedule with warmup and cooldown, and
cooldown *branches*: one long run yields models of several training lengths.

The loop, input stream and resume logic are shared with fine-tuning (`evalkit.train.loop`): a run killed at any
point and rerun ends with bit-identical parameters on CPU.

Workdir layout:
  config.toml                 the resolved config
  state/<step>/               orbax train state (params, optimizer state, step) for resuming
  checkpoints/<name>/         evalkit orbax checkpoints (params + evalkit_meta.json) for evaluation
  checkpoints/<name>.toml     their checkpoint cards (model, step, examples seen, training FLOPs, upstream data, config)
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tomllib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tomli_w

from evalkit import checkpoints, distributed, fileio
from evalkit.train import flops
from evalkit.train import optim
from evalkit.train import loop
from evalkit.data import memory
from evalkit.data import pp as pp_lib
from evalkit.data import source
from evalkit.models import vit
from evalkit.errors import EvalkitError

log = logging.getLogger(__name__)
TrainingDiverged = loop.TrainingDiverged  # re-exported: the pretrain command's NaN error


class WorkdirMismatch(EvalkitError):
  """A workdir whose saved state does not fit the config (one line)."""


class ConfigError(EvalkitError, ValueError):
  """A pre-training config with a field that cannot work (one line naming it)."""


class ConfigFields:
  """from_dict / to_dict for config dataclasses; unknown keys are an error (ValueError) naming the known ones."""
  kind = "config"

  @classmethod
  def from_dict(cls, d: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown {cls.kind} field(s) {unknown}; known: {sorted(known)}")
    return cls(**d)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "float | None": (int, float, type(None)),
          "bool": (bool,), "dict": (dict,), "list": (list,)}


def check_field_types(config) -> None:
  """Each field of a config dataclass holds its annotated type (ValueError naming the field): `batch_size = "x"` or
  `lr = "fast"` fail when the config is read, not steps into a run."""
  for f in dataclasses.fields(config):
    value, allowed = getattr(config, f.name), _TYPES.get(str(f.type))
    wrong_bool = isinstance(value, bool) and bool not in allowed if allowed else False
    if allowed and (not isinstance(value, allowed) or wrong_bool):
      raise ValueError(f"{f.name} must be {f.type}, got {value!r}")


@dataclasses.dataclass
class PretrainConfig(ConfigFields):
  """big_vision-like fields. `model` holds ViT arguments (`variant` and/or width, depth, ...)."""
  name: str = "pretrain"
  model_name: str = ""  # label of the model in reports and scaling plots (default: its size name, e.g. "S")
  model: dict = dataclasses.field(default_factory=lambda: {"variant": "S/16", "pool_type": "map"})
  dataset: str = "imagenet2012"
  train_split: str = "train"
  pp_train: str = "decode|inception_crop(224)|flip_lr|value_range(-1, 1)"
  batch_size: int = 4096
  total_steps: int = 10_000
  seed: int = 0
  # Optimizer (see evalkit.train.optim.make): big_vision's modified Adafactor by default.
  optimizer: str = "bv_adafactor"
  optax: dict = dataclasses.field(default_factory=dict)
  lr: float = 8e-4
  wd: float = 0.03 * 8e-4  # paper: body decay 0.03 in "coefficient × lr" terms
  wd_mults: list = dataclasses.field(default_factory=lambda: [["(.*/)?head/kernel", 100.0], ["(.*/)?kernel", 1.0]])
  grad_clip_norm: float = 1.0
  schedule: dict = dataclasses.field(
      default_factory=lambda: {"decay_type": "rsqrt", "warmup_steps": 10_000, "timescale": 10_000,
                               "cooldown_steps": 50_000})
  # Every sigmoid of the head starts at ≈ 1/K: bias −log(K) for the upstream dataset's K classes (None, the default).
  # The paper's −10 is that value for JFT's ~30k classes; set it explicitly to reproduce the paper's runs.
  head_bias_init: float | None = None
  # Cooldown branches: at each of these steps, branch off and cool the lr down linearly to 0 over `cooldown_steps`.
  cooldown_at: list = dataclasses.field(default_factory=list)
  checkpoint_every: int = 1000
  log_every: int = 10
  cache_images: bool = True  # decode the upstream split into memory once (small datasets)
  kind = "pretrain config"

  def __post_init__(self):
    check_field_types(self)
    if not fileio.is_safe_name(self.name):
      raise ValueError(f"name {self.name!r} names checkpoints and cards: {fileio.NAME_RULE}")
    for key in ("batch_size", "total_steps", "checkpoint_every", "log_every"):
      if getattr(self, key) < 1:
        raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
    if not self.lr > 0:
      raise ValueError(f"lr must be > 0, got {self.lr}")
    # A branch must end by total_steps: past it the main schedule's own cooldown ramp turns negative.
    cooldown = int(self.schedule.get("cooldown_steps", 0))
    if self.cooldown_at and cooldown <= 0:
      raise ValueError("cooldown_at needs schedule.cooldown_steps > 0 (the length of each branch's cooldown)")
    bad = [s for s in self.cooldown_at if not 0 < int(s) <= self.total_steps - cooldown]
    if bad:
      raise ValueError(f"cooldown_at {bad}: a branch plus its {cooldown}-step cooldown must end inside the run "
                       f"(0 < step ≤ total_steps − cooldown_steps = {self.total_steps - cooldown})")


# ----------------------------------------------------------------------------------------------------------------------
# Model and the run.


def init_params(model, image_size, seed: int, head_bias_init: float):
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *image_size, 3)))["params"]
  if "head" in params:
    # Bias −10: every class starts at p ≈ 4.5e-5, as fits a sigmoid loss over many mostly-negative labels.
    params = {**params, "head": {**params["head"], "bias": jnp.full_like(params["head"]["bias"], head_bias_init)}}
  return params


@dataclasses.dataclass
class Run:
  """Everything a training run needs, built once from the config."""
  config: PretrainConfig
  workdir: Path
  model: vit.VisionTransformer
  image_size: tuple[int, int]
  num_classes: int
  reader: Any
  preprocess: pp_lib.Preprocess
  stream: loop.TrainStream
  mesh: Any
  progress: bool = True
  workers: int | None = None  # decoding + augmentation processes (None: as many as pay)

  @property
  def flops_per_example(self) -> float:
    return flops.forward_flops(self.model, self.image_size)

  @functools.cached_property
  def param_count(self) -> int:
    return vit.param_count(self.model, self.image_size)

  @property
  def head_bias_init(self) -> float:
    """The config's head bias, or −log(K) for this dataset's K classes when the config leaves it unset."""
    if self.config.head_bias_init is not None:
      return self.config.head_bias_init
    return -math.log(self.num_classes)

  @property
  def model_name(self) -> str:
    return self.config.model_name or vit.size_name(self.model) or f"w{self.model.width}d{self.model.depth}"


def build_run(config: PretrainConfig, workdir: str, *, data_dir: str | None = None, mesh=None,
              progress: bool = True, workers: int | None = None) -> Run:
  workdir = Path(workdir)
  mesh = mesh if mesh is not None else distributed.data_mesh()
  if config.batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {mesh.devices.size} devices")
  # Every process may need any example of a step's global batch: open the whole split (random access).
  reader = source.open_split(config.dataset, config.train_split, data_dir)
  if config.cache_images:
    reader = memory.load_into_memory(reader)
  preprocess = pp_lib.parse(config.pp_train)
  sample = next(reader.iter_id_batches([(reader.ids[:1], (config.seed, 0))], preprocess))
  image_size = tuple(int(s) for s in sample["image"].shape[1:3])
  try:
    model = vit.build_checked(lambda: vit.ViT(num_classes=reader.num_classes, **config.model), image_size)
  except ValueError as e:
    raise ConfigError(f"pretrain config {config.name}: bad model {config.model}: {str(e)[:300]}") from None
  stream = loop.TrainStream(np.arange(reader.global_start, reader.global_stop), config.batch_size, config.seed)
  return Run(config, workdir, model, image_size, reader.num_classes, reader, preprocess, stream, mesh, progress,
             workers)


def _export(run: Run, params, step: int, name: str, extra: dict | None = None) -> Path:
  """An evalkit checkpoint (params only) plus its card, for `evalkit eval`."""
  out_dir = run.workdir / "checkpoints"
  examples = step * run.config.batch_size
  training = {"step": step, "examples_seen": examples, "upstream_dataset": run.config.dataset,
              "upstream_split": run.config.train_split, "upstream_examples": len(run.stream.ids),
              "config": run.config.name, "model_name": run.model_name, "params": run.param_count,
              "flops_per_example_forward": run.flops_per_example,
              "train_flops": flops.train_flops(run.model, run.image_size, examples), **(extra or {})}
  model_cfg = vit.model_config(run.model)
  if jax.process_index() == 0:
    checkpoints.save_orbax(out_dir / name, params, {"model": model_cfg, "training": training}, overwrite=True)
    card = {"name": f"{run.config.name}_{name}", "description": f"{run.config.name}: {name} of evalkit pretrain",
            "format": "orbax", "path": name, "resolution": run.image_size[0],
            "source": f"evalkit pretrain, config {run.config.name!r}, upstream {run.config.dataset} "
                      f"{run.config.train_split}",
            "model": {k: v for k, v in model_cfg.items() if v is not None}, "training": training}
    fileio.atomic_write(_card(run, name), lambda f: f.write(tomli_w.dumps(card).encode()))
  return out_dir / name


def export_initial(run: Run, name: str = "init") -> Path:
  """The run's step-0 parameters as a checkpoint with card: the random-init baseline of the same architecture."""
  params = init_params(run.model, run.image_size, run.config.seed, run.head_bias_init)
  return _export(run, params, 0, name)


def train(run: Run, *, stop_at: int | None = None) -> dict[str, Path]:
  """Trains (resuming from the workdir's last state); exports checkpoints and cooldown branches on the way.

  The main run is trained in segments ending at each branch step; at a branch step the state is saved, the branch
  is trained from a copy and exported, then the main run goes on. `stop_at` ends early at that step (tests use it
  to simulate an interrupted run). Returns {name: exported checkpoint directory}.
  """
  cfg = run.config
  run.workdir.mkdir(parents=True, exist_ok=True)
  _check_config(run)
  config_toml = tomli_w.dumps(_toml_safe(cfg.to_dict())).encode()
  fileio.atomic_write(run.workdir / "config.toml", lambda f: f.write(config_toml))
  params = init_params(run.model, run.image_size, cfg.seed, run.head_bias_init)
  tx, schedule = optim.make(cfg.to_dict(), params, cfg.total_steps)
  log.info("%s: optimizer %s", cfg.name, optim.describe(cfg.to_dict()))
  manager = loop.state_manager(run.workdir / "state")
  state = loop.restore_latest(manager, loop.init_state(params, tx), run.mesh)

  end = cfg.total_steps if stop_at is None else min(stop_at, cfg.total_steps)
  branch_steps = sorted({int(s) for s in cfg.cooldown_at})  # validated by PretrainConfig
  save_steps = set(range(cfg.checkpoint_every, cfg.total_steps + 1, cfg.checkpoint_every))
  save_steps |= {cfg.total_steps, end, *branch_steps}
  step_fn = _train_step(run, tx)
  export_step = lambda st, step: _export(run, st["params"], step, f"step_{step}")
  resumed_at = int(state["step"])
  if resumed_at in save_steps and not _card(run, f"step_{resumed_at}").exists():
    export_step(state, resumed_at)  # a workdir whose state was saved before its export (older evalkit)
  exported = {}
  for segment_end in [*(b for b in branch_steps if b < cfg.total_steps), cfg.total_steps]:
    state = _loop(run, state, step_fn, schedule, min(segment_end, end), manager=manager, save_steps=save_steps,
                  on_save=export_step, label="pretrain")
    if int(state["step"]) < segment_end:
      break  # stopped early
    if segment_end in branch_steps:
      exported[f"cooldown_{segment_end}"] = _branch(run, state, segment_end)
  if int(state["step"]) == cfg.total_steps:
    exported["final"] = run.workdir / "checkpoints" / f"step_{cfg.total_steps}"
  return exported


# Config fields a resumed run may change: they decide what is saved and logged, never the trained weights.
RESUMABLE_CHANGES = ("cooldown_at", "checkpoint_every", "log_every", "cache_images")


def _check_config(run: Run) -> None:
  """A workdir with saved state resumes only the config it was started with (else its weights would mix two runs)."""
  held_file = run.workdir / "config.toml"
  if not held_file.exists() or not (run.workdir / "state").exists():
    return
  try:
    held = tomllib.loads(held_file.read_text())
  except (OSError, tomllib.TOMLDecodeError) as e:
    raise WorkdirMismatch(f"{held_file}: unreadable ({e}); use a new --workdir") from None
  wanted = tomllib.loads(tomli_w.dumps(_toml_safe(run.config.to_dict())))
  changed = sorted(k for k in set(held) | set(wanted) if k not in RESUMABLE_CHANGES and held.get(k) != wanted.get(k))
  if changed:
    raise WorkdirMismatch(f"{run.workdir} was trained with another config (fields {', '.join(changed)} differ, "
                          f"e.g. {changed[0]} = {held.get(changed[0])!r} there, {wanted.get(changed[0])!r} now); use "
                          "a new --workdir, or the same config to resume")


def _card(run: Run, name: str) -> Path:
  """The card of an exported checkpoint, written last: its presence marks the export complete."""
  return run.workdir / "checkpoints" / f"{name}.toml"


def _branch(run: Run, main_state, branch_step: int) -> Path:
  """Cooldown branch: from the main state at `branch_step`, the lr cooled linearly to 0 over `cooldown_steps`."""
  cfg = run.config
  name = f"cooldown_{branch_step}"
  if _card(run, name).exists():
    return run.workdir / "checkpoints" / name  # finished before an interruption
  if int(main_state["step"]) != branch_step:  # e.g. a branch step added to a workdir already trained past it
    raise WorkdirMismatch(f"{run.workdir}: cannot branch at step {branch_step}, the run's state is at step "
                          f"{int(main_state['step'])}; use a new --workdir")
  cooldown = int(cfg.schedule["cooldown_steps"])
  tx, schedule = optim.make(cfg.to_dict(), main_state["params"], cfg.total_steps, branch=(branch_step, cooldown))
  state = jax.tree.map(jnp.copy, main_state)  # the train step donates its input; the main run keeps its own
  end = branch_step + cooldown
  state = _loop(run, state, _train_step(run, tx), schedule, end, label=name)
  return _export(run, state["params"], end, name, {"branch_of_step": branch_step, "cooldown_steps": cooldown})


def _train_step(run: Run, tx):
  return loop.make_train_step(run.model, tx, run.mesh, loss=loop.sigmoid_xent, num_classes=run.num_classes)


def _loop(run: Run, state, step_fn, schedule, end: int, **kw):
  return loop.run_loop(state, step_fn, run.reader, run.preprocess, run.stream, end, mesh=run.mesh,
                       schedule=schedule, log_every=run.config.log_every, progress=run.progress,
                       workers=run.workers, **kw)


def _toml_safe(d):
  """TOML has no null: drop None values (recursively)."""
  if isinstance(d, dict):
    return {k: _toml_safe(v) for k, v in d.items() if v is not None}
  if isinstance(d, (list, tuple)):
    return [_toml_safe(v) for v in d]
  return d
