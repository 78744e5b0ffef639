"""Tests for evalkit.train.optim: the optax chains against an independent float64 numpy reference of the recipe in
docs/protocols.md ("Pre-training recipe").

The reference re-derives every formula (global-norm clip, Adafactor's factored second moment with the capped β2,
momentum / Adam moments, lr, decoupled weight decay × schedule) without touching optax or evalkit internals. Two
facts of optax's bfloat16 buffers are modelled explicitly, because they are part of what big_vision runs:
  * the stored buffer is multiplied by the decay in bfloat16 arithmetic (a weakly-typed Python float times a bf16
    array stays bf16), so the decay applied to it is bf16(0.9) = 0.8984375; the (1 − β)·g term is float32, and the
    update emitted at a step is the unrounded new moment — it is rounded to bf16 only when stored;
  * on CPU, XLA does not round that bf16 product before adding (pinned to CPU below).
The bf16 rounding is discontinuous, so float32-vs-float64 noise can flip the rounding of a rare element by one bf16
ulp. Each step therefore checks the stored buffers agree to one ulp (flips rare), then adopts optax's buffer, so one
flip cannot snowball and the params can be compared at float32 precision.
"""
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from evalkit.train import optim

BF16 = ml_dtypes.bfloat16
BF16_NINE_TENTHS = float(BF16(0.9))  # 0.8984375

# name -> shape. The factored ones have their two largest dims ≥ 32 (48×40 and the 3-D 40×2×36).
SHAPES = {
    "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": (48, 40),
    "Transformer/encoderblock_0/MlpBlock_0/Dense_0/bias": (40,),
    "Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel": (8, 40),
    "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel": (40, 2, 36),
    "Transformer/encoderblock_0/LayerNorm_0/scale": (40,),
    "pos_embedding": (1, 4, 40),
    "head/kernel": (40, 10),
    "head/bias": (10,),
}
# Written out by hand (not via the optimizer's masks) for wd_mults [("head/kernel", 100), (".*/kernel", 1)].
WD_MULT = {name: (100.0 if name == "head/kernel" else 1.0 if name.endswith("/kernel") else 0.0) for name in SHAPES}
WD_MULTS = [("head/kernel", 100.0), (".*/kernel", 1.0)]


@pytest.fixture(autouse=True)
def _on_cpu():
  # The bf16 product rounding above is the CPU behaviour; pin it so the test means the same on an accelerator host.
  with jax.default_device(jax.devices("cpu")[0]):
    yield


# ----------------------------------------------------------------------------------------------------------------------
# Helpers: flat {name: array} <-> nested params.


def _nest(flat):
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value, jnp.float32)
  return tree


def _flat(tree):
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in leaves}


def _random_params(rng):
  return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def _random_grads(rng, t):
  # Every third step small (global norm ≈ 0.4 < 1: no clipping), otherwise large (norm ≈ 70: clipped).
  scale = 0.005 if t % 3 == 0 else 1.0
  return {name: (scale * rng.normal(size=shape)).astype(np.float32) for name, shape in SHAPES.items()}


# ----------------------------------------------------------------------------------------------------------------------
# The independent reference.


def ref_multiplier(t, total, warmup=0, cooldown=0, decay="rsqrt", timescale=10_000):
  """docs/protocols.md ("Pre-training recipe") / big_vision's create_learning_rate_schedule, written directly from the
  formulas."""
  if decay == "rsqrt":
    m = 1.0 / math.sqrt(1.0 + (t - warmup) / timescale) if t >= warmup else 1.0
  else:
    p = min(max((t - warmup) / (total - warmup), 0.0), 1.0)
    m = {"cosine": 0.5 * (1.0 + math.cos(math.pi * p)), "linear": 1.0 - p, "constant": 1.0}[decay]
  if warmup:
    m *= min(1.0, t / warmup)
  if cooldown:
    m *= min(1.0, (total - t) / cooldown)
  return m


