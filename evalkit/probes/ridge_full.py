"""Closed-form ridge on a whole train split, streaming (docs/protocols.md, "Full-data ridge").

The sufficient statistics G = [X 1]ᵀ[X 1] and S = [X 1]ᵀ·onehot(y) are accumulated over fixed-size row blocks: rows
arrive in chunks of any size and are re-blocked, each block's products run on a device in float32 at the highest
precision (one block per device per step), and the blocks are summed on the host in double-double float64 (an
error-free two-sum with a compensation term). That sum is exact to ≈2⁻¹⁰⁶ relative, so its rounding to float64 does
not depend on the order in which blocks arrive: the statistics, and everything solved from them, are the same bits
for any device count, any chunking of the input and — where every process holds whole blocks — any process count
(processes combine their sums with one `jax.distributed` all-gather). No N×D matrix is ever held: memory is one
group of blocks plus the (D+1)² statistics.

From the statistics, one float64 eigendecomposition serves every λ: W(λ) = Q diag(1/(e+λ)) QᵀXᵀY with targets
Y = 2·onehot − 1, and λ may be chosen by generalised cross-validation from the same eigendecomposition.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from evalkit import distributed
from evalkit.probes.ridge import exact_float32

BLOCK_ROWS = 2048


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """s + e == a + b exactly, s = fl(a + b) (Knuth's TwoSum)."""
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


class ExactSum:
  """A float64 array sum in double-double: `hi + lo` carries ≈106 bits, so the result is order-independent."""

  def __init__(self, shape):
    self.hi, self.lo = np.zeros(shape), np.zeros(shape)

  def add(self, value: np.ndarray) -> None:
    self.hi, err = _two_sum(self.hi, np.asarray(value, np.float64))
    self.lo += err

  def merge(self, hi: np.ndarray, lo: np.ndarray) -> None:
    self.add(hi)
    self.lo += lo

  def value(self) -> np.ndarray:
    return self.hi + self.lo


def _block_statistics(block, labels, *, num_classes):
  """[X 1]ᵀ[X 1] and [X 1]ᵀonehot(y) of one block (padding rows are all zero, bias included)."""
  return block.T @ block, jax.ops.segment_sum(block, labels, num_segments=num_classes).T


@functools.lru_cache(maxsize=8)
def _group_statistics(mesh: Mesh, num_classes: int):
  """One block per device: (devices, B, D+1) rows → (devices, D+1, D+1) and (devices, D+1, K), unsummed."""
  per_device = lambda x, y: tuple(a[None] for a in _block_statistics(x[0], y[0], num_classes=num_classes))
  spec = P(distributed.DATA_AXIS)
  return jax.jit(exact_float32(jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec))))


class GramAccumulator:
  """Streams (x, y) chunks into G = [X 1]ᵀ[X 1] and S = [X 1]ᵀonehot(y), exactly summed over fixed row blocks."""

  def __init__(self, dim: int, num_classes: int, *, mesh: Mesh | None = None, block_rows: int = BLOCK_ROWS):
    self.dim, self.num_classes, self.block_rows = int(dim), int(num_classes), int(block_rows)
    self.mesh = mesh if mesh is not None else distributed.data_mesh(jax.local_devices())
    self._rows = NamedSharding(self.mesh, P(distributed.DATA_AXIS))
    self.gram, self.class_sums = ExactSum((dim + 1, dim + 1)), ExactSum((dim + 1, num_classes))
    self._pending_x, self._pending_y, self._pending = [], [], 0
    self.rows = 0

  def add(self, x, y) -> None:
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    if x.ndim != 2 or x.shape[1] != self.dim or len(y) != len(x):
      raise ValueError(f"chunk of shape {x.shape} with {len(y)} labels; expected (n, {self.dim}) and n labels")
    if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
      raise ValueError(f"labels must lie in [0, {self.num_classes}), got {y.min()} .. {y.max()}")
    self._pending_x.append(np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1))
    self._pending_y.append(y)
    self._pending += len(x)
    self.rows += len(x)
    group = self.block_rows * self.mesh.devices.size
    if self._pending >= group:
      xs, ys = np.concatenate(self._pending_x), np.concatenate(self._pending_y)
      whole = len(xs) // group * group
      for start in range(0, whole, group):
        self._run_group(xs[start:start + group], ys[start:start + group])
      self._pending_x, self._pending_y, self._pending = [xs[whole:]], [ys[whole:]], len(xs) - whole

  def _run_group(self, xs: np.ndarray, ys: np.ndarray) -> None:
    n_dev, b = self.mesh.devices.size, self.block_rows
    xs = distributed.pad_rows(xs, n_dev * b).reshape(n_dev, b, self.dim + 1)
    ys = distributed.pad_rows(ys, n_dev * b).reshape(n_dev, b)
    grams, sums = _group_statistics(self.mesh, self.num_classes)(
        jax.device_put(xs, self._rows), jax.device_put(ys, self._rows))
    for g, s in zip(np.asarray(grams), np.asarray(sums)):  # block order: independent of the device count
      self.gram.add(g)
      self.class_sums.add(s)

  def finish(self) -> "Statistics":
    """Flushes the last partial block, combines processes, and returns the float64 statistics."""
    if self._pending:
      xs, ys = np.concatenate(self._pending_x), np.concatenate(self._pending_y)
      group = self.block_rows * self.mesh.devices.size
      for start in range(0, len(xs), group):
        self._run_group(xs[start:start + group], ys[start:start + group])
      self._pending_x, self._pending_y, self._pending = [], [], 0
    return Statistics(_combine_processes(self.gram).value(), _combine_processes(self.class_sums).value())


