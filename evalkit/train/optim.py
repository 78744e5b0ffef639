"""Optimizers and learning-rate schedules — big_vision's recipe (docs/protocols.md: "Fine-tuning", "Pre-training
recipe"), built from optax pieces.

The update chain is big_vision's (`big_vision/optax.py: make`), in this order:

  clip_by_global_norm(grad_clip_norm) -> optimizer scaling -> scale(lr) -> + wd·mult(path)·θ -> scale_by_schedule(m)
  -> scale(-1)

so  θ ← θ − m(t)·(lr·u_t + wd·mult(path)·θ):  weight decay follows the schedule m but is NOT multiplied by the lr.
big_vision configs therefore state `wd` in absolute terms (ViT-g: `wd = 0.03 * 8e-4`, i.e. the paper's "0.03 × lr").

Optimizers (`config.optimizer`, kwargs in `config.optax`):
  * "bv_adafactor": big_vision's modified Adafactor — factored second moment (`optax.scale_by_factored_rms`) for tensors
    whose two largest dims are both ≥ 32, eps 1e-30, β2(t) = min(0.999, 1 − (t+1)^−0.8); then momentum as
    `optax.ema(0.9, debias=False)` stored in bfloat16; no parameter-scale lr, no update clipping by default.
  * "momentum_hp": SGD momentum, `optax.trace(0.9)` with a bfloat16 buffer (the paper's fine-tuning optimizer).
  * "adam_hp": `optax.scale_by_adam(0.9, 0.999, 1e-8)` with the first moment stored in bfloat16.

Note on bfloat16 buffers (a property of optax, hence of big_vision too): the stored buffer is multiplied by the decay
as a weakly-typed Python float, i.e. in bfloat16, so the decay applied to it is bf16(0.9) = 0.8984375, while the
`(1 − 0.9)·g` term and the emitted update stay float32 (the rounding to bf16 happens only when the buffer is stored).

Schedule multiplier m(t) (`big_vision/utils.py: create_learning_rate_schedule`, base 1):
  m(t) = decay(t) · min(1, t/w) [if w > 0] · min(1, (T − t)/c) [if c > 0],   p = clip((t − w)/(T − w), 0, 1)
  decay: rsqrt 1/sqrt(1 + (t − w)/τ) for t ≥ w, else 1 | cosine ½(1 + cos πp) | linear 1 − p | constant 1.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[Any], jax.Array]

# `(.*/)?kernel` equals big_vision's default `.*/kernel$` on every nested name (incl. top-level `head/kernel`, where
# `.*` matches "head"); the optional group additionally covers a bare top-level "kernel".
DEFAULT_WD_MULTS = (("(.*/)?kernel", 1.0),)
DEFAULT_RSQRT_TIMESCALE = 10_000  # big_vision's bwd-compat default.
_SCHEDULE_KEYS = frozenset({"decay_type", "warmup_steps", "cooldown_steps", "timescale"})
_DECAY_TYPES = ("rsqrt", "cosine", "linear", "constant")


# ----------------------------------------------------------------------------------------------------------------------
# Config access: plain dicts and ml_collections-like objects alike.


def _as_dict(section) -> dict:
  if section is None:
    return {}
  if hasattr(section, "to_dict"):  # ml_collections.ConfigDict
    return section.to_dict()
  return dict(section)


def _get(config, key: str, default=None):
  value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
  return default if value is None else value


def _dtype(dtype):
  return None if dtype is None else jnp.dtype(dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Learning-rate schedule.


def _schedule_settings(schedule_config) -> dict:
  """Validated schedule fields with defaults; unknown keys are errors so a typo cannot silently change training."""
  cfg = _as_dict(schedule_config)
  unknown = set(cfg) - _SCHEDULE_KEYS
  if unknown:
    raise ValueError(f"Unknown schedule keys {sorted(unknown)}; known: {sorted(_SCHEDULE_KEYS)}")
  settings = {
      "decay_type": cfg.get("decay_type") or "constant",  # big_vision's default "stair" without steps is constant.
      "warmup_steps": int(cfg.get("warmup_steps") or 0),
      "cooldown_steps": int(cfg.get("cooldown_steps") or 0),
      "timescale": float(cfg.get("timescale") or DEFAULT_RSQRT_TIMESCALE),
  }
  if settings["decay_type"] not in _DECAY_TYPES:
    raise ValueError(f"Unknown decay_type {settings['decay_type']!r}; known: {_DECAY_TYPES}")
  return settings


def _decay(t, decay_type: str, warmup_steps: int, total_steps: int, timescale: float):
  """The schedule's shape after warmup, before the warmup/cooldown ramps are applied."""
  if decay_type == "rsqrt":
    # Equal to 1 at t = w and flat during warmup (big_vision with shift = 0).
    return jnp.where(t >= warmup_steps, 1.0 / jnp.sqrt(1.0 + (t - warmup_steps) / timescale), 1.0)
  if decay_type == "constant":
    return jnp.ones_like(t)
  progress = jnp.clip((t - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
  if decay_type == "cosine":
    return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return 1.0 - progress  # linear


def make_schedule(schedule_config, total_steps: int) -> Schedule:
  """Returns m: step -> multiplier in [0, 1], big_vision's `create_learning_rate_schedule` with base 1.

  m(t) = decay(t) · min(1, t/w) · min(1, (T − t)/c), the ramps only when w > 0 / c > 0 (formulas in the module doc).
  The first optimizer step uses t = 0, so with warmup it leaves the params unchanged (as in big_vision).
  """
  s = _schedule_settings(schedule_config)
  warmup, cooldown = s["warmup_steps"], s["cooldown_steps"]
  # big_vision's early check; 0- and 1-step runs (eval/debug) are allowed.
  if total_steps > 1 and warmup >= total_steps:
    raise ValueError(f"warmup_steps ({warmup}) must be < total_steps ({total_steps})")

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    m = _decay(t, s["decay_type"], warmup, total_steps, s["timescale"])
    if warmup:
      m = m * jnp.minimum(1.0, t / warmup)
    if cooldown:
      m = m * jnp.minimum(1.0, (total_steps - t) / cooldown)
    return jnp.asarray(m, jnp.float32)

  return schedule


def branch_schedule(base_schedule_config, total_steps: int, branch_step: int, cooldown_steps: int) -> Schedule:
  """The paper's cooldown branch: the main schedule up to `branch_step`, then a linear ramp to 0.

  branch(t) = main(t) · clip((s + c − t) / c, 0, 1),   main = make_schedule(base_schedule_config, total_steps),
  s = branch_step, c = cooldown_steps. So branch(t) = main(t) for t ≤ s, branch(s + c) = 0 exactly, and it stays 0
  after. For rsqrt/constant decay with s + c ≤ T − (main cooldown) this is exactly what big_vision runs when the
  branch is relaunched from the step-s checkpoint with `total_steps = s + c, cooldown_steps = c`: the cooldown ramp
  multiplies the still-decaying main schedule (for rsqrt, between s and s + c the multiplier is rsqrt(t) × the linear
  ramp, not a straight line from main(s)). Unlike a relaunch, cosine/linear keep the main run's progress p(t).
  """
  if cooldown_steps <= 0 or branch_step < 0:
    raise ValueError(f"Need branch_step >= 0 and cooldown_steps > 0, got {branch_step}, {cooldown_steps}")
  main = make_schedule(base_schedule_config, total_steps)
  end = branch_step + cooldown_steps

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    return main(step) * jnp.clip((end - t) / cooldown_steps, 0.0, 1.0)

  return schedule


# ----------------------------------------------------------------------------------------------------------------------
# Per-parameter weight-decay multipliers.


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_name(path) -> str:
  """'/'-joined name of a pytree path, e.g. `Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel` (no leading /)."""
  return "/".join(_key_name(k) for k in path)


def _compile_patterns(patterns: Sequence[str]) -> list[re.Pattern]:
  for pattern in patterns:
    # big_vision's `check_and_compile_patterns`: names never start with "/", so such a pattern would match nothing.
    if pattern.startswith("/"):
      raise ValueError(f"Parameter names never start with '/': {pattern!r}")
  return [re.compile(p) for p in patterns]


def _first_match(params, patterns: Sequence[str]):
  """Tree of the index of the first pattern that fullmatches each leaf's name, or -1 (big_vision `make_mask_trees`)."""
  compiled = _compile_patterns(patterns)

  def index(path, _):
    name = param_name(path)
    return next((i for i, p in enumerate(compiled) if p.fullmatch(name)), -1)

  return jax.tree_util.tree_map_with_path(index, params)


def _weight_decay_txs(params, wd: float, wd_mults) -> list[optax.GradientTransformation]:
  """One masked `add_decayed_weights(wd·mult)` per pattern, as in big_vision; leaves match at most one mask."""
  if not wd:
    return []
  wd_mults = list(DEFAULT_WD_MULTS if wd_mults is None else wd_mults)
  first = _first_match(params, [p for p, _ in wd_mults])
  return [
      optax.add_decayed_weights(wd * float(mult), mask=jax.tree.map(lambda j, i=i: j == i, first))
      for i, (_, mult) in enumerate(wd_mults)
  ]


# ----------------------------------------------------------------------------------------------------------------------
# Optimizers (the "optimizer scaling" link of the chain).


def bv_adafactor(min_dim_size_to_factor: int = 32, decay_rate: float = 0.8, decay_offset: int = 0,
                 beta2_cap: float = 0.999, clipping_threshold: float | None = None, momentum: float | None = 0.9,
                 momentum_dtype="bfloat16", eps: float = 1e-30) -> optax.GradientTransformation:
  """big_vision's modified Adafactor (`big_vision/optax.py: scale_by_adafactor`; docs/protocols.md, "Pre-training
  recipe")."""

  def capped_beta2(step, exponent):
    # Plain Adafactor's β2 → 1 freezes the second moment; the paper caps it (Zhai et al. 2021, §3.4).
    t = jnp.asarray(step, jnp.float32) + 1.0
    return jnp.minimum(beta2_cap, 1.0 - t**(-exponent))

  second_moment = optax.scale_by_factored_rms(
      factored=True, decay_rate=decay_rate, step_offset=decay_offset,
      min_dim_size_to_factor=min_dim_size_to_factor, epsilon=eps, decay_rate_fn=capped_beta2)
  clip = optax.clip_by_block_rms(clipping_threshold) if clipping_threshold else optax.identity()
  first_moment = (optax.ema(momentum, debias=False, accumulator_dtype=_dtype(momentum_dtype))
                  if momentum else optax.identity())
  return optax.chain(second_moment, clip, first_moment)


def momentum_hp(momentum: float = 0.9, momentum_dtype="bfloat16", nesterov: bool = False):
  """SGD momentum with a half-precision buffer (big_vision `momentum_hp`); the lr is applied later in the chain."""
  return optax.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=_dtype(momentum_dtype))


def adam_hp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, mu_dtype="bfloat16"):
  """Adam's scaling with the first moment stored in bfloat16 (halves its memory; the second moment stays float32)."""
  return optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=_dtype(mu_dtype))