def _clip(grads, max_norm):
  norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
  if max_norm and norm >= max_norm:
    return {k: g * (max_norm / norm) for k, g in grads.items()}, True
  return grads, False


def _factored_axes(shape, min_dim=32):
  """(second largest axis, largest axis) if both are ≥ min_dim, else None."""
  if len(shape) < 2:
    return None
  order = sorted(range(len(shape)), key=lambda i: shape[i])
  return (order[-2], order[-1]) if shape[order[-2]] >= min_dim else None


class Reference:
  """float64 numpy re-implementation of the three chains; bf16 buffers rounded where optax stores them."""

  def __init__(self, kind, params, *, lr, wd, clip, schedule, beta2_cap=0.999):
    self.kind, self.lr, self.wd, self.clip, self.schedule = kind, lr, wd, clip, schedule
    self.beta2_cap = beta2_cap
    self.params = {k: v.astype(np.float64) for k, v in params.items()}
    self.stored_mu = {k: np.zeros_like(v) for k, v in self.params.items()}  # bf16 values, held in float64
    self.second = {k: None for k in params}  # Adafactor: (row, col) or v; Adam: ν
    self.t = 0
    self.clipped_steps = 0

  def _adafactor(self, name, g):
    """Adafactor's normalised gradient g/sqrt(v̂), v̂ from EMAs of g² + eps with β2(t) = min(cap, 1 − (t+1)^−.8)."""
    beta2 = min(self.beta2_cap, 1.0 - (self.t + 1.0) ** -0.8)
    g2 = g * g + 1e-30
    axes = _factored_axes(g.shape)
    if axes is None:
      prev = self.second[name] if self.second[name] is not None else 0.0
      v_hat = self.second[name] = beta2 * prev + (1 - beta2) * g2
    else:
      second, largest = axes
      prev_r, prev_c = self.second[name] if self.second[name] is not None else (0.0, 0.0)
      r = beta2 * prev_r + (1 - beta2) * g2.mean(axis=largest, keepdims=True)  # one value per "row"
      c = beta2 * prev_c + (1 - beta2) * g2.mean(axis=second, keepdims=True)  # one value per "column"
      self.second[name] = (r, c)
      # Shazeer & Stern's V̂ = R·C / sum(R), with means instead of sums. mean(r) over the row axis equals mean(c)
      # over the column axis (both are the EMA of mean(g²)), so optax normalising by the other one is the same thing.
      v_hat = r * c / r.mean(axis=second, keepdims=True)
    return g / np.sqrt(v_hat)

  def _direction(self, name, g):
    """The optimizer's update for one leaf (before lr), and the new unrounded first moment."""
    if self.kind == "bv_adafactor":
      mu = 0.1 * self._adafactor(name, g) + BF16_NINE_TENTHS * self.stored_mu[name]  # ema, no debias
      return mu, mu
    if self.kind == "momentum_hp":
      mu = g + BF16_NINE_TENTHS * self.stored_mu[name]  # trace: g + β·buffer
      return mu, mu
    k = self.t + 1  # adam_hp; bias correction uses the exact 0.9 (computed in float32 from the Python float).
    mu = 0.1 * g + BF16_NINE_TENTHS * self.stored_mu[name]
    nu = self.second[name] = 0.001 * g * g + 0.999 * (self.second[name] if self.second[name] is not None else 0.0)
    return (mu / (1 - 0.9**k)) / (np.sqrt(nu / (1 - 0.999**k)) + 1e-8), mu

  def step(self, grads):
    grads, clipped = _clip({k: g.astype(np.float64) for k, g in grads.items()}, self.clip)
    self.clipped_steps += clipped
    m = self.schedule(self.t)
    for name, g in grads.items():
      direction, mu = self._direction(name, g)
      self.stored_mu[name] = mu.astype(np.float32).astype(BF16).astype(np.float64)
      theta = self.params[name]
      self.params[name] = theta - m * (self.lr * direction + self.wd * WD_MULT[name] * theta)
    self.t += 1

  def adopt_buffers(self, optax_mu):
    """Checks optax's stored bf16 buffer against ours (≤ 1 bf16 ulp, rare flips), then adopts it (see module doc)."""
    flips = 0
    for name, ours in self.stored_mu.items():
      theirs = np.asarray(optax_mu[name]).astype(np.float64)
      np.testing.assert_allclose(theirs, ours, rtol=2**-7, atol=1e-30, err_msg=name)
      flips += int(np.sum(theirs != ours))
      self.stored_mu[name] = theirs
    assert flips <= 0.001 * sum(v.size for v in self.stored_mu.values()), flips