@dataclasses.dataclass
class Statistics:
  """G = [X 1]ᵀ[X 1] ((D+1)², float64; its last row/column are Σx and N) and S = [X 1]ᵀonehot(y) ((D+1)×K)."""
  gram: np.ndarray
  class_sums: np.ndarray

  @property
  def n(self) -> float:
    return float(self.gram[-1, -1])

  @property
  def class_counts(self) -> np.ndarray:
    return self.class_sums[-1]

  def xty(self) -> np.ndarray:
    """[X 1]ᵀY for Y = 2·onehot − 1:  2S − ([X 1]ᵀ1)1ᵀ."""
    return 2.0 * self.class_sums - self.gram[:, -1:]


@dataclasses.dataclass
class Spectrum:
  """eigh(ZᵀZ) = Q diag(e) Qᵀ and P = QᵀZᵀY: W(λ) = Q diag(1/(e+λ)) P for every λ."""
  e: np.ndarray
  q: np.ndarray
  p: np.ndarray
  n: float
  y_norm2: float  # ‖Y‖² = N·K for ±1 targets

  @classmethod
  def of(cls, gram: np.ndarray, zty: np.ndarray, n: float) -> "Spectrum":
    e, q = np.linalg.eigh(gram)
    return cls(np.maximum(e, 0.0), q, q.T @ zty, n, n * zty.shape[1])

  def weights(self, l2_reg: float) -> np.ndarray:
    return self.q @ (self.p / (self.e + l2_reg)[:, None])

  def gcv(self, l2_reg: float) -> float:
    """Generalised cross-validation score N·RSS / (N − tr H)² of the multi-output ridge at λ (Golub et al. 1979)."""
    # With Z = U S Vᵀ, ‖UᵀY_j‖² = ‖P_j‖² / e_j, and RSS = (the part of Y outside Z's column space, λ-free) +
    # Σ_j (λ / (e_j + λ))² ‖UᵀY_j‖²: no difference of large numbers that depends on λ. Null directions are skipped.
    live = self.e > self.e.max() * 1e-12
    e, uy2 = self.e[live], np.sum(self.p[live] ** 2, axis=1) / self.e[live]
    outside = max(self.y_norm2 - np.sum(uy2), 0.0)
    rss = outside + np.sum((l2_reg / (e + l2_reg)) ** 2 * uy2)
    dof = np.sum(e / (e + l2_reg))
    return float(self.n * rss / max(self.n - dof, 1e-12) ** 2)


def accumulate(chunks: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, *, mesh: Mesh | None = None,
               block_rows: int = BLOCK_ROWS) -> Statistics:
  acc = None
  for x, y in chunks:
    x = np.asarray(x, np.float32)
    acc = acc or GramAccumulator(x.shape[1], num_classes, mesh=mesh, block_rows=block_rows)
    acc.add(x, y)
  if acc is None:
    raise ValueError("ridge_full_fit: no chunks")
  return acc.finish()