OPTIMIZERS = {"bv_adafactor": bv_adafactor, "momentum_hp": momentum_hp, "adam_hp": adam_hp}
# big_vision spellings, so its configs port unchanged.
_NAME_ALIASES = {"big_vision.scale_by_adafactor": "bv_adafactor", "big_vision.momentum_hp": "momentum_hp"}
_KWARG_ALIASES = {"dtype_momentum": "momentum_dtype", "dtype": "momentum_dtype"}


def _optimizer_name(config) -> str:
  name = _get(config, "optimizer") or _get(config, "optax_name")
  name = _NAME_ALIASES.get(name, name)
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
  return name


def _optimizer_kwargs(config, name: str) -> dict:
  """`config.optax` with big_vision's kwarg spellings mapped to ours; unknown kwargs are errors."""
  kwargs = {_KWARG_ALIASES.get(k, k): v for k, v in _as_dict(_get(config, "optax")).items()}
  allowed = inspect.signature(OPTIMIZERS[name]).parameters
  unknown = set(kwargs) - set(allowed)
  if unknown:
    raise ValueError(f"Unknown {name} kwargs {sorted(unknown)}; known: {sorted(allowed)}")
  return kwargs


# ----------------------------------------------------------------------------------------------------------------------
# The full chain.


def _base_lr(config) -> float:
  lr = _get(config, "lr")
  if lr is None:
    raise ValueError("config.lr (the base learning rate) is required")
  return float(lr)