def _run_against_reference(config, kind, mu_field, steps, total_steps, schedule, seed=0, beta2_cap=0.999):
  rng = np.random.default_rng(seed)
  params = _random_params(rng)
  tx, _ = optim.make(config, _nest(params), total_steps)
  ref = Reference(kind, params, lr=config["lr"], wd=config.get("wd", 0.0), clip=config.get("grad_clip_norm"),
                  schedule=schedule, beta2_cap=beta2_cap)

  @jax.jit
  def update(p, state, g):
    updates, state = tx.update(g, state, p)
    return optax.apply_updates(p, updates), state

  jparams = _nest(params)
  state = tx.init(jparams)
  for t in range(steps):
    grads = _random_grads(rng, t)
    jparams, state = update(jparams, state, _nest(grads))
    ref.step(grads)
    ref.adopt_buffers(_flat(optax.tree_utils.tree_get(state, mu_field)))
    got = _flat(jparams)
    for name in SHAPES:
      np.testing.assert_allclose(got[name], ref.params[name], rtol=1e-5, atol=1e-6, err_msg=f"step {t} {name}")
  return ref


# ----------------------------------------------------------------------------------------------------------------------
# The chains, step by step.


# 1 − (t+1)^−0.8 only reaches 0.999 after ~5600 steps; a cap of 0.85 binds from step 10 on, so the cap is tested too.
@pytest.mark.parametrize("beta2_cap", [0.999, 0.85])
def test_bv_adafactor_matches_reference_for_20_steps(beta2_cap):
  config = {
      "optimizer": "bv_adafactor", "lr": 0.05, "wd": 1e-3, "wd_mults": WD_MULTS, "grad_clip_norm": 1.0,
      "optax": {"beta2_cap": beta2_cap, "decay_rate": 0.8, "min_dim_size_to_factor": 32, "eps": 1e-30, "momentum": 0.9},
      "schedule": {"decay_type": "rsqrt", "warmup_steps": 5, "cooldown_steps": 6, "timescale": 4},
  }
  schedule = lambda t: ref_multiplier(t, 20, warmup=5, cooldown=6, decay="rsqrt", timescale=4)
  ref = _run_against_reference(config, "bv_adafactor", "ema", steps=20, total_steps=20, schedule=schedule,
                               beta2_cap=beta2_cap)
  assert 0 < ref.clipped_steps < 20  # both branches of the clip were exercised


def test_bv_adafactor_factors_exactly_the_big_tensors():
  params = _nest(_random_params(np.random.default_rng(0)))
  tx, _ = optim.make({"optimizer": "bv_adafactor", "lr": 1.0}, params, 10)
  factored = _flat(optax.tree_utils.tree_get(tx.init(params), "v_row"))
  for name, shape in SHAPES.items():
    assert (factored[name].shape != (1,)) == (_factored_axes(shape) is not None), name


def test_momentum_hp_matches_reference():
  config = {"optimizer": "momentum_hp", "lr": 0.01, "wd": 1e-3, "wd_mults": WD_MULTS, "grad_clip_norm": 1.0,
            "optax": {"momentum": 0.9, "momentum_dtype": "bfloat16"},
            "schedule": {"decay_type": "cosine", "warmup_steps": 2}}
  schedule = lambda t: ref_multiplier(t, 10, warmup=2, decay="cosine")
  _run_against_reference(config, "momentum_hp", "trace", steps=8, total_steps=10, schedule=schedule, seed=1)


