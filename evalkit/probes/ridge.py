"""Few-shot linear probes by closed-form ridge regression — big_vision's protocol, exactly.

Protocol (docs/protocols.md, "Few-shot ridge"; big_vision `evaluators/fewshot_lsr`; "Scaling Vision Transformers"):
  * episodes: for seed s, `rng = np.random.default_rng(s)`; for each class c in order, a permutation of the train
    indices of class c; the k-shot set is the concatenation over classes of the first k of each permutation. The same
    permutations serve every k, so the sets are nested across k.
  * whitening with the k-shot set's mean and population std (+1e-5), applied to train and test;
  * a constant feature 100.0 appended (the bias, regularised like every other weight);
  * targets 2·onehot − 1;
  * W from one eigendecomposition (of XᵀX when N ≥ D, else of XXᵀ), float32; predict argmax(X_test W);
  * λ = 1024, accuracy on the full test split, per seed.
Episodes are drawn in dataset order, so they equal big_vision's where its tf.data read order is dataset order
(single-file splits) and are other draws of the same protocol on multi-file splits (docs/protocols.md, "When
episodes equal big_vision's"). Every product runs at float32 on any backend (`exact_float32`).

Beside the fixed λ, and never instead of it, λ is also chosen from the k-shot labels alone by exact leave-one-out
classification error over a grid, from the same eigendecomposition (no test labels are looked at).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from evalkit import stats
from evalkit.errors import EvalkitError

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_L2_REG = 1024.0  # 2**10, big_vision's fixed value.
LOO_L2_GRID = tuple(2.0**p for p in range(-5, 16))  # 2^-5 ... 2^15
BIAS_FEATURE = 100.0
STD_EPS = 1e-5
TOP_CLASSES = 5


# ----------------------------------------------------------------------------------------------------------------------
# Episodes: which train examples form each k-shot set.


class NotEnoughExamples(EvalkitError, ValueError):
  """A k-shot set larger than a class of the training split."""


def class_permutations(labels: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
  """Per class c (in order) a permutation of the positions of class c, drawn from `default_rng(seed)`."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def episode_manifest(labels, num_classes, shots: Sequence[int], seeds: Sequence[int]) -> dict:
  """{(shots, seed): positions} for every episode; one draw of permutations per seed serves every k."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  if max(shots) > counts.min():
    c = int(counts.argmin())
    raise NotEnoughExamples(f"{max(shots)}-shot episodes need {max(shots)} training examples of every class, but "
                            f"class {c} has {counts[c]}: use shots ≤ {counts[c]} or a larger train_split")
  manifest = {}
  for seed in seeds:
    perms = class_permutations(labels, num_classes, seed)
    for k in shots:
      manifest[(k, seed)] = np.concatenate([p[:k] for p in perms]).astype(np.int64)
  return manifest


# ----------------------------------------------------------------------------------------------------------------------
# The closed-form solve (jitted; one compilation per k-shot set size).


def exact_float32(fn):
  """`fn` traced with every matrix product at HIGHEST precision: true float32 on every backend.

  JAX's default precision is TF32 on recent NVIDIA GPUs and bfloat16 passes on TPUs. With ±1 targets all K class
  scores share an offset of ≈ −1 + 2/K and differ by a small margin, which such rounding swamps (1-shot on 1000
  classes: 44% → 24% with bfloat16 products). big_vision runs this solve on the CPU in float32 for the same reason;
  here it runs on any device, exactly (docs/protocols.md, "Precision").
  """
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision("highest"):
      return fn(*args, **kwargs)
  return wrapped


def _whiten_and_bias(x, mean, std):
  x = (x - mean) / std
  return jnp.concatenate([x, jnp.full((x.shape[0], 1), BIAS_FEATURE, x.dtype)], axis=1)


def _transpose_times_targets(m, labels, num_classes):
  """mᵀY for the ±1 targets Y = 2·onehot(labels) − 1, without materialising Y.

  mᵀY = 2·mᵀonehot − (mᵀ1)1ᵀ, and mᵀonehot is a per-class sum of rows: O(N·r) instead of the O(N·r·K) product, the
  largest single cost of an ImageNet 25-shot episode.
  """
  class_sums = jax.ops.segment_sum(m, labels, num_segments=num_classes)  # (K, r)
  return (2.0 * class_sums - jnp.sum(m, axis=0)[None, :]).T


def _spectral_factors(x, labels, num_classes):
  """One eigendecomposition per episode, in the smaller of the two Gram matrices.

  N ≥ D: eigh(XᵀX) = Q diag(e) Qᵀ and W(λ) = Q diag(1/(e+λ)) QᵀXᵀY.
  N < D: eigh(XXᵀ) = U diag(e) Uᵀ and W(λ) = XᵀU diag(1/(e+λ)) UᵀY.
  Returns (e, Q or U, QᵀXᵀY or UᵀY).
  """
  n, d = x.shape
  if n >= d:
    e, q = jnp.linalg.eigh(x.T @ x)
    return e, q, q.T @ _transpose_times_targets(x, labels, num_classes)
  e, u = jnp.linalg.eigh(x @ x.T)
  return e, u, _transpose_times_targets(u, labels, num_classes)


def _weights(x, e, vecs, proj, l2_reg):
  n, d = x.shape
  scaled = proj / (e + l2_reg)[:, None]
  return vecs @ scaled if n >= d else x.T @ (vecs @ scaled)


def _loo_errors(x, labels, e, vecs, proj, l2_grid):
  """Exact leave-one-out classification error of the ridge classifier, for every λ of the grid.

  With hat matrix H = X(XᵀX+λI)⁻¹Xᵀ, the prediction for example i from a fit without it is
  (ŷ_i − h_ii y_i)/(1 − h_ii). Since y_i = 2·e_c − 1 and 0 ≤ h_ii < 1, its argmax equals argmax_k(ŷ_ik − 2h_ii[k=c]):
  adding h_ii to every class and dividing by 1 − h_ii change no ranking.
  """
  n, d = x.shape
  # Row-space coordinates: A (N×r) with ŷ(λ) = A diag(g) proj and h(λ) = (A∘A) g'.
  if n >= d:
    a = x @ vecs
    gain = lambda lam: 1.0 / (e + lam)  # ŷ = XQ diag(1/(e+λ)) QᵀXᵀY, h = Σ_j (XQ)_ij² / (e_j+λ)
  else:
    a = vecs
    gain = lambda lam: e / (e + lam)  # ŷ = U diag(e/(e+λ)) UᵀY, h = Σ_j U_ij² e_j/(e_j+λ)
  a2 = a * a
  true_class = jax.nn.one_hot(labels, proj.shape[1], dtype=x.dtype)

  def error_at(lam):
    g = gain(lam)
    pred = (a * g) @ proj
    hat = a2 @ g
    loo_pred = jnp.argmax(pred - 2.0 * hat[:, None] * true_class, axis=1)
    return jnp.mean((loo_pred != labels).astype(jnp.float32))

  return jax.lax.map(error_at, l2_grid)


def _fit_episode(x_shot, y_shot, l2_reg, l2_grid, *, num_classes):
  """The train side of one episode, from its k-shot set alone: whitening statistics and W at the fixed λ; with a
  grid, also the exact LOO error of every λ and W at the chosen one. Returns (mean, std, W, W_loo, LOO errors)."""
  x_shot = x_shot.astype(jnp.float32)
  mean = jnp.mean(x_shot, axis=0)
  std = jnp.std(x_shot, axis=0) + STD_EPS  # population std, as big_vision
  x = _whiten_and_bias(x_shot, mean, std)
  e, vecs, proj = _spectral_factors(x, y_shot, num_classes)
  weights = _weights(x, e, vecs, proj, l2_reg)
  if l2_grid is None:
    return mean, std, weights, None, None
  loo_err = _loo_errors(x, y_shot, e, vecs, proj, l2_grid)
  # Ties go to the largest λ: among equally good fits, prefer the most regularised one.
  best = len(l2_grid) - 1 - jnp.argmin(loo_err[::-1])
  return mean, std, weights, _weights(x, e, vecs, proj, l2_grid[best]), loo_err


def _predict_episode(x, mean, std, weights, loo_weights, *, num_classes):
  """One fitted episode on features x: predicted labels and top classes at the fixed λ, labels at the LOO λ."""
  xt = _whiten_and_bias(x.astype(jnp.float32), mean, std)
  scores = xt @ weights
  top = jax.lax.top_k(scores, min(TOP_CLASSES, num_classes))[1]  # for top-5 (ties: lower class first)
  pred_loo = None if loo_weights is None else jnp.argmax(xt @ loo_weights, axis=1)
  return jnp.argmax(scores, axis=1), top, pred_loo


@dataclasses.dataclass
class FittedEpisode:
  """One (shots, seed) episode fitted on its k-shot set: `solution` = (mean, std, W, W at the LOO-chosen λ or None)
  on the probe's devices, and what chose it."""
  shots: int
  seed: int
  l2_reg: float
  train_positions: np.ndarray  # positions into the train features of the k-shot set
  solution: tuple
  loo_l2_reg: float | None = None  # λ chosen by leave-one-out on the k-shot set
  loo_errors: list[float] | None = None  # LOO error for every λ of the grid

  def scored(self, predicted: tuple, labels: np.ndarray) -> Episode:
    """This episode's outcome on a labelled split, from its `RidgeProbe.predict` triple on that split."""
    pred, top, pred_loo = predicted
    accuracy = lambda p: float(np.mean(p == labels))
    return Episode(shots=self.shots, seed=self.seed, l2_reg=self.l2_reg, accuracy=accuracy(pred), predictions=pred,
                   top_classes=top, train_positions=self.train_positions, loo_l2_reg=self.loo_l2_reg,
                   loo_accuracy=None if pred_loo is None else accuracy(pred_loo), loo_errors=self.loo_errors)