def make(config, params, total_steps: int, *,
         branch: tuple[int, int] | None = None) -> tuple[optax.GradientTransformation, Schedule]:
  """Returns (tx, lr_fn): big_vision's update chain for `config`, and step -> lr·m(step) for logging.

  Config fields: optimizer, optax (kwargs), lr, wd (default 0), wd_mults (default DEFAULT_WD_MULTS), grad_clip_norm
  (None/0 = off), schedule (decay_type, warmup_steps, cooldown_steps, timescale); other fields are ignored. `params`
  only supplies the names (and tree structure) for the weight-decay masks. `branch=(branch_step, cooldown_steps)`
  swaps in `branch_schedule`; the state layout is unchanged, so a branch continues from the main run's opt state.
  """
  name = _optimizer_name(config)
  lr = _base_lr(config)
  if branch is None:
    schedule = make_schedule(_get(config, "schedule"), total_steps)
  else:
    schedule = branch_schedule(_get(config, "schedule"), total_steps, *branch)
  clip_norm = _get(config, "grad_clip_norm")
  tx = optax.chain(
      # identity keeps the state layout independent of clipping, as in big_vision.
      optax.clip_by_global_norm(clip_norm) if clip_norm else optax.identity(),
      OPTIMIZERS[name](**_optimizer_kwargs(config, name)),
      optax.scale(lr),
      *_weight_decay_txs(params, float(_get(config, "wd", 0.0)), _get(config, "wd_mults")),
      optax.scale_by_schedule(schedule),
      optax.scale(-1.0),
  )
  return tx, lambda step: lr * schedule(step)