def test_adam_hp_matches_reference():
  config = {"optimizer": "adam_hp", "lr": 0.01, "wd": 1e-3, "wd_mults": WD_MULTS,
            "schedule": {"decay_type": "linear", "warmup_steps": 2}}
  schedule = lambda t: ref_multiplier(t, 10, warmup=2, decay="linear")
  _run_against_reference(config, "adam_hp", "mu", steps=8, total_steps=10, schedule=schedule, seed=2)


def test_momentum_buffers_are_bfloat16_by_default_and_configurable():
  params = _nest(_random_params(np.random.default_rng(0)))
  for kind, field, kwargs, dtype in [
      ("bv_adafactor", "ema", {}, jnp.bfloat16), ("momentum_hp", "trace", {}, jnp.bfloat16),
      ("adam_hp", "mu", {}, jnp.bfloat16), ("momentum_hp", "trace", {"momentum_dtype": "float32"}, jnp.float32),
      ("bv_adafactor", "ema", {"dtype_momentum": "float32"}, jnp.float32)]:  # big_vision's spelling
    tx, _ = optim.make({"optimizer": kind, "lr": 1.0, "optax": kwargs}, params, 10)
    buffers = optax.tree_utils.tree_get(tx.init(params), field)
    assert {x.dtype for x in jax.tree.leaves(buffers)} == {jnp.dtype(dtype)}, (kind, kwargs)


def test_decay_is_times_schedule_not_times_lr():
  """With zero gradients a step moves θ by exactly −wd·mult·m(t)·θ (not −lr·wd·mult·m(t)·θ)."""
  lr, wd = 1e-3, 0.1
  config = {"optimizer": "bv_adafactor", "lr": lr, "wd": wd, "wd_mults": WD_MULTS, "grad_clip_norm": 1.0,
            "schedule": {"decay_type": "rsqrt", "warmup_steps": 2, "timescale": 4}}
  params = _nest(_random_params(np.random.default_rng(3)))
  tx, _ = optim.make(config, params, 10)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for t, m in enumerate([0.0, 0.5, 1.0, 1 / math.sqrt(1.25)]):
    assert ref_multiplier(t, 10, warmup=2, decay="rsqrt", timescale=4) == pytest.approx(m)
    updates, state = tx.update(zeros, state, params)
    before, delta = _flat(params), _flat(updates)
    for name in SHAPES:
      np.testing.assert_allclose(delta[name], -wd * WD_MULT[name] * m * before[name], rtol=1e-6, atol=1e-12,
                                 err_msg=f"step {t} {name}")
    params = optax.apply_updates(params, updates)


# ----------------------------------------------------------------------------------------------------------------------
# Schedules.


def _values(schedule, steps):
  return np.array([float(schedule(t)) for t in steps])


def test_rsqrt_schedule_key_steps():
  total, w, tau, c = 100, 10, 20, 30
  m = optim.make_schedule({"decay_type": "rsqrt", "warmup_steps": w, "timescale": tau, "cooldown_steps": c}, total)
  expected = {0: 0.0, 5: 0.5, 10: 1.0, w + tau: 1 / math.sqrt(2), 70: 1 / math.sqrt(4),
              85: (15 / 30) / math.sqrt(1 + 75 / 20), 100: 0.0}
  np.testing.assert_allclose(_values(m, expected), list(expected.values()), rtol=1e-6, atol=1e-7)
  steps = range(total + 1)
  np.testing.assert_allclose(
      _values(m, steps), [ref_multiplier(t, total, w, c, "rsqrt", tau) for t in steps], rtol=1e-6, atol=1e-7)