def ridge_full_fit(chunks: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, l2_reg: float, *,
                   mesh: Mesh | None = None, block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
  """(W (D, K), b (K,)) minimising ‖[X 1]·[W; b] − Y‖² + λ‖[W; b]‖², Y = 2·onehot − 1, from streamed (x, y) chunks
  (this process's rows; processes are combined). No whitening: the plain solve, in float64 from exact statistics."""
  if not l2_reg > 0:
    raise ValueError(f"l2_reg must be positive, got {l2_reg}")
  stats = accumulate(chunks, num_classes, mesh=mesh, block_rows=block_rows)
  w = Spectrum.of(stats.gram, stats.xty(), stats.n).weights(l2_reg)
  return w[:-1].astype(np.float32), w[-1].astype(np.float32)


def _allgather_float64(a: np.ndarray) -> np.ndarray:
  """Every process's float64 array, bit for bit: sent as uint32 words (JAX without x64 would round float64)."""
  words = np.ascontiguousarray(a, np.float64).reshape(-1).view(np.uint32)
  gathered = np.asarray(multihost_utils.process_allgather(words, tiled=False))
  return np.stack([np.ascontiguousarray(g).view(np.float64).reshape(a.shape) for g in gathered])


def _combine_processes(acc: ExactSum) -> ExactSum:
  """Every process's double-double sum merged (all-gather, then the same exact merge on every process)."""
  if jax.process_count() > 1:
    his, los = (_allgather_float64(a) for a in (acc.hi, acc.lo))
    acc = ExactSum(acc.hi.shape)
    for hi, lo in zip(his, los):
      acc.merge(hi, lo)
  return acc


def column_moments(chunks: Callable[[], Iterable[np.ndarray]], std_eps: float) -> tuple[np.ndarray, np.ndarray]:
  """(mean, population std + eps) of the feature columns over every process's rows, in two exact float64 passes
  (`chunks()` yields this process's row chunks anew each time)."""
  total, count = None, ExactSum(())
  for x in chunks():
    total = total or ExactSum(x.shape[1])
    total.add(np.sum(x, axis=0, dtype=np.float64))
    count.add(np.float64(len(x)))
  n = _combine_processes(count).value()
  mean = _combine_processes(total).value() / n
  squares = ExactSum(mean.shape)
  for x in chunks():
    squares.add(np.sum((x - mean) ** 2, axis=0))
  return mean, np.sqrt(_combine_processes(squares).value() / n) + std_eps


def whiten(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """(x − mean) / std in float32, as the few-shot protocol whitens its k-shot sets."""
  return (np.asarray(x, np.float32) - mean.astype(np.float32)) / std.astype(np.float32)


@dataclasses.dataclass
class WhitenedFit:
  """The adapter's ridge: features whitened by the train mean / population std (+ eps) and a constant bias feature,
  as the few-shot protocol does, with λ chosen by GCV; W and b act on raw features (whitening folded in)."""
  w: np.ndarray  # (D, K) float64
  b: np.ndarray  # (K,)
  l2_reg: float
  gcv: list[float]

  def scores(self, x) -> np.ndarray:
    return np.asarray(x, np.float64) @ self.w + self.b


def whitened_fit(stats: Statistics, mean: np.ndarray, std: np.ndarray, l2_grid: Sequence[float], *,
                 bias_feature: float) -> WhitenedFit:
  """From the statistics of whitened rows `whiten(x)` (their constant column scaled to `bias_feature`): one
  eigendecomposition, λ by GCV (ties: the larger λ), W and b folded back to raw features."""
  d = len(mean)
  scale = np.ones(d + 1)
  scale[d] = bias_feature
  gram = stats.gram * np.outer(scale, scale)
  zty = stats.xty() * scale[:, None]
  spectrum = Spectrum.of(gram, zty, stats.n)
  scores = [spectrum.gcv(lam) for lam in l2_grid]
  best = len(scores) - 1 - int(np.argmin(scores[::-1]))
  wz = spectrum.weights(l2_grid[best])
  w = wz[:d] / std[:, None]
  return WhitenedFit(w=w, b=bias_feature * wz[d] - mean @ w, l2_reg=float(l2_grid[best]), gcv=scores)