def _shown(sched: dict) -> dict:
  """Schedule settings worth printing: timescale only matters for rsqrt."""
  hidden = {"decay_type"} | ({"timescale"} if sched["decay_type"] != "rsqrt" else set())
  return {k: v for k, v in sched.items() if k not in hidden}


def describe(config) -> str:
  """One line naming every link of the chain with its resolved settings (defaults filled in)."""
  name = _optimizer_name(config)
  defaults = {k: p.default for k, p in inspect.signature(OPTIMIZERS[name]).parameters.items()}
  kwargs = {**defaults, **_optimizer_kwargs(config, name)}
  sched = _schedule_settings(_get(config, "schedule"))
  clip_norm = _get(config, "grad_clip_norm")
  wd = float(_get(config, "wd", 0.0))
  wd_mults = _get(config, "wd_mults")
  wd_mults = list(DEFAULT_WD_MULTS if wd_mults is None else wd_mults)
  links = [
      f"clip_by_global_norm({clip_norm})" if clip_norm else "no grad clip",
      f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})",
      f"x lr {_base_lr(config):g}",
      (f"+ {wd:g}*mult*param, mult: {', '.join(f'{p!r}={float(m):g}' for p, m in wd_mults)} (first match; else 0)"
       if wd else "no weight decay"),
      f"x schedule {sched['decay_type']}(" + ", ".join(f"{k}={v:g}" for k, v in _shown(sched).items()) + ")",
      "x -1",
  ]
  return " -> ".join(links)