def test_rsqrt_timescale_defaults_to_10k():
  m = optim.make_schedule({"decay_type": "rsqrt"}, 100_000)
  assert float(m(10_000)) == pytest.approx(1 / math.sqrt(2), rel=1e-6)


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_other_schedules(decay):
  total, w = 100, 10
  m = optim.make_schedule({"decay_type": decay, "warmup_steps": w}, total)
  steps = range(total + 1)
  np.testing.assert_allclose(_values(m, steps), [ref_multiplier(t, total, w, 0, decay) for t in steps], atol=1e-6)
  assert float(m(0)) == 0.0 and float(m(5)) == pytest.approx(0.5) and float(m(w)) == pytest.approx(1.0)
  assert float(m(55)) == pytest.approx({"cosine": 0.5, "linear": 0.5, "constant": 1.0}[decay], abs=1e-6)
  assert float(m(total)) == pytest.approx(0.0 if decay != "constant" else 1.0, abs=1e-7)


def test_lr_fn_is_lr_times_multiplier():
  config = {"optimizer": "momentum_hp", "lr": 0.03, "schedule": {"decay_type": "cosine", "warmup_steps": 5}}
  _, lr_fn = optim.make(config, {"w": jnp.ones(3)}, 50)
  m = optim.make_schedule(config["schedule"], 50)
  for t in (0, 3, 5, 20, 50):
    assert float(lr_fn(t)) == pytest.approx(0.03 * float(m(t)), rel=1e-6)


def test_branch_schedule():
  base = {"decay_type": "rsqrt", "warmup_steps": 10, "timescale": 20}
  total, s, c = 1000, 300, 100
  main = optim.make_schedule(base, total)
  branch = optim.branch_schedule(base, total, s, c)
  before = range(0, s + 1)
  np.testing.assert_array_equal(_values(branch, before), _values(main, before))
  assert float(branch(s + c)) == 0.0 and float(branch(s + c + 50)) == 0.0
  # In between: the main schedule times a linear ramp from 1 to 0 ...
  inside = np.arange(s, s + c + 1)
  np.testing.assert_allclose(_values(branch, inside) / _values(main, inside), (s + c - inside) / c, atol=1e-6)
  # ... which is the schedule big_vision runs when relaunched with total_steps = s + c, cooldown_steps = c.
  relaunch = optim.make_schedule({**base, "cooldown_steps": c}, s + c)
  np.testing.assert_allclose(_values(branch, inside), _values(relaunch, inside), rtol=1e-6, atol=1e-7)


def test_make_with_branch_uses_branch_schedule_and_same_state_layout():
  config = {"optimizer": "bv_adafactor", "lr": 0.5, "schedule": {"decay_type": "rsqrt", "warmup_steps": 10}}
  params = _nest(_random_params(np.random.default_rng(0)))
  main_tx, main_lr = optim.make(config, params, 1000)
  branch_tx, branch_lr = optim.make(config, params, 1000, branch=(300, 100))
  expected = optim.branch_schedule(config["schedule"], 1000, 300, 100)
  for t in (0, 150, 300, 350, 400):
    assert float(branch_lr(t)) == pytest.approx(0.5 * float(expected(t)), rel=1e-6)
  assert float(branch_lr(300)) == pytest.approx(float(main_lr(300)), rel=1e-6)
  shapes = lambda tx: jax.tree.map(lambda x: (x.shape, x.dtype), tx.init(params))
  assert jax.tree.structure(shapes(main_tx)) == jax.tree.structure(shapes(branch_tx))


def test_branch_of_constant_schedule_is_linear_to_zero():
  branch = optim.branch_schedule({"decay_type": "constant"}, 1000, 200, 50)
  steps = np.arange(200, 251)
  np.testing.assert_allclose(_values(branch, steps), (250 - steps) / 50, atol=1e-7)


@pytest.mark.parametrize("schedule, total", [
    ({"decay_type": "rsqrt", "warmup_step": 10}, 100),  # typo'd key
    ({"decay_type": "exponential"}, 100),
    ({"decay_type": "cosine", "warmup_steps": 100}, 100),  # warmup must end before training does
])
def test_bad_schedules_raise(schedule, total):
  with pytest.raises(ValueError):
    optim.make_schedule(schedule, total)