@dataclasses.dataclass
class Episode:
  """Outcome of one (shots, seed) episode on the test split."""
  shots: int
  seed: int
  l2_reg: float
  accuracy: float
  predictions: np.ndarray  # predicted test labels at the fixed λ, in test order
  top_classes: np.ndarray  # (n_test, min(5, K)) highest-scoring classes at the fixed λ, best first
  train_positions: np.ndarray  # positions into the train features of the k-shot set
  loo_l2_reg: float | None = None  # λ chosen by leave-one-out on the k-shot set
  loo_accuracy: float | None = None  # test accuracy at that λ
  loo_errors: list[float] | None = None  # LOO error for every λ of the grid


class RidgeProbe:
  """Few-shot ridge episodes fitted on fixed train features (`fit`), scored on any features (`predict`); `run` does
  both on the test features given here.

  Features to score are placed on the devices of `mesh` once, sharded along their rows, and reused by every episode;
  the k-shot side (at most a few ten thousand rows) and the fitted W are replicated. Padding rows added to make the
  rows divisible by the device count are dropped before scoring, so results do not depend on the device count.
  """

  def __init__(self, x_train, y_train, x_test=None, y_test=None, *, num_classes: int, mesh: Mesh | None = None):
    self.x_train = np.asarray(x_train, np.float32)
    self.y_train = np.asarray(y_train, np.int32)
    self.x_test = None if x_test is None else np.asarray(x_test, np.float32)
    self.y_test = None if y_test is None else np.asarray(y_test, np.int32)
    self.num_classes = int(num_classes)
    # Default: this process's devices (every process holds the full features; see evaluate.py).
    self.mesh = mesh if mesh is not None else Mesh(np.array(jax.local_devices()), ("data",))
    self._rows = NamedSharding(self.mesh, P("data"))
    self._replicated = NamedSharding(self.mesh, P())
    self._fit = jax.jit(exact_float32(_fit_episode), static_argnames=("num_classes",),
                        out_shardings=self._replicated)
    self._predict = jax.jit(exact_float32(_predict_episode), static_argnames=("num_classes",),
                            out_shardings=self._rows)

  def fit(self, shots=DEFAULT_SHOTS, seeds=DEFAULT_SEEDS, *, l2_reg=DEFAULT_L2_REG,
          l2_grid: Sequence[float] | None = LOO_L2_GRID) -> list[FittedEpisode]:
    """Every (shots, seed) episode, seed by seed, fitted on its k-shot set; no test feature is looked at."""
    put = lambda a: jax.device_put(a, self._replicated)
    grid = None if l2_grid is None else put(np.asarray(l2_grid, np.float32))
    fitted = []
    for (k, seed), positions in episode_manifest(self.y_train, self.num_classes, shots, seeds).items():
      mean, std, weights, loo_weights, loo_err = self._fit(
          put(self.x_train[positions]), put(self.y_train[positions]), put(np.float32(l2_reg)), grid,
          num_classes=self.num_classes)
      ep = FittedEpisode(k, seed, float(l2_reg), positions, (mean, std, weights, loo_weights))
      if l2_grid is not None:
        loo_err = np.asarray(loo_err)
        ep.loo_l2_reg = float(l2_grid[len(l2_grid) - 1 - int(np.argmin(loo_err[::-1]))])
        ep.loo_errors = [float(v) for v in loo_err]
      fitted.append(ep)
    return fitted

  def predict(self, episodes: Sequence[FittedEpisode], x) -> list[tuple]:
    """(labels, top classes, labels at the LOO-chosen λ or None) of every fitted episode on features x, host arrays."""
    x = np.asarray(x, np.float32)
    n = len(x)
    pad = (-n) % self.mesh.devices.size
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)]) if pad else x
    placed = jax.device_put(x, self._rows)
    trim = lambda a: None if a is None else np.asarray(a)[:n]
    return [tuple(map(trim, self._predict(placed, *ep.solution, num_classes=self.num_classes))) for ep in episodes]

  def run(self, shots=DEFAULT_SHOTS, seeds=DEFAULT_SEEDS, *, l2_reg=DEFAULT_L2_REG,
          l2_grid: Sequence[float] | None = LOO_L2_GRID) -> list[Episode]:
    """Every episode fitted and scored on the test features given to the constructor."""
    fitted = self.fit(shots, seeds, l2_reg=l2_reg, l2_grid=l2_grid)
    return [ep.scored(predicted, self.y_test) for ep, predicted in zip(fitted, self.predict(fitted, self.x_test))]