# ----------------------------------------------------------------------------------------------------------------------
# Weight-decay multipliers and config handling.


def _example_params():
  names = list(SHAPES) + ["cls", "kernel", "Transformer/encoder_norm/scale"]
  return _nest({name: np.zeros((2,), np.float32) for name in names})


def wd_multipliers(params, wd_mults):
  """Per-leaf weight-decay multipliers as the real optimizer applies them: with zero gradients (so a zero momentum
  step), lr 1, wd 1 and a constant schedule, the update of a leaf of ones is −mult."""
  ones = jax.tree.map(jnp.ones_like, params)
  config = {"optimizer": "momentum_hp", "lr": 1.0, "wd": 1.0, "wd_mults": wd_mults,
            "schedule": {"decay_type": "constant", "warmup_steps": 0}}
  tx, _ = optim.make(config, ones, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, ones), tx.init(ones), ones)
  return jax.tree.map(lambda u: float(-u[0]), updates)


def test_wd_multipliers_first_match_wins():
  mults = _flat(wd_multipliers(_example_params(), WD_MULTS))
  assert mults["head/kernel"] == 100.0
  assert mults["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"] == 1.0
  assert mults["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"] == 1.0
  for name in ("head/bias", "Transformer/encoderblock_0/MlpBlock_0/Dense_0/bias", "pos_embedding", "cls",
               "Transformer/encoderblock_0/LayerNorm_0/scale", "Transformer/encoder_norm/scale"):
    assert mults[name] == 0.0, name
  # Reversed order: the generic kernel pattern matches head/kernel first.
  assert _flat(wd_multipliers(_example_params(), WD_MULTS[::-1]))["head/kernel"] == 1.0


def test_default_wd_mults_cover_every_kernel_including_head():
  mults = _flat(wd_multipliers(_example_params(), None))
  for name, mult in mults.items():
    assert mult == (1.0 if name.split("/")[-1] == "kernel" else 0.0), name
  assert mults["head/kernel"] == 1.0 and mults["kernel"] == 1.0


def test_wd_pattern_with_leading_slash_raises():
  with pytest.raises(ValueError):
    wd_multipliers(_example_params(), [("/head/kernel", 1.0)])


def test_config_errors_and_big_vision_aliases():
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError):
    optim.make({"optimizer": "lamb", "lr": 1.0}, params, 10)
  with pytest.raises(ValueError):
    optim.make({"optimizer": "momentum_hp", "lr": 1.0, "optax": {"momentun": 0.9}}, params, 10)
  with pytest.raises(ValueError):
    optim.make({"optimizer": "momentum_hp"}, params, 10)
  tx, _ = optim.make({"optax_name": "big_vision.momentum_hp", "lr": 1.0, "optax": {"dtype": "float32"}}, params, 10)
  assert optax.tree_utils.tree_get(tx.init(params), "trace")["w"].dtype == jnp.float32


def test_describe_names_every_link():
  config = {"optimizer": "bv_adafactor", "lr": 8e-4, "wd": 0.03 * 8e-4, "grad_clip_norm": 1.0,
            "wd_mults": [(".*head/kernel", 100.0), (".*/kernel", 1.0)],
            "schedule": {"decay_type": "rsqrt", "timescale": 10_000, "warmup_steps": 10_000, "cooldown_steps": 50_000}}
  text = optim.describe(config)
  for part in ("clip_by_global_norm(1.0)", "bv_adafactor(", "beta2_cap=0.999", "momentum_dtype=bfloat16", "lr 0.0008",
               "'.*head/kernel'=100", "rsqrt(", "timescale=10000", "cooldown_steps=50000", "x -1"):
    assert part in text, (part, text)
  assert text.index("clip") < text.index("bv_adafactor") < text.index("lr") < text.index("+ ") < text.index("rsqrt")