def ridge_fewshot(x_train, y_train, x_test, y_test, *, num_classes: int,
                  shots: Iterable[int] = DEFAULT_SHOTS, seeds: Iterable[int] = DEFAULT_SEEDS,
                  l2_reg: float = DEFAULT_L2_REG, mesh: Mesh | None = None) -> dict[tuple[int, int], float]:
  """big_vision few-shot ridge accuracy per (shots, seed) — part of evalkit's stable public API."""
  probe = RidgeProbe(x_train, y_train, x_test, y_test, num_classes=num_classes, mesh=mesh)
  episodes = probe.run(tuple(shots), tuple(seeds), l2_reg=l2_reg, l2_grid=None)
  return {(ep.shots, ep.seed): ep.accuracy for ep in episodes}


def summarize(episodes: Sequence[Episode], y_test: np.ndarray | None = None) -> dict:
  """Per shot count, a Metric: `value` = mean accuracy over seeds, `per_seed`, population `std` over seeds, and the
  same for the LOO-chosen λ under `loo`.

  With the test labels, also `se`, `ci95` and `n` (test items) of the mean, combining the spread over seeds (episode
  draws) with a bootstrap over test items (`evalkit.stats.accuracy_interval`).
  """
  out = {}
  for k in sorted({ep.shots for ep in episodes}):
    eps = sorted((ep for ep in episodes if ep.shots == k), key=lambda ep: ep.seed)
    acc = np.array([ep.accuracy for ep in eps])
    row = {"value": float(acc.mean()), "per_seed": {str(ep.seed): ep.accuracy for ep in eps}, "std": float(acc.std())}
    if y_test is not None:
      interval = stats.accuracy_interval(np.stack([ep.predictions == y_test for ep in eps]))
      row.update(se=interval["se"], ci95=interval["ci95"], n=int(len(y_test)))
    if eps[0].loo_accuracy is not None:
      loo = np.array([ep.loo_accuracy for ep in eps])
      row["loo"] = {"value": float(loo.mean()), "per_seed": {str(ep.seed): ep.loo_accuracy for ep in eps},
                    "std": float(loo.std()), "l2_reg": {str(ep.seed): ep.loo_l2_reg for ep in eps}}
    out[f"{k}shot"] = row
  return out
